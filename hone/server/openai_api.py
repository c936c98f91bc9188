"""`/v1/chat/completions` and `/v1/models`, OpenAI-compatible, with token-exact extensions.

Extensions on every chat completion, so a trajectory can be rebuilt token for token:
- response `prompt_token_ids`: the prompt exactly as the sampler saw it;
- choice `token_ids` and `token_logprobs`: the sampled ids and their fp32 logprobs;
- choice `tool_call_error`: why a tool-call attempt was rejected (the text stays in `content`).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Callable, Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from hone.chat import parse_reply, render_prompt
from hone.types import SampledSequence, SamplingParams

MAX_N = 64
MAX_TOP_LOGPROBS = 20


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send fields hone ignores (user, metadata, ...)

    model: str = Field(min_length=1, max_length=256)
    messages: list[dict[str, Any]] = Field(min_length=1, max_length=4096)
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    tool_choice: Literal["auto", "none", "required"] | dict[str, Any] | None = None
    n: int = Field(default=1, ge=1, le=MAX_N)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0)  # extension; 0 = off
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    stream: bool = False
    stream_options: dict[str, Any] | None = None

    def sampling_params(self, default_max_tokens: int) -> SamplingParams:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return SamplingParams(
            max_tokens=self.max_completion_tokens or self.max_tokens or default_max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            stop=tuple(s for s in stops if s),
            seed=self.seed,
            top_logprobs=(self.top_logprobs or 0) if self.logprobs else 0,
        )


def build_router(backend: Any, default_max_tokens: int = 256, scope: Callable[[Request], Any] | None = None) -> APIRouter:
    """Routes over `backend`; with `scope`, over `scope(request)` instead (a service's per-tenant view
    with the same list_models / tokenizer / sample methods)."""
    router = APIRouter()

    def models_for(request: Request) -> Any:
        return scope(request) if scope is not None else backend

    @router.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": 0, "owned_by": "hone"} for name in models_for(request).list_models()],
        }

    @router.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        models = models_for(request)
        tokenizer = models.tokenizer(body.model)  # raises ModelNotFoundError -> 404
        prompt = render_prompt(tokenizer, body.messages, body.tools, body.tool_choice)
        params = body.sampling_params(default_max_tokens)
        samples = await models.sample(body.model, prompt.tokens, body.n, params)
        completion = _completion(body, tokenizer, prompt, samples)
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            return StreamingResponse(_stream(completion, include_usage), media_type="text/event-stream")
        return completion

    return router


# --------------------------------------------------------------------------- responses
def _completion(body: ChatCompletionRequest, tokenizer: Any, prompt: Any, samples: list[SampledSequence]) -> dict[str, Any]:
    choices = [_choice(i, s, body, tokenizer, prompt) for i, s in enumerate(samples)]
    completion_tokens = sum(len(s.tokens) for s in samples)
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex,
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
    text = prompt.forced_prefix + tokenizer.decode(sample.tokens, skip_special_tokens=True)
    if prompt.tool_names is not None:
        parsed = parse_reply(text, prompt.tool_names)
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
        "tool_call_error": error,
    }


def _logprobs(sample: SampledSequence, tokenizer: Any) -> dict[str, Any]:
    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        token = tokenizer.decode([token_id])
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    content = []
    for position, (token_id, logprob) in enumerate(zip(sample.tokens, sample.logprobs)):
        item = entry(token_id, logprob)
        alternatives = sample.top_logprobs[position] if sample.top_logprobs else []
        item["top_logprobs"] = [entry(t, lp) for t, lp in alternatives]
        content.append(item)
    return {"content": content, "refusal": None}


async def _stream(completion: dict[str, Any], include_usage: bool):
    """Server-sent events in OpenAI's chunk shape. The engine returns whole samples, so each
    choice arrives as one content chunk; the chunk shape is what clients parse."""
    base = {"id": completion["id"], "object": "chat.completion.chunk", "created": completion["created"], "model": completion["model"]}

    def event(choices: list[dict[str, Any]], **extra: Any) -> str:
        return "data: " + json.dumps({**base, "choices": choices, **extra}) + "\n\n"

    for choice in completion["choices"]:
        i, message = choice["index"], choice["message"]
        yield event([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        delta: dict[str, Any] = {"content": message["content"]}
        if message["tool_calls"]:
            delta["tool_calls"] = [{"index": k, **call} for k, call in enumerate(message["tool_calls"])]
        extensions = {key: choice[key] for key in ("token_ids", "token_logprobs", "tool_call_error")}
        yield event([{"index": i, "delta": delta, "logprobs": choice["logprobs"], "finish_reason": None, **extensions}])
        yield event([{"index": i, "delta": {}, "finish_reason": choice["finish_reason"]}])
    if include_usage:
        yield event([], usage=completion["usage"], prompt_token_ids=completion["prompt_token_ids"])
    yield "data: [DONE]\n\n"
