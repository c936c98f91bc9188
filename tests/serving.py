"""Start `hone serve` as a real process on a free 127.0.0.1 port, for tests that need HTTP."""

import os
import socket
import subprocess
import sys
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_hone_serve(model: str = "smollm2-135m") -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "hone.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--model", model],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(process.stdout.read().decode())
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process, port
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError("hone serve did not come up within 120 s")


def start_hone_serve_home(home, *extra_args: str, port: int | None = None) -> tuple[subprocess.Popen, int]:
    """`hone serve --home HOME` (the multi-tenant service) on 127.0.0.1; its log goes to HOME/serve.log."""
    port = port or free_port()
    log = open(os.path.join(home, "serve.log"), "ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "hone.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--home", str(home), *extra_args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(open(os.path.join(home, "serve.log")).read())
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process, port
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError("hone serve --home did not come up within 120 s")
