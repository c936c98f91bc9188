"""A run killed with SIGKILL and re-run with the same command ends exactly where an uninterrupted one does."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

TOY_ENV = str(Path(__file__).with_name("toy_env.py"))
STEPS = 8


def train_command(out: Path) -> list[str]:
    return [
        sys.executable, "-m", "hone.cli", "train", TOY_ENV, "--model", "tiny", "--lora-rank", "0",
        "--lr", "3e-2", "--steps", str(STEPS), "--concurrency", "1", "--seed", "3", "--out", str(out),
    ]


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "checkpoints" / f"step_{STEPS:06d}" / "trainer" / "model.safetensors")


def metric_steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_run_killed_mid_step_resumes_without_losing_or_repeating_a_step(tmp_path):
    # One thread, fixed: MKL otherwise picks fewer threads when the machine is busy, which changes
    # summation order, then (rarely) a sampled token, and two uninterrupted runs would differ too.
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "MKL_DYNAMIC": "FALSE"}
    uninterrupted, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    subprocess.run(train_command(uninterrupted), check=True, env=env, capture_output=True)

    # start the same run, SIGKILL it right after its third checkpoint lands (so mid step 4)
    process = subprocess.Popen(train_command(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    third = killed / "checkpoints" / "step_000003"
    deadline = time.time() + 180
    while not third.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    assert third.exists(), "the run never reached its third checkpoint"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "checkpoints" / f"step_{STEPS:06d}").exists()

    resumed = subprocess.run(train_command(killed), check=True, env=env, capture_output=True, text=True)
    assert "resumed from step" in resumed.stdout

    assert metric_steps(killed) == list(range(1, STEPS + 1))  # none lost, none repeated
    a, b = final_weights(uninterrupted), final_weights(killed)
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= 1e-6, f"resumed weights differ by up to {worst}"
