"""`/v1/chat/completions` and `/v1/models`, OpenAI-compatible, with token-exact extensions (and
`/v1/responses`, from `hone.server.responses_api`, on the same router).

Extensions on every chat completion, so a trajectory can be rebuilt token for token:
- response `prompt_token_ids`: the prompt exactly as the sampler saw it;
- choice `token_ids` and `token_logprobs`: the sampled ids and their fp32 logprobs (the model's own,
  before any grammar, bias or penalty shaped the draw);
- choice `token_forced`: under a grammar (tool_choice, response_format), for each token whether it
  was the only one the grammar allowed (null without a grammar); trainers skip those by default;
- choice `tool_call_error`: why a tool-call attempt was rejected (the text stays in `content`).

A request is checked whole before any work: its shape by pydantic (`ChatCompletionRequest`, whose
messages and tools come from `hone.chat.schema`), its size by the MAX_ bounds below. Anything
wrong is a 400 whose one sentence names the parameter.

A request's sampling lasts only while someone waits for it (`while_client_waits`): the route
races the sampler against the client's `http.disconnect` and against the app's request time limit
(`app.state.request_timeout_s`, None = no limit; `hone serve --request-timeout-s`). A client that
hangs up, or a request over the limit, cancels the sample, and the engine frees its rows at its
next decode step; over the limit the answer is a 504 naming the limit. A server that stops waiting
for the route (uvicorn cutting a request at the end of its shutdown drain) cancels it the same way.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import replace
from typing import Annotated, Any, Callable

from fastapi import APIRouter, Request
from pydantic import Field

from hone.chat import ChatInput, parse_reply, render_chat
from hone.chat.schema import OpenModel
from hone.errors import InvalidRequestError
from hone.server.lifetime import while_client_waits
from hone.server.limits import (
    MAX_LOGIT_BIAS_ENTRIES,
    MAX_N,
    MAX_STOP_CHARS,
    MAX_STOPS,
    MAX_TOKENS,
    MAX_TOP_K,
    MAX_TOP_LOGPROBS,
    MAX_TOTAL_TOKENS,
    SEED_LIMIT,
    refuse_unsupported,
)
from hone.server.responses_api import build_responses_router
from hone.server.rollouts import Recorder
from hone.server.streaming import logprob_entries, stream_completion
from hone.server.traffic import TrafficTap
from hone.server.sampler import Sampler
from hone.types import SampledSequence, SamplingParams

# OpenAI parameters hone does not implement: a 400 naming them rather than a silently different
# reply (see hone.server.limits.refuse_unsupported)
REFUSED = {
    "functions": ((None, []), "the legacy 'functions' parameter is not supported; send 'tools' instead"),
    "function_call": ((None, "auto", "none"), "the legacy 'function_call' parameter is not supported; send 'tool_choice' instead"),
    "store": ((None, False), "hone does not store completions; leave 'store' out"),
    "audio": ((None,), "hone models produce text only; leave 'audio' out"),
    "modalities": ((None, ["text"]), "hone models produce text only; send modalities ['text'] or leave it out"),
    "prediction": ((None,), "predicted outputs are not supported; leave 'prediction' out"),
    "web_search_options": ((None,), "hone has no built-in web search; give the model a search tool instead"),
    "reasoning_effort": ((None,), "reasoning_effort is not supported by hone's models; leave it out"),
}

StopString = Annotated[str, Field(max_length=MAX_STOP_CHARS)]

log = logging.getLogger("hone.server")


class StreamOptions(OpenModel):
    include_usage: bool = False


class ChatCompletionRequest(ChatInput):
    """OpenAI's request body: messages, tools and tool_choice as ChatInput checks them, plus sampling."""

    model: str = Field(min_length=1, max_length=256)
    n: int = Field(default=1, ge=1, le=MAX_N)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    top_k: int = Field(default=0, ge=0, le=MAX_TOP_K)  # extension; 0 = off
    speculate: bool = True  # extension: false turns the engine's n-gram drafting off for this request
    task_key: str | None = Field(default=None, min_length=1, max_length=256)  # extension: the traffic log groups by it
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    stop: StopString | Annotated[list[StopString], Field(max_length=MAX_STOPS)] | None = None
    seed: int | None = Field(default=None, ge=0, lt=SEED_LIMIT)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0, allow_inf_nan=False)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0, allow_inf_nan=False)
    # token id (as a string, OpenAI's form) -> bias added to its logit before sampling
    logit_bias: dict[Annotated[str, Field(pattern=r"^[0-9]{1,9}$")], Annotated[float, Field(ge=-100.0, le=100.0)]] | None = Field(
        default=None, max_length=MAX_LOGIT_BIAS_ENTRIES
    )

    def sampling_params(self, default_max_tokens: int) -> SamplingParams:
        refuse_unsupported(self.model_extra or {}, REFUSED)
        max_tokens = self.max_completion_tokens or self.max_tokens or default_max_tokens
        self._check_total_work(max_tokens)
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            stop=tuple(s for s in stops if s),
            seed=self.seed,
            top_logprobs=(self.top_logprobs or 0) if self.logprobs else 0,
            logit_bias=tuple((int(token), bias) for token, bias in (self.logit_bias or {}).items() if bias != 0.0),
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            speculate=self.speculate,
        )

    def _check_total_work(self, max_tokens: int) -> None:
        if self.n * max_tokens <= MAX_TOTAL_TOKENS:
            return
        name = "max_completion_tokens" if self.max_completion_tokens else "max_tokens"
        raise InvalidRequestError(
            f"n × {name} must be at most {MAX_TOTAL_TOKENS:,} tokens per request; got {self.n} × {max_tokens:,}",
            param=name if self.max_completion_tokens or self.max_tokens else "n",  # the default is not the client's doing
        )


