"""Built-in training losses, and the one signature a custom loss must have.

    loss_fn(logprobs: list[Tensor], datums: list[Datum], config: LossConfig) -> (loss, metrics)

`logprobs[i]` is the trainer's fp32 logprob of each of `datums[i].target_tokens`, shape (T_i,),
with gradient. Only positions with a non-zero weight carry a real value inside `forward_backward`
(the trainer skips the LM head elsewhere and puts 0.0 there), so a loss must read positions
through `weights`, as every loss here does. The loss is minimised; metrics are plain floats.

Notation: lp = trainer logprob, q = sampler logprob, A = advantage, w = weight,
ratio = exp(lp - q) (token level) or the geometric mean of the token ratios over a sequence's
weighted tokens (`ratio_level="sequence"`, GSPO-style). How the textbook versions differ here:

1. `cross_entropy` — -w·lp. Supervised fine-tuning and distillation; advantages and sampler
   logprobs are ignored (the sampler metrics are still reported when present).
2. `importance_sampling` — -ratio·A, unclipped: the off-policy REINFORCE estimator. Its gradient
   is -ratio·A·∇lp. For research only: with stale or mismatched sampler logprobs its variance is
   unbounded, which is why it is not the default.
3. `ppo` — -min(ratio·A, clip(ratio, 1-clip_low, 1+clip_high)·A), the PPO clipped surrogate with
   DAPO's asymmetric range (0.2, 0.28) by default. No KL penalty and no value function: A comes
   from the group (see `advantages.py`). A token whose ratio has left the range in the
   direction A pushes gets zero gradient.
4. `cispo` (the default for RL) — -sg(clip(ratio, cispo_ratio_min, cispo_ratio_max))·A·lp, as in
   MiniMax-M1 (arXiv 2506.13585): the importance weight is truncated and detached, so every
   token keeps a gradient (A·w'·∇lp) and only its size is bounded. Following MiniMax-M1 (no lower
   bound) and Tinker's defaults, the bounds are on the ratio itself, [0, 4] — not PPO's
   `clip_low`/`clip_high`, which CISPO ignores. Its value is not a surrogate of the return;
   only its gradient means anything.

Aggregation (`config.aggregation`), applied to every loss's per-token terms x:
- "token_mean": Σ_i Σ_t w·x / Σ_i Σ_t w — every weighted token of the batch counts the same
  (DAPO's token-level normalisation; long sequences weigh more).
- "sequence_mean": mean over sequences (those with Σ_t w ≠ 0) of Σ_t w·x / Σ_t w — the GRPO
  paper's normalisation; every sequence counts the same.
Both are sums over sequences divided by a denominator that depends only on the weights, which is
what lets the trainer split a batch into micro-batches and still get the whole batch's gradient
(see `aggregation_denominator`).

Metrics (over tokens with w ≠ 0): `loss`; `ratio_mean`; `clip_fraction` (PPO: share of tokens
whose gradient the clip zeroed; CISPO: share whose weight was truncated); `kl_sampler_trainer`
(k1 estimate of KL(sampler ‖ trainer), mean of q - lp) and `kl_sampler_trainer_k3`
(mean of ratio - 1 - log ratio, non-negative) and `logprob_abs_diff` (mean |q - lp|, which unlike k1
cannot cancel between tokens), reported whenever sampler logprobs are present.
Entropy cannot be computed from logprobs alone; the trainer reports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import Tensor

from hone.errors import InvalidRequestError
from hone.types import Datum

LossFn = Callable[[list[Tensor], list[Datum], "LossConfig"], tuple[Tensor, dict[str, float]]]


@dataclass(frozen=True)
class LossConfig:
    """Settings shared by the built-in losses; each loss reads the fields it needs."""

    clip_low: float = 0.2  # PPO: ratio clipped below at 1 - clip_low
    clip_high: float = 0.28  # PPO: ratio clipped above at 1 + clip_high (DAPO's clip-higher)
    cispo_ratio_min: float = 0.0  # CISPO: lower bound on the detached ratio itself (0 = none)
    cispo_ratio_max: float = 4.0  # CISPO: upper bound on the detached ratio itself
    ratio_level: Literal["token", "sequence"] = "token"  # sequence = geometric mean over weighted tokens
    aggregation: Literal["token_mean", "sequence_mean"] = "token_mean"

    def __post_init__(self) -> None:
        if self.ratio_level not in ("token", "sequence"):
            raise InvalidRequestError(f"ratio_level must be 'token' or 'sequence', not {self.ratio_level!r}")
        if self.aggregation not in ("token_mean", "sequence_mean"):
            raise InvalidRequestError(f"aggregation must be 'token_mean' or 'sequence_mean', not {self.aggregation!r}")


# --------------------------------------------------------------------------- aggregation
def aggregation_denominator(datums: list[Datum], config: LossConfig) -> float:
    """What the per-sequence sums are divided by: total weight, or the number of weighted sequences.

    A built-in loss over a sub-batch equals (Σ over its sequences) / (its own denominator), so a
    trainer that splits a batch scales each part by part_denominator / whole_denominator.
    """
    if config.aggregation == "token_mean":
        total = float(sum(sum(d.weights) for d in datums))
    else:
        total = float(sum(1 for d in datums if sum(d.weights) != 0))
    return total if total != 0 else 1.0  # nothing weighted: the loss is 0 either way


def aggregate(per_token: list[Tensor], weights: list[Tensor], datums: list[Datum], config: LossConfig) -> Tensor:
    """Weighted per-token terms -> one scalar, by `config.aggregation` (see the module docstring)."""
    if config.aggregation == "token_mean":
        numerator = sum((w * x).sum() for x, w in zip(per_token, weights))
    else:
        numerator = sum((w * x).sum() / _nonzero(w.sum()) for x, w in zip(per_token, weights))
    return numerator / aggregation_denominator(datums, config)


def _nonzero(value: Tensor) -> Tensor:
    return torch.where(value == 0, torch.ones_like(value), value)


# --------------------------------------------------------------------------- per-datum inputs
@dataclass
class _Inputs:
    """The loss inputs of one datum as fp32 tensors on the logprobs' device."""

    lp: Tensor  # (T,) trainer logprobs, with gradient
    w: Tensor  # (T,) weights
    mask: Tensor  # (T,) bool, w != 0
    q: Tensor | None  # (T,) sampler logprobs
    a: Tensor | None  # (T,) advantages


