"""Parse tool calls out of generated text, in the format of the model's template (hone.chat.toolformats).

Never raises on model output: a malformed call leaves the whole text as content and sets
`error`, so a reward can penalise it and the rollout can carry on.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from hone.chat.toolformats import HERMES, ToolFormat

OPEN_TAG = "<tool_call>"  # hone's taught convention (hone.chat.toolformats.HERMES)
CLOSE_TAG = "</tool_call>"


@dataclass
class ParsedReply:
    content: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # OpenAI `tool_calls` entries
    error: str | None = None  # why a tool call attempt was rejected; None when there was none or all parsed


def parse_reply(text: str, tool_names: set[str] | None = None, fmt: ToolFormat = HERMES) -> ParsedReply:
    """Split `text` into plain content and OpenAI tool calls written in `fmt`.

    `tool_names` (when given) are the only names accepted. If any call is malformed the reply
    carries no tool calls at all: half-executing a reply is worse than re-asking.
    """
    found = fmt.split(text)
    if found is None:
        return ParsedReply(content=text.strip())
    content, bodies = found
    if not bodies:  # a marker with nothing after it (cut by max_tokens), or an empty list
        return ParsedReply(content=text.strip(), error="the reply opened a tool call but wrote none")
    calls: list[dict[str, Any]] = []
    for body in bodies:
        call, error = _parse_one(body, tool_names)
        if error is not None:
            return ParsedReply(content=text.strip(), error=error)
        calls.append(call)
    return ParsedReply(content=content, tool_calls=calls)


def _parse_one(body: str, tool_names: set[str] | None) -> tuple[dict[str, Any], str | None]:
    try:
        payload = json.loads(body.strip())
    except (ValueError, RecursionError):  # ValueError: JSONDecodeError, and integers past Python's digit limit
        return {}, "tool call is not valid JSON"
    if not isinstance(payload, dict):
        return {}, "tool call must be a JSON object with 'name' and 'arguments'"
    name = payload.get("name")
    if not isinstance(name, str) or not name:
        return {}, "tool call has no 'name'"
    if tool_names is not None and name not in tool_names:
        return {}, f"unknown tool '{name[:80]}'"
    arguments = payload.get("arguments", payload.get("parameters", {}))
    if isinstance(arguments, str):  # some models emit arguments as a JSON string, as OpenAI does
        try:
            arguments = json.loads(arguments)
        except (ValueError, RecursionError):  # ValueError: JSONDecodeError, and integers past Python's digit limit
            return {}, "tool call 'arguments' is not a JSON object"
    if not isinstance(arguments, dict):
        return {}, "tool call 'arguments' is not a JSON object"
    call = {
        "id": "call_" + uuid.uuid4().hex[:24],
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)},
    }
    return call, None


def format_tool_call(name: str, arguments: dict[str, Any] | str) -> str:
    """The text form of one call, as the model is taught to write it."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            pass
    return HERMES.write(name, arguments)