def build_router(sampler: Sampler, default_max_tokens: int = 256, scope: Callable[[Request], Sampler] | None = None) -> APIRouter:
    """Routes over `sampler`; with `scope`, over `scope(request)` instead (a service's per-tenant view)."""
    router = APIRouter()

    def models_for(request: Request) -> Sampler:
        return scope(request) if scope is not None else sampler

    @router.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        return model_list(models_for(request).list_models())

    @router.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        return await answer_chat(request, models_for(request), body, default_max_tokens)

    router.include_router(build_responses_router(models_for, default_max_tokens))  # /v1/responses
    return router


def model_list(names: list[str]) -> dict[str, Any]:
    """OpenAI's list of models, for these names."""
    return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "hone"} for name in names]}


async def answer_chat(request: Request, models: Sampler, body: ChatCompletionRequest, default_max_tokens: int, recorder: Recorder | None = None) -> Any:
    """The chat completion (or its event stream) for `body`; with `recorder`, through a rollout,
    which may choose the prompt tokens and records the reply."""
    tokenizer = models.tokenizer(body.model)  # raises ModelNotFoundError -> 404
    params = body.sampling_params(default_max_tokens)  # bounds first: no rendering for a request refused anyway
    prompt = render_chat(tokenizer, body)
    pending = recorder(tokenizer, "chat.completions", body, prompt, body.model, body.n) if recorder is not None else None
    if pending is not None:
        prompt = pending.prompt
    if prompt.grammar is not None:
        params = replace(params, grammar=prompt.grammar)

    completion_id = "chatcmpl-" + uuid.uuid4().hex
    tap = TrafficTap(models, request, "chat.completions", completion_id, body.model, body, prompt.tokens, pending.rollout if pending else None, body.task_key)

    async def finish(samples: list[SampledSequence]) -> dict[str, Any]:
        completion = _completion(completion_id, body, tokenizer, prompt, samples)
        if pending is not None:
            pending.record(samples[0], completion["choices"][0]["message"])
        for sample, choice in zip(samples, completion["choices"]):
            tap.add(sample, choice["message"], choice["tool_call_error"])
        await tap.flush()  # logged before the client sees it: a reply it saw is never lost
        return completion

    if body.stream:
        return await stream_completion(
            request,
            lambda on_tokens: models.sample(body.model, prompt.tokens, body.n, params, on_tokens),
            n=body.n,
            tokenizer=tokenizer,
            watch_tool_calls=prompt.tool_format.markers if prompt.tool_names is not None else (),
            base={"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": body.model},
            logprobs=body.logprobs,
            include_usage=body.stream_options is not None and body.stream_options.include_usage,
            finish=finish,
        )
    samples = await while_client_waits(request, models.sample(body.model, prompt.tokens, body.n, params))
    return await finish(samples)


# --------------------------------------------------------------------------- responses
def _completion(completion_id: str, body: ChatCompletionRequest, tokenizer: Any, prompt: Any, samples: list[SampledSequence]) -> dict[str, Any]:
    choices = [_choice(i, s, body, tokenizer, prompt) for i, s in enumerate(samples)]
    completion_tokens = sum(len(s.tokens) for s in samples)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.model,
        "choices": choices,
        "usage": {
            "prompt_tokens": len(prompt.tokens),
            "completion_tokens": completion_tokens,
            "total_tokens": len(prompt.tokens) + completion_tokens,
        },
        "prompt_token_ids": prompt.tokens,
    }


def _choice(index: int, sample: SampledSequence, body: ChatCompletionRequest, tokenizer: Any, prompt: Any) -> dict[str, Any]:
    text = tokenizer.decode(sample.tokens, skip_special_tokens=True)
    if prompt.tool_names is not None:
        parsed = parse_reply(text, prompt.tool_names, prompt.tool_format)
        content, tool_calls, error = parsed.content, parsed.tool_calls, parsed.error
    else:
        content, tool_calls, error = text.strip(), [], None
    finish_reason = "tool_calls" if tool_calls else sample.finish_reason
    return {
        "index": index,
        "message": {"role": "assistant", "content": (content or None) if tool_calls else content, "tool_calls": tool_calls or None},
        "finish_reason": finish_reason,
        "logprobs": _logprobs(sample, tokenizer) if body.logprobs else None,
        "token_ids": sample.tokens,
        "token_logprobs": sample.logprobs,
        "token_forced": sample.forced,
        "tool_call_error": error,
    }


def _logprobs(sample: SampledSequence, tokenizer: Any) -> dict[str, Any]:
    return {"content": logprob_entries(tokenizer, sample.tokens, sample.logprobs, sample.top_logprobs), "refusal": None}
