"""What this machine's hardware computes in natively: the dtype a model is run and trained in.

Both the engine (its weights' dtype) and the trainer (whether to autocast to bf16, when asked
"auto") ask `preferred_dtype`, so sampling and training agree about the hardware.
"""

from __future__ import annotations

import platform
import time
from functools import lru_cache

import torch
import torch.nn.functional as F


def preferred_dtype(hidden: int = 576, intermediate: int = 1536) -> torch.dtype:
    """bf16 where the hardware multiplies in it natively (CUDA with bf16, x86 with AVX512-BF16 or
    AMX), fp32 on other x86 CPUs, elsewhere bf16 only if a model-shaped batch-32 matmul measures
    clearly faster than fp32.

    An x86 CPU without those instructions emulates bf16 (AVX2-only AMD EPYC: batch-32 sampling ~3x
    slower than fp32), and the timing probe there picked bf16 once while another process loaded
    the cores: so x86 is decided by its flags alone."""
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return cpu_dtype(hidden, intermediate)


def bf16_is_native(device: torch.device) -> bool:
    """Whether `device` multiplies in bf16 natively: what a trainer's `autocast_bf16="auto"` means.
    On an AVX2-only CPU bf16 is emulated: a training step of the embedded model took 18x as long
    with bf16 autocast as in fp32 (150.5 vs 8.4 s, 2-core AMD EPYC, bench/train_dtype.py)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_dtype() == torch.bfloat16


@lru_cache(maxsize=None)
def cpu_dtype(hidden: int = 576, intermediate: int = 1536) -> torch.dtype:
    """`preferred_dtype` for this machine's CPU, whatever GPU it also has."""
    try:
        if torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported():
            return torch.bfloat16
        if platform.machine().lower() in ("x86_64", "amd64"):
            return torch.float32
    except AttributeError:  # a torch without these probes: measure instead
        pass
    timings = {}
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(32, hidden, dtype=dtype)
        w = torch.randn(intermediate, hidden, dtype=dtype)
        for _ in range(3):
            F.linear(x, w)
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(5):
                F.linear(x, w)
            best = min(best, time.perf_counter() - start)
        timings[dtype] = best
    return torch.bfloat16 if timings[torch.bfloat16] < 0.8 * timings[torch.float32] else torch.float32
