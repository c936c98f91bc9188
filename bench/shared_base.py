"""Benchmark: LoRA models sharing one base model in memory (one engine, one set of frozen trainer
weights) against each model holding its own copy, on the embedded SmolLM2-135M.

1. Memory: for 1, 2 and 4 LoRA models (rank 16) on one LocalBackend, shared and not, the process's
   resident set size (RSS) once every model has its trainer, its adapter pushed to the sampler and
   one request served. Each figure comes from a fresh process (freed memory does not always leave
   the RSS), and `per_model_mb` = (RSS at 4 models - RSS at 1 model) / 3.
2. Sampling: 4 models x 8 concurrent requests (distinct 64-token prompts, temperature 1, exactly
   64 new tokens, no eos), all 32 at once. Shared: one engine decodes the 32 rows together (the base
   matmuls over all rows, each adapter's LoRA delta over its own 8). Not shared: 4 engines, one
   per model, decoding at the same time. Tokens/s = 32 x 64 / wall time, prefill included; best of
   `--repeats`. Adapters are trained one step first, so every LoRA delta is live. For scale,
   `one_merged_model`: the 32 requests all to one model whose own engine has its adapter merged
   (no LoRA compute at all): the ceiling the shared engine's per-adapter deltas are measured from.
3. Threads: OMP_NUM_THREADS=1 before torch loads; each engine's worker uses `--threads` (see
   bench/engine.py, point 5). Unshared, 4 workers share the cores: that is what 4 copies cost.

Run: .venv/bin/python bench/shared_base.py [--threads N] [--repeats R]
Writes bench/results/shared_base.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch loads: see point 3

import argparse
import asyncio
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "shared_base.json"
MODEL = "smollm2-135m"
COUNTS = (1, 2, 4)
REQUESTS_PER_MODEL = 8
PROMPT_TOKENS = 64
NEW_TOKENS = 64


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def backend_with_models(count: int, shared: bool, threads: int):
    """`count` LoRA models, each with its trainer, one training step taken and its adapter pushed."""
    from hone.backends import LocalBackend
    from hone.types import AdamParams, Datum

    backend = LocalBackend(engine_options={"num_threads": threads}, share_base=shared)
    datum = Datum.from_sequence(list(range(100, 140)), [0] * 20 + [1] * 20, [0.0] * 20 + [-3.0] * 20, [0.0] * 20 + [1.0] * 20)

    async def step(name: str) -> None:
        await backend.forward_backward(name, [datum], "cispo")
        await backend.optim_step(name, AdamParams(learning_rate=1e-3))  # pushes the adapter to the sampler

    for k in range(count):
        name = f"m{k}"
        backend.add_model(name, MODEL, lora_rank=16, seed=k)
        asyncio.run(step(name))
    return backend


def measure_memory(count: int, shared: bool, threads: int) -> dict:
    """Run in a fresh process (see point 1)."""
    from hone.types import SamplingParams

    start = rss_mb()
    backend = backend_with_models(count, shared, threads)
    for name in backend.list_models():
        backend.get(name).sample_sync(list(range(200, 264)), 1, SamplingParams(max_tokens=8, temperature=1.0, seed=0))
    engines = {id(backend.get(name).engine) for name in backend.list_models()}
    out = {"models": count, "shared": shared, "rss_mb": round(rss_mb(), 1), "rss_at_import_mb": round(start, 1), "engines": len(engines)}
    backend.close()
    return out


def distinct_prompts(tokenizer, count: int) -> list[list[int]]:
    text = " ".join(f"Task {i}: search the inbox for the message about invoice {i * 7} and reply politely." for i in range(400))
    ids = tokenizer(text)["input_ids"]
    return [ids[5 * i : 5 * i + PROMPT_TOKENS] for i in range(count)]


def measure_throughput(shared: bool, threads: int, repeats: int, models: int = 4) -> dict:
    from hone.types import SamplingParams

    backend = backend_with_models(models, shared, threads)
    names = backend.list_models()
    for name in names:
        backend.get(name).engine.eos_token_ids = frozenset()  # exactly NEW_TOKENS each
    prompts = distinct_prompts(backend.tokenizer(names[0]), 4 * REQUESTS_PER_MODEL)
    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=1.0, seed=0)

    async def burst():
        calls = [backend.sample(names[i % len(names)], p, 1, params) for i, p in enumerate(prompts)]
        return await asyncio.gather(*calls)

    asyncio.run(burst())  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        results = asyncio.run(burst())
        times.append(time.perf_counter() - start)
        assert sum(len(r[0].tokens) for r in results) == len(prompts) * NEW_TOKENS
    backend.close()
    best = min(times)
    return {
        "shared": shared,
        "models": len(names),
        "requests": len(prompts),
        "tokens_per_s": round(len(prompts) * NEW_TOKENS / best, 1),
        "wall_s": [round(t, 2) for t in times],
    }


def child(args) -> None:
    if args.child == "memory":
        print(json.dumps(measure_memory(args.count, args.shared == "1", args.threads)))
    else:
        print(json.dumps(measure_throughput(args.shared == "1", args.threads, args.repeats, args.count)))


def run_child(*argv: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *argv], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=["memory", "throughput"], help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--shared", default="1", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    common = ["--threads", str(args.threads), "--repeats", str(args.repeats)]
    load_before = os.getloadavg()
    memory = {"shared": [], "not_shared": []}
    for shared in (True, False):
        for count in COUNTS:
            row = run_child("--child", "memory", "--count", str(count), "--shared", "1" if shared else "0", *common)
            memory["shared" if shared else "not_shared"].append(row)
            print(row, flush=True)
    per_model = {
        key: round((rows[-1]["rss_mb"] - rows[0]["rss_mb"]) / (COUNTS[-1] - COUNTS[0]), 1) for key, rows in memory.items()
    }
    throughput = {}
    for key, count, shared in (("shared", 4, True), ("not_shared", 4, False), ("one_merged_model", 1, False)):
        row = run_child("--child", "throughput", "--count", str(count), "--shared", "1" if shared else "0", *common)
        throughput[key] = row
        print(row, flush=True)
    result = {
        "model": MODEL,
        "lora_rank": 16,
        "memory": memory,
        "per_model_mb": per_model,
        "rss_4_models_ratio_shared_over_not": round(memory["shared"][-1]["rss_mb"] / memory["not_shared"][-1]["rss_mb"], 3),
        "throughput": throughput,
        "throughput_ratio_shared_over_not": round(
            throughput["shared"]["tokens_per_s"] / throughput["not_shared"]["tokens_per_s"], 3
        ),
        "threads": args.threads,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("per_model_mb", "rss_4_models_ratio_shared_over_not", "throughput_ratio_shared_over_not")}))


if __name__ == "__main__":
    main()
