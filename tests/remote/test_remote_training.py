"""hone's training loop, unchanged, against a real `hone serve --home` on 127.0.0.1 through RemoteBackend."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from hone.backends.remote import CHECKPOINT_FILE
from hone.errors import AuthenticationError, InvalidRequestError, ModelNotFoundError
from hone.rl.loop import RunConfig, run_training
from hone.types import AdamParams, Datum, SamplingParams

from .proxy import FlakyProxy

TOY_ENV = Path(__file__).parents[1] / "rl" / "toy_env.py"
sys.path.insert(0, str(TOY_ENV.parent))
from toy_env import ToyEnv  # noqa: E402

DATUM = Datum.from_sequence([11, 12, 13, 14], [0, 0, 1, 1], sampler_logprobs=[0.0, 0.0, -5.0, -5.0], advantages=[0.0, 0.0, 1.0, 1.0])


def toy_config(out: Path, steps: int = 2) -> RunConfig:
    return RunConfig(
        out_dir=str(out), base_model="tiny", steps=steps, groups_per_step=2, group_size=4, lora_rank=0,
        learning_rate=3e-2, seed=3, concurrency=8, show_progress=False,
    )  # fmt: skip


def pointer(out: Path, step: int) -> dict:
    return json.loads((out / "checkpoints" / f"step_{step:06d}" / "trainer" / CHECKPOINT_FILE).read_text())


def test_the_training_loop_runs_through_remote_backend_and_checkpoints_on_the_server(service, tmp_path):
    backend = service.backend()
    result = asyncio.run(run_training(ToyEnv(), toy_config(tmp_path), backend=backend))

    assert [row["step"] for row in result.history] == [1, 2]
    assert all(row["rollouts/ok"] == 8 and row["train/skipped"] == 0 for row in result.history)
    last = pointer(tmp_path, 2)
    assert last["model"] == "policy" and last["step"] == 2 and last["base_url"] == service.url
    assert backend.model_info("policy").step == 2  # two optimizer steps on the server, no more
    saved = asyncio.run(backend.list_checkpoints("policy"))
    assert last["checkpoint"] in {c["checkpoint"] for c in saved}

    # the low-level sampler and the tokenizer answer as LocalBackend's do
    prompt = backend.tokenizer("policy").encode("Write something")
    sequences = asyncio.run(backend.sample("policy", prompt, 2, SamplingParams(max_tokens=4, seed=1)))
    assert len(sequences) == 2 and all(0 < len(s.tokens) == len(s.logprobs) <= 4 for s in sequences)

    # the checkpoint is servable by name the moment it is written, through the official client
    client = backend.openai_client_sync()
    reply = client.chat.completions.create(model="policy@2", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert reply.choices[0].message is not None
    backend.close()


def test_a_killed_client_resumes_from_the_server_checkpoint(service, tmp_path):
    steps, out = 4, tmp_path / "run"
    env = {**os.environ, "HONE_API_KEY": service.new_key(), "TOKENIZERS_PARALLELISM": "false"}
    command = [
        sys.executable, "-m", "hone.cli", "train", str(TOY_ENV), "--model", "tiny", "--lora-rank", "0", "--lr", "3e-2",
        "--steps", str(steps), "--group-size", "4", "--groups-per-step", "2", "--seed", "3", "--out", str(out),
        "--backend", service.url,
    ]  # fmt: skip

    # SIGKILL the client right after its first checkpoint lands (the server keeps running)
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out / "checkpoints" / "step_000001"
    deadline = time.time() + 120
    while not first.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.01)
    assert first.exists(), "the client never wrote its first checkpoint"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "checkpoints" / f"step_{steps:06d}").exists()

    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from step" in resumed.stdout

    metric_steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metric_steps == list(range(1, steps + 1))  # none lost, none repeated
    backend = service.backend(key=env["HONE_API_KEY"])
    # the server rolled back to the checkpoint it resumed from, so it made exactly `steps` optimizer steps
    assert backend.model_info("policy").step == steps == pointer(out, steps)["step"]


def test_a_late_server_and_a_lost_response_are_retried_and_applied_once(service):
    # the proxy's port refuses connections for 1 s, and the first optim_step's answer is lost after
    # the server applied it: the retry carries the same request id, so the step counts once
    proxy = FlakyProxy(service.port, listen_after_s=1.0, drop_response_to=b"/optim_step").start()
    try:
        backend = service.backend(url=f"http://127.0.0.1:{proxy.port}")
        backend.add_model("flaky", "tiny", full_finetune=True)  # retried until the port opens

        async def one_step():
            await backend.forward_backward("flaky", [DATUM], "cispo")
            return await backend.optim_step("flaky", AdamParams(learning_rate=1e-3))

        metrics = asyncio.run(one_step())
        assert isinstance(metrics, dict)
        assert proxy.dropped_responses == 1
        assert backend.model_info("flaky").step == 1  # applied once, not twice
    finally:
        proxy.stop()


def test_permanent_failures_raise_one_clear_sentence(service):
    backend = service.backend()
    with pytest.raises(InvalidRequestError, match="name") as caught:
        backend.add_model("../escape", "tiny")
    assert caught.value.status_code == 400 and "\n" not in str(caught.value)
    assert backend.list_models() == []  # nothing was created
    with pytest.raises(ModelNotFoundError):
        asyncio.run(backend.optim_step("no-such-model", AdamParams()))
    with pytest.raises(InvalidRequestError, match="LocalBackend"):
        asyncio.run(backend.forward_backward("no-such-model", [DATUM], loss=lambda *a: None))

    wrong = service.backend(key="hone-sk-not-a-real-key")
    with pytest.raises(AuthenticationError, match="HONE_API_KEY") as refused:
        wrong.list_models()
    assert refused.value.status_code == 401

    # the official client with the same key gets the same 401, not a retry loop
    with pytest.raises(openai.AuthenticationError):
        wrong.openai_client_sync().models.list()
