"""Render OpenAI-style messages and tool schemas into prompt token ids with the model's template.

When the template knows no tools (SmolLM2's plain ChatML does not), the tool schemas and the
calling convention are written into the system prompt, assistant tool calls are written back as
`<tool_call>` text, and tool results go in as user turns wrapped in `<tool_response>`. When it
does, it renders them itself, and the reply is read and constrained in the call format of its
family (hone.chat.toolformats).

Input is validated first (`hone.chat.schema`), so what is rendered is well formed; a malformed
request is an InvalidRequestError naming the parameter, never a crash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import jinja2
from transformers import PreTrainedTokenizerBase

from hone.chat.grammar import reply_grammar
from hone.chat.schema import ChatInput, JsonSchema, Message, Schema, Tool, ToolCall, checked_chat
from hone.chat.toolcalls import OPEN_TAG, format_tool_call
from hone.chat.toolformats import HERMES, ToolFormat, template_tool_format
from hone.errors import InvalidRequestError

TOOL_PROMPT = (
    "You can call tools. Available tools:\n{schemas}\n"
    "To call a tool, reply with one line in this form, filling in the arguments:\n{example}"
)
# placeholder argument values by JSON-schema type, for the example call in the tool prompt
_EXAMPLE_VALUES = {"string": "...", "number": 0, "integer": 0, "boolean": True, "array": [], "object": {}}


@dataclass
class RenderedPrompt:
    tokens: list[int]
    tool_names: set[str] | None  # None: tool calls are not parsed (no tools, or tool_choice "none")
    grammar: str | None = None  # what the reply must follow (hone.chat.grammar); None = free text
    # what the chat template was given, so a later turn can be checked against it (hone.chat.bridge)
    messages: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] | None = None  # the schemas, where the template writes tools itself
    native_tools: bool = False  # tool calls and results rendered by the template, not as hone's text
    tool_format: ToolFormat = HERMES  # how the reply writes its calls

    def history_message(self, message: dict[str, Any]) -> dict[str, Any]:
        """`message` (an OpenAI assistant message, say the reply to this prompt) as the template
        would be given it in a later prompt's history."""
        return _normalise(Message.model_validate(message), native_tools=self.native_tools)


def render_prompt(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    tool_choice: str | dict[str, Any] | None = "auto",
    response_format: dict[str, Any] | None = None,
) -> RenderedPrompt:
    """Token ids of the prompt for the next assistant turn, and the grammar its reply must follow;
    InvalidRequestError names what is malformed."""
    if not messages:
        raise InvalidRequestError("'messages' must contain at least one message", param="messages")
    document = {"messages": messages, "tools": tools, "tool_choice": tool_choice, "response_format": response_format}
    return render_chat(tokenizer, checked_chat(document))


def render_chat(tokenizer: PreTrainedTokenizerBase, chat: ChatInput) -> RenderedPrompt:
    """`render_prompt` for a request already validated (the server's request model is a ChatInput)."""
    tools = chat.tools or None
    tool_choice = chat.tool_choice or "auto"
    offered = tools if tools is not None and tool_choice != "none" else None
    native_format = template_tool_format(tokenizer.chat_template) if offered is not None else None
    native = native_format is not None
    fmt = native_format or HERMES
    grammar = reply_grammar(chat, fmt, fmt.marker_term(tokenizer))  # checks the schemas before the (slower) rendering
    rendered = [_normalise(m, native_tools=native) for m in chat.messages]
    schemas = [t.model_dump(exclude_none=True) for t in offered] if native else None
    if offered is not None and not native:
        rendered = _with_tool_prompt(rendered, offered)
    tokens = _apply(tokenizer, rendered, tools=schemas)
    names = {t.function.name for t in offered} if offered is not None else None
    return RenderedPrompt(tokens=tokens, tool_names=names, grammar=grammar, messages=rendered, tools=schemas, native_tools=native, tool_format=fmt)


# --------------------------------------------------------------------------- messages
def _normalise(message: Message, native_tools: bool) -> dict[str, Any]:
    content = message.text()
    role = "system" if message.role == "developer" else message.role
    if role == "assistant" and message.tool_calls:
        if native_tools:
            return {"role": role, "content": content, "tool_calls": [_native_call(c) for c in message.tool_calls]}
        text = "\n".join(format_tool_call(c.function.name, c.function.arguments) for c in message.tool_calls)
        return {"role": role, "content": (content + "\n" + text).strip()}
    if role == "tool" and not native_tools:
        return {"role": "user", "content": f"<tool_response>\n{content}\n</tool_response>"}
    return {"role": role, "content": content}


