"""Rollouts: every call through `/v1/rollouts/{id}/...` recorded token for token, a later turn's
prompt continuing the earlier sampled tokens (bridged), with the openai client in-process, raw httpx
against the ASGI app, and plain clients through the keyed loopback server.

The model is the randomly initialised "tiny": its replies are noise, which is what a bridge must
carry verbatim; a tool call in its reply was put there by the grammar (tool_choice "required")."""

from __future__ import annotations

import asyncio
import itertools
import json

import httpx
import openai
import pytest

from hone.backends import LocalBackend
from hone.errors import LimitError
from hone.server import rollouts
from hone.server.inprocess import ORIGIN
from hone.server.rollouts import RolloutBook, RolloutNotFoundError

HELLO = {"role": "user", "content": "Say hello."}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10}, "unit": {"enum": ["c", "f"]}}, "required": ["city", "unit"]},
    },
}
RESPONSES_WEATHER = {"type": "function", "name": "get_weather", "parameters": WEATHER["function"]["parameters"]}


@pytest.fixture(scope="module")
def backend():
    """tiny, and a second model, so that a call naming the wrong (but served) model is the
    rollout's 400, not the 404 of a model that does not exist."""
    backend = LocalBackend()
    backend.add_model("tiny", "tiny")
    backend.add_model("tiny-b", "tiny")
    yield backend
    backend.close()


def run(coroutine):
    return asyncio.run(coroutine)


def http(backend) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=backend.app), base_url=ORIGIN, timeout=120)


async def open_rollout(client: httpx.AsyncClient, **body) -> str:
    response = await client.post("/v1/rollouts", json={"model": "tiny", **body})
    assert response.status_code == 200, response.text
    opened = response.json()
    assert opened["object"] == "rollout" and opened["status"] == "open" and opened["calls"] == []
    return opened["id"]


async def record(client: httpx.AsyncClient, rollout_id: str) -> dict:
    response = await client.get(f"/v1/rollouts/{rollout_id}")
    assert response.status_code == 200, response.text
    return response.json()


def chat_body(messages, /, **overrides):
    return {"model": "tiny", "messages": messages, "max_tokens": 8, "seed": 0} | overrides


def items(messages):
    """Chat messages as Responses input items."""
    return [{"type": "message", "role": m["role"], "content": m["content"]} for m in messages]


