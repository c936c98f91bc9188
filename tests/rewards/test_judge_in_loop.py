"""`judge_scorer`: the relative judge as the training loop's scoring hook, over HTTP."""

import asyncio
import json
import math
from pathlib import Path

import pytest

from hone.rewards import judge_scorer
from hone.rl.gather import GatherConfig
from hone.rl.loop import RunConfig, run_training
from hone.rl.trajectory import TrajectoryGroup

from ..rl.toy_env import ToyEnv


@pytest.mark.parametrize(
    "env_rewards, agreement",
    [
        # the stand-in scores attempts 1, 2, 3 as 1.0, 0.5, 0.333: it ranks them first to last
        ((1.0, 0.5, 0.0), 1.0),  # the env ranks them the same way: all 3 pairs agree
        ((0.0, 0.5, 1.0), 0.0),  # the opposite way: none of the 3 does
        ((1.0, 0.0, 0.5), 2 / 3),  # (1,2) and (1,3) agree, (2,3) does not
    ],
)
def test_the_scorer_replaces_rewards_and_counts_pairs_the_judge_orders_like_the_env(stand_in, config, attempt, env_rewards, agreement):
    group = TrajectoryGroup(trajectories=[attempt("Archive the spam.", f"archive({i})", reward=r) for i, r in enumerate(env_rewards)])
    metrics = asyncio.run(judge_scorer(config)([group], GatherConfig()))
    assert [t.reward for t in group.trajectories] == [1.0, 0.5, 0.333]
    assert metrics["judge/pairs"] == 3  # 3 attempts with distinct env rewards: 3 choose 2 pairs
    assert metrics["judge/agreement"] == pytest.approx(agreement)


def test_pairs_whose_env_rewards_tie_are_not_counted(stand_in, config, attempt):
    group = TrajectoryGroup(trajectories=[attempt("Archive the spam.", f"archive({i})", reward=0.5) for i in range(3)])
    metrics = asyncio.run(judge_scorer(config)([group], GatherConfig()))
    assert metrics["judge/pairs"] == 0 and math.isnan(metrics["judge/agreement"])


def test_a_run_trains_on_judge_scores_and_logs_judge_cost_and_agreement(stand_in, config, tmp_path):
    run = RunConfig(
        out_dir=str(tmp_path / "run"), base_model="tiny", steps=2, group_size=3, groups_per_step=2,
        learning_rate=1e-2, lora_rank=0, show_progress=False,
    )
    history = asyncio.run(run_training(ToyEnv(), run, score=judge_scorer(config))).history
    assert [h["step"] for h in history] == [1, 2]
    # the stand-in scores attempt ids 1, 2, 3 as 1.0, 0.5, 0.333: mean 0.611 whatever the env said
    assert all(abs(h["reward/mean"] - (1.0 + 0.5 + 0.333) / 3) < 1e-3 for h in history)
    assert all(h["judge/calls"] >= 1 and h["judge/prompt_tokens"] > 0 for h in history)
    assert all("judge/pairs" in h and "judge/agreement" in h for h in history)
    assert len(stand_in.requests) >= 4  # one call per group per step (no cache hits: attempts differ)
    lines = [json.loads(line) for line in Path(run.out_dir, "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["train/groups_used"] == 2
