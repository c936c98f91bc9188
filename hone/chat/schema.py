"""The shape of a chat request: OpenAI messages, tools and tool_choice as pydantic models, and
pydantic's errors turned into one sentence that names the parameter.

Checks shape only, up front, so the renderer can trust what it reads; it knows nothing about
tokenizers or sampling. Unknown OpenAI fields are kept (`extra="allow"`): clients send many that
hone ignores. A tool's JSON Schema is checked only in the keywords hone reads (type, enum, items,
properties, required, anyOf, oneOf); anything else in it is passed through untouched.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, ValidationInfo, field_validator, model_validator

from hone.errors import InvalidRequestError

ROLES = ("system", "developer", "user", "assistant", "tool")
JSON_TYPES = ("string", "number", "integer", "boolean", "array", "object", "null")
MAX_MESSAGES = 4096
MAX_TOOLS = 128


class OpenModel(BaseModel):
    """A model that keeps fields it does not declare."""

    model_config = ConfigDict(extra="allow")  # OpenAI clients send fields hone ignores


class RenderedModel(OpenModel):
    """A model whose text goes to the tokenizer, which takes only valid Unicode: JSON's `\\ud800`
    escape decodes to a lone surrogate that no tokenizer can encode."""

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        try:
            json.dumps(data, ensure_ascii=False, default=str).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"must be valid Unicode text; it holds a lone surrogate ({exc.object[exc.start:exc.end]!r})") from None
        except (TypeError, ValueError, RecursionError):
            pass  # not JSON-shaped: the fields' own checks will say what is wrong
        return data


# --------------------------------------------------------------------------- messages
class TextPart(OpenModel):
    type: str
    text: str

    @field_validator("type")
    @classmethod
    def _text_only(cls, value: str) -> str:
        if value != "text":  # images and audio are valid OpenAI, but hone's models read text only
            raise ValueError(f"must be 'text': hone takes text parts only ({{'type': 'text', 'text': ...}}), not {value!r}")
        return value


class FunctionCall(OpenModel):
    name: str = Field(min_length=1)
    arguments: str | dict[str, Any] = "{}"  # OpenAI sends a JSON string; a dict is accepted too


class ToolCall(OpenModel):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(RenderedModel):
    role: Literal[ROLES]  # type: ignore[valid-type]
    content: str | list[TextPart] | None = Field(default=None, validate_default=True)
    tool_calls: list[ToolCall] | None = None

    @field_validator("content")
    @classmethod
    def _null_only_for_assistant(cls, value: Any, info: ValidationInfo) -> Any:
        role = info.data.get("role")
        if value is None and role not in (None, "assistant"):  # an assistant turn may be tool calls alone
            raise ValueError(f"must be a string or an array of text parts in a {role} message; only assistant content may be null")
        return value

    @field_validator("tool_calls")
    @classmethod
    def _calls_only_from_assistant(cls, value: Any, info: ValidationInfo) -> Any:
        role = info.data.get("role")
        if value and role not in (None, "assistant"):
            raise ValueError(f"are allowed only in assistant messages, not in a {role} message")
        return value

    def text(self) -> str:
        """The content as one string: None is empty, text parts are joined."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


# --------------------------------------------------------------------------- tools
JsonType = Literal[JSON_TYPES]  # type: ignore[valid-type]


class JsonSchema(OpenModel):
    """One JSON Schema, checked in the keywords the tool prompt reads."""

    type: JsonType | list[JsonType] | None = None  # a list such as ["string", "null"] is OpenAI strict mode's nullable
    description: str | None = None
    enum: list[Any] | None = None
    items: Schema | None = None
    properties: dict[str, Schema] | None = None
    required: list[str] | None = None
    anyOf: list[Schema] | None = None
    oneOf: list[Schema] | None = None


Schema = Union[JsonSchema, StrictBool]  # `true` and `false` are schemas too (anything, nothing)
JsonSchema.model_rebuild()


