"""OpenAI's Responses API on hone, with real clients: the official openai client in-process
(`responses.create`, `create(stream=True)`, `responses.stream`) and the OpenAI Agents SDK with its
default model class (OpenAIResponsesModel) over a real uvicorn.

The model is the randomly initialised "tiny": whatever it writes is noise, so a function call or
JSON that validates was put there by the grammar. Schemas are bounded (enums, maxLength, integer
ranges) so that noise still finishes within MAX_TOKENS; a reply cut by its length is "incomplete".
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Literal

import agents
import httpx
import jsonschema
import openai
import pytest
from agents import Agent, ModelSettings, Runner, function_tool
from agents.items import ToolCallOutputItem
from pydantic import BaseModel, Field

from .live import serving

MAX_TOKENS = 150  # a bounded call or object takes ~20-60 tokens of tiny's noise
WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["c", "f"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather in a city", "parameters": WEATHER_PARAMETERS, "strict": True}
TIME = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"]}}
FORECAST = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "sky": {"enum": ["sun", "rain", "snow"]},
        "degrees": {"type": "integer", "minimum": -40, "maximum": 50},
    },
    "required": ["city", "sky", "degrees"],
    "additionalProperties": False,
}
FORECAST_FORMAT = {"format": {"type": "json_schema", "name": "forecast", "schema": FORECAST, "strict": True}}


@pytest.fixture(scope="module")
def client(backend):
    return backend.openai_client_sync(max_retries=0)


def create(client, seed: int, **request):
    return client.responses.create(model="tiny", max_output_tokens=request.pop("max_output_tokens", MAX_TOKENS), extra_body={"seed": seed}, **request)


def assert_token_exact(response) -> None:
    extra = response.model_extra
    assert len(extra["token_ids"]) == len(extra["token_logprobs"]) == response.usage.output_tokens
    assert len(extra["prompt_token_ids"]) == response.usage.input_tokens
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert all(lp <= 0 for lp in extra["token_logprobs"])


def function_calls(response) -> list:
    return [item for item in response.output if item.type == "function_call"]


# --------------------------------------------------------------------------- plain text
def test_text_input_gives_a_message_with_output_text_and_token_exact_extensions(client):
    response = create(client, 1, input="Say hello.", max_output_tokens=12)
    assert response.id.startswith("resp_") and response.object == "response" and response.model == "tiny"
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"  # noise rarely ends by itself
    [message] = response.output
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.content[0].type == "output_text" and message.content[0].annotations == []
    assert response.output_text == message.content[0].text and response.output_text
    assert response.usage.output_tokens == 12 and response.usage.input_tokens_details.cached_tokens == 0
    assert response.model_extra["token_forced"] is None and response.model_extra["tool_call_error"] is None  # no grammar
    assert_token_exact(response)


def test_item_input_and_instructions_render_the_same_prompt_as_the_chat_messages(client, backend):
    items = [
        {"role": "user", "content": "Hi"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello!"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
    ]
    response = create(client, 2, input=items, instructions="Be brief.", max_output_tokens=4)
    chat = backend.openai_client_sync().chat.completions.create(
        model="tiny",
        max_tokens=4,
        seed=2,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Weather?"}],
    )
    assert response.model_extra["prompt_token_ids"] == chat.model_extra["prompt_token_ids"]
    assert response.model_extra["token_ids"] == chat.choices[0].model_extra["token_ids"]  # same seed, same draw
    assert response.instructions == "Be brief."


def test_output_text_logprobs_are_included_when_asked_for(client):
    response = create(client, 3, input="Hi", max_output_tokens=5, include=["message.output_text.logprobs"], top_logprobs=2)
    logprobs = response.output[0].content[0].logprobs
    assert [lp.logprob for lp in logprobs] == pytest.approx(response.model_extra["token_logprobs"])
    assert all(len(lp.top_logprobs) == 2 for lp in logprobs)


# --------------------------------------------------------------------------- tools and formats
def test_required_tool_choice_gives_a_function_call_whose_arguments_fit_the_schema(client):
    for seed in range(3):
        response = create(client, seed, input="What is the weather in Paris?", tools=[WEATHER, TIME], tool_choice="required", parallel_tool_calls=False)
        assert response.status == "completed", response.model_extra["token_ids"]
        [call] = function_calls(response)
        assert call.name in ("get_weather", "get_time") and call.call_id.startswith("call_") and call.status == "completed"
        jsonschema.validate(json.loads(call.arguments), WEATHER_PARAMETERS if call.name == "get_weather" else {**TIME["parameters"], "additionalProperties": False})
        assert any(response.model_extra["token_forced"])  # the fixed keys and separators
        assert_token_exact(response)
    assert response.tool_choice == "required" and response.tools[0].name == "get_weather" and response.parallel_tool_calls is False


def test_a_named_function_is_the_one_called(client):
    response = create(client, 4, input="Time?", tools=[WEATHER, TIME], tool_choice={"type": "function", "name": "get_time"})
    assert [call.name for call in function_calls(response)] == ["get_time"]
    assert response.tool_choice.name == "get_time"


def test_a_tool_round_trip_sends_the_call_and_its_output_back_as_items(client, backend):
    first = create(client, 5, input=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER], tool_choice="required", parallel_tool_calls=False)
    [call] = function_calls(first)
    history = [{"role": "user", "content": "Weather in Paris?"}, call.model_dump(exclude_none=True), {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}]
    second = create(client, 6, input=history, tools=[WEATHER], text=FORECAST_FORMAT, tool_choice="none")
    jsonschema.validate(json.loads(second.output_text), FORECAST)
    # the same conversation as chat messages renders the same prompt: the call is an assistant
    # tool call, its output a tool message
    chat_call = {"id": call.call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [chat_call]},
        {"role": "tool", "tool_call_id": call.call_id, "content": "sunny, 21 C"},
    ]
    chat = backend.openai_client_sync().chat.completions.create(
        model="tiny", messages=messages, tools=[{"type": "function", "function": {k: WEATHER[k] for k in ("name", "description", "parameters")}}], tool_choice="none", max_tokens=1
    )
    assert second.model_extra["prompt_token_ids"] == chat.model_extra["prompt_token_ids"]


def test_json_schema_text_format_gives_output_text_that_validates(client):
    for seed in range(3):
        response = create(client, seed, input="Weather?", text=FORECAST_FORMAT)
        assert response.status == "completed"
        jsonschema.validate(json.loads(response.output_text), FORECAST)
    assert response.text.format.type == "json_schema" and response.text.format.name == "forecast"


# --------------------------------------------------------------------------- streaming
def test_a_stream_adds_up_to_the_plain_response_token_for_token(client):
    request = {"input": "Weather?", "text": FORECAST_FORMAT}
    plain = create(client, 7, **request)
    events = list(create(client, 7, stream=True, **request))
    types = [e.type for e in events]
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) >= 5  # token by token, not one whole piece
    completed = events[-1].response
    assert "".join(deltas) == completed.output_text == plain.output_text
    assert completed.model_extra["token_ids"] == plain.model_extra["token_ids"]
    assert completed.model_extra["prompt_token_ids"] == plain.model_extra["prompt_token_ids"]
    assert completed.output[0].id == events[2].item.id == events[4].item_id  # one message, named alike throughout


def test_the_stream_helper_gives_the_final_response_and_function_call_events(client):
    request = {"input": "Weather?", "tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False}
    plain = create(client, 8, **request)
    with client.responses.stream(model="tiny", max_output_tokens=MAX_TOKENS, extra_body={"seed": 8}, **request) as stream:
        events = list(stream)
        final = stream.get_final_response()
    [call] = function_calls(final)
    assert [e.type for e in events if "function_call" in e.type] == ["response.function_call_arguments.delta", "response.function_call_arguments.done"]
    assert next(e for e in events if e.type == "response.function_call_arguments.done").arguments == call.arguments
    assert call.arguments == function_calls(plain)[0].arguments and call.name == function_calls(plain)[0].name
    assert final.model_extra["token_ids"] == plain.model_extra["token_ids"]


def test_a_stream_cut_by_its_length_ends_incomplete(client):
    events = list(create(client, 9, input="Hi", max_output_tokens=6, stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens" and len(events[-1].response.model_extra["token_ids"]) == 6


# --------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    "overrides, param",
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"store": True}, "store"),
        ({"background": True}, "background"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"truncation": "auto"}, "truncation"),
        ({"include": ["file_search_call.results"]}, "include"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": [WEATHER, {"type": "code_interpreter", "container": {"type": "auto"}}]}, "tools[1].type"),
        ({"tool_choice": {"type": "file_search"}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),  # with no tools
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]}, "input[0].content[0].type"),
        ({"input": [{"role": "user", "content": "Hi"}, {"type": "reasoning", "summary": []}]}, "input[1].type"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
        ({"tools": [{**WEATHER, "parameters": {"type": "object", "properties": {"a": {"type": "string", "pattern": "(?<=a)b"}}}}]}, "tools[0].parameters"),
    ],
)
def test_what_hone_does_not_do_gets_a_400_naming_the_parameter(client, overrides, param):
    request = {"input": "Hi", **overrides}
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="tiny", **request)
    assert caught.value.status_code == 400 and caught.value.body["param"] == param, caught.value.body


def test_no_op_values_of_refused_parameters_pass_and_an_unknown_model_is_a_404(client):
    response = create(client, 10, input="Hi", max_output_tokens=2, store=False, reasoning={"effort": None}, truncation="disabled", include=[], metadata={"run": "1"})
    assert response.metadata == {"run": "1"}
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="nope", input="Hi")


def test_an_error_before_the_first_token_keeps_its_status_when_streaming_and_names_the_responses_parameter(client):
    # the engine's bound: prompt + max_output_tokens within its max_seq_len (4096 for tiny)
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(model="tiny", input="Hi", stream=stream, max_output_tokens=32_768)
        assert caught.value.body["param"] == "max_output_tokens" and "max_output_tokens (32768)" in caught.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="nope", input="Hi", stream=True)


# --------------------------------------------------------------------------- the Agents SDK, over HTTP
class Forecast(BaseModel):
    city: str = Field(max_length=12)
    sky: Literal["sun", "rain", "snow"]
    degrees: int = Field(ge=-40, le=50)


@pytest.fixture(scope="module")
def url(backend):
    with serving(backend.app) as base:
        yield base


@pytest.fixture
def sdk(url):
    """The Agents SDK's defaults pointed at hone: the client, the Responses API, no tracing. A
    client per test: it keeps its connections on the event loop of the test's `asyncio.run`."""
    agents.set_default_openai_client(openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0), use_for_tracing=False)
    agents.set_default_openai_api("responses")
    agents.set_tracing_disabled(True)
    yield url
    agents.set_default_openai_api("chat_completions")


