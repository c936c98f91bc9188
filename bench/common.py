"""What several bench scripts share: the machine a figure was measured on, and engine throughput."""

from __future__ import annotations

import asyncio
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def machine() -> dict[str, object]:
    """CPU model and vector extensions, core count, Python and date: figures compare only within one
    machine and run ("AMD EPYC" alone names CPUs with and without AVX-512 BF16)."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "")
    return {
        "cpu": cpu or platform.processor() or "unknown", "vector_extensions": vector_extensions(), "cores": os.cpu_count(),
        "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"),
    }


def vector_extensions() -> list[str]:
    """The CPU flags that decide hone's dtype and llama.cpp's kernels."""
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), [])
    return [f for f in ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags]


def native_bf16_suffix() -> str:
    """"_avx512bf16" on a CPU that multiplies in bf16 natively (AVX512-BF16 or AMX), else "": a bench
    keeps one results file per kind of machine, since hone takes other paths on each."""
    return "_avx512bf16" if {"avx512_bf16", "amx_tile"} & set(vector_extensions()) else ""


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


def start_server(home: Path, model: str, extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(home / "serve.log", "ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "hone.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--home", str(home), "--model", model, *extra],
        stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(),
    )  # fmt: skip
    deadline = time.time() + 180
    while time.time() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"hone serve exited: {(home / 'serve.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process, port
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("hone serve did not come up within 180 s")


def create_key(home: Path) -> str:
    from hone.service.store import Store  # the same rows `hone keys create --tenant bench` writes

    store = Store(home)
    try:
        return store.create_key("bench")[1]
    finally:
        store.close()
