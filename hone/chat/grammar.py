"""The grammar a chat reply must follow, from the request's tools, tool_choice and response_format.

The OpenAI contract, kept by the sampler rather than hoped for from a small model:
- `tool_choice="required"`: one to MAX_CALLS `<tool_call>` blocks (one with
  `parallel_tool_calls=false`), each a call to an offered tool whose arguments fit that tool's JSON
  schema, nothing between them but a newline; a named function: exactly one call to it;
- `tool_choice="auto"`: free text, or text then calls; once `<tool_call>` is written the call is
  completed validly (text may not contain a second, unfinished one);
- `response_format` `json_object` / `json_schema`: the content is JSON (fitting the schema).

Grammars are llguidance's Lark-like text with JSON schemas embedded (`%json {...}`), written with
fixed separators (`", "`, `": "`, no free whitespace): a small model given free whitespace may
write blanks until it runs out of tokens, and one layout means more forced tokens, which cost
nothing to sample and are not trained on.

Objects whose schema lists `properties` but does not say whether others are allowed are closed
(`additionalProperties: false`, as in OpenAI's strict mode): given an open object, the embedded
model invents keys until it runs out of tokens, and a key the schema never named is not what a
caller wants. A schema that wants extra keys says so.

Every schema is checked here, one at a time, so an unsupported one is a 400 naming the parameter
it came from rather than a failure somewhere in the combined grammar.
"""

from __future__ import annotations

import json
import re
from typing import Any

import llguidance

from hone.chat.schema import ChatInput, NamedToolChoice, Tool
from hone.chat.toolformats import HERMES, ToolFormat
from hone.engine.grammar import describe_grammar_error
from hone.errors import InvalidRequestError

MAX_CALLS = 8  # calls in one reply; with no bound a model that never writes EOS calls until max_tokens
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def reply_grammar(chat: ChatInput, fmt: ToolFormat = HERMES, marker: str | None = None) -> str | None:
    """The grammar for the reply to `chat`, or None when nothing constrains it. Calls are written
    in `fmt`, its marker as the grammar term `marker` (ToolFormat.marker_term; default its text)."""
    content = _content_schema(chat)
    offered = chat.tools if chat.tools and chat.tool_choice != "none" else None
    if offered is None:
        return None if content is None else "start: %json " + _json(content)
    choice = chat.tool_choice or "auto"
    calls = [_call_schema(i, tool, fmt.arguments_key) for i, tool in enumerate(offered)]
    if isinstance(choice, NamedToolChoice):
        index = next(i for i, tool in enumerate(offered) if tool.function.name == choice.function.name)
        calls = [calls[index]]
    rules = [f"call_{i}: %json {_json(schema)}" for i, schema in enumerate(calls)]
    rules.append("body: " + " | ".join(f"call_{i}" for i in range(len(calls))))
    single = isinstance(choice, NamedToolChoice) or chat.parallel_tool_calls is False
    more = 0 if single else MAX_CALLS - 1
    marker = marker or json.dumps(fmt.open)
    call_rules, after_marker = fmt.call_rules("body", more, marker)
    rules += call_rules
    if isinstance(choice, NamedToolChoice) or choice == "required":
        start = "start: calls"
    elif content is not None:  # auto, with JSON content: the JSON, or calls alone
        start = "start: content | calls"
        rules.append("content: %json " + _json(content))
    elif after_marker is None:  # a Llama 3 call is the whole reply: text that does not open one, or calls
        start = "start: PLAIN | calls"
        rules.append(r"PLAIN: /(\s*[^{\s](.|\n)*)?/")
    elif marker == json.dumps(fmt.open):
        # the marker is text: one lexeme for free text that ends by writing it (a free-text lexeme
        # followed by the marker would swallow the marker's first characters and never end)
        start = f"start: TEXT | TEXT_THEN_MARKER {after_marker}"
        rules += ["TEXT: " + _text_without(fmt.open), "TEXT_THEN_MARKER: " + _text_then(fmt.open)]
    else:  # the marker is a special token, which free text cannot contain
        start = "start: TEXT | TEXT calls"
        rules.append("TEXT: " + _text_without(fmt.open))
    return "\n".join([start, *rules]) + "\n"


def _text_without(marker: str) -> str:
    """A Lark regex for any text that does not contain `marker`."""
    return r"/(.|\n)*/ & ~/(.|\n)*" + _escaped(marker) + r"(.|\n)*/"


def _text_then(marker: str) -> str:
    """A Lark regex for text that ends with its first `marker`."""
    return r"/(.|\n)*" + _escaped(marker) + r"/ & ~/(.|\n)*" + _escaped(marker) + r"(.|\n)+/"


def _escaped(marker: str) -> str:
    return re.escape(marker).replace("/", "\\/")


def _content_schema(chat: ChatInput) -> dict[str, Any] | None:
    fmt = chat.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "object"}
    schema = fmt.json_schema.schema_ if fmt.json_schema.schema_ is not None else {"type": "object"}
    schema = closed_objects(schema)
    _check_schema(schema, "response_format.json_schema.schema")
    return schema


def _call_schema(index: int, tool: Tool, arguments_key: str = "arguments") -> dict[str, Any]:
    """`{"name": <the tool's name>, "arguments": <its parameters>}` as one JSON schema
    (`"parameters"` in place of `"arguments"` for formats that say so)."""
    # no parameters: the function takes no arguments (OpenAI's reading); given ones are used as they are
    parameters = tool.function.parameters.model_dump(exclude_none=True) if tool.function.parameters else {"type": "object", "properties": {}}
    arguments = closed_objects(parameters)
    _check_schema(arguments, f"tools[{index}].function.parameters")
    return {
        "type": "object",
        "properties": {"name": {"const": tool.function.name}, arguments_key: arguments},
        "required": ["name", arguments_key],
        "additionalProperties": False,
    }


_LITERALS = {"enum", "const", "default", "examples"}  # values, not schemas: never rewritten
_SCHEMA_MAPS = {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}


def closed_objects(schema: Any) -> Any:
    """A copy of `schema` in which every object that lists `properties` and does not say whether
    others are allowed allows none."""
    if isinstance(schema, list):
        return [closed_objects(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {}
    for key, value in schema.items():
        if key in _LITERALS:
            closed[key] = value
        elif key in _SCHEMA_MAPS and isinstance(value, dict):  # names -> schemas: a name is never a keyword
            closed[key] = {name: closed_objects(sub) for name, sub in value.items()}
        else:
            closed[key] = closed_objects(value)
    if "properties" in closed and "additionalProperties" not in closed:
        closed["additionalProperties"] = False
    return closed


def _check_schema(schema: dict[str, Any], param: str) -> None:
    error = llguidance.LLMatcher.validate_grammar("start: %json " + _json(schema))
    if error:
        raise InvalidRequestError(f"{param} is a JSON schema hone cannot enforce: {describe_grammar_error(error)}", param=param)


def _json(schema: dict[str, Any]) -> str:
    return json.dumps({**schema, "x-guidance": JSON_LAYOUT}, ensure_ascii=False)
