"""LocalBackend: models, their samplers and trainers, in this process (CPU or one GPU).

LoRA models of the same base model share one copy of it: one loaded model (whose frozen weights
every LoRA trainer of that base uses, each with its own adapter, optimizer and step) and one engine
(the base weights once, each model's adapter unmerged on top, named after the model; a NAME@STEP
checkpoint of a LoRA model is one more adapter). Full fine-tuning models keep their own copies.

Named checkpoints and promotion decisions (hone.traffic.promotion) live in a folder
(hone.backends.promotions): once one is promoted, NAME samples it and NAME@live the live weights.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import openai
import torch
from fastapi import FastAPI

from hone.backends.promotions import LIVE, CheckpointBook, SavedCheckpoint
from hone.engine import Engine
from hone.engine.grammar import GrammarMatchers
from hone.errors import HoneError, InvalidRequestError, ModelNotFoundError
from hone.memory import release_freed_memory
from hone.models import DEFAULT_MODEL, LoadedModel, load_model
from hone.models.loader import TINY_MODEL
from hone.server import create_app
from hone.server.inprocess import async_client, sync_client
from hone.server.loopback import LoopbackServer
from hone.traffic import LOCAL_TENANT, Feedback, LoggedCompletion, ServedCompletion, TrafficLog, TrafficSettings
from hone.training import Trainer
from hone.training.checkpoint import has_adapter, merged_adapter_weights, read_adapter
from hone.types import AdamParams, Datum, ModelInfo, ModelSpec, OnTokens, SampledSequence, SamplingParams


@dataclass
class ModelHandle:
    """One served model: its weights, its sampler and (once training starts) its trainer."""

    name: str
    base_model: str
    loaded: LoadedModel
    engine: Engine
    spec: ModelSpec
    trainer: Trainer | None = None
    adapter: str | None = None  # its adapter's name on a shared engine; None = an engine of its own
    base_key: tuple | None = None  # the shared base it uses, if any
    in_flight: int = 0  # sample calls running on it
    deleted: bool = False  # deleted while samples ran: freed when the last one ends

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
    def __init__(
        self,
        engine_options: dict[str, Any] | None = None,
        share_base: bool = False,
        checkpoint_models: int = 2,
        serve_only: bool = False,
        traffic: str | Path | None = None,
        checkpoints: str | Path | None = None,
    ):
        """`share_base=True` keeps one base in memory for all LoRA models of that base, each adapter
        applied unmerged and batched per adapter (what `hone serve --home` uses for its tenants).
        Off by default: with one model, merged weights sample ~25% faster and there is nothing to share.
        `checkpoint_models`: checkpoints served at once (`add_checkpoint_model`); past it, the least
        recently used one is deleted.
        `serve_only=True` is for a process that only serves (`hone serve`): each engine keeps one
        packed copy of the weights and the loaded model's own fp32 copy is freed, ~0.9 GB less for
        the embedded model; training and serving checkpoints are refused.
        `traffic`: a SQLite file for the traffic log (`configure_traffic` turns it on per model;
        see hone.traffic); None = nothing served is kept.
        `checkpoints`: a folder for named checkpoints and promotion decisions (`save_checkpoint`,
        `promote`: what hone.traffic.promotion gates with); None = a temporary folder, removed at
        `close()`. Given the same folder again, a new backend serves what was promoted."""
        self._share_base = share_base
        self._serve_only = serve_only
        self._checkpoint_models: OrderedDict[str, None] = OrderedDict()  # least recently used first
        self._max_checkpoint_models = max(checkpoint_models, 1)
        self._models: dict[str, ModelHandle] = {}
        self._claimed: set[str] = set()  # names whose models are loading
        self._lock = threading.Lock()
        self._engine_options = dict(engine_options or {})
        self._bases: dict[tuple, _SharedBase] = {}
        self._base_lock = threading.Lock()  # serialises loading a base (slow) without holding _lock
        self._app = None
        self._loopback: LoopbackServer | None = None
        self.traffic_log = TrafficLog(traffic) if traffic is not None else None
        self._checkpoint_root = Path(checkpoints) if checkpoints is not None else None
        # a temporary one is made on first use, so a backend that never promotes makes no folder
        self._book = CheckpointBook(self._checkpoint_root) if self._checkpoint_root is not None else None
        self._book_models: set[str] = set()  # the checkpoint models serving NAME@CHECKPOINT (not listed)
        self._book_load_lock = threading.Lock()  # one load per checkpoint, however many requests wait for it

    # ------------------------------------------------------------------ models
    def add_model(self, name: str, base_model: str = DEFAULT_MODEL, **options: Any) -> ModelInfo:
        """Serve `base_model` under `name`, trainable as `ModelSpec.of(base_model, **options)` says
        (lora_rank, 0 = full fine-tuning, and the trainer's options); checked before anything loads."""
        spec = ModelSpec.of(base_model, **options)
        with self._claiming(name):
            if self._share_base and not spec.full_finetune:
                key = _base_key(spec)
                base = self._acquire_base(key, name)
                base.engine.set_adapter(name, {}, 1.0)  # no adapter weights yet: the base itself
                handle = ModelHandle(name=name, base_model=base_model, loaded=base.loaded, engine=base.engine, spec=spec, adapter=name, base_key=key)
            else:
                loaded = load_model(base_model, seed=spec.options.seed or 0)
                engine = self._new_engine(loaded)
                self._free_model_copy(loaded, engine)
                handle = ModelHandle(name=name, base_model=base_model, loaded=loaded, engine=engine, spec=spec)
            self._register(handle)
        return self.model_info(name)

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
                self._free_model_copy(loaded, base.engine)
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
        merged). `of` itself is not touched. Sampling only: it has no trainer. At most
        `checkpoint_models` are kept: adding one more deletes the least recently used (its samples
        in flight finish first).
        """
        source = self.get(of)
        if self._serve_only:
            raise HoneError("this backend only serves (serve_only=True) and keeps no base weights to load a checkpoint over; serve it from a backend without serve_only")
        with self._claiming(name):
            handle = self._add_checkpoint_model(name, source, path)
        with self._lock:
            self._checkpoint_models[name] = None
            evicted = []
            while len(self._checkpoint_models) > self._max_checkpoint_models:
                evicted.append(self._checkpoint_models.popitem(last=False)[0])
        for old in evicted:
            self._delete_if_present(old)
        return handle

    def _add_checkpoint_model(self, name: str, source: ModelHandle, path: str | Path) -> ModelHandle:
        if source.base_key is not None and has_adapter(path):
            # a LoRA checkpoint: one more adapter on the shared engine, no new copy of the base
            adapter, scale = _read_adapter(source, path)
            base = self._acquire_base(source.base_key, name)
            try:
                base.engine.set_adapter(name, adapter, scale)
            except BaseException:
                with self._base_lock:
                    base.users.discard(name)
                raise
            handle = ModelHandle(
                name=name, base_model=source.base_model, loaded=base.loaded, engine=base.engine, spec=source.spec,
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
        handle = ModelHandle(name=name, base_model=source.base_model, loaded=source.loaded, engine=engine, spec=source.spec)
        return self._register(handle)

    def delete_model(self, name: str) -> None:
        """Stop serving `name`: new requests for it are refused at once; samples already running on it
        finish, and its sampler and trainer are freed when the last one ends."""
        serves_a_checkpoint = name in self._book_models
        if not self._delete_if_present(name):
            raise ModelNotFoundError(f"the model '{name}' does not exist; GET /v1/models lists the ones that do")
        if self._book is not None and not serves_a_checkpoint:
            self._evict_book_models(name)
            self._book.forget(name)

    def _delete_if_present(self, name: str) -> bool:
        with self._lock:
            handle = self._models.pop(name, None)
            self._checkpoint_models.pop(name, None)
            self._book_models.discard(name)
            if handle is None:
                return False
            handle.deleted = True
            idle = handle.in_flight == 0
        if idle:
            self._release(handle)
        return True

    def model_info(self, name: str) -> ModelInfo:
        handle = self.get(name)
        return ModelInfo(name=name, base_model=handle.base_model, lora_rank=handle.spec.lora_rank, step=self.step(name))

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
        eos_ids = _eos_ids(loaded)
        return Engine(
            loaded.model,
            eos_token_ids=eos_ids,
            decode=lambda ids, tok=loaded.tokenizer: tok.decode(ids, skip_special_tokens=True),
            grammars=GrammarMatchers(loaded.tokenizer, loaded.model.config.vocab_size, eos_ids),
            serve_only=self._serve_only,
            **self._engine_options,
        )

    def _free_model_copy(self, loaded: LoadedModel, engine: Engine) -> None:
        """Serving only, the native engine has its own copy of the weights: free the model's (its
        config and generation config stay). The fallback engine runs the model itself: kept."""
        if self._serve_only and engine.attention_impl != "transformers":
            loaded.model.to("meta")
            release_freed_memory()

    def list_models(self) -> list[str]:
        """The models, and for each one with promotions NAME@live and NAME@STEP of its named checkpoints."""
        names = sorted(set(self._models) - self._book_models)
        if self._book is None:
            return names
        listed = []
        for name in names:
            listed.append(name)
            if self._book.decisions(name):
                listed.append(f"{name}@{LIVE}")
            listed.extend(f"{name}@{step}" for step in sorted({c.step for c in self._book.checkpoints(name)}))
        return listed

    def tokenizer(self, name: str) -> Any:
        handle = self._models.get(name)
        return (handle or self.get(name.partition("@")[0])).loaded.tokenizer  # NAME@CHECKPOINT: NAME's

    # ------------------------------------------------------------------ sampling
    async def sample(
        self, name: str, prompt_tokens: list[int], n: int, params: SamplingParams, on_tokens: OnTokens | None = None
    ) -> list[SampledSequence]:
        """From model `name`; where NAME has a promoted checkpoint, NAME samples it, NAME@live the live
        weights and NAME@CHECKPOINT (or NAME@STEP) a named checkpoint, loaded on first use."""
        internal, checkpoint = self._route(name)
        if checkpoint is None:
            return await self._sample(internal, prompt_tokens, n, params, on_tokens)
        for attempt in (1, 2):  # evicted between its load and this sample (a few are kept): loaded again, once
            if not self.serves(internal):
                await asyncio.to_thread(self._load_book_model, internal, name.partition("@")[0], checkpoint)
            try:
                return await self._sample(internal, prompt_tokens, n, params, on_tokens)
            except ModelNotFoundError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _sample(
        self, name: str, prompt_tokens: list[int], n: int, params: SamplingParams, on_tokens: OnTokens | None = None
    ) -> list[SampledSequence]:
        with self._lock:  # counted, so a delete meanwhile lets this sample finish before freeing the model
            handle = self.get(name)
            handle.in_flight += 1
            if name in self._checkpoint_models:
                self._checkpoint_models.move_to_end(name)
        try:
            return await handle.engine.sample(prompt_tokens, n, params, adapter=handle.adapter, on_tokens=on_tokens)
        finally:
            with self._lock:
                handle.in_flight -= 1
                last = handle.deleted and handle.in_flight == 0
            if last:
                self._release(handle)

    def serves(self, name: str) -> bool:
        return name in self._models

    def _route(self, served: str) -> tuple[str, SavedCheckpoint | None]:
        """The model that samples `served`, and the named checkpoint it serves (None: a model as added)."""
        name, at, version = served.partition("@")
        if self._book is None or name not in self._models or (at and served in self._models):
            return served, None  # no promotions, or a checkpoint model added under this very name
        if not at:
            checkpoint = self._book.promoted(name)
        elif version == LIVE:
            return name, None
        else:
            try:
                checkpoint = self._book.find(name, version)
            except HoneError:
                raise ModelNotFoundError(f"the model '{served}' does not exist; GET /v1/models lists the ones that do") from None
        if checkpoint is None:
            return name, None
        return f"{name}@{checkpoint.checkpoint}#{checkpoint.created!r}", checkpoint  # saved again: another model

    def _load_book_model(self, internal: str, name: str, checkpoint: SavedCheckpoint) -> None:
        with self._book_load_lock:
            if self.serves(internal):
                return
            self.add_checkpoint_model(internal, name, self._checkpoints().folder(name, checkpoint.checkpoint))
            with self._lock:
                self._book_models.add(internal)

    def _evict_book_models(self, name: str, checkpoint: str | None = None) -> None:
        """Stop serving `name`'s checkpoints (or one of them); samples in flight on them finish."""
        prefix = f"{name}@" + ("" if checkpoint is None else f"{checkpoint}#")
        for internal in [m for m in list(self._book_models) if m.startswith(prefix)]:
            self._delete_if_present(internal)

    # ------------------------------------------------------------------ training (Tinker-shaped)
    def trainer(self, name: str) -> Trainer:
        """The model's trainer, made on first use: LoRA (PEFT) or full fine-tuning per its spec."""
        handle = self.get(name)
        if self._serve_only:
            raise HoneError(f"'{name}' is served by a backend that only serves (serve_only=True); train it in a LocalBackend without serve_only, or with `hone serve --home`")
        with self._lock:
            if handle.trainer is None:
                # on a shared base the trainer uses the base's frozen weights, not a copy of them
                handle.trainer = Trainer(handle.loaded.model, share_frozen_base=handle.base_key is not None, **handle.spec.trainer_kwargs())
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

    async def forward_backward_optim_step(
        self, name: str, datums: list[Datum], loss: str | Callable, loss_config: Any, adam: AdamParams
    ) -> tuple[dict[str, float], dict[str, float]]:
        """One optimizer step on `datums`: in-process there is no round trip to save, so one call after the other."""
        return await self.forward_backward(name, datums, loss, loss_config), await self.optim_step(name, adam)

    async def save_state(self, name: str, path: str | Path) -> Path:
        handle = self.get(name)
        trainer = self.trainer(name)
        return await asyncio.to_thread(trainer.save_state, path, tokenizer=handle.loaded.tokenizer, base_model=handle.base_model)

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

    # ------------------------------------------------------------------ traffic and feedback (issue 17)
    def configure_traffic(self, name: str, enabled: bool = True, **settings: Any) -> dict[str, Any]:
        """Turn `name`'s traffic log on (or off): retention_days, max_completions, labels (word -> reward)."""
        self.get(name)
        log = self._traffic()
        log.configure(LOCAL_TENANT, name, TrafficSettings(enabled=enabled, **settings))
        return {"model": name, "settings": log.settings(LOCAL_TENANT, name).public(), **log.counts(LOCAL_TENANT, name)}

    async def record_completion(self, completion: ServedCompletion) -> None:
        """Called by the routes for each completion they serve: kept if its model's log is on."""
        name = completion.served.partition("@")[0]
        if self.traffic_log is None or not self.traffic_log.settings(LOCAL_TENANT, name).enabled:
            return
        try:
            internal, checkpoint = self._route(completion.served)
        except ModelNotFoundError:
            return  # deleted while it served: its log went with it
        step = checkpoint.step if checkpoint is not None else self.step(internal) if self.serves(internal) else 0
        await asyncio.to_thread(self.traffic_log.record, LOCAL_TENANT, name, step, completion)

    def feedback(self, completion_id: str | None = None, *, rollout_id: str | None = None, reward: float | None = None, label: str | None = None, choice: int = 0) -> Feedback:
        """A reward (or a label the model maps to one) for a served completion or a whole rollout."""
        return self._traffic().add_feedback(LOCAL_TENANT, completion_id=completion_id, rollout_id=rollout_id, reward=reward, label=label, choice=choice)

    async def traffic(self, name: str) -> tuple[list[LoggedCompletion], list[Feedback]]:
        """Every completion `name`'s log holds, oldest first, and the feedback on them."""
        log = self._traffic()
        return log.completions(LOCAL_TENANT, name, limit=1 << 62), log.feedback(LOCAL_TENANT, name)

    def _traffic(self) -> TrafficLog:
        if self.traffic_log is None:
            raise HoneError("this LocalBackend keeps no traffic log; create it with LocalBackend(traffic='PATH/traffic.sqlite3')")
        return self.traffic_log

    # ------------------------------------------------------------------ checkpoints and promotion (issue 17)
    def save_checkpoint(self, name: str, checkpoint: str | None = None) -> dict[str, Any]:
        """Save `name`'s trainer state as a named checkpoint (default `step-N`); returns its name and step.
        Saving again under a name replaces that checkpoint, except the one NAME serves."""
        handle = self.get(name)
        book = self._checkpoints()
        step = self.step(name)
        checkpoint = checkpoint or f"step-{step}"
        book.check_new(name, checkpoint)
        self._evict_book_models(name, checkpoint)
        self.trainer(name).save_state(book.folder(name, checkpoint), tokenizer=handle.loaded.tokenizer, base_model=handle.base_model)
        book.record_checkpoint(name, checkpoint, step)
        return {"checkpoint": checkpoint, "step": step}

    def restore_checkpoint(self, name: str, checkpoint: str, with_optimizer: bool = True) -> int:
        """Put `name`'s live weights (and optimizer, step, RNG states) back to a named checkpoint's; returns the step."""
        self.get(name)
        saved = self._checkpoints().find_named(name, checkpoint)
        self.trainer(name).load_state(self._checkpoints().folder(name, saved.checkpoint), with_optimizer)
        self._push_weights(name)
        return self.step(name)

    async def list_checkpoints(self, name: str) -> list[dict[str, Any]]:
        self.get(name)
        return [{"checkpoint": c.checkpoint, "step": c.step, "created": c.created} for c in self._checkpoints().checkpoints(name)]

    def promotions(self, name: str) -> dict[str, Any]:
        """What NAME serves (NAME@CHECKPOINT, or NAME@live), and every decision recorded on its checkpoints."""
        self.get(name)
        return self._checkpoints().info(name)

    def promote(self, name: str, checkpoint: str, promoted: bool = True, reason: str = "", metrics: dict[str, float] | None = None) -> dict[str, Any]:
        """Record a gate's decision on a named checkpoint; promoted, NAME serves it from the next
        request on (a rollback is the promotion of an older one); refused, it is kept with the reason."""
        self.get(name)
        self._checkpoints().record_decision(name, checkpoint, promoted, reason, metrics or {})
        return self.promotions(name)

    def _checkpoints(self) -> CheckpointBook:
        with self._lock:
            if self._book is None:
                root = self._checkpoint_root or Path(tempfile.mkdtemp(prefix="hone-checkpoints-"))
                self._book = CheckpointBook(root)
            return self._book

    # ------------------------------------------------------------------ clients
    @property
    def app(self) -> FastAPI:
        if self._app is None:
            self._app = create_app(self)
        return self._app

    def openai_client(self, rollout_id: str | None = None, **kwargs: Any) -> openai.AsyncOpenAI:
        """An async OpenAI client that reaches this backend in-process (through rollout `rollout_id`,
        whose calls are recorded, if given). With your own `http_client`, it talks to the loopback
        server on 127.0.0.1 instead, since only hone's transport reaches the app without a port."""
        path = f"/v1/rollouts/{rollout_id}" if rollout_id else "/v1"
        if "http_client" in kwargs:
            return openai.AsyncOpenAI(base_url=self._served().url + path, api_key=self._served().api_key, **kwargs)
        return async_client(self.app, path=path, **kwargs)

    def openai_client_sync(self, rollout_id: str | None = None, **kwargs: Any) -> openai.OpenAI:
        path = f"/v1/rollouts/{rollout_id}" if rollout_id else "/v1"
        if "http_client" in kwargs:
            return openai.OpenAI(base_url=self._served().url + path, api_key=self._served().api_key, **kwargs)
        return sync_client(self.app, path=path, **kwargs)

    def _served(self) -> LoopbackServer:
        """The app on a real port of 127.0.0.1, started on first use."""
        with self._lock:
            if self._loopback is None:
                self._loopback = LoopbackServer(self.app)
            return self._loopback

    # ------------------------------------------------------------------ rollouts
    async def open_rollout(self, name: str, task_id: str | None = None, metadata: dict[str, str] | None = None) -> dict[str, Any]:
        """Open a rollout recording calls to model `name` (see `hone.rl.capture`); returns its record."""
        self.get(name)
        return self.app.state.rollouts.open(None, name, task_id, metadata).public()

    async def close_rollout(self, rollout_id: str) -> dict[str, Any]:
        """Close the rollout and return its record: every call made through it, token-exact."""
        return self.app.state.rollouts.close(None, rollout_id).public()

    def rollout_endpoint(self, rollout_id: str) -> tuple[str, str]:
        """The base URL and API key an agent's own client needs to call the model through the rollout."""
        server = self._served()
        return f"{server.url}/v1/rollouts/{rollout_id}", server.api_key

    def close(self) -> None:
        if self._loopback is not None:
            self._loopback.close()
            self._loopback = None
        for handle in self._models.values():
            if handle.base_key is None:
                handle.engine.close()
        for base in self._bases.values():
            base.engine.close()
        # drop the weights and trainers too: whatever still refers to this backend (an app's route
        # closures, a caller's variable) then keeps only an empty shell, not gigabytes of models
        self._models.clear()
        self._bases.clear()
        if self.traffic_log is not None:
            self.traffic_log.close()
        if self._book is not None and self._checkpoint_root is None:
            shutil.rmtree(self._book.root, ignore_errors=True)  # a temporary folder: nothing promoted outlives the backend


