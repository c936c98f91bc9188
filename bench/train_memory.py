"""Benchmark: a trainer step's time and peak resident memory against its micro-batch size.

The batch has the shape of a tool-call GRPO step on the embedded model: 4 groups of 8 sequences,
each group sharing a 260-token prompt, 30-60 sampled tokens per sequence (random token ids: the
cost does not depend on which tokens). LoRA rank 16, the CISPO loss. Each micro-batch size runs in
its own process (peak RSS is per process, read from getrusage), three forward_backward calls each;
the figure is the median call.

Run: .venv/bin/python bench/train_memory.py [--sizes 512 1024 2048]   (writes bench/results/train_memory.json)
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "train_memory.json"
GROUPS, GROUP_SIZE, PROMPT_TOKENS = 4, 8, 260


def toolcall_shaped_batch(seed: int = 0) -> list:
    from hone.types import Datum

    rng = random.Random(seed)
    datums = []
    for _ in range(GROUPS):
        prompt = [rng.randrange(100, 40000) for _ in range(PROMPT_TOKENS)]
        for _ in range(GROUP_SIZE):
            sampled = [rng.randrange(100, 40000) for _ in range(rng.randrange(30, 60))]
            sequence = prompt + sampled
            n = len(sequence) - 1
            advantage = rng.choice([-1.0, 1.0])
            weights = [0.0] * (PROMPT_TOKENS - 1) + [1.0] * len(sampled)
            datums.append(Datum(input_tokens=sequence[:-1], target_tokens=sequence[1:], weights=weights, sampler_logprobs=[-1.0] * n, advantages=[advantage] * n))
    return datums


def measure_one(micro_batch_tokens: int, repeats: int) -> dict:
    """In this process: load, time `repeats` forward_backward calls, read the peak RSS."""
    from hone.models import load_model
    from hone.training.trainer import Trainer

    trainer = Trainer(load_model("smollm2-135m").model, lora_rank=16, micro_batch_tokens=micro_batch_tokens)
    datums = toolcall_shaped_batch()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        trainer.forward_backward(datums)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "micro_batch_tokens": micro_batch_tokens,
        "forward_backward_s": round(statistics.median(times), 2),
        "all_s": [round(t, 2) for t in times],
        "rss_before_mb": round(before),
        "peak_rss_mb": round(peak),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process's size
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure_one(args.one, args.repeats)))
        return
    rows = []
    for size in args.sizes:
        child = subprocess.run([sys.executable, __file__, "--one", str(size), "--repeats", str(args.repeats)], check=True, capture_output=True, text=True)
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
        row = rows[-1]
        print(f"micro_batch_tokens {size:5d}: forward_backward {row['forward_backward_s']:6.2f} s (median of {args.repeats}), peak RSS {row['peak_rss_mb']} MB (model loaded: {row['rss_before_mb']} MB)")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": machine(), "batch": f"{GROUPS} groups x {GROUP_SIZE}, {PROMPT_TOKENS}-token shared prompts, 30-60 sampled tokens", "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
