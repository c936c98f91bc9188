"""The ranking-agreement arithmetic of bench/judge_agreement.py."""

import importlib.util
from pathlib import Path

import pytest

from hone.rl.trajectory import Trajectory, TrajectoryGroup

BENCH = Path(__file__).resolve().parents[2] / "bench" / "judge_agreement.py"


@pytest.fixture(scope="module")
def bench():
    pytest.importorskip("hone.envs.inbox")
    spec = importlib.util.spec_from_file_location("judge_agreement", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def group(rewards, judge_scores):
    return TrajectoryGroup(trajectories=[Trajectory(reward=r, metrics={"judge_score": s}) for r, s in zip(rewards, judge_scores)])


def test_pairs_with_equal_true_rewards_are_skipped_and_judge_ties_count_half(bench):
    # rewards 1, 0, 0, -1; judge 0.9, 0.5, 0.1, 0.5
    # pairs with different rewards: (1,0)a ok, (1,0)b ok, (1,-1) ok, (0a,-1) tie, (0b,-1) wrong -> 1+1+1+0.5+0
    values = bench.pair_scores(group([1.0, 0.0, 0.0, -1.0], [0.9, 0.5, 0.1, 0.5]))
    assert sorted(values) == [0.0, 0.5, 1.0, 1.0, 1.0]


def test_the_bootstrap_interval_contains_the_estimate_and_is_a_point_when_every_group_agrees(bench):
    assert bench.bootstrap_ci([[1.0, 1.0], [1.0]]) == (1.0, 1.0)
    low, high = bench.bootstrap_ci([[1.0, 0.0], [0.5], [1.0, 1.0, 0.0]])
    assert 0.0 <= low <= 0.6 <= high <= 1.0  # the estimate is 3.5 / 6 = 0.58


def test_a_scripted_direct_attempt_earns_more_than_a_roundabout_one_and_a_wrong_one_least(bench):
    from hone.envs.inbox import make_splits

    question = make_splits(0).test[0]
    rewards = {kind: bench.scripted_attempt(question, kind).reward for kind in ("direct", "roundabout", "wrong", "idk")}
    assert rewards["direct"] > rewards["roundabout"] > rewards["idk"] > rewards["wrong"]
