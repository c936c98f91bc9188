"""How a model writes tool calls, by chat-template family.

A template that renders tools itself also fixes how the model was trained to call them, and the
reply must be read, and constrained, in that form:

- `hermes` — Hermes, Qwen2.5, Qwen3 and hone's own taught convention (for templates with no tool
  support): `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, one block per call.
- `llama3` — Llama 3.1-3.3's JSON calls: the whole reply is `{"name": ..., "parameters": {...}}`
  (several separated by `;`), optionally after `<|python_tag|>`.
- `mistral` — `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`, or the newer
  `[TOOL_CALLS]name[ARGS]{...}` per call. `[TOOL_CALLS]` is a special token in Mistral's own
  tokenizers, so the decoded text may have lost it: a reply that starts with a JSON list of calls
  is read as calls too.

Gemma 3's template has no tool support: it gets the taught (hermes) convention.

`split` finds the calls' JSON bodies; hone.chat.toolcalls checks them. `call_rules` writes the
grammar of the calls for constrained decoding (hone.chat.grammar), with the call marker as the
one special token it is where the tokenizer has it as one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_DECODER = json.JSONDecoder()
_HERMES_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)  # the close may be cut off
_MISTRAL_NAMED = re.compile(r"\s*([A-Za-z_][\w.-]*)\[ARGS\]")
_MISTRAL_BARE_LIST = re.compile(r'\[\s*\{\s*"name"\s*:')  # what a list of calls starts with


@dataclass(frozen=True)
class ToolFormat:
    name: str
    open: str  # the text that starts a call
    arguments_key: str  # "arguments", or "parameters" (Llama 3)
    # where streamed content stops: the opening text, and what is left of it when a special token is not decoded
    stream_markers: tuple[str, ...] = ()

    @property
    def markers(self) -> tuple[str, ...]:
        return self.stream_markers or (self.open,)

    def split(self, text: str) -> tuple[str, list[str]] | None:
        """(content, the calls' JSON texts), or None when `text` makes no attempt at a call.
        A body that is not JSON is returned as it is, for the caller to reject."""
        if self.name == "llama3":
            return _split_llama3(text)
        if self.name == "mistral":
            return _split_mistral(text)
        if self.open not in text:
            return None
        content = _HERMES_BLOCK.sub("", text).strip()
        return content, [match.group(1) for match in _HERMES_BLOCK.finditer(text)]

    def write(self, name: str, arguments: Any) -> str:
        """One call as the model writes it (used for the taught convention and its example)."""
        body = json.dumps({"name": name, self.arguments_key: arguments}, ensure_ascii=False)
        if self.name == "hermes":
            return f"<tool_call>{body}</tool_call>"
        if self.name == "mistral":
            return f"[TOOL_CALLS][{body}]"
        return body

    def marker_term(self, tokenizer: Any) -> str:
        """The call marker as a grammar term: the special token itself where the tokenizer has one
        (decoding skips it, so the model must emit the token, not its spelling)."""
        token_id = _single_token(tokenizer, self.open)
        added = getattr(tokenizer, "added_tokens_decoder", {}) if token_id is not None else {}
        if token_id is not None and getattr(added.get(token_id), "special", False):
            return f"<[{token_id}]>"
        return json.dumps(self.open)

    def call_rules(self, body: str, more: int, marker: str) -> tuple[list[str], str | None]:
        """Grammar rules defining `calls` (one call, then up to `more` others, around the rule
        `body`), and what follows the marker's text when free text ends by writing it (None where
        a call cannot follow text)."""
        def repeated(separator: str, item: str) -> str:
            return f" ({separator} {item}){{0,{more}}}" if more else ""

        if self.name == "llama3":
            return [f"calls: {body}" + repeated('";"', body)], None
        if self.name == "mistral":
            return ['after_marker: "[" ' + body + repeated('", "', body) + ' "]"', f"calls: {marker} after_marker"], "after_marker"
        rules = [f'after_marker: "\\n"? {body} "\\n"? "</tool_call>"', f"call: {marker} after_marker", "calls: call" + repeated('"\\n"?', "call")]
        return rules, "after_marker" + repeated('"\\n"?', "call")


HERMES = ToolFormat("hermes", "<tool_call>", "arguments")
LLAMA3 = ToolFormat("llama3", '{"name"', "parameters")
MISTRAL = ToolFormat("mistral", "[TOOL_CALLS]", "arguments", stream_markers=("[TOOL_CALLS]", '[{"name"'))
FORMATS = {f.name: f for f in (HERMES, LLAMA3, MISTRAL)}


def template_tool_format(template: str | None) -> ToolFormat | None:
    """The format a chat template renders tool calls in; None where it knows no tools (taught)."""
    if not isinstance(template, str) or "tools" not in template:
        return None
    if "[TOOL_CALLS]" in template:
        return MISTRAL
    if "<tool_call>" in template:
        return HERMES
    if '"parameters"' in template or "<|python_tag|>" in template:
        return LLAMA3
    return HERMES  # a tool-aware template of no known family: the most common convention


def _single_token(tokenizer: Any, text: str) -> int | None:
    """The id of `text` where the tokenizer has it as one token of its own."""
    if tokenizer is None:
        return None
    token_id = tokenizer.convert_tokens_to_ids(text)
    return token_id if isinstance(token_id, int) and token_id != tokenizer.unk_token_id else None


# --------------------------------------------------------------------------- splitting
def _json_objects(text: str, separators: str) -> list[str] | None:
    """Consecutive JSON values in `text`, separated by whitespace and `separators`; None if any is not JSON."""
    bodies, at = [], 0
    while at < len(text):
        try:
            value, end = _DECODER.raw_decode(text, at)
        except (ValueError, RecursionError):  # ValueError: JSONDecodeError, and integers past Python's digit limit
            return None
        bodies.append(json.dumps(value, ensure_ascii=False))
        at = end
        while at < len(text) and (text[at].isspace() or text[at] in separators):
            at += 1
    return bodies


def _split_llama3(text: str) -> tuple[str, list[str]] | None:
    stripped = text.strip().removeprefix("<|python_tag|>").strip()
    if not stripped.startswith("{"):
        return None
    bodies = _json_objects(stripped, ";")
    if bodies is None:  # broken JSON: a call attempt only if it began as one
        return ("", [stripped]) if stripped.startswith(LLAMA3.open) else None
    first = json.loads(bodies[0])
    return ("", bodies) if isinstance(first, dict) and "name" in first else None  # else JSON content, not a call


def _split_mistral(text: str) -> tuple[str, list[str]] | None:
    marker = text.find("[TOOL_CALLS]")
    bare = _MISTRAL_BARE_LIST.search(text)
    if marker >= 0:
        content, rest = text[:marker].strip(), text[marker + len("[TOOL_CALLS]") :].strip()
    elif bare is not None:  # the marker was a special token, skipped in decoding: a list of calls remains
        content, rest = text[: bare.start()].strip(), text[bare.start() :].strip()
    else:
        return None
    if rest.startswith("["):
        try:
            calls, _ = _DECODER.raw_decode(rest)
        except (ValueError, RecursionError):  # ValueError: JSONDecodeError, and integers past Python's digit limit
            return content, [rest]
        return content, [json.dumps(c, ensure_ascii=False) for c in calls] if isinstance(calls, list) else [rest]
    bodies = []  # name[ARGS]{...}, one or more
    while rest:
        named = _MISTRAL_NAMED.match(rest)
        if named is None:
            return content, [rest]
        try:
            arguments, end = _DECODER.raw_decode(rest, named.end())
        except (ValueError, RecursionError):  # ValueError: JSONDecodeError, and integers past Python's digit limit
            return content, [rest]
        bodies.append(json.dumps({"name": named.group(1), "arguments": arguments}, ensure_ascii=False))
        rest = rest[end:].strip().removeprefix("[TOOL_CALLS]").strip()
    return content, bodies
