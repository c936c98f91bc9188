"""Start `hone serve` as a real process on a free 127.0.0.1 port, for tests that need HTTP."""

import itertools
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

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


def start_hone_serve_home(home, models: tuple[str, ...] = ("tiny",), *args: str) -> tuple[subprocess.Popen, int]:
    """`hone serve --home HOME` (the multi-tenant service) on a free port; `args` are extra flags.
    Its output goes to HOME/serve.log (a pipe nobody reads would fill and stall the server)."""
    port = free_port()
    Path(home).mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "hone.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--home", str(home)]
    for model in models:
        command += ["--model", model]
    process = subprocess.Popen(
        command + list(args),
        stdout=open(Path(home) / "serve.log", "ab"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"},
    )
    return process, _wait_healthy(process, port, Path(home) / "serve.log")


def _wait_healthy(process: subprocess.Popen, port: int, log: Path, timeout_s: float = 120) -> int:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(log.read_text())
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return port
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"hone serve did not come up within {timeout_s:.0f} s")


_new_tenants = itertools.count()


def new_tenant_key(home, tenant: str | None = None) -> str:
    """A key for `tenant` (a new tenant if None), written to the service's SQLite as `hone keys create` does."""
    from hone.server.store import Store

    store = Store(home)
    try:
        return store.create_key(tenant or f"tenant-{next(_new_tenants)}")[1]
    finally:
        store.close()
