"""Safe promotion against a real `hone serve --home` (issue 17): once a checkpoint is promoted, the
OpenAI routes' NAME serves it while training moves the live weights; a refused candidate is kept
with its reason and changes nothing served; a rollback is one call; the gate resets the live
weights after a refusal."""

from __future__ import annotations

import asyncio

import pytest

from hone.errors import HoneError
from hone.rl.step import TrainConfig
from hone.traffic.promotion import gate, pin
from hone.traffic.rounds import TrafficLearner
from hone.traffic.train import TrafficTrainConfig

from .conftest import create_model, groups

HELLO = [{"role": "user", "content": "hi"}]


def greedy_logprobs(server, key: str, served: str) -> list[float]:
    reply = server.openai(key).chat.completions.create(model=served, messages=HELLO, max_tokens=5, temperature=0)
    return reply.choices[0].model_extra["token_logprobs"]


def train_once(client) -> int:
    trained = client.post("/v1/hone/models/m/train_step", json={"groups": groups(), "config": {"learning_rate": 1e-2}})
    assert trained.status_code == 200, trained.text
    return trained.json()["step"]


def test_a_promoted_checkpoint_is_what_name_serves_until_another_is_promoted(server):
    key = server.new_key()
    with server.http(key) as client:
        create_model(client, "m")
        assert client.get("/v1/hone/models/m/promotions").json()["serving"] == "m@live"
        client.post("/v1/hone/models/m/save_state", json={"checkpoint": "first"})
        promoted = client.post("/v1/hone/models/m/promotions", json={"checkpoint": "first", "reason": "launch"}).json()
        assert (promoted["serving"], promoted["step"]) == ("m@first", 0)

        served_before = greedy_logprobs(server, key, "m")
        assert train_once(client) == 1
        assert greedy_logprobs(server, key, "m") == served_before  # training moved the live weights, not what m serves
        assert greedy_logprobs(server, key, "m@live") != served_before
        low_level = client.post("/v1/hone/models/m/sample", json={"prompt_tokens": [1, 2, 3], "params": {"max_tokens": 3, "temperature": 0}})
        assert low_level.status_code == 200  # the training API samples the live weights
        assert "m@live" in [row.id for row in server.openai(key).models.list().data]

        client.post("/v1/hone/models/m/save_state", json={"checkpoint": "second"})
        refused = client.post("/v1/hone/models/m/promotions", json={"checkpoint": "second", "promoted": False, "reason": "worse on validation"})
        assert refused.json()["serving"] == "m@first"
        assert [(h["checkpoint"], h["promoted"], h["reason"]) for h in refused.json()["history"]] == [
            ("first", True, "launch"), ("second", False, "worse on validation")
        ]  # fmt: skip
        conflict = client.delete("/v1/hone/models/m/checkpoints/first")
        assert conflict.status_code == 409 and "promote another checkpoint first" in conflict.json()["error"]["message"]
        overwrite = client.post("/v1/hone/models/m/save_state", json={"checkpoint": "first"})
        assert overwrite.status_code == 409 and "save under another name" in overwrite.json()["error"]["message"]

        assert client.post("/v1/hone/models/m/promotions", json={"checkpoint": "second"}).json()["serving"] == "m@second"
        assert greedy_logprobs(server, key, "m") != served_before
        rollback = client.post("/v1/hone/models/m/promotions", json={"checkpoint": "first", "reason": "rollback"})
        assert rollback.json()["serving"] == "m@first" and greedy_logprobs(server, key, "m") == served_before


def test_promotion_errors_are_one_sentence(server):
    key = server.new_key()
    with server.http(key) as client:
        create_model(client, "m")
        missing = client.post("/v1/hone/models/m/promotions", json={"checkpoint": "nope"})
        assert missing.status_code == 400 and "has no checkpoint 'nope'" in missing.json()["error"]["message"]
        reserved = client.post("/v1/hone/models/m/save_state", json={"checkpoint": "live"})
        assert reserved.status_code == 400 and "reserved" in reserved.json()["error"]["message"]
        assert client.get("/v1/hone/models/other/promotions").status_code == 404
        missing_model = client.post("/v1/hone/models/other/sample", json={"prompt_tokens": [1, 2]})
        assert missing_model.status_code == 404 and "'other'" in missing_model.json()["error"]["message"]