def _inputs(logprobs: list[Tensor], datums: list[Datum], need: tuple[str, ...], loss_name: str) -> list[_Inputs]:
    if len(logprobs) != len(datums):
        raise InvalidRequestError(f"{loss_name}: {len(logprobs)} logprob tensors for {len(datums)} datums")
    check_loss_inputs(datums, need, loss_name)
    out = []
    for lp, datum in zip(logprobs, datums):
        device = lp.device

        def tensor(values: list[float] | None) -> Tensor | None:
            return None if values is None else torch.tensor(values, dtype=torch.float32, device=device)

        w = tensor(datum.weights)
        out.append(_Inputs(lp=lp, w=w, mask=w != 0, q=tensor(datum.sampler_logprobs), a=tensor(datum.advantages)))
    return out


def check_loss_inputs(datums: list[Datum], need: tuple[str, ...], loss_name: str) -> None:
    """Raise InvalidRequestError if a datum lacks a field the loss needs (cheap; before any compute)."""
    for field in need:
        for i, datum in enumerate(datums):
            if getattr(datum, field) is None:
                raise InvalidRequestError(f"the {loss_name} loss needs {field} on every datum; datum {i} has none")


def _log_ratio(x: _Inputs, ratio_level: str) -> Tensor:
    """(T,) log importance ratio; 0 where the weight is 0, so an unused position cannot overflow."""
    token = torch.where(x.mask, x.lp - x.q, torch.zeros_like(x.lp))
    if ratio_level == "token":
        return token
    sequence = (x.w * token).sum() / _nonzero(x.w.sum())  # log of the geometric mean over weighted tokens
    return sequence.expand_as(token)


# --------------------------------------------------------------------------- metrics
def _masked_mean(values: list[Tensor], masks: list[Tensor]) -> float:
    count = sum(int(m.sum()) for m in masks)
    if count == 0:
        return 0.0
    return float(sum(v.detach()[m].sum() for v, m in zip(values, masks))) / count


def _sampler_metrics(xs: list[_Inputs]) -> dict[str, float]:
    if any(x.q is None for x in xs):
        return {}
    masks = [x.mask for x in xs]
    k1 = [torch.where(x.mask, x.q - x.lp.detach(), torch.zeros_like(x.q)) for x in xs]
    log_r = [-v for v in k1]
    k3 = [torch.exp(v) - 1 - v for v in log_r]
    return {
        "kl_sampler_trainer": _masked_mean(k1, masks),
        "kl_sampler_trainer_k3": _masked_mean(k3, masks),
        "logprob_abs_diff": _masked_mean([v.abs() for v in k1], masks),
    }


# --------------------------------------------------------------------------- losses
def cross_entropy(logprobs: list[Tensor], datums: list[Datum], config: LossConfig) -> tuple[Tensor, dict[str, float]]:
    """-w·lp, aggregated: supervised fine-tuning / distillation on the weighted tokens."""
    xs = _inputs(logprobs, datums, (), "cross_entropy")
    per_token = [torch.where(x.mask, -x.lp, torch.zeros_like(x.lp)) for x in xs]
    loss = aggregate(per_token, [x.w for x in xs], datums, config)
    return loss, {"loss": float(loss.detach()), **_sampler_metrics(xs)}


