"""Grammar-constrained replies through a real `hone serve --home` process, for a fresh tenant: tool
calls on the server's base model and on a model the tenant made (the official openai client), and
the frameworks as a user points them at the server (the Agents SDK's default Responses model,
LangChain's structured output)."""

from __future__ import annotations

import asyncio
import json
from typing import Literal

import agents
import jsonschema
import openai
import pytest
from agents import Agent, ModelSettings, Runner
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from .conftest import create_model

HELLO = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["c", "f"]}}, "required": ["city", "unit"]}
TIME = {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET", "PST"]}}, "required": ["zone"]}
TOOLS = [{"type": "function", "function": {"name": name, "parameters": schema}} for name, schema in (("get_weather", WEATHER), ("get_time", TIME))]


@pytest.mark.parametrize("own_model", [False, True], ids=["base-model", "tenant-model"])
def test_a_fresh_tenant_gets_valid_required_tool_calls(server, own_model):
    key = server.new_key()
    model = "tiny"  # every tenant may sample the server's base model
    if own_model:
        model = create_model(server.http(key), "caller")["name"]
    # parallel_tool_calls=False: tiny never writes EOS, so with parallel calls a reply holds 8 of them
    reply = server.openai(key).chat.completions.create(
        model=model, messages=HELLO, tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
        max_tokens=150, temperature=1.0, seed=0, n=3,
    )  # fmt: skip
    assert reply.model == model and len(reply.choices) == 3
    offered = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    for choice in reply.choices:
        assert choice.finish_reason == "tool_calls", choice.message.content
        [call] = choice.message.tool_calls
        assert call.function.name in offered
        jsonschema.validate(json.loads(call.function.arguments), {**offered[call.function.name], "additionalProperties": False})
        extra = choice.model_extra
        assert len(extra["token_forced"]) == len(extra["token_ids"]) and any(extra["token_forced"])


class Forecast(BaseModel):
    city: str = Field(max_length=12)
    sky: Literal["sun", "rain", "snow"]
    degrees: int = Field(ge=-40, le=50)


def test_the_agents_sdk_default_model_returns_a_structured_output_for_a_fresh_tenant(server):
    key = server.new_key()
    client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
    agents.set_default_openai_client(client, use_for_tracing=False)
    agents.set_default_openai_api("responses")
    agents.set_tracing_disabled(True)
    try:
        settings = ModelSettings(max_tokens=150, extra_body={"seed": 11})
        agent = Agent(name="forecaster", instructions="Give the forecast.", model="tiny", output_type=Forecast, model_settings=settings)
        result = asyncio.run(Runner.run(agent, "What is the weather in Paris?"))
    finally:
        agents.set_default_openai_api("chat_completions")
    assert isinstance(result.final_output, Forecast)


def test_langchain_structured_output_for_a_fresh_tenant(server):
    chat = ChatOpenAI(base_url=f"{server.url}/v1", api_key=server.new_key(), model="tiny", max_retries=0, max_tokens=150, seed=2)
    forecast = chat.with_structured_output(Forecast, method="json_schema").invoke("What is the weather in Paris?")
    assert isinstance(forecast, Forecast)
