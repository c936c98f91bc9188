"""Evaluate a model on an environment's held-out tasks: success with a 95% interval, reward, turns, latency."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any, Sequence

from hone.backends import Backend
from hone.rl.capture import play
from hone.rl.env import CapturedEnvironment, Environment
from hone.rl.trajectory import Trajectory
from hone.types import FailureRecord


@dataclass
class EvalResult:
    success: float
    ci95: tuple[float, float]
    reward: float
    turns: float
    latency_s: float  # mean wall time per task, as a user of the agent would wait for it
    n: int
    failures: int
    trajectories: list[Trajectory] = field(default_factory=list, repr=False)
    exceptions: list[FailureRecord] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "ci95": list(self.ci95),
            "reward": self.reward,
            "turns": self.turns,
            "latency_s": self.latency_s,
            "n": self.n,
            "failures": self.failures,
        }


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion (sound near 0 and 1, unlike the normal one)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


async def evaluate(
    env: Environment | CapturedEnvironment,
    client: Any,
    model: str,
    tasks: Sequence[Any],
    *,
    temperature: float = 0.0,
    seed: int = 0,
    concurrency: int = 32,
    backend: Backend | None = None,
) -> EvalResult:
    """One attempt per task. A rollout that raises counts as a failure (success 0), and is kept.
    A CapturedEnvironment needs the `backend` that serves `model`, to open its captures."""
    if hasattr(env, "run_agent") and backend is None:
        raise TypeError(f"evaluate needs backend= for {type(env).__name__}: its agent runs against captured rollouts")
    semaphore = asyncio.Semaphore(concurrency)
    slots: list[Trajectory | None] = [None] * len(tasks)  # kept in task order for reports
    exceptions: list[FailureRecord] = []
    latencies: list[float] = []

    async def one(index: int, task: Any) -> None:
        async with semaphore:
            started = time.perf_counter()
            try:
                slots[index] = await play(env, backend, client, model, task, seed=seed + index, temperature=temperature)
            except Exception as exc:  # counted below as an unsuccessful task
                exceptions.append(FailureRecord.from_exception(exc))
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(one(i, t) for i, t in enumerate(tasks)))
    trajectories = [t for t in slots if t is not None]
    n = len(tasks)
    successes = sum(t.metrics.get("success", 0.0) for t in trajectories)
    return EvalResult(
        success=successes / n if n else 0.0,
        ci95=wilson_interval(successes, n),
        reward=fmean(t.reward for t in trajectories) if trajectories else float("nan"),
        turns=fmean(len(t.turns) for t in trajectories) if trajectories else float("nan"),
        latency_s=fmean(latencies) if latencies else float("nan"),
        n=n,
        failures=len(exceptions),
        trajectories=trajectories,
        exceptions=exceptions,
    )
