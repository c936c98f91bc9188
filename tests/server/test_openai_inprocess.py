"""The official openai client against hone's app, in-process over the ASGI transport."""

import asyncio
import json

import httpx
import openai
import pytest

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
HELLO = [{"role": "user", "content": "Say hello."}]


def test_sync_client_round_trip_carries_token_ids_and_logprobs(backend):
    client = backend.openai_client_sync()
    reply = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=8, seed=1)
    choice = reply.choices[0]
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    extra = choice.model_extra
    assert len(extra["token_ids"]) == len(extra["token_logprobs"]) == reply.usage.completion_tokens
    assert all(lp <= 0 for lp in extra["token_logprobs"])
    assert len(reply.model_extra["prompt_token_ids"]) == reply.usage.prompt_tokens
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_async_client_serves_concurrent_requests(backend):
    async def main():
        client = backend.openai_client()
        calls = [client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=6, seed=i) for i in range(8)]
        return await asyncio.gather(*calls)

    replies = asyncio.run(main())
    assert len(replies) == 8 and all(r.choices[0].model_extra["token_ids"] for r in replies)


def test_same_seed_gives_the_same_reply_and_n_gives_n_choices(backend):
    client = backend.openai_client_sync()
    first = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=8, seed=42, n=3)
    second = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=8, seed=42, n=3)
    assert [c.model_extra["token_ids"] for c in first.choices] == [c.model_extra["token_ids"] for c in second.choices]
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert len({tuple(c.model_extra["token_ids"]) for c in first.choices}) > 1


def test_logprobs_and_top_logprobs_follow_the_openai_shape(backend):
    client = backend.openai_client_sync()
    reply = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=5, logprobs=True, top_logprobs=3, seed=3)
    choice = reply.choices[0]
    content = choice.logprobs.content
    assert [c.logprob for c in content] == pytest.approx(choice.model_extra["token_logprobs"])
    assert all(len(c.top_logprobs) == 3 for c in content)
    assert all(c.top_logprobs[0].logprob >= c.logprob - 1e-6 for c in content)


def test_streaming_delivers_the_same_reply_as_chunks(backend):
    client = backend.openai_client_sync()
    plain = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=8, seed=5)
    stream = client.chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=8, seed=5, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_models_are_listed(backend):
    assert [m.id for m in backend.openai_client_sync().models.list()] == ["tiny"]


def test_a_call_cut_short_by_max_tokens_is_kept_as_text_and_flagged(backend):
    # the grammar starts the call, but 6 tokens cannot finish it: the text is kept and flagged
    client = backend.openai_client_sync()
    reply = client.chat.completions.create(model="tiny", messages=HELLO, tools=[WEATHER], tool_choice="required", max_tokens=6, seed=0)
    choice = reply.choices[0]
    assert choice.message.tool_calls is None
    assert choice.message.content.startswith("<tool_call>")
    assert choice.model_extra["tool_call_error"]


@pytest.mark.parametrize(
    "kwargs, status, fragment",
    [
        ({"model": "nope"}, 404, "does not exist"),
        ({"n": 0}, 400, "n must be"),
        ({"n": 10_000}, 400, "n must be"),
        ({"temperature": -1}, 400, "temperature"),
        ({"top_logprobs": 50, "logprobs": True}, 400, "top_logprobs"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "role must be one of"),
        ({"messages": []}, 400, "messages"),
        ({"max_tokens": 10_000_000}, 400, "max"),
        ({"tool_choice": "required"}, 400, "needs 'tools'"),
        ({"presence_penalty": 2.5}, 400, "presence_penalty"),
        ({"frequency_penalty": -3.0}, 400, "frequency_penalty"),
        ({"logit_bias": {"42": 101}}, 400, "logit_bias"),
        ({"logit_bias": {"not-a-token": 1}}, 400, "logit_bias"),
        ({"logit_bias": {"999999999": 1}}, 400, "outside this model's vocabulary"),
        ({"functions": [{"name": "f"}]}, 400, "send 'tools' instead"),
        ({"store": True}, 400, "does not store"),
        ({"response_format": {"type": "json_schema"}}, 400, "response_format.json_schema is required"),
        ({"response_format": {"type": "xml"}}, 400, "response_format.type"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "nosuchtype"}}}}, 400, "response_format.json_schema.schema"),
    ],
)
def test_bad_requests_get_a_4xx_in_the_openai_error_shape(backend, kwargs, status, fragment):
    client = backend.openai_client_sync(max_retries=0)
    request = {"model": "tiny", "messages": HELLO, "max_tokens": 4, **kwargs}
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(**request)
    assert caught.value.status_code == status
    error = caught.value.body
    assert set(error) >= {"message", "type", "param", "code"} if isinstance(error, dict) else False
    assert fragment in error["message"]


def test_a_body_that_is_not_json_gets_a_400_and_the_app_keeps_serving(backend):
    async def main():
        transport = httpx.ASGITransport(app=backend.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hone.local") as http:
            broken = await http.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
            wrong_type = await http.post("/v1/chat/completions", json={"model": "tiny", "messages": "hello"})
            fine = await http.post("/v1/chat/completions", json={"model": "tiny", "messages": HELLO, "max_tokens": 3})
            return broken, wrong_type, fine

    broken, wrong_type, fine = asyncio.run(main())
    assert broken.status_code == 400 and broken.json()["error"]["type"] == "invalid_request_error"
    assert wrong_type.status_code == 400 and "messages" in wrong_type.json()["error"]["message"]
    assert fine.status_code == 200 and json.loads(fine.text)["choices"]


def test_parameters_at_their_no_op_values_are_served(backend):
    # clients send these as defaults
    client = backend.openai_client_sync(max_retries=0)
    reply = client.chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=4, presence_penalty=0, frequency_penalty=0.0, logit_bias={}, store=False
    )
    assert reply.usage.completion_tokens >= 1
