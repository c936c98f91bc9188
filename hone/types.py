"""The data hone passes between its rooms: messages, sampling settings and results, datums.

Axis letters used in names across hone: B batch rows, T tokens, V vocabulary, G attempts in a group.
Everything here is plain data (pydantic models or frozen dataclasses); nothing here computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict


# --------------------------------------------------------------------------- sampling
@dataclass(frozen=True)
class SamplingParams:
    """How to sample one completion. `top_k=0` and `top_p=1.0` mean no truncation."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ()  # stop strings; the match is cut from the returned text and tokens
    stop_token_ids: tuple[int, ...] = ()  # besides the tokenizer's end-of-sequence ids
    seed: int | None = None  # same seed, same prompt, same params -> same tokens
    top_logprobs: int = 0  # how many alternatives to return per sampled token


@dataclass
class SampledSequence:
    """One sampled completion: exactly the tokens the sampler drew, each with its fp32 logprob."""

    tokens: list[int]
    logprobs: list[float]  # log p(token_t | prefix) under the sampling distribution before truncation
    finish_reason: Literal["stop", "length"]
    top_logprobs: list[list[tuple[int, float]]] | None = None  # per token: (token id, logprob) pairs


# --------------------------------------------------------------------------- training
class Datum(BaseModel):
    """One training sequence and the per-token inputs its loss needs.

    All per-token lists have the length of `input_tokens` (T). Position t predicts
    `target_tokens[t]` from `input_tokens[: t + 1]`, so `target_tokens` is the sequence shifted by
    one. `weights[t]` is 0 where nothing is trained (prompt, tool output) and 1 on sampled tokens.
    """

    model_config = ConfigDict(frozen=False)

    input_tokens: list[int]
    target_tokens: list[int]
    weights: list[float]
    sampler_logprobs: list[float] | None = None  # logprob the sampler gave each target token
    advantages: list[float] | None = None  # per target token; usually one value per sequence

    def check(self) -> None:
        """Raise if the per-token lists disagree in length; the message names all of them."""
        lengths = {
            "input_tokens": len(self.input_tokens),
            "target_tokens": len(self.target_tokens),
            "weights": len(self.weights),
        }
        if self.sampler_logprobs is not None:
            lengths["sampler_logprobs"] = len(self.sampler_logprobs)
        if self.advantages is not None:
            lengths["advantages"] = len(self.advantages)
        if len(set(lengths.values())) != 1:
            raise ValueError(f"datum lengths disagree: {lengths}")

    @classmethod
    def from_sequence(
        cls,
        tokens: list[int],
        weights: list[float],
        sampler_logprobs: list[float] | None = None,
        advantages: list[float] | None = None,
    ) -> "Datum":
        """Build a datum from a whole sequence and per-token values aligned with `tokens`.

        The first token is never a target, so each aligned list drops its first entry.
        """
        datum = cls(
            input_tokens=tokens[:-1],
            target_tokens=tokens[1:],
            weights=weights[1:],
            sampler_logprobs=None if sampler_logprobs is None else sampler_logprobs[1:],
            advantages=None if advantages is None else advantages[1:],
        )
        datum.check()
        return datum


@dataclass(frozen=True)
class AdamParams:
    """AdamW settings for one optimizer step."""

    learning_rate: float = 1e-5
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip_norm: float = 1.0  # 0 = no clipping


# --------------------------------------------------------------------------- failures
class FailureRecord(BaseModel):
    """A failure kept as data: what raised, its message and traceback."""

    type: str
    message: str
    traceback: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException) -> "FailureRecord":
        import traceback as tb

        return cls(
            type=type(exc).__name__,
            message=str(exc),
            traceback="".join(tb.format_exception(type(exc), exc, exc.__traceback__)),
        )

