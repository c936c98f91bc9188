"""Bad chat requests against a real uvicorn on 127.0.0.1: each is a 400 whose one sentence names
the parameter, never a 5xx, and the keep-alive connection survives all of them (`live.post`
asserts that every answer came on the first connection)."""

import httpx
import openai
import pytest

from hone.server import create_app
from hone.server.inprocess import sync_client
from hone.server.errors import BUG_MESSAGE
from hone.server.openai_api import MAX_STOP_CHARS, MAX_STOPS, MAX_TOKENS, MAX_TOP_K, MAX_TOTAL_TOKENS

from .live import local_port, serving

HELLO = [{"role": "user", "content": "Say hello."}]


def tool(parameters=None, **function):
    spec = {"name": "f", **function}
    if parameters is not None:
        spec["parameters"] = parameters
    return {"type": "function", "function": spec}


def with_property(spec):
    return tool({"type": "object", "properties": {"a": spec}})


def calls(tool_calls, role="assistant"):
    """A conversation whose second message carries `tool_calls`."""
    return [*HELLO, {"role": role, "content": "x" if role != "assistant" else None, "tool_calls": tool_calls}]


def choose(name):
    return {"type": "function", "function": {"name": name}}


CALL = "messages[1].tool_calls[0].function"
PARAMS = "tools[0].function.parameters"
PROP = "tools[0].function.parameters.properties.a"


def chat(**overrides):
    return {"model": "tiny", "messages": HELLO, "max_tokens": 2, "seed": 0, **overrides}


def assert_400(response, param, *fragments):
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] is None
    assert error["param"] == param, error
    assert param in error["message"], error["message"]
    for fragment in fragments:
        assert fragment in error["message"], error["message"]


def prompt_text(backend, reply):
    return backend.tokenizer("tiny").decode(reply["prompt_token_ids"])


# --------------------------------------------------------------------------- tool schemas that must work
def test_tool_with_nullable_type_renders_and_answers(live, backend):
    # OpenAI strict mode: every property required, the optional ones nullable
    strict = tool({"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": ["string", "null"]}}, "required": ["city", "unit"]})
    reply = live.post(chat(tools=[strict]))
    assert reply.status_code == 200, reply.text
    assert "- f(city: string, unit: string|null)" in prompt_text(backend, reply.json())


