"""`hone serve` as a real process on SIGTERM: it stops accepting, lets a request in flight finish
within --drain-s, cancels one that would run past it, and exits within the bound either way."""

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from ..serving import (
    new_tenant_key,
    start_hone_serve_home,
    wait_until,
    wait_until_serving,
)

ASK = {"model": "tiny", "messages": [{"role": "user", "content": "Tell me everything."}], "temperature": 1.0}


def start_serve(*flags: str) -> tuple[subprocess.Popen, int]:
    """`hone serve --model tiny FLAGS` on a kernel-chosen port, its output in a temporary log."""
    log = Path(tempfile.mkdtemp(prefix="hone-serve-")) / "serve.log"
    command = [sys.executable, "-m", "hone.cli", "serve", "--host", "127.0.0.1", "--port", "0", "--model", "tiny", *flags]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=env)
    try:
        return process, wait_until_serving(process, log)
    except BaseException:
        process.kill()
        raise


class Call(threading.Thread):
    """One chat request in a thread; `.reply` or `.error` once it ends."""

    def __init__(self, port: int, body: dict, headers: dict | None = None):
        super().__init__(daemon=True)
        self.url, self.body, self.headers = f"http://127.0.0.1:{port}/v1/chat/completions", body, headers
        self.reply: httpx.Response | None = None
        self.error: Exception | None = None
        self.start()

    def run(self) -> None:
        try:
            self.reply = httpx.post(self.url, json=self.body, headers=self.headers, timeout=120)
        except httpx.HTTPError as exc:
            self.error = exc


def wait_until_sampling(process: subprocess.Popen, cpu_s: float = 0.3) -> None:
    """Until the server has spent `cpu_s` more CPU seconds: an idle server spends next to none, so
    its engine is decoding the request just sent."""
    proc = psutil.Process(process.pid)
    before = sum(proc.cpu_times()[:2])
    wait_until(lambda: sum(proc.cpu_times()[:2]) > before + cpu_s, 60, "the server never started sampling")


@pytest.fixture
def processes():
    started: list[subprocess.Popen] = []
    yield started
    for process in started:  # a test that failed before its server exited
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def test_sigterm_cuts_a_generation_that_outlasts_the_drain_and_the_process_exits(processes):
    drain_s = 2.0
    process, port = start_serve("--drain-s", str(drain_s))
    processes.append(process)
    call = Call(port, {**ASK, "n": 8, "max_tokens": 4000})  # ~40 s of decoding on 2 cores
    wait_until_sampling(process)
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=drain_s + 30)
    exited_after = time.monotonic() - signalled
    # drain_s, then uvicorn's 0.1 s pause and the cancellation; not the ~40 s the generation needs
    assert exited_after < drain_s + 5, f"the server exited {exited_after:.1f} s after SIGTERM with --drain-s {drain_s}"
    assert process.returncode in (0, -signal.SIGTERM), process.returncode
    call.join(timeout=30)
    assert call.error is None, call.error
    assert call.reply.status_code == 503, call.reply.text  # retryable, in OpenAI's error shape
    error = call.reply.json()["error"]
    assert error["code"] == "server_shutting_down" and "drain of 2 s" in error["message"], error


def test_sigterm_stops_accepting_and_lets_a_request_in_flight_finish(processes):
    process, port = start_serve("--drain-s", "60")
    processes.append(process)
    call = Call(port, {**ASK, "n": 1, "max_tokens": 2500})  # a few seconds of decoding
    wait_until_sampling(process)
    process.send_signal(signal.SIGTERM)
    # no new connections while it drains
    wait_until(lambda: not _accepts(port), 10, "the server still accepted connections after SIGTERM")
    call.join(timeout=120)
    assert call.error is None, call.error
    assert call.reply.status_code == 200, call.reply.text
    [choice] = call.reply.json()["choices"]
    assert len(choice["token_ids"]) == 2500 and choice["finish_reason"] == "length"  # finished, not cut
    answered = time.monotonic()
    process.wait(timeout=30)
    assert time.monotonic() - answered < 10, "the server lingered after its last request was answered"
    assert process.returncode in (0, -signal.SIGTERM), process.returncode


def _accepts(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
        return True
    except httpx.HTTPError:
        return False


def test_the_multi_tenant_service_has_the_time_limit_and_the_drain_too(processes, tmp_path):
    process, port = start_hone_serve_home(tmp_path / "home", ("tiny",), "--request-timeout-s", "2", "--drain-s", "1")
    processes.append(process)
    headers = {"Authorization": f"Bearer {new_tenant_key(tmp_path / 'home')}"}
    created = httpx.post(f"http://127.0.0.1:{port}/v1/hone/models", json={"name": "m", "base_model": "tiny", "lora_rank": 0}, headers=headers, timeout=120)
    assert created.status_code == 200, created.text
    long = {**ASK, "model": "m", "n": 8, "max_tokens": 4000}  # ~40 s of decoding on 2 cores
    over = Call(port, long, headers)
    over.join(timeout=60)
    assert over.reply is not None and over.reply.status_code == 504, over.reply and over.reply.text
    assert "time limit of 2 s" in over.reply.json()["error"]["message"]
    # the training API's own sample route has the same limit
    sample = {"prompt_tokens": [1, 2, 3], "n": 8, "params": {"max_tokens": 4000, "temperature": 1.0}}
    low_level = httpx.post(f"http://127.0.0.1:{port}/v1/hone/models/m/sample", json=sample, headers=headers, timeout=60)
    assert low_level.status_code == 504 and low_level.json()["error"]["code"] == "request_timeout", low_level.text
    cut = Call(port, long, headers)
    wait_until_sampling(process)
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    assert time.monotonic() - signalled < 1 + 5, "the service outlived its drain"
    cut.join(timeout=30)
    assert cut.reply is not None and cut.reply.status_code == 503, cut.reply and cut.reply.text
