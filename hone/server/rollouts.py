"""Rollouts: every call an agent makes through `/v1/rollouts/{id}/...`, recorded token for token.

An agent written with any framework (the Agents SDK, LangChain, a plain `openai` loop) is pointed
at a rollout's base URL and runs as it always does; hone records each call it makes there, in
order, streamed or not: the prompt's token ids, the sampled ids with their fp32 logprobs, the
messages and the reply. Closing the rollout hands the record back, and it becomes a Trajectory
(`hone.rl.capture`).

A call that continues a conversation the rollout already sampled (its messages repeat an earlier
call's prompt and reply, then add tool results or a user turn) gets a *bridged* prompt: the earlier
tokens verbatim plus the template's text for what came after (`hone.chat.bridge`), so one
multi-turn episode trains as one sequence. A call that repeats an earlier prompt but changed the
reply, or whose template cannot be bridged, is rendered afresh and counted as *broken*; a call
that starts a new conversation is simply *rendered*.

The book is in memory and thread-safe (in-process, the loopback server's thread and the caller's
loop both use it). Rollouts belong to an owner (a tenant of `hone serve`; None in-process): one
that is unknown, closed or another owner's is a 404. Rollouts idle for `idle_s` are dropped, so an
agent that never closes its rollout cannot fill the memory; a closed one's record is kept for
`closed_s` so a client that lost the answer to its close can ask again.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from transformers import PreTrainedTokenizerBase

from hone.chat import ChatInput, RenderedPrompt
from hone.chat.bridge import SampledCall, bridged_tokens, extends
from hone.errors import HoneError, InvalidRequestError, LimitError
from hone.types import SampledSequence

MAX_OPEN_ROLLOUTS = 10_000  # per owner
ROLLOUT_KEY_PREFIX = "hone-rollout-"  # a key that reaches one rollout's model routes and nothing else
MAX_CALLS_PER_ROLLOUT = 1_000


class RolloutNotFoundError(HoneError):
    """No open rollout of that id for this caller: 404, as for a missing model."""

    http_status = 404
    error_type = "not_found_error"
    code = "rollout_not_found"


@dataclass
class RecordedCall:
    """One model call of a rollout."""

    endpoint: str  # "chat.completions" or "responses"
    messages: list[dict[str, Any]]  # the request's messages, as OpenAI chat messages
    tools: list[dict[str, Any]] | None
    reply: dict[str, Any]  # the assistant message it answered with
    prompt_token_ids: list[int]
    token_ids: list[int]
    token_logprobs: list[float]
    token_forced: list[bool] | None
    finish_reason: str
    prompt: str  # "rendered" (a new conversation), "bridged" (continued verbatim) or "broken"
    sampled: SampledCall = field(repr=False)

    def public(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "messages": self.messages,
            "tools": self.tools,
            "reply": self.reply,
            "prompt_token_ids": self.prompt_token_ids,
            "token_ids": self.token_ids,
            "token_logprobs": self.token_logprobs,
            "token_forced": self.token_forced,
            "finish_reason": self.finish_reason,
            "prompt": self.prompt,
        }


@dataclass
class Rollout:
    id: str
    owner: str | None
    model: str
    task_id: str | None
    metadata: dict[str, Any]
    created: float = field(default_factory=time.time)
    touched: float = field(default_factory=time.monotonic)
    calls: list[RecordedCall] = field(default_factory=list)
    closed: bool = False
    # handed to the agent instead of its owner's key (hone serve): it reaches this rollout's model
    # routes only, so agent code cannot train, delete or read anything else of the tenant's
    key: str = field(default_factory=lambda: ROLLOUT_KEY_PREFIX + secrets.token_hex(24), repr=False)

    def public(self) -> dict[str, Any]:
        prompts = [call.prompt for call in self.calls]
        return {
            "id": self.id,
            "object": "rollout",
            "model": self.model,
            "task_id": self.task_id,
            "metadata": self.metadata,
            "created": int(self.created),
            "status": "closed" if self.closed else "open",
            "calls": [call.public() for call in self.calls],
            "turns_bridged": prompts.count("bridged"),
            "turns_broken": prompts.count("broken"),
        }


class PendingCall:
    """One request through a rollout, between choosing its prompt and recording its reply."""

    def __init__(self, book: "RolloutBook", rollout: Rollout, tokenizer: PreTrainedTokenizerBase, endpoint: str, chat: ChatInput, rendered: RenderedPrompt):
        self.book, self.rollout, self.endpoint, self.chat = book, rollout, endpoint, chat
        self.how, tokens = _prompt_for(tokenizer, rendered, list(rollout.calls))
        self.prompt = replace(rendered, tokens=tokens)

    def record(self, sample: SampledSequence, reply: dict[str, Any]) -> None:
        reply = {key: value for key, value in reply.items() if value is not None}
        reply.setdefault("content", "")
        call = RecordedCall(
            endpoint=self.endpoint,
            messages=self.chat.recorded_messages(),
            tools=self.chat.recorded_tools(),
            reply=reply,
            prompt_token_ids=self.prompt.tokens,
            token_ids=sample.tokens,
            token_logprobs=sample.logprobs,
            token_forced=sample.forced,
            finish_reason=sample.finish_reason,
            prompt=self.how,
            sampled=SampledCall(self.prompt, reply, sample.tokens, sample.finish_reason),
        )
        self.book.append(self.rollout, call)


def _prompt_for(tokenizer: PreTrainedTokenizerBase, rendered: RenderedPrompt, calls: list[RecordedCall]) -> tuple[str, list[int]]:
    """How this call's prompt is made, and its tokens: bridged from the newest earlier call whose
    conversation it continues, else rendered (broken where it continues one but cannot be bridged,
    or where its history holds a reply the rollout sampled but no earlier prompt it extends)."""
    for call in reversed(calls):
        if extends(rendered, call.sampled):
            tokens = bridged_tokens(tokenizer, rendered, call.sampled)
            return ("bridged", tokens) if tokens is not None else ("broken", rendered.tokens)
    replies = [call.sampled.prompt.history_message(call.reply) for call in calls]
    if any(m.get("role") == "assistant" and m in replies for m in rendered.messages):
        return "broken", rendered.tokens  # the client rewrote the history before a sampled reply
    return "rendered", rendered.tokens


# (tokenizer, endpoint, chat, rendered prompt, model, n) -> the call, its prompt chosen; a route
# given one samples `pending.prompt.tokens` and calls `pending.record(sample, reply)` at the end
Recorder = Callable[[PreTrainedTokenizerBase, str, ChatInput, RenderedPrompt, str, int], PendingCall]


class RolloutBook:
    def __init__(self, idle_s: float = 3600.0, closed_s: float = 600.0, max_open: int = MAX_OPEN_ROLLOUTS):
        self.idle_s, self.closed_s, self.max_open = idle_s, closed_s, max_open
        # each oldest first: open ones by last use, closed ones by closing time; an open rollout
        # leaves only by being closed or idle for idle_s, whatever else comes and goes
        self._open: OrderedDict[str, Rollout] = OrderedDict()
        self._closed: OrderedDict[str, Rollout] = OrderedDict()
        self._open_per_owner: dict[str | None, int] = {}
        self._by_key: dict[str, Rollout] = {}  # rollouts kept (open or recently closed) by their agent key
        self._lock = threading.Lock()

    def open(self, owner: str | None, model: str, task_id: str | None = None, metadata: dict[str, Any] | None = None) -> Rollout:
        with self._lock:
            self._expire()
            if self._open_per_owner.get(owner, 0) >= self.max_open:
                raise LimitError(f"{self.max_open} rollouts are open already; close finished ones (DELETE /v1/rollouts/ID) before opening more")
            rollout = Rollout(id="rollout-" + secrets.token_hex(12), owner=owner, model=model, task_id=task_id, metadata=metadata or {})
            self._open[rollout.id] = rollout
            self._by_key[rollout.key] = rollout
            self._open_per_owner[owner] = self._open_per_owner.get(owner, 0) + 1
            return rollout

    def get(self, owner: str | None, rollout_id: str, closed_ok: bool = False) -> Rollout:
        """The rollout `rollout_id` of `owner`, open (or, with `closed_ok`, recently closed)."""
        with self._lock:
            self._expire()
            rollout = self._open.get(rollout_id) or self._closed.get(rollout_id)
            if rollout is None or rollout.owner != owner or (rollout.closed and not closed_ok):
                state = "was closed" if rollout is not None and rollout.owner == owner else "does not exist"
                raise RolloutNotFoundError(f"the rollout '{rollout_id[:80]}' {state}; open one with POST /v1/rollouts (model.capture() in Python)")
            if not rollout.closed:
                rollout.touched = time.monotonic()
                self._open.move_to_end(rollout_id)
            return rollout

    def by_key(self, key: str) -> Rollout | None:
        """The rollout (open, or closed recently: its calls then get the route's 404) whose agent key `key` is."""
        with self._lock:
            self._expire()
            return self._by_key.get(key)

    def begin(self, owner: str | None, rollout_id: str, model: str, n: int, tokenizer: PreTrainedTokenizerBase, endpoint: str, chat: ChatInput, rendered: RenderedPrompt) -> PendingCall:
        """Check a call through rollout `rollout_id` and choose its prompt (bridged or rendered)."""
        rollout = self.get(owner, rollout_id)
        if model != rollout.model:
            raise InvalidRequestError(
                f"this rollout records calls to the model '{rollout.model}', not '{model[:80]}'; point the agent's model name at '{rollout.model}'",
                param="model",
            )
        if n != 1:
            raise InvalidRequestError("a rollout records one attempt, so n must be 1; run n rollouts for a group of attempts", param="n")
        if len(rollout.calls) >= MAX_CALLS_PER_ROLLOUT:
            raise LimitError(f"this rollout has recorded {MAX_CALLS_PER_ROLLOUT} calls, its limit; close it and open another")
        return PendingCall(self, rollout, tokenizer, endpoint, chat, rendered)

    def append(self, rollout: Rollout, call: RecordedCall) -> None:
        with self._lock:
            if not rollout.closed:  # closed while the call sampled: the caller has its record already
                rollout.calls.append(call)

    def close(self, owner: str | None, rollout_id: str) -> Rollout:
        """Close `rollout_id` and return its record; closing it again (a retried close) returns it too."""
        rollout = self.get(owner, rollout_id, closed_ok=True)
        with self._lock:
            if not rollout.closed:
                self._retire(rollout)
        return rollout

    def _retire(self, rollout: Rollout) -> None:
        rollout.closed = True
        rollout.touched = time.monotonic()
        del self._open[rollout.id]
        self._open_per_owner[rollout.owner] -= 1
        self._closed[rollout.id] = rollout

    def _expire(self) -> None:
        now = time.monotonic()
        while self._open and now - next(iter(self._open.values())).touched >= self.idle_s:
            self._retire(next(iter(self._open.values())))
        while self._closed and (now - next(iter(self._closed.values())).touched >= self.closed_s or len(self._closed) > 4 * self.max_open):
            del self._by_key[self._closed.popitem(last=False)[1].key]
