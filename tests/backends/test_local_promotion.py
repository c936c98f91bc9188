"""Safe promotion in-process (issue 17): a LocalBackend keeps named checkpoints and gate decisions,
so NAME serves what was promoted while training moves the live weights, the gate and the round
learner run on it unchanged from `hone serve`, and a new backend over the same folder serves what
was promoted before."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from hone.backends import LocalBackend, RemoteBackend
from hone.errors import CheckpointError, ConflictError, InvalidRequestError, ModelNotFoundError
from hone.rl.step import TrainConfig
from hone.traffic.promotion import gate, pin
from hone.traffic.rounds import TrafficLearner
from hone.traffic.train import TrafficTrainConfig
from hone.types import AdamParams, Datum, SamplingParams

HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture
def backend(tmp_path):
    backend = LocalBackend(traffic=tmp_path / "traffic.sqlite3", checkpoints=tmp_path / "checkpoints")
    backend.add_model("m", "tiny", lora_rank=0, seed=0)
    yield backend
    backend.close()


def greedy_logprobs(backend: LocalBackend, served: str) -> list[float]:
    reply = backend.openai_client_sync().chat.completions.create(model=served, messages=HELLO, max_tokens=5, temperature=0)
    return reply.choices[0].model_extra["token_logprobs"]


def train_once(backend: LocalBackend) -> int:
    """One supervised step, large enough to change the tiny model's greedy logprobs."""
    datum = Datum(input_tokens=[5, 6, 7, 8], target_tokens=[6, 7, 8, 9], weights=[1.0] * 4)
    asyncio.run(backend.forward_backward("m", [datum], "cross_entropy"))
    asyncio.run(backend.optim_step("m", AdamParams(learning_rate=1e-2)))
    return backend.model_info("m").step


def test_a_promoted_checkpoint_is_what_name_serves_until_another_is_promoted(backend):
    assert backend.promotions("m")["serving"] == "m@live"
    assert backend.save_checkpoint("m", "first") == {"checkpoint": "first", "step": 0}
    promoted = backend.promote("m", "first", reason="launch")
    assert (promoted["serving"], promoted["step"]) == ("m@first", 0)

    served_before = greedy_logprobs(backend, "m")
    assert train_once(backend) == 1
    assert greedy_logprobs(backend, "m") == served_before  # training moved the live weights, not what m serves
    assert greedy_logprobs(backend, "m@live") != served_before
    assert greedy_logprobs(backend, "m@0") == served_before  # NAME@STEP reaches a named checkpoint too
    assert backend.list_models() == ["m", "m@live", "m@0"]

    backend.save_checkpoint("m", "second")
    refused = backend.promote("m", "second", promoted=False, reason="worse on validation")
    assert refused["serving"] == "m@first"
    assert [(h["checkpoint"], h["promoted"], h["reason"]) for h in refused["history"]] == [("first", True, "launch"), ("second", False, "worse on validation")]
    with pytest.raises(ConflictError, match="save under another name"):
        backend.save_checkpoint("m", "first")

    assert backend.promote("m", "second")["serving"] == "m@second"
    assert greedy_logprobs(backend, "m") != served_before
    assert backend.promote("m", "first", reason="rollback")["serving"] == "m@first"
    assert greedy_logprobs(backend, "m") == served_before


def test_promotion_errors_are_one_sentence(backend):
    with pytest.raises(CheckpointError, match="has no checkpoint 'nope'"):
        backend.promote("m", "nope")
    with pytest.raises(InvalidRequestError, match="reserved"):
        backend.save_checkpoint("m", "live")
    with pytest.raises(InvalidRequestError, match="is not a checkpoint name"):
        backend.save_checkpoint("m", "../escape")
    with pytest.raises(ModelNotFoundError, match="'other'"):
        backend.promotions("other")
    backend.save_checkpoint("m", "first")
    backend.promote("m", "first")
    with pytest.raises(ModelNotFoundError, match="'m@nope'"):
        asyncio.run(backend.sample("m@nope", [1, 2], 1, SamplingParams(max_tokens=2)))
    assert backend.promotions("m")["serving"] == "m@first"  # nothing above changed what m serves


