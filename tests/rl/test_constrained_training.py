"""RL on grammar-constrained samples: the logprob a constrained token reports is the one the trainer
recomputes (ratio 1 before any update), and tokens the grammar forced are not trained by default."""

from __future__ import annotations

import asyncio

import pytest
import torch

from hone.backends import LocalBackend
from hone.rl.datums import datums_from_groups
from hone.rl.trajectory import Trajectory, TrajectoryGroup

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10}, "unit": {"enum": ["c", "f"]}}, "required": ["city", "unit"]},
    },
}


@pytest.fixture(scope="module")
def group():
    """A group of 4 tool calls forced by tool_choice, from an fp32 tiny model, with rewards 1, 0, 1, 0."""
    backend = LocalBackend(engine_options={"dtype": torch.float32})
    backend.add_model("m", "tiny", lora_rank=8)
    messages = [{"role": "user", "content": "Weather in Paris?"}]

    async def sample():
        client = backend.openai_client()
        return await client.chat.completions.create(
            model="m", messages=messages, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False, n=4, max_tokens=120, temperature=1.0, seed=3
        )

    response = asyncio.run(sample())
    trajectories = []
    for index, reward in enumerate([1.0, 0.0, 1.0, 0.0]):
        trajectory = Trajectory(messages=list(messages), tools=[WEATHER], reward=reward)
        trajectory.add_response(response, choice_index=index)
        trajectories.append(trajectory)
    yield backend, TrajectoryGroup(trajectories=trajectories)
    backend.close()


def test_every_reply_is_a_valid_call_and_records_which_tokens_were_forced(group):
    _, trajectories = group
    for trajectory in trajectories.trajectories:
        assert trajectory.messages[-1]["tool_calls"]
        forced = trajectory.turns[0].completion_forced
        assert len(forced) == len(trajectory.turns[0].completion_tokens)
        assert 0 < sum(forced) < len(forced)  # the call's fixed text is forced, the city and unit are chosen


def test_forced_tokens_get_weight_zero_unless_asked_for(group):
    _, trajectories = group
    default = datums_from_groups([trajectories]).datums
    everything = datums_from_groups([trajectories], train_forced_tokens=True).datums
    for datum, all_weights, trajectory in zip(default, everything, trajectories.trajectories):
        turn = trajectory.turns[0]
        completion = slice(len(turn.prompt_tokens) - 1, None)  # targets of the sampled tokens
        assert datum.weights[completion] == [0.0 if f else 1.0 for f in turn.completion_forced]
        assert all_weights.weights[completion] == [1.0] * len(turn.completion_tokens)


def test_the_trainer_recomputes_the_sampler_logprob_of_every_constrained_token(group):
    backend, trajectories = group
    datums = datums_from_groups([trajectories], train_forced_tokens=True).datums
    recomputed = backend.trainer("m").logprobs(datums)
    for datum, trainer_logprobs in zip(datums, recomputed):
        sampled = torch.tensor(datum.weights) > 0
        ratio = (trainer_logprobs[sampled] - torch.tensor(datum.sampler_logprobs)[sampled]).exp()
        assert (ratio - 1).abs().max() < 1e-3, (ratio - 1).abs().max()
