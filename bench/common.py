"""What several bench scripts share: the machine a figure was measured on, and engine throughput."""

from __future__ import annotations

import asyncio
import os
import platform
import time
from pathlib import Path


def machine() -> dict[str, object]:
    """CPU model, core count, Python and date: figures compare only within one machine and run."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "")
    return {"cpu": cpu or platform.processor() or "unknown", "cores": os.cpu_count(), "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}


def best_tokens_per_s(engine, prompts: list[list[int]], params, repeats: int) -> float:
    """Best over `repeats` of sampled tokens / wall time, all `prompts` at once (prefill included)."""

    async def batch():
        return await asyncio.gather(*[engine.sample(p, 1, params) for p in prompts])

    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        results = asyncio.run(batch())
        best = max(best, sum(len(r[0].tokens) for r in results) / (time.perf_counter() - start))
    return round(best, 1)
