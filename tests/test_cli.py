"""The `hone` command itself: quick to answer, whatever the command."""

import os
import subprocess
import sys

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_the_cli_answers_help_and_version_without_loading_torch():
    # hone --help used to import torch and transformers (3.7 s here); the CLI imports them per command
    done = subprocess.run([sys.executable, "-c", "import sys, hone.cli; print('torch' in sys.modules)"], capture_output=True, text=True, env=ENV, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
    version = subprocess.run([sys.executable, "-m", "hone.cli", "--version"], capture_output=True, text=True, env=ENV, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("hone 0.")
