"""LocalBackend: models, their samplers and trainers, in this process (CPU or one GPU).

LoRA models of the same base model share one copy of it: one loaded model (whose frozen weights
every LoRA trainer of that base uses, each with its own adapter, optimizer and step) and one engine
(the base weights once, each model's adapter unmerged on top, named after the model; a NAME@STEP
checkpoint of a LoRA model is one more adapter). Full fine-tuning models keep their own copies.
"""

from __future__ import annotations

import asyncio
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import openai

from hone.engine import Engine
from hone.errors import InvalidRequestError, ModelNotFoundError
from hone.models import DEFAULT_MODEL, LoadedModel, load_model
from hone.models.loader import TINY_MODEL
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
    adapter: str | None = None  # its adapter's name on a shared engine; None = an engine of its own
    base_key: tuple | None = None  # the shared base it uses, if any

    def sample_sync(self, prompt_tokens: list[int], n: int, params: SamplingParams) -> list[SampledSequence]:
        """Blocking sample from this model (its adapter on a shared engine), for scripts and tests."""
        return self.engine.sample_sync(prompt_tokens, n, params, adapter=self.adapter)


@dataclass
class _SharedBase:
    """One base model held once for all the LoRA models (and LoRA checkpoints) over it."""

    loaded: LoadedModel
    engine: Engine
    users: set[str] = field(default_factory=set)  # model names whose adapters it serves


