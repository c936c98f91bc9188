"""The judge's prompt and the reading of its answer: pure text in, text out, no I/O.

1. What every attempt shares (system prompt, task, tool schemas) is written once; each distinct
   attempt's own messages follow under an id ("1", "2", ...). Identical attempts appear once.
2. The shared prefix stops before the first assistant message, so every attempt shows all of
   what the agent did, even where attempts happen to agree on their first turns.
3. Tool outputs are clipped (the judge may be a 135M model with a small context); assistant
   messages are kept whole, since they are what is being judged.
4. The prompt ends with the answer's JSON skeleton, its ids filled in: small judges (a 135M model
   served by `hone serve`, which ignores `response_format`) copy a skeleton far more reliably
   than they follow a described schema.
5. Reading is lenient about form (the first JSON value anywhere in the text that is shaped like
   scores: a `{"scores": [...]}` object, a bare list, an id -> score mapping, or one object per
   attempt in a row; ids as numbers or strings) and strict about content (every id exactly once,
   scores numbers in [0, 1]).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

DEFAULT_RUBRIC = """\
- An attempt that reaches the user's goal scores higher than any attempt that does not.
- Among attempts that reach the goal, the more efficient one (fewer wasted turns and tool calls) scores higher.
- An attempt that makes real progress toward the goal earns partial credit.
- Make the gaps between scores reflect the gaps in quality: attempts of equal quality get equal scores."""

ANSWER_FORMAT = (
    'Reply with JSON only, no other text, in exactly this form:\n'
    '{"scores": [{"id": "<attempt id>", "explanation": "<one short sentence>", "score": <number from 0 to 1>}]}\n'
    "Give exactly one entry per attempt."
)


@dataclass(frozen=True)
class JudgePrompt:
    """The messages to send, the attempt ids in them, and which id each trajectory maps to."""

    messages: list[dict[str, str]]
    ids: list[str]  # one per distinct attempt, in prompt order
    attempt_of: list[int]  # per trajectory of the group: index into `ids`


class JudgeAnswerError(ValueError):
    """A judge answer that cannot be used; the message says why, and is shown to the judge on retry."""


# --------------------------------------------------------------------------- prompt
def build_judge_prompt(
    trajectories: Sequence[Any], rubric: str | None = None, max_tool_chars: int = 600
) -> JudgePrompt:
    """Build one prompt that asks for a score for every distinct attempt in `trajectories`."""
    # 1) dedupe: identical attempts (same messages and tools) are judged once
    keys = [_canonical(t.messages, t.tools) for t in trajectories]
    unique_keys = list(dict.fromkeys(keys))
    unique = [trajectories[keys.index(k)] for k in unique_keys]
    attempt_of = [unique_keys.index(k) for k in keys]
    ids = [str(i + 1) for i in range(len(unique))]

    # 2) the shared prefix, cut before the first assistant message
    shared = _shared_prefix([t.messages for t in unique])
    shared_tools = all(t.tools == unique[0].tools for t in unique)

    # 3) render
    parts = ["<task>", *(_render(m, max_tool_chars) for m in unique[0].messages[:shared]), "</task>"]
    if shared_tools and unique[0].tools:
        parts += ["<tools>", _render_tools(unique[0].tools), "</tools>"]
    for attempt_id, trajectory in zip(ids, unique):
        parts.append(f'<attempt id="{attempt_id}">')
        if not shared_tools and trajectory.tools:
            parts += ["<tools>", _render_tools(trajectory.tools), "</tools>"]
        parts += [_render(m, max_tool_chars) for m in trajectory.messages[shared:]] or ["(no messages)"]
        parts.append("</attempt>")
    skeleton = json.dumps({"scores": [{"id": i, "explanation": "...", "score": 0.0} for i in ids]})
    parts.append(f"Fill in this JSON (short explanations, scores from 0 to 1) and reply with it only:\n{skeleton}")

    system = (
        "You judge several attempts by an AI agent at the same task and score each from 0 to 1.\n"
        f"{(rubric or DEFAULT_RUBRIC).strip()}\n{ANSWER_FORMAT}"
    )
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(parts)}]
    return JudgePrompt(messages=messages, ids=ids, attempt_of=attempt_of)


def retry_messages(prompt: JudgePrompt, bad_answer: str, problem: str) -> list[dict[str, str]]:
    """The prompt again, followed by the unusable answer and what was wrong with it."""
    return prompt.messages + [
        {"role": "assistant", "content": _clip(bad_answer, 1000)},
        {
            "role": "user",
            "content": f"That answer cannot be used: {problem}. Reply again with only the JSON object, "
            f"one entry for each of the ids {', '.join(prompt.ids)}, each score a number from 0 to 1.",
        },
    ]


def _canonical(messages: list[dict[str, Any]], tools: Any) -> str:
    return json.dumps([messages, tools], sort_keys=True, default=str)


def _shared_prefix(conversations: list[list[dict[str, Any]]]) -> int:
    length = 0
    for column in zip(*conversations):
        first = column[0]
        if first.get("role") == "assistant" or any(m != first for m in column[1:]):
            break
        length += 1
    return length


def _render(message: dict[str, Any], max_tool_chars: int) -> str:
    role = message.get("role", "?")
    text = _text(message.get("content"))
    if role == "tool":
        name = message.get("name") or message.get("tool_call_id") or ""
        return f"[tool result{' ' + name if name else ''}] {_clip(text, max_tool_chars)}"
    lines = [f"[{role}] {text}"] if text or role != "assistant" else []
    for call in message.get("tool_calls") or []:
        function = call.get("function", call)
        lines.append(f"[{role} calls] {function.get('name', '?')}({_text(function.get('arguments', ''))})")
    return "\n".join(lines) or f"[{role}] (empty)"


def _render_tools(tools: list[dict[str, Any]]) -> str:
    lines = []
    for tool in tools:
        function = tool.get("function", tool)
        properties = (function.get("parameters") or {}).get("properties") or {}
        required = set((function.get("parameters") or {}).get("required") or [])
        params = ", ".join(
            f"{name}{'' if name in required else '?'}: {spec.get('type', 'any') if isinstance(spec, dict) else 'any'}"
            for name, spec in properties.items()
        )
        description = function.get("description")
        lines.append(f"- {function.get('name', '?')}({params})" + (f": {description}" if description else ""))
    return "\n".join(lines)


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return json.dumps(content, default=str)


def _clip(text: str, limit: int) -> str:
    if limit <= 0 or len(text) <= limit:
        return text
    return f"{text[:limit]} ...[{len(text) - limit} more characters cut]"


# --------------------------------------------------------------------------- answer
def parse_scores(text: str, ids: Sequence[str]) -> dict[str, tuple[float, str]]:
    """Read `{id: (score, explanation)}` from a judge's answer; raise JudgeAnswerError if unusable."""
    entries = _find_entries(text, ids)
    expected = set(ids)
    scores: dict[str, tuple[float, str]] = {}
    for entry in entries:
        if not isinstance(entry, dict) or "id" not in entry:
            raise JudgeAnswerError(f"an entry has no id: {_clip(json.dumps(entry, default=str), 120)}")
        attempt_id = _normalise_id(entry["id"])
        if attempt_id not in expected:
            raise JudgeAnswerError(f"it scores an attempt with id {attempt_id!r}, which does not exist")
        if attempt_id in scores:
            raise JudgeAnswerError(f"it scores the attempt with id {attempt_id!r} twice")
        scores[attempt_id] = (_score(entry, attempt_id), str(entry.get("explanation") or entry.get("reason") or ""))
    missing = [i for i in ids if i not in scores]
    if missing:
        raise JudgeAnswerError(
            f"it gives {len(scores)} scores for {len(ids)} attempts; ids {', '.join(missing)} have none"
        )
    return scores


