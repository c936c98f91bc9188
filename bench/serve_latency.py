"""Benchmark: how long one user waits for each short reply from `hone serve` (requests one at a time).

A deployed agent answers one user at a time: each turn is a request that waits for the previous
one. This starts `hone serve` with the embedded model (a process that only serves), sends
`--requests` chat requests one after another (distinct prompts, `--max-tokens` new tokens each,
greedy), and reports the client's wall time per request (median and spread) and the completion
tokens. With `--tree PATH ...`, the same is measured for each other checkout of hone (a folder
holding its `hone/` package, e.g. `git archive OLD hone | tar -x -C PATH`), alternating with this
one, in one run.

Run: .venv/bin/python bench/serve_latency.py [--requests 16] [--max-tokens 16] [--rounds 2] [--tree /tmp/old]
Writes bench/results/serve_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402
from serve_memory import free_port, stop, wait_healthy  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "serve_latency.json"
ROOT = Path(__file__).resolve().parent.parent
MODEL = "smollm2-135m"
QUESTIONS = ("What is the capital of France?", "Name a primary colour.", "How many legs has a spider?", "Say hello in Spanish.",
             "What is 7 times 8?", "Which planet is largest?", "What do bees make?", "Name a month with 30 days.")

def session(tree: Path | None, requests: int, max_tokens: int) -> dict[str, object]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    command = [sys.executable, "-m", "hone.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--model", MODEL]
    # `-m` puts the working directory first on sys.path: started in another tree, it runs that tree's hone
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=tree or ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{base}/health", process)
        with httpx.Client(timeout=600) as client:
            def ask(i: int) -> tuple[float, int]:
                body = {"model": MODEL, "messages": [{"role": "user", "content": f"{QUESTIONS[i % len(QUESTIONS)]} ({i})"}],
                        "max_tokens": max_tokens, "temperature": 0}
                started = time.perf_counter()
                response = client.post(f"{base}/v1/chat/completions", json=body)
                response.raise_for_status()
                return time.perf_counter() - started, response.json()["usage"]["completion_tokens"]

            for i in range(3):  # warm-up: first-call costs are not what a user waits for on every turn
                ask(1000 + i)
            times, tokens = zip(*(ask(i) for i in range(requests)))
        return {"median_ms": round(statistics.median(times) * 1e3, 1), "min_ms": round(min(times) * 1e3, 1),
                "max_ms": round(max(times) * 1e3, 1), "tokens_per_request": round(sum(tokens) / len(tokens), 1)}
    finally:
        stop(process)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="each tree measured this many times, alternating")
    parser.add_argument("--tree", type=Path, action="append", default=[], help="another checkout of hone to measure beside this one")
    args = parser.parse_args()
    trees: dict[str, Path | None] = {"this checkout": None, **{str(t): t.resolve() for t in args.tree}}
    rows: dict[str, list[dict]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            rows[name].append(session(tree, args.requests, args.max_tokens))
            print(name, rows[name][-1], flush=True)
    result = {"machine": machine(), "model": MODEL, "requests": args.requests, "max_tokens": args.max_tokens, "runs": rows,
              "best_median_ms": {name: min(r["median_ms"] for r in runs) for name, runs in rows.items()}}
    print(json.dumps(result, indent=1))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
