"""Rewards beyond code: a relative LLM judge (RULER-style) and ways to combine it with code rewards.

This room scores trajectories that already exist; it knows nothing of sampling or training. The
judge is reached over the OpenAI chat API only, so any endpoint works, hone's own included.

    judge = Judge(JudgeConfig(base_url="http://127.0.0.1:8000/v1", model="smollm2-135m"))
    groups = await gather_groups(tasks, rollout, gather_config)
    metrics = await judge_groups(groups, judge, gather_config=gather_config)   # judge/... metrics
    # or, per group: await judge_group(group, judge, set_reward=False); combine_rewards(group, "tiebreak")
"""

from hone.rewards.agreement import pair_agreements
from hone.rewards.combine import combine_rewards
from hone.rewards.judge import Judge, JudgeConfig, JudgeError, JudgeResult, judge_group, judge_groups
from hone.rewards.prompt import DEFAULT_RUBRIC, JudgePrompt, build_judge_prompt, parse_scores
from hone.rewards.scorer import judge_scorer

__all__ = [
    "DEFAULT_RUBRIC",
    "Judge",
    "JudgeConfig",
    "JudgeError",
    "JudgePrompt",
    "JudgeResult",
    "build_judge_prompt",
    "combine_rewards",
    "judge_group",
    "judge_groups",
    "judge_scorer",
    "pair_agreements",
    "parse_scores",
]