def test_an_agent_with_the_default_model_class_calls_its_tool_with_valid_arguments(sdk):
    invoked: list[tuple[str, int]] = []

    @function_tool
    def get_weather(city: Annotated[str, Field(max_length=12)], days: Annotated[int, Field(ge=1, le=7)]) -> str:
        """The weather in a city for the next few days."""
        invoked.append((city, days))
        return "sunny"

    async def run(seed: int):
        # "required" holds for the first turn only (the SDK resets tool_choice after a call); the
        # second turn, given the tool's result, answers in the Forecast schema, which finishes
        settings = ModelSettings(tool_choice="required", parallel_tool_calls=False, max_tokens=MAX_TOKENS, extra_body={"seed": seed})
        agent = Agent(name="weather", instructions="Use the tool.", model="tiny", tools=[get_weather], output_type=Forecast, model_settings=settings)
        invoked.clear()
        result = await Runner.run(agent, "What is the weather in Paris?", max_turns=4)
        return list(invoked), result

    calls, result = asyncio.run(run(0))
    assert calls and all(len(city) <= 12 and 1 <= days <= 7 for city, days in calls)
    assert [item.output for item in result.new_items if isinstance(item, ToolCallOutputItem)] == ["sunny"] * len(calls)
    assert isinstance(result.final_output, Forecast)
    assert all(r.response_id.startswith("resp_") for r in result.raw_responses)


