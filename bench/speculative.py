"""Benchmark: n-gram speculative decoding on against off, same run, same machine.

Part 1, the engine alone. Three workloads of 32 distinct chat prompts each, rendered as the agent
sends them:
- inbox: the inbox agent's turns (worked episodes replayed turn by turn: after a search, after a
  read), where the next reply copies ids, subjects and values from the tool results;
- toolcall: the toolcall task's requests (one worked example, then a question);
- chat: free questions with no tools (little to copy).
At batch B = 1, 8 and 32 (B concurrent requests, n=1; batch 1 runs 4 requests one after another),
both engines sample up to 96 tokens at `--temperature`, ending at the chat's end-of-turn token.
Tokens/s = sampled tokens / wall time, best of `--repeats` with the two engines alternating; the
prompts repeat, so after the first run the prefix cache holds them and the figures are mostly
decoding. A batch lasts as long as its longest reply. The acceptance rate is draft tokens kept /
draft tokens verified. Also: how many greedy completions are identical (bf16
rounds a step that verifies several tokens differently; fp32 equality is a unit test).

Also: the time of one decode step by rows fed (1..128, 512 cached positions each), which says
where extra rows (draft tokens) stop being nearly free on this machine.

Part 2 (`--agent`), end to end: the inbox agent's evaluation (its multi-turn rollouts through the
OpenAI-compatible client, forced tool calls under a grammar, stop strings) on `--questions`
validation questions at concurrency 1, 8 and 32, untrained weights, greedy; tokens/s of the
rollouts and success with each engine.

Run: .venv/bin/python bench/speculative.py [--threads 2] [--repeats 2] [--temperature 0.8] [--agent [--skip-engine]] [--dtype auto|serve] [--max-batch N]
Writes bench/results/speculative.json, or speculative_serve.json with --dtype serve (the engine
`hone serve` builds when it only serves: on an AVX2 CPU bf16 with a bf16 LM head), with
`_max_batchN` added when --max-batch is not the default, and `_avx512bf16` on a CPU with native bf16.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the worker thread gets --threads; see bench/engine.py

import argparse
import asyncio
import json
import time
from pathlib import Path

from common import machine, native_bf16_suffix
from prefix_cache import turn_prompts

from hone.chat.render import render_prompt
from hone.engine import Engine, serving_options
from hone.engine.speculation import SpeculationConfig
from hone.envs import toolcall
from hone.models import load_model
from hone.types import SamplingParams

RESULTS = Path(__file__).parent / "results" / "speculative.json"
BATCHES = (1, 8, 32)
MAX_TOKENS = 96
CHAT_TOPICS = ["autumn", "the sea", "a lighthouse", "bread", "trains", "a city at night", "bees", "winter",
               "a library", "rivers", "coffee", "mountains", "a market", "rain", "the moon", "a garden"]
CHAT_ASKS = ["Write a short poem about {}.", "Tell me three surprising facts about {}."]


def workloads(tokenizer) -> dict[str, list[list[int]]]:
    episodes = turn_prompts(tokenizer, 16)
    inbox = [prompt for episode in episodes for prompt in episode[1:]][:32]  # turns after a tool result
    tasks = toolcall.make_tasks() + toolcall.make_validation_tasks()
    tools = toolcall.TOOLS
    calls = [render_prompt(tokenizer, toolcall.prompt_messages(t), tools=tools).tokens for t in tasks[:32]]
    chat = [render_prompt(tokenizer, [{"role": "user", "content": ask.format(topic)}]).tokens
            for ask in CHAT_ASKS for topic in CHAT_TOPICS][:32]
    return {"inbox": inbox, "toolcall": calls, "chat": chat}


def run_batch(engine: Engine, prompts: list[list[int]], params: SamplingParams) -> tuple[float, list[list[int]]]:
    async def batch():
        return await asyncio.gather(*[engine.sample(p, 1, params) for p in prompts])

    start = time.perf_counter()
    results = asyncio.run(batch())
    return time.perf_counter() - start, [r[0].tokens for r in results]


def measure(engine: Engine, prompts: list[list[int]], batch: int, params: SamplingParams) -> tuple[float, list[list[int]]]:
    """Tokens/s of `batch` concurrent requests (batch 1: 4 requests in turn) and the completions."""
    groups = [prompts[i : i + 1] for i in range(4)] if batch == 1 else [prompts[:batch]]
    wall, outputs = 0.0, []
    for group in groups:
        seconds, tokens = run_batch(engine, group, params)
        wall += seconds
        outputs += tokens
    return sum(len(t) for t in outputs) / wall, outputs


def engine_part(loaded, sets: dict[str, list[list[int]]], args) -> dict:
    eos = [loaded.tokenizer.convert_tokens_to_ids("<|im_end|>")]
    engines = {name: Engine(loaded.model, eos_token_ids=eos, num_threads=args.threads, speculation=spec, **dtypes(args))
               for name, spec in (("off", None), ("on", spec_config(args)))}
    sampled = SamplingParams(max_tokens=MAX_TOKENS, temperature=args.temperature, seed=0)
    greedy = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0)
    out = {}
    try:
        for engine in engines.values():  # warm-up: kernels, packing, first drafts
            measure(engine, sets["chat"], 8, greedy)
        for workload, prompts in sets.items():
            rows = {}
            for batch in BATCHES:
                figures = {name: {"tokens_per_s": 0.0} for name in engines}
                drafted = kept = 0
                for _ in range(args.repeats):  # the arms alternate, so a noisy neighbour hits both
                    for name, engine in engines.items():
                        before = dict(engine.stats)
                        rate = measure(engine, prompts, batch, sampled)[0]
                        figures[name]["tokens_per_s"] = round(max(figures[name]["tokens_per_s"], rate), 1)
                        drafted += engine.stats["draft_tokens"] - before["draft_tokens"]
                        kept += engine.stats["draft_tokens_accepted"] - before["draft_tokens_accepted"]
                figures["on"]["acceptance"] = round(kept / drafted, 3) if drafted else None
                figures["on"]["draft_tokens"] = drafted
                figures["speedup"] = round(figures["on"]["tokens_per_s"] / figures["off"]["tokens_per_s"], 2)
                rows[f"batch_{batch}"] = figures
                print(workload, batch, figures, flush=True)
            _, off = measure(engines["off"], prompts, 32, greedy)
            _, on = measure(engines["on"], prompts, 32, greedy)
            rows["identical_greedy_completions"] = f"{sum(a == b for a, b in zip(off, on))}/{len(off)}"
            rows["mean_prompt_tokens"] = round(sum(map(len, prompts)) / len(prompts))
            out[workload] = rows
    finally:
        for engine in engines.values():
            engine.close()
    return out


def step_cost_by_rows(loaded, args, context: int = 512) -> dict[str, float]:
    """Milliseconds of one decode step feeding N rows (each its own slot, `context` cached
    positions): where extra rows stop being free, drafts stop paying."""
    import torch
    from engine import in_thread  # bench/engine.py: a fresh thread with its own torch thread count

    def measure_all():
        from hone.engine.engine import preferred_dtype
        from hone.engine.llama import LlamaRunner

        options = dtypes(args)
        runner = LlamaRunner(loaded.model, dtype=options.get("dtype", preferred_dtype()), head_dtype=options.get("lm_head_dtype", torch.float32),
                             max_slots=128, max_seq_len=context + 64)
        runner.repack()
        out = {}
        with torch.inference_mode():
            for rows in (1, 2, 4, 8, 16, 32, 64, 128):
                runner.reserve(rows, context + 1)
                tokens, positions = torch.full((rows,), 100), torch.full((rows,), context)
                for _ in range(3):
                    runner.decode(tokens, positions)
                start = time.perf_counter()
                for _ in range(10):
                    runner.decode(tokens, positions)
                out[str(rows)] = round((time.perf_counter() - start) / 10 * 1e3, 2)
        return out

    return in_thread(args.threads, measure_all)


def agent_part(args) -> dict:
    from hone.backends.local import LocalBackend
    from hone.envs.inbox.agent import InboxEnv
    from hone.rl.loop import RunConfig, make_model

    env = InboxEnv()
    questions = list(env.validation_tasks())[: args.questions]
    out = {}
    for name, spec in (("off", None), ("on", spec_config(args))):
        backend = LocalBackend(engine_options={"speculation": spec, "num_threads": args.threads, **dtypes(args)})
        model = make_model("inbox-agent", RunConfig(), backend)
        rows = {}
        try:
            measure_agent(env, model, questions, rows, name)
        finally:
            backend.close()  # its engine's worker thread, before the next arm starts (and before exit)
        out[name] = rows
    out["speedup"] = {k: round(out["on"][k]["tokens_per_s"] / out["off"][k]["tokens_per_s"], 2) for k in out["off"]}
    return out


def measure_agent(env, model, questions, rows: dict, name: str) -> None:
    from hone.rl.evaluate import evaluate

    for concurrency in BATCHES:
        tasks = questions[:8] if concurrency == 1 else questions
        start = time.perf_counter()
        result = asyncio.run(evaluate(env, model.openai_client(), model.name, tasks, temperature=0.0, concurrency=concurrency))
        wall = time.perf_counter() - start
        tokens = sum(len(turn.completion_tokens) for t in result.trajectories for turn in t.turns)
        rows[f"concurrency_{concurrency}"] = {"tokens_per_s": round(tokens / wall, 1), "wall_s": round(wall, 1), "tokens": tokens,
                                               "success": round(result.summary()["success"], 3), "questions": len(tasks)}
        print("agent", name, concurrency, rows[f"concurrency_{concurrency}"], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--agent", action="store_true", help="also time the inbox agent's evaluation end to end")
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--dtype", choices=("auto", "serve"), default="auto",
                        help="auto: the engine's default (what training samples with); serve: what `hone serve` picks when it only serves")
    parser.add_argument("--skip-engine", action="store_true", help="with --agent: only the end-to-end part")
    parser.add_argument("--max-batch", type=int, default=SpeculationConfig.max_batch,
                        help="SpeculationConfig.max_batch: steps with more rows never draft")
    args = parser.parse_args()
    loaded = load_model("smollm2-135m")
    result = {"machine": machine(), "temperature": args.temperature, "max_tokens": MAX_TOKENS, "config": vars(spec_config(args)),
              "dtypes": {k: str(v).replace("torch.", "") for k, v in dtypes(args).items()} or "engine default"}
    if not args.skip_engine:
        result["step_ms_by_rows_fed"] = step_cost_by_rows(loaded, args)
        print("decode step ms by rows fed (512 cached positions each):", result["step_ms_by_rows_fed"], flush=True)
        result["engine"] = engine_part(loaded, workloads(loaded.tokenizer), args)
    if args.agent:
        result["agent"] = agent_part(args)
    print(json.dumps(result, indent=1))
    suffix = ("" if args.dtype == "auto" else f"_{args.dtype}") + ("" if args.max_batch == SpeculationConfig.max_batch else f"_max_batch{args.max_batch}")
    suffix += native_bf16_suffix()
    path = RESULTS.with_name(f"speculative{suffix}.json")
    path.parent.mkdir(exist_ok=True)
    if args.skip_engine and path.exists():  # keep the engine part of the last full run beside this agent run
        result = {**json.loads(path.read_text()), "agent": result["agent"], "agent_machine": result["machine"]}
    path.write_text(json.dumps(result, indent=1))


def spec_config(args) -> SpeculationConfig:
    return SpeculationConfig(max_batch=args.max_batch)


def dtypes(args) -> dict:
    """Engine dtype options for --dtype: none (the engine's default) or `hone serve`'s."""
    return serving_options() if args.dtype == "serve" else {}

if __name__ == "__main__":
    main()
