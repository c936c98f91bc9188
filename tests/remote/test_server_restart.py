"""Clients ride out a SIGKILLed `hone serve --home` that comes back on its port.

Each test has a server and a home of its own (the session's `service` fixture must not be killed).
The server first binds port 0; it is restarted on the port it had, so a client finds it again at
the URL it was given. The `hone train` test kills it once a step is logged, which lands in the
next step's rollouts (chat requests, retried by the openai client); the train_step test kills it
at the one moment a restart loses work: after forward_backward, before optim_step.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from hone.backends.remote import RemoteBackend
from hone.rl.step import TrainConfig, train_step
from hone.rl.trajectory import TrajectoryGroup

from ..serving import (
    new_tenant_key,
    start_hone_serve_home,
    wait_until,
    wait_until_serving,
)

TOY_ENV = Path(__file__).parents[1] / "rl" / "toy_env.py"
sys.path.insert(0, str(TOY_ENV.parent))
from toy_env import ToyEnv


class RestartableServer:
    """`hone serve --home HOME --model tiny`, which a test may SIGKILL and start again on the same port."""

    def __init__(self, home: Path):
        self.home = home
        self.process, self.port = start_hone_serve_home(home)
        self.key = new_tenant_key(home)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def restart(self) -> None:
        """Up again on the port it had, from what it left in its home."""
        command = [sys.executable, "-m", "hone.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port), "--home", str(self.home), "--model", "tiny"]  # fmt: skip
        log = self.home / "serve.log"
        with open(log, "ab") as output:  # the child keeps its own copy of the file
            env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
        assert wait_until_serving(self.process, log) == self.port

    def model_step(self, name: str) -> int:
        backend = RemoteBackend(self.url, self.key)
        try:
            return backend.model_info(name).step
        finally:
            backend.close()

    def log(self) -> str:
        return (self.home / "serve.log").read_text(errors="replace")[-3000:]


@pytest.fixture
def server(tmp_path):
    server = RestartableServer(tmp_path / "home")
    yield server
    server.process.kill()  # a no-op on one already gone
    server.process.wait(timeout=30)


def metric_rows(out: Path) -> list[dict]:
    file = out / "metrics.jsonl"
    return [json.loads(line) for line in file.read_text().splitlines()] if file.exists() else []


def test_hone_train_survives_a_sigkilled_server_restarted_on_its_port(server, tmp_path):
    out, steps = tmp_path / "run", 8
    command = [
        sys.executable, "-m", "hone.cli", "train", str(TOY_ENV), "--model", "tiny", "--lora-rank", "0", "--lr", "3e-2",
        "--steps", str(steps), "--group-size", "4", "--groups-per-step", "2", "--seed", "3", "--out", str(out),
        "--max-exceptions", "0", "--backend", server.url,
    ]  # fmt: skip
    client_log = tmp_path / "train.log"
    with open(client_log, "ab") as output:
        env = {**os.environ, "HONE_API_KEY": server.key, "TOKENIZERS_PARALLELISM": "false"}
        client = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        # 1) SIGKILL the server once the run has finished a step, while it is in the middle of the next ones
        wait_until(lambda: len(metric_rows(out)) >= 1 or client.poll() is not None, 120, "the run never logged a step")
        server.kill()
        killed_after = len(metric_rows(out))
        assert client.poll() is None and killed_after < steps, f"the run ended before the kill:\n{client_log.read_text()[-3000:]}"

        # 2) the same home, the same port: the client finds it again without being told
        server.restart()
        assert client.wait(timeout=120) == 0, client_log.read_text()[-3000:]
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(timeout=30)

    # 3) every step once, each with all its rollouts (--max-exceptions 0: a lost rollout fails the
    # run), and exactly one server step per step that trained
    rows = metric_rows(out)
    assert [row["step"] for row in rows] == list(range(1, steps + 1)), client_log.read_text()[-3000:]
    assert all(row["rollouts/ok"] == 8 and row["rollouts/failed"] == 0 for row in rows)  # 2 groups x 4 attempts
    trained = sum(row["train/skipped"] == 0 for row in rows)
    assert server.model_step("policy") == trained, (killed_after, rows, server.log())


class HoldFirstOptimStep(httpx.AsyncBaseTransport):
    """The network, except that the first optim_step waits until `release` is set before it is sent."""

    def __init__(self) -> None:
        self._network = httpx.AsyncHTTPTransport()
        self.forward_backward_answered = asyncio.Event()
        self.optim_step_held = asyncio.Event()
        self.release = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/optim_step") and not self.optim_step_held.is_set():
            self.optim_step_held.set()
            await self.release.wait()
        response = await self._network.handle_async_request(request)
        if request.url.path.endswith("/forward_backward") and response.status_code == 200:
            # the whole answer, not just its headers: a kill between the two made the client retry the
            # forward_backward on the restarted server, which then had gradients (seen once under load)
            await response.aread()
            self.forward_backward_answered.set()
        return response

    async def aclose(self) -> None:
        await self._network.aclose()


def test_gradients_lost_in_a_restart_between_forward_backward_and_optim_step_are_recomputed(server):
    setup = RemoteBackend(server.url, server.key)
    setup.add_model("held", "tiny", full_finetune=True)
    setup.close()

    async def scenario() -> dict[str, float]:
        transport = HoldFirstOptimStep()  # its connections belong to this event loop: only async calls here
        backend = RemoteBackend(server.url, server.key, transport=transport)
        async with backend.openai_client() as client:
            attempts = [await ToyEnv().rollout(client, "held", "Write", seed=seed, temperature=1.0) for seed in range(6)]
        groups = [TrajectoryGroup(trajectories=attempts)]
        assert len(set(groups[0].rewards)) > 1, "every attempt scored the same: nothing to train on"
        try:
            step = asyncio.ensure_future(train_step(backend, "held", groups, TrainConfig(learning_rate=1e-3)))
            # kill while the gradients exist only in the server's memory and the optim_step is not sent yet
            await asyncio.wait_for(asyncio.gather(transport.optim_step_held.wait(), transport.forward_backward_answered.wait()), 60)
            await asyncio.to_thread(server.kill)
            await asyncio.to_thread(server.restart)
            transport.release.set()
            return await asyncio.wait_for(step, 120)
        finally:
            backend.close()
            await transport.aclose()

    metrics = asyncio.run(scenario())
    # the held optim_step found no gradients on the restarted server (409); train_step computed them again
    assert metrics["train/gradients_recomputed"] == 1.0 and metrics["train/skipped"] == 0.0
    assert server.model_step("held") == 1, server.log()  # one optimizer step, not zero, not two
