"""Validation during training: greedy success on the environment's validation split, every K steps.

1. The split is the environment's `validation_tasks()`; tasks the run never trains on, so that the
   best checkpoint, and any choice of steps or learning rate, is made on data the test never sees.
2. The run validates once before training (step 0, the baseline), at its last step, and between:
   every K steps where the user sets K (`validate_every`); by default whenever the validation time
   spent so far, this validation and one held back for the last step still fit in VALIDATION_SHARE
   of the run's time so far. So validations spread evenly in time, the whole run's share stays
   under VALIDATION_SHARE (where the baseline and the last one alone fit in it), and the rule reads
   only steps already logged: a resumed run validates at the same steps.
"""

from __future__ import annotations

from statistics import fmean
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


def validation_due(step: int, last_step: int, validate_every: int | None, history: Sequence[dict[str, Any]]) -> bool:
    """Whether to validate after training step `step`, from the steps logged before it."""
    if step == last_step:
        return True
    if validate_every:
        return step % validate_every == 0
    step_times = [r["time/step"] for r in history if 1 <= r["step"] < step and r.get("time/step")]
    validation_times = [r["time/validation"] for r in history if r["step"] < step and r.get("time/validation")]
    if not step_times or not validation_times:
        return False
    # training time up to this step (this one estimated as the mean so far) bounds the validation time
    allowed = VALIDATION_SHARE / (1 - VALIDATION_SHARE) * (sum(step_times) + fmean(step_times))
    return sum(validation_times) + 2 * fmean(validation_times) <= allowed  # this one, and the last step's in reserve


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
