"""Training raises reward on real tasks: the toy task on the tiny model, the tool-call task on the embedded one."""

import asyncio
from statistics import fmean

import pytest

from hone.envs.toolcall import ToolCallEnv
from hone.rl.loop import RunConfig, run_training

from .toy_env import ToyEnv


def test_grpo_drives_the_toy_reward_from_chance_to_near_perfect(tmp_path):
    config = RunConfig(
        out_dir=str(tmp_path), base_model="tiny", steps=25, group_size=8, groups_per_step=4,
        learning_rate=3e-2, lora_rank=0, show_progress=False,
    )
    history = asyncio.run(run_training(ToyEnv(), config)).history
    rewards = [h["reward/mean"] for h in history]
    # about 1 token in 8 is rewarded at random initialisation; the trained policy writes almost only those
    assert fmean(rewards[:3]) <= 0.2, rewards
    assert fmean(rewards[-3:]) >= 0.8, rewards
    assert len(history) == 25 and history[-1]["step"] == 25


@pytest.mark.slow
def test_grpo_raises_the_embedded_models_valid_tool_call_rate(tmp_path):
    config = RunConfig(
        out_dir=str(tmp_path), steps=4, group_size=8, groups_per_step=4, learning_rate=2e-4, lora_rank=16,
        validate_every=4, show_progress=False,  # before and after: 20 greedy validation prompts, ~15 s each time
        report_every_s=0,  # the page once, at the end: each rewrite draws its plots for ~2.5 s on 2 cores
    )
    history = asyncio.run(run_training(ToolCallEnv(), config)).history
    rewards = [h["reward/mean"] for h in history if "reward/mean" in h]
    # starts near 25% valid calls (one worked example in the prompt); a clear margin after 4 steps
    # (bench/second_model.py's first 4 steps, the same settings, AMD EPYC: 0.28 0.47 0.66 0.88, first
    # two 0.38, last two 0.77; this test, 2026-12-02: 0.22 0.38 0.72 0.91, first two 0.30, last two 0.81)
    assert fmean(rewards[-2:]) >= fmean(rewards[:2]) + 0.25, rewards
    # ... without losing ground on prompts it never trained on, and a healthy run raises no warning.
    # Greedy validation starts at ~85% of 20 held-out prompts, so the 4 steps' gain there is a prompt or
    # none (85 -> 90 and 85 -> 85 in two runs of the same code, 2026-12-02: batches form by timing and
    # bf16 rounds by batch size, so runs differ); a strict rise would be a coin flip, not a property
    validation = [h["validation/success"] for h in history if "validation/success" in h]
    assert len(validation) == 2 and validation[-1] >= validation[0], validation
    assert not [h["warnings"] for h in history if h.get("warnings")]
