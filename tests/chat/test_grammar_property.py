"""Property: whatever schema (in the subset below) a request names, every reply a random model
samples under hone's grammar parses and validates; schemas outside what llguidance can enforce are
a clean 400 naming the parameter.

The strategy keeps schemas small and bounded (short strings, few items, shallow nesting, numbers
on a grid), so even the lively random model, which stops only where the grammar leaves nothing but
EOS, finishes well inside max_tokens: a length cut would say nothing about the grammar.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import jsonschema
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hone.chat import ChatInput, parse_reply, render_prompt
from hone.chat.grammar import closed_objects, reply_grammar
from hone.chat.toolcalls import CLOSE_TAG
from hone.engine import Engine
from hone.engine.grammar import GrammarMatchers
from hone.errors import InvalidRequestError
from hone.types import SamplingParams

from ..engine.conftest import make_lively

MESSAGES = [{"role": "user", "content": "Answer in JSON."}]
NAMES = "abcdef"
WORDS = ["x", "ok", "no", "yes", "a b", "é", "q\"", ""]  # enum values: a quote and a non-ASCII letter among them
MAX_CHARS = 220  # the longest JSON text a schema allows, by `max_chars`; keeps a reply within ~150 tokens
WEATHER = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
SEEDS = st.integers(0, 2**31 - 1)
PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# --------------------------------------------------------------------------- the schema strategy
def _bounds(draw, low: int, high: int) -> tuple[int, int]:
    a, b = draw(st.integers(low, high)), draw(st.integers(low, high))
    return min(a, b), max(a, b)


@st.composite
def string_schemas(draw) -> dict[str, Any]:
    if draw(st.booleans()) and draw(st.booleans()):
        return {"type": "string", "enum": draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=3, unique=True))}
    low, high = _bounds(draw, 0, 8)
    schema: dict[str, Any] = {"type": "string", "maxLength": high}
    if draw(st.booleans()):
        schema["minLength"] = low
    return schema


@st.composite
def integer_schemas(draw) -> dict[str, Any]:
    low, high = _bounds(draw, -1000, 1000)
    return {"type": "integer", "minimum": low, "maximum": high}


@st.composite
def number_schemas(draw) -> dict[str, Any]:
    """Bounded, and a multiple of a binary fraction: with bounds alone a random model may write
    fraction digits until max_tokens (`0.2442464449299944244264...`), and a step like 0.1 is not
    exact in floating point, so jsonschema would misjudge it. The range spans at least one step:
    a single value hits the dead end in `test_a_number_schema_llguidance_compiles_to_nothing...`."""
    step = draw(st.sampled_from([0.25, 0.5]))
    low = draw(st.integers(-40, 39))
    high = draw(st.integers(low + 1, 40))
    return {"type": "number", "minimum": low * step, "maximum": high * step, "multipleOf": step}


def leaf_schemas() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        string_schemas(),
        integer_schemas(),
        number_schemas(),
        st.just({"type": "boolean"}),
        st.just({"type": "null"}),
        st.sampled_from([{"enum": [1, "one", None]}, {"const": "fixed"}]),
    )


@st.composite
def nullable(draw, inner: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """OpenAI strict mode's optional field: a type list with "null"."""
    schema = dict(draw(inner))
    if "enum" in schema or "type" not in schema or not isinstance(schema["type"], str):
        return schema
    schema["type"] = [schema["type"], "null"]
    return schema


