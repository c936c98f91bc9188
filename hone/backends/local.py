"""LocalBackend: models, their samplers and trainers, in this process (CPU or one GPU)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import openai

from hone.engine import Engine
from hone.errors import InvalidRequestError, ModelNotFoundError
from hone.models import DEFAULT_MODEL, LoadedModel, load_model
from hone.types import AdamParams, Datum, SampledSequence, SamplingParams


@dataclass
class ModelHandle:
    """One served model: its weights, its sampler and (once training starts) its trainer."""

    name: str
    base_model: str
    loaded: LoadedModel
    engine: Engine
    trainer: Any = None
    options: dict[str, Any] = field(default_factory=dict)


class LocalBackend:
    def __init__(self, engine_options: dict[str, Any] | None = None):
        self._models: dict[str, ModelHandle] = {}
        self._lock = threading.Lock()
        self._engine_options = dict(engine_options or {})
        self._app = None

    # ------------------------------------------------------------------ models
    def add_model(self, name: str, base_model: str = DEFAULT_MODEL, **options: Any) -> ModelHandle:
        """Serve `base_model` under `name`; `options` are kept for the trainer (lora_rank, ...)."""
        with self._lock:
            if name in self._models:
                raise InvalidRequestError(f"a model named '{name}' already exists; pick another name", param="name")
        loaded = load_model(base_model, seed=options.get("seed", 0))
        engine = Engine(
            loaded.model,
            eos_token_ids=_eos_ids(loaded),
            decode=lambda ids, tok=loaded.tokenizer: tok.decode(ids, skip_special_tokens=True),
            **self._engine_options,
        )
        handle = ModelHandle(name=name, base_model=base_model, loaded=loaded, engine=engine, options=options)
        with self._lock:
            self._models[name] = handle
        return handle

    def get(self, name: str) -> ModelHandle:
        handle = self._models.get(name)
        if handle is None:
            raise ModelNotFoundError(f"the model '{name}' does not exist; GET /v1/models lists the ones that do")
        return handle

    def list_models(self) -> list[str]:
        return sorted(self._models)

    def tokenizer(self, name: str) -> Any:
        return self.get(name).loaded.tokenizer

    # ------------------------------------------------------------------ sampling
    async def sample(self, name: str, prompt_tokens: list[int], n: int, params: SamplingParams) -> list[SampledSequence]:
        return await self.get(name).engine.sample(prompt_tokens, n, params)

    # ------------------------------------------------------------------ training (Tinker-shaped)
    def trainer(self, name: str) -> Any:
        """The model's trainer, made on first use: LoRA (PEFT) or full fine-tuning per its options."""
        from hone.training import Trainer  # training pulls in peft; serving-only processes skip it

        handle = self.get(name)
        with self._lock:
            if handle.trainer is None:
                keys = ("lora_rank", "lora_alpha", "full_finetune", "max_seq_len", "micro_batch_tokens", "autocast_bf16", "seed")
                handle.trainer = Trainer(handle.loaded.model, **{k: v for k, v in handle.options.items() if k in keys})
            return handle.trainer

    async def forward_backward(
        self, name: str, datums: list[Datum], loss: str | Callable = "cispo", loss_config: Any = None
    ) -> dict[str, float]:
        """Accumulate gradients of `loss` over `datums`; returns the loss's metrics."""
        trainer = self.trainer(name)
        return await asyncio.to_thread(trainer.forward_backward, datums, loss, loss_config)

    async def optim_step(self, name: str, adam: AdamParams) -> dict[str, float]:
        """Apply the accumulated gradients; the sampler serves the new weights from the next request."""
        trainer = self.trainer(name)
        metrics = await asyncio.to_thread(trainer.optim_step, adam)
        await asyncio.to_thread(self._push_weights, name)
        return metrics

    async def save_state(self, name: str, path: str | Path) -> Path:
        return await asyncio.to_thread(self.trainer(name).save_state, path)

    async def load_state(self, name: str, path: str | Path, with_optimizer: bool = True) -> None:
        await asyncio.to_thread(self.trainer(name).load_state, path, with_optimizer)
        await asyncio.to_thread(self._push_weights, name)

    def _push_weights(self, name: str) -> None:
        handle = self.get(name)
        handle.engine.load_weights(handle.trainer.sampler_state_dict())

    # ------------------------------------------------------------------ clients
    @property
    def app(self) -> Any:
        if self._app is None:
            from hone.server import create_app  # the server imports nothing from here; avoid a cycle at import

            self._app = create_app(self)
        return self._app

    def openai_client(self, **kwargs: Any) -> openai.AsyncOpenAI:
        """An async OpenAI client that reaches this backend in-process."""
        from hone.backends.inprocess import async_client

        return async_client(self.app, **kwargs)

    def openai_client_sync(self, **kwargs: Any) -> openai.OpenAI:
        from hone.backends.inprocess import sync_client

        return sync_client(self.app, **kwargs)

    def close(self) -> None:
        for handle in self._models.values():
            handle.engine.close()


def _eos_ids(loaded: LoadedModel) -> list[int]:
    ids = {loaded.tokenizer.eos_token_id}
    configured = loaded.model.generation_config.eos_token_id if loaded.model.generation_config else None
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    return sorted(i for i in ids if i is not None)
