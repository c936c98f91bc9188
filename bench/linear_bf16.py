"""Benchmark: hone's bf16 matmul kernel against the fp32 paths it stands beside, by number of rows.

On a CPU without native bf16 (AVX2), a bf16 engine multiplies by its weights on hone's kernel
(`linear_bf16`: bf16 weights widened in registers, fp32 sums) below `KERNEL_MAX_ROWS` rows, and
widens the whole weight to fp32 for torch's matmul from there (a prefill). This times, on
SmolLM2-135M's three weight shapes (gate|up, down, q|k|v), for 1 to 256 rows:
- kernel: `linear_bf16` on the bf16 weight;
- widened: the bf16 weight widened to fp32 for the call, then torch's fp32 matmul;
- fp32 prepacked: an fp32 copy of the weight prepacked for oneDNN (what the fp32 engine runs,
  reading twice the bytes);
- bf16 prepacked, on a CPU with native bf16 (AVX512-BF16, AMX) only: the bf16 weight prepacked for
  oneDNN, what a bf16 engine runs there from `DOT_KERNEL_MAX_ROWS` rows (the kernel, with
  AVX512-BF16's dot products there, below).
On AVX2 the crossover of kernel and widened is where KERNEL_MAX_ROWS belongs; with native bf16,
that of kernel and bf16 prepacked is where DOT_KERNEL_MAX_ROWS does. The weights here are small
enough to stay in cache between calls: in a decode step they come from memory, where the kernel's
lead at few rows is larger.

Run: .venv/bin/python bench/linear_bf16.py [--repeats 20]
Writes bench/results/linear_bf16.json (linear_bf16_avx512bf16.json on a CPU with native bf16).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from common import machine, native_bf16_suffix
from hone.engine.kernels import load_kernels
from hone.engine.llama import DOT_KERNEL_MAX_ROWS, KERNEL_MAX_ROWS, Linear

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
        bf16 = Linear(weight)
        native = bf16.mode == "onednn"  # oneDNN packs bf16 here
        for rows in ROWS:
            x = torch.randn(rows, k).bfloat16()
            repeats = max(args.repeats, 400 // rows)
            times = {
                "kernel": microseconds(lambda: kernels.linear_bf16(x, weight, None, None, False), repeats),
                "widened": microseconds(lambda: F.linear(x.float(), weight.float()).bfloat16(), repeats),
                "fp32 prepacked": microseconds(lambda: fp32(x.float()), repeats),
            }
            if native:
                times["bf16 prepacked"] = microseconds(lambda: torch.ops.mkldnn._linear_pointwise(x, bf16.packed, None, "none", [], ""), repeats)
            flops = 2 * rows * n * k
            row = {"shape": name, "rows": rows, **{f"{key} us": round(t, 1) for key, t in times.items()}}
            row.update({f"{key} GFLOP/s": round(flops / t / 1e3, 1) for key, t in times.items()})
            row["kernel / widened"] = round(times["kernel"] / times["widened"], 2)
            if native:
                row["kernel / bf16 prepacked"] = round(times["kernel"] / times["bf16 prepacked"], 2)
            rows_out.append(row)
            print(
                f"{name:18s} {rows:4d} rows  kernel {times['kernel']:8.1f} us ({row['kernel GFLOP/s']:5.1f} GFLOP/s)  "
                f"widened {times['widened']:8.1f} us  fp32 prepacked {times['fp32 prepacked']:8.1f} us  "
                f"kernel/widened {row['kernel / widened']:.2f}"
                + (f"  bf16 prepacked {times['bf16 prepacked']:8.1f} us  kernel/bf16 prepacked {row['kernel / bf16 prepacked']:.2f}" if native else ""),
                flush=True,
            )
    path = RESULTS.with_name(f"linear_bf16{native_bf16_suffix()}.json")
    path.parent.mkdir(exist_ok=True)
    info = {"machine": machine(), "kernel_max_rows": KERNEL_MAX_ROWS, "dot_kernel_max_rows": DOT_KERNEL_MAX_ROWS,
            "bf16_dot_products": kernels.bf16_dot_products()}
    path.write_text(json.dumps({**info, "rows": rows_out}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
