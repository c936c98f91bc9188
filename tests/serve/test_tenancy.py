"""Keys, tenants, names and limits, against a real `hone serve --home` process."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import openai
import pytest

from .conftest import create_model, datum, greedy, groups

HELLO = [{"role": "user", "content": "hi"}]


def test_missing_wrong_and_revoked_keys_get_401_on_every_route_but_health(server):
    # a key made and revoked through the CLI, as an operator would
    made = subprocess.run(
        [sys.executable, "-m", "hone.cli", "keys", "create", "--tenant", "carol", "--home", str(server.home)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    key = made.stdout.strip()
    assert key.startswith("hone-sk-") and "key " in made.stderr
    assert server.http(key).get("/v1/models").status_code == 200
    key_id = made.stderr.split()[1]
    subprocess.run([sys.executable, "-m", "hone.cli", "keys", "revoke", key_id, "--home", str(server.home)], check=True)
    listed = subprocess.run([sys.executable, "-m", "hone.cli", "keys", "list", "--home", str(server.home)], capture_output=True, text=True)
    assert "revoked" in listed.stdout and key not in listed.stdout  # only a prefix is ever shown

    routes = [
        ("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("GET", "/v1/hone/models"), ("POST", "/v1/hone/models"),
        ("POST", "/v1/hone/models/m/train_step"), ("DELETE", "/v1/hone/models/m"), ("GET", "/openapi.json"),
    ]  # fmt: skip
    for credentials in (None, "hone-sk-wrong", key):
        client = server.http(credentials)
        for method, path in routes:
            response = client.request(method, path, json={})
            assert response.status_code == 401, (credentials, path, response.text)
            error = response.json()["error"]
            assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
    assert server.http(None).get("/health").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        server.openai(key).chat.completions.create(model="m", messages=HELLO)


def test_two_tenants_cannot_see_or_touch_each_others_models(server):
    alice, bob = server.http(server.new_key()), server.http(server.new_key())
    create_model(alice, "secret")
    assert alice.post("/v1/hone/models/secret/train_step", json={"groups": groups(), "config": {"learning_rate": 1e-2}}).json()["step"] == 1
    assert alice.post("/v1/hone/models/secret/save_state", json={}).json() == {"checkpoint": "step-1", "step": 1}
    before = greedy(alice, "secret")

    # listing: bob sees none of alice's models or checkpoints
    assert bob.get("/v1/hone/models").json() == {"data": []}
    assert [m["id"] for m in bob.get("/v1/models").json()["data"]] == ["tiny"]  # the server's base model alone
    assert {m["id"] for m in alice.get("/v1/models").json()["data"]} == {"tiny", "secret", "secret@1"}

    # every route on alice's model answers bob exactly as a model that never existed does
    attempts = [
        ("POST", "chat", {"messages": HELLO, "max_tokens": 2}),
        ("POST", "sample", {"prompt_tokens": [1, 2], "params": {"max_tokens": 2}}),
        ("POST", "forward_backward", {"datums": [datum()]}),
        ("POST", "optim_step", {}),
        ("POST", "train_step", {"groups": groups()}),
        ("POST", "save_state", {"checkpoint": "mine"}),
        ("POST", "load_state", {"checkpoint": "step-1"}),
        ("GET", "checkpoints", None),
        ("DELETE", "checkpoints/step-1", None),
        ("DELETE", "", None),
    ]
    for target in ("secret", "secret@1"):
        for method, route, body in attempts:
            if target.endswith("@1") and route not in ("chat", "sample"):
                continue

            def call(name: str):
                if route == "chat":
                    return bob.post("/v1/chat/completions", json={"model": name, **body})
                path = f"/v1/hone/models/{name}" + (f"/{route}" if route else "")
                return bob.request(method, path, json=body)

            theirs, missing = call(target), call(target.replace("secret", "nosuch"))
            assert theirs.status_code == missing.status_code == 404, (route, theirs.text)
            assert theirs.json()["error"]["message"].replace("secret", "nosuch") == missing.json()["error"]["message"]
    with pytest.raises(openai.NotFoundError):
        server.openai(bob.headers["authorization"].split()[1]).chat.completions.create(model="secret", messages=HELLO, max_tokens=2)

    # bob's own model of the same name is a different model; alice's is untouched by all of the above
    create_model(bob, "secret")
    assert bob.get("/v1/hone/models").json()["data"][0]["step"] == 0
    assert bob.delete("/v1/hone/models/secret").json() == {"deleted": True}
    assert alice.get("/v1/hone/models").json()["data"] == [{"name": "secret", "base_model": "tiny", "lora_rank": 0, "step": 1}]
    assert [c["checkpoint"] for c in alice.get("/v1/hone/models/secret/checkpoints").json()["data"]] == ["step-1"]
    assert greedy(alice, "secret") == before
    assert alice.post("/v1/chat/completions", json={"model": "secret@1", "messages": HELLO, "max_tokens": 2}).status_code == 200


@pytest.mark.parametrize(
    "name", ["../escape", "..", "a..b", "a/b", "x@1", ".hidden", "-dash", "", "a" * 65, "sp ace", "nul\x00", "é"]
)
def test_bad_model_names_get_400_and_create_nothing_on_disk(server, name):
    client = server.http(server.new_key())
    before = server.files()
    response = client.post("/v1/hone/models", json={"name": name, "base_model": "tiny"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "name"
    assert server.files() == before


def test_autocast_bf16_takes_true_false_or_auto_and_anything_else_is_one_clear_400(server):
    client = server.http(server.new_key())
    before = server.files()
    response = client.post("/v1/hone/models", json={"name": "m", "base_model": "tiny", "options": {"autocast_bf16": "maybe"}})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "options.autocast_bf16" and 'must be true, false or "auto"' in error["message"], error
    assert server.files() == before
    create_model(client, "m", options={"autocast_bf16": "auto"})  # the server decides for its own hardware


def test_path_escapes_in_urls_and_checkpoint_names_get_4xx_and_create_nothing(server):
    client = server.http(server.new_key())
    create_model(client, "m")
    before = server.files()
    for path in ["/v1/hone/models/..%2F..%2Fescape/save_state", "/v1/hone/models/%2E%2E/save_state", "/v1/hone/models/a..b/save_state"]:
        response = client.post(path, json={})
        assert 400 <= response.status_code < 500, (path, response.text)
    for checkpoint in ["../../../escape", "..", "a/b", ".x", "x@1"]:
        response = client.post("/v1/hone/models/m/save_state", json={"checkpoint": checkpoint})
        assert response.status_code == 400, (checkpoint, response.text)
        response = client.post("/v1/hone/models/m/load_state", json={"checkpoint": checkpoint})
        assert response.status_code == 400, (checkpoint, response.text)
    assert server.files() == before
    for bad_base in ["/etc", "../tiny", "HuggingFaceTB/SmolLM2-135M"]:  # only the bases the operator offers
        response = client.post("/v1/hone/models", json={"name": "other", "base_model": bad_base})
        assert response.status_code == 400 and "not offered" in response.json()["error"]["message"]
    assert server.files() == before


def test_oversized_bodies_get_413_whether_declared_or_streamed_and_create_nothing(server):
    client = server.http(server.new_key())
    before = server.files()
    big = {"name": "big", "base_model": "tiny", "options": {}, "pad": "x" * (2 << 20)}  # 2 MiB against a 1 MiB limit
    declared = client.post("/v1/hone/models", json=big)
    assert declared.status_code == 413, declared.text
    assert "larger than this server's limit" in declared.json()["error"]["message"]

    def chunks():  # no Content-Length: the server must count what actually arrives
        yield b'{"name": "big", "pad": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    streamed = client.post("/v1/hone/models", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413, streamed.text
    assert server.files() == before
    assert client.get("/v1/hone/models").json() == {"data": []}


def test_counts_over_the_limits_get_400_with_one_sentence(server):
    client = server.http(server.new_key())
    create_model(client, "small", options={"max_seq_len": 16})
    cases = [
        ("/v1/hone/models/small/sample", {"prompt_tokens": [1, 2], "n": 65}, "n"),
        ("/v1/hone/models/small/sample", {"prompt_tokens": [1] * 5000}, "prompt"),
        ("/v1/hone/models/small/sample", {"prompt_tokens": [1, 2], "params": {"max_tokens": 10**6}}, "max_tokens"),
        ("/v1/hone/models/small/sample", {"prompt_tokens": [10**12]}, "vocabulary"),
        ("/v1/hone/models/small/forward_backward", {"datums": [datum()] * 1025}, "datums"),
        ("/v1/hone/models/small/forward_backward", {"datums": [{**datum(), "input_tokens": list(range(20)), "target_tokens": list(range(20)), "weights": [1] * 20, "sampler_logprobs": [0] * 20, "advantages": [1] * 20}]}, "max_seq_len"),
        ("/v1/hone/models/small/forward_backward", {"datums": [{**datum(), "weights": [1]}]}, "lengths"),
        ("/v1/hone/models/small/train_step", {"groups": groups() * 257}, "groups"),
        ("/v1/hone/models/small/train_step", {"groups": [{"trajectories": [{"turns": [{"prompt_tokens": [1], "completion_tokens": [2, 3], "completion_logprobs": [0.0]}], "reward": 1}, {"reward": 0}]}]}, "logprobs"),
        ("/v1/chat/completions", {"model": "small", "messages": HELLO, "n": 100}, "n"),
    ]  # fmt: skip
    for path, body, fragment in cases:
        response = client.post(path, json=body)
        assert response.status_code == 400, (path, fragment, response.text)
        message = response.json()["error"]["message"]
        assert fragment in message, (fragment, message)
        assert "\n" not in message and len(message) < 300, message  # one sentence, no traceback
    assert client.get("/v1/hone/models").json()["data"][0]["step"] == 0  # nothing was applied


def test_per_tenant_model_and_concurrency_limits_get_429(server):
    client = server.http(server.new_key())
    for i in range(3):
        create_model(client, f"m{i}")
    over = client.post("/v1/hone/models", json={"name": "m3", "base_model": "tiny"})
    assert over.status_code == 429 and "limit" in over.json()["error"]["message"]
    assert server.http(server.new_key()).post("/v1/hone/models", json={"name": "m3", "base_model": "tiny", "lora_rank": 0}).status_code == 200

    # two long samples in flight (the limit), then a third request from the same tenant
    slow = {"prompt_tokens": [1, 2, 3], "params": {"max_tokens": 3000, "temperature": 1.0, "seed": 0, "stop_token_ids": []}}
    key = client.headers["authorization"].split()[1]
    statuses = []

    def hold_a_slot() -> None:
        # a sample that arrives while one of the polls below holds a slot is turned away itself: retry it
        http, deadline = server.http(key), time.monotonic() + 60
        while (status := http.post("/v1/hone/models/m0/sample", json=slow).status_code) == 429 and time.monotonic() < deadline:
            time.sleep(0.01)
        statuses.append(status)

    threads = [threading.Thread(target=hold_a_slot) for _ in range(2)]
    for t in threads:
        t.start()
    # a request turned away is not counted in flight, so the third request can only get a 429
    # while both samples hold their slots: poll it until it does
    deadline = time.monotonic() + 60
    while (third := client.get("/v1/hone/models")).status_code != 429:
        assert all(t.is_alive() for t in threads), f"a sample finished ({statuses}) before a third request was turned away"
        assert time.monotonic() < deadline, "no 429 within 60 s of starting two long samples"
        time.sleep(0.01)
    other_tenant = server.http(server.new_key()).get("/v1/hone/models")
    assert all(t.is_alive() for t in threads), "the samples finished before the other tenant's request: it proves nothing"
    for t in threads:
        t.join()
    assert third.status_code == 429, third.text
    assert third.json()["error"]["type"] == "rate_limit_error"
    assert other_tenant.status_code == 200  # the limit is per tenant
    assert statuses == [200, 200]
    assert client.get("/v1/hone/models").status_code == 200  # and it frees up
