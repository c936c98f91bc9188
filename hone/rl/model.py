"""TrainableModel: the high-level handle an engineer holds — a client for rollouts, one call to train.

    model = TrainableModel("agent", base_model="smollm2-135m", backend=LocalBackend())
    client = model.openai_client()                      # rollouts talk to it like any OpenAI model
    groups = await gather_groups(tasks, rollout, GatherConfig(group_size=8))
    # or, for an agent that makes its own client: `async with model.capture() as rollout:` (hone.rl.capture)
    metrics = await model.train(groups, TrainConfig(learning_rate=1e-4))

Built only on the Backend protocol, so it runs unchanged on LocalBackend and RemoteBackend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai

from hone.backends import Backend, LocalBackend
from hone.models import DEFAULT_MODEL
from hone.rl.capture import Capture
from hone.rl.step import TrainConfig, train_step
from hone.rl.trajectory import TrajectoryGroup
from hone.types import ModelInfo

__all__ = ["TrainConfig", "TrainableModel"]


class TrainableModel:
    def __init__(self, name: str, base_model: str = DEFAULT_MODEL, backend: Backend | None = None, **options: Any):
        """Add (or, on a remote backend, re-attach to) model `name`; `options` as `ModelSpec.of` takes them."""
        self.name = name
        self.backend: Backend = LocalBackend() if backend is None else backend
        self.info: ModelInfo = self.backend.add_model(name, base_model, **options)

    def openai_client(self, **kwargs: Any) -> openai.AsyncOpenAI:
        return self.backend.openai_client(**kwargs)

    def openai_client_sync(self, **kwargs: Any) -> openai.OpenAI:
        return self.backend.openai_client_sync(**kwargs)

    def capture(self, task_id: str | None = None, **metadata: str) -> Capture:
        """`async with model.capture() as rollout:` records every call an agent makes through
        `rollout.openai_client()` or `rollout.base_url`; `rollout.trajectory` afterwards (hone.rl.capture)."""
        return Capture(self.backend, self.name, task_id, metadata)

    async def train(self, groups: list[TrajectoryGroup], config: TrainConfig = TrainConfig()) -> dict[str, float]:
        """One training step on scored groups (see `hone.rl.step.train_step`)."""
        return await train_step(self.backend, self.name, groups, config)

    async def save_state(self, path: str | Path) -> Path:
        return await self.backend.save_state(self.name, path)

    async def load_state(self, path: str | Path, with_optimizer: bool = True) -> None:
        await self.backend.load_state(self.name, path, with_optimizer)
