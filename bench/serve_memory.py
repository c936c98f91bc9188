"""Benchmark: resident memory of `hone serve` with the embedded model, idle and under load.

Starts `hone serve` (a process that only serves: no trainer) on a free port, once in its default
dtype (engine.serving_options: bf16 where bf16 runs fast, with a bf16 LM head on hone's AVX2
kernel) and once with `--dtype bf16` (bf16 layers, fp32 LM head), waits for /health, then reads the server's resident set
(VmRSS in /proc/PID/status):
  - idle, right after start-up;
  - after one chat request;
  - peak while 32 chat requests run at once (polled every 20 ms), then again idle.
Each request asks for 64 new tokens of a distinct short prompt. With `--peer`, llama.cpp's
`llama-server` (built by bench/llamacpp.py) is measured the same way in the same run, serving the
same model as an f16 GGUF with an 8k context.

Run: .venv/bin/python bench/serve_memory.py [--peer]   (writes bench/results/serve_memory.json; serve_memory_avx512bf16.json on a CPU with native bf16)
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, native_bf16_suffix  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "serve_memory.json"
CONCURRENT = 32
NEW_TOKENS = 64
TOPICS = ("the sea", "a library", "trains", "winter", "bread", "a lighthouse", "chess", "rain")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"{field} not found for pid {pid}")


def wait_healthy(url: str, process: subprocess.Popen, timeout_s: float = 300) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before it was healthy")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server was not healthy after {timeout_s} s")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def chat(base: str, model: str, i: int) -> int:
    prompt = f"Write a short poem about {TOPICS[i % len(TOPICS)]}, number {i}."
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": NEW_TOKENS, "temperature": 0.8}
    response = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=600)
    response.raise_for_status()
    return response.json()["usage"]["completion_tokens"]


def measure(name: str, command: list[str], base: str, health: str, model: str, env: dict[str, str] | None = None) -> dict[str, object]:
    """Start `command`, and read its resident memory idle, after one request, and under 32 at once."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        start = time.perf_counter()
        wait_healthy(health, process)
        ready_s = time.perf_counter() - start
        time.sleep(2.0)  # let start-up allocations settle
        idle = rss_mb(process.pid)
        chat(base, model, 0)
        after_one = rss_mb(process.pid)
        peak, loaded = [after_one], threading.Event()

        def poll() -> None:
            while not loaded.is_set():
                peak[0] = max(peak[0], rss_mb(process.pid))
                time.sleep(0.02)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        began = time.perf_counter()
        with ThreadPoolExecutor(CONCURRENT) as pool:
            tokens = sum(pool.map(lambda i: chat(base, model, i + 1), range(CONCURRENT)))
        load_s = time.perf_counter() - began
        loaded.set()
        poller.join()
        time.sleep(1.0)
        row = {
            "ready_s": round(ready_s, 1),
            "rss_idle_mb": idle,
            "rss_after_one_request_mb": after_one,
            "rss_peak_32_concurrent_mb": peak[0],
            "rss_after_load_mb": rss_mb(process.pid),
            "vm_hwm_mb": rss_mb(process.pid, "VmHWM"),  # includes start-up's transient peak
            "tokens_32_concurrent": tokens,
            "tokens_per_s_32_concurrent": round(tokens / load_s, 1),
        }
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in row.items()), flush=True)
        return row
    finally:
        stop(process)


def hone_row(dtype: str) -> dict[str, object]:
    port = free_port()
    hone = Path(sys.executable).parent / "hone"
    base = f"http://127.0.0.1:{port}"
    return measure(f"hone serve --dtype {dtype}", [str(hone), "serve", "--port", str(port), "--dtype", dtype], base, f"{base}/health", "smollm2-135m")


def llamacpp_row() -> dict[str, object]:
    from llamacpp import f16_gguf, llama_env, server_binary  # bench/llamacpp.py: builds llama.cpp once, cached

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [str(server_binary()), "-m", str(f16_gguf()), "-c", "8192", "-t", "2", "-np", str(CONCURRENT), "--host", "127.0.0.1", "--port", str(port)]
    return measure("llama-server f16", command, base, f"{base}/health", "smollm2", llama_env())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer", action="store_true", help="also measure llama.cpp's llama-server (built by bench/llamacpp.py)")
    args = parser.parse_args()
    results: dict[str, object] = {"machine": machine(), "concurrent": CONCURRENT, "new_tokens": NEW_TOKENS}
    results["hone_auto"], results["hone_bf16"] = hone_row("auto"), hone_row("bf16")
    if args.peer:
        peer = results["llamacpp_f16"] = llamacpp_row()
        for dtype in ("auto", "bf16"):  # the default (what `hone serve` picks) and bf16 throughout
            for key in ("rss_idle_mb", "rss_peak_32_concurrent_mb"):
                ratio = round(results[f"hone_{dtype}"][key] / peer[key], 2)
                results[f"{dtype}_over_llamacpp_{key}"] = ratio
                print(f"hone --dtype {dtype} / llama.cpp f16, {key}: {ratio}x")
    path = RESULTS.with_name(f"serve_memory{native_bf16_suffix()}.json")
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
