"""An OpenAI Agents SDK agent, trained with hone without changing how it is written.

The agent is plain Agents SDK code (`run_agent` below imports nothing from hone): an `Agent` with a
`calculate` function tool, over an `OpenAIChatCompletionsModel` whose `AsyncOpenAI` client is
built from a base URL, an API key and a model name. hone only hands it those three strings, from
`model.capture()`, and records every call the agent makes there token for token. The SDK re-sends
the whole conversation on every turn (question, tool call, tool result); hone *bridges* each turn
onto the tokens it already sampled, so one episode trains as one sequence, not one per call: the
printed `bridged` count is every call after an episode's first, `broken` (turns that could not be
continued verbatim) stays 0, and each episode gives one sequence to train.

The reward is plain code: 1.0 when the first number of the agent's final answer is right, 0.1 when
it called the tool with an expression the tool could evaluate.

Measured on the embedded model, 2-core CPU (AMD EPYC), default settings (5 steps x 4 questions x 6
tries, about 3 minutes): correct answers 25% -> 12% -> 42% -> 42% -> 71% of each step's tries. At
every step 0 turns were broken, and each trained group gave one sequence per episode (a group
whose tries all score alike is dropped).

    .venv/bin/python examples/agents_sdk_agent.py                        # in-process, embedded model
    .venv/bin/python examples/agents_sdk_agent.py --stream               # the same, streamed (Runner.run_streamed)
    .venv/bin/python examples/agents_sdk_agent.py --backend http://127.0.0.1:8000   # on `hone serve`
                                                                         # (key in HONE_API_KEY)
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
from typing import Annotated

from agents import (
    Agent,
    MaxTurnsExceeded,
    ModelBehaviorError,
    ModelSettings,
    OpenAIChatCompletionsModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from agents.items import ToolCallOutputItem
from agents.result import RunResultBase
from openai import AsyncOpenAI
from pydantic import Field

from hone.backends import LocalBackend, RemoteBackend
from hone.rl.gather import GatherConfig, gather_groups
from hone.rl.model import TrainableModel, TrainConfig
from hone.rl.trajectory import Trajectory

MAX_TURNS = 3  # model calls per episode: the tool call, the answer, one spare
# a small model copies a concrete example far better than it follows a description
INSTRUCTIONS = (
    "Use the calculate tool for arithmetic, then reply with only the number. Example: for "
    '"What is 12 * 3?" call calculate with {"expression": "12 * 3"}; it returns 36; reply 36.'
)

set_tracing_disabled(True)  # the SDK would otherwise send traces to OpenAI: nothing leaves this machine


# --------------------------------------------------------------------------- the agent (no hone in here)
def make_questions(n: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    questions = []
    for _ in range(n):
        a, b = rng.randint(11, 99), rng.randint(11, 99)
        op, value = rng.choice([("+", a + b), ("-", a - b), ("*", a * b)])
        questions.append((f"What is {a} {op} {b}?", value))
    return questions


def evaluate(expression: str) -> str:
    """Digits, + - * / ( ) and spaces only; anything else is refused, never evaluated."""
    if not re.fullmatch(r"[\d\s+\-*/().]{1,40}", expression):
        return "Error: give an arithmetic expression with digits and + - * / ( )."
    try:
        return str(eval(expression, {"__builtins__": {}}, {}))  # the regex above admits arithmetic only
    except (SyntaxError, ZeroDivisionError, TypeError, ValueError):
        return "Error: that expression does not evaluate."


@function_tool
def calculate(expression: Annotated[str, Field(max_length=40)]) -> str:
    """Evaluate an arithmetic expression such as 12 * (3 + 4)."""
    return evaluate(expression)


def build_agent(client: AsyncOpenAI, model: str, seed: int, max_tokens: int = 64) -> Agent:
    # the first turn must call a tool (a small model rarely does unprompted); the SDK drops
    # tool_choice after a call (reset_tool_choice), so the next turn is free to answer
    settings = ModelSettings(
        temperature=0.7, max_tokens=max_tokens, tool_choice="required", parallel_tool_calls=False, extra_args={"seed": seed}
    )  # extra_args go into the request body
    return Agent(name="calculator", instructions=INSTRUCTIONS, model=OpenAIChatCompletionsModel(model=model, openai_client=client),
                 tools=[calculate], model_settings=settings)  # fmt: skip


async def run_agent(base_url: str, api_key: str, model: str, question: str, seed: int = 0, stream: bool = False) -> RunResultBase:
    """One episode of the agent, exactly as it runs anywhere: its RunResult (final output and items)."""
    async with AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0) as client:
        agent = build_agent(client, model, seed)
        if not stream:
            return await Runner.run(agent, question, max_turns=MAX_TURNS)
        result = Runner.run_streamed(agent, question, max_turns=MAX_TURNS)
        async for _ in result.stream_events():  # a UI would show these as they come
            pass
        return result


def score(result: RunResultBase | None, answer: int) -> tuple[float, bool]:
    """(reward, correct): 1.0 for the right number first in the final answer, plus 0.1 when the
    tool got an expression it could evaluate."""
    if result is None:
        return 0.0, False
    numbers = re.findall(r"-?\d+", str(result.final_output))
    correct = bool(numbers) and int(numbers[0]) == answer
    tool_outputs = [str(item.output) for item in result.new_items if isinstance(item, ToolCallOutputItem)]
    evaluated = any(not output.startswith("Error") for output in tool_outputs)
    return 1.0 * correct + 0.1 * evaluated, correct


# --------------------------------------------------------------------------- training it with hone
async def attempt(model: TrainableModel, question: str, answer: int, seed: int, stream: bool) -> Trajectory:
    """One captured episode, scored. An agent that keeps calling tools past MAX_TURNS, or replies
    with a tool call the SDK cannot parse, has failed the task: that is a reward of 0 and an episode
    worth training on (so the model learns not to), not an error to drop. Anything else (the server
    gone, a bug) propagates: gather_groups counts it against its failure budget."""
    async with model.capture(task_id=question) as rollout:
        try:
            result = await run_agent(rollout.base_url, rollout.api_key, rollout.model, question, seed, stream)
        except (MaxTurnsExceeded, ModelBehaviorError):
            result = None
        rollout.reward, correct = score(result, answer)
        rollout.metrics["correct"] = float(correct)
    return rollout.trajectory


async def main(args: argparse.Namespace) -> None:
    backend = RemoteBackend.from_env(args.backend) if args.backend else LocalBackend()
    model = TrainableModel("agents-sdk-agent", base_model=args.model, backend=backend, lora_rank=16)
    questions = make_questions(args.steps * args.questions, seed=0)

    for step in range(args.steps):
        batch = questions[step * args.questions : (step + 1) * args.questions]

        async def rollout(task: tuple[str, int], index: int, step: int = step) -> Trajectory:
            return await attempt(model, task[0], task[1], seed=1000 * step + index, stream=args.stream)

        groups = await gather_groups(batch, rollout, GatherConfig(group_size=args.group_size, show_progress=False))
        metrics = await model.train(groups, TrainConfig(learning_rate=args.lr))
        episodes = [t for g in groups for t in g.trajectories]
        n = max(1, len(episodes))
        reward = sum(t.reward for t in episodes) / n
        correct = sum(t.metrics["correct"] for t in episodes) / n
        calls = sum(len(t.turns) for t in episodes)
        bridged = sum(t.metadata["turns_bridged"] for t in episodes)
        broken = sum(t.metadata["turns_broken"] for t in episodes)
        print(
            f"step {step + 1}: reward {reward:.2f}, correct {correct:.0%}, {len(episodes)} episodes, "
            f"{calls} calls ({bridged} bridged, {broken} broken), {metrics['train/datums']:.0f} sequences trained"
        )
    backend.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train an OpenAI Agents SDK agent with hone.")
    parser.add_argument("--backend", default=None, help="URL of a `hone serve` (key in HONE_API_KEY); default: in-process")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--questions", type=int, default=4, help="questions per step")
    parser.add_argument("--group-size", type=int, default=6)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--stream", action="store_true", help="run the agent streamed (Runner.run_streamed)")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
