"""Benchmark: the second packaged model (gemma3-270m, Gemma 3 270M base) beside the embedded one
(smollm2-135m, SmolLM2-135M-Instruct), on the same machine in one run.

1. Sampling speed: the engine alone (bf16 body, fp32 head, the defaults), distinct 64-token
   prompts, 128 new tokens each, temperature 1, no EOS, at batch 1 and 32; best of --repeats,
   tokens/s = sampled tokens / wall time, prefill included.
2. Tool calls with hone's prompt conventions, and whether RL learns them: the toolcall task
   (hone.envs.toolcall: one question, four tools, the call taught in the system prompt with one
   worked example, tool_choice auto, 48 tokens) trained by GRPO from each base model with the
   settings of the embedded model's learning test (10 steps, 4 groups of 8, lr 2e-4, LoRA rank 16,
   seed 0). The reward is 1 for a reply that parses as a call to an offered tool, else 0
   (hone.envs.toolcall.reward_for), so a step's mean reward is its valid-call rate over 32 tries at
   temperature 1; under tool_choice auto the grammar completes a call once one is started, so it
   measures whether the model decides to call. The first step's rate is the untrained model's; the
   last three steps' mean is where training got to.

Run: .venv/bin/python bench/second_model.py [--repeats R] [--steps N] [--skip-training]
Writes bench/results/second_model.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the engine's worker sets its own thread count

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from statistics import fmean

from common import best_tokens_per_s, machine

RESULTS = Path(__file__).parent / "results" / "second_model.json"
MODELS = ("smollm2-135m", "gemma3-270m")
PROMPT_TOKENS, NEW_TOKENS = 64, 128


def speed(name: str, repeats: int) -> dict[str, float]:
    from hone.engine import Engine
    from hone.models import load_model
    from hone.types import SamplingParams

    loaded = load_model(name)
    stream = loaded.tokenizer.encode("Agents call tools, read what comes back and decide what to do next. " * 60, add_special_tokens=False)
    prompts = [stream[3 * i : 3 * i + PROMPT_TOKENS] for i in range(32)]
    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=1.0)
    result = {}
    with Engine(loaded.model, eos_token_ids=[], num_threads=os.cpu_count()) as engine:
        engine.sample_sync(prompts[0], 2, SamplingParams(max_tokens=8))  # warm-up
        for size in (1, 32):
            result[f"batch_{size}_tokens_per_s"] = best_tokens_per_s(engine, prompts[:size], params, repeats)
    result["parameters_millions"] = round(sum(p.numel() for p in loaded.model.parameters()) / 1e6, 1)
    result["vocabulary"] = loaded.model.config.vocab_size
    return result


def training(name: str, steps: int) -> dict:
    from hone.envs.toolcall import ToolCallEnv
    from hone.rl.loop import RunConfig, run_training

    with tempfile.TemporaryDirectory() as out:
        config = RunConfig(
            out_dir=out, base_model=name, steps=steps, group_size=8, groups_per_step=4, learning_rate=2e-4, lora_rank=16, seed=0, show_progress=False,
            validate_every=0,  # measured before runs validated; kept comparable
        )
        start = time.perf_counter()
        history = asyncio.run(run_training(ToolCallEnv(), config)).history
        elapsed = time.perf_counter() - start
    rewards = [round(h["reward/mean"], 3) for h in history]
    return {
        "reward_per_step": rewards,
        "first_step": rewards[0],
        "last_three_steps": round(fmean(rewards[-3:]), 3),
        "gain": round(fmean(rewards[-3:]) - rewards[0], 3),
        "minutes": round(elapsed / 60, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    result: dict = {"speed": {}, "toolcall_training": {}}
    if args.skip_training and RESULTS.exists():  # a speed-only rerun keeps the training figures
        result["toolcall_training"] = json.loads(RESULTS.read_text()).get("toolcall_training", {})
    for name in MODELS:
        result["speed"][name] = speed(name, args.repeats)
        print(name, json.dumps(result["speed"][name]), flush=True)
    for name in [] if args.skip_training else MODELS:
        result["toolcall_training"][name] = training(name, args.steps)
        print(name, json.dumps(result["toolcall_training"][name]), flush=True)
    result["machine"] = machine()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
