"""`RunConfig(judge=...)`: a training run whose rewards come from a judge over HTTP, not from the env."""

import asyncio
import json
from pathlib import Path

from hone.rl.loop import RunConfig, run_training

from ..rl.toy_env import ToyEnv


def test_a_run_trains_on_judge_scores_and_logs_judge_cost_and_agreement(stand_in, config, tmp_path):
    run = RunConfig(
        out_dir=str(tmp_path / "run"), base_model="tiny", steps=2, group_size=3, groups_per_step=2,
        learning_rate=1e-2, lora_rank=0, show_progress=False, judge=config,
    )
    history = asyncio.run(run_training(ToyEnv(), run)).history
    assert [h["step"] for h in history] == [1, 2]
    # the stand-in scores attempt ids 1, 2, 3 as 1.0, 0.5, 0.333: mean 0.611 whatever the env said
    assert all(abs(h["reward/mean"] - (1.0 + 0.5 + 0.333) / 3) < 1e-3 for h in history)
    assert all(h["judge/calls"] >= 1 and h["judge/prompt_tokens"] > 0 for h in history)
    assert all(h["judge/pairs"] >= 0 and "judge/agreement" in h for h in history)
    assert len(stand_in.requests) >= 4  # one call per group per step (no cache hits: attempts differ)
    lines = [json.loads(line) for line in Path(run.out_dir, "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["train/groups_used"] == 2
