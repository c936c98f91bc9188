"""Combining code rewards with judge scores: the arithmetic, written out."""

import asyncio

import pytest

from hone.rewards import combine_rewards, judge_group
from hone.rl.trajectory import Trajectory, TrajectoryGroup


def judged(codes, judges):
    return TrajectoryGroup(
        trajectories=[Trajectory(reward=c, metrics={"judge_score": j}) for c, j in zip(codes, judges)]
    )


def test_weighted_mode_mixes_code_and_judge_by_the_judges_share():
    group = judged([1.0, 0.0, 0.5], [0.2, 1.0, 0.5])
    rewards = combine_rewards(group, "weighted", weight=0.25)
    # 0.75 * 1.0 + 0.25 * 0.2 = 0.8;  0.75 * 0.0 + 0.25 * 1.0 = 0.25;  0.75 * 0.5 + 0.25 * 0.5 = 0.5
    assert rewards == pytest.approx([0.8, 0.25, 0.5])
    assert group.rewards == pytest.approx([0.8, 0.25, 0.5])
    assert [t.metadata["code_reward"] for t in group.trajectories] == [1.0, 0.0, 0.5]


def test_tiebreak_mode_orders_only_attempts_the_code_reward_ties():
    group = judged([1.0, 1.0, 0.5, 0.0], [0.3, 0.9, 1.0, 0.0])
    rewards = combine_rewards(group, "tiebreak", weight=0.5)
    # distinct code rewards 0, 0.5, 1: smallest gap 0.5, eps = 0.5 * 0.5 = 0.25
    # 1 + 0.25*0.3 = 1.075;  1 + 0.25*0.9 = 1.225;  0.5 + 0.25*1.0 = 0.75;  0 + 0 = 0
    assert rewards == pytest.approx([1.075, 1.225, 0.75, 0.0])
    # the best judge score on a worse code reward (0.75) stays below the worst on a better one (1.075)
    assert max(rewards[2:]) < min(rewards[:2])


def test_tiebreak_with_one_code_reward_lets_the_judge_order_everything():
    group = judged([0.0, 0.0, 0.0], [0.1, 0.6, 1.0])
    # one distinct code reward: the gap is taken as 1, eps = 0.5 * 1 = 0.5 -> 0.05, 0.3, 0.5
    assert combine_rewards(group, "tiebreak", weight=0.5) == pytest.approx([0.05, 0.3, 0.5])


def test_combining_twice_starts_from_the_kept_code_reward_each_time():
    group = judged([1.0, 0.0], [0.0, 1.0])
    combine_rewards(group, "weighted", weight=0.5)
    # 0.5 * 1 + 0.5 * 0 = 0.5 and 0.5 * 0 + 0.5 * 1 = 0.5, both times
    assert combine_rewards(group, "weighted", weight=0.5) == pytest.approx([0.5, 0.5])


def test_combine_after_judging_with_the_default_reward_uses_the_code_reward_not_the_score(stand_in, config, attempt):
    stand_in.answers.append('{"scores": [{"id": "1", "score": 0.2}, {"id": "2", "score": 0.8}]}')
    group = TrajectoryGroup(trajectories=[attempt("t", "a", reward=1.0), attempt("t", "b", reward=0.0)])
    asyncio.run(judge_group(group, config))  # reward is now the judge score
    # code 1.0 and 0.0 (kept in metadata), judge 0.2 and 0.8: 0.5*1 + 0.5*0.2 = 0.6 and 0.5*0 + 0.5*0.8 = 0.4
    assert combine_rewards(group, "weighted", weight=0.5) == pytest.approx([0.6, 0.4])


def test_combining_without_judge_scores_or_with_a_bad_weight_says_what_is_wrong():
    with pytest.raises(ValueError, match="has no judge score; run judge_group"):
        combine_rewards(TrajectoryGroup(trajectories=[Trajectory(reward=1.0)]))
    with pytest.raises(ValueError, match=r"must be in \(0, 1\)"):
        combine_rewards(judged([1.0], [0.5]), "tiebreak", weight=1.0)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        combine_rewards(judged([1.0], [0.5]), "weighted", weight=1.5)
    with pytest.raises(ValueError, match="unknown mode"):
        combine_rewards(judged([1.0], [0.5]), "max")