def _eos_ids(loaded: LoadedModel) -> list[int]:
    ids = {loaded.tokenizer.eos_token_id}
    configured = loaded.model.generation_config.eos_token_id if loaded.model.generation_config else None
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    return sorted(i for i in ids if i is not None)


def _base_key(spec: ModelSpec) -> tuple[str, int]:
    """Models with equal keys load identical base weights (the seed only matters to `tiny`)."""
    return (spec.base_model, (spec.options.seed or 0) if spec.base_model == TINY_MODEL else 0)


def _checkpoint_weights(source: ModelHandle, path: str | Path) -> dict[str, Any]:
    """The sampler weights (plain names, LoRA merged) of a checkpoint saved by `source`'s trainer.

    A LoRA checkpoint is merged straight from its adapter file (`merged_adapter_weights`: only the
    adapted weights come back, the rest are the base's); a full fine-tuning checkpoint is read by a
    throwaway trainer of the same configuration. Either way the checkpoint must match the model's
    configuration, else CheckpointError.
    """
    path = Path(path)
    if not source.spec.full_finetune and has_adapter(path):
        adapter, scale = _read_adapter(source, path)
        return merged_adapter_weights(source.loaded.model.state_dict(), adapter, scale)
    return _weights_via_trainer(source, path)


def _read_adapter(source: ModelHandle, path: str | Path) -> tuple[dict[str, Any], float]:
    """The adapter and scale of a LoRA checkpoint, checked against `source`'s rank and alpha."""
    return read_adapter(path, source.spec.lora_rank, source.spec.options.lora_alpha)


def _weights_via_trainer(source: ModelHandle, path: Path) -> dict[str, Any]:
    """A throwaway trainer reads the checkpoint; the global RNG states that `load_state` restores
    are put back afterwards, so serving a checkpoint moves no one's RNG."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            trainer = Trainer(source.loaded.model, **source.spec.trainer_kwargs())
            trainer.load_state(path, with_optimizer=False)
            return trainer.sampler_state_dict()
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
