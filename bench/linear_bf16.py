"""Benchmark: hone's bf16 matmul kernel against the fp32 paths it stands beside, by number of rows.

On a CPU without native bf16 (AVX2), a bf16 engine multiplies by its weights on hone's kernel
(`linear_bf16`: bf16 weights widened in registers, fp32 sums) below `KERNEL_MAX_ROWS` rows, and
widens the whole weight to fp32 for torch's matmul from there (a prefill). This times, on
SmolLM2-135M's three weight shapes (gate|up, down, q|k|v), for 1 to 256 rows:
- kernel: `linear_bf16` on the bf16 weight;
- widened: the bf16 weight widened to fp32 for the call, then torch's fp32 matmul;
- fp32 prepacked: an fp32 copy of the weight prepacked for oneDNN (what the fp32 engine runs,
  reading twice the bytes).
The crossover of the first two is where KERNEL_MAX_ROWS belongs.

Run: .venv/bin/python bench/linear_bf16.py [--repeats 20]
Writes bench/results/linear_bf16.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from common import machine
from hone.engine.kernels import load_kernels
from hone.engine.llama import KERNEL_MAX_ROWS, Linear

RESULTS = Path(__file__).parent / "results" / "linear_bf16.json"
SHAPES = {"gate|up 3072x576": (3072, 576), "down 576x1536": (576, 1536), "q|k|v 960x576": (960, 576)}
ROWS = (1, 2, 4, 5, 8, 16, 32, 64, 128, 256)


def microseconds(call, repeats: int) -> float:
    for _ in range(3):
        call()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    kernels = load_kernels()
    if kernels is None:
        raise SystemExit("hone's C++ kernels could not be built here (no compiler?); nothing to compare")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    rows_out = []
    for name, (n, k) in SHAPES.items():
        weight = (torch.randn(n, k, generator=torch.Generator().manual_seed(0)) * 0.05).bfloat16()
        fp32 = Linear(weight.float())
        for rows in ROWS:
            x = torch.randn(rows, k).bfloat16()
            repeats = max(args.repeats, 400 // rows)
            times = {
                "kernel": microseconds(lambda: kernels.linear_bf16(x, weight, None, None), repeats),
                "widened": microseconds(lambda: F.linear(x.float(), weight.float()).bfloat16(), repeats),
                "fp32 prepacked": microseconds(lambda: fp32(x.float()), repeats),
            }
            flops = 2 * rows * n * k
            row = {"shape": name, "rows": rows, **{f"{key} us": round(t, 1) for key, t in times.items()}}
            row.update({f"{key} GFLOP/s": round(flops / t / 1e3, 1) for key, t in times.items()})
            row["kernel / widened"] = round(times["kernel"] / times["widened"], 2)
            rows_out.append(row)
            print(
                f"{name:18s} {rows:4d} rows  kernel {times['kernel']:8.1f} us ({row['kernel GFLOP/s']:5.1f} GFLOP/s)  "
                f"widened {times['widened']:8.1f} us  fp32 prepacked {times['fp32 prepacked']:8.1f} us  "
                f"kernel/widened {row['kernel / widened']:.2f}",
                flush=True,
            )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": machine(), "kernel_max_rows": KERNEL_MAX_ROWS, "rows": rows_out}, indent=1))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
