"""Benchmark: the engine's prefix cache on an agent's multi-turn prompts, on against off, same run.

Workload: `--episodes` worked inbox episodes (hone.envs.inbox.demonstrations, careful policy), each
replayed turn by turn the way the agent sends them: the prompt of turn k is the chat rendering of
the episode's messages before its k-th reply, with the agent's tools and tool choice. Each round
sends every episode's turn-k prompt at once (as the evaluation does, 32 at a time) and samples 32
greedy tokens. The next prompt holds the demonstration's reply, not the sampled one, so only the
part before each reply can be reused: the agent itself, whose replies are its own samples, reuses
more.

The first round finds nothing cached (the warm-up's prompts share no start with the agent's), as
an evaluation's first 32 questions do: there the cache-on engine prefills the start the prompts
share (system prompt and tools) once and continues it for each.

Reported for both engines: wall time (and the first round's), prompt positions computed, prefix
hits and positions reused, the engine's dtype, and how many greedy completions are token-identical
between the two (bf16 rounding differs between a whole prefill and a continued one, so a near-tie
can flip; fp32 equality is a unit test).

Run: .venv/bin/python bench/prefix_cache.py [--episodes 32] [--threads 2]
Writes bench/results/prefix_cache.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the worker thread gets --threads; see bench/engine.py

import argparse
import asyncio
import json
import random
import time
from pathlib import Path

from common import machine

from hone.chat.render import render_prompt
from hone.engine import Engine
from hone.envs.inbox.data import make_splits
from hone.envs.inbox.demonstrations import demonstration
from hone.models import load_model
from hone.types import SamplingParams

RESULTS = Path(__file__).parent / "results" / "prefix_cache.json"
PARAMS = SamplingParams(max_tokens=32, temperature=0.0)


def turn_prompts(tokenizer, episodes: int, seed: int = 0) -> list[list[list[int]]]:
    """Per episode, the token ids of the prompt before each of its replies."""
    questions = list(make_splits(seed).train)
    random.Random(seed).shuffle(questions)
    out = []
    for question in questions:
        worked = demonstration(question, careful=True)
        if worked is None:
            continue
        messages = worked["messages"]
        replies = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        out.append([
            render_prompt(tokenizer, messages[:i], tools=worked["tools"], tool_choice=choice).tokens
            for i, choice in zip(replies, worked["tool_choice"])
        ])
        if len(out) == episodes:
            break
    return out


def replay(engine: Engine, episodes: list[list[list[int]]]) -> tuple[list[float], list[list[int]]]:
    """Wall seconds of each round (all episodes' turn k at once), and each completion's tokens."""
    completions, walls = [], []

    async def round_of(prompts):
        return await asyncio.gather(*(engine.sample(p, 1, PARAMS) for p in prompts))

    for turn in range(max(len(e) for e in episodes)):
        prompts = [e[turn] for e in episodes if turn < len(e)]
        start = time.perf_counter()
        completions += [r[0].tokens for r in asyncio.run(round_of(prompts))]
        walls.append(time.perf_counter() - start)
    return walls, completions


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    loaded = load_model("smollm2-135m")
    episodes = turn_prompts(loaded.tokenizer, args.episodes)
    figures, outputs = {}, {}
    for name, cache_bytes in (("cache off", 0), ("cache on", 1 << 30)):
        with Engine(loaded.model, eos_token_ids=[], decode=loaded.tokenizer.decode, num_threads=args.threads,
                    prefix_cache_bytes=cache_bytes) as engine:
            replay(engine, [[p[::-1] for p in e] for e in episodes[:2]])  # warm-up (kernels, packing), sharing no start with the agent's prompts
            before = dict(engine.stats)
            walls, outputs[name] = replay(engine, episodes)
            figures[name] = {
                "wall_s": round(sum(walls), 2),
                "first_round_s": round(walls[0], 2),
                "prompt_positions_computed": engine.stats["prefill_tokens"] - before["prefill_tokens"],
                "prefix_hits": engine.stats["prefix_hits"] - before["prefix_hits"],
                "prefix_positions_reused": engine.stats["prefix_tokens_reused"] - before["prefix_tokens_reused"],
            }
        print(name, figures[name], flush=True)
    prompts = sum(len(e) for e in episodes)
    same = sum(a == b for a, b in zip(outputs["cache off"], outputs["cache on"]))
    result = {
        "machine": machine(),
        "dtype": str(engine.dtype).removeprefix("torch."),
        "episodes": len(episodes),
        "prompts": prompts,
        "mean_prompt_tokens": round(sum(len(p) for e in episodes for p in e) / prompts, 1),
        **figures,
        "speedup": round(figures["cache off"]["wall_s"] / figures["cache on"]["wall_s"], 2),
        "identical_greedy_completions": f"{same}/{prompts}",
    }
    print(json.dumps(result, indent=1))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
