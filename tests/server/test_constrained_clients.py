"""Real clients against hone's grammar-constrained chat completions: the official openai client
(sync and async, in-process), LangChain's ChatOpenAI and the OpenAI Agents SDK (over real HTTP).

The model is the randomly initialised "tiny": whatever it writes is noise, so anything that parses
and validates was put there by the grammar. Schemas are bounded (enums, `maxLength`, integer
ranges) so that noise still finishes within max_tokens; only a finished reply ("stop" or
"tool_calls") is owed a valid result.
"""

import asyncio
import json
from typing import Annotated, Literal

import agents
import jsonschema
import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    Runner,
    function_tool,
)
from agents.items import ToolCallOutputItem
from langchain_openai import ChatOpenAI
from openai import AsyncOpenAI
from pydantic import BaseModel, Field

from hone.chat.grammar import MAX_CALLS

from .live import serving

MAX_TOKENS = 150  # a bounded call or object takes ~20-60 tokens of tiny's noise
# with parallel calls allowed a model that never writes EOS (tiny) makes the most calls a reply may hold
MAX_TOKENS_PARALLEL = MAX_CALLS * 50
HELLO = [{"role": "user", "content": "What is the weather in Paris?"}]


def tool(name: str, properties: dict, required: list[str]) -> dict:
    # no additionalProperties: hone treats an object that lists properties as closed
    parameters = {"type": "object", "properties": properties, "required": required}
    return {"type": "function", "function": {"name": name, "description": f"{name} tool", "parameters": parameters}}


WEATHER = tool("get_weather", {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["c", "f"]}}, ["city", "unit"])
TIME = tool("get_time", {"zone": {"enum": ["UTC", "CET", "PST"]}}, ["zone"])
ADD = tool("add", {"a": {"type": "integer", "minimum": 0, "maximum": 99}, "b": {"type": "integer", "minimum": 0, "maximum": 99}}, ["a", "b"])
TOOLS = [WEATHER, TIME, ADD]

FORECAST = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "sky": {"enum": ["sun", "rain", "snow"]},
        "degrees": {"type": "integer", "minimum": -40, "maximum": 50},
    },
    "required": ["city", "sky", "degrees"],
}


def closed(schema: dict) -> dict:
    return {**schema, "additionalProperties": False}


def assert_valid_calls(choice, tools: list[dict]) -> list[tuple[str, dict]]:
    """Every tool call of `choice` names one of `tools` and its arguments fit that tool's schema
    (closed, as hone enforces it); returns the calls as (name, arguments)."""
    assert choice.finish_reason == "tool_calls", f"{choice.finish_reason}: {choice.message.content!r}"
    assert choice.message.tool_calls, choice.model_extra["tool_call_error"]
    offered = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    calls = []
    for call in choice.message.tool_calls:
        assert call.type == "function" and call.id
        assert call.function.name in offered, call.function.name
        arguments = json.loads(call.function.arguments)
        jsonschema.validate(arguments, closed(offered[call.function.name]))
        calls.append((call.function.name, arguments))
    return calls


def assert_forced_flags(choice, some_forced: bool = True) -> None:
    extra = choice.model_extra
    assert len(extra["token_forced"]) == len(extra["token_ids"]) == len(extra["token_logprobs"])
    assert all(isinstance(flag, bool) for flag in extra["token_forced"])
    if some_forced:  # the fixed keys and separators of a schema leave the sampler one choice
        assert any(extra["token_forced"])


# --------------------------------------------------------------------------- openai client
def test_required_tool_choice_calls_only_offered_tools_with_valid_arguments(backend):
    client = backend.openai_client_sync(max_retries=0)
    reply = client.chat.completions.create(
        model="tiny", messages=HELLO, tools=TOOLS, tool_choice="required", max_tokens=MAX_TOKENS_PARALLEL, temperature=1.0, seed=0, n=4
    )
    for choice in reply.choices:
        assert_valid_calls(choice, TOOLS)


def test_required_tool_choice_without_parallel_calls_makes_one_valid_call_per_choice(backend):
    client = backend.openai_client_sync(max_retries=0)
    reply = client.chat.completions.create(
        model="tiny",
        messages=HELLO,
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=MAX_TOKENS,
        temperature=1.0,
        seed=0,
        n=4,
    )
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    for choice in reply.choices:
        assert len(assert_valid_calls(choice, TOOLS)) == 1
        assert choice.message.content in (None, "")
        assert_forced_flags(choice)
    assert len({tuple(c.model_extra["token_ids"]) for c in reply.choices}) > 1  # n samples, not one copied


