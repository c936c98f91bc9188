"""Streamed chat completions: server-sent events in OpenAI's chunk shape, as tokens are decoded.

What a client sees, per choice:
1. a first chunk with the assistant role;
2. content chunks while the sampler decodes (with OpenAI's `logprobs` of the tokens each covers,
   when asked for);
3. when the choice ends: the content not yet sent, its tool calls (each whole, in one delta: id,
   name and arguments), and a chunk with `finish_reason` and hone's full `token_ids`,
   `token_logprobs`, `token_forced` and `tool_call_error`, exactly as a non-streamed choice has them;
then, with `stream_options.include_usage`, a usage chunk that also carries `prompt_token_ids`, and
`[DONE]`. So a streamed reply can be recorded and trained on exactly like a non-streamed one.

The streamed content is always a prefix of the final content: text that could still change is
held back (a character split across tokens, trailing spaces the final content strips, the start of
a `<tool_call>` tag), and once a tool call opens, content stops until the end. Where a sampler does
not stream (RemoteBackend's), everything arrives in step 3.

Errors before the first token keep their HTTP status (the route waits for the first token or the
end before answering). After that the status is sent, so an error is one `{"error": ...}` event.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable

from fastapi import Request
from fastapi.responses import StreamingResponse

from hone.errors import HoneError
from hone.server.lifetime import ClientGone, while_client_waits
from hone.types import SampledSequence, TokenDelta

log = logging.getLogger("hone.server")

Finish = Callable[[list[SampledSequence]], Awaitable[dict[str, Any]]]  # samples -> the whole (non-streamed) completion


async def stream_completion(request: Request, sampling, n: int, tokenizer: Any, watch_tool_calls: tuple[str, ...], base: dict[str, Any], logprobs: bool, include_usage: bool, finish: Finish) -> StreamingResponse:
    """Start `sampling` (a function of an `on_tokens` callback returning the sampler's coroutine)
    and answer with its event stream once the first token is decoded or the sampling has ended."""
    started = await start_sampling(request, sampling)
    events = _events(started, n, tokenizer, watch_tool_calls, base, logprobs, include_usage, finish)
    return StreamingResponse(events, media_type="text/event-stream")


@dataclass
class Started:
    """A sampling under way whose first token has been decoded (or which has already ended)."""

    task: asyncio.Future  # the sampler's result, under while_client_waits
    deltas: asyncio.Queue  # TokenDeltas heard from the engine's thread, not yet taken
    head: list[TokenDelta]  # the first delta, already taken from `deltas` (empty when none came)


async def start_sampling(request: Request, sampling) -> Started:
    """Start `sampling` (a function of an `on_tokens` callback returning the sampler's coroutine)
    and wait for its first token or its end; an error before the first token is raised here, so
    it keeps its HTTP status."""
    loop = asyncio.get_running_loop()
    deltas: asyncio.Queue[TokenDelta] = asyncio.Queue()

    def on_tokens(delta: TokenDelta) -> None:  # the engine's worker thread
        loop.call_soon_threadsafe(deltas.put_nowait, delta)

    task = asyncio.ensure_future(while_client_waits(request, sampling(on_tokens)))
    first = asyncio.ensure_future(deltas.get())
    try:
        await asyncio.wait({task, first}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        first.cancel()
        raise
    if not first.done():
        first.cancel()
        if task.exception() is not None:
            raise task.exception()  # before any token: the usual error answer and status
    head = [first.result()] if first.done() and not first.cancelled() else []
    return Started(task, deltas, head)


async def token_deltas(started: Started) -> AsyncIterator[TokenDelta]:
    """Every delta of `started`, in order, until its sampling has ended (then `started.task.result()`
    is the samples, or raises what ended it)."""
    for delta in started.head:
        yield delta
    while True:
        while not started.deltas.empty():
            yield started.deltas.get_nowait()
        if started.task.done() and started.deltas.empty():
            return
        getter = asyncio.ensure_future(started.deltas.get())
        await asyncio.wait({started.task, getter}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            yield getter.result()
        else:
            getter.cancel()


async def _events(started, n, tokenizer, watch_tool_calls, base, logprobs, include_usage, finish) -> AsyncIterator[str]:
    def event(choices: list[dict[str, Any]], **extra: Any) -> str:
        return "data: " + json.dumps({**base, "choices": choices, **extra}, ensure_ascii=False) + "\n\n"

    texts = [ChoiceText(tokenizer, watch_tool_calls) for _ in range(n)]
    try:
        for i in range(n):
            yield event([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        async for delta in token_deltas(started):
            piece = texts[delta.index].feed(delta)
            if piece is not None:
                yield event([texts[delta.index].content_choice(delta.index, piece, logprobs)])
        completion = await finish(started.task.result())
        for choice, text in zip(completion["choices"], texts):
            for chunk in text.closing_chunks(choice):
                yield event([{**chunk, "index": choice["index"]}])
        if include_usage:
            yield event([], usage=completion["usage"], prompt_token_ids=completion["prompt_token_ids"])
        yield "data: [DONE]\n\n"
    except ClientGone:
        return
    except HoneError as exc:  # the status has been sent: the error goes in the stream
        yield "data: " + json.dumps({"error": {"message": str(exc), "type": exc.error_type, "param": getattr(exc, "param", None), "code": exc.code}}) + "\n\n"
    finally:
        started.task.cancel()


class ChoiceText:
    """One choice's content as its tokens arrive: decoded incrementally, sent only where final."""

    def __init__(self, tokenizer: Any, watch_tool_calls: tuple[str, ...]):
        self.tokenizer = tokenizer
        self.watch_tool_calls = watch_tool_calls
        self.tokens: list[int] = []
        self.text = ""  # all text decoded so far
        self.sent = ""  # content sent so far: always a prefix of the final content
        self.closed = False  # a tool call opened (or the text stopped being prefix-stable): no more content
        self.logprobs: list[float] = []
        self.top: list[list[tuple[int, float]] | None] = []
        self.covered = 0  # tokens whose logprobs a chunk has carried
        # incremental decoding: text is added once the tokens after `read` decode to whole characters
        self._prefix = 0
        self._read = 0

    def feed(self, delta: TokenDelta) -> str | None:
        """The content these tokens make visible, or None while nothing new can be shown."""
        self.tokens.extend(delta.tokens)
        self.logprobs.extend(delta.logprobs)
        self.top.extend(delta.top_logprobs or [None] * len(delta.tokens))
        self._decode()
        if self.closed:
            return None
        visible = self.text.lstrip()
        if self.watch_tool_calls:  # the texts that open a call in this model's format
            opened = min((i for i in (visible.find(m) for m in self.watch_tool_calls) if i >= 0), default=-1)
            if opened >= 0:
                visible, self.closed = visible[:opened], True
            else:
                visible = visible[: len(visible) - max(_partial_tag(visible, m) for m in self.watch_tool_calls)]
        visible = visible.rstrip()
        if not visible.startswith(self.sent):
            self.closed = True  # a tokenizer whose text is not prefix-stable: the rest comes at the end
            return None
        if len(visible) == len(self.sent):
            return None
        piece, self.sent = visible[len(self.sent) :], visible
        return piece

    def content_choice(self, index: int, piece: str, logprobs: bool) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": index, "delta": {"content": piece}, "finish_reason": None}
        if logprobs:
            span = slice(self.covered, len(self.tokens))
            choice["logprobs"] = {"content": logprob_entries(self.tokenizer, self.tokens[span], self.logprobs[span], self.top[span]), "refusal": None}
            self.covered = len(self.tokens)
        return choice

    def closing_chunks(self, choice: dict[str, Any]) -> list[dict[str, Any]]:
        """What the client has not seen of the final `choice`: the rest of its content, its tool
        calls, and its finish with hone's token-exact extensions."""
        message = choice["message"]
        content = message["content"] or ""
        chunks: list[dict[str, Any]] = []
        if content.startswith(self.sent):
            if len(content) > len(self.sent):
                chunks.append({"delta": {"content": content[len(self.sent) :]}, "finish_reason": None})
        else:
            log.warning("streamed content is not a prefix of the final content; the stream's text may differ")
        if message["tool_calls"]:
            calls = [{"index": k, **call} for k, call in enumerate(message["tool_calls"])]
            chunks.append({"delta": {"tool_calls": calls}, "finish_reason": None})
        extensions = {key: choice[key] for key in ("token_ids", "token_logprobs", "token_forced", "tool_call_error")}
        rest = {"content": choice["logprobs"]["content"][self.covered :], "refusal": None} if choice["logprobs"] else None
        chunks.append({"delta": {}, "logprobs": rest, "finish_reason": choice["finish_reason"], **extensions})
        return chunks

    def _decode(self) -> None:
        prefix_text = self.tokenizer.decode(self.tokens[self._prefix : self._read], skip_special_tokens=True)
        new_text = self.tokenizer.decode(self.tokens[self._prefix :], skip_special_tokens=True)
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):  # not mid-character
            self.text += new_text[len(prefix_text) :]
            self._prefix, self._read = self._read, len(self.tokens)


def _partial_tag(text: str, marker: str) -> int:
    """How many trailing characters of `text` could be the start of `marker` (a call's opening)."""
    for k in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:k]):
            return k
    return 0


def logprob_entries(tokenizer: Any, tokens: list[int], logprobs: list[float], top: list | None) -> list[dict[str, Any]]:
    """OpenAI's `logprobs.content` entries for these tokens (`top`: each one's alternatives, or None)."""

    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        token = tokenizer.decode([token_id])
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    alternatives = top or [None] * len(tokens)
    return [{**entry(t, lp), "top_logprobs": [entry(a, alp) for a, alp in (alts or [])]} for t, lp, alts in zip(tokens, logprobs, alternatives)]
