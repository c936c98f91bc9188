"""Validation during training: greedy success on the environment's validation split, every K steps.

1. The split is the environment's `validation_tasks()`; tasks the run never trains on, so that the
   best checkpoint, and any choice of steps or learning rate, is made on data the test never sees.
2. The run validates once before training (step 0, the baseline), every K steps, and at its last step.
3. K is the user's (`validate_every`) or the smallest that keeps all validations, the baseline and
   the last included, within VALIDATION_SHARE of the run's time, estimated from the baseline's time
   and the first step's sampling and training time (both logged, so a resumed run chooses the same
   K). Where even the baseline and the last validation exceed it, the run validates only those two.
   The estimate is made once: replies that grow during training make later validations slower.
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
    tasks = list(offer() if callable(offer) else offer)  # a method, or a plain sequence
    if not tasks:
        raise HoneError(f"the environment '{getattr(env, 'name', env)}' returned no validation tasks; return some, or set validate_every=0")
    return tasks


def validation_interval(validate_every: int | None, steps: int, history: Sequence[dict[str, Any]]) -> int | None:
    """K, or None while the automatic choice still lacks the baseline's or the first step's time."""
    if validate_every:
        return validate_every
    baseline = next((r.get("time/validation") for r in history if r["step"] == 0), None)
    first = next((r for r in history if r["step"] >= 1 and r.get("time/train") is not None), None)
    if not baseline or first is None:
        return None
    step_time = (first.get("time/sample") or 0.0) + first["time/train"]
    budget = VALIDATION_SHARE / (1 - VALIDATION_SHARE) * steps * step_time  # validation time allowed beside training
    for interval in range(1, steps + 1):
        if (1 + math.ceil(steps / interval)) * baseline <= budget:
            return interval
    return steps  # the baseline and the last step only
def validation_due(step: int, last_step: int, interval: int | None) -> bool:
    return step == last_step or (interval is not None and step % interval == 0)


async def validate(env: Any, model: Any, tasks: Sequence[Any], concurrency: int) -> dict[str, float]:
    """Greedy success on `tasks` with its 95% interval, as `validation/...` metrics."""
    result = await evaluate(
        env, model.openai_client(), model.name, tasks, temperature=0.0, seed=0, concurrency=concurrency, backend=model.backend
    )
    check_success_values(env, result.trajectories)
    low, high = result.ci95
    return {
        "validation/success": result.success,
        "validation/ci_low": low,
        "validation/ci_high": high,
        "validation/n": float(result.n),
        "validation/reward": result.reward,
        "validation/failures": float(result.failures),
    }


def check_success_values(env: Any, trajectories: Sequence[Any]) -> None:
    """Success is a share: one sentence for an environment that reports something else."""
    for t in trajectories:
        value = t.metrics.get("success")
        if value is not None and not 0.0 <= value <= 1.0:
            raise HoneError(
                f"the environment '{getattr(env, 'name', env)}' reported success={value!r}; success must be between 0 and 1 "
                "(1 for a solved task), since validation and its forecast read it as a share"
            )
