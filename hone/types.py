"""The data hone passes between its rooms: messages, sampling settings and results, datums.

Axis letters used in names across hone: B batch rows, T tokens, V vocabulary, G attempts in a group.
Everything here is plain data (pydantic models or frozen dataclasses); nothing here computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hone.errors import InvalidRequestError

DEFAULT_BASE_MODEL = "smollm2-135m"  # the embedded model; hone.models.DEFAULT_MODEL is this
DEFAULT_LORA_RANK = 16


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
    # What shapes the draw but never the reported logprob (that stays the model's own, see
    # hone.engine.sampling): a grammar every sample must follow (llguidance's Lark-like text; the
    # engine needs grammar support), additive logit biases by token id, and OpenAI's penalties on
    # tokens already sampled in this completion.
    grammar: str | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    # let the engine guess tokens from the sequence's own n-grams and verify them in its decode
    # step (hone.engine.speculation); outputs are the same either way, only the speed differs
    speculate: bool = True

    @property
    def shapes_logits(self) -> bool:
        """Whether anything besides temperature and truncation changes what is drawn."""
        return bool(self.logit_bias) or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0


@dataclass
class SampledSequence:
    """One sampled completion: exactly the tokens the sampler drew, each with its fp32 logprob."""

    tokens: list[int]
    logprobs: list[float]  # log p(token_t | prefix) under the sampling distribution before truncation
    finish_reason: Literal["stop", "length"]
    top_logprobs: list[list[tuple[int, float]]] | None = None  # per token: (token id, logprob) pairs
    forced: list[bool] | None = None  # per token, under a grammar: the only token it allowed there


@dataclass
class TokenDelta:
    """New tokens of one sampled sequence (`index` of a request's n), heard while it is decoded."""

    index: int
    tokens: list[int]
    logprobs: list[float]
    forced: list[bool] | None = None
    top_logprobs: list[list[tuple[int, float]]] | None = None


OnTokens = Callable[[TokenDelta], None]  # called from the sampler's thread: it must only hand deltas on


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


# --------------------------------------------------------------------------- models
class ModelOptions(BaseModel):
    """A trainable model's trainer options; None = the trainer's default. The one list of them:
    Python keywords, the CLI and the HTTP schema all take these names and bounds."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)  # LoRA init, dropout; and which `tiny` weights
    max_seq_len: int | None = Field(default=None, ge=8, le=1 << 16)
    micro_batch_tokens: int | None = Field(default=None, ge=64, le=1 << 20)
    autocast_bf16: bool | Literal["auto"] | None = None  # "auto": bf16 where the trainer's device multiplies in it natively
    lora_alpha: int | None = Field(default=None, ge=1, le=1 << 16)  # None = 2 × lora_rank

    @field_validator("autocast_bf16", mode="wrap")
    @classmethod
    def _one_sentence_for_autocast(cls, value: Any, handler: Any) -> Any:
        try:
            return handler(value)
        except ValidationError:  # pydantic's two messages (one per union member) say less than this
            raise ValueError(f'must be true, false or "auto", not {value!r}') from None


class ModelSpec(BaseModel):
    """What a trainable model is: its base weights, its LoRA rank (0 = full fine-tuning), its options.

        ModelSpec.of("smollm2-135m", lora_rank=16, seed=3)   # what add_model(name, base, **options) builds
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    base_model: str = Field(default=DEFAULT_BASE_MODEL, min_length=1, max_length=256)
    lora_rank: int = Field(default=DEFAULT_LORA_RANK, ge=0, le=1024, description="0 = full fine-tuning")
    options: ModelOptions = Field(default_factory=ModelOptions)

    @classmethod
    def of(cls, base_model: str = DEFAULT_BASE_MODEL, **keywords: Any) -> "ModelSpec":
        """The spec of `add_model(name, base_model, **keywords)`: `lora_rank` (0 = full fine-tuning),
        `full_finetune=True` (the same as rank 0), and any ModelOptions field. Checked once, here."""
        keywords = dict(keywords)
        full_finetune = keywords.pop("full_finetune", False)
        lora_rank = keywords.pop("lora_rank", None)
        unknown = sorted(set(keywords) - set(ModelOptions.model_fields))
        if unknown:
            known = ", ".join(["lora_rank", "full_finetune", *ModelOptions.model_fields])
            raise InvalidRequestError(f"unknown model option(s) {', '.join(unknown)}; the options are: {known}", param=unknown[0])
        if full_finetune:
            lora_rank = 0
        try:
            return cls(
                base_model=base_model,
                lora_rank=DEFAULT_LORA_RANK if lora_rank is None else lora_rank,
                options=ModelOptions(**keywords),
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"] if p != "options") or "model"
            raise InvalidRequestError(f"invalid model option '{field}': {first['msg']}", param=field) from None

    @property
    def full_finetune(self) -> bool:
        return self.lora_rank == 0

    def keywords(self) -> dict[str, Any]:
        """The keywords `add_model` takes for this spec: `ModelSpec.of(base_model, **keywords())` is this spec."""
        return {"lora_rank": self.lora_rank, **self.options.model_dump(exclude_none=True)}

    def trainer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `hone.training.Trainer`: the set options, and LoRA or full fine-tuning."""
        kwargs = self.options.model_dump(exclude_none=True)
        if self.full_finetune:
            kwargs["full_finetune"] = True
        else:
            kwargs["lora_rank"] = self.lora_rank
        return kwargs


@dataclass(frozen=True)
class ModelInfo:
    """A model a backend serves, as `add_model` and `model_info` report it."""

    name: str
    base_model: str
    lora_rank: int  # 0 = full fine-tuning
    step: int  # optimizer steps taken


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

