"""Capture: train the agent you already have, written with any OpenAI-style client.

    async with model.capture(task_id=task.id) as rollout:
        agent = Agent(model=OpenAIChatCompletionsModel(model.name, rollout.openai_client()))   # or:
        llm = ChatOpenAI(model=model.name, base_url=rollout.base_url, api_key=rollout.api_key)
        answer = await run_my_agent(...)
        rollout.reward = score(answer)
    trajectory = rollout.trajectory          # every call the agent made, token-exact

A capture opens a rollout on the backend (`hone.server.rollouts`) and gives its endpoint: a
client (`openai_client()`, in-process with no port on LocalBackend), or a base URL and key for an
agent that builds its own client (a loopback server on 127.0.0.1 in-process; `hone serve`'s own
URL remotely). On exit the rollout is closed and its record becomes `rollout.trajectory`, with the
`reward`, `metrics` and `metadata` set on the capture. Groups: run N captures per task (see
`gather_groups`). An agent that raises still closes its rollout; the exception goes on to
`gather_groups`, which counts it against the failure budget.
"""

from __future__ import annotations

from typing import Any

import openai

from hone.backends import Backend
from hone.rl.env import CapturedEnvironment, Environment
from hone.rl.trajectory import Trajectory


class Capture:
    def __init__(self, backend: Backend, model: str, task_id: str | None = None, metadata: dict[str, str] | None = None):
        self.backend = backend
        self.model = model  # the name the agent must ask for
        self.task_id = task_id
        self.metadata = dict(metadata or {})
        self.id: str | None = None
        self.reward = 0.0
        self.metrics: dict[str, float] = {}
        self.trajectory: Trajectory | None = None  # set when the block ends
        self.closed = False

    async def __aenter__(self) -> "Capture":
        record = await self.backend.open_rollout(self.model, self.task_id, self.metadata or None)
        self.id = record["id"]
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        try:
            record = await self.backend.close_rollout(self._open_id())
            self.closed = True
        except Exception:
            if exc is not None:
                return False  # the agent's own error says more than the close's
            raise
        self.trajectory = Trajectory.from_rollout(record)
        self.trajectory.reward = self.reward
        self.trajectory.metrics.update(self.metrics)
        return False

    @property
    def base_url(self) -> str:
        """The URL to give an agent's own OpenAI client (with `api_key`)."""
        return self.backend.rollout_endpoint(self._open_id())[0]

    @property
    def api_key(self) -> str:
        return self.backend.rollout_endpoint(self._open_id())[1]

    def openai_client(self, **kwargs: Any) -> openai.AsyncOpenAI:
        """An async client whose calls this rollout records; `kwargs` as `openai.AsyncOpenAI` takes them."""
        return self.backend.openai_client(rollout_id=self._open_id(), **kwargs)

    def openai_client_sync(self, **kwargs: Any) -> openai.OpenAI:
        return self.backend.openai_client_sync(rollout_id=self._open_id(), **kwargs)

    def _open_id(self) -> str:
        if self.id is None:
            raise RuntimeError("this capture has not started: use it as `async with model.capture() as rollout:`")
        if self.closed:
            raise RuntimeError("this capture has ended, and its rollout is closed: open another with `model.capture()`")
        return self.id


async def play(
    env: Environment | CapturedEnvironment, backend: Backend, client: openai.AsyncOpenAI, model: str, task: Any, *, seed: int | None, temperature: float
) -> Trajectory:
    """One attempt at `task`: through `client` (an Environment), or captured (a CapturedEnvironment)."""
    if hasattr(env, "run_agent"):
        return await captured_rollout(env, backend, model, task, seed=seed, temperature=temperature)
    return await env.rollout(client, model, task, seed=seed, temperature=temperature)


async def captured_rollout(env: CapturedEnvironment, backend: Backend, model: str, task: Any, *, seed: int | None, temperature: float) -> Trajectory:
    """One attempt of an environment whose agent runs against a captured endpoint (`run_agent`)."""
    async with Capture(backend, model, task_id=_task_key(task)) as rollout:
        reward = await env.run_agent(rollout, task, seed=seed, temperature=temperature)
        if reward is not None:
            rollout.reward = float(reward)
    assert rollout.trajectory is not None
    return rollout.trajectory


def _task_key(task: Any) -> str | None:
    key = task.get("id") if isinstance(task, dict) else getattr(task, "id", None)
    return None if key is None else str(key)[:256]
