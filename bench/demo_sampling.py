"""Benchmark: `hone demo`'s sampling time with n-gram speculation off and on, same run, same machine.

The demo's RL steps sample 4 inbox questions x 6 attempts at temperature 0.8, each attempt a
multi-turn agent (search, read, answer) through the OpenAI-compatible client, on the engine a
trainable model samples with (the default engine: fp32 on an AVX2 CPU, the LoRA adapter unmerged).
This script builds that model as `hone demo` does (LoRA rank 16, seed 0; fp32 training), gives it
the demo's supervised warm start (`--demonstrations` worked episodes, 1 epoch; the demo uses 96),
saves that state, and then, for each arm, loads the same state into a backend whose engine has
speculation off or on and samples the first `--steps` RL steps of the demo (the same tasks and
per-rollout seeds the loop uses: a seed gives the same tokens with and without drafts, so both
arms sample the same tokens). No training step runs between them: the figure is the sampling
phase alone (`time/sample` in a run's metrics.jsonl), the part speculation can change.

Run: .venv/bin/python bench/demo_sampling.py [--steps 2] [--demonstrations 32] [--threads 2]
Writes bench/results/demo_sampling.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the engine's worker thread gets --threads (see bench/engine.py)

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from common import machine

from hone.backends.local import LocalBackend
from hone.demo import _demonstrations
from hone.engine.speculation import SpeculationConfig
from hone.envs.inbox import InboxEnv
from hone.rl.capture import play
from hone.rl.gather import GatherConfig, gather_groups
from hone.rl.loop import RunConfig, make_model, rollout_seed, tasks_for_step
from hone.rl.sft import supervised_warm_start

RESULTS = Path(__file__).parent / "results" / "demo_sampling.json"
# `hone demo`'s defaults (hone/cli.py) but bf16 autocast, which only the training matmuls use (the
# engine samples in its own dtype either way): on an AVX2-only CPU bf16 training is many times
# slower, and 32 worked episodes had not finished in 14 min
DEMO = RunConfig(group_size=6, groups_per_step=4, learning_rate=2e-4, lora_rank=16, temperature=0.8, seed=0, autocast_bf16=False,
                 show_progress=False)


def backend_for(spec: SpeculationConfig | None, threads: int) -> LocalBackend:
    return LocalBackend(engine_options={"speculation": spec, "num_threads": threads})


async def warm_start(env: InboxEnv, state: Path, demonstrations: int, threads: int) -> float:
    backend = backend_for(None, threads)
    try:
        model = make_model("inbox-agent", DEMO, backend)
        started = time.perf_counter()
        await supervised_warm_start(model.backend, model.name, None, _demonstrations(env, demonstrations, DEMO.seed),
                                    epochs=1, learning_rate=1e-3, batch_size=8, seed=DEMO.seed)
        await model.save_state(state)
        return time.perf_counter() - started
    finally:
        backend.close()


async def sample_steps(env: InboxEnv, state: Path, steps: int, threads: int) -> dict[str, list[dict]]:
    """Each step sampled by the engine without speculation, then by the one with it (alternating,
    so a slower minute of the machine falls on both arms)."""
    arms = {"off": None, "on": SpeculationConfig()}
    backends = {name: backend_for(spec, threads) for name, spec in arms.items()}
    try:
        models = {name: make_model("inbox-agent", DEMO, backend) for name, backend in backends.items()}
        for model in models.values():
            await model.load_state(state, with_optimizer=False)
        tasks = list(env.train_tasks())
        gather = GatherConfig(group_size=DEMO.group_size, concurrency=DEMO.concurrency, show_progress=False)
        rows: dict[str, list[dict]] = {name: [] for name in arms}
        for step in range(steps):
            batch = list(enumerate(tasks_for_step(tasks, step, DEMO.groups_per_step, DEMO.seed)))
            for name, model in models.items():
                rows[name].append(await sample_step(env, model, batch, step, gather))
                print("speculation", name, rows[name][-1], flush=True)
        return rows
    finally:
        for backend in backends.values():
            backend.close()


async def sample_step(env: InboxEnv, model, batch: list, step: int, gather: GatherConfig) -> dict:
    """One RL step's rollouts as the training loop samples them; their wall time and token counts."""
    client = model.openai_client()

    async def rollout(task_and_index, attempt: int):
        task_index, task = task_and_index
        seed = rollout_seed(DEMO.seed, step, task_index, attempt)
        return await play(env, model.backend, client, model.name, task, seed=seed, temperature=DEMO.temperature)

    started = time.perf_counter()
    groups = await gather_groups(batch, rollout, gather)
    wall = time.perf_counter() - started
    trajectories = [t for g in groups for t in g.trajectories]
    turns = [turn for t in trajectories for turn in t.turns]
    return {"step": step, "sample_s": round(wall, 1), "completion_tokens": sum(len(t.completion_tokens) for t in turns),
            "prompt_tokens": sum(len(t.prompt_tokens) for t in turns), "turns": len(turns),
            "reward": round(sum(t.reward for t in trajectories) / len(trajectories), 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--demonstrations", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    env = InboxEnv(seed=DEMO.seed)
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "sft_state"
        sft_s = asyncio.run(warm_start(env, state, args.demonstrations, args.threads))
        print(f"warm start on {args.demonstrations} worked episodes: {sft_s:.0f} s", flush=True)
        arms = asyncio.run(sample_steps(env, state, args.steps, args.threads))
    total = {name: sum(r["sample_s"] for r in rows) for name, rows in arms.items()}
    result = {
        "machine": machine(), "demo_config": {k: getattr(DEMO, k) for k in ("group_size", "groups_per_step", "temperature", "lora_rank", "autocast_bf16")},
        "demonstrations": args.demonstrations, "speculation": vars(SpeculationConfig()), "steps": arms,
        "sample_s": {k: round(v, 1) for k, v in total.items()}, "speedup": round(total["off"] / total["on"], 2),
        "same_tokens": [r["completion_tokens"] for r in arms["off"]] == [r["completion_tokens"] for r in arms["on"]],
    }
    print(json.dumps(result, indent=1))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
