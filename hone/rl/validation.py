"""Validation during training: greedy success on the environment's validation split, every K steps.

1. The split is the environment's `validation_tasks()`; tasks the run never trains on, so that the
   best checkpoint, and any choice of steps or learning rate, is made on data the test never sees.
2. The run validates once before training (step 0, the baseline), every K steps, and at its last step.
3. K is the user's (`validate_every`) or chosen so validation costs at most VALIDATION_SHARE of the
   run: from the baseline's time and the first training step's. Both are in metrics.jsonl, so a
   resumed run chooses the same K.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from hone.errors import HoneError
from hone.rl.evaluate import evaluate

VALIDATION_SHARE = 0.15  # of the run's wall time, at most, when K is chosen automatically


def validation_tasks_of(env: Any, validate_every: int | None) -> list[Any] | None:
    """The tasks to validate on, or None when validation is off (asked off, or automatic and the
    environment offers no split)."""
    if validate_every == 0:
        return None
    offer = getattr(env, "validation_tasks", None)
    if offer is None:
        if validate_every is None:
            return None
        raise HoneError(
            f"validate_every={validate_every} needs a validation split, and the environment '{getattr(env, 'name', env)}' "
            "has no validation_tasks() method; add one (tasks the run does not train on) or set validate_every=0"
        )
    tasks = list(offer())
    if not tasks:
        raise HoneError(f"the environment '{getattr(env, 'name', env)}' returned no validation tasks; return some, or set validate_every=0")
    return tasks


def validation_interval(validate_every: int | None, history: Sequence[dict[str, Any]]) -> int | None:
    """K, or None while the automatic choice still lacks the baseline's or the first step's time."""
    if validate_every:
        return validate_every
    baseline = next((r.get("time/validation") for r in history if r["step"] == 0), None)
    first_step = next((r.get("time/step") for r in history if r["step"] >= 1 and r.get("time/step")), None)
    if not baseline or not first_step:
        return None
    # validation share = v / (K·s + v) ≤ VALIDATION_SHARE  ⇔  K ≥ v·(1 − share) / (share·s)
    return max(1, math.ceil(baseline * (1 - VALIDATION_SHARE) / (VALIDATION_SHARE * first_step)))


def validation_due(step: int, last_step: int, interval: int | None) -> bool:
    return step == last_step or (interval is not None and step % interval == 0)


async def validate(env: Any, model: Any, tasks: Sequence[Any], concurrency: int) -> dict[str, float]:
    """Greedy success on `tasks` with its 95% interval, as `validation/...` metrics."""
    result = await evaluate(
        env, model.openai_client(), model.name, tasks, temperature=0.0, seed=0, concurrency=concurrency, backend=model.backend
    )
    low, high = result.ci95
    return {
        "validation/success": result.success,
        "validation/ci_low": low,
        "validation/ci_high": high,
        "validation/n": float(result.n),
        "validation/reward": result.reward,
        "validation/failures": float(result.failures),
    }