def test_the_gate_and_its_reset_run_on_a_local_backend_and_traffic_is_logged_with_the_served_step(backend):
    backend.configure_traffic("m")
    scores = iter([0.8, 0.5, 0.1, 0.8])  # candidate then incumbent, for each gate below

    async def validate(served: str) -> float:  # a user's validation; these scores force each branch
        return next(scores)

    pinned = asyncio.run(pin(backend, "m"))
    assert pinned.startswith("m@pinned-0-") and asyncio.run(pin(backend, "m")) == pinned
    train_once(backend)
    better = asyncio.run(gate(backend, "m", validate))
    assert better.promoted and better.serving == better.candidate
    train_once(backend)
    worse = asyncio.run(gate(backend, "m", validate, tolerance=0.05))
    assert not worse.promoted and worse.serving == better.serving and "more than 0.05 below" in worse.reason
    assert backend.model_info("m").step == 1  # the live weights went back to what m serves

    train_once(backend)  # the live weights at step 2; m still serves the checkpoint of step 1
    backend.openai_client_sync().chat.completions.create(model="m", messages=HELLO, max_tokens=3)
    backend.openai_client_sync().chat.completions.create(model="m@live", messages=HELLO, max_tokens=3)
    completions, _ = asyncio.run(backend.traffic("m"))
    assert [c.step for c in completions] == [1, 2]  # the version that produced each reply


def test_rounds_of_a_traffic_learner_and_a_restarted_backend_read_the_decisions_back(tmp_path):
    folders = {"traffic": tmp_path / "traffic.sqlite3", "checkpoints": tmp_path / "checkpoints"}
    backend = LocalBackend(**folders)
    backend.add_model("m", "tiny", lora_rank=0, seed=0)
    backend.configure_traffic("m")

    async def validate(served: str) -> float:  # finds every candidate worse than what is served
        return 0.5 if "@candidate-" in served else 0.9

    client = backend.openai_client_sync()
    for seed, liked in enumerate([True, False, True, False]):
        reply = client.chat.completions.create(model="m", messages=HELLO, max_tokens=4, seed=seed, extra_body={"task_key": "hi"})
        backend.feedback(reply.id, label="thumbs_up" if liked else "thumbs_down")
    config = TrafficTrainConfig(train=TrainConfig(learning_rate=1e-3))
    first = asyncio.run(TrafficLearner(backend, "m", validate, config, validation_n=20).round())
    assert not first.decision.promoted and "-> refused" in first.line() and backend.model_info("m").step == 0
    serving = backend.promotions("m")["serving"]
    served = greedy_logprobs(backend, "m")
    backend.close()

    again = LocalBackend(**folders)  # a restarted process over the same folders
    try:
        again.add_model("m", "tiny", lora_rank=0, seed=1)  # other live weights: m must still serve the pinned ones
        assert again.promotions("m")["serving"] == serving and greedy_logprobs(again, "m") == served
        assert greedy_logprobs(again, "m@live") != served
        learner = TrafficLearner(again, "m", validate, config, validation_n=20)
        asyncio.run(learner.round())
        assert learner.rounds == 2  # the first learner's gate was read back
        again.delete_model("m")
        assert not (tmp_path / "checkpoints" / "m").exists()  # a deleted model's checkpoints go with it
    finally:
        again.close()


def test_the_promotion_calls_have_the_same_signatures_on_both_backends():
    for call in ("configure_traffic", "feedback", "traffic", "save_checkpoint", "restore_checkpoint", "list_checkpoints", "promotions", "promote"):
        assert inspect.signature(getattr(LocalBackend, call)) == inspect.signature(getattr(RemoteBackend, call)), call
