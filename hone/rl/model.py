"""TrainableModel: the high-level handle an engineer holds — a client for rollouts, one call to train.

    model = TrainableModel("agent", base_model="smollm2-135m", backend=LocalBackend())
    client = model.openai_client()                      # rollouts talk to it like any OpenAI model
    groups = await gather_groups(tasks, rollout, GatherConfig(group_size=8))
    metrics = await model.train(groups, TrainConfig(learning_rate=1e-4))

Built only on the backend's low-level calls (forward_backward, optim_step, save/load_state), so
it runs unchanged on any backend with that interface.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hone.models import DEFAULT_MODEL
from hone.rl.datums import datums_from_groups
from hone.rl.trajectory import TrajectoryGroup
from hone.types import AdamParams


@dataclass(frozen=True)
class TrainConfig:
    learning_rate: float = 5e-5
    loss: str | Callable = "cispo"
    loss_config: Any = None  # a hone.training.LossConfig; None = the loss's defaults
    scale_by_std: bool = False  # divide advantages by the group's reward std
    weight_decay: float = 0.0
    grad_clip_norm: float = 1.0
    betas: tuple[float, float] = (0.9, 0.95)
    extra: dict[str, Any] = field(default_factory=dict)


class TrainableModel:
    def __init__(self, name: str, base_model: str = DEFAULT_MODEL, backend: Any = None, **options: Any):
        if backend is None:
            from hone.backends import LocalBackend

            backend = LocalBackend()
        self.name = name
        self.backend = backend
        backend.add_model(name, base_model, **options)

    @classmethod
    def attach(cls, name: str, backend: Any) -> "TrainableModel":
        """A handle to a model `backend` already serves, without adding it (a server training a tenant's model)."""
        model = cls.__new__(cls)
        model.name, model.backend = name, backend
        return model

    def openai_client(self, **kwargs: Any):
        return self.backend.openai_client(**kwargs)

    def openai_client_sync(self, **kwargs: Any):
        return self.backend.openai_client_sync(**kwargs)

    async def train(self, groups: list[TrajectoryGroup], config: TrainConfig = TrainConfig()) -> dict[str, float]:
        """One training step on scored groups: advantages, datums, forward_backward, optim_step."""
        started = time.perf_counter()
        batch = datums_from_groups(groups, scale_by_std=config.scale_by_std)
        metrics: dict[str, float] = {
            "train/groups_used": batch.groups_used,
            "train/groups_dropped_zero_variance": batch.groups_dropped_zero_variance,
            "train/groups_dropped_too_small": batch.groups_dropped_too_small,
            "train/datums": len(batch.datums),
            "train/tokens_trained": float(sum(sum(d.weights) for d in batch.datums)),
            "train/tokens_forward": float(sum(len(d.input_tokens) for d in batch.datums)),
        }
        if not batch.datums:  # every group was uniform: nothing to learn from, and no optimizer step
            metrics["train/skipped"] = 1.0
            metrics["time/train"] = time.perf_counter() - started
            return metrics
        loss_metrics = await self.backend.forward_backward(self.name, batch.datums, config.loss, config.loss_config)
        adam = AdamParams(
            learning_rate=config.learning_rate,
            beta1=config.betas[0],
            beta2=config.betas[1],
            weight_decay=config.weight_decay,
            grad_clip_norm=config.grad_clip_norm,
        )
        optim_metrics = await self.backend.optim_step(self.name, adam)
        metrics.update({f"train/{k}": float(v) for k, v in loss_metrics.items()})
        metrics.update({f"optim/{k}": float(v) for k, v in optim_metrics.items()})
        metrics["train/skipped"] = 0.0
        metrics["time/train"] = time.perf_counter() - started
        return metrics

    async def save_state(self, path: str | Path) -> Path:
        return await self.backend.save_state(self.name, path)

    async def load_state(self, path: str | Path, with_optimizer: bool = True) -> None:
        await self.backend.load_state(self.name, path, with_optimizer)
