"""Capture: an agent written with a plain `openai` client, pointed at a rollout, trains token-exact.

The embedded model plays a real tool-using episode (a forced tool call, the tool's result, a reply,
a user follow-up, a final answer) through a client the agent builds itself from `base_url`,
`api_key` and `model`; every call is recorded, the later turns continue the sampled tokens
verbatim, and the whole episode trains as one sequence whose sampler logprobs the trainer
recomputes. The tiny model covers the plumbing: failures, groups, training, the loop, resume,
`hone train FILE.py` and evaluation.
"""

from __future__ import annotations

import ast
import asyncio
import re
import dataclasses
import inspect
import json
import os
import subprocess
import sys
import textwrap

import openai
import pytest
import torch

from hone.backends import LocalBackend
from hone.errors import TooManyFailuresError
from hone.rl.datums import datums_from_trajectory
from hone.rl.evaluate import evaluate
from hone.rl.gather import GatherConfig, gather_groups
from hone.rl.loop import RunConfig, run_training
from hone.rl.model import TrainableModel
from hone.rl.step import TrainConfig
from hone.rl.trajectory import Trajectory

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"]},
    },
}
FREE_TOKENS = 12  # each unforced reply is exactly this long: end-of-turn is banned for it (logit_bias)


# --------------------------------------------------------------------------- the agent: openai only
async def weather_episode(client, model, seed, no_stop_ids, on_response=None):
    """Three calls: a forced get_weather call, then (after its result) a reply, then (after a user
    follow-up) a final answer. Knows nothing of hone; `on_response` sees each raw response."""
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    ban_stop = {str(token): -100 for token in no_stop_ids}
    responses = []

    async def call(turn_seed, **options):
        response = await client.chat.completions.create(model=model, messages=messages, tools=[WEATHER], temperature=1.0, seed=turn_seed, **options)
        if on_response is not None:
            on_response(response)
        responses.append(response)
        message = response.choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        return message

    forced = await call(seed, tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=48)
    tool_call = forced.tool_calls[0]
    messages.append({"role": "tool", "tool_call_id": tool_call.id, "content": json.dumps({"temp_c": 18, "sky": "cloudy"})})
    reply = await call(seed + 1, max_tokens=FREE_TOKENS, logit_bias=ban_stop)
    if reply.tool_calls:  # a second tool turn
        messages.append({"role": "tool", "tool_call_id": reply.tool_calls[0].id, "content": json.dumps({"temp_c": 18})})
    else:
        messages.append({"role": "user", "content": "Thanks. Should I take an umbrella?"})
    await call(seed + 2, max_tokens=FREE_TOKENS, logit_bias=ban_stop)
    return responses


