"""`hone serve` as a real process on 127.0.0.1, driven by the official openai client."""

import json

import httpx
import openai
import pytest

from hone.backends import LocalBackend

from ..serving import start_hone_serve


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ASK = [
    {"role": "system", "content": "You answer by calling a tool."},
    {"role": "user", "content": "What's the weather in Paris?"},
]


def ask_for_weather(client):
    return client.chat.completions.create(
        model="smollm2-135m",
        messages=ASK,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=32,
    )


def assert_weather_call(reply):
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message.content
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert "city" in json.loads(call.function.arguments)


@pytest.fixture(scope="module")
def embedded_server():
    process, port = start_hone_serve("smollm2-135m")
    yield port
    process.terminate()
    process.wait(timeout=30)


@pytest.mark.slow
def test_a_real_server_returns_a_parsed_tool_call_from_the_embedded_model(embedded_server):
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{embedded_server}/v1", api_key="unused", max_retries=0)
    assert_weather_call(ask_for_weather(client))


@pytest.mark.slow
def test_a_real_server_answers_malformed_requests_with_4xx_and_keeps_serving(embedded_server):
    base = f"http://127.0.0.1:{embedded_server}"
    assert httpx.post(f"{base}/v1/chat/completions", content=b"\x00garbage").status_code == 400
    assert httpx.post(f"{base}/v1/chat/completions", json={"model": "nope", "messages": ASK}).status_code == 404
    ok = httpx.post(f"{base}/v1/chat/completions", json={"model": "smollm2-135m", "messages": ASK, "max_tokens": 4}, timeout=60)
    assert ok.status_code == 200


@pytest.mark.slow
def test_the_in_process_client_gets_the_same_parsed_tool_call():
    backend = LocalBackend()
    backend.add_model("smollm2-135m", "smollm2-135m")
    client = backend.openai_client_sync()
    assert_weather_call(ask_for_weather(client))
    backend.close()
