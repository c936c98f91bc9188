"""Run rollouts concurrently into trajectory groups, counting failures instead of dying of them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Awaitable, Callable, Sequence, TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hone.errors import TooManyFailuresError
from hone.rl.trajectory import Trajectory, TrajectoryGroup
from hone.types import FailureRecord

Task = TypeVar("Task")
Rollout = Callable[[Task, int], Awaitable[Trajectory]]  # (task, attempt index within its group) -> trajectory


@dataclass(frozen=True)
class GatherConfig:
    group_size: int = 8
    concurrency: int = 32  # rollouts in flight at once
    retries: int = 0  # extra tries for a rollout that raised, before it counts as a failure
    max_exceptions: int | float = 0.25  # failures tolerated: a count (int) or a fraction of all rollouts (float < 1)
    show_progress: bool = True


def failure_budget(config: GatherConfig, total: int) -> int:
    if isinstance(config.max_exceptions, float) and config.max_exceptions < 1:
        return int(config.max_exceptions * total)
    return int(config.max_exceptions)


async def gather_groups(tasks: Sequence[Task], rollout: Rollout, config: GatherConfig = GatherConfig()) -> list[TrajectoryGroup]:
    """Run `config.group_size` attempts at every task; return one group per task, in task order.

    A rollout that raises (after `retries`) is recorded in its group's `exceptions`. If more
    rollouts fail than the budget allows, raise TooManyFailuresError naming the first failure.
    """
    total = len(tasks) * config.group_size
    budget = failure_budget(config, total)
    semaphore = asyncio.Semaphore(config.concurrency)
    groups = [TrajectoryGroup() for _ in tasks]
    rewards: list[float] = []
    failures: list[FailureRecord] = []

    with _progress(config.show_progress, total) as (progress, bar):

        async def attempt(task_index: int, attempt_index: int) -> None:
            async with semaphore:
                for tries_left in range(config.retries, -1, -1):
                    try:
                        trajectory = await rollout(tasks[task_index], attempt_index)
                        groups[task_index].trajectories.append(trajectory)
                        rewards.append(trajectory.reward)
                        break
                    except Exception as exc:  # a failed rollout is data, not a crash
                        if tries_left == 0:
                            record = FailureRecord.from_exception(exc)
                            groups[task_index].exceptions.append(record)
                            failures.append(record)
            if progress is not None:
                mean = sum(rewards) / len(rewards) if rewards else float("nan")
                progress.update(bar, advance=1, reward=f"{mean:.3f}", failed=len(failures))

        await asyncio.gather(*(attempt(t, a) for t in range(len(tasks)) for a in range(config.group_size)))

    if len(failures) > budget:
        first = failures[0]
        raise TooManyFailuresError(
            f"{len(failures)} of {total} rollouts failed, more than the budget of {budget} "
            f"(max_exceptions={config.max_exceptions}); the first: {first.type}: {first.message}"
        )
    return groups


class _progress:
    """A rich progress bar with the running reward, or nothing when disabled."""

    def __init__(self, enabled: bool, total: int):
        self.progress = None
        if enabled:
            self.progress = Progress(
                TextColumn("rollouts"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("reward {task.fields[reward]}  failed {task.fields[failed]}"),
                TimeElapsedColumn(),
                transient=True,
            )
        self.total = total

    def __enter__(self):
        if self.progress is None:
            return None, None
        self.progress.start()
        bar = self.progress.add_task("rollouts", total=self.total, reward="-", failed=0)
        return self.progress, bar

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()
        return False