def assert_error(response, status, param=None, *fragments, code=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    if param is not None:
        assert error["param"] == param, error
        assert param in error["message"], error["message"]
    if code is not None:
        assert error["code"] == code, error
    for fragment in fragments:
        assert fragment in error["message"], error["message"]
    return error


# --------------------------------------------------------------------------- the record
def test_a_three_call_conversation_is_recorded_token_for_token_and_bridged(backend):
    async def main():
        async with http(backend) as raw:
            rollout_id = await open_rollout(raw, task_id="task-7", metadata={"k": "v"})
            client = backend.openai_client(rollout_id=rollout_id, max_retries=0)
            messages = [HELLO]
            first = await client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, seed=1)
            messages += [{"role": "assistant", "content": first.choices[0].message.content}, {"role": "user", "content": "Again, louder."}]
            stream = await client.chat.completions.create(
                model="tiny", messages=messages, max_tokens=8, seed=2, stream=True, stream_options={"include_usage": True}
            )
            chunks = [chunk async for chunk in stream]
            second_text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            messages += [{"role": "assistant", "content": second_text}, {"role": "user", "content": "Once more."}]
            third = await client.responses.create(model="tiny", input=items(messages), max_output_tokens=8, extra_body={"seed": 3})
            closed = await raw.delete(f"/v1/rollouts/{rollout_id}")
            again = await raw.delete(f"/v1/rollouts/{rollout_id}")
            return first, chunks, third, closed, again

    first, chunks, third, closed, again = run(main())
    assert closed.status_code == 200 and again.status_code == 200
    assert again.json() == closed.json()  # a retried close hands back the same record
    rollout = closed.json()
    assert rollout["status"] == "closed" and rollout["model"] == "tiny"
    assert rollout["task_id"] == "task-7" and rollout["metadata"] == {"k": "v"}
    calls = rollout["calls"]
    assert [c["endpoint"] for c in calls] == ["chat.completions", "chat.completions", "responses"]
    assert [c["prompt"] for c in calls] == ["rendered", "bridged", "bridged"]
    assert rollout["turns_bridged"] == 2 and rollout["turns_broken"] == 0

    # what each response reported is what was recorded
    usage = chunks[-1]
    last_choice = next(c for c in reversed(chunks) if c.choices and c.choices[0].finish_reason)
    reported = [
        (first.model_extra["prompt_token_ids"], first.choices[0].model_extra["token_ids"], first.choices[0].model_extra["token_logprobs"]),
        (usage.model_extra["prompt_token_ids"], last_choice.choices[0].model_extra["token_ids"], last_choice.choices[0].model_extra["token_logprobs"]),
        (third.model_extra["prompt_token_ids"], third.model_extra["token_ids"], third.model_extra["token_logprobs"]),
    ]
    for call, (prompt_ids, token_ids, logprobs) in zip(calls, reported):
        assert call["prompt_token_ids"] == prompt_ids
        assert call["token_ids"] == token_ids and token_ids
        assert call["token_logprobs"] == pytest.approx(logprobs, abs=0)
        assert len(call["token_logprobs"]) == len(call["token_ids"])
    assert usage.usage.prompt_tokens == len(calls[1]["prompt_token_ids"])

    # each later prompt continues the earlier prompt and its sampled tokens verbatim
    for earlier, later in itertools.pairwise(calls):
        head = earlier["prompt_token_ids"] + earlier["token_ids"]
        assert later["prompt_token_ids"][: len(head)] == head
        assert len(later["prompt_token_ids"]) > len(head)

    # the replies and messages as the client sent and got them
    assert calls[0]["reply"] == {"role": "assistant", "content": first.choices[0].message.content}
    assert calls[1]["reply"]["content"] == "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert calls[2]["reply"]["content"] == third.output_text
    assert calls[0]["messages"] == [HELLO]
    assert [m["role"] for m in calls[2]["messages"]] == ["user", "assistant", "user", "assistant", "user"]
    assert calls[2]["messages"][-1] == {"role": "user", "content": "Once more."}
    assert all(c["tools"] is None for c in calls)