class LocalBackend:
    def __init__(self, engine_options: dict[str, Any] | None = None, share_base: bool = False):
        """`share_base=True` keeps one base in memory for all LoRA models of that base, each adapter
        applied unmerged and batched per adapter (what `hone serve --home` uses for its tenants).
        Off by default: with one model, merged weights sample ~25% faster and there is nothing to share."""
        self._share_base = share_base
        self._models: dict[str, ModelHandle] = {}
        self._claimed: set[str] = set()  # names whose models are loading
        self._lock = threading.Lock()
        self._engine_options = dict(engine_options or {})
        self._bases: dict[tuple, _SharedBase] = {}
        self._base_lock = threading.Lock()  # serialises loading a base (slow) without holding _lock
        self._app = None

    # ------------------------------------------------------------------ models
    def add_model(self, name: str, base_model: str = DEFAULT_MODEL, **options: Any) -> ModelHandle:
        """Serve `base_model` under `name`; `options` are kept for the trainer (lora_rank, ...)."""
        with self._claiming(name):
            if self._share_base and _is_lora(options):
                key = _base_key(base_model, options)
                base = self._acquire_base(key, name)
                base.engine.set_adapter(name, {}, 1.0)  # no adapter weights yet: the base itself
                handle = ModelHandle(
                    name=name, base_model=base_model, loaded=base.loaded, engine=base.engine, options=options, adapter=name, base_key=key
                )
            else:
                loaded = load_model(base_model, seed=options.get("seed", 0))
                engine = self._new_engine(loaded)
                handle = ModelHandle(name=name, base_model=base_model, loaded=loaded, engine=engine, options=options)
            return self._register(handle)

    @contextmanager
    def _claiming(self, name: str) -> Iterator[None]:
        """Hold `name` while its model loads: a concurrent add of the same name is refused, and cannot
        overwrite this one's adapter on a shared engine."""
        with self._lock:
            if name in self._models or name in self._claimed:
                raise InvalidRequestError(f"a model named '{name}' already exists; pick another name", param="name")
            self._claimed.add(name)
        try:
            yield
        finally:
            with self._lock:
                self._claimed.discard(name)

    def _register(self, handle: ModelHandle) -> ModelHandle:
        with self._lock:
            self._models[handle.name] = handle
        return handle

    def _acquire_base(self, key: tuple, user: str) -> _SharedBase:
        """The shared base for `key`, loaded on first use; `user` is counted among its users."""
        with self._base_lock:
            base = self._bases.get(key)
            if base is None:
                loaded = load_model(key[0], seed=key[1])
                base = _SharedBase(loaded=loaded, engine=self._new_engine(loaded))
                self._bases[key] = base
            base.users.add(user)
            return base

    def _release(self, handle: ModelHandle) -> None:
        """Free what `handle` alone used: its adapter, the shared base when no one else uses it, or its engine."""
        if handle.base_key is None:
            handle.engine.close()
            return
        with self._base_lock:
            base = self._bases[handle.base_key]
            base.engine.remove_adapter(handle.adapter)
            base.users.discard(handle.name)
            if not base.users:
                del self._bases[handle.base_key]
                base.engine.close()

    def add_checkpoint_model(self, name: str, of: str, path: str | Path) -> ModelHandle:
        """Serve the weights of checkpoint `path` (saved by model `of`'s trainer) under `name`.

        On a shared base, a LoRA checkpoint is one more adapter on the shared engine; otherwise a
        sampler of its own over `of`'s base weights with the checkpoint's weights loaded (LoRA
        merged). `of` itself is not touched. Sampling only: it has no trainer.
        """
        source = self.get(of)
        with self._claiming(name):
            return self._add_checkpoint_model(name, source, path)

    def _add_checkpoint_model(self, name: str, source: ModelHandle, path: str | Path) -> ModelHandle:
        if source.base_key is not None and (Path(path) / "adapter" / "adapter_model.safetensors").exists():
            # a LoRA checkpoint: one more adapter on the shared engine, no new copy of the base
            adapter, scale = _checkpoint_adapter(source, Path(path), _trainer_options(source))
            base = self._acquire_base(source.base_key, name)
            try:
                base.engine.set_adapter(name, adapter, scale)
            except BaseException:
                with self._base_lock:
                    base.users.discard(name)
                raise
            handle = ModelHandle(
                name=name, base_model=source.base_model, loaded=base.loaded, engine=base.engine, options={},
                adapter=name, base_key=source.base_key,
            )
            return self._register(handle)
        weights = _checkpoint_weights(source, path)
        engine = self._new_engine(source.loaded)
        try:
            engine.load_weights(weights)
        except BaseException:
            engine.close()
            raise
        handle = ModelHandle(name=name, base_model=source.base_model, loaded=source.loaded, engine=engine, options={})
        return self._register(handle)

    def remove_model(self, name: str) -> None:
        """Stop serving `name` and free its sampler and trainer; requests still in flight on it fail."""
        with self._lock:
            handle = self._models.pop(name, None)
        if handle is None:
            raise ModelNotFoundError(f"the model '{name}' does not exist; GET /v1/models lists the ones that do")
        self._release(handle)

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
        handle = self.get(name)
        return await handle.engine.sample(prompt_tokens, n, params, adapter=handle.adapter)

    # ------------------------------------------------------------------ training (Tinker-shaped)
    def trainer(self, name: str) -> Any:
        """The model's trainer, made on first use: LoRA (PEFT) or full fine-tuning per its options."""
        from hone.training import Trainer  # training pulls in peft; serving-only processes skip it

        handle = self.get(name)
        with self._lock:
            if handle.trainer is None:
                # on a shared base the trainer uses the base's frozen weights, not a copy of them
                handle.trainer = Trainer(
                    handle.loaded.model, share_frozen_base=handle.base_key is not None, **_trainer_options(handle)
                )
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
        if handle.adapter is not None:  # the adapter alone, unmerged, onto the shared engine
            from peft import get_peft_model_state_dict

            trainer = handle.trainer
            handle.engine.set_adapter(handle.adapter, get_peft_model_state_dict(trainer.model), trainer.lora_alpha / trainer.lora_rank)
        else:
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
            if handle.base_key is None:
                handle.engine.close()
        for base in self._bases.values():
            base.engine.close()


def _eos_ids(loaded: LoadedModel) -> list[int]:
    ids = {loaded.tokenizer.eos_token_id}
    configured = loaded.model.generation_config.eos_token_id if loaded.model.generation_config else None
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    return sorted(i for i in ids if i is not None)


_TRAINER_OPTIONS = ("lora_rank", "lora_alpha", "full_finetune", "max_seq_len", "micro_batch_tokens", "autocast_bf16", "seed")


def _is_lora(options: dict[str, Any]) -> bool:
    return not options.get("full_finetune", False) and options.get("lora_rank", 16) != 0


def _base_key(base_model: str, options: dict[str, Any]) -> tuple[str, int]:
    """Models with equal keys load identical base weights (the seed only matters to `tiny`)."""
    return (base_model, options.get("seed", 0) if base_model == TINY_MODEL else 0)


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
    import torch

    adapter, scale = _checkpoint_adapter(source, path, options)
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
            merged[module + ".weight"] = torch.addmm(W.float(), B.float(), A.float(), alpha=scale)  # (out, r) @ (r, in)
    return merged


def _checkpoint_adapter(source: ModelHandle, path: Path, options: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """The PEFT adapter state of a LoRA checkpoint saved by `source`'s trainer, and its scale
    (alpha / r); CheckpointError if unreadable or saved by a differently configured model."""
    import json

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
    return adapter, alpha / rank


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
