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
        engine = self._new_engine(loaded)
        handle = ModelHandle(name=name, base_model=base_model, loaded=loaded, engine=engine, options=options)
        with self._lock:
            self._models[name] = handle
        return handle

    def add_checkpoint_model(self, name: str, of: str, path: str | Path) -> ModelHandle:
        """Serve the weights of checkpoint `path` (saved by model `of`'s trainer) under `name`.

        A sampler of its own over `of`'s base weights with the checkpoint's weights loaded (LoRA
        merged); `of` itself is not touched. Sampling only: it has no trainer.
        """
        source = self.get(of)
        with self._lock:
            if name in self._models:
                raise InvalidRequestError(f"a model named '{name}' already exists; pick another name", param="name")
        weights = _checkpoint_weights(source, path)
        engine = self._new_engine(source.loaded)
        try:
            engine.load_weights(weights)
        except BaseException:
            engine.close()
            raise
        handle = ModelHandle(name=name, base_model=source.base_model, loaded=source.loaded, engine=engine, options={})
        with self._lock:
            self._models[name] = handle
        return handle

    def remove_model(self, name: str) -> None:
        """Stop serving `name` and free its sampler and trainer; requests still in flight on it fail."""
        with self._lock:
            handle = self._models.pop(name, None)
        if handle is None:
            raise ModelNotFoundError(f"the model '{name}' does not exist; GET /v1/models lists the ones that do")
        handle.engine.close()

    def step(self, name: str) -> int:
        """Optimizer steps taken by `name`'s trainer (0 before it has one)."""
        trainer = self.get(name).trainer
        return 0 if trainer is None else trainer.step

    def has_gradients(self, name: str) -> bool:
        """Whether forward_backward has accumulated gradients that no optim_step has used yet."""
        trainer = self.get(name).trainer
        return trainer is not None and any(p.grad is not None for p in trainer.model.parameters())

    def get(self, name: str) -> ModelHandle:
        handle = self._models.get(name)
        if handle is None:
            raise ModelNotFoundError(f"the model '{name}' does not exist; GET /v1/models lists the ones that do")
        return handle

    def _new_engine(self, loaded: LoadedModel) -> Engine:
        return Engine(
            loaded.model,
            eos_token_ids=_eos_ids(loaded),
            decode=lambda ids, tok=loaded.tokenizer: tok.decode(ids, skip_special_tokens=True),
            **self._engine_options,
        )

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
                handle.trainer = Trainer(handle.loaded.model, **_trainer_options(handle))
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


_TRAINER_OPTIONS = ("lora_rank", "lora_alpha", "full_finetune", "max_seq_len", "micro_batch_tokens", "autocast_bf16", "seed")


def _trainer_options(handle: ModelHandle) -> dict[str, Any]:
    return {k: v for k, v in handle.options.items() if k in _TRAINER_OPTIONS}


def _checkpoint_weights(source: ModelHandle, path: str | Path) -> dict[str, Any]:
    """The sampler weights (plain names, LoRA merged) of a checkpoint saved by `source`'s trainer.

    A LoRA checkpoint is merged straight from its adapter file: W + (alpha / r) · B @ A for each
    adapted layer, the same fused addmm as `Trainer.sampler_state_dict` (~0.1 s, where building a
    throwaway PEFT trainer takes ~8 s on the 135M model); only the adapted weights are returned, the
    rest are the base's. A full fine-tuning checkpoint is read by a throwaway trainer of the same
    configuration. Either way the checkpoint must match the model's configuration, else CheckpointError.
    """
    path = Path(path)
    options = _trainer_options(source)
    if not options.get("full_finetune", False) and (path / "adapter" / "adapter_model.safetensors").exists():
        return _merged_adapter_weights(source, path, options)
    return _weights_via_trainer(source, path, options)


def _merged_adapter_weights(source: ModelHandle, path: Path, options: dict[str, Any]) -> dict[str, Any]:
    import json

    import torch
    from safetensors.torch import load_file

    from hone.errors import CheckpointError

    try:
        state = json.loads((path / "trainer_state.json").read_text())
        adapter = load_file(str(path / "adapter" / "adapter_model.safetensors"))
    except Exception as exc:  # unreadable files: one sentence, the cause chained
        raise CheckpointError(f"the checkpoint at {path.name} is unreadable or corrupt ({type(exc).__name__})") from exc
    rank = options.get("lora_rank", 16)
    alpha = options.get("lora_alpha") or 2 * rank
    if state.get("full_finetune") or state.get("lora_rank") != rank or state.get("lora_alpha") != alpha:
        raise CheckpointError(f"the checkpoint {path.name} was saved by a differently configured model")
    base = source.loaded.model.state_dict()
    merged: dict[str, Any] = {}
    prefix, a_suffix = "base_model.model.", ".lora_A.weight"
    with torch.no_grad():
        for key, A in adapter.items():
            if not key.endswith(a_suffix):
                continue
            module = key[len(prefix) : -len(a_suffix)]
            B = adapter[prefix + module + ".lora_B.weight"]
            W = base[module + ".weight"]
            merged[module + ".weight"] = torch.addmm(W.float(), B.float(), A.float(), alpha=alpha / rank)  # (out, r) @ (r, in)
    return merged


def _weights_via_trainer(source: ModelHandle, path: Path, options: dict[str, Any]) -> dict[str, Any]:
    """A throwaway trainer reads the checkpoint; the global RNG states that `load_state` restores
    are put back afterwards, so serving a checkpoint moves no one's RNG."""
    import random

    import numpy as np
    import torch

    from hone.training import Trainer

    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            trainer = Trainer(source.loaded.model, **options)
            trainer.load_state(path, with_optimizer=False)
            return trainer.sampler_state_dict()
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
