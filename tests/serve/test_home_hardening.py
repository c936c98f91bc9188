"""What `hone serve --home` does with its directory and its names: private files, names that a
case-insensitive disk would merge, checkpoints named with digits, a corrupt journal record."""

from __future__ import annotations

import asyncio
import json
import stat

from hone.service import Service, ServiceConfig
from hone.types import ModelSpec

from .conftest import create_model, greedy


def test_home_is_private_to_its_owner(server):
    client = server.http(server.new_key())
    create_model(client, "private")
    assert client.post("/v1/hone/models/private/save_state", json={}).status_code == 200
    paths = [server.home, *(p for p in server.home.rglob("*") if p.name != "serve.log")]  # the log is the test harness's
    assert any(p.name == "trainer_state.json" for p in paths)  # checkpoint files are among those checked
    loose = [f"{p} {stat.filemode(p.stat().st_mode)}" for p in paths if p.stat().st_mode & 0o077]
    assert loose == [], "group or others may read these"


def test_names_that_differ_only_by_case_are_refused(server):
    client = server.http(server.new_key())
    create_model(client, "Agent")
    twin = client.post("/v1/hone/models", json={"name": "agent", "base_model": "tiny", "lora_rank": 0})
    assert twin.status_code == 409 and "only by case" in twin.json()["error"]["message"]
    assert client.post("/v1/hone/models/Agent/save_state", json={"checkpoint": "Best"}).status_code == 200
    clash = client.post("/v1/hone/models/Agent/save_state", json={"checkpoint": "best"})
    assert clash.status_code == 409 and clash.json()["error"]["param"] == "checkpoint"
    assert [c["checkpoint"] for c in client.get("/v1/hone/models/Agent/checkpoints").json()["data"]] == ["Best"]


def test_a_checkpoint_named_with_digits_alone_stays_reachable(server):
    client = server.http(server.new_key())
    create_model(client, "digits")
    # step 0 saved under the name "2024": NAME@2024 has no step 2024, so it means that checkpoint
    assert client.post("/v1/hone/models/digits/save_state", json={"checkpoint": "2024"}).json()["step"] == 0
    assert "digits@0" in [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert greedy(client, "digits@2024") == greedy(client, "digits@0") == greedy(client, "digits")


def test_start_up_skips_a_corrupt_request_record_and_keeps_the_state(tmp_path):
    home = tmp_path / "home"
    service = Service(ServiceConfig(home=home, base_models=("tiny",)))

    async def make() -> None:
        tenant = service.store.tenant("t", create=True)
        await service.create_model(tenant, "m", ModelSpec(base_model="tiny", lora_rank=0), exist_ok=False)
        save = service.backend.trainer("1/m").save_state
        service.journal.write_state(tenant.id, "m", save, {"request_id": "r1", "route": "optim_step", "step": 0, "response": {}})

    asyncio.run(make())
    service.close()
    [record] = (home / "tenants").rglob("*.request.json")
    record.write_text("{ not json")
    restarted = Service(ServiceConfig(home=home, base_models=("tiny",)))
    try:
        [line] = asyncio.run(restarted.restore())
        assert line.startswith("tenant 1 model m: step 0 from state")
    finally:
        restarted.close()
    assert json.loads(json.dumps(line))  # one plain line, no traceback
