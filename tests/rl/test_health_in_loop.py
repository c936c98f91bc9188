"""The loop validates, keeps the best checkpoint by validation, warns of reward hacking and stops on it."""

import asyncio
import json

import pytest

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


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """One run on the gamed reward with `stop_on=("hacking",)`: it climbs the reward until the warning stops it."""
    out = tmp_path_factory.mktemp("hackable")
    return out, asyncio.run(run_training(HackableEnv(), hackable_config(out, stop_on=("hacking",))))


def test_a_gamed_reward_warns_of_reward_hacking_within_two_validations_and_stops_there(stopped_run):
    out, result = stopped_run
    history = result.history
    assert result.stopped_by == "reward_hacking"
    stopped_at = history[-1]["step"]
    assert stopped_at < 16 and "reward_hacking" in warnings_by_step(history)[stopped_at]
    validation = {r["step"]: r["validation/success"] for r in history if "validation/success" in r}
    assert sorted(validation) == list(range(0, stopped_at + 1, 2))  # the baseline, then every 2 steps
    assert set(validation.values()) == {0.0}  # the reward never teaches the answer
    rewards = [r["reward/mean"] for r in history if "reward/mean" in r]
    # ... but it climbs, and the warning comes within two validation points (every 2 steps) of the climb
    rose_at = next(r["step"] for r in history if r.get("reward/mean", 0) >= rewards[0] + 0.1)
    assert stopped_at <= rose_at + 4, (warnings_by_step(history), rewards)
    warning = next(w for r in history for w in r.get("warnings", []) if w["code"] == "reward_hacking")
    assert "validation success went 0% → 0%" in warning["message"] and warning["advice"]
    # every health figure is logged on every training step
    for row in history[1:]:
        assert {"health/reply_tokens", "health/truncated", "health/diversity", "health/zero_variance_groups", "health/reward_se"} <= row.keys()
        if not row["train/skipped"]:  # a step whose groups all tied trains nothing and has no trainer figures
            assert {"train/entropy", "train/kl_sampler_trainer_k3", "train/logprob_abs_diff"} <= row.keys()
    # validation ties everywhere: the best checkpoint is the earliest of the best (the least trained on the gamed
    # reward), and retention kept it
    assert result.best_checkpoint is not None and result.best_checkpoint.name == "step_000002" and result.best_checkpoint.exists()
    page = (out / "report.html").read_text()
    assert "reward_hacking" in page and 'http-equiv="refresh"' not in page and "run stopped" in page


def test_a_rerun_after_the_stop_resumes_without_stopping_again_or_repeating_the_warning(stopped_run):
    out, result = stopped_run
    stopped_at = result.history[-1]["step"]
    resumed = asyncio.run(run_training(HackableEnv(), hackable_config(out, stop_on=("hacking",), steps=stopped_at + 2)))
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
