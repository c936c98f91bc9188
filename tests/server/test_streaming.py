"""Streamed chat completions over real HTTP: tokens arrive as they are decoded, and the stream adds up
to exactly the non-streamed reply, token ids included."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from .live import serving

HELLO = [{"role": "user", "content": "Say hello"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10}, "unit": {"enum": ["c", "f"]}}, "required": ["city", "unit"]},
    },
}


@pytest.fixture(scope="module")
def url(backend):
    with serving(backend.app) as url:
        yield url


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)


def test_a_stream_sends_tokens_as_they_are_decoded_and_adds_up_to_the_plain_reply(client):
    request = {"model": "tiny", "messages": HELLO, "max_tokens": 48, "seed": 7, "temperature": 0.8}
    plain = client.chat.completions.create(**request)
    chunks = list(client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 10  # token by token, not one whole-sample chunk
    assert "".join(pieces) == plain.choices[0].message.content
    last = next(c for c in reversed(chunks) if c.choices and c.choices[0].finish_reason)
    assert last.choices[0].model_extra["token_ids"] == plain.choices[0].model_extra["token_ids"]
    assert last.choices[0].model_extra["token_logprobs"] == pytest.approx(plain.choices[0].model_extra["token_logprobs"], abs=1e-5)
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert chunks[-1].model_extra["prompt_token_ids"] == plain.model_extra["prompt_token_ids"]


def test_each_of_n_streamed_choices_matches_its_plain_twin(client):
    request = {"model": "tiny", "messages": HELLO, "max_tokens": 24, "seed": 3, "n": 3}
    plain = client.chat.completions.create(**request)
    texts = {0: "", 1: "", 2: ""}
    for chunk in client.chat.completions.create(**request, stream=True):
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert [texts[i] for i in range(3)] == [c.message.content for c in plain.choices]


def test_streamed_logprobs_cover_each_token_once(client):
    request = {"model": "tiny", "messages": HELLO, "max_tokens": 16, "seed": 2, "logprobs": True, "top_logprobs": 2}
    plain = client.chat.completions.create(**request)
    entries = []
    for chunk in client.chat.completions.create(**request, stream=True):
        if chunk.choices and chunk.choices[0].logprobs and chunk.choices[0].logprobs.content:
            entries += chunk.choices[0].logprobs.content
    assert [e.token for e in entries] == [e.token for e in plain.choices[0].logprobs.content]
    assert [len(e.top_logprobs) for e in entries] == [2] * len(entries)


def test_stop_strings_never_reach_the_stream(client):
    request = {"model": "tiny", "messages": HELLO, "max_tokens": 40, "seed": 1, "temperature": 0.8}
    full = client.chat.completions.create(**request).choices[0].message.content
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert stop.strip()
    plain = client.chat.completions.create(**request, stop=[stop]).choices[0].message.content
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**request, stop=[stop], stream=True) if c.choices)
    assert streamed == plain and stop not in streamed


def test_streamed_tool_calls_arrive_whole_in_openais_delta_shape(client):
    request = {"model": "tiny", "messages": HELLO, "tools": [WEATHER], "tool_choice": "required", "max_tokens": 400, "seed": 4}  # room for 8 calls
    plain = client.chat.completions.create(**request).choices[0]
    calls: dict[int, dict] = {}
    finish = None
    for chunk in client.chat.completions.create(**request, stream=True):
        for choice in chunk.choices:
            assert not (choice.delta.content or "").strip().startswith("<tool_call>")
            for call in choice.delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"name": "", "arguments": ""})
                entry["name"] += call.function.name or ""
                entry["arguments"] += call.function.arguments or ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert [calls[i] for i in sorted(calls)] == [{"name": c.function.name, "arguments": c.function.arguments} for c in plain.message.tool_calls]
    assert all(json.loads(c["arguments"])["unit"] in ("c", "f") for c in calls.values())


def test_errors_before_the_first_token_keep_their_status(url):
    body = {"model": "nope", "messages": HELLO, "stream": True}
    response = httpx.post(url + "/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 404 and "does not exist" in response.json()["error"]["message"]
