"""The demo loop (evaluate, train, evaluate, report) runs end to end against a real server."""

import json
import os
import subprocess
import sys

from rich.console import Console

from hone.demo import DemoConfig, run_demo
from hone.envs.inbox import InboxEnv
from hone.rl.loop import RunConfig


def test_the_demo_loop_runs_end_to_end_through_remote_backend(service, tmp_path):
    backend = service.backend()
    run = RunConfig(
        out_dir=str(tmp_path), base_model="tiny", steps=1, group_size=2, groups_per_step=2, lora_rank=0,
        learning_rate=1e-3, seed=0, show_progress=False,
    )  # fmt: skip
    env = InboxEnv(seed=0)
    config = DemoConfig(run=run, eval_limit=2, sft_demonstrations=4, sft_epochs=1)
    results = run_demo(env, config, backend=backend, console=Console(quiet=True))

    assert results["steps"] == 1 and results["eval_questions"] == 2
    assert json.loads((tmp_path / "results.json").read_text())["final_success"] == results["final_success"]
    assert (tmp_path / "report.html").exists()
    pointer = json.loads((tmp_path / "run" / "checkpoints" / "step_000001" / "trainer" / "remote_checkpoint.json").read_text())
    # the server took one optimizer step per warm-start batch and per step the run trained, none for
    # a skipped step (every group's rewards equal: nothing to learn, so no optim_step), and none twice
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1]
    trained = sum(1 for m in metrics if m["train/skipped"] == 0)
    warm_start = len(json.loads((tmp_path / "sft_history.json").read_text()))
    assert warm_start == 1  # 4 demonstrations, 8 to a batch, one epoch
    assert backend.model_info("inbox-agent").step == warm_start + trained == pointer["step"], (trained, pointer)
    backend.close()


def test_hone_demo_with_backend_url_and_hone_api_key_trains_on_the_server(service, tmp_path):
    key = service.new_key()
    command = [
        sys.executable, "-m", "hone.cli", "demo", "--model", "tiny", "--backend", service.url, "--steps", "1",
        "--group-size", "2", "--groups-per-step", "2", "--eval-limit", "1", "--lora-rank", "0", "--out", str(tmp_path),
        "--sft-demonstrations", "2", "--sft-epochs", "1",
    ]  # fmt: skip
    env = {**os.environ, "HONE_API_KEY": key, "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "results.json").exists()
    assert service.backend(key=key).list_models() == ["inbox-agent"]  # the model lives on the server, under this key
