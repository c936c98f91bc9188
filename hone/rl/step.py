"""One high-level training step on scored groups, the same in-process and inside `hone serve`.

    metrics = await train_step(backend, "agent", groups, TrainConfig(learning_rate=1e-4))

1. Advantages per group (reward − group mean, optionally / std); groups whose rewards are all equal
   carry no signal and are dropped and counted.
2. Datums: the sampled tokens exactly, with their sampler logprobs and advantages.
3. `forward_backward` then `optim_step` on the backend (submitted together, where the backend
   can save a round trip by it). Nothing is trained when every group was
   dropped: no gradients, no optimizer step, `train/skipped` = 1. If the optimizer step finds no
   gradients (a `hone serve` restarted in between, and gradients live in memory), they are
   recomputed once and the step goes on.

Built only on the Backend protocol's low-level calls, so `TrainableModel.train` and the service's
`train_step` route run this one function over any backend.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from hone.backends.base import Backend
from hone.errors import ConflictError
from hone.rl.datums import datums_from_groups
from hone.rl.trajectory import TrajectoryGroup
from hone.types import AdamParams


@dataclass(frozen=True)
class TrainConfig:
    learning_rate: float = 5e-5
    loss: str | Callable = "cispo"
    loss_config: Any = None  # a hone.training.LossConfig or a plain dict of its fields; None = the loss's defaults
    scale_by_std: bool = False  # divide advantages by the group's reward std
    train_forced_tokens: bool = False  # train on tokens a grammar forced (see hone.rl.datums)
    weight_decay: float = 0.0
    grad_clip_norm: float = 1.0
    betas: tuple[float, float] = (0.9, 0.95)
    extra: dict[str, Any] = field(default_factory=dict)

    def adam(self) -> AdamParams:
        beta1, beta2 = self.betas
        return AdamParams(
            learning_rate=self.learning_rate,
            beta1=beta1,
            beta2=beta2,
            weight_decay=self.weight_decay,
            grad_clip_norm=self.grad_clip_norm,
        )


async def train_step(backend: Backend, name: str, groups: list[TrajectoryGroup], config: TrainConfig = TrainConfig()) -> dict[str, float]:
    """Advantages, datums, forward_backward, optim_step on model `name`; returns namespaced metrics."""
    started = time.perf_counter()
    # 1) advantages and 2) datums
    batch = datums_from_groups(groups, scale_by_std=config.scale_by_std, train_forced_tokens=config.train_forced_tokens)
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
    # 3) one optimizer step
    try:
        loss_metrics, optim_metrics = await backend.forward_backward_optim_step(name, batch.datums, config.loss, config.loss_config, config.adam())
    except ConflictError:  # a server restarted between the two calls and lost the gradients: recompute them, once
        loss_metrics, optim_metrics = await backend.forward_backward_optim_step(name, batch.datums, config.loss, config.loss_config, config.adam())
        metrics["train/gradients_recomputed"] = 1.0
    metrics.update({f"train/{k}": float(v) for k, v in loss_metrics.items()})
    metrics.update({f"optim/{k}": float(v) for k, v in optim_metrics.items()})
    metrics["train/skipped"] = 0.0
    metrics["time/train"] = time.perf_counter() - started
    return metrics