class FunctionSpec(OpenModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule; it also keeps the prompt's signature line whole
    description: str | None = None
    parameters: JsonSchema | None = None


class Tool(RenderedModel):
    type: Literal["function"] = "function"
    function: FunctionSpec


class FunctionName(OpenModel):
    name: str = Field(min_length=1)


class NamedToolChoice(OpenModel):
    type: Literal["function"]
    function: FunctionName


ToolChoice = Union[Literal["auto", "none", "required"], NamedToolChoice]


class JsonSchemaFormat(OpenModel):
    name: str = Field(default="response", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")  # None: any JSON object
    strict: bool | None = None  # the schema is always enforced; strict changes nothing


class ResponseFormat(OpenModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = Field(default=None, validate_default=True)

    @field_validator("json_schema")
    @classmethod
    def _schema_for_json_schema(cls, value: Any, info: ValidationInfo) -> Any:
        if info.data.get("type") == "json_schema" and value is None:
            raise ValueError("is required when 'type' is 'json_schema'")
        return value


class ChatInput(OpenModel):
    """What the renderer needs from a chat request; the server's request model extends it."""

    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    tools: list[Tool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None
    response_format: ResponseFormat | None = None  # json_object / json_schema: enforced by a grammar
    parallel_tool_calls: bool | None = None  # False: at most one call per reply

    def recorded_messages(self) -> list[dict[str, Any]]:
        """The messages as plain dicts, unset fields left out: what recorders keep of a request."""
        return [m.model_dump(exclude_none=True) for m in self.messages]

    def recorded_tools(self) -> list[dict[str, Any]] | None:
        return [t.model_dump(exclude_none=True) for t in self.tools] if self.tools else None

    @field_validator("tool_choice")
    @classmethod
    def _choice_among_tools(cls, value: Any, info: ValidationInfo) -> Any:
        if "tools" not in info.data:  # tools were invalid; that error is the one to report
            return value
        names = [tool.function.name for tool in info.data["tools"] or []]
        if value == "required" and not names:
            raise ValueError("'required' needs 'tools'")
        if isinstance(value, NamedToolChoice) and value.function.name not in names:
            raise ValueError(f"names '{value.function.name[:80]}', which is not in 'tools'")
        return value


def checked_chat(document: dict[str, Any]) -> ChatInput:
    """`document` as a ChatInput, or an InvalidRequestError whose one sentence names the parameter."""
    try:
        return ChatInput.model_validate(document)
    except ValidationError as exc:
        message, param = describe_errors(exc.errors(), document)
        raise InvalidRequestError(message, param=param) from exc


# --------------------------------------------------------------------------- errors as one sentence
_SHOULD = re.compile(r"^(Input|Value|List|String|Dictionary|Object|Tuple|Set|Data) should ")
_JSON_WORDS = {  # pydantic speaks Python; clients write JSON
    "a valid dictionary or instance of \\w+": "an object",
    "a valid dictionary or object to extract fields from": "an object",
    "a valid dictionary": "an object",
    "a valid list": "an array",
    "a valid string": "a string",
    "a valid integer": "an integer",
    "a valid number": "a number",
    "a valid boolean": "a boolean",
    " after validation": "",
}


def describe_errors(errors: list[dict[str, Any]], document: Any) -> tuple[str, str | None]:
    """One sentence and the parameter it names, for pydantic `errors` raised on `document`.

    Union members add their type names to an error's location (`stop.str`); walking the
    location through the document drops them. The deepest error is the most specific; the
    union's other members at the same place are offered as alternatives ("a string or an array")."""
    if not errors:
        return "invalid request body", None
    located = [(_path_in(document, e), e) for e in errors]
    deepest = max(len(path) for path, _ in located)
    path = next(path for path, _ in located if len(path) == deepest)
    same_place = [e for p, e in located if p == path]
    param = format_param(path)
    predicate = _predicate(same_place)
    subject = param if param else "the request body"
    got = _short_value(same_place[0])
    return f"{subject} {predicate}" + (f"; got {got}" if got else ""), param or None


def format_param(path: list[str | int]) -> str:
    """`tools[0].function.parameters`, as OpenAI names nested parameters."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text if len(text) <= 200 else text[:200] + "…"


def _path_in(document: Any, error: dict[str, Any]) -> list[str | int]:
    loc = list(error.get("loc", ()))
    path: list[str | int] = []
    node = document
    for i, part in enumerate(loc):
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif i == len(loc) - 1 and isinstance(node, dict) and error.get("type") in ("missing", "value_error"):
            pass  # a field the document lacks: missing, or its default refused by a validator
        else:
            continue  # a union member's name, not a place in the document
        path.append(part)
    return path


def _predicate(errors: list[dict[str, Any]]) -> str:
    # a union member whose type matched and whose value failed says more than the others' "must be a ..."
    value_errors = [e for e in errors if not _is_type_error(e)]
    parts: list[str] = []
    for error in value_errors or errors:
        part = _one_predicate(error)
        if part not in parts:
            parts.append(part)
    if all(p.startswith("must be ") for p in parts):
        return "must be " + " or ".join(p.removeprefix("must be ") for p in parts)
    return "; or ".join(parts)


def _is_type_error(error: dict[str, Any]) -> bool:
    kind = str(error.get("type", ""))
    return kind.endswith("_type") or kind == "literal_error"


def _one_predicate(error: dict[str, Any]) -> str:
    kind, message = error.get("type"), str(error.get("msg", "is invalid"))
    if kind == "missing":
        return "is required"
    if kind == "literal_error":
        return f"must be one of {error.get('ctx', {}).get('expected', '')}"
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    if kind == "string_pattern_mismatch" and "A-Za-z0-9_-" in str(error.get("ctx", {}).get("pattern", "")):
        return "must be 1 to 64 letters, digits, underscores or dashes"
    if kind == "string_unicode":
        return "must be valid Unicode text"
    if kind in ("recursion_loop", "recursion_depth_exceeded"):
        return "is nested too deeply"
    message = _SHOULD.sub("must ", message)
    for python, json_word in _JSON_WORDS.items():
        message = re.sub(python, json_word, message)
    return message if message.startswith("must ") else f"is invalid: {message}"


def _short_value(error: dict[str, Any]) -> str:
    """The offending value when it is a short scalar (containers could be huge), unless the
    sentence is a validator's own, which says what it needs to."""
    value = error.get("input")
    if error.get("type") == "value_error" or isinstance(value, (dict, list)) or value is None:
        return ""
    text = repr(value)
    return text if len(text) <= 60 else ""
