"""Benchmark: hone's decode-attention kernel against the same computation in torch ops, by batch.

A decode step attends each slot's new token (or, verifying drafts, its few new tokens) over the
slot's cached keys and values, in every layer. This times that alone, with SmolLM2-135M's attention
shapes (30 layers, 9 query heads over 3 key/value heads of 64) in bf16, over `--context` cached
positions per slot, cycling through one cache per layer as a step does, so keys and values come
from memory rather than the CPU's cache:
- kernel: `decode_attention`, or `verify_attention` for several rows per slot;
- torch: `decode_attention_reference` / `verify_attention_reference` (the path taken where the
  kernel cannot be built), on the same inputs.
Figures per step (all layers): milliseconds, and the cached keys and values read per second (each
slot's cache is read once a layer however many rows it feeds).

Run: .venv/bin/python bench/attention.py [--context 512] [--repeats 6]
Writes bench/results/attention.json (attention_avx512bf16.json on a CPU with native bf16).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from common import machine, native_bf16_suffix
from hone.engine.kernels import NO_SHARING, decode_attention_reference, load_kernels, verify_attention_reference

RESULTS = Path(__file__).parent / "results" / "attention.json"
LAYERS, H, K, E = 30, 9, 3, 64  # SmolLM2-135M
CASES = ((1, 1), (8, 1), (32, 1), (8, 5), (32, 3), (32, 5))  # (slots, rows per slot)


def step_ms(attend_layer, caches, repeats: int) -> float:
    """Milliseconds of one step: attend_layer(k, v) for every layer's cache."""
    for k, v in caches[:3]:
        attend_layer(k, v)
    start = time.perf_counter()
    for _ in range(repeats):
        for k, v in caches:
            attend_layer(k, v)
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--context", type=int, default=512, help="cached positions per slot")
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()
    kernels = load_kernels()
    if kernels is None:
        raise SystemExit("hone's C++ kernels could not be built here (no compiler?); nothing to compare")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    g = torch.Generator().manual_seed(0)
    dtype, S = torch.bfloat16, args.context + 64
    rows_out = []
    for slots, per in CASES:
        n_rows = slots * per
        caches = [
            (torch.randn(slots, K, E, S, generator=g).to(dtype), torch.randn(slots, K, S, E, generator=g).to(dtype))
            for _ in range(LAYERS)
        ]
        qkv = torch.randn(n_rows, (H + 2 * K) * E, generator=g).to(dtype)
        angles = torch.rand(n_rows, E, generator=g) * 6.28
        cos, sin = angles.cos().to(dtype), angles.sin().to(dtype)
        positions = torch.tensor([args.context + j for _ in range(slots) for j in range(per)])
        scale = E**-0.5
        if per == 1:
            arms = {
                "kernel": lambda k, v: kernels.decode_attention(qkv, cos, sin, k, v, positions, H, K, scale, *NO_SHARING),
                "torch": lambda k, v: decode_attention_reference(qkv, cos, sin, k, v, positions, H, K, scale),
            }
        else:
            owner = torch.arange(slots).repeat_interleave(per)
            starts = torch.arange(0, n_rows + 1, per)
            arms = {
                "kernel": lambda k, v: kernels.verify_attention(qkv, cos, sin, k, v, owner, positions, starts, H, K, scale),
                "torch": lambda k, v: verify_attention_reference(qkv, cos, sin, k, v, owner, positions, starts, H, K, scale),
            }
        times = {name: step_ms(fn, caches, args.repeats) for name, fn in arms.items()}
        read_gb = LAYERS * slots * K * (args.context + per) * E * 2 * dtype.itemsize / 1e9
        row = {"slots": slots, "rows per slot": per, **{f"{name} ms": round(t, 2) for name, t in times.items()}}
        row.update({f"{name} GB/s": round(read_gb / t * 1e3, 1) for name, t in times.items()})
        row["kernel / torch"] = round(times["kernel"] / times["torch"], 3)
        rows_out.append(row)
        print(
            f"{slots:3d} slots x {per} rows: kernel {times['kernel']:7.2f} ms ({row['kernel GB/s']:5.1f} GB/s)  "
            f"torch {times['torch']:7.2f} ms ({row['torch GB/s']:5.1f} GB/s)  kernel/torch {row['kernel / torch']:.3f}",
            flush=True,
        )
    path = RESULTS.with_name(f"attention{native_bf16_suffix()}.json")
    path.parent.mkdir(exist_ok=True)
    info = {"machine": machine(), "context": args.context, "dtype": "bfloat16", "layers": LAYERS, "heads": [H, K, E]}
    path.write_text(json.dumps({**info, "rows": rows_out}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