def test_the_gate_promotes_a_better_candidate_and_refuses_a_worse_one_resetting_the_live_weights(server):
    key = server.new_key()
    backend = server.remote(key)
    try:
        backend.add_model("m", "tiny", lora_rank=0)
        scores = iter([0.8, 0.5, 0.1, 0.8])  # candidate then incumbent, for each gate below

        async def validate(served: str) -> float:  # a user's validation; these scores force each branch
            return next(scores)

        with pytest.raises(HoneError, match="pin it first"):
            asyncio.run(gate(backend, "m", validate))
        pinned = asyncio.run(pin(backend, "m"))
        assert pinned.startswith("m@pinned-0-") and asyncio.run(pin(backend, "m")) == pinned  # pinning twice changes nothing

        with server.http(key) as client:
            train_once(client)
        better = asyncio.run(gate(backend, "m", validate))
        assert better.promoted and better.serving == better.candidate and "promoted" in better.reason

        with server.http(key) as client:
            train_once(client)
        worse = asyncio.run(gate(backend, "m", validate, tolerance=0.05))
        assert not worse.promoted and worse.serving == better.serving and "more than 0.05 below" in worse.reason
        assert backend.model_info("m").step == 1  # the live weights went back to what m serves
        history = backend.promotions("m")["history"]
        assert [h["promoted"] for h in history] == [True, True, False]
        assert history[-1]["metrics"] == {"validation/candidate": 0.1, "validation/incumbent": 0.8, "tolerance": 0.05}

        async def broken(served: str) -> float:  # e.g. a mean over no tasks
            return float("nan")

        with server.http(key) as client:
            train_once(client)
        unscored = asyncio.run(gate(backend, "m", broken))
        assert not unscored.promoted and "validation gave no number" in unscored.reason and backend.model_info("m").step == 1
    finally:
        backend.close()


def test_rounds_on_feedback_that_lowers_validation_are_refused_and_the_gaming_warning_fires(server):
    backend = server.remote()
    try:
        backend.add_model("rounds", "tiny", lora_rank=0)
        backend.configure_traffic("rounds")
        client = backend.openai_client_sync()

        async def validate(served: str) -> float:  # the user's own check: it finds every candidate worse than what is served
            return 0.5 if "@candidate-" in served else 0.9

        config = TrafficTrainConfig(train=TrainConfig(learning_rate=1e-3))
        learner = TrafficLearner(backend, "rounds", validate, config, validation_n=20, stop_on=["gaming"])
        idle = asyncio.run(learner.round())  # no traffic yet: pinned, but no step and nothing to gate
        assert idle.decision is None and idle.line().startswith("round 1: no step") and idle.warnings == []
        serving = backend.promotions("rounds")["serving"]

        def serve_and_rate() -> None:
            for seed, liked in enumerate([True, False, True, False]):
                reply = client.chat.completions.create(model="rounds", messages=HELLO, max_tokens=4, seed=seed, extra_body={"task_key": "hi"})
                backend.feedback(reply.id, label="thumbs_up" if liked else "thumbs_down")

        serve_and_rate()
        first = asyncio.run(learner.round())
        assert not first.decision.promoted and first.warnings == [] and not first.stop
        # the next round runs in another process (a cron job): a new learner reads the first gate back
        serve_and_rate()
        second = asyncio.run(TrafficLearner(backend, "rounds", validate, config, validation_n=20, stop_on=["gaming"]).round())
        assert not second.decision.promoted and second.number == 2
        assert [w.code for w in second.warnings] == ["feedback_gaming"] and second.stop
        assert "1 step(s) on 8 scored replies in 1 groups" in second.line() and "-> refused" in second.line()
        assert second.metrics["reward/mean"] == 0.5 and second.metrics["validation/n"] == 20
        assert backend.promotions("rounds")["serving"] == serving and backend.model_info("rounds").step == 0  # reset each time
        third = asyncio.run(TrafficLearner(backend, "rounds", validate, config, validation_n=20).round())
        assert not third.decision.promoted and third.warnings == []  # raised once, not again while it lasts
    finally:
        backend.close()


def test_hone_rollback_makes_the_name_serve_an_earlier_checkpoint(server):
    from typer.testing import CliRunner

    from hone.cli import app

    key = server.new_key()
    with server.http(key) as client:
        create_model(client, "m")
        client.post("/v1/hone/models/m/save_state", json={"checkpoint": "zero"})
        train_once(client)
        client.post("/v1/hone/models/m/save_state", json={"checkpoint": "one"})
        client.post("/v1/hone/models/m/promotions", json={"checkpoint": "one"})
        done = CliRunner().invoke(app, ["rollback", "m@0", "--backend", server.url], env={"HONE_API_KEY": key})
        assert done.exit_code == 0 and "'m' now serves m@zero (step 0)" in done.output, done.output
        assert client.get("/v1/hone/models/m/promotions").json()["history"][-1]["reason"] == "rollback"
        missing = CliRunner().invoke(app, ["rollback", "m@7", "--backend", server.url], env={"HONE_API_KEY": key})
        assert missing.exit_code == 2 and "has no checkpoint '7' (it keeps: zero, one)" in " ".join(missing.output.split())
