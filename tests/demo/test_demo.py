"""`hone demo` end to end with the tiny model: it runs, writes a valid results.json (baselines, rules,
paired tests) and a readable report, and a second run with the same --out resumes instead of
starting over: no evaluation, warm start or step is done twice."""

import hashlib
import json
import math
import os
import subprocess
import sys

import pytest

REQUIRED = {"untrained_success", "final_success", "untrained", "final", "rules", "best_rule", "best_rule_success",
            "vs_untrained", "vs_best_rule", "validation", "chosen_on_validation", "task", "steps", "wall_s", "warnings"}


def run_demo_cli(out, *extra):
    command = [sys.executable, "-m", "hone.cli", "demo", "--model", "tiny", "--out", str(out),
               "--steps", "2", "--group-size", "2", "--groups-per-step", "2", "--eval-limit", "6",
               "--sft-demonstrations", "4", "--sft-epochs", "1", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


def fingerprint(path) -> tuple[str, int]:
    """(content hash, modification time in ns): equal only if the file was neither changed nor rewritten."""
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


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
    for key in ("untrained", "final"):
        success, (low, high) = results[key]["success"], results[key]["ci95"]
        assert 0.0 <= low <= success <= high <= 1.0
        assert success * 6 == pytest.approx(round(success * 6))  # a count out of the 6 questions
    assert results["best_rule_success"] == max(results["rules"].values())
    assert set(results["rules"]) >= {"snippet_echo", "snippet_value", "read_top_value", "newest_value", "careful_value", "common_answer", "candidate_list"}
    for key in ("vs_untrained", "vs_best_rule"):
        assert 0.0 <= results[key]["mcnemar"]["p_value"] <= 1.0 and results[key]["mcnemar"]["n"] == 6
    assert results["chosen_on_validation"] in ("sft", "rl")
    assert results["wall_s"] > 0 and math.isfinite(results["time_training_s"])
    assert results["time_sampling_s"] + results["time_training_s"] <= results["wall_s"]
    # the RL run's health: its warnings (each with a step and advice) and its own report page
    assert all({"step", "code", "message", "advice"} <= w.keys() for w in results["warnings"])
    assert (out / "run" / "report.html").exists()
    # trained in bf16 only where the CPU multiplies in it (emulated bf16 trained 18x slower than fp32)
    import torch

    from hone.hardware import bf16_is_native

    assert results["config"]["autocast_bf16"] is bf16_is_native(torch.device("cpu"))


def test_the_report_shows_curves_bars_rules_and_trajectories(demo_out):
    out, stdout = demo_out
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2  # curves, before/after bars
    assert "Before training" in html and "After training" in html
    assert "tools search_inbox, read_email; up to 6 turns" in html  # what the agent is given
    assert "rule: snippet_echo" in html and "McNemar" in html and "answer email read" in html
    for picture in ("curves.png", "before_after.png"):
        assert (out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = " ".join(stdout.split())  # rich wraps long lines
    assert "success" in text and "95% CI" in text and "wall" in text and "McNemar" in text


def test_rerunning_with_the_same_out_resumes_rather_than_repeating(demo_out):
    out, first_stdout = demo_out
    run = out / "run"
    checkpoints = sorted((run / "checkpoints").glob("step_*"))
    assert [c.name for c in checkpoints] == ["step_000001", "step_000002"]
    # what a re-run must leave alone: the cached baseline, each step's checkpoint, each step's metric line
    kept = [out / "untrained_test.json", out / "sft_validation.json", out / "sft_history.json", run / "metrics.jsonl",
            *(c / "loop_state.json" for c in checkpoints)]
    before = {path: fingerprint(path) for path in kept}
    results_before = json.loads((out / "results.json").read_text())

    again = run_demo_cli(out)
    assert again.returncode == 0, again.stdout + again.stderr

    # the untrained evaluation and the warm start were read back, not done again: the files were not even rewritten
    for path in (out / "untrained_test.json", out / "sft_validation.json", out / "sft_history.json"):
        assert fingerprint(path) == before[path], f"{path.name} was rewritten: its stage was done again"
    # no step was trained again: a re-trained step rewrites its checkpoint (a new folder) and logs
    # new timings (time/sample, time/step), so its checkpoint or its metric line would differ
    for checkpoint in checkpoints:
        loop_state = checkpoint / "loop_state.json"
        assert fingerprint(loop_state) == before[loop_state], f"{checkpoint.name} was written again: its step was trained again"
    assert sorted(c.name for c in (run / "checkpoints").glob("step_*")) == ["step_000001", "step_000002"]
    metrics = run / "metrics.jsonl"
    assert fingerprint(metrics)[0] == before[metrics][0], "metrics.jsonl changed: a step was trained again"  # rewritten on resume, same lines
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [1, 2]  # each step once
    # the step table is printed only for steps trained in this process: the first run printed two
    # rows, the resumed one none
    assert "t.step" in first_stdout and "t.step" not in again.stdout, again.stdout
    after = json.loads((out / "results.json").read_text())
    assert after["untrained_success"] == results_before["untrained_success"]
    # the training time comes from the two logged steps, which are the first run's
    assert after["time_training_s"] == results_before["time_training_s"]
    assert after["time_sampling_s"] == results_before["time_sampling_s"]
