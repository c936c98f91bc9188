"""`hone demo` end to end with the tiny model: it runs, writes a valid results.json and a readable
report, and a second run with the same --out resumes instead of starting over."""

import json
import math
import os
import subprocess
import sys

import pytest

REQUIRED = {"baseline_success", "final_success", "baseline_ci95", "final_ci95", "steps", "wall_s"}


def run_demo_cli(out, *extra):
    command = [sys.executable, "-m", "hone.cli", "demo", "--model", "tiny", "--out", str(out),
               "--steps", "2", "--group-size", "2", "--groups-per-step", "2", "--eval-limit", "6", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    done = run_demo_cli(out)
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done.stdout


def test_results_json_has_the_promised_fields_with_sane_values(demo_out):
    out, _ = demo_out
    results = json.loads((out / "results.json").read_text())
    assert REQUIRED <= results.keys()
    assert results["steps"] == 2 and results["eval_questions"] == 6
    for key in ("baseline", "final"):
        success, (low, high) = results[f"{key}_success"], results[f"{key}_ci95"]
        assert 0.0 <= low <= success <= high <= 1.0
        assert success * 6 == pytest.approx(round(success * 6))  # a count out of the 6 questions
    assert results["wall_s"] > 0 and math.isfinite(results["time_training_s"])
    assert results["time_sampling_s"] + results["time_training_s"] <= results["wall_s"]


def test_the_report_shows_curves_bars_and_trajectories(demo_out):
    out, stdout = demo_out
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2  # curves, before/after bars
    assert "Before training" in html and "After training" in html
    assert "search_inbox" in html  # trajectories are shown with their tool calls
    for picture in ("curves.png", "before_after.png"):
        assert (out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "success" in stdout and "95% CI" in stdout and "wall" in stdout


def test_rerunning_with_the_same_out_resumes_rather_than_repeating(demo_out):
    out, _ = demo_out
    before = json.loads((out / "results.json").read_text())
    again = run_demo_cli(out)
    assert again.returncode == 0, again.stdout + again.stderr
    after = json.loads((out / "results.json").read_text())
    assert after["baseline_success"] == before["baseline_success"]  # the cached baseline, not a new one
    metrics = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert [m["step"] for m in metrics] == [1, 2]  # no step trained twice
