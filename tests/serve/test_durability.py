"""Durability: SIGKILL and restart, retried request ids, and the crash window between disk and SQLite."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import psutil
import pytest

from hone.service.service import Service, ServiceConfig
from hone.types import ModelSpec, SamplingParams

from ..serving import wait_until
from .conftest import Server, create_model, datum, greedy, groups


def train(client, request_id: str, learning_rate: float = 1e-2, model: str = "policy"):
    return client.post(
        f"/v1/hone/models/{model}/train_step",
        json={"groups": groups(), "config": {"learning_rate": learning_rate}, "request_id": request_id},
    )


def train_body(request_id: str, learning_rate: float = 1e-2) -> dict:
    return {"groups": groups(), "config": {"learning_rate": learning_rate}, "request_id": request_id}


def post_and_wait_until_the_server_has_read_it(server: Server, key: str, path: str, body: dict) -> socket.socket:
    """POST `body` on a raw connection and return once the server process has accepted the
    connection and read every byte of the request: it is then being handled, not merely queued in
    the kernel. The caller owns the socket (its response may never come)."""
    payload = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    connection.sendall(head.encode() + payload)
    client_port = connection.getsockname()[1]

    def read_by_the_server() -> bool:
        accepted = any(c.raddr and c.raddr.port == client_port for c in psutil.Process(server.process.pid).net_connections(kind="tcp"))
        return accepted and unread_bytes(server.port, client_port) in (0, None)  # None: no /proc to ask (not Linux)

    wait_until(read_by_the_server, 30, f"the server never read the request to {path}")
    return connection


def unread_bytes(server_port: int, client_port: int) -> int | None:
    """Bytes the kernel holds for the server's end of the connection that the server has not read
    (rx_queue in /proc/net/tcp); None where /proc/net/tcp does not exist."""
    table = Path("/proc/net/tcp")
    if not table.exists():
        return None
    for line in table.read_text().splitlines()[1:]:
        local, remote, _, queues = line.split()[1:5]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
            return int(queues.split(":")[1], 16)
    return None


def test_sigkill_mid_training_then_restart_keeps_every_checkpoint_servable_as_name_at_step(tmp_path):
    server = Server(tmp_path / "home").start()
    try:
        key = server.new_key("alice")
        client = server.http(key)
        create_model(client, "policy", options={"seed": 3})
        served = {}
        for step in (1, 2, 3):
            assert train(client, f"step-{step}").json()["step"] == step
            assert client.post("/v1/hone/models/policy/save_state", json={"request_id": f"save-{step}"}).json()["step"] == step
            served[f"policy@{step}"] = greedy(client, f"policy@{step}")  # servable the moment it is written
        assert served["policy@3"] == greedy(client, "policy")  # NAME is the latest weights

        # a fourth step in flight when the server is killed: the server has read the whole request
        in_flight = post_and_wait_until_the_server_has_read_it(server, key, "/v1/hone/models/policy/train_step", train_body("step-4"))
        server.kill()
        in_flight.close()

        server.start()  # same --home, new port
        client = server.http(key)
        assert [c["checkpoint"] for c in client.get("/v1/hone/models/policy/checkpoints").json()["data"]] == ["step-1", "step-2", "step-3"]
        assert {m["id"] for m in client.get("/v1/models").json()["data"]} == {"tiny", "policy", "policy@1", "policy@2", "policy@3"}
        for name, logprobs in served.items():
            assert greedy(client, name) == pytest.approx(logprobs, abs=1e-5), name
        [model] = client.get("/v1/hone/models").json()["data"]
        assert model["step"] in (3, 4)  # step 4 either completed before the kill or never happened
        if model["step"] == 3:
            assert greedy(client, "policy") == pytest.approx(served["policy@3"], abs=1e-5)
        # the client retries step 4 with its id: it is applied exactly once either way
        assert train(client, "step-4").json()["step"] == 4
        assert train(client, "step-4").json()["step"] == 4
        assert client.get("/v1/hone/models").json()["data"][0]["step"] == 4
    finally:
        server.stop()


def test_a_retried_request_id_is_applied_once(server):
    client = server.http(server.new_key())
    create_model(client, "policy")
    create_model(client, "twin")  # the same starting weights; every step is applied to it exactly once, by hand
    first = train(client, "t-1")
    after_first = greedy(client, "policy")
    again = train(client, "t-1")
    assert again.json() == first.json() and first.json()["step"] == 1
    assert greedy(client, "policy") == after_first  # weights did not move a second time
    assert train(client, "twin-t-1", model="twin").json()["step"] == 1
    assert greedy(client, "twin") == pytest.approx(after_first, abs=1e-6)  # the twin tracks policy

    # forward_backward sent twice with one id must accumulate its gradient once. Its own response
    # cannot show that (the weights do not move between the two calls), and Adam's first update is
    # almost blind to the gradient's scale; the gradient norm the optim_step reports is not:
    # applied twice, it would be twice the twin's, who got the same datum once
    def forward_backward(model: str, request_id: str) -> dict:
        response = client.post(f"/v1/hone/models/{model}/forward_backward", json={"datums": [datum()], "request_id": request_id})
        assert response.status_code == 200, response.text
        return response.json()

    def optim(model: str, request_id: str):
        return client.post(f"/v1/hone/models/{model}/optim_step", json={"adam": {"learning_rate": 1e-2}, "request_id": request_id})

    first_fb = forward_backward("policy", "fb-1")
    assert forward_backward("policy", "fb-1") == first_fb
    forward_backward("twin", "twin-fb-1")
    first_optim = optim("policy", "o-1").json()
    twin_optim = optim("twin", "twin-o-1").json()
    assert first_optim["step"] == twin_optim["step"] == 2
    assert first_optim["metrics"]["grad_norm"] > 0
    assert first_optim["metrics"]["grad_norm"] == pytest.approx(twin_optim["metrics"]["grad_norm"], rel=1e-4), (
        "the replayed forward_backward was applied again: its gradient counted twice"
    )
    after_optim = greedy(client, "policy")
    assert after_optim == pytest.approx(greedy(client, "twin"), abs=1e-5)
    assert after_optim != after_first
    # and the optim_step sent twice is applied once: same response, same weights
    assert optim("policy", "o-1").json() == first_optim
    assert greedy(client, "policy") == after_optim

    save = lambda: client.post("/v1/hone/models/policy/save_state", json={"checkpoint": "kept", "request_id": "s-1"})  # noqa: E731
    assert save().json() == save().json() == {"checkpoint": "kept", "step": 2}
    assert len(client.get("/v1/hone/models/policy/checkpoints").json()["data"]) == 1
    # an id already used by another kind of request is a conflict, not a silent replay
    reused = client.post("/v1/hone/models/policy/optim_step", json={"request_id": "t-1"})
    assert reused.status_code == 409 and "request_id" in reused.json()["error"]["message"]
    # an optimizer step with no gradients to apply is refused rather than taken empty
    empty = client.post("/v1/hone/models/policy/optim_step", json={"request_id": "o-2"})
    assert empty.status_code == 409 and model_step(client, "policy") == 2


def model_step(client, name: str) -> int:
    [model] = [m for m in client.get("/v1/hone/models").json()["data"] if m["name"] == name]
    return model["step"]


class Killed(BaseException):
    """Not an Exception: nothing on the way up may catch it, as nothing runs after a SIGKILL."""


def test_a_step_on_disk_but_not_yet_in_sqlite_is_recorded_at_restart_and_not_applied_twice(tmp_path, monkeypatch):
    """The one crash window of an optimizer step: its state is written, the process dies before the
    SQLite commit. Simulated in-process: the commit raises, then a fresh Service restores."""
    from hone.rl.model import TrainConfig
    from hone.rl.trajectory import TrajectoryGroup

    config = ServiceConfig(home=tmp_path, base_models=("tiny",))
    batch = [TrajectoryGroup(**g) for g in groups()]

    async def before_the_crash():
        service = Service(config)
        tenant = service.store.tenant("t", create=True)
        await service.create_model(tenant, "policy", ModelSpec(base_model="tiny", lora_rank=0), False)
        real = service.store.transaction

        def dies_at_commit():
            if service.backend.step("1/policy") == 1:
                raise Killed()  # as if SIGKILL landed right here
            return real()

        monkeypatch.setattr(service.store, "transaction", dies_at_commit)
        with pytest.raises(Killed):
            await service.train_step(tenant, "policy", batch, TrainConfig(learning_rate=1e-2), "step-1")
        weights = await service.sample(tenant, "policy", [1, 2, 3], 1, SamplingParams(max_tokens=4, temperature=0))
        service.backend.close()
        return tenant, weights[0].logprobs

    tenant, logprobs_after_step = asyncio.run(before_the_crash())

    async def after_the_restart():
        service = Service(config)
        assert await service.restore() == ["tenant 1 model policy: step 1 from state 000000000001"]
        assert service.store.completed(tenant.id, "step-1").step == 1  # recorded from the state's request file
        replay = await service.train_step(tenant, "policy", batch, TrainConfig(learning_rate=1e-2), "step-1")
        assert replay["step"] == 1  # the stored response: not applied a second time
        sampled = await service.sample(tenant, "policy", [1, 2, 3], 1, SamplingParams(max_tokens=4, temperature=0))
        service.close()
        return sampled[0].logprobs

    assert asyncio.run(after_the_restart()) == pytest.approx(logprobs_after_step, abs=1e-5)


def test_an_unreadable_autosaved_state_falls_back_to_the_newest_checkpoint_and_says_so(tmp_path):
    from hone.rl.model import TrainConfig
    from hone.rl.trajectory import TrajectoryGroup

    config = ServiceConfig(home=tmp_path, base_models=("tiny",))
    batch = [TrajectoryGroup(**g) for g in groups()]

    async def train_then_corrupt():
        service = Service(config)
        tenant = service.store.tenant("t", create=True)
        await service.create_model(tenant, "policy", ModelSpec(base_model="tiny", lora_rank=0), False)
        await service.train_step(tenant, "policy", batch, TrainConfig(learning_rate=1e-2), None)
        await service.save_state(tenant, "policy", None, None)
        await service.train_step(tenant, "policy", batch, TrainConfig(learning_rate=1e-2), None)
        service.close()
        [state] = [p for p in (tmp_path / "tenants/1/policy/states").iterdir() if p.is_dir()]
        (state / "model.safetensors").write_bytes(b"torn")

    async def restart():
        service = Service(config)
        [line] = await service.restore()
        service.close()
        return line

    asyncio.run(train_then_corrupt())
    line = asyncio.run(restart())
    assert line.startswith("tenant 1 model policy: step 1 from checkpoint step-1; state ") and "unusable" in line
