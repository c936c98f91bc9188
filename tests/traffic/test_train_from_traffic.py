"""Training from a model's own traffic, in-process: a LocalBackend logs what its OpenAI client
served, feedback arrives later, and a step on it moves the policy towards the liked replies."""

from __future__ import annotations

import asyncio

import pytest
import torch

from hone.backends import LocalBackend
from hone.errors import HoneError, InvalidRequestError, ModelNotFoundError
from hone.traffic.groups import TrafficDataConfig
from hone.traffic.train import TrafficTrainConfig, train_from_traffic
from hone.rl.step import TrainConfig
from hone.types import Datum

TASKS = ["Name a colour.", "Name a fruit."]


@pytest.fixture
def backend(tmp_path):
    backend = LocalBackend(traffic=tmp_path / "traffic.sqlite3")
    backend.add_model("agent", "tiny", lora_rank=0, seed=0)
    yield backend
    backend.close()


def serve_and_rate(backend: LocalBackend, per_task: int = 4) -> dict[str, list[int]]:
    """Chats through the backend's own OpenAI client; each reply rated by a rule a user might have
    (here: liked when its first token id is even). Returns each reply's full token sequence."""
    client = backend.openai_client_sync()
    sequences = {}
    for task in TASKS:
        for seed in range(per_task):
            response = client.chat.completions.create(
                model="agent", messages=[{"role": "user", "content": task}], max_tokens=6, temperature=1.0, seed=seed, extra_body={"task_key": task}
            ).model_dump()
            tokens = response["choices"][0]["token_ids"]
            backend.feedback(response["id"], label="thumbs_up" if tokens[0] % 2 == 0 else "thumbs_down")
            sequences[response["id"]] = (response["prompt_token_ids"], tokens)
    return sequences


def logprob(backend: LocalBackend, prompt: list[int], completion: list[int]) -> float:
    tokens = prompt + completion
    datum = Datum(input_tokens=tokens[:-1], target_tokens=tokens[1:], weights=[0.0] * (len(tokens) - 1))
    with torch.no_grad():
        return float(backend.trainer("agent").logprobs([datum])[0][-len(completion) :].sum())


def test_steps_on_logged_traffic_raise_the_liked_replies_against_the_disliked(backend):
    backend.configure_traffic("agent")
    sequences = serve_and_rate(backend)
    completions, feedback = asyncio.run(backend.traffic("agent"))
    rewards = {f.completion_id: f.reward for f in feedback}
    assert set(rewards) == {c.id for c in completions} == set(sequences)
    assert 0 < sum(rewards.values()) < len(rewards), "the rule should like some replies and not others"

    before = {i: logprob(backend, *sequences[i]) for i in sequences}
    config = TrafficTrainConfig(train=TrainConfig(learning_rate=1e-3))
    for _ in range(3):
        metrics = asyncio.run(train_from_traffic(backend, "agent", config))
        assert metrics["train/skipped"] == 0.0 and metrics["traffic/groups"] >= 1
    after = {i: logprob(backend, *sequences[i]) for i in sequences}

    liked = [after[i] - before[i] for i in sequences if rewards[i] > 0]
    disliked = [after[i] - before[i] for i in sequences if rewards[i] <= 0]
    assert sum(liked) / len(liked) > sum(disliked) / len(disliked) + 0.5, (liked, disliked)
    assert backend.step("agent") == 3


def test_data_older_than_the_staleness_bound_is_dropped_and_nothing_trains_on_it(backend):
    backend.configure_traffic("agent")
    serve_and_rate(backend, per_task=2)
    config = TrafficTrainConfig(data=TrafficDataConfig(max_staleness=1), train=TrainConfig(learning_rate=1e-3))
    asyncio.run(train_from_traffic(backend, "agent", config))
    asyncio.run(train_from_traffic(backend, "agent", config))
    metrics = asyncio.run(train_from_traffic(backend, "agent", config))  # now at step 2: step-0 data is 2 versions old
    assert metrics["traffic/stale_dropped"] == 4 and metrics["train/skipped"] == 1.0
    assert backend.step("agent") == 2


def test_in_process_feedback_errors_are_one_sentence(backend, tmp_path):
    with pytest.raises(ModelNotFoundError, match="no logged completion"):
        backend.feedback("chatcmpl-unknown", reward=1.0)
    backend.configure_traffic("agent")
    reply = backend.openai_client_sync().chat.completions.create(model="agent", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    with pytest.raises(InvalidRequestError, match="reward must be a finite number"):
        backend.feedback(reply.id, reward=float("nan"))
    with pytest.raises(InvalidRequestError, match="not one of the model's labels"):
        backend.feedback(reply.id, label="meh")
    plain = LocalBackend()
    with pytest.raises(HoneError, match="keeps no traffic log"):
        plain.feedback(reply.id, reward=1.0)
