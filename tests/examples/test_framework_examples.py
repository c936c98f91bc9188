"""Agents written with a framework (the OpenAI Agents SDK, LangGraph over LangChain's ChatOpenAI),
trained through `model.capture()` without a line of hone inside them.

The scripts run as a user would run them (tiny model, two steps) and print one consistent line per
step. Then, on the embedded model, one tool-using episode per framework, plain and streamed, is
checked to be recorded token-exact: every call after the first continues the tokens already
sampled (bridged, none broken), the episode is one training sequence, the recorded reply is the
text the framework acted on, and before any update the trainer gives every sampled token the
logprob the sampler reported.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import sys

import pytest
import torch

from hone.backends import LocalBackend
from hone.rl.datums import datums_from_trajectory
from hone.rl.model import TrainableModel
from hone.rl.trajectory import Trajectory

from .test_examples import EXAMPLES, parse, run_example

# both scripts: print(f"step {step + 1}: reward {reward:.2f}, correct {correct:.0%}, {len(episodes)} episodes, "
#                     f"{calls} calls ({bridged} bridged, {broken} broken), {n:.0f} sequences trained")
STEP_LINE = re.compile(
    r"step (\d+): reward (\d+\.\d\d), correct (\d+)%, (\d+) episodes, (\d+) calls \((\d+) bridged, (\d+) broken\), (\d+) sequences trained"
)
SCRIPTS = ["agents_sdk_agent.py", "langgraph_agent.py"]
QUESTION = "What is 12 + 30?"


def load_example(script: str):
    """An example script as a module (its agent functions), without running its main."""
    name = "example_" + script.removesuffix(".py")
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, EXAMPLES / script)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


# --------------------------------------------------------------------------- the scripts, as a user runs them
@pytest.mark.parametrize("script", SCRIPTS)
def test_the_script_trains_its_agent_one_sequence_per_episode(script):
    questions, group_size, steps = 2, 2, 2
    done = run_example(script, "--model", "tiny", "--steps", str(steps), "--questions", str(questions), "--group-size", str(group_size))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = parse(STEP_LINE, done.stdout)
    assert [int(row[0]) for row in rows] == list(range(1, steps + 1)), done.stdout
    max_turns = load_example(script).MAX_TURNS
    for _, reward, correct, episodes, calls, bridged, broken, trained in rows:
        reward, correct = float(reward), int(correct) / 100
        episodes, calls, bridged, broken, trained = map(int, (episodes, calls, bridged, broken, trained))
        # a framework's complaint about the model's output is scored 0, not raised: no episode is lost
        assert episodes == questions * group_size, done.stdout
        assert correct in (0.0, 0.25, 0.5, 0.75, 1.0), done.stdout
        # a try scores 1.0 if correct plus 0.1 if the tool evaluated its expression
        assert correct - 0.005 <= reward <= correct + 0.1 + 0.005, done.stdout
        # the tool's call is forced on the first turn: at least one call, at most max_turns, per episode
        assert episodes <= calls <= max_turns * episodes, done.stdout
        # every call after an episode's first continues it verbatim: none broken...
        assert broken == 0 and bridged == calls - episodes, done.stdout
        # ...so each episode is one sequence; groups of equal rewards are dropped whole
        assert trained % group_size == 0 and trained <= episodes, done.stdout
        assert trained == 0 or reward > 0, done.stdout


# --------------------------------------------------------------------------- token-exact capture, on the embedded model
@pytest.fixture(scope="module")
def embedded_model():
    # fp32 sampling: the engine may pick bf16 where this machine multiplies faster in it, and bf16
    # logprobs are not owed a 1e-3 match with the fp32 trainer's
    backend = LocalBackend(engine_options={"dtype": torch.float32})
    model = TrainableModel("framework-capture", base_model="smollm2-135m", backend=backend, lora_rank=8)
    yield model
    backend.close()


def tool_results(trajectory: Trajectory) -> list[str]:
    return [m["content"] for m in trajectory.messages if m["role"] == "tool"]


def assert_one_token_exact_sequence(model: TrainableModel, trajectory: Trajectory, final_text: str) -> None:
    """The episode's calls are one bridged sequence, recorded as sampled, and the trainer agrees."""
    turns = trajectory.turns
    assert len(turns) >= 2, trajectory.messages  # the tool call, then the answer
    assert trajectory.metadata["turns_broken"] == 0, trajectory.metadata
    assert trajectory.metadata["turns_bridged"] == len(turns) - 1, trajectory.metadata
    sequence = turns[0].prompt_tokens + turns[0].completion_tokens
    for turn in turns[1:]:  # each prompt starts with everything sampled so far, token for token
        assert turn.prompt_tokens[: len(sequence)] == sequence
        sequence = turn.prompt_tokens + turn.completion_tokens

    # the recorded reply is the text the framework acted on
    tokenizer = model.backend.tokenizer(model.name)
    assert trajectory.final_text() == final_text
    assert tokenizer.decode(turns[-1].completion_tokens, skip_special_tokens=True) == final_text
    call = next(m for m in trajectory.messages if m.get("tool_calls"))["tool_calls"][0]["function"]
    assert call["name"] == "calculate"
    assert json.dumps(json.loads(call["arguments"])["expression"]) in tokenizer.decode(turns[0].completion_tokens)

    # one training sequence per episode: the whole conversation, every sampled token trained
    (datum,) = datums_from_trajectory(trajectory, 1.0)
    assert datum.input_tokens + datum.target_tokens[-1:] == sequence
    (every,) = datums_from_trajectory(trajectory, 1.0, train_forced_tokens=True)
    sampled = torch.tensor(every.weights) != 0
    assert int(sampled.sum()) == sum(len(turn.completion_tokens) for turn in turns)

    # step 0: the trainer's logprob of every sampled token (forced ones too) is the sampler's
    (trainer_logprobs,) = model.backend.trainer(model.name).logprobs([every])
    assert trainer_logprobs.dtype == torch.float32 and trainer_logprobs.shape == (len(every.target_tokens),)
    delta = (trainer_logprobs[sampled] - torch.tensor(every.sampler_logprobs)[sampled]).abs().max().item()
    assert delta <= 1e-3, delta


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_an_agents_sdk_episode_is_recorded_token_exact(embedded_model, stream):
    from agents import Runner
    from agents.items import ToolCallOutputItem
    from openai import AsyncOpenAI

    example = load_example("agents_sdk_agent.py")

    async def episode():
        async with embedded_model.capture(task_id="sdk") as rollout:
            if not stream:  # the example's agent as it is, given only the capture's three strings
                result = await example.run_agent(rollout.base_url, rollout.api_key, rollout.model, QUESTION, seed=0)
                return rollout, result, []
            # the same agent run streamed, keeping the text deltas a UI would show
            async with AsyncOpenAI(base_url=rollout.base_url, api_key=rollout.api_key, max_retries=0) as client:
                result = Runner.run_streamed(example.build_agent(client, rollout.model, seed=0), QUESTION, max_turns=example.MAX_TURNS)
                deltas = [
                    e.data.delta
                    async for e in result.stream_events()
                    if e.type == "raw_response_event" and e.data.type == "response.output_text.delta"
                ]
            return rollout, result, deltas

    rollout, result, deltas = asyncio.run(episode())
    trajectory = rollout.trajectory
    # the tool ran once (the call was forced, parallel calls off), and its result is in the record
    assert [str(item.output) for item in result.new_items if isinstance(item, ToolCallOutputItem)] == tool_results(trajectory)
    assert len(tool_results(trajectory)) == 1
    assert len(trajectory.turns) == len(result.raw_responses)  # every call the SDK made was recorded
    assert_one_token_exact_sequence(embedded_model, trajectory, result.final_output)
    if stream:  # the answer came in pieces, and the pieces are the recorded reply
        assert len(deltas) > 1 and "".join(deltas) == result.final_output


