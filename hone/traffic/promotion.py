"""Safe promotion: a model trained on its traffic is served only once it validates no worse.

    await pin(backend, "agent")                         # NAME serves a fixed checkpoint from now on
    ... serve, collect feedback, train_from_traffic ...  # the live weights move; NAME does not
    decision = await gate(backend, "agent", validate)    # promote the new weights, or refuse and reset

`validate(served_name) -> float` is the user's validation: success on the environment's validation
split, or any score where higher is better, computed by sampling `served_name` (NAME@CHECKPOINT).
The candidate and the incumbent are validated in the same call, the same way. A candidate more
than `tolerance` below the incumbent is kept as a checkpoint but not promoted, and the reason is
recorded; by default the live weights then go back to the incumbent's, so training does not go on
from a model that learned to game its feedback. A rollback is promoting an older checkpoint.

Works over a backend with save_checkpoint / restore_checkpoint / promotions / promote: a
RemoteBackend (the server keeps the checkpoints and the decisions) or a LocalBackend (a folder
keeps them: hone.backends.promotions).
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from hone.errors import HoneError

Validate = Callable[[str], Awaitable[float]]


@dataclass(frozen=True)
class GateDecision:
    candidate: str  # NAME@CHECKPOINT of the weights judged
    incumbent: str  # what NAME served before
    candidate_score: float
    incumbent_score: float
    promoted: bool
    reason: str
    serving: str  # what NAME serves after the decision (NAME@CHECKPOINT)
    validation_n: int | None = None  # prompts each side was validated on, where the caller said

    @property
    def served_score(self) -> float:
        return self.candidate_score if self.promoted else self.incumbent_score

    def metrics(self) -> dict[str, float]:
        """`validation/...` metrics for the health monitor: the feedback-gaming warning reads them."""
        served = {"validation/success": self.served_score, "validation/promoted": float(self.promoted)}
        return _finite(_compared(self.candidate_score, self.incumbent_score, self.validation_n) | served)


async def pin(backend: Any, name: str) -> str:
    """Make NAME serve a fixed checkpoint (its live weights now) if it serves the live weights; returns what it serves."""
    info = backend.promotions(name)
    if info["checkpoint"] is None:
        saved = backend.save_checkpoint(name, _checkpoint_name("pinned", backend.model_info(name).step))
        info = backend.promote(name, saved["checkpoint"], True, "pinned the live weights: training from traffic will not change what this model serves")
    return info["serving"]


async def gate(
    backend: Any, name: str, validate: Validate, tolerance: float = 0.0, reset_on_refusal: bool = True, validation_n: int | None = None
) -> GateDecision:
    """Validate the live weights against what NAME serves; promote them, or keep them as a checkpoint and say why not.
    `validation_n`: how many prompts `validate` scores, so the health monitor can tell a drop from noise."""
    info = backend.promotions(name)
    if info["checkpoint"] is None:
        raise HoneError(f"'{name}' serves its live weights, so there is nothing to gate against; pin it first (hone.traffic.promotion.pin)")
    incumbent = f"{name}@{info['checkpoint']}"
    saved = backend.save_checkpoint(name, _checkpoint_name("candidate", backend.model_info(name).step))
    candidate = f"{name}@{saved['checkpoint']}"
    candidate_score, incumbent_score = float(await validate(candidate)), float(await validate(incumbent))
    scored = math.isfinite(candidate_score) and math.isfinite(incumbent_score)
    promoted = scored and candidate_score >= incumbent_score - tolerance
    verdict = "promoted" if promoted else f"refused: more than {tolerance:g} below the incumbent" if scored else "refused: validation gave no number"
    reason = f"validation {candidate_score:.4f} vs {incumbent_score:.4f} for {info['serving']}; {verdict}"
    metrics = _finite(_compared(candidate_score, incumbent_score, validation_n) | {"tolerance": tolerance})
    after = backend.promote(name, saved["checkpoint"], promoted, reason, metrics)
    if not promoted and reset_on_refusal:
        backend.restore_checkpoint(name, info["checkpoint"])
    return GateDecision(candidate, incumbent, candidate_score, incumbent_score, promoted, reason, after["serving"], validation_n)


def _compared(candidate_score: float, incumbent_score: float, validation_n: int | None) -> dict[str, float]:
    """What a decision records of the comparison (the feedback-gaming warning reads these names)."""
    metrics = {"validation/candidate": candidate_score, "validation/incumbent": incumbent_score}
    if validation_n:
        metrics["validation/n"] = float(validation_n)
    return metrics


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if math.isfinite(v)}  # JSON carries no NaN


def _checkpoint_name(kind: str, step: int) -> str:
    return f"{kind}-{step}-{secrets.token_hex(3)}"  # unique: after a reset, a later candidate may reach the same step
