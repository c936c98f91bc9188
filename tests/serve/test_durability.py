"""Durability: SIGKILL and restart, retried request ids, and the crash window between disk and SQLite."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from hone.server.service import Service, ServiceConfig
from hone.types import SamplingParams

from .conftest import Server, create_model, datum, greedy, groups


def train(client, request_id: str, learning_rate: float = 1e-2):
    return client.post(
        "/v1/hone/models/policy/train_step",
        json={"groups": groups(), "config": {"learning_rate": learning_rate}, "request_id": request_id},
    )


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

        # a fourth step in flight when the server is killed
        in_flight = threading.Thread(target=lambda: _swallow(lambda: train(server.http(key), "step-4")))
        in_flight.start()
        time.sleep(0.05)
        server.kill()
        in_flight.join()

        server.start()  # same --home, new port
        client = server.http(key)
        assert [c["checkpoint"] for c in client.get("/v1/hone/models/policy/checkpoints").json()["data"]] == ["step-1", "step-2", "step-3"]
        assert {m["id"] for m in client.get("/v1/models").json()["data"]} == {"policy", "policy@1", "policy@2", "policy@3"}
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


def _swallow(call):
    try:
        call()
    except Exception:  # the connection dies with the server: expected
        pass


def test_a_retried_request_id_is_applied_once(server):
    client = server.http(server.new_key())
    create_model(client, "policy")
    first = train(client, "t-1")
    after_first = greedy(client, "policy")
    again = train(client, "t-1")
    assert again.json() == first.json() and first.json()["step"] == 1
    assert greedy(client, "policy") == after_first  # weights did not move a second time

    fb = lambda: client.post("/v1/hone/models/policy/forward_backward", json={"datums": [datum()], "request_id": "fb-1"})  # noqa: E731
    assert fb().json() == fb().json()
    optim = lambda: client.post("/v1/hone/models/policy/optim_step", json={"adam": {"learning_rate": 1e-2}, "request_id": "o-1"})  # noqa: E731
    first_optim = optim().json()
    after_optim = greedy(client, "policy")
    assert optim().json() == first_optim and first_optim["step"] == 2
    assert greedy(client, "policy") == after_optim
    assert after_optim != after_first

    save = lambda: client.post("/v1/hone/models/policy/save_state", json={"checkpoint": "kept", "request_id": "s-1"})  # noqa: E731
    assert save().json() == save().json() == {"checkpoint": "kept", "step": 2}
    assert len(client.get("/v1/hone/models/policy/checkpoints").json()["data"]) == 1
    # an id already used by another kind of request is a conflict, not a silent replay
    reused = client.post("/v1/hone/models/policy/optim_step", json={"request_id": "t-1"})
    assert reused.status_code == 409 and "request_id" in reused.json()["error"]["message"]
    # an optimizer step with no gradients to apply is refused rather than taken empty
    empty = client.post("/v1/hone/models/policy/optim_step", json={"request_id": "o-2"})
    assert empty.status_code == 409 and client.get("/v1/hone/models").json()["data"][0]["step"] == 2


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
        await service.create_model(tenant, "policy", "tiny", 0, {}, False)
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
        await service.create_model(tenant, "policy", "tiny", 0, {}, False)
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
