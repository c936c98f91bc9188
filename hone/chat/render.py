"""Render OpenAI-style messages and tool schemas into prompt token ids with the model's template.

When the template knows no tools (SmolLM2's plain ChatML does not), the tool schemas and the
calling convention are written into the system prompt, assistant tool calls are written back as
`<tool_call>` text, and tool results go in as user turns wrapped in `<tool_response>`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from hone.chat.toolcalls import OPEN_TAG, format_tool_call
from hone.errors import InvalidRequestError

ROLES = {"system", "developer", "user", "assistant", "tool"}

TOOL_PROMPT = (
    "You can call tools. Available tools:\n{schemas}\n"
    "To call a tool, reply with one line in this form, filling in the arguments:\n{example}"
)
# placeholder argument values by JSON-schema type, for the example call in the tool prompt
_EXAMPLE_VALUES = {"string": "...", "number": 0, "integer": 0, "boolean": True, "array": [], "object": {}}


@dataclass
class RenderedPrompt:
    tokens: list[int]
    forced_prefix: str  # text placed after the generation prompt (tool_choice); the reply starts with it
    tool_names: set[str] | None  # None: tool calls are not parsed (no tools, or tool_choice "none")


def render_prompt(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    tool_choice: str | dict[str, Any] | None = "auto",
) -> RenderedPrompt:
    """Token ids of the prompt for the next assistant turn."""
    if not messages:
        raise InvalidRequestError("'messages' must contain at least one message", param="messages")
    tools = tools or None
    tool_choice = tool_choice or "auto"
    forced_prefix = _forced_prefix(tool_choice, tools)
    offered = tools if tools is not None and tool_choice != "none" else None
    if offered is not None and _template_supports_tools(tokenizer):
        rendered = [_normalise(m, i, native_tools=True) for i, m in enumerate(messages)]
        tokens = _apply(tokenizer, rendered, tools=[_as_tool_schema(t) for t in offered])
    else:
        rendered = [_normalise(m, i, native_tools=False) for i, m in enumerate(messages)]
        if offered is not None:
            rendered = _with_tool_prompt(rendered, offered)
        tokens = _apply(tokenizer, rendered, tools=None)
    if forced_prefix:
        tokens = tokens + tokenizer.encode(forced_prefix, add_special_tokens=False)
    names = {_tool_name(t) for t in offered} if offered is not None else None
    return RenderedPrompt(tokens=tokens, forced_prefix=forced_prefix, tool_names=names)


# --------------------------------------------------------------------------- messages
def _normalise(message: Any, index: int, native_tools: bool) -> dict[str, Any]:
    if not isinstance(message, dict):
        raise InvalidRequestError(f"messages[{index}] must be an object", param=f"messages.{index}")
    role = message.get("role")
    if role not in ROLES:
        raise InvalidRequestError(
            f"messages[{index}].role must be one of {sorted(ROLES)}, not {role!r}", param=f"messages.{index}.role"
        )
    content = _text_of(message.get("content"), index)
    role = "system" if role == "developer" else role
    if role == "assistant" and message.get("tool_calls"):
        calls = message["tool_calls"]
        if not isinstance(calls, list):
            raise InvalidRequestError(f"messages[{index}].tool_calls must be a list", param=f"messages.{index}")
        if native_tools:
            return {"role": role, "content": content, "tool_calls": [_native_call(c, index) for c in calls]}
        text = "\n".join(format_tool_call(*_call_parts(c, index)) for c in calls)
        return {"role": role, "content": (content + "\n" + text).strip()}
    if role == "tool" and not native_tools:
        return {"role": "user", "content": f"<tool_response>\n{content}\n</tool_response>"}
    return {"role": role, "content": content}


def _text_of(content: Any, index: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts; only text parts are supported
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidRequestError(
                    f"messages[{index}].content parts must be text parts ({{'type': 'text', 'text': ...}})",
                    param=f"messages.{index}.content",
                )
            texts.append(part["text"])
        return "".join(texts)
    raise InvalidRequestError(f"messages[{index}].content must be a string or a list of text parts", param=f"messages.{index}.content")


def _call_parts(call: Any, index: int) -> tuple[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InvalidRequestError(
            f"messages[{index}].tool_calls entries need function.name and function.arguments", param=f"messages.{index}"
        )
    return function["name"], function.get("arguments") or {}


def _native_call(call: Any, index: int) -> dict[str, Any]:
    name, arguments = _call_parts(call, index)
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            pass
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


# --------------------------------------------------------------------------- tools
def _tool_name(tool: Any) -> str:
    return _as_tool_schema(tool)["function"]["name"]


def _as_tool_schema(tool: Any) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type", "function") != "function":
        raise InvalidRequestError("each tool must be {'type': 'function', 'function': {...}}", param="tools")
    function = tool.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise InvalidRequestError("each tool needs function.name", param="tools")
    return {"type": "function", "function": function}


def _with_tool_prompt(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    schemas = "\n".join(_signature(_as_tool_schema(t)["function"]) for t in tools)
    tool_text = TOOL_PROMPT.format(schemas=schemas, example=_example_call(tools[0]))
    if messages[0]["role"] == "system" and OPEN_TAG in messages[0]["content"]:
        # the user's prompt already shows real calls; a placeholder example would only be copied
        tool_text = tool_text[: tool_text.index("To call a tool")].rstrip()
    if messages[0]["role"] == "system":
        first = {"role": "system", "content": (messages[0]["content"] + "\n\n" + tool_text).strip()}
        return [first, *messages[1:]]
    return [{"role": "system", "content": tool_text}, *messages]


def _signature(function: dict[str, Any]) -> str:
    """`- name(arg: type, optional?: type): description`. Small models copy whatever JSON they
    see into their calls (SmolLM2-135M pasted `"type": "object", "properties": ...` into a third of
    its arguments when shown full JSON schemas); a one-line signature says the same in fewer tokens."""
    parameters = function.get("parameters") or {}
    properties = parameters.get("properties") or {}
    required = set(parameters.get("required") or [])
    args = ", ".join(
        f"{name}{'' if name in required else '?'}: {_type_name(spec)}" for name, spec in properties.items() if isinstance(spec, dict)
    )
    description = f": {function['description']}" if function.get("description") else ""
    return f"- {function['name']}({args}){description}"


def _type_name(spec: dict[str, Any]) -> str:
    kind = spec.get("type", "any")
    if kind == "array" and isinstance(spec.get("items"), dict):
        return f"list of {_type_name(spec['items'])}"
    if "enum" in spec:
        return " | ".join(json.dumps(v) for v in spec["enum"])
    return kind if isinstance(kind, str) else "any"


def _example_call(tool: dict[str, Any]) -> str:
    """A call to `tool` with typed placeholders: small models copy a concrete shape far better
    than they follow an abstract one."""
    parameters = _as_tool_schema(tool)["function"].get("parameters") or {}
    properties = parameters.get("properties") or {}
    wanted = parameters.get("required") or list(properties)
    arguments = {
        name: _EXAMPLE_VALUES.get((properties.get(name) or {}).get("type", "string"), "...")
        for name in wanted
        if isinstance(name, str)
    }
    return format_tool_call(_tool_name(tool), arguments)


def _forced_prefix(tool_choice: str | dict[str, Any], tools: list[dict[str, Any]] | None) -> str:
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        if tool_choice.get("type") != "function" or not isinstance(name, str):
            raise InvalidRequestError(
                "tool_choice must be 'auto', 'none', 'required' or {'type': 'function', 'function': {'name': ...}}",
                param="tool_choice",
            )
        if tools is None or name not in {_tool_name(t) for t in tools}:
            raise InvalidRequestError(f"tool_choice names '{name}', which is not in 'tools'", param="tool_choice")
        return OPEN_TAG + '{"name": ' + json.dumps(name) + ', "arguments":'  # no trailing space: " {" is one token
    if tool_choice not in ("auto", "none", "required"):
        raise InvalidRequestError("tool_choice must be 'auto', 'none', 'required' or a named function", param="tool_choice")
    if tool_choice == "required":
        if tools is None:
            raise InvalidRequestError("tool_choice 'required' needs 'tools'", param="tool_choice")
        return OPEN_TAG
    return ""


# --------------------------------------------------------------------------- template
def _template_supports_tools(tokenizer: PreTrainedTokenizerBase) -> bool:
    template = tokenizer.chat_template or ""
    return isinstance(template, str) and "tools" in template


def _apply(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]], tools: list[dict] | None) -> list[int]:
    ids = tokenizer.apply_chat_template(
        messages, tools=tools, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    if hasattr(ids, "input_ids"):  # some tokenizers return an encoding despite return_dict=False
        ids = ids["input_ids"]
    return list(ids)
