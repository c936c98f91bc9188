"""What `hone train` needs from an environment: tasks, and a rollout that scores one attempt."""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import openai

from hone.rl.trajectory import Trajectory


class Environment(Protocol):
    """A task source plus an agent loop.

    `rollout` plays one attempt at `task` through `client` (an OpenAI-style async client) against
    `model`, and returns a Trajectory with its `reward` set. Put `success` (0 or 1) in
    `trajectory.metrics` when the task has a notion of success; it is reported beside reward.
    """

    name: str

    def train_tasks(self) -> Sequence[Any]: ...

    def eval_tasks(self) -> Sequence[Any]: ...

    async def rollout(
        self, client: openai.AsyncOpenAI, model: str, task: Any, *, seed: int | None, temperature: float
    ) -> Trajectory: ...