def importance_sampling(
    logprobs: list[Tensor], datums: list[Datum], config: LossConfig
) -> tuple[Tensor, dict[str, float]]:
    """-ratio·A with ratio = exp(lp - q), unclipped (off-policy REINFORCE)."""
    xs = _inputs(logprobs, datums, ("sampler_logprobs", "advantages"), "importance_sampling")
    ratios = [torch.exp(_log_ratio(x, config.ratio_level)) for x in xs]
    per_token = [torch.where(x.mask, -r * x.a, torch.zeros_like(r)) for x, r in zip(xs, ratios)]
    loss = aggregate(per_token, [x.w for x in xs], datums, config)
    masks = [x.mask for x in xs]
    return loss, {"loss": float(loss.detach()), "ratio_mean": _masked_mean(ratios, masks), **_sampler_metrics(xs)}


def ppo(logprobs: list[Tensor], datums: list[Datum], config: LossConfig) -> tuple[Tensor, dict[str, float]]:
    """-min(ratio·A, clip(ratio, 1 - clip_low, 1 + clip_high)·A)."""
    xs = _inputs(logprobs, datums, ("sampler_logprobs", "advantages"), "ppo")
    low, high = 1.0 - config.clip_low, 1.0 + config.clip_high
    per_token, ratios, clipped = [], [], []
    for x in xs:
        ratio = torch.exp(_log_ratio(x, config.ratio_level))
        objective = torch.minimum(ratio * x.a, torch.clamp(ratio, low, high) * x.a)
        per_token.append(torch.where(x.mask, -objective, torch.zeros_like(objective)))
        ratios.append(ratio)
        r = ratio.detach()
        clipped.append((((r > high) & (x.a > 0)) | ((r < low) & (x.a < 0))).float())  # gradient zeroed here
    loss = aggregate(per_token, [x.w for x in xs], datums, config)
    masks = [x.mask for x in xs]
    return loss, {
        "loss": float(loss.detach()),
        "ratio_mean": _masked_mean(ratios, masks),
        "clip_fraction": _masked_mean(clipped, masks),
        **_sampler_metrics(xs),
    }


def cispo(logprobs: list[Tensor], datums: list[Datum], config: LossConfig) -> tuple[Tensor, dict[str, float]]:
    """-sg(clip(ratio, cispo_ratio_min, cispo_ratio_max))·A·lp (MiniMax-M1's CISPO)."""
    xs = _inputs(logprobs, datums, ("sampler_logprobs", "advantages"), "cispo")
    low, high = config.cispo_ratio_min, config.cispo_ratio_max
    per_token, ratios, clipped = [], [], []
    for x in xs:
        ratio = torch.exp(_log_ratio(x, config.ratio_level)).detach()
        coefficient = torch.clamp(ratio, low, high)  # detached: a weight on ∇lp, never itself trained
        per_token.append(torch.where(x.mask, -coefficient * x.a * x.lp, torch.zeros_like(x.lp)))
        ratios.append(ratio)
        clipped.append(((ratio > high) | (ratio < low)).float())
    loss = aggregate(per_token, [x.w for x in xs], datums, config)
    masks = [x.mask for x in xs]
    return loss, {
        "loss": float(loss.detach()),
        "ratio_mean": _masked_mean(ratios, masks),
        "clip_fraction": _masked_mean(clipped, masks),
        **_sampler_metrics(xs),
    }


# --------------------------------------------------------------------------- registry
LOSSES: dict[str, LossFn] = {
    "cross_entropy": cross_entropy,
    "importance_sampling": importance_sampling,
    "ppo": ppo,
    "cispo": cispo,
}

# Which datum fields each built-in loss reads, so the trainer can refuse a batch before compute.
LOSS_REQUIRES: dict[str, tuple[str, ...]] = {
    "cross_entropy": (),
    "importance_sampling": ("sampler_logprobs", "advantages"),
    "ppo": ("sampler_logprobs", "advantages"),
    "cispo": ("sampler_logprobs", "advantages"),
}


def get_loss(loss: str | LossFn) -> LossFn:
    """A built-in loss by name, or a custom callable passed through unchanged."""
    if callable(loss):
        return loss
    if isinstance(loss, str) and loss in LOSSES:
        return LOSSES[loss]
    raise InvalidRequestError(
        f"unknown loss {loss!r}; use one of {', '.join(sorted(LOSSES))} or pass a callable", param="loss"
    )


def builtin_name(loss_fn: LossFn) -> str | None:
    """The registry name of a built-in loss function, or None for a custom one."""
    for name, fn in LOSSES.items():
        if fn is loss_fn:
            return name
    return None