async def my_agent(base_url: str, api_key: str, model: str, seed: int, no_stop_ids: list[int]):
    """An agent that builds its own client, as any framework does."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0)
    return await weather_episode(client, model, seed, no_stop_ids)


def test_the_agent_knows_nothing_of_hone():
    for function in (weather_episode, my_agent):
        [definition] = ast.parse(textwrap.dedent(inspect.getsource(function))).body
        code = ast.unparse(ast.Module(body=definition.body[1:], type_ignores=[]))  # without its docstring
        assert "chat.completions.create" in code or "AsyncOpenAI" in code
        assert "hone" not in code.lower() and not any("hone" in name.lower() for name in function.__code__.co_names)


# --------------------------------------------------------------------------- the embedded episode
@pytest.fixture(scope="module")
def embedded_agent():
    """The embedded model in fp32 (so sampler and trainer logprobs agree closely), never trained."""
    backend = LocalBackend(engine_options={"dtype": torch.float32})
    model = TrainableModel("agent", "smollm2-135m", backend, lora_rank=8)
    tokenizer = backend.tokenizer("agent")
    no_stop = sorted({tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")})
    yield model, no_stop
    backend.close()


@pytest.fixture(scope="module")
def captured_episode(embedded_agent):
    model, no_stop = embedded_agent

    async def play():
        async with model.capture(task_id="paris", kind="weather") as rollout:
            assert rollout.base_url.startswith("http://127.0.0.1:") and rollout.api_key  # the loopback server, keyed
            responses = await my_agent(rollout.base_url, rollout.api_key, rollout.model, seed=7, no_stop_ids=no_stop)
            rollout.reward = 1.0
        with pytest.raises(RuntimeError, match="has ended"):
            rollout.base_url  # a closed capture hands out no endpoint
        return rollout, responses

    return asyncio.run(play())


def test_a_plain_openai_agent_is_captured_as_one_bridged_sequence_the_trainer_agrees_with(embedded_agent, captured_episode):
    model, _ = embedded_agent
    rollout, responses = captured_episode
    trajectory = rollout.trajectory
    assert rollout.model == "agent"
    assert responses[0].choices[0].message.tool_calls[0].function.name == "get_weather"
    assert [r.choices[0].finish_reason for r in responses[1:]] == ["length", "length"]

    assert len(trajectory.turns) == 3
    assert trajectory.metadata["turns_bridged"] == 2 and trajectory.metadata["turns_broken"] == 0
    assert trajectory.metadata["rollout_id"] == rollout.id and trajectory.metadata["task_id"] == "paris"
    assert trajectory.metadata["kind"] == "weather" and trajectory.reward == 1.0
    # the messages are the last call's, with its reply: the whole conversation
    assert [m["role"] for m in trajectory.messages] == ["user", "assistant", "tool", "assistant", "user", "assistant"]
    assert trajectory.tools == [WEATHER]
    # what the agent was told it got is what was recorded
    for response, turn in zip(responses, trajectory.turns):
        extra = response.choices[0].model_extra
        assert extra["token_ids"] == turn.completion_tokens and response.model_extra["prompt_token_ids"] == turn.prompt_tokens

    datums = datums_from_trajectory(trajectory, 1.0)
    assert len(datums) == 1
    datum = datums[0]
    trained = torch.tensor(datum.weights) != 0
    assert trained.sum() > 2 * FREE_TOKENS - 2  # both free replies (and the tool call's free tokens)
    recomputed = model.backend.trainer("agent").logprobs(datums)[0]
    assert model.backend.model_info("agent").step == 0
    worst = (recomputed[trained] - torch.tensor(datum.sampler_logprobs)[trained]).abs().max().item()
    assert worst <= 1e-3, worst


def test_the_capture_holds_every_sampled_completion_verbatim_and_as_many_tokens_as_add_response(embedded_agent, captured_episode):
    model, no_stop = embedded_agent
    captured = captured_episode[0].trajectory

    # the same episode without a capture: hone's own client, each response kept by add_response
    recorded = Trajectory(tools=[WEATHER])
    asyncio.run(weather_episode(model.openai_client(), model.name, 7, no_stop, on_response=recorded.add_response))
    assert len(recorded.turns) == len(captured.turns) == 3
    assert [len(t.completion_tokens) for t in recorded.turns] == [len(t.completion_tokens) for t in captured.turns]
    assert sum(len(t.completion_tokens) for t in recorded.turns) == sum(len(t.completion_tokens) for t in captured.turns)
    # same prompt, same seed: the same forced call. The second run continues the first's cached prompt,
    # whose bf16 rounding differs a little from a whole prefill's (hone.engine.prefix_cache)
    first, again = captured.turns[0], recorded.turns[0]
    assert first.model_dump(exclude={"completion_logprobs"}) == again.model_dump(exclude={"completion_logprobs"})
    assert torch.allclose(torch.tensor(first.completion_logprobs), torch.tensor(again.completion_logprobs), atol=0.1)

    # the capture's single sequence: every turn's prompt is a prefix of it, its completion follows verbatim
    datum = datums_from_trajectory(captured, 1.0)[0]
    sequence = datum.input_tokens + datum.target_tokens[-1:]
    last = captured.turns[-1]
    assert sequence == last.prompt_tokens + last.completion_tokens
    for turn in captured.turns:
        start, end = len(turn.prompt_tokens), len(turn.prompt_tokens) + len(turn.completion_tokens)
        assert sequence[:start] == turn.prompt_tokens
        assert sequence[start:end] == turn.completion_tokens
        forced = turn.completion_forced or [False] * len(turn.completion_tokens)
        assert datum.weights[start - 1 : end - 1] == [0.0 if f else 1.0 for f in forced]
        assert datum.sampler_logprobs[start - 1 : end - 1] == turn.completion_logprobs
    assert sum(datum.weights) == sum(1 for t in captured.turns for f in (t.completion_forced or [False] * len(t.completion_tokens)) if not f)


# --------------------------------------------------------------------------- tiny model: plumbing
@pytest.fixture(scope="module")
def tiny_model():
    backend = LocalBackend()
    model = TrainableModel("tiny-agent", "tiny", backend, lora_rank=0)
    yield model
    backend.close()


async def two_turns(client: openai.AsyncOpenAI, model: str, task: str, seed: int | None, temperature: float = 1.0) -> str:
    """A two-turn chat: an answer, then a follow-up the model answers too."""
    messages = [{"role": "user", "content": task}]
    for turn in range(2):
        response = await client.chat.completions.create(
            model=model, messages=messages, max_tokens=4, temperature=temperature, seed=None if seed is None else seed + turn
        )
        messages.append(response.choices[0].message.model_dump(exclude_none=True))
        if turn == 0:
            messages.append({"role": "user", "content": "And then?"})
    return messages[-1].get("content") or ""


def test_an_agent_that_raises_closes_its_rollout_and_counts_as_a_failure_within_its_group(tiny_model):
    model = tiny_model
    opened: dict[tuple[str, int], str] = {}

    async def rollout(task: str, attempt: int) -> Trajectory:
        async with model.capture(task_id=task) as capture:
            opened[(task, attempt)] = capture.id
            await two_turns(capture.openai_client(), capture.model, task, seed=attempt)
            if task == "crashes" and attempt == 0:
                raise RuntimeError("the weather tool timed out")
            capture.reward = float(attempt)
        return capture.trajectory

    config = GatherConfig(group_size=2, max_exceptions=1, show_progress=False)
    groups = asyncio.run(gather_groups(["fine", "crashes"], rollout, config))
    assert [len(g.trajectories) for g in groups] == [2, 1]
    assert not groups[0].exceptions and len(groups[1].exceptions) == 1
    failure = groups[1].exceptions[0]
    assert failure.type == "RuntimeError" and "timed out" in failure.message

    # the crashed rollout was closed on the way out: a later call through it is a 404
    crashed = opened[("crashes", 0)]

    async def call_through(rollout_id: str):
        client = model.backend.openai_client(rollout_id=rollout_id, max_retries=0)
        return await client.chat.completions.create(model=model.name, messages=[{"role": "user", "content": "hi"}], max_tokens=2)

    with pytest.raises(openai.NotFoundError, match="was closed"):
        asyncio.run(call_through(crashed))
    for rollout_id in opened.values():  # every capture closed, failed or not
        with pytest.raises(openai.NotFoundError):
            asyncio.run(call_through(rollout_id))

    # beyond the budget, the gather stops with a clear error
    with pytest.raises(TooManyFailuresError, match=r"1 of 4 rollouts failed, more than the budget of 0.*RuntimeError: the weather tool timed out"):
        asyncio.run(gather_groups(["fine", "crashes"], rollout, GatherConfig(group_size=2, max_exceptions=0, show_progress=False)))


def test_a_capture_that_raises_keeps_its_agents_error_and_the_calls_made_before_it(tiny_model):
    model = tiny_model

    async def crash():
        capture = model.capture(task_id="t")
        with pytest.raises(ValueError, match="boom"):
            async with capture:
                await two_turns(capture.openai_client(), capture.model, "Hello", seed=1)
                raise ValueError("boom")
        return capture

    capture = asyncio.run(crash())
    assert capture.trajectory is not None and len(capture.trajectory.turns) == 2
    assert capture.trajectory.metadata["turns_bridged"] == 1

    with pytest.raises(RuntimeError, match="has not started"):
        model.capture().base_url


def test_captures_gathered_into_groups_train(tiny_model):
    model = tiny_model
    step_before = model.backend.model_info(model.name).step

    async def rollout(task: str, attempt: int) -> Trajectory:
        async with model.capture(task_id=task, attempt=str(attempt)) as capture:
            client = openai.AsyncOpenAI(base_url=capture.base_url, api_key=capture.api_key, max_retries=0)
            await two_turns(client, capture.model, task, seed=attempt)
            capture.reward = float(attempt)  # rewards differ within each group
            capture.metrics["success"] = float(attempt == 1)
        return capture.trajectory

    groups = asyncio.run(gather_groups(["Hello", "Write a word"], rollout, GatherConfig(group_size=2, show_progress=False)))
    assert [sorted(g.rewards) for g in groups] == [[0.0, 1.0], [0.0, 1.0]]
    for group, task in zip(groups, ["Hello", "Write a word"]):
        assert {t.metadata["task_id"] for t in group.trajectories} == {task}
        assert {t.metadata["attempt"] for t in group.trajectories} == {"0", "1"}
        assert all(len(t.turns) == 2 and t.metadata["turns_bridged"] == 1 for t in group.trajectories)

    metrics = asyncio.run(model.train(groups, TrainConfig(learning_rate=1e-3)))
    assert metrics["train/groups_used"] == 2
    assert metrics["train/datums"] == 4  # one bridged sequence per capture
    assert metrics["train/skipped"] == 0.0
    assert model.backend.model_info(model.name).step == step_before + 1


# --------------------------------------------------------------------------- the loop, the CLI, evaluation
class WordsEnv:
    """A CapturedEnvironment: the agent builds its own client; the reward is set on the rollout."""

    name = "words"

    def train_tasks(self):
        return [{"id": f"w{i}", "prompt": f"Say a word ({i})."} for i in range(4)]

    def eval_tasks(self):
        return self.train_tasks()[:3]

    async def run_agent(self, rollout, task, *, seed, temperature):
        client = openai.AsyncOpenAI(base_url=rollout.base_url, api_key=rollout.api_key, max_retries=0)
        answer = await two_turns(client, rollout.model, task["prompt"], seed, temperature)
        reward = float(len(answer) % 2)
        rollout.metrics["success"] = reward
        rollout.metrics["answer_chars"] = float(len(answer))
        if seed is not None and seed % 3 == 0:
            rollout.reward = reward  # returning None keeps the reward set on the rollout
            return None
        return reward


def test_run_training_takes_a_captured_environment_logs_turn_metrics_and_resumes(tmp_path):
    config = RunConfig(
        out_dir=str(tmp_path), base_model="tiny", steps=1, groups_per_step=2, group_size=2,
        learning_rate=1e-3, lora_rank=0, concurrency=2, show_progress=False,
    )  # fmt: skip
    first = asyncio.run(run_training(WordsEnv(), config))
    assert first.resumed_from == 0 and [h["step"] for h in first.history] == [1]
    first.model.backend.close()

    resumed = asyncio.run(run_training(WordsEnv(), dataclasses.replace(config, steps=2)))
    assert resumed.resumed_from == 1
    assert [h["step"] for h in resumed.history] == [1, 2]
    assert resumed.model.backend.model_info("policy").step == 2
    for line in resumed.history:
        assert line["rollouts/ok"] == 4.0 and line["rollouts/failed"] == 0.0
        assert line["turns/bridged"] == 4.0 and line["turns/broken"] == 0.0  # 4 captures of 2 turns each
        assert "success/rate" in line and "env/answer_chars" in line
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged] == [1, 2] and all("turns/bridged" in m for m in logged)
    resumed.model.backend.close()


ENV_FILE = '''
"""A captured environment for `hone train FILE.py`: the agent imports only openai."""
import openai


class EchoEnv:
    name = "echo"

    def train_tasks(self):
        return [{"id": i, "prompt": f"Say something ({i})."} for i in range(4)]

    def eval_tasks(self):
        return self.train_tasks()

    async def run_agent(self, rollout, task, *, seed, temperature):
        client = openai.AsyncOpenAI(base_url=rollout.base_url, api_key=rollout.api_key, max_retries=0)
        messages = [{"role": "user", "content": task["prompt"]}]
        for turn in range(2):
            response = await client.chat.completions.create(
                model=rollout.model, messages=messages, max_tokens=4, temperature=temperature, seed=seed + turn
            )
            messages.append(response.choices[0].message.model_dump(exclude_none=True))
            messages.append({"role": "user", "content": "More."})
        return float(len(messages[-2].get("content") or "") % 2)


def make_env():
    return EchoEnv()
'''


def test_hone_train_accepts_a_file_defining_a_captured_environment(tmp_path):
    env_file, out = tmp_path / "echo_env.py", tmp_path / "run"
    env_file.write_text(textwrap.dedent(ENV_FILE))
    command = [
        sys.executable, "-m", "hone.cli", "train", str(env_file), "--model", "tiny", "--lora-rank", "0", "--lr", "1e-3",
        "--steps", "1", "--group-size", "2", "--groups-per-step", "2", "--concurrency", "2", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "done: 1 steps" in done.stdout
    assert re.search(r"captured turns: \d+ continued their conversation verbatim, 0 broke", done.stdout), done.stdout
    [line] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert line["step"] == 1 and line["rollouts/ok"] == 4.0
    assert line["turns/bridged"] == 4.0 and line["turns/broken"] == 0.0
    assert (out / "checkpoints" / "step_000001").is_dir()


def test_evaluate_runs_a_captured_environment_given_the_backend(tiny_model):
    model, env = tiny_model, WordsEnv()
    tasks = env.eval_tasks()
    result = asyncio.run(evaluate(env, model.openai_client(), model.name, tasks, backend=model.backend))
    assert result.n == 3 and result.failures == 0 and len(result.trajectories) == 3
    assert result.turns == 2.0
    assert [t.metadata["task_id"] for t in result.trajectories] == ["w0", "w1", "w2"]
    assert all(t.metadata["turns_bridged"] == 1 for t in result.trajectories)
    assert result.success == sum(t.metrics["success"] for t in result.trajectories) / 3
    assert 0.0 <= result.ci95[0] <= result.success <= result.ci95[1] <= 1.0

    with pytest.raises(TypeError, match=r"evaluate needs backend= for WordsEnv"):
        asyncio.run(evaluate(env, model.openai_client(), model.name, tasks))


@dataclasses.dataclass
class NumberedTask:
    id: int
    prompt: str


def test_a_task_objects_id_zero_becomes_its_task_id(tiny_model):
    from hone.rl.capture import captured_rollout

    class OneShot(WordsEnv):
        async def run_agent(self, rollout, task, *, seed, temperature):
            await two_turns(rollout.openai_client(), rollout.model, task.prompt, seed)
            return 1.0

    ids = []
    for task in (NumberedTask(0, "Hi"), NumberedTask(1, "Hi")):
        trajectory = asyncio.run(captured_rollout(OneShot(), tiny_model.backend, tiny_model.name, task, seed=0, temperature=1.0))
        ids.append(trajectory.metadata["task_id"])
    assert ids == ["0", "1"]