def test_a_tool_call_and_its_result_are_bridged_in_chat_and_in_responses(backend):
    """The agent echoes the parsed call as the client got it (a call id of its own making would do
    too), then the tool's result; the sampled call's tokens stay in the next prompt verbatim."""

    async def main():
        async with http(backend) as raw:
            rollout_id = await open_rollout(raw)
            client = backend.openai_client(rollout_id=rollout_id, max_retries=0)
            messages = [{"role": "user", "content": "Weather in Paris?"}]
            reply = await client.chat.completions.create(
                model="tiny", messages=messages, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False, max_tokens=150, seed=4
            )
            message = reply.choices[0].message
            assert message.tool_calls, message  # the grammar wrote a call
            call = message.tool_calls[0]
            arguments = json.dumps(json.loads(call.function.arguments), indent=1)  # re-serialised by the agent
            echo = {"role": "assistant", "content": None, "tool_calls": [{"id": "mine-1", "type": "function", "function": {"name": call.function.name, "arguments": arguments}}]}
            messages += [echo, {"role": "tool", "tool_call_id": "mine-1", "content": "sunny"}]
            await client.chat.completions.create(model="tiny", messages=messages, tools=[WEATHER], max_tokens=8, seed=5)

            # the same in Responses items: a function_call and its output
            first = await client.responses.create(
                model="tiny", input="Weather in Rome?", tools=[RESPONSES_WEATHER], tool_choice="required", parallel_tool_calls=False, max_output_tokens=150, extra_body={"seed": 6}
            )
            calls = [item for item in first.output if item.type == "function_call"]
            assert calls, first.output
            follow_up = [
                {"type": "message", "role": "user", "content": "Weather in Rome?"},
                *[item.model_dump(exclude_none=True) for item in first.output],  # passed back as they came, ids and all
                *[{"type": "function_call_output", "call_id": c.call_id, "output": "rainy"} for c in calls],
            ]
            await client.responses.create(model="tiny", input=follow_up, tools=[RESPONSES_WEATHER], max_output_tokens=8, extra_body={"seed": 7})
            return await raw.delete(f"/v1/rollouts/{rollout_id}")

    rollout = run(main()).json()
    calls = rollout["calls"]
    assert [c["prompt"] for c in calls] == ["rendered", "bridged", "rendered", "bridged"]
    tokenizer = backend.tokenizer("tiny")
    for earlier, later, result in ((calls[0], calls[1], "sunny"), (calls[2], calls[3], "rainy")):
        head = earlier["prompt_token_ids"] + earlier["token_ids"]
        assert later["prompt_token_ids"][: len(head)] == head
        assert f"<tool_response>\n{result}\n</tool_response>" in tokenizer.decode(later["prompt_token_ids"][len(head) :])
        assert earlier["reply"]["tool_calls"] and earlier["tools"]


def test_a_rewritten_reply_is_broken_and_a_new_conversation_is_rendered(backend):
    async def main():
        async with http(backend) as raw:
            rollout_id = await open_rollout(raw)
            client = backend.openai_client(rollout_id=rollout_id, max_retries=0)

            async def ask(messages, seed):
                reply = await client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, seed=seed)
                return reply.choices[0].message.content

            first = await ask([HELLO], 1)
            await ask([HELLO, {"role": "assistant", "content": first + " (edited)"}, {"role": "user", "content": "Go on."}], 2)  # broken
            fresh = [{"role": "user", "content": "Something else entirely."}]
            other = await ask(fresh, 3)  # a new conversation: rendered
            await ask([*fresh, {"role": "assistant", "content": other}, {"role": "user", "content": "More."}], 4)  # bridged from call 3
            await ask([HELLO, {"role": "assistant", "content": first}, {"role": "user", "content": "Go on."}], 5)  # call 1 continued, later
            # the reply kept but the question before it rewritten: the history is not what was sampled
            await ask([{"role": "user", "content": "Say goodbye."}, {"role": "assistant", "content": first}, {"role": "user", "content": "Go on."}], 6)
            return await record(raw, rollout_id)

    rollout = run(main())
    calls = rollout["calls"]
    assert [c["prompt"] for c in calls] == ["rendered", "broken", "rendered", "bridged", "bridged", "broken"]
    assert rollout["turns_broken"] == 2 and rollout["turns_bridged"] == 2
    assert calls[3]["prompt_token_ids"][: len(calls[2]["prompt_token_ids"])] == calls[2]["prompt_token_ids"]
    head = calls[0]["prompt_token_ids"] + calls[0]["token_ids"]
    assert calls[4]["prompt_token_ids"][: len(head)] == head  # bridged from the call it continues, not the newest
    assert calls[1]["prompt_token_ids"][: len(head)] != head  # rendered afresh


