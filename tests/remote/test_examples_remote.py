"""A user's training script runs unchanged against `hone serve`: only --backend and the key differ."""

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "calculator_agent.py"


def test_the_calculator_example_trains_on_the_server_unchanged(service):
    key = service.new_key()
    command = [sys.executable, str(EXAMPLE), "--backend", service.url, "--model", "tiny", "--steps", "2", "--questions", "2", "--group-size", "2"]
    env = {**os.environ, "HONE_API_KEY": key, "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("step ") == 2
    assert service.backend(key=key).list_models() == ["calculator-agent"]  # trained there, under this tenant