def test_a_named_function_gets_exactly_one_call_to_it(backend):
    client = backend.openai_client_sync(max_retries=0)
    named = {"type": "function", "function": {"name": "add"}}
    reply = client.chat.completions.create(
        model="tiny", messages=HELLO, tools=TOOLS, tool_choice=named, max_tokens=MAX_TOKENS, temperature=1.0, seed=1, n=3
    )
    for choice in reply.choices:
        assert [name for name, _ in assert_valid_calls(choice, TOOLS)] == ["add"]


def test_response_format_json_schema_content_validates_in_every_choice(backend):
    client = backend.openai_client_sync(max_retries=0)
    response_format = {"type": "json_schema", "json_schema": {"name": "forecast", "schema": FORECAST}}
    reply = client.chat.completions.create(
        model="tiny", messages=HELLO, response_format=response_format, max_tokens=MAX_TOKENS, temperature=1.0, seed=2, n=4
    )
    assert len(reply.choices) == 4
    for choice in reply.choices:
        assert choice.finish_reason == "stop" and not choice.message.tool_calls
        jsonschema.validate(json.loads(choice.message.content), closed(FORECAST))
        assert_forced_flags(choice)


def test_response_format_json_object_content_is_an_object_once_finished(backend):
    # {"type": "object"} has no bound: noise may write keys until max_tokens (finish_reason "length",
    # nothing owed). Every finished choice must be an object; seed 0 finishes some of the eight.
    client = backend.openai_client_sync(max_retries=0)
    reply = client.chat.completions.create(
        model="tiny", messages=HELLO, response_format={"type": "json_object"}, max_tokens=MAX_TOKENS, temperature=1.0, seed=0, n=8
    )
    finished = [c for c in reply.choices if c.finish_reason == "stop"]
    assert finished, [c.message.content[:60] for c in reply.choices]
    for choice in reply.choices:
        assert choice.finish_reason in ("stop", "length") and choice.message.content.startswith("{")
        assert_forced_flags(choice, some_forced=False)  # an open object fixes nothing but its braces
    for choice in finished:
        assert isinstance(json.loads(choice.message.content), dict)


def test_token_forced_is_null_without_a_grammar(backend):
    client = backend.openai_client_sync(max_retries=0)
    free = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=8, seed=3)
    offered_but_unused = client.chat.completions.create(model="tiny", messages=HELLO, tools=TOOLS, tool_choice="none", max_tokens=8, seed=3)
    for reply in (free, offered_but_unused):
        assert reply.choices[0].model_extra["token_forced"] is None
        assert len(reply.choices[0].model_extra["token_ids"]) == reply.usage.completion_tokens


def test_async_client_batches_constrained_and_free_requests_each_under_its_own_contract(backend):
    response_format = {"type": "json_schema", "json_schema": {"name": "forecast", "schema": FORECAST}}
    named = {"type": "function", "function": {"name": "get_time"}}

    async def main():
        client = backend.openai_client(max_retries=0)
        ask = lambda seed, **kw: client.chat.completions.create(
            model="tiny", messages=HELLO, max_tokens=MAX_TOKENS, temperature=1.0, seed=seed, n=2, **kw
        )
        return await asyncio.gather(
            ask(10, tools=TOOLS, tool_choice=named),
            ask(11, response_format=response_format),
            ask(12, tools=TOOLS, tool_choice="required", parallel_tool_calls=False),
            ask(13),
        )

    named_reply, schema_reply, required_reply, free_reply = asyncio.run(main())
    for choice in named_reply.choices:
        assert [name for name, _ in assert_valid_calls(choice, TOOLS)] == ["get_time"]
    for choice in schema_reply.choices:
        jsonschema.validate(json.loads(choice.message.content), closed(FORECAST))
    for choice in required_reply.choices:
        assert len(assert_valid_calls(choice, TOOLS)) == 1
    for reply in (named_reply, schema_reply, required_reply):
        for choice in reply.choices:
            assert_forced_flags(choice)
    assert all(c.model_extra["token_forced"] is None for c in free_reply.choices)


