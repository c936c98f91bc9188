"""The Backend protocol: what `LocalBackend` and `RemoteBackend` both are, with the same names,
arguments and return types. Everything above the backends (`hone.rl`, the service, the CLI) is
typed against this, so user code runs unchanged on either.

A Backend is a `Sampler` (the three calls the OpenAI routes need) plus models and Tinker-shaped
training calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import openai

from hone.server.sampler import Sampler
from hone.types import AdamParams, Datum, ModelInfo


@runtime_checkable
class Backend(Sampler, Protocol):
    # ------------------------------------------------------------------ models
    def add_model(self, name: str, base_model: str = ..., **options: Any) -> ModelInfo:
        """Serve and train `base_model` under `name`; options as `hone.types.ModelSpec.of` takes them."""
        ...

    def delete_model(self, name: str) -> None:
        """Stop serving `name` and free what it used."""
        ...

    def model_info(self, name: str) -> ModelInfo:
        """What the backend knows of `name` (its base, rank and optimizer steps); ModelNotFoundError if none."""
        ...

    # ------------------------------------------------------------------ training
    async def forward_backward(
        self, name: str, datums: list[Datum], loss: str | Callable = "cispo", loss_config: Any = None
    ) -> dict[str, float]:
        """Accumulate gradients of `loss` over `datums`; returns the loss's metrics."""
        ...

    async def optim_step(self, name: str, adam: AdamParams) -> dict[str, float]:
        """Apply the accumulated gradients; sampling uses the new weights from the next request."""
        ...

    async def forward_backward_optim_step(
        self, name: str, datums: list[Datum], loss: str | Callable, loss_config: Any, adam: AdamParams
    ) -> tuple[dict[str, float], dict[str, float]]:
        """forward_backward then optim_step, the pair submitted without waiting between them where
        that saves a round trip (RemoteBackend); returns (loss metrics, optimizer metrics)."""
        ...

    async def save_state(self, name: str, path: str | Path) -> Path:
        """Checkpoint weights, optimizer and step so that `load_state(path)` resumes exactly."""
        ...

    async def load_state(self, name: str, path: str | Path, with_optimizer: bool = True) -> None: ...

    # ------------------------------------------------------------------ traffic, feedback, promotion (hone.traffic)
    def configure_traffic(self, name: str, enabled: bool = True, **settings: Any) -> dict[str, Any]:
        """Turn `name`'s traffic log on or off (retention_days, max_completions, labels)."""
        ...

    def feedback(self, completion_id: str | None = None, *, rollout_id: str | None = None, reward: float | None = None, label: str | None = None, choice: int = 0) -> Any:
        """A reward, or a label the model maps to one, for a served completion or a whole rollout."""
        ...

    async def traffic(self, name: str) -> tuple[list[Any], list[Any]]:
        """Every completion `name`'s log holds, oldest first, and the feedback on them."""
        ...

    def save_checkpoint(self, name: str, checkpoint: str | None = None) -> dict[str, Any]:
        """Save the live weights as a named checkpoint (served as NAME@CHECKPOINT); returns its name and step."""
        ...

    def restore_checkpoint(self, name: str, checkpoint: str, with_optimizer: bool = True) -> int:
        """Put the live weights back to a named checkpoint's; returns the step."""
        ...

    async def list_checkpoints(self, name: str) -> list[dict[str, Any]]: ...

    def promotions(self, name: str) -> dict[str, Any]:
        """What NAME serves (NAME@CHECKPOINT, or NAME@live) and every gate decision on its checkpoints."""
        ...

    def promote(self, name: str, checkpoint: str, promoted: bool = True, reason: str = "", metrics: dict[str, float] | None = None) -> dict[str, Any]:
        """Record a decision on a checkpoint; promoted, NAME serves it (a rollback promotes an older one)."""
        ...

    # ------------------------------------------------------------------ clients
    def openai_client(self, rollout_id: str | None = None, **kwargs: Any) -> openai.AsyncOpenAI:
        """An async OpenAI client whose chat completions sample from this backend's models (and, with
        `rollout_id`, are recorded by that rollout); `kwargs` as `openai.AsyncOpenAI` takes them."""
        ...

    def openai_client_sync(self, rollout_id: str | None = None, **kwargs: Any) -> openai.OpenAI: ...

    # ------------------------------------------------------------------ rollouts (hone.rl.capture)
    async def open_rollout(self, name: str, task_id: str | None = None, metadata: dict[str, str] | None = None) -> dict[str, Any]:
        """Open a rollout recording calls to model `name`; returns its (empty) record, `id` included."""
        ...

    async def close_rollout(self, rollout_id: str) -> dict[str, Any]:
        """Close it and return its record (`hone.server.rollouts`); a repeated close returns it again."""
        ...

    def rollout_endpoint(self, rollout_id: str) -> tuple[str, str]:
        """(base URL, API key) for an agent that builds its own OpenAI client."""
        ...

    def close(self) -> None: ...