@pytest.mark.slow
def test_the_agents_sdks_default_responses_model_is_captured_as_one_sequence(embedded_model):
    """The SDK's default model speaks the Responses API: its calls go through the rollout's
    /responses route, and the tool call, its output item and the answer still bridge."""
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner
    from openai import AsyncOpenAI

    example = load_example("agents_sdk_agent.py")

    async def episode():
        async with embedded_model.capture(task_id="sdk-responses") as rollout:
            async with AsyncOpenAI(base_url=rollout.base_url, api_key=rollout.api_key, max_retries=0) as client:
                settings = ModelSettings(temperature=0.7, max_tokens=64, tool_choice="required", parallel_tool_calls=False, extra_body={"seed": 0})
                agent = Agent(name="calculator", instructions=example.INSTRUCTIONS, tools=[example.calculate], model_settings=settings,
                              model=OpenAIResponsesModel(model=rollout.model, openai_client=client))  # fmt: skip
                result = await Runner.run(agent, QUESTION, max_turns=example.MAX_TURNS)
        return rollout, result

    rollout, result = asyncio.run(episode())
    trajectory = rollout.trajectory
    assert len(trajectory.turns) == len(result.raw_responses) >= 2
    assert trajectory.metadata["turns_broken"] == 0 and trajectory.metadata["turns_bridged"] == len(trajectory.turns) - 1
    assert len(datums_from_trajectory(trajectory, 1.0)) == 1


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_langgraph_episode_is_recorded_token_exact(embedded_model, stream):
    from langchain_core.messages import AIMessage, AIMessageChunk, ToolMessage

    example = load_example("langgraph_agent.py")

    async def episode():
        async with embedded_model.capture(task_id="langgraph") as rollout:
            if not stream:  # the example's agent as it is, given only the capture's three strings
                state = await example.run_agent(rollout.base_url, rollout.api_key, rollout.model, QUESTION, seed=0)
                return rollout, state, {}
            # the same graph over ChatOpenAI(streaming=True), keeping the token chunks a UI would show
            agent = example.build_agent(rollout.base_url, rollout.api_key, rollout.model, seed=0, stream=True)
            chunks: dict[str, list[str]] = {}
            limit = {"recursion_limit": 2 * example.MAX_TURNS - 1}
            async for mode, item in agent.astream({"messages": [("user", QUESTION)]}, limit, stream_mode=["messages", "values"]):
                if mode == "values":
                    state = item
                elif isinstance(item[0], AIMessageChunk):
                    chunks.setdefault(item[0].id, []).append(item[0].text)
            return rollout, state, chunks

    rollout, state, chunks = asyncio.run(episode())
    trajectory = rollout.trajectory
    messages = state["messages"]
    # the tool ran once (the call was forced, parallel calls off), and its result is in the record
    assert [m.text for m in messages if isinstance(m, ToolMessage)] == tool_results(trajectory)
    assert len(tool_results(trajectory)) == 1
    assert len(trajectory.turns) == sum(isinstance(m, AIMessage) for m in messages)  # every call ChatOpenAI made was recorded
    assert_one_token_exact_sequence(embedded_model, trajectory, messages[-1].text)
    if stream:  # one chunked reply per call; the answer came in pieces, and the pieces are the recorded reply
        assert len(chunks) == len(trajectory.turns)
        answer = chunks[messages[-1].id]
        assert len(answer) > 1 and "".join(answer) == messages[-1].text
