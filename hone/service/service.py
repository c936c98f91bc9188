"""The multi-tenant layer of `hone serve --home DIR`: tenants' models in one LocalBackend, made durable.

Each tenant's model NAME is hosted in the backend under the internal name "TENANT_ID/NAME" (a
model name cannot hold '/', so internal names never collide), and a tenant can only reach names
under its own id: another tenant's model is looked up, not found, and answered like a missing one.

What a completed request leaves on disk, and how a restart reads it back, is the journal's job
(`journal.py`, whose docstring has the layout and the order of writes).

An optimizer step with no accumulated gradients is refused (409) rather than silently taking an
empty step; gradients do not survive a restart.

`NAME@STEP` (or `NAME@CHECKPOINT`) is a checkpoint model of the backend (one more adapter on the
shared base, or a sampler of its own), loaded on first use under the model's lock; the backend
keeps a few and frees the least recently used once its samples finish. `NAME` is the live model.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import time
from collections import OrderedDict
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

from hone.backends import LocalBackend
from hone.errors import CheckpointError, ConflictError, HoneError, InvalidRequestError, LimitError, ModelNotFoundError
from hone.models import DEFAULT_MODEL, load_tokenizer
from hone.rl.step import TrainConfig, train_step
from hone.rl.trajectory import TrajectoryGroup
from hone.server.rollouts import RolloutBook
from hone.service.journal import Journal
from hone.backends.promotions import LIVE  # one name for the live weights, in-process and served
from hone.service.store import CheckpointRow, ModelRow, PromotionRow, RequestRow, Store, Tenant, check_name
from hone.traffic import Feedback, LoggedCompletion, ServedCompletion, TrafficLog, TrafficSettings
from hone.training import Trainer
from hone.types import AdamParams, ModelSpec, OnTokens, SampledSequence, SamplingParams


TRAFFIC_FILE = "traffic.sqlite3"


@dataclass(frozen=True)
class ServiceConfig:
    home: Path
    base_models: tuple[str, ...] = (DEFAULT_MODEL,)  # the only base models tenants may create models from
    max_models_per_tenant: int = 8
    max_concurrent_requests: int = 32  # per tenant, requests in flight at once
    max_body_bytes: int = 64 * 2**20
    max_n: int = 64
    max_datums: int = 1024  # per forward_backward
    max_groups: int = 256  # per train_step
    max_group_size: int = 256  # trajectories per group
    max_seq_len: int = 8192  # the largest max_seq_len option a model may ask for
    checkpoint_engines: int = 2  # NAME@STEP samplers kept loaded (least recently used goes first)
    autosave: bool = True  # persist the trainer's state after every optimizer step (see the module docstring)
    share_base: bool = True  # tenants' LoRA models of one base share it (memory), at ~25% slower sampling per model
    after_arrival_s: float = 1.0  # how long an optim_step sent `after` a forward_backward waits for it to arrive


@dataclass
class _Pending:
    """A forward_backward an optim_step may be sent `after`: has it arrived, has it finished."""

    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    settled: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _ModelState:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Service:
    def __init__(self, config: ServiceConfig, backend: LocalBackend | None = None):
        self.config = config
        self.home = Path(config.home)
        self.store = Store(self.home)
        self.journal = Journal(self.home, self.store)
        self.traffic = TrafficLog(self.home / TRAFFIC_FILE)  # its own file: serving's writes never wait on training's
        self.backend = backend or LocalBackend(share_base=config.share_base, checkpoint_models=config.checkpoint_engines)
        self.rollouts = RolloutBook()  # in memory: a restart loses open rollouts, whose agents then fail and are counted
        self._models: dict[tuple[int, str], _ModelState] = {}
        self._tenant_locks: dict[int, asyncio.Lock] = {}
        self._loading: dict[str, asyncio.Future] = {}  # checkpoint and base models being loaded, by internal name
        self._base_tokenizers: dict[str, Any] = {}
        self._forward_backwards: OrderedDict[tuple[int, str], _Pending] = OrderedDict()  # by (tenant, request id)

    # ------------------------------------------------------------------ names and paths
    @staticmethod
    def internal(tenant: Tenant, name: str) -> str:
        return f"{tenant.id}/{name}"

    def _state(self, tenant: Tenant, name: str) -> _ModelState:
        return self._models.setdefault((tenant.id, name), _ModelState())

    @asynccontextmanager
    async def _locked(self, tenant: Tenant, name: str) -> AsyncIterator[ModelRow]:
        """The model's lock, held; a 404 before waiting, and again if it was deleted while we waited."""
        self.model(tenant, name)
        async with self._state(tenant, name).lock:
            yield self.model(tenant, name)

    def model(self, tenant: Tenant, name: str) -> ModelRow:
        """The tenant's model `name`, or a 404 that reads the same whether it is missing or someone else's."""
        check_name(name)
        row = self.store.model(tenant.id, name)
        if row is None:
            raise ModelNotFoundError(f"the model '{name}' does not exist; GET /v1/hone/models lists yours")
        return row

    # ------------------------------------------------------------------ start-up
    async def restore(self) -> list[str]:
        """Bring back every model in SQLite with its latest state; returns what was done, one line each."""
        done = []
        self.journal.remove_orphans()
        known = {(m.tenant_id, m.name) for m in self.store.models()}
        for tenant_id, name in self.traffic.models():  # a deleted model's log (a kill between the two deletes)
            if (tenant_id, name) not in known:
                self.traffic.delete(tenant_id, name, settings_too=True)
            else:
                self.traffic.prune(tenant_id, name)
        for row in self.store.models():
            done.append(await self._restore_model(row))
        return done

    async def _restore_model(self, row: ModelRow) -> str:
        internal = f"{row.tenant_id}/{row.name}"
        await asyncio.to_thread(self.backend.add_model, internal, row.base_model, **row.spec().keywords())
        self.journal.clean_checkpoints(row)
        state, request = self.journal.latest_state(row.tenant_id, row.name)
        # newest first: the autosaved state, then checkpoints from the newest; an unreadable one is reported and skipped
        candidates = [(state, f"state {state.name}")] if state is not None else []
        candidates += [
            (self.journal.checkpoint_dir(row.tenant_id, row.name, c.checkpoint), f"checkpoint {c.checkpoint}")
            for c in reversed(self.store.checkpoints(row.tenant_id, row.name))
        ]
        source, step, problems = "fresh", 0, []
        for path, label in candidates:
            try:
                await self.backend.load_state(internal, path, with_optimizer=True)
            except HoneError as exc:
                problems.append(f"{label} unusable ({exc})")
                request = None  # the request file belongs to the state that could not be loaded
                continue
            step, source = self.backend.step(internal), label
            break
        self.journal.recover(row, step, request)
        return f"tenant {row.tenant_id} model {row.name}: step {step} from {source}" + "".join(f"; {p}" for p in problems)

    # ------------------------------------------------------------------ models
    async def create_model(self, tenant: Tenant, name: str, spec: ModelSpec, exist_ok: bool) -> ModelRow:
        check_name(name)
        base_model, lora_rank = spec.base_model, spec.lora_rank
        if base_model not in self.config.base_models:
            raise InvalidRequestError(
                f"base model '{base_model}' is not offered by this server; choose one of: {', '.join(self.config.base_models)}",
                param="base_model",
            )
        max_len = spec.options.max_seq_len
        if max_len is not None and max_len > self.config.max_seq_len:
            raise InvalidRequestError(
                f"options.max_seq_len {max_len} is over this server's limit of {self.config.max_seq_len}", param="options.max_seq_len"
            )
        async with self._tenant_locks.setdefault(tenant.id, asyncio.Lock()):
            existing = self.store.model(tenant.id, name)
            if existing is not None:
                if exist_ok and existing.base_model == base_model and existing.lora_rank == lora_rank:
                    return existing
                if exist_ok:
                    raise ConflictError(
                        f"the model '{name}' exists with base model '{existing.base_model}' and lora_rank {existing.lora_rank}; "
                        "use another name or delete it first",
                        param="name",
                    )
                raise ConflictError(f"the model '{name}' already exists; pass exist_ok=true to reuse it or pick another name", param="name")
            names = [m.name for m in self.store.models(tenant.id)]
            _refuse_case_twin(name, names, "model", "name")
            if name in self.config.base_models:
                raise ConflictError(f"'{name}' is the name of one of this server's base models; pick another name", param="name")
            if len(names) >= self.config.max_models_per_tenant:
                raise LimitError(
                    f"this tenant already has {self.config.max_models_per_tenant} models, the server's limit; delete one first"
                )
            shutil.rmtree(self.journal.model_dir(tenant.id, name), ignore_errors=True)  # leftovers of a crashed delete
            await asyncio.to_thread(self.traffic.delete, tenant.id, name, True)
            internal = self.internal(tenant, name)
            await asyncio.to_thread(self.backend.add_model, internal, base_model, **spec.keywords())
            row = ModelRow(tenant.id, name, base_model, lora_rank, spec.options.model_dump(exclude_none=True), 0, time.time())
            try:
                await asyncio.to_thread(self.store.add_model, row)
            except BaseException:
                self.backend.delete_model(internal)
                raise
            return row

    async def delete_model(self, tenant: Tenant, name: str) -> None:
        async with self._locked(tenant, name):
            await asyncio.to_thread(self.store.delete_model, tenant.id, name)
            self._evict(tenant.id, name)
            self.backend.delete_model(self.internal(tenant, name))
            await asyncio.to_thread(shutil.rmtree, self.journal.model_dir(tenant.id, name), True)
            await asyncio.to_thread(self.traffic.delete, tenant.id, name, True)
        self._models.pop((tenant.id, name), None)

    # ------------------------------------------------------------------ training
    async def forward_backward(
        self, tenant: Tenant, name: str, datums: list, loss: str, loss_config: dict | None, request_id: str | None
    ) -> dict[str, Any]:
        self.model(tenant, name)
        if len(datums) > self.config.max_datums:
            raise InvalidRequestError(f"{len(datums)} datums is over this server's limit of {self.config.max_datums} per request", param="datums")
        internal = self.internal(tenant, name)
        if request_id is not None:
            self._forward_backward(tenant, request_id).arrived.set()
        try:
            async with self._locked(tenant, name):
                if (stored := await self.journal.replay(tenant.id, name, "forward_backward", request_id)) is not None:
                    return stored
                metrics = await self.backend.forward_backward(internal, datums, loss, loss_config)
                response = {"metrics": finite(metrics)}
                if request_id is not None:
                    await self.journal.record(tenant.id, RequestRow(request_id, name, "forward_backward", self.backend.step(internal), response))
                return response
        finally:
            if request_id is not None:  # an optim_step sent `after` it may go on (it finds no gradients if this failed)
                self._forward_backward(tenant, request_id).settled.set()

    def _forward_backward(self, tenant: Tenant, request_id: str) -> _Pending:
        key = (tenant.id, request_id)
        if key not in self._forward_backwards:
            self._forward_backwards[key] = _Pending()
            while len(self._forward_backwards) > 4096:  # only recent ones are waited for
                self._forward_backwards.popitem(last=False)
        return self._forward_backwards[key]

    async def _wait_for_forward_backward(self, tenant: Tenant, request_id: str) -> None:
        """Until the forward_backward `request_id` has run here (or ran before, and was recorded). It
        was sent at the same moment, so it must arrive within `after_arrival_s`; once it has, it may
        take as long as it takes."""
        if await asyncio.to_thread(self.store.completed, tenant.id, request_id) is not None:
            return
        pending = self._forward_backward(tenant, request_id)
        try:
            await asyncio.wait_for(pending.arrived.wait(), self.config.after_arrival_s)
        except TimeoutError:
            raise ConflictError(
                f"the forward_backward '{request_id}' this optim_step is sent after did not arrive within "
                f"{self.config.after_arrival_s:g} s; send the optim_step again once it has run",
                param="after",
            ) from None
        await pending.settled.wait()

    async def optim_step(self, tenant: Tenant, name: str, adam: AdamParams, request_id: str | None, after: str | None = None) -> dict[str, Any]:
        internal = self.internal(tenant, name)
        if after is not None:
            await self._wait_for_forward_backward(tenant, after)
        async with self._locked(tenant, name):
            if (stored := await self.journal.replay(tenant.id, name, "optim_step", request_id)) is not None:
                return stored
            if not self.backend.has_gradients(internal):
                raise ConflictError(
                    "there are no accumulated gradients to apply; call forward_backward first "
                    "(gradients do not survive a server restart)"
                )
            metrics = await self.backend.optim_step(internal, adam)
            response = {"metrics": finite(metrics), "step": self.backend.step(internal)}
            await self._commit_step(tenant, name, "optim_step", request_id, response)
            return response

    async def train_step(self, tenant: Tenant, name: str, groups: list[TrajectoryGroup], config: TrainConfig, request_id: str | None) -> dict[str, Any]:
        internal = self.internal(tenant, name)
        async with self._locked(tenant, name):
            if (stored := await self.journal.replay(tenant.id, name, "train_step", request_id)) is not None:
                return stored
            if self.backend.has_gradients(internal):
                raise ConflictError(
                    "this model has gradients from a forward_backward that no optim_step has applied; "
                    "call optim_step first, or train_step would fold them into its own step"
                )
            before = self.backend.step(internal)
            # the step TrainableModel.train takes, on this model: the same datums, steps and metric names
            metrics = await train_step(self.backend, internal, groups, config)
            step = self.backend.step(internal)
            response = {"metrics": finite(metrics), "step": step}
            if step != before:
                await self._commit_step(tenant, name, "train_step", request_id, response)
            elif request_id is not None:  # nothing trained (every group uniform): nothing to persist
                await self.journal.record(tenant.id, RequestRow(request_id, name, "train_step", step, response))
            return response

    async def _commit_step(self, tenant: Tenant, name: str, route: str, request_id: str | None, response: dict[str, Any]) -> None:
        """Persist an applied optimizer step (see the module docstring for the order and why)."""
        step = response["step"]
        if self.config.autosave:
            request = {"request_id": request_id, "route": route, "step": step, "response": response}
            await asyncio.to_thread(self.journal.write_state, tenant.id, name, self._trainer(tenant, name).save_state, request)
        await self.journal.record(tenant.id, RequestRow(request_id, name, route, step, response), step=step)

    def _trainer(self, tenant: Tenant, name: str) -> Trainer:
        return self.backend.trainer(self.internal(tenant, name))

    # ------------------------------------------------------------------ checkpoints
    async def save_state(self, tenant: Tenant, name: str, checkpoint: str | None, request_id: str | None) -> dict[str, Any]:
        self.model(tenant, name)
        if checkpoint is not None:
            check_name(checkpoint, "checkpoint name", "checkpoint")
            if checkpoint == LIVE:
                raise InvalidRequestError(f"'{LIVE}' is reserved: NAME@{LIVE} names the live weights; pick another checkpoint name", param="checkpoint")
        internal = self.internal(tenant, name)
        async with self._locked(tenant, name):
            if (stored := await self.journal.replay(tenant.id, name, "save_state", request_id)) is not None:
                return stored
            step = self.backend.step(internal)
            checkpoint = checkpoint or f"step-{step}"
            _refuse_case_twin(checkpoint, [c.checkpoint for c in self.store.checkpoints(tenant.id, name)], "checkpoint", "checkpoint")
            serving = self.promoted(tenant, name)
            if serving is not None and serving.checkpoint == checkpoint:
                raise ConflictError(
                    f"checkpoint '{checkpoint}' is what '{name}' serves (it was promoted); save under another name", param="checkpoint"
                )
            path = self.journal.checkpoint_dir(tenant.id, name, checkpoint)
            self._evict(tenant.id, name, checkpoint)
            await self.backend.save_state(internal, path)  # temp dir + fsync + rename: whole or absent
            response = {"checkpoint": checkpoint, "step": step}
            record = CheckpointRow(tenant.id, name, checkpoint, step, time.time())
            await self.journal.record_checkpoint(record, RequestRow(request_id, name, "save_state", step, response))
            return response

    async def load_state(self, tenant: Tenant, name: str, checkpoint: str, with_optimizer: bool) -> dict[str, Any]:
        self.model(tenant, name)
        row = self._checkpoint(tenant, name, checkpoint)
        internal = self.internal(tenant, name)
        async with self._locked(tenant, name):
            await self.backend.load_state(internal, self.journal.checkpoint_dir(tenant.id, name, row.checkpoint), with_optimizer)
            step = self.backend.step(internal)
            if self.config.autosave:  # a restart must come back to the loaded state, not the one before
                await asyncio.to_thread(self.journal.write_state, tenant.id, name, self._trainer(tenant, name).save_state, None)
            await asyncio.to_thread(self.store.set_step, tenant.id, name, step)
            return {"step": step}

    def checkpoints(self, tenant: Tenant, name: str) -> list[CheckpointRow]:
        self.model(tenant, name)
        return self.store.checkpoints(tenant.id, name)

    def _checkpoint(self, tenant: Tenant, name: str, checkpoint: str) -> CheckpointRow:
        check_name(checkpoint, "checkpoint name", "checkpoint")
        for row in self.store.checkpoints(tenant.id, name):
            if row.checkpoint == checkpoint:
                return row
        raise CheckpointError(f"the model '{name}' has no checkpoint '{checkpoint}'; GET its checkpoints to list them")

    async def checkpoint_archive(self, tenant: Tenant, name: str, checkpoint: str, archive: Path) -> Path:
        """Write checkpoint `checkpoint` of the tenant's model as a zip of its weights (see
        hone.training.checkpoint.write_weights_archive) to `archive`, under the model's lock so a
        delete cannot pull it away mid-write."""
        from hone.training.checkpoint import write_weights_archive

        self.model(tenant, name)
        async with self._locked(tenant, name):
            row = self._checkpoint(tenant, name, checkpoint)
            return await asyncio.to_thread(write_weights_archive, self.journal.checkpoint_dir(tenant.id, name, row.checkpoint), archive)

    async def delete_checkpoint(self, tenant: Tenant, name: str, checkpoint: str) -> None:
        async with self._locked(tenant, name):
            row = self._checkpoint(tenant, name, checkpoint)
            serving = self.promoted(tenant, name)
            if serving is not None and serving.checkpoint == row.checkpoint:
                raise ConflictError(
                    f"checkpoint '{checkpoint}' is what '{name}' serves (it was promoted); promote another checkpoint first", param="checkpoint"
                )
            await asyncio.to_thread(self.store.delete_checkpoint, tenant.id, name, row.checkpoint)
            self._evict(tenant.id, name, row.checkpoint)
            await asyncio.to_thread(shutil.rmtree, self.journal.checkpoint_dir(tenant.id, name, row.checkpoint), True)

    # ------------------------------------------------------------------ sampling: NAME and NAME@STEP
    def served_names(self, tenant: Tenant) -> list[str]:
        """What /v1/models lists: the server's base models (anyone may sample them), then each of the
        tenant's models followed by NAME@STEP for each step it has a checkpoint of."""
        names = list(self.config.base_models)
        for model in self.store.models(tenant.id):
            names.append(model.name)
            if self.store.promotions(tenant.id, model.name):
                names.append(f"{model.name}@{LIVE}")
            steps = sorted({c.step for c in self.store.checkpoints(tenant.id, model.name)})
            names.extend(f"{model.name}@{s}" for s in steps)
        return names

    def resolve(self, tenant: Tenant, served: str) -> tuple[ModelRow, CheckpointRow | None]:
        """NAME -> (model, the promoted checkpoint, or None for the live weights); NAME@live -> (model,
        None); NAME@STEP or NAME@CHECKPOINT -> (model, that checkpoint); else a 404."""
        name, _, version = served.partition("@")
        missing = ModelNotFoundError(f"the model '{served}' does not exist; GET /v1/models lists yours")
        try:
            model = self.model(tenant, name)
        except (ModelNotFoundError, InvalidRequestError):
            raise missing from None
        if not _:
            return model, self.promoted(tenant, name)
        if version == LIVE:
            return model, None
        checkpoints = self.store.checkpoints(tenant.id, name)
        matches = [c for c in checkpoints if version.isdigit() and c.step == int(version)]
        if not matches:  # a checkpoint may be named with digits alone: NAME@CHECKPOINT still reaches it
            matches = [c for c in checkpoints if c.checkpoint == version]
        if not matches:
            raise missing
        return model, matches[-1]  # the newest checkpoint of that step

    def tokenizer(self, tenant: Tenant, served: str) -> Any:
        """The tokenizer of the tenant's model behind `served`, from memory: the backend serves exactly
        the tenants' models (`sample` checks NAME@STEP against SQLite, off the event loop)."""
        if served in self.config.base_models:
            if served not in self._base_tokenizers:
                self._base_tokenizers[served] = load_tokenizer(served)
            return self._base_tokenizers[served]
        name = served.partition("@")[0]
        try:
            return self.backend.tokenizer(self.internal(tenant, check_name(name)))
        except (ModelNotFoundError, InvalidRequestError):
            raise ModelNotFoundError(f"the model '{served}' does not exist; GET /v1/models lists yours") from None

    async def sample(
        self, tenant: Tenant, served: str, prompt_tokens: list[int], n: int, params: SamplingParams, on_tokens: OnTokens | None = None
    ) -> list[SampledSequence]:
        if n > self.config.max_n:
            raise InvalidRequestError(f"n={n} is over this server's limit of {self.config.max_n}", param="n")
        if served in self.config.base_models:  # read-only, shared by every tenant; no tenant model has its name
            return await self.backend.sample(await self._base_model(served), prompt_tokens, n, params, on_tokens)
        model, checkpoint = await asyncio.to_thread(self.resolve, tenant, served)
        if checkpoint is None:  # the live weights
            try:
                return await self.backend.sample(self.internal(tenant, model.name), prompt_tokens, n, params, on_tokens)
            except ModelNotFoundError:  # deleted since it was resolved: say so in the tenant's own names
                raise ModelNotFoundError(f"the model '{served}' does not exist; GET /v1/models lists yours") from None
        internal = f"{self.internal(tenant, model.name)}@{checkpoint.checkpoint}#{checkpoint.created!r}"  # a rewritten checkpoint is another
        for attempt in (1, 2):  # evicted between its load and this sample (the backend keeps a few): loaded again, once
            if not self.backend.serves(internal):
                await self._load_checkpoint_model(internal, tenant, model.name, checkpoint)
            try:
                return await self.backend.sample(internal, prompt_tokens, n, params, on_tokens)
            except ModelNotFoundError:
                if attempt == 2:
                    raise ModelNotFoundError(f"the model '{served}' does not exist; GET /v1/models lists yours") from None
        raise AssertionError("unreachable")

    async def _base_model(self, base_model: str) -> str:
        """The backend's name for base model `base_model` served as it is, loaded on first use (once,
        however many requests wait; on a shared base it is one more, empty, adapter)."""
        internal = f"base/{base_model}"  # tenant ids are digits: no tenant model is named so
        if not self.backend.serves(internal):
            if internal not in self._loading:
                self._loading[internal] = asyncio.ensure_future(self._load_base_model(internal, base_model))
            await asyncio.shield(self._loading[internal])
        return internal

    async def _load_base_model(self, internal: str, base_model: str) -> None:
        try:
            await asyncio.to_thread(self.backend.add_model, internal, base_model)
        finally:
            self._loading.pop(internal, None)

    async def _load_checkpoint_model(self, internal: str, tenant: Tenant, name: str, checkpoint: CheckpointRow) -> None:
        """One load per checkpoint, however many requests wait for it; shielded, so a client that
        hangs up does not cancel a load others are waiting for."""
        if internal not in self._loading:
            self._loading[internal] = asyncio.ensure_future(self._load(internal, tenant, name, checkpoint))
        await asyncio.shield(self._loading[internal])

    async def _load(self, internal: str, tenant: Tenant, name: str, checkpoint: CheckpointRow) -> None:
        try:
            async with self._state(tenant, name).lock:  # no save or delete rewrites the files mid-read
                rows = await asyncio.to_thread(self.store.checkpoints, tenant.id, name)
                if not any(c.checkpoint == checkpoint.checkpoint and c.created == checkpoint.created for c in rows):
                    raise ModelNotFoundError(f"the model '{name}@{checkpoint.checkpoint}' does not exist; GET /v1/models lists yours")
                path = self.journal.checkpoint_dir(tenant.id, name, checkpoint.checkpoint)
                await asyncio.to_thread(self.backend.add_checkpoint_model, internal, self.internal(tenant, name), path)
        finally:
            self._loading.pop(internal, None)

    def _evict(self, tenant_id: int, name: str, checkpoint: str | None = None) -> None:
        """Stop serving the model's checkpoints (or one of them); samples in flight on them finish."""
        prefix = f"{tenant_id}/{name}@" + ("" if checkpoint is None else f"{checkpoint}#")
        for internal in self.backend.list_models():
            if internal.startswith(prefix):
                try:
                    self.backend.delete_model(internal)
                except ModelNotFoundError:
                    pass  # evicted by the backend meanwhile

    # ------------------------------------------------------------------ promotion (issue 17)
    def promoted(self, tenant: Tenant, name: str) -> CheckpointRow | None:
        """The checkpoint NAME serves: the newest promoted one; None (the live weights) if none was."""
        decisions = [p for p in self.store.promotions(tenant.id, name) if p.promoted]
        if not decisions:
            return None
        latest = decisions[-1]
        for row in self.store.checkpoints(tenant.id, name):
            if row.checkpoint == latest.checkpoint and row.created == latest.checkpoint_created:
                return row
        return None  # rewritten since (a save under its name): the live weights, until promoted again

    async def record_promotion(self, tenant: Tenant, name: str, checkpoint: str, promoted: bool, reason: str, metrics: dict[str, float]) -> dict[str, Any]:
        """A gate's decision on `checkpoint`: promoted, it is what NAME serves from now on (a rollback
        is the promotion of an older one); refused, it is kept and the reason recorded."""
        async with self._locked(tenant, name):
            row = self._checkpoint(tenant, name, checkpoint)
            decision = PromotionRow(tenant.id, name, row.checkpoint, row.created, row.step, promoted, reason, metrics, time.time())
            await asyncio.to_thread(self.store.record_promotion, decision)
        return self.promotion_info(tenant, name)

    def promotion_info(self, tenant: Tenant, name: str) -> dict[str, Any]:
        self.model(tenant, name)
        serving = self.promoted(tenant, name)
        return {
            "model": name,
            "serving": f"{name}@{serving.checkpoint}" if serving is not None else f"{name}@{LIVE}",
            "checkpoint": serving.checkpoint if serving is not None else None,
            "step": serving.step if serving is not None else None,
            "history": [p.public() for p in self.store.promotions(tenant.id, name)],
        }

    # ------------------------------------------------------------------ traffic and feedback (issue 17)
    async def record_completion(self, tenant: Tenant, completion: ServedCompletion) -> None:
        """Log a completion served from one of the tenant's models, if its traffic log is on; the
        version is the checkpoint it came from, or the live model's step when it finished."""
        served = completion.served
        if served in self.config.base_models:
            return
        name = served.partition("@")[0]
        settings = await asyncio.to_thread(self.traffic.settings, tenant.id, name)
        if not settings.enabled:
            return
        try:
            checkpoint = (await asyncio.to_thread(self.resolve, tenant, served))[1]
            step = checkpoint.step if checkpoint is not None else self.backend.step(self.internal(tenant, name))
        except ModelNotFoundError:
            return  # deleted while it served: its log went with it
        await asyncio.to_thread(self.traffic.record, tenant.id, name, step, completion)

    async def configure_traffic(self, tenant: Tenant, name: str, settings: TrafficSettings) -> dict[str, Any]:
        self.model(tenant, name)  # no lock: a training step holds it for seconds; a delete's leftovers go at create and restart
        await asyncio.to_thread(self.traffic.configure, tenant.id, name, settings)
        return self.traffic_info(tenant, name)

    def traffic_info(self, tenant: Tenant, name: str) -> dict[str, Any]:  # two indexed counts: cheap on the event loop
        self.model(tenant, name)
        return {"model": name, "settings": self.traffic.settings(tenant.id, name).public(), **self.traffic.counts(tenant.id, name)}

    async def delete_traffic(self, tenant: Tenant, name: str) -> int:
        self.model(tenant, name)
        return await asyncio.to_thread(self.traffic.delete, tenant.id, name)

    async def logged(self, tenant: Tenant, name: str, after: int, limit: int) -> tuple[list[LoggedCompletion], list[Feedback]]:
        """A page of the model's logged completions, and all the feedback that names them (off the event loop)."""
        self.model(tenant, name)

        def read() -> tuple[list[LoggedCompletion], list[Feedback]]:
            completions = self.traffic.completions(tenant.id, name, after, limit)
            return completions, self.traffic.feedback_on(tenant.id, completions)

        return await asyncio.to_thread(read)

    async def add_feedback(self, tenant: Tenant, **feedback: Any) -> Feedback:
        return await asyncio.to_thread(lambda: self.traffic.add_feedback(tenant.id, **feedback))

    def close(self) -> None:
        self.backend.close()
        self.traffic.close()
        self.store.close()