def _find_entries(text: str, ids: Sequence[str]) -> list[Any]:
    """The entries of the first JSON value in `text` shaped like scores.

    Small judges often echo part of the prompt (with its own JSON) before answering, or write one
    object per attempt instead of a list; both are read here. Content is checked by the caller."""
    values = _json_values(text)
    if not values:
        raise JudgeAnswerError("it contains no JSON object")
    first_problem = None
    for value in values:
        try:
            entries = _entries(value, ids)
        except JudgeAnswerError as exc:
            first_problem = first_problem or exc
            continue
        singles = [v for v in values if isinstance(v, dict) and "id" in v and "score" in v]
        if len(entries) == 1 and len(singles) > 1 and entries[0] is singles[0]:
            return singles  # one object per attempt, one after another
        return entries
    raise first_problem


def _json_values(text: str) -> list[Any]:
    """Every JSON object or array in `text`, outermost first, skipping prose and code fences."""
    decoder = json.JSONDecoder()
    values, position = [], 0
    while position < len(text):
        if text[position] in "{[":
            try:
                value, end = decoder.raw_decode(text, position)
            except ValueError:
                position += 1
                continue
            if isinstance(value, (dict, list)):
                values.append(value)
            position = end
        else:
            position += 1
    return values


def _entries(value: Any, ids: Sequence[str]) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        if isinstance(value.get("scores"), (list, dict)) and value["scores"]:
            return _entries(value["scores"], ids)
        if "id" in value and "score" in value:  # a single entry, for a single attempt
            return [value]
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) == 1:  # {"attempts": [...]} or another name for the list
            return lists[0]
        if value and all(_normalise_id(k) in ids for k in value):  # {"1": 0.8, "2": {"score": 0.3}}
            return [{"id": k, **(v if isinstance(v, dict) else {"score": v})} for k, v in value.items()]
    raise JudgeAnswerError('its JSON is not {"scores": [...]} nor a list of scores')


def _normalise_id(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _score(entry: dict[str, Any], attempt_id: str) -> float:
    raw = entry.get("score")
    if isinstance(raw, bool):
        raise JudgeAnswerError(f"the score for id {attempt_id!r} is not a number: {raw!r}")
    try:
        score = float(raw)
    except (TypeError, ValueError):
        raise JudgeAnswerError(f"the score for id {attempt_id!r} is not a number: {raw!r}") from None
    if not math.isfinite(score) or not 0.0 <= score <= 1.0:
        raise JudgeAnswerError(f"the score for id {attempt_id!r} is {raw!r}, outside [0, 1]")
    return score
