"""An ordinary tool-using agent, trained with hone's high-level API.

The agent answers arithmetic questions with a `calculate` tool: one chat call that should call the
tool, the tool's result, and a second call that should give the number. The reward is plain code:
1.0 for the right number, 0.1 for a well-formed call and 0.3 more when the tool could evaluate it. Everything hone needs is
three lines: a TrainableModel, gather_groups over the rollout, and model.train on the groups.

Measured on the embedded model, 2-core CPU, default settings (5 steps x 4 questions x 6 tries,
about 2 minutes): correct answers 4% -> 58% -> 79% -> 79% -> 100% of each step's tries.

    .venv/bin/python examples/calculator_agent.py                       # in-process, embedded model
    .venv/bin/python examples/calculator_agent.py --backend http://127.0.0.1:8000   # on `hone serve`
                                                                        # (key in HONE_API_KEY)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re

from hone.backends import LocalBackend, RemoteBackend
from hone.rl.gather import GatherConfig, gather_groups
from hone.rl.model import TrainableModel, TrainConfig
from hone.rl.trajectory import Trajectory

CALCULATE = {
    "type": "function",
    "function": {
        "name": "calculate",
        "description": "Evaluate an arithmetic expression such as 12 * (3 + 4)",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
    },
}
SYSTEM = "Use the calculate tool for arithmetic, then reply with only the number."
# one worked exchange: a small model copies a concrete example far better than it follows a description
WORKED_EXAMPLE = [
    {"role": "user", "content": "What is 12 * 3?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c0", "type": "function", "function": {"name": "calculate", "arguments": '{"expression": "12 * 3"}'}}
    ]},
    {"role": "tool", "tool_call_id": "c0", "content": "36"},
    {"role": "assistant", "content": "36"},
]  # fmt: skip
# the first reply must call calculate: hone starts it with the call's opening, the model writes the arguments
USE_CALCULATOR = {"type": "function", "function": {"name": "calculate"}}


def make_questions(n: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    questions = []
    for _ in range(n):
        a, b = rng.randint(11, 99), rng.randint(11, 99)
        op, value = rng.choice([("+", a + b), ("-", a - b), ("*", a * b)])
        questions.append((f"What is {a} {op} {b}?", value))
    return questions


def calculate(expression: str) -> str:
    """The tool: digits, + - * / ( ) and spaces only; anything else is refused, never evaluated."""
    if not isinstance(expression, str) or not re.fullmatch(r"[\d\s+\-*/().]{1,64}", expression):
        return "Error: give an arithmetic expression with digits and + - * / ( )."
    try:
        return str(eval(expression, {"__builtins__": {}}, {}))  # the regex above admits arithmetic only
    except (SyntaxError, ZeroDivisionError, TypeError, ValueError):
        return "Error: that expression does not evaluate."


async def rollout(client, model: str, question: str, answer: int, seed: int) -> Trajectory:
    """One episode of the agent, as a user would write it, recorded into a Trajectory."""
    messages = [{"role": "system", "content": SYSTEM}, *WORKED_EXAMPLE, {"role": "user", "content": question}]
    trajectory = Trajectory(messages=messages, tools=[CALCULATE])
    response = await client.chat.completions.create(
        model=model, messages=trajectory.messages, tools=[CALCULATE], tool_choice=USE_CALCULATOR,
        max_tokens=40, temperature=0.6, seed=seed, stop=["</tool_call>"],
    )  # fmt: skip
    message = trajectory.add_response(response)
    calls = message.get("tool_calls") or []
    reward = 0.0
    if calls:
        reward += 0.1  # a well-formed call is progress
        arguments = json.loads(calls[0]["function"]["arguments"] or "{}")
        result = calculate(arguments.get("expression", ""))
        reward += 0.3 * (not result.startswith("Error"))  # an expression the tool could evaluate is more
        trajectory.messages.append({"role": "tool", "tool_call_id": calls[0]["id"], "content": result})
        response = await client.chat.completions.create(
            model=model, messages=trajectory.messages, tool_choice="none", max_tokens=16, temperature=0.6, seed=seed + 1
        )
        trajectory.add_response(response)
    numbers = re.findall(r"-?\d+", trajectory.final_text())
    reward += 1.0 if numbers and int(numbers[0]) == answer else 0.0
    trajectory.reward = reward
    trajectory.metrics["correct"] = float(reward >= 1.0)
    return trajectory


async def main(args: argparse.Namespace) -> None:
    backend = RemoteBackend.from_env(args.backend) if args.backend else LocalBackend()
    model = TrainableModel("calculator-agent", base_model=args.model, backend=backend, lora_rank=16)
    client = model.openai_client()
    questions = make_questions(args.steps * args.questions, seed=0)

    for step in range(args.steps):
        batch = questions[step * args.questions : (step + 1) * args.questions]

        async def attempt(task: tuple[str, int], index: int) -> Trajectory:
            return await rollout(client, model.name, task[0], task[1], seed=1000 * step + index)

        groups = await gather_groups(batch, attempt, GatherConfig(group_size=args.group_size, show_progress=False))
        metrics = await model.train(groups, TrainConfig(learning_rate=args.lr))
        trajectories = [t for g in groups for t in g.trajectories]
        correct = sum(t.metrics["correct"] for t in trajectories) / max(1, len(trajectories))
        reward = sum(t.reward for t in trajectories) / max(1, len(trajectories))
        print(f"step {step + 1}: reward {reward:.2f}, correct {correct:.0%}, {metrics['train/datums']:.0f} sequences trained")
    backend.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train a calculator agent with hone.")
    parser.add_argument("--backend", default=None, help="URL of a `hone serve` (key in HONE_API_KEY); default: in-process")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--questions", type=int, default=4, help="questions per step")
    parser.add_argument("--group-size", type=int, default=6)
    parser.add_argument("--lr", type=float, default=2e-4)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