# --------------------------------------------------------------------------- LangChain and the Agents SDK, over HTTP
@pytest.fixture(scope="module")
def url(backend):
    with serving(backend.app) as base:
        yield base + "/v1"


class Forecast(BaseModel):
    city: str = Field(max_length=12)
    sky: Literal["sun", "rain", "snow"]
    degrees: int = Field(ge=-40, le=50)


def chat_openai(url: str, seed: int) -> ChatOpenAI:
    return ChatOpenAI(base_url=url, api_key="x", model="tiny", max_retries=0, temperature=1.0, max_tokens=MAX_TOKENS_PARALLEL, seed=seed)


SEEDS = range(4)  # several samples: a reply that never ends shows in some seeds, not all


@pytest.mark.parametrize("parallel", [False, pytest.param(None, id="default")])
def test_langchain_bind_tools_required_gives_parsed_valid_tool_calls(url, parallel):
    extra = {} if parallel is None else {"parallel_tool_calls": parallel}
    offered = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    for seed in SEEDS:
        message = chat_openai(url, seed).bind_tools(TOOLS, tool_choice="required", **extra).invoke("What is the weather in Paris?")
        assert message.invalid_tool_calls == [] and message.tool_calls, f"seed {seed}: {message.content[:300]!r}"
        assert len(message.tool_calls) == 1 or parallel is None
        for call in message.tool_calls:
            jsonschema.validate(call["args"], closed(offered[call["name"]]))


def test_langchain_structured_output_json_schema_returns_a_validated_instance(url):
    forecasts = [chat_openai(url, seed).with_structured_output(Forecast, method="json_schema").invoke("Weather?") for seed in SEEDS]
    assert all(isinstance(f, Forecast) for f in forecasts)


@pytest.fixture
def sdk_model(url):
    agents.set_tracing_disabled(True)
    return OpenAIChatCompletionsModel(model="tiny", openai_client=AsyncOpenAI(base_url=url, api_key="x", max_retries=0))


def test_agents_sdk_structured_output_type_gives_an_instance(sdk_model):
    settings = ModelSettings(temperature=1.0, max_tokens=MAX_TOKENS, extra_args={"seed": 6})  # extra_args go into the request body
    agent = Agent(name="forecaster", instructions="Give the forecast.", model=sdk_model, output_type=Forecast, model_settings=settings)
    result = asyncio.run(Runner.run(agent, "What is the weather in Paris?"))
    assert isinstance(result.final_output, Forecast)


@pytest.mark.parametrize("parallel", [False, pytest.param(None, id="default")])
def test_agents_sdk_invokes_a_function_tool_with_valid_arguments_and_sends_back_its_result(sdk_model, parallel):
    invoked: list[tuple[str, int]] = []

    @function_tool
    def get_weather(city: Annotated[str, Field(max_length=12)], days: Annotated[int, Field(ge=1, le=7)]) -> str:
        """The weather in a city for the next few days."""
        invoked.append((city, days))
        return "sunny"

    async def run(seed: int):
        # tool_choice "required" holds for the first turn only: after a call the SDK drops it
        # (reset_tool_choice), so the second turn, which sees the tool's result, is free text that
        # runs to max_tokens and ends the run
        settings = ModelSettings(
            temperature=1.0, max_tokens=MAX_TOKENS_PARALLEL, tool_choice="required", parallel_tool_calls=parallel, extra_args={"seed": seed}
        )
        agent = Agent(name="weather", instructions="Use the tool.", model=sdk_model, tools=[get_weather], model_settings=settings)
        invoked.clear()
        result = await Runner.run(agent, "What is the weather in Paris?", max_turns=3)
        return list(invoked), result

    async def main():  # one event loop: the SDK's client keeps its connections on it
        return [await run(seed) for seed in SEEDS]

    for seed, (calls, result) in zip(SEEDS, asyncio.run(main())):
        assert calls, f"seed {seed}: the tool was not called; the run's final output is {str(result.final_output)[:300]!r}"
        assert len(calls) == 1 or parallel is None
        assert all(len(city) <= 12 and 1 <= days <= 7 for city, days in calls)
        assert [item.output for item in result.new_items if isinstance(item, ToolCallOutputItem)] == ["sunny"] * len(calls)
        assert len(result.raw_responses) == 2 and isinstance(result.final_output, str)  # the call, then text after its result
