"""Combining a code reward with a judge score, per group.

The code reward is what the environment computed (`trajectory.reward` before judging, kept in
`metadata["code_reward"]` once anything overwrites it); the judge score is
`metrics["judge_score"]`, set by `judge_group`. Two modes:

1. "weighted": reward = (1 - weight) * code + weight * judge; `weight` is the judge's share.
2. "tiebreak": the code reward decides, the judge only orders attempts the code reward ties.
   reward = code + eps * judge with eps = weight * (smallest gap between distinct code rewards
   in the group), weight in (0, 1): since judge <= 1, eps * judge < gap, so no judge score can
   reorder two attempts whose code rewards differ. With one distinct code reward the gap is 1.
"""

from __future__ import annotations

from typing import Literal

from hone.rl.trajectory import TrajectoryGroup


def combine_rewards(
    group: TrajectoryGroup, mode: Literal["weighted", "tiebreak"] = "weighted", weight: float = 0.5
) -> list[float]:
    """Set each trajectory's reward from its code reward and judge score; return the new rewards."""
    codes_G = [t.metadata.get("code_reward", t.reward) for t in group.trajectories]
    judges_G = []
    for index, trajectory in enumerate(group.trajectories):
        if "judge_score" not in trajectory.metrics:
            raise ValueError(f"trajectory {index} of the group has no judge score; run judge_group on the group first")
        judges_G.append(trajectory.metrics["judge_score"])

    if mode == "weighted":
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight is the judge's share of the reward and must be in [0, 1], not {weight}")
        rewards_G = [(1.0 - weight) * c + weight * j for c, j in zip(codes_G, judges_G)]
    elif mode == "tiebreak":
        if not 0.0 < weight < 1.0:
            raise ValueError(f"weight is a fraction of the smallest code-reward gap and must be in (0, 1), not {weight}")
        distinct = sorted(set(codes_G))
        gap = min((b - a for a, b in zip(distinct, distinct[1:])), default=1.0)
        rewards_G = [c + weight * gap * j for c, j in zip(codes_G, judges_G)]
    else:
        raise ValueError(f"unknown mode {mode!r}; use 'weighted' or 'tiebreak'")

    for trajectory, code, reward in zip(group.trajectories, codes_G, rewards_G):
        trajectory.metadata.setdefault("code_reward", code)
        trajectory.reward = reward
    return rewards_G
