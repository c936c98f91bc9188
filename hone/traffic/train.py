"""One training step from a model's own traffic: read its log, make groups, train.

    metrics = await train_from_traffic(backend, "agent", TrafficTrainConfig())

The same on a LocalBackend with a traffic log and on a RemoteBackend (its server keeps the log):
both have `traffic(name)` and `model_info(name)`. The step is `hone.rl.step.train_step`, so the
loss is the clipped importance-sampled one over the logprobs each reply was served with: data from
a version a few steps old is corrected, and `max_staleness` bounds how old it may be.

`score`: an optional relative judge for unscored replies (`judge_score(JudgeConfig(...))`, or any
async function of a group). It is given each task's unscored attempts as one group (two or more)
and sets their rewards in place; those groups then train too. A group whose scoring fails is left
out and counted (`traffic/judge_failed`): a judge's outage costs that group, not the step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import fmean, pstdev
from typing import Any, Awaitable, Callable

from hone.rewards import Judge, JudgeConfig, judge_group
from hone.rl.step import TrainConfig, train_step
from hone.rl.trajectory import TrajectoryGroup
from hone.traffic.groups import TrafficDataConfig, groups_from_traffic

# Traffic was served by older versions, so the sampler-vs-trainer gap measures its age (which the
# clipped IS loss corrects), not a bug: reported as traffic/served_*, not as the monitor's mismatch.
OFF_POLICY_BY_DESIGN = ("train/kl_sampler_trainer_k3", "train/logprob_abs_diff")

Score = Callable[[TrajectoryGroup], Awaitable[None]]


@dataclass(frozen=True)
class TrafficTrainConfig:
    data: TrafficDataConfig = field(default_factory=TrafficDataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(learning_rate=5e-5))


async def train_from_traffic(backend: Any, name: str, config: TrafficTrainConfig = TrafficTrainConfig(), score: Score | None = None) -> dict[str, float]:
    """One optimizer step of `name` on its logged traffic with feedback; the metrics say what was
    used, dropped (stale, a task seen once) and penalised (malformed), and `reward/mean` is the
    rewards trained on (feedback, penalties, judge scores). No usable group: no step."""
    completions, feedback = await backend.traffic(name)
    step = backend.model_info(name).step
    batch = groups_from_traffic(completions, feedback, step, config.data)
    judged = failed = 0
    if score is not None:
        for key, trajectories in batch.unscored.items():
            if len(trajectories) < config.data.min_group_size:
                continue
            group = TrajectoryGroup(trajectories=trajectories, metadata={"task_key": key, "judged": True})
            try:
                await score(group)
            except Exception:  # the judge's failure (an outage, an unusable answer) costs this group only
                failed += 1
                continue
            batch.groups.append(group)
            judged += len(trajectories)
    rewards = [t.reward for g in batch.groups for t in g.trajectories]
    feedback_metrics = {"reward/mean": fmean(rewards), "reward/std": pstdev(rewards), "rollouts/ok": float(len(rewards))} if rewards else {}
    metrics = await train_step(backend, name, batch.groups, config.train)
    for key in OFF_POLICY_BY_DESIGN:
        if key in metrics:
            metrics[f"traffic/served_{key.removeprefix('train/')}"] = metrics.pop(key)
    return {**batch.metrics(), "traffic/judged": float(judged), "traffic/judge_failed": float(failed), "traffic/step_before": float(step), **feedback_metrics, **metrics}


def judge_score(judge: JudgeConfig | Judge, rubric: str | None = None) -> Score:
    """A `score` hook: the relative judge rates a task's unscored replies against each other (hone.rewards.judge)."""
    shared = Judge(judge) if isinstance(judge, JudgeConfig) else judge  # one client and cache across groups and steps

    async def score(group: TrajectoryGroup) -> None:
        await judge_group(group, shared, rubric)

    return score
