"""The scripts in examples/ run as a user would run them (tiny model, a step or two)."""

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_example(name, *args, env=ENV):
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=300, env=env)


def test_the_calculator_agent_trains_in_process():
    done = run_example("calculator_agent.py", "--model", "tiny", "--steps", "2", "--questions", "2", "--group-size", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("step ") == 2 and "correct" in done.stdout


def test_the_custom_loss_example_trains_and_saves_its_state(tmp_path):
    done = run_example("custom_loss.py", "--model", "tiny", "--steps", "2", "--group-size", "2", "--out", str(tmp_path / "state"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("step ") == 2
    assert any((tmp_path / "state").iterdir())  # the saved adapter and optimizer state