def test_interleaved_conversations_in_one_rollout_each_bridge_from_their_own_turn(backend):
    async def main():
        async with http(backend) as raw:
            rollout_id = await open_rollout(raw)
            client = backend.openai_client(rollout_id=rollout_id, max_retries=0)
            starts = [[{"role": "user", "content": "Question A"}], [{"role": "user", "content": "Question B"}]]
            firsts = await asyncio.gather(*[client.chat.completions.create(model="tiny", messages=m, max_tokens=6, seed=i) for i, m in enumerate(starts)])
            seconds = [[*m, {"role": "assistant", "content": r.choices[0].message.content}, {"role": "user", "content": "Next"}] for m, r in zip(starts, firsts)]
            await asyncio.gather(*[client.chat.completions.create(model="tiny", messages=m, max_tokens=6, seed=9) for m in seconds])
            return (await raw.delete(f"/v1/rollouts/{rollout_id}")).json()

    calls = run(main())["calls"]
    assert sorted(c["prompt"] for c in calls) == ["bridged", "bridged", "rendered", "rendered"]
    firsts = {c["messages"][0]["content"]: c for c in calls if c["prompt"] == "rendered"}
    for later in (c for c in calls if c["prompt"] == "bridged"):
        earlier = firsts[later["messages"][0]["content"]]
        head = earlier["prompt_token_ids"] + earlier["token_ids"]
        assert later["prompt_token_ids"][: len(head)] == head


def test_a_reply_cut_by_a_stop_string_is_closed_by_the_bridge(backend):
    async def main():
        async with http(backend) as raw:
            rollout_id = await open_rollout(raw)
            client = backend.openai_client(rollout_id=rollout_id, max_retries=0)
            messages = [HELLO]
            cut = await client.chat.completions.create(model="tiny", messages=messages, max_tokens=40, seed=0, stop=["t"])
            messages += [cut.choices[0].message, {"role": "user", "content": "Go on."}]  # echoed as the message object
            await client.chat.completions.create(model="tiny", messages=messages, max_tokens=4, seed=1)
            return cut, (await raw.delete(f"/v1/rollouts/{rollout_id}")).json()

    cut, rollout = run(main())
    first, second = rollout["calls"]
    assert cut.choices[0].finish_reason == "stop" and first["finish_reason"] == "stop"
    tokenizer = backend.tokenizer("tiny")
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert first["token_ids"] and first["token_ids"][-1] != im_end  # no end of turn was sampled
    assert second["prompt"] == "bridged"
    head = first["prompt_token_ids"] + first["token_ids"]
    assert second["prompt_token_ids"][: len(head)] == head
    after = tokenizer.decode(second["prompt_token_ids"][len(head) :])
    assert after == "<|im_end|>\n<|im_start|>user\nGo on.<|im_end|>\n<|im_start|>assistant\n"


def test_a_rollout_at_its_call_limit_refuses_more_calls_with_a_429_and_records_nothing_more(backend, monkeypatch):
    monkeypatch.setattr(rollouts, "MAX_CALLS_PER_ROLLOUT", 1)

    async def main():
        async with http(backend) as raw:
            rollout_id = await open_rollout(raw)
            done = await raw.post(f"/v1/rollouts/{rollout_id}/chat/completions", json=chat_body([HELLO], max_tokens=2))
            refused = await raw.post(f"/v1/rollouts/{rollout_id}/chat/completions", json=chat_body([HELLO], max_tokens=2))
            return done, refused, await record(raw, rollout_id)

    done, refused, rollout = run(main())
    assert done.status_code == 200, done.text
    assert_error(refused, 429, None, "1 calls, its limit", "close it")
    assert len(rollout["calls"]) == 1


def test_the_openai_client_does_not_retry_a_rollout_at_its_call_limit(backend, monkeypatch):
    monkeypatch.setattr(rollouts, "MAX_CALLS_PER_ROLLOUT", 1)
    sent = []

    async def main():
        rollout_id = (await backend.open_rollout("tiny"))["id"]
        base = f"{ORIGIN}/v1/rollouts/{rollout_id}"

        async def count(request):
            sent.append(request.url.path)

        transport = httpx.ASGITransport(app=backend.app)
        async with httpx.AsyncClient(transport=transport, base_url=base, event_hooks={"request": [count]}) as own:
            client = openai.AsyncOpenAI(base_url=base, api_key="local", http_client=own)  # the default max_retries=2
            await client.chat.completions.create(model="tiny", messages=[HELLO], max_tokens=2)
            with pytest.raises(openai.RateLimitError):
                await client.chat.completions.create(model="tiny", messages=[HELLO], max_tokens=2)

    run(main())
    assert len(sent) == 2  # one call answered, one refused: no retries of a limit waiting cannot lift