def schemas(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    """A schema whose containers nest at most `depth` deep."""
    leaves = st.one_of(leaf_schemas(), nullable(st.one_of(string_schemas(), integer_schemas(), number_schemas())))
    if depth == 0:
        return st.one_of(leaves, st.builds(lambda a, b: {"anyOf": [a, b]}, leaf_schemas(), leaf_schemas()))
    inner = schemas(depth - 1)
    return st.one_of(
        leaves,
        st.builds(lambda a, b: {"anyOf": [a, b]}, inner, inner),
        array_schemas(inner),
        object_schemas(inner),
    )


@st.composite
def array_schemas(draw, items: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    low, high = _bounds(draw, 0, 3)
    schema = {"type": "array", "items": draw(items), "maxItems": high}
    if draw(st.booleans()):
        schema["minItems"] = low
    return schema


@st.composite
def object_schemas(draw, values: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
    schema: dict[str, Any] = {"type": "object", "properties": {name: draw(values) for name in names}}
    required = draw(st.lists(st.sampled_from(names), unique=True))
    if required or draw(st.booleans()):
        schema["required"] = required
    return schema


def max_chars(schema: dict[str, Any]) -> int:
    """An upper bound on the length of compact JSON that `schema` allows (strings as if every
    character took a six-character escape would be too strict: count them as two)."""
    if "anyOf" in schema:
        return max(max_chars(s) for s in schema["anyOf"])
    if "enum" in schema or "const" in schema:
        return max(len(json.dumps(v)) for v in schema.get("enum", [schema.get("const")]))
    kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    return max(_max_chars_of(kind, schema) for kind in kinds)


def _max_chars_of(kind: str, schema: dict[str, Any]) -> int:
    if kind == "string":
        return 2 + 2 * schema["maxLength"]
    if kind in ("integer", "number"):
        return 12
    if kind in ("boolean", "null"):
        return 5
    if kind == "array":
        return 2 + schema["maxItems"] * (max_chars(schema["items"]) + 2)
    return 2 + sum(len(name) + 6 + max_chars(sub) for name, sub in schema["properties"].items())


def bounded(strategy: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return strategy.filter(lambda schema: max_chars(schema) <= MAX_CHARS)


REPLY_SCHEMAS = bounded(st.one_of(object_schemas(schemas(1)), schemas(2)))
PARAMETER_SCHEMAS = bounded(object_schemas(schemas(1)))


# --------------------------------------------------------------------------- the engine
@pytest.fixture(scope="module")
def constrained(tiny, tokenizer):
    """An fp32 engine with grammar support over the lively tiny model; eos ends a finished grammar."""
    lively = make_lively(tiny.model)
    grammars = GrammarMatchers(tokenizer, lively.config.vocab_size, [tokenizer.eos_token_id])
    engine = Engine(lively, eos_token_ids=[tokenizer.eos_token_id], decode=tokenizer.decode, dtype=torch.float32, grammars=grammars)
    yield engine
    engine.close()


@dataclass
class Reply:
    text: str
    tokens: list[int]
    finish_reason: str


def draw(engine, tokenizer, chat: ChatInput, seed: int, max_tokens: int = 200) -> list[Reply]:
    """Four replies to `chat` sampled under its grammar."""
    grammar = reply_grammar(chat)
    assert grammar is not None
    params = SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=seed, grammar=grammar)
    samples = engine.sample_sync(tokenizer.encode(MESSAGES[0]["content"]), 4, params)
    return [Reply(tokenizer.decode(s.tokens, skip_special_tokens=True), s.tokens, s.finish_reason) for s in samples]


# --------------------------------------------------------------------------- properties
def response_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}


def tool_chat(parameters: list[dict[str, Any]], **extra: Any) -> tuple[ChatInput, dict[str, dict[str, Any]]]:
    tools = {f"tool_{i}": schema for i, schema in enumerate(parameters)}
    offered = [{"type": "function", "function": {"name": name, "parameters": p}} for name, p in tools.items()]
    return ChatInput.model_validate({"messages": MESSAGES, "tools": offered, "tool_choice": "required", **extra}), tools


def check_calls(text: str, tools: dict[str, dict[str, Any]]) -> int:
    """The calls in `text` go to offered tools with arguments that validate; how many there are."""
    reply = parse_reply(text, set(tools))
    assert reply.error is None and reply.tool_calls and reply.content == "", text
    for call in reply.tool_calls:
        arguments = json.loads(call["function"]["arguments"])
        schema = tools[call["function"]["name"]]
        jsonschema.validate(arguments, closed_objects(schema))
        jsonschema.validate(arguments, schema)
    return len(reply.tool_calls)


@PROPERTY
@given(schema=REPLY_SCHEMAS, seed=SEEDS)
def test_every_reply_under_a_json_schema_response_format_validates(constrained, tokenizer, schema, seed):
    chat = ChatInput.model_validate({"messages": MESSAGES, "response_format": response_format(schema)})
    for sample in draw(constrained, tokenizer, chat, seed):
        assert sample.finish_reason == "stop", f"cut at {len(sample.tokens)} tokens: {sample.text!r}"
        value = json.loads(sample.text)
        jsonschema.validate(value, closed_objects(schema))
        jsonschema.validate(value, schema)  # closing objects only narrows: the original holds too


@PROPERTY
@given(parameters=st.lists(PARAMETER_SCHEMAS, min_size=1, max_size=2), seed=SEEDS)
def test_every_reply_under_tool_choice_required_is_one_valid_call_to_an_offered_tool(constrained, tokenizer, parameters, seed):
    chat, tools = tool_chat(parameters, parallel_tool_calls=False)
    for sample in draw(constrained, tokenizer, chat, seed):
        assert sample.finish_reason == "stop", f"cut at {len(sample.tokens)} tokens: {sample.text!r}"
        assert check_calls(sample.text, tools) == 1


@settings(PROPERTY, max_examples=8)  # up to 8 calls a reply, often to max_tokens: slower examples
@given(parameters=st.lists(PARAMETER_SCHEMAS, min_size=1, max_size=2), seed=SEEDS)
def test_parallel_tool_calls_are_each_valid_calls_to_offered_tools(constrained, tokenizer, parameters, seed):
    chat, tools = tool_chat(parameters)
    for sample in draw(constrained, tokenizer, chat, seed):
        # a reply cut by max_tokens ends in an unfinished call: check every finished one
        finished = sample.text if sample.finish_reason == "stop" else sample.text[: sample.text.rindex(CLOSE_TAG) + len(CLOSE_TAG)]
        assert check_calls(finished, tools) >= 1


def test_replies_with_parallel_tool_calls_end_within_max_tokens(constrained, tokenizer):
    """Between calls only a newline, and a bounded number of calls (8 of these take ~210 tokens):
    with free whitespace between them the random model wrote blanks until max_tokens in 16 of
    these 16 samples."""
    chat, _ = tool_chat([{"type": "object", "properties": {"c": {"type": "null"}}}])
    samples = [s for seed in range(4) for s in draw(constrained, tokenizer, chat, seed, max_tokens=400)]
    assert all(s.finish_reason == "stop" for s in samples), [s.text[:300] for s in samples if s.finish_reason != "stop"][:2]
    for sample in samples:
        assert re.fullmatch(r"(<tool_call>\n?\{[^\n]*\}\n?</tool_call>\n?)+", sample.text), sample.text


def test_a_number_schema_llguidance_compiles_to_nothing_is_not_a_stopped_empty_reply(constrained, tokenizer):
    # llguidance 1.9.1 compiles it without an error to a grammar that matches nothing (its multipleOf
    # 0.25 writes 0.50; the range admits only 0.5): the engine must fail the request, not stop empty
    schema = {"type": "number", "minimum": 0.5, "maximum": 0.5, "multipleOf": 0.25}
    chat = ChatInput.model_validate({"messages": MESSAGES, "response_format": response_format(schema)})
    try:
        replies = draw(constrained, tokenizer, chat, seed=0)
    except InvalidRequestError:
        return  # refusing it is fine too
    for reply in replies:
        assert reply.finish_reason == "stop" and json.loads(reply.text) == 0.5, reply


# --------------------------------------------------------------------------- refused schemas
def _in_property(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` as the one, required property of an object (an optional one that cannot be
    satisfied is merely left out)."""
    return {"type": "object", "properties": {"a": schema}, "required": ["a"]}


# (what, schema, words of the reason the message must give); the schemas are objects, so a tool may take them
REFUSED = [
    pytest.param(_in_property({"$ref": "#/$defs/nope"}), "'/$defs/nope' does not exist", id="$ref-unknown-target"),
    pytest.param(_in_property({"$ref": "https://example.com/s.json"}), "not present in a registry", id="$ref-other-document"),
    pytest.param({"$dynamicRef": "#x", "type": "object"}, "$dynamicRef", id="$dynamicRef"),
    pytest.param({"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}, "else": {}}, "Unimplemented keys", id="if-then-else"),
    pytest.param({"type": "object", "dependentSchemas": {"a": {"required": ["b"]}}}, "dependentSchemas", id="dependentSchemas"),
    pytest.param({"type": "object", "dependentRequired": {"a": ["b"]}}, "dependentRequired", id="dependentRequired"),
    pytest.param({"type": "object", "dependencies": {"a": ["b"]}}, "dependencies", id="dependencies"),
    pytest.param({"type": "object", "propertyNames": {"maxLength": 3}}, "propertyNames", id="propertyNames"),
    pytest.param({"type": "object", "properties": {"a": {}}, "unevaluatedProperties": False}, "unevaluatedProperties", id="unevaluatedProperties"),
    pytest.param(_in_property({"not": {"type": "string"}}), "not", id="not"),
    pytest.param(_in_property({"type": "array", "uniqueItems": True}), "uniqueItems", id="uniqueItems-true"),
    pytest.param(_in_property({"type": "array", "uniqueItems": False}), "uniqueItems", id="uniqueItems-false"),
    pytest.param(_in_property({"type": "array", "contains": {"type": "integer"}}), "contains", id="contains"),
    pytest.param(_in_property({"type": "array", "contains": {"type": "integer"}, "minContains": 2}), "minContains", id="minContains"),
    pytest.param(_in_property({"type": "array", "unevaluatedItems": False}), "unevaluatedItems", id="unevaluatedItems"),
    pytest.param(_in_property({"type": "string", "format": "regex"}), "Unknown format: regex", id="format-regex"),
    pytest.param(_in_property({"type": "string", "format": "uri-reference"}), "Unknown format: uri-reference", id="format-uri-reference"),
    pytest.param(_in_property({"type": "string", "format": "nosuchformat"}), "Unknown format: nosuchformat", id="format-unknown"),
    pytest.param(_in_property({"type": "string", "pattern": r"\bword\b"}), "lookarounds not supported", id="pattern-word-boundary"),
    pytest.param(_in_property({"type": "string", "pattern": "(?=a)a+"}), "look-around", id="pattern-lookahead"),
    pytest.param(_in_property({"type": "string", "pattern": "(?<=a)b"}), "look-around", id="pattern-lookbehind"),
    pytest.param(_in_property({"type": "string", "pattern": r"(a)\1"}), "backreferences", id="pattern-backreference"),
    pytest.param(_in_property({"type": "string", "pattern": "[a-"}), "unclosed character class", id="pattern-malformed"),
    pytest.param(_in_property({"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 3}]}), "oneOf", id="oneOf-overlapping"),
    pytest.param(_in_property({"anyOf": []}), "Unsatisfiable schema", id="anyOf-empty"),
    pytest.param(_in_property({"allOf": [{"type": "string"}, {"type": "integer"}]}), "Unsatisfiable schema", id="allOf-incompatible"),
    pytest.param(_in_property({"type": "integer", "minimum": 5, "maximum": 1}), "Unsatisfiable schema", id="minimum>maximum"),
    pytest.param(_in_property({"type": "array", "minItems": 3, "maxItems": 1}), "Unsatisfiable schema", id="minItems>maxItems"),
    # hone closes the object, so a required key it does not list can never be written
    pytest.param({"type": "object", "properties": {"a": {}}, "required": ["b"]}, "required property 'b'", id="required-unlisted"),
]


def assert_clean_refusal(error: InvalidRequestError, param: str, reason: str) -> None:
    message = str(error)
    assert error.param == param
    assert message.startswith(param + " ")
    assert reason in message
    assert "\n" not in message and "Traceback" not in message and "%json" not in message and "^" not in message
    assert not re.search(r"\.\s+[A-Z]", message), f"more than one sentence: {message}"
    assert not message.rstrip().endswith(":"), f"the reason is missing: {message}"


@pytest.mark.parametrize("schema, reason", REFUSED)
def test_a_response_format_schema_hone_cannot_enforce_is_refused_naming_it(tokenizer, schema, reason):
    with pytest.raises(InvalidRequestError) as error:
        render_prompt(tokenizer, MESSAGES, response_format=response_format(schema))
    assert_clean_refusal(error.value, "response_format.json_schema.schema", reason)


@pytest.mark.parametrize("schema, reason", REFUSED)
def test_tool_parameters_hone_cannot_enforce_are_refused_naming_the_tool(tokenizer, schema, reason):
    tools = [WEATHER, {"type": "function", "function": {"name": "broken", "parameters": schema}}]
    with pytest.raises(InvalidRequestError) as error:
        render_prompt(tokenizer, MESSAGES, tools, "auto")
    assert_clean_refusal(error.value, "tools[1].function.parameters", reason)


def test_an_unknown_type_is_refused_naming_it(tokenizer):
    """In a tool, hone's request model (which knows the JSON types) refuses it before llguidance sees it."""
    schema = _in_property({"type": "nosuchtype"})
    with pytest.raises(InvalidRequestError) as error:
        render_prompt(tokenizer, MESSAGES, response_format=response_format(schema))
    assert_clean_refusal(error.value, "response_format.json_schema.schema", "Invalid type: nosuchtype")
    with pytest.raises(InvalidRequestError) as error:
        render_prompt(tokenizer, MESSAGES, [{"type": "function", "function": {"name": "broken", "parameters": schema}}], "required")
    assert_clean_refusal(error.value, "tools[0].function.parameters.properties.a.type", "'nosuchtype'")