def _native_call(call: ToolCall) -> dict[str, Any]:
    arguments = call.function.arguments
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except (json.JSONDecodeError, RecursionError):
            pass
    return {"type": "function", "function": {"name": call.function.name, "arguments": arguments}}


# --------------------------------------------------------------------------- tools
def _with_tool_prompt(messages: list[dict[str, Any]], tools: list[Tool]) -> list[dict[str, Any]]:
    schemas = "\n".join(_signature(t) for t in tools)
    tool_text = TOOL_PROMPT.format(schemas=schemas, example=_example_call(tools[0]))
    if messages[0]["role"] == "system" and OPEN_TAG in messages[0]["content"]:
        # the user's prompt already shows real calls; a placeholder example would only be copied
        tool_text = tool_text[: tool_text.index("To call a tool")].rstrip()
    if messages[0]["role"] == "system":
        first = {"role": "system", "content": (messages[0]["content"] + "\n\n" + tool_text).strip()}
        return [first, *messages[1:]]
    return [{"role": "system", "content": tool_text}, *messages]


def _signature(tool: Tool) -> str:
    """`- name(arg: type, optional?: type): description`. Small models copy whatever JSON they
    see into their calls (SmolLM2-135M pasted `"type": "object", "properties": ...` into a third of
    its arguments when shown full JSON schemas); a one-line signature says the same in fewer tokens."""
    function = tool.function
    properties, required = _properties(function.parameters)
    args = ", ".join(f"{name}{'' if name in required else '?'}: {_type_name(spec)}" for name, spec in properties.items())
    description = f": {function.description}" if function.description else ""
    return f"- {function.name}({args}){description}"


def _properties(parameters: JsonSchema | None) -> tuple[dict[str, Schema], list[str]]:
    if parameters is None:
        return {}, []
    return parameters.properties or {}, parameters.required or []


def _type_name(spec: Schema) -> str:
    """`string`, `string|null`, `list of integer`, `"a" | "b"`; `any` where the schema does not say."""
    if isinstance(spec, bool):
        return "any"
    if spec.type == "array" and isinstance(spec.items, JsonSchema):
        return f"list of {_type_name(spec.items)}"
    if spec.enum:
        return " | ".join(json.dumps(v) for v in spec.enum)
    if isinstance(spec.type, str):
        return spec.type
    if spec.type:  # a list of types: OpenAI strict mode writes an optional field as ["string", "null"]
        return "|".join(spec.type)
    if spec.anyOf or spec.oneOf:
        return "|".join(_type_name(s) for s in spec.anyOf or spec.oneOf or [])
    return "any"


def _example_call(tool: Tool) -> str:
    """A call to `tool` with typed placeholders: small models copy a concrete shape far better
    than they follow an abstract one."""
    properties, required = _properties(tool.function.parameters)
    wanted = required or list(properties)
    arguments = {name: _EXAMPLE_VALUES.get(_main_type(properties.get(name)), "...") for name in wanted}
    return format_tool_call(tool.function.name, arguments)


def _main_type(spec: Schema | None) -> str | None:
    """The type a placeholder should have: the first that is not null."""
    if not isinstance(spec, JsonSchema):
        return None
    kinds = [spec.type] if isinstance(spec.type, str) else list(spec.type or [])
    kinds += [_main_type(s) for s in spec.anyOf or spec.oneOf or []]
    return next((k for k in kinds if k and k != "null"), None)


# --------------------------------------------------------------------------- template
def _apply(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]], tools: list[dict] | None) -> list[int]:
    try:
        ids = tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=True, tokenize=True, return_dict=False
        )
    except jinja2.TemplateError as exc:  # templates reject some conversations on purpose (raise_exception)
        raise InvalidRequestError(f"the model's chat template rejected these messages: {exc}", param="messages") from exc
    if hasattr(ids, "input_ids"):  # some tokenizers return an encoding despite return_dict=False
        ids = ids["input_ids"]
    return list(ids)


def template_text(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]], tools: list[dict] | None, generation_prompt: bool) -> str | None:
    """The template's text for `messages` (None where the template rejects them)."""
    try:
        return tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=generation_prompt, tokenize=False)
    except jinja2.TemplateError:
        return None