# --------------------------------------------------------------------------- bad input
def test_an_unknown_rollout_is_a_404_on_every_route(backend):
    async def main():
        async with http(backend) as raw:
            answers = [
                await raw.post("/v1/rollouts/rollout-nope/chat/completions", json=chat_body([HELLO])),
                await raw.post("/v1/rollouts/rollout-nope/responses", json={"model": "tiny", "input": "hi"}),
                await raw.get("/v1/rollouts/rollout-nope"),
                await raw.get("/v1/rollouts/rollout-nope/models"),
                await raw.delete("/v1/rollouts/rollout-nope"),
            ]
            client = backend.openai_client(rollout_id="rollout-nope", max_retries=0)
            with pytest.raises(openai.NotFoundError) as caught:
                await client.chat.completions.create(model="tiny", messages=[HELLO], max_tokens=2)
            return answers, caught.value

    answers, error = run(main())
    for response in answers:
        assert_error(response, 404, None, "rollout-nope", "does not exist", "POST /v1/rollouts", code="rollout_not_found")
    assert "rollout-nope" in str(error) and error.code == "rollout_not_found"


def test_a_closed_rollout_refuses_calls_and_closing_again_returns_the_same_record(backend):
    async def main():
        async with http(backend) as raw:
            rollout_id = await open_rollout(raw)
            done = await raw.post(f"/v1/rollouts/{rollout_id}/chat/completions", json=chat_body([HELLO]))
            assert done.status_code == 200, done.text
            closed = await raw.delete(f"/v1/rollouts/{rollout_id}")
            after = [
                await raw.post(f"/v1/rollouts/{rollout_id}/chat/completions", json=chat_body([HELLO])),
                await raw.post(f"/v1/rollouts/{rollout_id}/responses", json={"model": "tiny", "input": "hi", "max_output_tokens": 4}),
                await raw.get(f"/v1/rollouts/{rollout_id}/models"),
            ]
            again = await raw.delete(f"/v1/rollouts/{rollout_id}")
            in_process = await backend.close_rollout(rollout_id)
            return rollout_id, closed, after, again, in_process

    rollout_id, closed, after, again, in_process = run(main())
    assert closed.status_code == 200 and len(closed.json()["calls"]) == 1
    for response in after:
        assert_error(response, 404, None, rollout_id, "was closed", code="rollout_not_found")
    assert again.status_code == 200 and again.json() == closed.json()
    assert in_process == closed.json()


def test_a_call_that_breaks_the_rollouts_rules_is_a_400_naming_the_parameter_and_records_nothing(backend):
    async def main():
        async with http(backend) as raw:
            rollout_id = await open_rollout(raw)
            base = f"/v1/rollouts/{rollout_id}"
            answers = {
                "n": await raw.post(f"{base}/chat/completions", json=chat_body([HELLO], n=2)),
                "n streamed": await raw.post(f"{base}/chat/completions", json=chat_body([HELLO], n=2, stream=True)),
                "model": await raw.post(f"{base}/chat/completions", json=chat_body([HELLO], model="tiny-b")),
                "model streamed": await raw.post(f"{base}/chat/completions", json=chat_body([HELLO], model="tiny-b", stream=True)),
                "responses model": await raw.post(f"{base}/responses", json={"model": "tiny-b", "input": "hi", "max_output_tokens": 4}),
            }
            unknown_model = await raw.post(f"{base}/chat/completions", json=chat_body([HELLO], model="nope"))
            client = backend.openai_client(rollout_id=rollout_id, max_retries=0)
            with pytest.raises(openai.BadRequestError) as caught:
                await client.chat.completions.create(model="tiny", messages=[HELLO], max_tokens=2, n=2)
            return answers, unknown_model, caught.value, await record(raw, rollout_id)

    answers, unknown_model, error, rollout = run(main())
    for key in ("n", "n streamed"):
        assert_error(answers[key], 400, "n", "n must be 1")
    for key in ("model", "model streamed", "responses model"):
        assert_error(answers[key], 400, "model", "'tiny'", "'tiny-b'")
    assert_error(unknown_model, 404, "model", "'nope'", code="model_not_found")
    assert error.param == "n"
    assert rollout["calls"] == [] and rollout["status"] == "open"


