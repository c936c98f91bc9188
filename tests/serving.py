"""Start `hone serve` as a real process on 127.0.0.1, for tests that need HTTP.

The server binds port 0 (the kernel picks a free port) and the test reads the port the process is
actually listening on, so no other process can take the port between choosing and binding it.
"""

import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import httpx
import psutil  # a dependency of peft and accelerate, so always installed with hone


def start_hone_serve(model: str = "smollm2-135m") -> tuple[subprocess.Popen, int]:
    """`hone serve --model MODEL` (the single-user OpenAI server); its output goes to a temporary log."""
    log = Path(tempfile.mkdtemp(prefix="hone-serve-")) / "serve.log"
    command = [sys.executable, "-m", "hone.cli", "serve", "--host", "127.0.0.1", "--port", "0", "--model", model]
    process = subprocess.Popen(
        command, stdout=open(log, "ab"), stderr=subprocess.STDOUT, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    )
    return process, wait_until_serving(process, log)


def start_hone_serve_home(
    home, models: tuple[str, ...] = ("tiny",), *args: str, cwd: Path | None = None, tmpdir: Path | None = None
) -> tuple[subprocess.Popen, int]:
    """`hone serve --home HOME` (the multi-tenant service) on a kernel-chosen port; `args` are extra flags.
    Its output goes to HOME/serve.log (a pipe nobody reads would fill and stall the server). `cwd` and
    `tmpdir` (its working and temporary folders) let a test check that it writes nothing there."""
    Path(home).mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "hone.cli", "serve", "--host", "127.0.0.1", "--port", "0", "--home", str(home)]
    for model in models:
        command += ["--model", model]
    log = Path(home) / "serve.log"
    process = subprocess.Popen(
        command + list(args),
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", **({"TMPDIR": str(tmpdir)} if tmpdir else {})},
        cwd=cwd,
    )
    return process, wait_until_serving(process, log)


def wait_until_serving(process: subprocess.Popen, log: Path, timeout_s: float = 120) -> int:
    """The port `process` listens on, once its /health answers 200; fails with its log if it dies or
    does not get there within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    port = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"hone serve exited with {process.returncode} before serving:\n{_tail(log)}")
        port = port or listening_port(process.pid)
        if port is not None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    return port
            except httpx.HTTPError:
                pass
        time.sleep(0.1)  # poll interval; the deadline above bounds the wait
    process.kill()
    process.wait(timeout=30)
    state = f"listening on {port} but /health never answered 200" if port else "never listened on a port"
    raise RuntimeError(f"hone serve did not come up within {timeout_s:.0f} s ({state}):\n{_tail(log)}")


def listening_port(pid: int) -> int | None:
    """The TCP port process `pid` listens on, or None while it has not bound one yet."""
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return None
    ports = {c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN}
    assert len(ports) <= 1, f"process {pid} listens on several ports {sorted(ports)}: which is the server's?"
    return ports.pop() if ports else None


def wait_until(condition: Callable[[], bool], timeout_s: float, message: str, interval_s: float = 0.01) -> None:
    """Poll `condition` until it holds; fail with `message` if it still does not after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{message} (waited {timeout_s:.0f} s)"
        time.sleep(interval_s)


def _tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


_new_tenants = itertools.count()


def new_tenant_key(home, tenant: str | None = None) -> str:
    """A key for `tenant` (a new tenant if None), written to the service's SQLite as `hone keys create` does."""
    from hone.service.store import Store

    store = Store(home)
    try:
        return store.create_key(tenant or f"tenant-{next(_new_tenants)}")[1]
    finally:
        store.close()