# --------------------------------------------------------------------------- helpers
def _refuse_case_twin(name: str, existing: list[str], what: str, param: str) -> None:
    """Names are folders under --home: on a case-insensitive file system 'Agent' and 'agent' would be one."""
    for other in existing:
        if other != name and other.lower() == name.lower():
            raise ConflictError(f"a {what} named '{other}' exists, which differs from '{name}' only by case; pick another name", param=param)


def finite(metrics: dict[str, Any]) -> dict[str, float | None]:
    """Metrics as JSON can carry them: NaN and infinities become null."""
    out: dict[str, float | None] = {}
    for key, value in metrics.items():
        value = float(value)
        out[key] = value if math.isfinite(value) else None
    return out


class TenantView:
    """One tenant's side of the service, with the methods the OpenAI routes call on a backend."""

    def __init__(self, service: Service, tenant: Tenant):
        self.service = service
        self.tenant = tenant

    def list_models(self) -> list[str]:
        return self.service.served_names(self.tenant)

    def tokenizer(self, name: str) -> Any:
        return self.service.tokenizer(self.tenant, name)

    async def sample(
        self, name: str, prompt_tokens: list[int], n: int, params: SamplingParams, on_tokens: OnTokens | None = None
    ) -> list[SampledSequence]:
        return await self.service.sample(self.tenant, name, prompt_tokens, n, params, on_tokens)

    async def record_completion(self, completion: ServedCompletion) -> None:
        await self.service.record_completion(self.tenant, completion)
