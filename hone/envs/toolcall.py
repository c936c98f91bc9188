"""A single-turn task: the user asks for something a tool can do; reward 1 for a valid tool call.

Small and fast, so it serves as the training smoke test and the benchmark against TRL. The
reward is 1 when the reply parses as a call to one of the offered tools with JSON-object
arguments, else 0. `success` equals the reward.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Sequence

import openai

from hone.rl.trajectory import Trajectory

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "send_email",
            "description": "Send an email",
            "parameters": {
                "type": "object",
                "properties": {"to": {"type": "string"}, "subject": {"type": "string"}},
                "required": ["to", "subject"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "convert_currency",
            "description": "Convert an amount between currencies",
            "parameters": {
                "type": "object",
                "properties": {"amount": {"type": "number"}, "from": {"type": "string"}, "to": {"type": "string"}},
                "required": ["amount", "from", "to"],
            },
        },
    },
]

SYSTEM_PROMPT = "You are an assistant that answers by calling one tool."

_CITIES = ["Paris", "Lagos", "Osaka", "Lima", "Oslo", "Denver", "Cairo", "Hanoi", "Quito", "Perth"]
_PEOPLE = ["ana@example.com", "raj@example.com", "lee@example.com", "kim@example.com", "sam@example.com"]
_TOPICS = ["the budget", "Friday's lunch", "the new contract", "the offsite", "our next release"]
_AMOUNTS = [(120, "USD", "EUR"), (75, "GBP", "JPY"), (300, "EUR", "CHF"), (42, "CAD", "USD"), (999, "AUD", "NZD")]
# validation asks in the same ways about other cities, people, topics and sums: choices made on it
# (steps, learning rate, the best checkpoint) never look at the training prompts' answers
_VALIDATION_CITIES = ["Accra", "Bergen", "Kyoto", "Tunis", "Austin", "Dakar", "Sapporo", "Bogota"]
_VALIDATION_PEOPLE = ["mia@example.com", "tom@example.com", "eva@example.com"]
_VALIDATION_TOPICS = ["the quarterly plan", "Monday's standup", "the hiring panel"]
_VALIDATION_AMOUNTS = [(250, "USD", "GBP"), (60, "EUR", "USD"), (1500, "JPY", "EUR")]


@dataclass(frozen=True)
class ToolCallTask:
    prompt: str


def make_tasks(cities=_CITIES, people=_PEOPLE, topics=_TOPICS, amounts=_AMOUNTS) -> list[ToolCallTask]:
    weather = [f"What's the weather like in {c} right now?" for c in cities]
    emails = [f"Email {p} about {t}." for p, t in itertools.product(people, topics)]
    money = [f"How much is {a} {f} in {t}?" for a, f, t in amounts]
    return [ToolCallTask(p) for p in weather + emails + money]


def make_validation_tasks() -> list[ToolCallTask]:
    return make_tasks(_VALIDATION_CITIES, _VALIDATION_PEOPLE, _VALIDATION_TOPICS, _VALIDATION_AMOUNTS)


# one worked exchange: zero-shot the 135M model almost never writes a call; with one it sometimes does
WORKED_EXAMPLE = [
    {"role": "user", "content": "What's the weather in Rome?"},
    {"role": "assistant", "content": '<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>'},
]


def prompt_messages(task: ToolCallTask) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, *WORKED_EXAMPLE, {"role": "user", "content": task.prompt}]


def reward_for(message: Any) -> float:
    """1.0 for a parsed call to an offered tool, else 0.0 (works on an openai message or a dict)."""
    calls = message.get("tool_calls") if isinstance(message, dict) else message.tool_calls
    return 1.0 if calls else 0.0


class ToolCallEnv:
    name = "toolcall"

    def __init__(self, max_tokens: int = 48):
        self.max_tokens = max_tokens
        self._tasks = make_tasks()
        self._validation = make_validation_tasks()

    def train_tasks(self) -> Sequence[ToolCallTask]:
        return self._tasks

    def validation_tasks(self) -> Sequence[ToolCallTask]:
        return self._validation

    def eval_tasks(self) -> Sequence[ToolCallTask]:
        return self._tasks

    async def rollout(
        self, client: openai.AsyncOpenAI, model: str, task: ToolCallTask, *, seed: int | None, temperature: float
    ) -> Trajectory:
        messages = prompt_messages(task)
        trajectory = Trajectory(messages=list(messages), tools=TOOLS)
        response = await client.chat.completions.create(
            model=model, messages=messages, tools=TOOLS, max_tokens=self.max_tokens, temperature=temperature, seed=seed
        )
        message = trajectory.add_response(response)
        trajectory.reward = reward_for(message)
        trajectory.metrics["success"] = trajectory.reward
        return trajectory
