"""Benchmark: one training step on the embedded model in fp32 against bf16 autocast, same run.

What `autocast_bf16="auto"` (the `hone demo` default) decides rests on this figure: where the CPU
has no bf16 instructions (AVX2-only x86) torch emulates bf16 matmuls, and autocast makes a
training step many times slower than fp32; where it has them (AVX512-BF16, AMX) bf16 is the
faster one. The step: LoRA rank 16 (the demo's), `--datums` sequences of `--tokens` tokens (the
last third weighted, as a warm start's replies are), forward_backward with cross-entropy then
optim_step; the two arms alternate, `--rounds` times each.

Run: .venv/bin/python bench/train_dtype.py [--rounds 1] [--datums 2] [--tokens 512]
Writes bench/results/train_dtype.json.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from common import machine

from hone.hardware import bf16_is_native
from hone.models import load_model
from hone.training import Trainer
from hone.types import AdamParams, Datum

RESULTS = Path(__file__).parent / "results" / "train_dtype.json"


def datums(count: int, tokens: int, seed: int = 0) -> list[Datum]:
    rng = random.Random(seed)
    prompt = tokens * 2 // 3
    out = []
    for _ in range(count):
        ids = [rng.randrange(1000, 20000) for _ in range(tokens)]
        weights = [0.0] * prompt + [1.0] * (tokens - prompt)
        out.append(Datum.from_sequence(ids, weights, [0.0] * tokens, [1.0] * tokens))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--datums", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=512)
    args = parser.parse_args()

    model = load_model("smollm2-135m").model
    batch = datums(args.datums, args.tokens)
    trainers = {"fp32": Trainer(model, lora_rank=16, autocast_bf16=False), "bf16 autocast": Trainer(model, lora_rank=16, autocast_bf16=True)}
    seconds: dict[str, list[float]] = {arm: [] for arm in trainers}
    for round_ in range(args.rounds):
        for arm, trainer in trainers.items():
            start = time.perf_counter()
            trainer.forward_backward(batch, "cross_entropy")
            trainer.optim_step(AdamParams(learning_rate=1e-4))
            seconds[arm].append(round(time.perf_counter() - start, 2))
            print(f"round {round_}: {arm:14s} {seconds[arm][-1]:7.2f} s", flush=True)

    best = {arm: min(times) for arm, times in seconds.items()}
    result = {
        "machine": machine(),
        "bf16_is_native": bf16_is_native(torch.device("cpu")),
        "auto_picks": "bf16 autocast" if bf16_is_native(torch.device("cpu")) else "fp32",
        "step": {"datums": args.datums, "tokens": args.tokens, "lora_rank": 16, "loss": "cross_entropy"},
        "seconds": seconds,
        "bf16_over_fp32": round(best["bf16 autocast"] / best["fp32"], 2),
    }
    print(f"bf16 autocast / fp32 step time: {result['bf16_over_fp32']}x; auto picks {result['auto_picks']}")
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
