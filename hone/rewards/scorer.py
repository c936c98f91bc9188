"""The relative judge as the training loop's scoring hook.

    result = await run_training(env, config, score=judge_scorer(JudgeConfig(base_url=..., model=...)))

Each step's groups are judged (rewards replaced by the judge's scores) and the step's metrics get
`judge/...`: cost, failures, and `judge/agreement`, how often the judge ordered two attempts as
the environment's own reward did (over `judge/pairs` pairs).
"""

from __future__ import annotations

from statistics import fmean

from hone.rewards.agreement import pair_agreements
from hone.rewards.judge import Judge, JudgeConfig, judge_groups
from hone.rl.gather import GatherConfig
from hone.rl.loop import ScoreHook
from hone.rl.trajectory import TrajectoryGroup


def judge_scorer(judge: JudgeConfig | Judge, rubric: str | None = None) -> ScoreHook:
    """A scoring hook that replaces env rewards with the judge's and reports its agreement with them."""
    shared = Judge(judge) if isinstance(judge, JudgeConfig) else judge  # one client and cache for the whole run

    async def score(groups: list[TrajectoryGroup], gather_config: GatherConfig) -> dict[str, float]:
        metrics = await judge_groups(groups, shared, rubric, gather_config=gather_config)
        pairs = [p for g in groups for p in pair_agreements(g)]
        metrics["judge/agreement"] = fmean(pairs) if pairs else float("nan")
        metrics["judge/pairs"] = float(len(pairs))
        return metrics

    return score
