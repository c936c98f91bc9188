"""A real `hone serve --home` process on 127.0.0.1 (tiny model, real SQLite), and helpers to talk to it."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from hone.backends.remote import RemoteBackend, RetryPolicy

from ..serving import new_tenant_key, start_hone_serve_home

FAST_RETRY = RetryPolicy(attempts=8, backoff_s=0.1, max_backoff_s=1.0)
# small limits, so the tests can cross them cheaply
LIMIT_ARGS = ("--max-models", "3", "--max-concurrent", "2", "--max-body-mb", "1")


@dataclass
class Server:
    home: Path
    args: tuple[str, ...] = ()
    process: subprocess.Popen | None = None
    port: int = 0
    outside: Path | None = None  # holds the server's working and temporary folders: nothing may appear there

    def start(self) -> "Server":
        cwd = tmpdir = None
        if self.outside is not None:
            (cwd := self.outside / "cwd").mkdir(parents=True, exist_ok=True)
            (tmpdir := self.outside / "tmp").mkdir(parents=True, exist_ok=True)
        self.process, self.port = start_hone_serve_home(self.home, ("tiny",), *self.args, cwd=cwd, tmpdir=tmpdir)
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, nothing is flushed."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def new_key(self, tenant: str | None = None) -> str:
        return new_tenant_key(self.home, tenant)

    def http(self, key: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)

    def remote(self, key: str | None = None) -> RemoteBackend:
        """A RemoteBackend on this server (a new tenant's key if None) that retries quickly."""
        return RemoteBackend(self.url, key or self.new_key(), retry=FAST_RETRY)

    def openai(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)

    def files(self) -> set[str]:
        """Every path under the tenants' data directory."""
        root = self.home / "tenants"
        return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("serve-home"), LIMIT_ARGS, outside=tmp_path_factory.mktemp("serve-outside")).start()
    yield server
    server.stop()


# --------------------------------------------------------------------------- request bodies
def datum(advantage: float = 1.0) -> dict:
    return {
        "input_tokens": [1, 2, 3, 4, 5],
        "target_tokens": [2, 3, 4, 5, 6],
        "weights": [0, 0, 1, 1, 1],
        "sampler_logprobs": [0, 0, -10.0, -10.0, -10.0],
        "advantages": [0, 0, advantage, advantage, advantage],
    }


def groups() -> list[dict]:
    """One group of two scored attempts at one prompt: a non-zero advantage for each."""
    turn = lambda completion: {"prompt_tokens": [1, 2, 3, 4], "completion_tokens": completion, "completion_logprobs": [-10.0] * len(completion)}  # noqa: E731
    return [{"trajectories": [{"turns": [turn([5, 6, 7])], "reward": 1.0}, {"turns": [turn([8, 9, 10])], "reward": 0.0}]}]


def create_model(client: httpx.Client, name: str, **extra) -> dict:
    response = client.post("/v1/hone/models", json={"name": name, "base_model": "tiny", "lora_rank": 0, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def greedy(client: httpx.Client, served: str) -> list[float]:
    """Logprobs of a greedy 6-token sample from `served`: they move whenever the weights move."""
    response = client.post(
        f"/v1/hone/models/{served}/sample", json={"prompt_tokens": [1, 2, 3], "params": {"max_tokens": 6, "temperature": 0}}
    )
    assert response.status_code == 200, response.text
    return response.json()["sequences"][0]["logprobs"]
