"""Benchmark: RL-style sampling (several attempts per prompt) with the samples of a prompt reading its
keys and values from one slot, against each reading its own copy, same run.

Workload: `--groups` prompts of the inbox agent (turn prompts of worked episodes, ~500-700 tokens
each: system prompt, tools, question, tool results), `--n` samples each at T = 0.8, up to
`--max-tokens` new tokens, all at once: a GRPO step's rollouts of one turn. Both arms are the same
engine (the embedded model, its default dtype, prefix cache off so nothing is reused between
rounds) with `shares_prefixes` on or off; arms alternate over `--rounds`. Reported: the median
wall time of a round (prefill included, the same in both), sampled tokens per second, decode steps,
and whether the two arms drew the same tokens (they must: the same seeds, the same arithmetic).

Run: .venv/bin/python bench/shared_prefix.py [--groups 4] [--n 8] [--max-tokens 64] [--rounds 3]
Writes bench/results/shared_prefix.json (shared_prefix_avx512bf16.json on a CPU with native bf16).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the worker thread gets --threads; see bench/engine.py

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

from common import machine, native_bf16_suffix
from prefix_cache import turn_prompts

from hone.engine import Engine
from hone.models import load_model
from hone.types import SamplingParams

RESULTS = Path(__file__).parent / "results" / "shared_prefix.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    loaded = load_model("smollm2-135m")
    episodes = turn_prompts(loaded.tokenizer, episodes=args.groups)
    prompts = [turns[min(1, len(turns) - 1)] for turns in episodes][: args.groups]  # each episode's second turn: a tool result in it
    params = [SamplingParams(max_tokens=args.max_tokens, temperature=0.8, seed=i) for i in range(len(prompts))]

    async def round_(engine):
        return await asyncio.gather(*[engine.sample(p, args.n, sp) for p, sp in zip(prompts, params)])

    engine = Engine(loaded.model, eos_token_ids=[], prefix_cache_bytes=0, num_threads=args.threads,  # every sample runs to --max-tokens
                    max_batch_size=max(32, args.groups * args.n))
    try:
        asyncio.run(round_(engine))  # warm-up: kernels, cache growth
        times: dict[bool, list[float]] = {True: [], False: []}
        tokens: dict[bool, list[list[int]]] = {}
        steps: dict[bool, int] = {}
        for _ in range(args.rounds):
            for shares in (True, False):
                engine._runner.shares_prefixes = shares
                before = engine.stats["decode_steps"]
                start = time.perf_counter()
                results = asyncio.run(round_(engine))
                times[shares].append(time.perf_counter() - start)
                steps[shares] = engine.stats["decode_steps"] - before
                tokens[shares] = [s.tokens for r in results for s in r]
        dtype = str(engine.dtype).removeprefix("torch.")
    finally:
        engine.close()
    sampled = sum(len(t) for t in tokens[True])
    arms = {}
    for shares, name in ((True, "shared"), (False, "own copies")):
        wall = statistics.median(times[shares])
        arms[name] = {"median_s": round(wall, 3), "rounds_s": [round(t, 3) for t in times[shares]],
                      "tokens_per_s": round(sampled / wall, 1), "decode_steps": steps[shares]}
        print(f"{name:11s} {wall:7.2f} s a round ({arms[name]['tokens_per_s']:6.1f} tok/s, {steps[shares]} decode steps)", flush=True)
    speedup = arms["own copies"]["median_s"] / arms["shared"]["median_s"]
    same = tokens[True] == tokens[False]
    print(f"shared / own copies: {speedup:.2f}x faster; same tokens: {same}; prompt lengths {[len(p) for p in prompts]}")
    path = RESULTS.with_name(f"shared_prefix{native_bf16_suffix()}.json")
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({
        "machine": machine(), "dtype": dtype, "groups": len(prompts), "n": args.n, "max_tokens": args.max_tokens,
        "prompt_tokens": [len(p) for p in prompts], "sampled_tokens": sampled, "arms": arms,
        "speedup": round(speedup, 3), "same_tokens": same,
    }, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
