"""How often a judge ranks attempts the way the ground truth does."""

from __future__ import annotations

from hone.rl.trajectory import Trajectory, TrajectoryGroup


def true_reward(trajectory: Trajectory) -> float:
    """The code reward: kept in metadata when `judge_group(set_reward=True)` replaced it."""
    return trajectory.metadata.get("code_reward", trajectory.reward)


def pair_agreements(group: TrajectoryGroup) -> list[float]:
    """Per pair with different true rewards: 1 if the judge orders it the same way, 0.5 for a judge tie, else 0."""
    values = []
    trajectories = [t for t in group.trajectories if "judge_score" in t.metrics]
    for i in range(len(trajectories)):
        for j in range(i + 1, len(trajectories)):
            true = true_reward(trajectories[i]) - true_reward(trajectories[j])
            if abs(true) < 1e-9:
                continue
            judged = trajectories[i].metrics["judge_score"] - trajectories[j].metrics["judge_score"]
            values.append(0.5 if abs(judged) < 1e-9 else float((true > 0) == (judged > 0)))
    return values
