"""`hone export NAME@STEP --backend URL`: a model trained on a real `hone serve` is taken away as a
folder transformers loads, holding the weights the server samples from."""

from __future__ import annotations

import asyncio
import io
import sys
import zipfile
from pathlib import Path

import httpx
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from hone.cli import app
from hone.rl.loop import RunConfig, run_training
from hone.types import SamplingParams

TOY_ENV = Path(__file__).parents[1] / "rl" / "toy_env.py"
sys.path.insert(0, str(TOY_ENV.parent))
from toy_env import ToyEnv  # noqa: E402


def test_a_servers_name_at_step_exports_with_the_weights_it_samples_from(service, tmp_path):
    key = service.new_key()
    backend = service.backend(key)
    config = RunConfig(out_dir=str(tmp_path / "run"), base_model="tiny", steps=2, groups_per_step=2, group_size=4, lora_rank=0, learning_rate=3e-2, seed=3, show_progress=False)
    asyncio.run(run_training(ToyEnv(), config, backend=backend))

    # the archive is the weights, config, tokenizer and state: no optimizer or RNG state
    checkpoint = max(asyncio.run(backend.list_checkpoints("policy")), key=lambda c: c["step"])["checkpoint"]
    answer = httpx.get(f"{service.url}/v1/hone/models/policy/checkpoints/{checkpoint}/archive", headers={"Authorization": f"Bearer {key}"}, timeout=60)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip"
    names = set(zipfile.ZipFile(io.BytesIO(answer.content)).namelist())
    assert {"model.safetensors", "config.json", "trainer_state.json", "tokenizer.json"} <= names
    assert not names & {"optimizer.pt", "rng.pt"}

    out = tmp_path / "exported"
    done = CliRunner().invoke(app, ["export", "policy@2", "--backend", service.url, "--format", "hf", "--out", str(out)], env={"HONE_API_KEY": key})
    assert done.exit_code == 0, done.output + done.stderr
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)

    # the server's sampled logprobs (bf16 body, fp32 head) are the exported weights' own
    tokenizer = backend.tokenizer("policy")
    prompt = tokenizer.encode("Write something")
    [sample] = asyncio.run(backend.sample("policy", prompt, 1, SamplingParams(max_tokens=8, temperature=1.0, seed=2)))
    with torch.no_grad():
        logits = model(torch.tensor([prompt + sample.tokens])).logits[0, len(prompt) - 1 : -1].float()
    exported = torch.log_softmax(logits, -1).gather(1, torch.tensor(sample.tokens).unsqueeze(1)).squeeze(1)
    assert (exported - torch.tensor(sample.logprobs)).abs().max() < 0.1

    # another tenant's model, and a step the model never saved: one sentence each
    stranger = CliRunner().invoke(app, ["export", "policy@2", "--backend", service.url, "--out", str(tmp_path / "x")], env={"HONE_API_KEY": service.new_key()})
    assert stranger.exit_code == 2 and "policy" in " ".join((stranger.output + stranger.stderr).split())
    missing = CliRunner().invoke(app, ["export", "policy@7", "--backend", service.url, "--out", str(tmp_path / "y")], env={"HONE_API_KEY": key})
    said = " ".join((missing.output + missing.stderr).split())
    assert missing.exit_code == 2 and "has no checkpoint of step 7 (it keeps steps: 1, 2)" in said, said
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    stepped = CliRunner().invoke(app, ["export", "policy", "--step", "1", "--backend", service.url, "--out", str(tmp_path / "z")], env={"HONE_API_KEY": key})
    assert stepped.exit_code == 2 and "name the checkpoint as NAME@STEP (e.g. policy@1)" in " ".join((stepped.output + stepped.stderr).split())
