"""The scripts in examples/ run as a user would run them (tiny model, a step or two), and print
what they promise: one line per step whose figures agree with the script's own reward rules."""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

# examples/calculator_agent.py: print(f"step {step + 1}: reward {reward:.2f}, correct {correct:.0%}, {n:.0f} sequences trained")
CALCULATOR_LINE = re.compile(r"step (\d+): reward (\d+\.\d\d), correct (\d+)%, (\d+) sequences trained")
# examples/custom_loss.py: print(f"step {step + 1}: reward {mean:.2f}, loss {loss:+.4f}, e.g. {texts[0][:60]!r}")
CUSTOM_LOSS_LINE = re.compile(r"step (\d+): reward (\d\.\d\d), loss ([+-]\d+\.\d{4}), e\.g\. (.*)")


def run_example(name, *args, env=ENV):
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=300, env=env)


def parse(pattern: re.Pattern, stdout: str) -> list[tuple[str, ...]]:
    """Every stdout line that starts with 'step ', each matched whole by `pattern`."""
    lines = [line for line in stdout.splitlines() if line.startswith("step ")]
    rows = [pattern.fullmatch(line) for line in lines]
    assert all(rows), f"a step line is not in the promised format:\n{stdout}"
    return [row.groups() for row in rows]


def test_the_calculator_agent_trains_in_process():
    done = run_example("calculator_agent.py", "--model", "tiny", "--steps", "2", "--questions", "2", "--group-size", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = parse(CALCULATOR_LINE, done.stdout)
    assert [int(step) for step, *_ in rows] == [1, 2], done.stdout
    for _, reward, correct, trained in rows:
        reward, correct, trained = float(reward), int(correct) / 100, int(trained)
        # 2 questions x 2 tries = 4 tries a step: `correct` is a count out of 4
        assert correct in (0.0, 0.25, 0.5, 0.75, 1.0), done.stdout
        # a try's reward is 1.0 if correct, plus 0.1 for a well-formed call and 0.3 if the tool could
        # evaluate it: so correct <= mean reward <= correct + 0.4 (to the printed 2 decimals)
        assert correct - 0.005 <= reward <= correct + 0.4 + 0.005, done.stdout
        # whole groups of 2 are trained or dropped; with every reward 0 every group is uniform: none is
        assert trained in (0, 2, 4), done.stdout
        assert trained == 0 or reward > 0, done.stdout


def test_the_custom_loss_example_trains_and_saves_its_state(tmp_path):
    state = tmp_path / "state"
    done = run_example("custom_loss.py", "--model", "tiny", "--steps", "2", "--group-size", "2", "--out", str(state))
    assert done.returncode == 0, done.stderr[-2000:]
    rows = parse(CUSTOM_LOSS_LINE, done.stdout)
    assert [int(step) for step, *_ in rows] == [1, 2], done.stdout
    for _, reward, loss, example in rows:
        reward, loss = float(reward), float(loss)
        # a completion scores 0, 0.5 or 1: the mean of 2 is a multiple of 0.25
        assert reward in (0.0, 0.25, 0.5, 0.75, 1.0), done.stdout
        # REINFORCE on (reward - group mean): a group of equal rewards has no advantage, so no loss
        if reward in (0.0, 1.0):
            assert loss == 0.0, done.stdout
        assert isinstance(ast.literal_eval(example), str) and len(ast.literal_eval(example)) <= 60, done.stdout
    assert done.stdout.splitlines()[-1] == f"saved the adapter and optimizer state to {state}"
    # one forward_backward + optim_step per step: the saved trainer counted exactly 2 optimizer steps
    assert json.loads((state / "trainer_state.json").read_text())["step"] == 2
    assert (state / "adapter").is_dir() and (state / "optimizer.pt").is_file()
