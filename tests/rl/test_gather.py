import asyncio

import pytest

from hone.errors import TooManyFailuresError
from hone.rl.gather import GatherConfig, gather_groups
from hone.rl.trajectory import Trajectory


def flaky_rollout(fail_every: int):
    """Raises on every `fail_every`-th call; otherwise returns a trajectory rewarded by attempt index."""
    calls = {"n": 0}

    async def rollout(task, attempt):
        calls["n"] += 1
        number = calls["n"]
        await asyncio.sleep(0)
        if number % fail_every == 0:
            raise RuntimeError(f"tool timed out on {task}")
        return Trajectory(reward=float(attempt), metadata={"task": task})

    return rollout, calls


def test_groups_come_back_in_task_order_with_one_trajectory_per_attempt():
    rollout, _ = flaky_rollout(fail_every=10**9)
    groups = asyncio.run(gather_groups(["a", "b", "c"], rollout, GatherConfig(group_size=4, show_progress=False)))
    assert [g.trajectories[0].metadata["task"] for g in groups] == ["a", "b", "c"]
    assert all(sorted(g.rewards) == [0.0, 1.0, 2.0, 3.0] for g in groups)


def test_a_third_of_rollouts_failing_is_tolerated_within_budget_and_kept_for_inspection():
    rollout, _ = flaky_rollout(fail_every=3)
    groups = asyncio.run(
        gather_groups(list(range(6)), rollout, GatherConfig(group_size=4, max_exceptions=0.5, show_progress=False))
    )
    failures = [f for g in groups for f in g.exceptions]
    # 24 rollouts, every third raises: 8 failures, 16 trajectories
    assert len(failures) == 8
    assert sum(len(g.trajectories) for g in groups) == 16
    assert failures[0].type == "RuntimeError" and "tool timed out" in failures[0].message
    assert "Traceback" in failures[0].traceback


def test_failures_beyond_the_budget_stop_with_a_clear_message():
    rollout, _ = flaky_rollout(fail_every=3)
    with pytest.raises(TooManyFailuresError, match=r"8 of 24 rollouts failed, more than the budget of 2"):
        asyncio.run(gather_groups(list(range(6)), rollout, GatherConfig(group_size=4, max_exceptions=2, show_progress=False)))


def test_retries_turn_a_transient_failure_into_a_success():
    rollout, calls = flaky_rollout(fail_every=2)
    groups = asyncio.run(
        gather_groups(["x"], rollout, GatherConfig(group_size=3, retries=1, max_exceptions=0, concurrency=1, show_progress=False))
    )
    # calls 1 ok, 2 fails, 3 ok (retry), 4 fails, 5 ok (retry): 3 trajectories, 5 calls
    assert len(groups[0].trajectories) == 3 and not groups[0].exceptions
    assert calls["n"] == 5


def test_concurrency_limit_is_respected():
    in_flight = {"now": 0, "max": 0}

    async def rollout(task, attempt):
        in_flight["now"] += 1
        in_flight["max"] = max(in_flight["max"], in_flight["now"])
        await asyncio.sleep(0.01)
        in_flight["now"] -= 1
        return Trajectory(reward=0.0)

    asyncio.run(gather_groups(list(range(5)), rollout, GatherConfig(group_size=4, concurrency=3, show_progress=False)))
    assert in_flight["max"] == 3
