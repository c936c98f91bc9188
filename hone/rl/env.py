"""What `hone train` needs from an environment: tasks, and a rollout that scores one attempt.

Two kinds: an `Environment` plays an attempt through the client it is given and returns its
Trajectory; a `CapturedEnvironment` runs any agent against a captured endpoint (`hone.rl.capture`)
and returns only the reward, hone recording the calls. The loop, evaluation and `hone train
FILE.py` take either.
"""

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


class CapturedEnvironment(Protocol):
    """A task source plus an agent that makes its own client.

    `run_agent` plays one attempt at `task` with any agent pointed at `rollout` (a
    `hone.rl.capture.Capture`, which imports this module: its `base_url`,
    `api_key` and `model`, or `rollout.openai_client()`), and returns the reward (or None, having
    set `rollout.reward`). Put `success` in `rollout.metrics` where the task has one.
    """

    name: str

    def train_tasks(self) -> Sequence[Any]: ...

    def eval_tasks(self) -> Sequence[Any]: ...

    async def run_agent(self, rollout: Any, task: Any, *, seed: int | None, temperature: float) -> float | None: ...