def test_an_agent_with_a_structured_output_type_returns_an_instance(sdk):
    settings = ModelSettings(max_tokens=MAX_TOKENS, extra_body={"seed": 11})
    agent = Agent(name="forecaster", instructions="Give the forecast.", model="tiny", output_type=Forecast, model_settings=settings)
    result = asyncio.run(Runner.run(agent, "What is the weather in Paris?"))
    assert isinstance(result.final_output, Forecast)


def test_the_route_is_served_over_http_as_server_sent_events(sdk):
    body = {"model": "tiny", "input": "Hi", "max_output_tokens": 3, "stream": True, "seed": 1}
    with httpx.Client(base_url=sdk, timeout=60) as http:
        response = http.post("/v1/responses", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in response.text.split("\n\n") if b]
    assert all(b.startswith("event: ") and "\ndata: " in b for b in blocks)
    assert [b.split("\n")[0] for b in blocks][:2] == ["event: response.created", "event: response.in_progress"]


def test_an_agent_with_default_settings_but_tool_choice_required_invokes_its_tool(sdk):
    # the SDK's defaults: parallel calls allowed, no max_tokens (hone's default of 256 applies).
    # The run stops at the tool's result: a second, free-text turn of tiny's noise would run to its
    # length, and the SDK raises on an "incomplete" response, as it would with OpenAI's
    invoked: list[tuple[str, int]] = []

    @function_tool
    def get_weather(city: Annotated[str, Field(max_length=12)], days: Annotated[int, Field(ge=1, le=7)]) -> str:
        """The weather in a city for the next few days."""
        invoked.append((city, days))
        return "sunny"

    settings = ModelSettings(tool_choice="required", extra_body={"seed": 0})
    agent = Agent(name="weather", instructions="Use the tool.", model="tiny", tools=[get_weather], model_settings=settings, tool_use_behavior="stop_on_first_tool")
    result = asyncio.run(Runner.run(agent, "What is the weather in Paris?"))
    assert invoked and all(len(city) <= 12 and 1 <= days <= 7 for city, days in invoked)
    assert result.final_output == "sunny"


def test_a_streamed_agent_run_gets_text_deltas_and_its_structured_output(sdk):
    async def run():
        settings = ModelSettings(max_tokens=MAX_TOKENS, extra_body={"seed": 12})
        agent = Agent(name="forecaster", instructions="Give the forecast.", model="tiny", output_type=Forecast, model_settings=settings)
        result = Runner.run_streamed(agent, "What is the weather in Paris?")
        deltas = [e.data.delta async for e in result.stream_events() if e.type == "raw_response_event" and e.data.type == "response.output_text.delta"]
        return deltas, result

    deltas, result = asyncio.run(run())
    assert isinstance(result.final_output, Forecast)
    assert Forecast.model_validate_json("".join(deltas)) == result.final_output
