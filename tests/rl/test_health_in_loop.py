"""The loop validates, keeps the best checkpoint by validation, warns of reward hacking and stops on it."""

import asyncio
import json

from hone.rl.loop import RunConfig, run_training

from .hackable_env import HackableEnv
from .toy_env import ToyEnv


def hackable_config(tmp_path, **overrides):
    settings = dict(
        out_dir=str(tmp_path), base_model="tiny", steps=16, group_size=8, groups_per_step=4, learning_rate=5e-2,
        lora_rank=0, validate_every=2, show_progress=False,
    )
    return RunConfig(**{**settings, **overrides})


def warnings_by_step(history):
    return {row["step"]: [w["code"] for w in row["warnings"]] for row in history if row.get("warnings")}


def test_a_gamed_reward_warns_of_reward_hacking_within_a_few_validations(tmp_path):
    result = asyncio.run(run_training(HackableEnv(), hackable_config(tmp_path)))
    history = result.history
    validation = {r["step"]: r["validation/success"] for r in history if "validation/success" in r}
    assert sorted(validation) == [0, 2, 4, 6, 8, 10, 12, 14, 16]  # the baseline, every 2 steps, the last
    assert set(validation.values()) == {0.0}  # the reward never teaches the answer
    rewards = [r["reward/mean"] for r in history if "reward/mean" in r]
    assert rewards[-1] > rewards[0] + 0.3, rewards  # ... but it does climb
    hacking = [step for step, codes in warnings_by_step(history).items() if "reward_hacking" in codes]
    # it fires within two validation points (every 2 steps) of the reward clearly leaving its start
    rose_at = next(r["step"] for r in history if r.get("reward/mean", 0) >= rewards[0] + 0.1)
    assert hacking and hacking[0] <= rose_at + 4, (warnings_by_step(history), rewards)
    assert len(hacking) == 1  # printed once, when it starts
    warning = next(w for r in history for w in r.get("warnings", []) if w["code"] == "reward_hacking")
    assert "validation success went 0% → 0%" in warning["message"] and warning["advice"]
    assert validation[0] == 0.0 and history[0]["step"] == 0  # the baseline, before any training
    # every health figure is logged on every training step
    for row in history[1:]:
        assert {"health/reply_tokens", "health/truncated", "health/diversity", "health/zero_variance_groups", "health/reward_se"} <= row.keys()
        if not row["train/skipped"]:  # a step whose groups all tied trains nothing and has no trainer figures
            assert {"train/entropy", "train/kl_sampler_trainer_k3", "train/logprob_abs_diff"} <= row.keys()
    # validation ties everywhere: the best checkpoint is the earliest of the best (the least trained on the gamed
    # reward), and retention kept it
    assert result.best_checkpoint is not None and result.best_checkpoint.name == "step_000002" and result.best_checkpoint.exists()
    page = (tmp_path / "report.html").read_text()
    assert "reward_hacking" in page and 'http-equiv="refresh"' not in page


def test_stop_on_hacking_ends_the_run_at_the_warning_and_a_rerun_resumes_without_repeating_it(tmp_path):
    result = asyncio.run(run_training(HackableEnv(), hackable_config(tmp_path, stop_on=("hacking",))))
    assert result.stopped_by == "reward_hacking"
    stopped_at = result.history[-1]["step"]
    assert stopped_at < 16 and "reward_hacking" in warnings_by_step(result.history)[stopped_at]
    # the run resumes from its last checkpoint; the warning is still active, so it is not raised (or stopped on) again
    resumed = asyncio.run(run_training(HackableEnv(), hackable_config(tmp_path, stop_on=("hacking",), steps=stopped_at + 2)))
    assert resumed.resumed_from == stopped_at and resumed.stopped_by is None
    steps = [r["step"] for r in resumed.history]
    assert steps == sorted(set(steps)) and steps[-1] == stopped_at + 2
    codes = [c for codes in warnings_by_step(resumed.history).values() for c in codes]
    assert codes.count("reward_hacking") == 1


def test_an_environment_without_a_validation_split_trains_as_before(tmp_path):
    config = RunConfig(out_dir=str(tmp_path), base_model="tiny", steps=2, group_size=4, groups_per_step=2, learning_rate=1e-3, lora_rank=0, show_progress=False)
    history = asyncio.run(run_training(ToyEnv(), config)).history
    assert [r["step"] for r in history] == [1, 2] and not any("validation/success" in r for r in history)
    state = json.loads(next((tmp_path / "checkpoints").glob("step_000002")).joinpath("loop_state.json").read_text())
    assert state["best_metric"] == "reward/mean"