def test_tool_with_any_of_and_boolean_schemas_renders_and_answers(live, backend):
    nullable = {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    tags = {"type": "array", "items": {"type": ["string", "null"]}}
    parameters = {"type": "object", "properties": {"n": nullable, "x": True, "tags": tags}}
    reply = live.post(chat(tools=[tool(parameters)], tool_choice="auto"))
    assert reply.status_code == 200, reply.text
    assert "- f(n?: integer|null, x?: any, tags?: list of string|null)" in prompt_text(backend, reply.json())


def test_assistant_message_with_null_content_and_tool_calls_is_accepted(live):
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    messages = [*HELLO, {"role": "assistant", "content": None, "tool_calls": [call]}, {"role": "tool", "tool_call_id": "c1", "content": "ok"}]
    assert live.post(chat(messages=messages, tools=[tool()])).status_code == 200


# --------------------------------------------------------------------------- malformed tools and tool_choice
@pytest.mark.parametrize(
    "overrides, param, fragment",
    [
        pytest.param({"tools": [tool("x")]}, PARAMS, "must be an object", id="parameters_a_string"),
        pytest.param({"tools": [tool([1])]}, PARAMS, "must be an object", id="parameters_a_list"),
        pytest.param({"tools": [tool({"properties": "x"})]}, f"{PARAMS}.properties", "must be an object", id="properties_a_string"),
        pytest.param({"tools": [tool({"properties": [1]})]}, f"{PARAMS}.properties", "must be an object", id="properties_a_list"),
        pytest.param({"tools": [tool({"properties": {}, "required": 5})]}, f"{PARAMS}.required", "must be an array", id="required_a_number"),
        pytest.param({"tools": [with_property({"enum": 5})]}, f"{PROP}.enum", "must be an array", id="enum_a_number"),
        pytest.param({"tools": [with_property("string")]}, PROP, "must be an object or a boolean", id="property_spec_a_string"),
        pytest.param({"tools": [with_property({"type": "str"})]}, f"{PROP}.type", "'string'", id="type_not_a_json_type"),
        pytest.param({"tools": [with_property({"type": ["string", 5]})]}, f"{PROP}.type[1]", "'null'", id="type_list_with_a_number"),
        pytest.param({"tools": [with_property({"type": "array", "items": "x"})]}, f"{PROP}.items", "must be an object", id="items_a_string"),
        pytest.param({"tools": [{"function": {"description": "no name"}}]}, "tools[0].function.name", "is required", id="tool_without_a_name"),
        pytest.param({"tools": [tool(name="two words")]}, "tools[0].function.name", "letters, digits", id="tool_name_with_a_space"),
        pytest.param({"tools": [tool(description=5)]}, "tools[0].function.description", "must be a string", id="description_a_number"),
        pytest.param({"tools": ["f"]}, "tools[0]", "must be an object", id="tool_a_string"),
        pytest.param({"tools": [{"type": "retrieval", "function": {"name": "f"}}]}, "tools[0].type", "'function'", id="tool_of_another_type"),
        pytest.param({"tools": [tool()], "tool_choice": {"type": "function", "function": "f"}}, "tool_choice.function", "must be an object", id="tool_choice_function_a_string"),
        pytest.param({"tools": [tool()], "tool_choice": choose("g")}, "tool_choice", "not in 'tools'", id="tool_choice_not_offered"),
        pytest.param({"tool_choice": choose("f")}, "tool_choice", "not in 'tools'", id="tool_choice_without_tools"),
        pytest.param({"tools": [tool()], "tool_choice": "sometimes"}, "tool_choice", "'auto', 'none' or 'required'", id="tool_choice_unknown"),
        pytest.param({"tools": [tool()], "tool_choice": 5}, "tool_choice", "'auto'", id="tool_choice_a_number"),
    ],
)
def test_a_malformed_tool_or_tool_choice_gets_a_400_naming_the_parameter(live, overrides, param, fragment):
    assert_400(live.post(chat(**overrides)), param, fragment)


# --------------------------------------------------------------------------- malformed messages
@pytest.mark.parametrize(
    "messages, param, fragment",
    [
        pytest.param([{"role": "user", "content": 5}], "messages[0].content", "must be a string or an array", id="content_a_number"),
        pytest.param([{"role": "user", "content": None}], "messages[0].content", "only assistant content may be null", id="null_user_content"),
        pytest.param([{"role": "user"}], "messages[0].content", "only assistant content may be null", id="missing_user_content"),
        pytest.param([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "messages[0].content[0].type", "text parts", id="image_part"),
        pytest.param([{"role": "user", "content": ["hi"]}], "messages[0].content[0]", "must be an object", id="part_a_string"),
        pytest.param([{"role": "wizard", "content": "x"}], "messages[0].role", "must be one of", id="unknown_role"),
        pytest.param([{"content": "x"}], "messages[0].role", "is required", id="missing_role"),
        pytest.param(["hi"], "messages[0]", "must be an object", id="message_a_string"),
        pytest.param("hi", "messages", "must be an array", id="messages_a_string"),
        pytest.param([], "messages", "at least 1 item", id="no_messages"),
        pytest.param(calls({"function": {"name": "f"}}), "messages[1].tool_calls", "must be an array", id="tool_calls_an_object"),
        pytest.param(calls([{"function": {"name": "f", "arguments": [1]}}]), f"{CALL}.arguments", "a string or an object", id="arguments_a_list"),
        pytest.param(calls([{"function": {"arguments": "{}"}}]), f"{CALL}.name", "is required", id="call_without_a_name"),
        pytest.param(calls([{"function": {"name": "f"}}], role="user"), "messages[1].tool_calls", "only in assistant messages", id="from_the_user"),
        pytest.param([{"role": "user", "content": "\ud800"}], "messages[0]", "lone surrogate", id="lone_surrogate"),
    ],
)
def test_a_malformed_message_gets_a_400_naming_the_parameter(live, messages, param, fragment):
    assert_400(live.post(chat(messages=messages)), param, fragment)


def test_a_lone_surrogate_in_the_model_name_gets_a_400_in_valid_json(live):
    # the sentence shows the value; a lone surrogate cannot be written as UTF-8, its escape can
    assert_400(live.post(chat(model="m\udc00")), "model", "valid Unicode", "\\udc00")


# --------------------------------------------------------------------------- bounded work
@pytest.mark.parametrize(
    "overrides, param, limit",
    [
        pytest.param({"n": 64, "max_tokens": 4097}, "max_tokens", f"{MAX_TOTAL_TOKENS:,}", id="n_times_max_tokens"),
        pytest.param({"n": 64, "max_tokens": None, "max_completion_tokens": 4097}, "max_completion_tokens", f"{MAX_TOTAL_TOKENS:,}", id="n_times_max_completion_tokens"),
        pytest.param({"max_tokens": MAX_TOKENS + 1}, "max_tokens", str(MAX_TOKENS), id="max_tokens"),
        pytest.param({"n": 65}, "n", "64", id="n"),
        pytest.param({"stop": ["x"] * (MAX_STOPS + 1)}, "stop", f"at most {MAX_STOPS} items", id="number_of_stops"),
        pytest.param({"stop": ["ok", "x" * (MAX_STOP_CHARS + 1)]}, "stop[1]", f"at most {MAX_STOP_CHARS} characters", id="stop_length"),
        pytest.param({"stop": "x" * (MAX_STOP_CHARS + 1)}, "stop", f"at most {MAX_STOP_CHARS} characters", id="single_stop_length"),
        pytest.param({"top_k": MAX_TOP_K + 1}, "top_k", str(MAX_TOP_K), id="top_k"),
        pytest.param({"top_k": 10**30}, "top_k", str(MAX_TOP_K), id="top_k_beyond_int64"),
        pytest.param({"seed": -1}, "seed", "greater than or equal to 0", id="negative_seed"),
        pytest.param({"seed": 2**63}, "seed", str(2**63), id="seed_beyond_int64"),
        pytest.param({"temperature": float("nan")}, "temperature", "finite", id="nan_temperature"),
        pytest.param({"top_p": float("inf")}, "top_p", "finite", id="infinite_top_p"),
    ],
)
def test_work_over_a_bound_gets_a_400_naming_the_limit(live, overrides, param, limit):
    body = {k: v for k, v in chat(**overrides).items() if v is not None}
    assert_400(live.post(body), param, limit)


def test_work_at_every_bound_is_served(live):
    # the bounds are inclusive: 16 stops of 256 characters, the largest top_k and seed
    body = chat(stop=["\x00" * MAX_STOP_CHARS] * MAX_STOPS, top_k=MAX_TOP_K, seed=2**63 - 1, n=2, max_tokens=2)
    reply = live.post(body)
    assert reply.status_code == 200, reply.text
    assert len(reply.json()["choices"]) == 2


# --------------------------------------------------------------------------- bugs
class FaultySampler:
    """The backend's models plus "faulty", whose sampling raises: a bug, as the server meets one."""

    def __init__(self, backend):
        self.backend = backend

    def list_models(self):
        return [*self.backend.list_models(), "faulty"]

    def tokenizer(self, name):
        return self.backend.tokenizer("tiny" if name == "faulty" else name)

    async def sample(self, name, prompt_tokens, n, params):
        if name == "faulty":
            raise RuntimeError("a bug in a route")
        return await self.backend.sample(name, prompt_tokens, n, params)


def test_an_unexpected_error_is_a_json_500_and_the_connection_stays_open(backend):
    with serving(create_app(FaultySampler(backend))) as url, httpx.Client(base_url=url, timeout=60) as client:
        broken = client.post("/v1/chat/completions", json=chat(model="faulty"))
        fine = client.post("/v1/chat/completions", json=chat())
        ports = {local_port(broken), local_port(fine)}
    assert broken.status_code == 500
    assert broken.json() == {"error": {"message": BUG_MESSAGE, "type": "server_error", "param": None, "code": None}}
    assert fine.status_code == 200
    assert len(ports) == 1  # uvicorn kept the keep-alive connection


def test_an_unexpected_error_reaches_an_in_process_client_as_a_500(backend):
    # before, Starlette re-raised after its 500 and httpx's ASGI transport raised in the client
    client = sync_client(create_app(FaultySampler(backend)), max_retries=0)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(**chat(model="faulty"))
    assert caught.value.body["message"] == BUG_MESSAGE
    assert client.chat.completions.create(**chat()).choices
