"""The traffic log and feedback against a real `hone serve --home` (issue 17): what was served is
kept token-exact once a model's log is on, feedback lands on it as a reward, other tenants' ids
read as unknown, bad feedback is a 400, and a SIGKILL loses nothing that was acknowledged."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import httpx
import pytest

from hone.traffic import UNLOGGED_HEADERS

from .conftest import Server, create_model, groups

HELLO = [{"role": "user", "content": "hi"}]


def chat(server: Server, key: str, model: str, **extra) -> dict:
    """One chat completion through the real `openai` client, as a plain dict (extensions included)."""
    response = server.openai(key).chat.completions.create(model=model, messages=HELLO, max_tokens=5, seed=1, **extra)
    return response.model_dump()


def turn_on(client: httpx.Client, model: str, **settings) -> dict:
    response = client.put(f"/v1/hone/models/{model}/traffic", json=settings)
    assert response.status_code == 200, response.text
    return response.json()


def logged(client: httpx.Client, model: str) -> dict:
    response = client.get(f"/v1/hone/models/{model}/traffic/completions")
    assert response.status_code == 200, response.text
    return response.json()


def feedback(client: httpx.Client, **body) -> httpx.Response:
    return client.post("/v1/hone/feedback", json=body)


def error_message(response: httpx.Response) -> str:
    return response.json()["error"]["message"]


@pytest.fixture(scope="module")
def tenant(server):
    key = server.new_key()
    with server.http(key) as client:
        create_model(client, "served")
        yield key, client


def test_a_logged_model_keeps_what_it_served_token_exact_with_its_version(server, tenant):
    key, client = tenant
    info = turn_on(client, "served")
    assert info["settings"]["enabled"] and info["completions"] == 0

    plain = chat(server, key, "served", n=2, extra_body={"task_key": "greeting"})
    stream = server.openai(key).chat.completions.create(model="served", messages=HELLO, max_tokens=5, stream=True, seed=2)
    chunks = list(stream)
    answer = server.openai(key).responses.create(model="served", input="hi", max_output_tokens=5)

    rows = {row["id"]: row for row in logged(client, "served")["data"]}
    assert set(rows) == {plain["id"], chunks[0].id, answer.id}  # the ids the client saw, streamed or not
    row = rows[plain["id"]]
    assert row["model"] == "served" and row["version"] == "served@0" and row["task_key"] == "greeting"
    assert [r["seq"] for r in logged(client, "served")["data"]] == sorted(r["seq"] for r in rows.values())
    assert row["request"]["messages"] == HELLO and row["endpoint"] == "chat.completions"
    assert row["prompt_token_ids"] == plain["prompt_token_ids"]
    for choice, kept in zip(plain["choices"], row["choices"]):
        assert kept["token_ids"] == choice["token_ids"] and kept["logprobs"] == choice["token_logprobs"]
    streamed = [c.choices[0].model_extra.get("token_ids") for c in chunks if c.choices and c.choices[0].finish_reason]
    assert rows[chunks[0].id]["choices"][0]["token_ids"] == streamed[0]
    assert rows[answer.id]["endpoint"] == "responses" and rows[answer.id]["choices"][0]["token_ids"] == answer.model_extra["token_ids"]


def test_feedback_lands_as_a_reward_and_a_retry_adds_nothing(server, tenant):
    key, client = tenant
    turn_on(client, "served", labels={"good": 1.0, "bad": -1.0})
    completion = chat(server, key, "served", n=2)

    by_number = feedback(client, completion_id=completion["id"], reward=0.25, choice=1, feedback_id="fb-1")
    assert by_number.status_code == 200, by_number.text
    assert by_number.json()["reward"] == 0.25 and by_number.json()["choice"] == 1
    by_label = feedback(client, completion_id=completion["id"], label="bad")
    assert by_label.json()["reward"] == -1.0 and by_label.json()["label"] == "bad"
    again = feedback(client, completion_id=completion["id"], reward=0.25, choice=1, feedback_id="fb-1")
    assert again.json() == by_number.json()  # the client's retry: stored once

    page = logged(client, "served")
    mine = [f for f in page["feedback"] if f["completion_id"] == completion["id"]]
    assert sorted(f["reward"] for f in mine) == [-1.0, 0.25]


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"completion_id": "chatcmpl-nope", "reward": 1.0}, 404, "no logged completion"),
        ({"rollout_id": "ro-nope", "reward": 1.0}, 404, "no logged rollout"),
        ({"completion_id": "X", "reward": "good"}, 400, "reward"),
        ({"completion_id": "X", "reward": True}, 400, "reward"),
        ({"completion_id": "X", "reward": 1e9}, 400, "reward"),
        ({"completion_id": "X"}, 400, "exactly one of reward"),
        ({"completion_id": "X", "reward": 1.0, "label": "thumbs_up"}, 400, "exactly one of reward"),
        ({"reward": 1.0}, 400, "exactly one of completion_id and rollout_id"),
        ({"completion_id": "X", "reward": 1.0, "stars": 5}, 400, "stars"),
    ],
)
def test_bad_feedback_is_one_clear_sentence(server, tenant, body, status, words):
    _, client = tenant
    response = feedback(client, **body)
    assert response.status_code == status, response.text
    assert words in error_message(response) and "Traceback" not in response.text


def test_a_label_or_choice_the_completion_does_not_have_is_a_400_naming_what_it_has(server, tenant):
    key, client = tenant
    turn_on(client, "served")
    completion = chat(server, key, "served")
    response = feedback(client, completion_id=completion["id"], label="meh")
    assert response.status_code == 400 and "accepted, rejected, thumbs_down, thumbs_up" in error_message(response)
    response = feedback(client, completion_id=completion["id"], reward=1.0, choice=3)
    assert response.status_code == 400 and "has 1 choice" in error_message(response)


def test_another_tenants_completions_and_logs_read_as_unknown(server, tenant):
    key, client = tenant
    turn_on(client, "served")
    completion = chat(server, key, "served")
    with server.http(server.new_key()) as stranger:
        response = feedback(stranger, completion_id=completion["id"], reward=1.0)
        assert response.status_code == 404, response.text
        assert stranger.get("/v1/hone/models/served/traffic/completions").status_code == 404
        assert stranger.put("/v1/hone/models/served/traffic", json={}).status_code == 404
    assert all(f["completion_id"] != completion["id"] for f in logged(client, "served")["feedback"])


def test_a_model_whose_log_is_off_or_a_request_marked_unlogged_keeps_nothing(server):
    key = server.new_key()
    with server.http(key) as client:
        create_model(client, "quiet")
        completion = chat(server, key, "quiet")
        chat(server, key, "tiny")  # a base model: never logged
        assert client.get("/v1/hone/models/quiet/traffic").json()["completions"] == 0
        assert feedback(client, completion_id=completion["id"], reward=1.0).status_code == 404
        turn_on(client, "quiet", enabled=False)
        chat(server, key, "quiet")
        assert client.get("/v1/hone/models/quiet/traffic").json()["completions"] == 0
        turn_on(client, "quiet")  # on, but a validation call says it is not traffic: served, not kept
        unlogged = chat(server, key, "quiet", extra_headers=UNLOGGED_HEADERS)
        assert unlogged["choices"][0]["message"] and client.get("/v1/hone/models/quiet/traffic").json()["completions"] == 0
        responses = server.openai(key).with_options(default_headers=UNLOGGED_HEADERS).responses.create(model="quiet", input="hi", max_output_tokens=4)
        assert responses.output and client.get("/v1/hone/models/quiet/traffic").json()["completions"] == 0
        chat(server, key, "quiet")
        assert client.get("/v1/hone/models/quiet/traffic").json()["completions"] == 1


def test_retention_keeps_the_newest_and_deleting_forgets_everything(server):
    key = server.new_key()
    with server.http(key) as client:
        create_model(client, "kept")
        turn_on(client, "kept")
        ids = [chat(server, key, "kept")["id"] for _ in range(3)]
        assert feedback(client, completion_id=ids[0], reward=1.0).status_code == 200
        info = turn_on(client, "kept", max_completions=2)  # applies at once
        assert (info["completions"], info["feedback"]) == (2, 0)
        assert [row["id"] for row in logged(client, "kept")["data"]] == ids[1:]
        assert client.delete("/v1/hone/models/kept/traffic").json() == {"deleted": 2}
        assert client.get("/v1/hone/models/kept/traffic").json()["completions"] == 0

        chat(server, key, "kept")
        assert client.delete("/v1/hone/models/kept").status_code == 200  # the model's log goes with it
        create_model(client, "kept")
        info = client.get("/v1/hone/models/kept/traffic").json()
        assert (info["completions"], info["settings"]["enabled"]) == (0, False)


def test_each_completion_names_the_version_that_served_it(server):
    key = server.new_key()
    with server.http(key) as client:
        create_model(client, "versioned")
        turn_on(client, "versioned")
        assert client.post("/v1/hone/models/versioned/save_state", json={}).status_code == 200
        trained = client.post("/v1/hone/models/versioned/train_step", json={"groups": groups(), "config": {"learning_rate": 1e-2}})
        assert trained.json()["step"] == 1, trained.text
        live, old = chat(server, key, "versioned"), chat(server, key, "versioned@0")
        live_by_name = chat(server, key, "versioned@live")
        versions = {row["id"]: row["version"] for row in logged(client, "versioned")["data"]}
        assert versions == {live["id"]: "versioned@1", old["id"]: "versioned@0", live_by_name["id"]: "versioned@1"}


def test_a_rollouts_calls_carry_its_id_and_task_and_take_feedback_as_a_whole(server):
    key = server.new_key()
    with server.http(key) as client:
        create_model(client, "agent")
        turn_on(client, "agent")
        rollout = client.post("/v1/rollouts", json={"model": "agent", "task_id": "task-7"}).json()
        agent = server.openai(rollout["api_key"])
        agent.base_url = f"{server.url}/v1/rollouts/{rollout['id']}"
        agent.chat.completions.create(model="agent", messages=HELLO, max_tokens=4)
        rows = logged(client, "agent")["data"]
        assert [(r["rollout_id"], r["task_key"]) for r in rows] == [(rollout["id"], "task-7")]
        given = feedback(client, rollout_id=rollout["id"], label="thumbs_up")
        assert given.status_code == 200 and given.json()["reward"] == 1.0


def test_a_sigkill_loses_no_acknowledged_completion_or_feedback(tmp_path):
    server = Server(tmp_path / "home").start()
    try:
        key = server.new_key("durable")
        with server.http(key) as client:
            create_model(client, "agent")
            turn_on(client, "agent")
            ids = [chat(server, key, "agent")["id"] for _ in range(4)]
            given = [feedback(client, completion_id=i, reward=float(k)).json()["id"] for k, i in enumerate(ids)]
        server.kill()
        with sqlite3.connect(tmp_path / "home" / "traffic.sqlite3") as db:  # what is on disk, before any restart
            assert {r[0] for r in db.execute("SELECT id FROM completions")} == set(ids)
            assert {r[0] for r in db.execute("SELECT id FROM feedback")} == set(given)
        server.start()
        with server.http(key) as client:
            page = logged(client, "agent")
            assert [row["id"] for row in page["data"]] == ids
            assert sorted((f["completion_id"], f["reward"]) for f in page["feedback"]) == sorted(zip(ids, [0.0, 1.0, 2.0, 3.0]))
            assert json.loads(json.dumps(page["data"][0]["choices"][0]["token_ids"]))  # whole, readable records
    finally:
        server.stop()


def test_remote_backend_trains_a_served_model_on_its_logged_traffic(server):
    from hone.rl.step import TrainConfig
    from hone.traffic.train import TrafficTrainConfig, train_from_traffic

    backend = server.remote()
    try:
        backend.add_model("learner", "tiny", lora_rank=0)
        assert backend.configure_traffic("learner")["settings"]["enabled"]
        client = backend.openai_client_sync()
        for seed, liked in enumerate([True, False, True, False]):
            reply = client.chat.completions.create(model="learner", messages=HELLO, max_tokens=4, seed=seed, extra_body={"task_key": "hi"})
            assert backend.feedback(reply.id, label="thumbs_up" if liked else "thumbs_down").model == "learner"
        metrics = asyncio.run(train_from_traffic(backend, "learner", TrafficTrainConfig(train=TrainConfig(learning_rate=1e-3))))
        assert (metrics["traffic/completions"], metrics["traffic/scored"], metrics["traffic/groups"]) == (4, 4, 1)
        assert metrics["train/skipped"] == 0.0 and backend.model_info("learner").step == 1
    finally:
        backend.close()


def test_a_judge_rates_the_replies_that_got_no_feedback_and_its_outage_costs_only_that_group(server, tmp_path, monkeypatch):
    from hone.rewards import JudgeConfig
    from hone.rl.step import TrainConfig
    from hone.traffic.train import TrafficTrainConfig, judge_score, train_from_traffic

    key = server.new_key()
    monkeypatch.setenv("HONE_JUDGE_API_KEY", key)
    backend = server.remote(key)
    try:
        backend.add_model("judged", "tiny", lora_rank=0)
        backend.configure_traffic("judged")
        client = backend.openai_client_sync()
        for seed in range(3):  # three attempts at one task, no feedback on any
            client.chat.completions.create(model="judged", messages=HELLO, max_tokens=4, seed=seed, extra_body={"task_key": "hi"})
        config = TrafficTrainConfig(train=TrainConfig(learning_rate=1e-3))
        down = JudgeConfig(base_url="http://127.0.0.1:9/v1", model="tiny", cache=False, max_retries=0, http_retries=0, timeout=5)
        metrics = asyncio.run(train_from_traffic(backend, "judged", config, judge_score(down)))
        assert (metrics["traffic/judge_failed"], metrics["traffic/judged"], metrics["train/skipped"]) == (1, 0, 1)
        # the server's own tiny base model as the judge: a real call, its scores (schema-bound) become the rewards
        judge = JudgeConfig(base_url=f"{server.url}/v1", model="tiny", max_tokens=120, cache_dir=str(tmp_path))
        metrics = asyncio.run(train_from_traffic(backend, "judged", config, judge_score(judge)))
        assert (metrics["traffic/unscored"], metrics["traffic/judged"], metrics["traffic/judge_failed"]) == (3, 3, 0)
        assert metrics["train/groups_used"] + metrics["train/groups_dropped_zero_variance"] == 1
    finally:
        backend.close()


def test_hone_train_from_traffic_steps_a_served_model_on_its_feedback(server, tmp_path):
    import os
    import subprocess
    import sys

    key = server.new_key()
    with server.http(key) as client:
        create_model(client, "cli-trained")
        turn_on(client, "cli-trained")
        for seed, reward in enumerate([1.0, 0.0, 1.0, 0.0]):
            reply = server.openai(key).chat.completions.create(model="cli-trained", messages=HELLO, max_tokens=4, seed=seed, extra_body={"task_key": "hi"})
            assert feedback(client, completion_id=reply.id, reward=reward).status_code == 200
        command = [sys.executable, "-m", "hone.cli", "train", "--from-traffic", "cli-trained", "--backend", server.url, "--steps", "2", "--lr", "1e-3"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "HONE_API_KEY": key})
        assert done.returncode == 0, done.stdout + done.stderr
        assert "step 1: 4 scored replies in 1 groups" in done.stdout and "step 2: 4 scored replies" in done.stdout, done.stdout
        assert client.get("/v1/hone/models").json()["data"][0]["step"] == 2
        # gated: each step is validated on the toolcall split against what the model serves
        gated = subprocess.run([*command, "--gate", "toolcall", "--steps", "1"], capture_output=True, text=True, timeout=300, env={**os.environ, "HONE_API_KEY": key})
        assert gated.returncode == 0, gated.stdout + gated.stderr
        said = " ".join(gated.stdout.split())
        assert "warning" not in said, said  # two steps old, the traffic is off-policy by design: not a mismatch
        assert "round 1: 1 step(s) on 4 scored replies in 1 groups" in said and "-> promoted; now serving cli-trained@candidate-3-" in said, said
        promotions = client.get("/v1/hone/models/cli-trained/promotions").json()
        assert [h["promoted"] for h in promotions["history"]] == [True, True] and promotions["history"][-1]["metrics"]["validation/n"] == 20
        # replies nobody rated: the server's own tiny base model judges them, two steps on one judge client
        for seed in range(3):
            server.openai(key).chat.completions.create(model="cli-trained", messages=HELLO, max_tokens=4, seed=seed, extra_body={"task_key": "unrated"})
        judged = subprocess.run(
            [*command, "--judge-model", "tiny", "--judge-url", f"{server.url}/v1"], capture_output=True, text=True, timeout=300,
            env={**os.environ, "HONE_API_KEY": key, "HONE_JUDGE_API_KEY": key, "HONE_HOME": str(tmp_path)},
        )  # fmt: skip
        assert judged.returncode == 0, judged.stdout + judged.stderr
        said = " ".join(judged.stdout.split())
        assert said.count("3 judged (0 groups failed)") == 2, said


def test_pages_follow_the_logging_order_and_skip_nothing(server):
    key = server.new_key()
    with server.http(key) as client:
        create_model(client, "paged")
        turn_on(client, "paged")
        ids = [chat(server, key, "paged")["id"] for _ in range(3)]
        first = client.get("/v1/hone/models/paged/traffic/completions", params={"limit": 2}).json()
        rest = client.get("/v1/hone/models/paged/traffic/completions", params={"limit": 2, "after": first["next_after"]}).json()
        assert [r["id"] for r in first["data"] + rest["data"]] == ids and rest["next_after"] is None
