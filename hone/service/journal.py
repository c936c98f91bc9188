"""The service's durability journal: what a completed request leaves under --home, and how a
restart reads it back. Knows files and the store; knows nothing of HTTP or how a step is computed.

On disk, under HOME:

    hone.sqlite3                                  tenants, keys, models, checkpoints, completed requests, promotions
    traffic.sqlite3                               served completions and their feedback (hone.traffic.log)
    tenants/<tenant id>/<model>/checkpoints/<c>/  a trainer checkpoint, recorded in SQLite once whole
    tenants/<tenant id>/<model>/states/<seq>/     the trainer's state after the latest optimizer step
    tenants/<tenant id>/<model>/states/<seq>.request.json   the request that made it, and its response

An optimizer step (`optim_step` or `train_step`, under the model's lock):
1. `replay`: a completed request_id is looked up first; if found, its stored response is returned
   and nothing runs.
2. The step is applied in memory (by the service).
3. `write_state` (autosave on, the default): `<seq>.request.json` is written atomically, then the
   trainer's state to `states/<seq>/` (staging folder + rename). The state folder's existence is
   the commit point of the step on disk.
4. `record`: one SQLite transaction stores the response under the request_id and the model's step.
A kill before 3 completes loses the step from memory and from disk alike: a retry applies it once.
A kill between 3 and 4 is repaired at start-up (`recover`): the newest state's request file is
recorded, so a retry gets the stored response and is not applied twice. There is no window left.

Gradients from `forward_backward` live only in memory: `recover` forgets the records of
forward_backward requests made since the last optimizer step, so a client that retries one after a
restart recomputes the lost gradients.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Callable

from hone.errors import ConflictError
from hone.files import write_file_atomically
from hone.service.store import CheckpointRow, ModelRow, RequestRow, Store
from hone.training.checkpoint import is_complete

REQUEST_SUFFIX = ".request.json"
log = logging.getLogger("hone.service")


class Journal:
    def __init__(self, home: Path, store: Store):
        self.home = home
        self.store = store

    # ------------------------------------------------------------------ layout
    def model_dir(self, tenant_id: int, name: str) -> Path:
        return self.home / "tenants" / str(tenant_id) / name

    def checkpoint_dir(self, tenant_id: int, name: str, checkpoint: str) -> Path:
        return self.model_dir(tenant_id, name) / "checkpoints" / checkpoint

    # ------------------------------------------------------------------ requests
    async def replay(self, tenant_id: int, name: str, route: str, request_id: str | None) -> dict[str, Any] | None:
        """The stored response of a request already completed, or None; 409 for an id used elsewhere."""
        if request_id is None:
            return None
        done = await asyncio.to_thread(self.store.completed, tenant_id, request_id)
        if done is None:
            return None
        if done.route != route or done.model != name:
            raise ConflictError(
                f"request_id '{request_id}' was already used for {done.route} on another request; use a new id per request",
                param="request_id",
            )
        return done.response

    async def record(self, tenant_id: int, request: RequestRow, step: int | None = None) -> None:
        """Record a completed request (and the model's new step) in one commit, off the event loop."""

        def commit() -> None:
            with self.store.transaction() as db:
                if request.request_id is not None:
                    Store.record_request(db, tenant_id, request)
                if step is not None:
                    db.execute("UPDATE models SET step = ? WHERE tenant_id = ? AND name = ?", (step, tenant_id, request.model))

        await asyncio.to_thread(commit)

    async def record_checkpoint(self, checkpoint: CheckpointRow, request: RequestRow) -> None:
        """A checkpoint whose files are whole, and the save_state request that made it, in one commit."""

        def commit() -> None:
            with self.store.transaction() as db:
                Store.record_checkpoint(db, checkpoint)
                if request.request_id is not None:
                    Store.record_request(db, checkpoint.tenant_id, request)

        await asyncio.to_thread(commit)

    # ------------------------------------------------------------------ states
    def write_state(self, tenant_id: int, name: str, save: Callable[[Path], Any], request: dict[str, Any] | None) -> None:
        """Step 3: the request file, then the trainer's state through `save(path)` (which writes it whole
        or not at all); older states go, a restart needs only the newest."""
        root = self.model_dir(tenant_id, name) / "states"
        root.mkdir(parents=True, exist_ok=True)
        existing = sorted(int(p.name) for p in root.glob("*") if p.is_dir() and p.name.isdigit())
        seq = f"{(existing[-1] + 1) if existing else 1:012d}"
        if request is not None and request["request_id"] is not None:
            write_file_atomically(root / (seq + REQUEST_SUFFIX), json.dumps(request))
        save(root / seq)
        for old in root.iterdir():
            if not old.name.startswith(seq):
                shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)

    def latest_state(self, tenant_id: int, name: str) -> tuple[Path | None, RequestRow | None]:
        """The newest whole state of a model, and the request that made it if its record is readable."""
        root = self.model_dir(tenant_id, name) / "states"
        states = sorted(p for p in root.glob("*") if p.is_dir() and p.name.isdigit() and is_complete(p)) if root.exists() else []
        if not states:
            return None, None
        latest = states[-1]
        request_file = root / (latest.name + REQUEST_SUFFIX)
        request = None
        if request_file.exists():
            try:
                data = json.loads(request_file.read_text())
                request = RequestRow(str(data["request_id"]), name, str(data["route"]), int(data["step"]), dict(data["response"]))
            except (ValueError, KeyError, TypeError) as exc:  # the state is whole; only its replay record is lost
                log.warning("skipping the unreadable request record %s (%s: %s)", request_file, type(exc).__name__, exc)
        return latest, request

    # ------------------------------------------------------------------ start-up
    def remove_orphans(self) -> None:
        """Model folders with no model in SQLite (a deleted model's files, or a failed create's) go."""
        known = {(m.tenant_id, m.name) for m in self.store.models()}
        tenants_root = self.home / "tenants"
        for tenant_dir in sorted(tenants_root.glob("*")) if tenants_root.exists() else []:
            for model_dir in sorted(tenant_dir.glob("*")):
                if not tenant_dir.name.isdigit() or (int(tenant_dir.name), model_dir.name) not in known:
                    shutil.rmtree(model_dir, ignore_errors=True)

    def clean_checkpoints(self, row: ModelRow) -> None:
        """Files without a row (a save killed before it was recorded) go; rows without whole files go."""
        root = self.model_dir(row.tenant_id, row.name) / "checkpoints"
        recorded = {c.checkpoint for c in self.store.checkpoints(row.tenant_id, row.name)}
        if root.exists():
            for path in root.iterdir():
                if path.name not in recorded:
                    shutil.rmtree(path, ignore_errors=True)
        for name in recorded:
            if not is_complete(root / name):
                self.store.delete_checkpoint(row.tenant_id, row.name, name)

    def recover(self, row: ModelRow, step: int, request: RequestRow | None) -> None:
        """After a model came back at `step`: record the request of a state written but never recorded
        (a kill between 3 and 4), and forget requests whose effects died with the old process."""
        with self.store.transaction() as db:
            if request is not None:
                Store.record_request(db, row.tenant_id, request)
            db.execute("UPDATE models SET step = ? WHERE tenant_id = ? AND name = ?", (step, row.tenant_id, row.name))
        self.store.forget_requests(row.tenant_id, row.name, "forward_backward", step)  # gradients live in memory only
        for route in ("optim_step", "train_step"):
            self.store.forget_requests(row.tenant_id, row.name, route, step + 1)