@pytest.mark.parametrize(
    "body, param",
    [
        ({}, "model"),
        ({"model": ""}, "model"),
        ({"model": "tiny", "metadata": {"k": 1}}, "metadata.k"),
        ({"model": "tiny", "metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"model": "tiny", "task_id": "x" * 257}, "task_id"),
        ({"model": "tiny", "task_id": 5}, "task_id"),
    ],
)
def test_opening_a_rollout_with_a_bad_body_is_a_400_naming_the_field(backend, body, param):
    async def main():
        async with http(backend) as raw:
            return await raw.post("/v1/rollouts", json=body)

    assert_error(run(main()), 400, param)


def test_opening_a_rollout_for_an_unknown_model_is_a_404(backend):
    async def main():
        async with http(backend) as raw:
            return await raw.post("/v1/rollouts", json={"model": "nope"})

    assert_error(run(main()), 404, "model", "'nope'", code="model_not_found")
    with pytest.raises(Exception, match="nope"):
        run(backend.open_rollout("nope"))


MALFORMED = [b"{not json", b"", b"[]", b'"text"', b"null", b'{"model": "tiny", "messages": 5}', b'{"model": "tiny", "input": {"x": 1}}', b"\xff\xfe"]


@pytest.mark.parametrize("body", MALFORMED, ids=lambda b: b.decode("latin-1")[:16] or "empty")
def test_malformed_bodies_are_400_never_500_and_record_nothing(backend, body):
    async def main():
        async with http(backend) as raw:
            rollout_id = await open_rollout(raw)
            headers = {"content-type": "application/json"}
            answers = [
                *([await raw.post("/v1/rollouts", content=body, headers=headers)] if b"model" not in body else []),
                await raw.post(f"/v1/rollouts/{rollout_id}/chat/completions", content=body, headers=headers),
                await raw.post(f"/v1/rollouts/{rollout_id}/responses", content=body, headers=headers),
            ]
            return answers, await record(raw, rollout_id)

    answers, rollout = run(main())
    for response in answers:
        assert response.status_code == 400, response.text
        assert response.json()["error"]["type"] == "invalid_request_error"
    assert rollout["calls"] == []


@pytest.mark.parametrize(
    "overrides, param",
    [
        ({"messages": [{"role": "bogus", "content": "x"}]}, "messages[0].role"),
        ({"messages": []}, "messages"),
        ({"max_tokens": 10**9}, "max_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"messages": [{"role": "user", "content": "word " * 5000}]}, "prompt_tokens"),  # refused by the engine, after the prompt was chosen
    ],
)
def test_a_refused_chat_call_through_a_rollout_records_nothing(backend, overrides, param):
    async def main():
        async with http(backend) as raw:
            rollout_id = await open_rollout(raw)
            response = await raw.post(f"/v1/rollouts/{rollout_id}/chat/completions", json=chat_body([HELLO], **overrides))
            return response, await record(raw, rollout_id)

    response, rollout = run(main())
    assert assert_error(response, 400)["param"] == param
    assert rollout["calls"] == []


# --------------------------------------------------------------------------- loopback
def test_agents_that_build_their_own_client_reach_the_rollout_through_the_loopback_server(backend):
    async def main():
        opened = await backend.open_rollout("tiny")
        rollout_id = opened["id"]
        url, key = backend.rollout_endpoint(rollout_id)
        assert url.startswith("http://127.0.0.1:") and url.endswith(f"/v1/rollouts/{rollout_id}")
        messages = [HELLO]
        async with openai.AsyncOpenAI(base_url=url, api_key=key, max_retries=0) as plain:
            assert [m.id async for m in plain.models.list()] == ["tiny"]
            first = await plain.chat.completions.create(model="tiny", messages=messages, max_tokens=6, seed=1)
        messages += [{"role": "assistant", "content": first.choices[0].message.content}, {"role": "user", "content": "And?"}]
        async with httpx.AsyncClient() as own_http:
            own = backend.openai_client(rollout_id=rollout_id, http_client=own_http, max_retries=0)
            assert str(own.base_url).rstrip("/") == url
            second = await own.chat.completions.create(model="tiny", messages=messages, max_tokens=6, seed=2)
        sync = openai.OpenAI(base_url=url, api_key=key, max_retries=0)
        messages += [{"role": "assistant", "content": second.choices[0].message.content}, {"role": "user", "content": "Bye."}]
        third = await asyncio.to_thread(sync.responses.create, model="tiny", input=items(messages), max_output_tokens=6)
        sync.close()
        async with httpx.AsyncClient(timeout=30) as anonymous:
            no_key = await anonymous.post(f"{url}/chat/completions", json=chat_body(messages))
            wrong_key = await anonymous.post(f"{url}/chat/completions", json=chat_body(messages), headers={"authorization": "Bearer hone-local-guess"})
            no_key_read = await anonymous.get(url)
        async with openai.AsyncOpenAI(base_url=url, api_key="wrong", max_retries=0) as intruder:
            with pytest.raises(openai.AuthenticationError):
                await intruder.chat.completions.create(model="tiny", messages=messages, max_tokens=2)
        return first, second, third, (no_key, wrong_key, no_key_read), await backend.close_rollout(rollout_id)

    first, second, third, refused, rollout = run(main())
    for response in refused:
        assert_error(response, 401, None, "API key", code="invalid_api_key")
    calls = rollout["calls"]
    assert [c["prompt"] for c in calls] == ["rendered", "bridged", "bridged"]
    assert [c["prompt_token_ids"] for c in calls] == [
        first.model_extra["prompt_token_ids"], second.model_extra["prompt_token_ids"], third.model_extra["prompt_token_ids"]
    ]
    assert [c["token_ids"] for c in calls] == [first.choices[0].model_extra["token_ids"], second.choices[0].model_extra["token_ids"], third.model_extra["token_ids"]]


def test_a_call_still_sampling_when_its_rollout_closes_is_answered_but_not_added_to_the_closed_record(backend):
    async def main():
        rollout_id = (await backend.open_rollout("tiny"))["id"]
        url, key = backend.rollout_endpoint(rollout_id)  # real HTTP, so the stream's first chunk comes while it samples
        async with openai.AsyncOpenAI(base_url=url, api_key=key, max_retries=0) as client:
            stream = await client.chat.completions.create(model="tiny", messages=[HELLO], max_tokens=200, seed=1, stream=True)
            chunks = [await stream.__anext__()]
            closed = await backend.close_rollout(rollout_id)
            chunks += [chunk async for chunk in stream]
        return chunks, closed, await backend.close_rollout(rollout_id)

    chunks, closed, again = run(main())
    finished = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finished and finished[-1].choices[0].model_extra["token_ids"]  # the agent got its whole answer
    assert closed["calls"] == [] and again == closed  # the record handed back at the close stays as it was


# --------------------------------------------------------------------------- the old routes
def test_the_plain_routes_are_unchanged_and_record_nothing(backend):
    async def main():
        async with http(backend) as raw:
            rollout_id = await open_rollout(raw)
            plain = backend.openai_client(max_retries=0)
            recorded = backend.openai_client(rollout_id=rollout_id, max_retries=0)
            request = {"model": "tiny", "messages": [HELLO], "max_tokens": 8, "seed": 11}
            outside = await plain.chat.completions.create(**request)
            streamed = [c async for c in await plain.chat.completions.create(**request, stream=True, stream_options={"include_usage": True})]
            response = await plain.responses.create(model="tiny", input="Say hello.", max_output_tokens=8, extra_body={"seed": 11})
            models = [m.id async for m in plain.models.list()]
            nothing = await record(raw, rollout_id)
            inside = await recorded.chat.completions.create(**request)
            return outside, streamed, response, models, nothing, inside

    outside, streamed, response, models, nothing, inside = run(main())
    assert nothing["calls"] == []
    assert models == ["tiny", "tiny-b"]
    assert streamed[-1].model_extra["prompt_token_ids"] == outside.model_extra["prompt_token_ids"]
    assert response.model_extra["prompt_token_ids"] == outside.model_extra["prompt_token_ids"]
    # a rollout's first call samples exactly what the plain route does
    assert inside.model_extra["prompt_token_ids"] == outside.model_extra["prompt_token_ids"]
    assert inside.choices[0].model_extra["token_ids"] == outside.choices[0].model_extra["token_ids"]
    assert inside.choices[0].message.content == outside.choices[0].message.content


# --------------------------------------------------------------------------- the book
def test_the_book_scopes_rollouts_to_their_owner_expires_idle_ones_and_limits_open_ones():
    book = RolloutBook(idle_s=3600, max_open=2)
    alice = book.open("alice", "tiny")
    with pytest.raises(RolloutNotFoundError, match="does not exist"):  # another owner's: not even "was closed"
        book.get("bob", alice.id)
    with pytest.raises(RolloutNotFoundError, match="does not exist"):
        book.close(None, alice.id)
    book.open("alice", "tiny")
    with pytest.raises(LimitError, match="2 rollouts are open"):
        book.open("alice", "tiny")
    book.open("bob", "tiny")  # the limit is per owner
    book.close("alice", alice.id)
    book.open("alice", "tiny")  # a closed one no longer counts
    assert book.close("alice", alice.id) is book.close("alice", alice.id)

    idle = RolloutBook(idle_s=0.0)
    gone = idle.open(None, "tiny")
    with pytest.raises(RolloutNotFoundError):
        idle.get(None, gone.id)


def test_an_open_rollout_in_use_is_not_dropped_to_make_room_for_closed_records():
    book = RolloutBook(idle_s=3600, closed_s=600, max_open=2)
    long_running = book.open(None, "tiny")
    for _ in range(10):  # short rollouts opened and closed meanwhile: never more than two open at once
        book.close(None, book.open(None, "tiny").id)
    assert book.get(None, long_running.id) is long_running


def test_a_backend_client_takes_the_users_own_http_client(backend):
    """`openai_client(http_client=...)` used to be a TypeError in-process: with a client of the
    user's own, hone's client goes through the loopback server instead of its ASGI transport."""
    import httpx

    async def ask():
        async with httpx.AsyncClient(timeout=30) as own_http:
            client = backend.openai_client(http_client=own_http, max_retries=0)
            assert str(client.base_url).startswith("http://127.0.0.1:")
            return await client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3, seed=1)

    response = asyncio.run(ask())
    assert len(response.choices[0].model_extra["token_ids"]) >= 1
    with httpx.Client(timeout=30) as own_sync:
        sync = backend.openai_client_sync(http_client=own_sync, max_retries=0)
        again = sync.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3, seed=1)
    assert again.choices[0].model_extra["token_ids"] == response.choices[0].model_extra["token_ids"]  # one model, one seed
