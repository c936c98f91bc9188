"""The service's durable state: one SQLite file under the service's home directory.

    tenants      id, name                                   who may use the service
    api_keys     id, tenant_id, key_hash, prefix, revoked   sha256 of each key; the key itself is never stored
    models       tenant_id, name, base_model, lora_rank, options, step
    checkpoints  tenant_id, model, checkpoint, step, created   a row exists only once its files are whole
    requests     tenant_id, request_id, model, route, step, response   completed training requests
    promotions   tenant_id, model, checkpoint, promoted, reason, metrics  each gate decision; the newest
                 promoted row is the checkpoint NAME serves (none: NAME serves the live weights)

Knows rows and transactions; knows nothing of models, weights or HTTP. The file's durability
and locking are hone.database's (WAL, synchronous=FULL, one locked connection).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hone.database import Database
from hone.errors import InvalidRequestError
from hone.types import ModelOptions, ModelSpec

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)
KEY_PREFIX = "hone-sk-"
DB_FILE = "hone.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id INTEGER NOT NULL REFERENCES tenants(id),
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created REAL NOT NULL,
    revoked REAL
);
CREATE TABLE IF NOT EXISTS models (
    tenant_id INTEGER NOT NULL REFERENCES tenants(id),
    name TEXT NOT NULL,
    base_model TEXT NOT NULL,
    lora_rank INTEGER NOT NULL,
    options TEXT NOT NULL,
    step INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    tenant_id INTEGER NOT NULL,
    model TEXT NOT NULL,
    checkpoint TEXT NOT NULL,
    step INTEGER NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (tenant_id, model, checkpoint)
);
CREATE TABLE IF NOT EXISTS promotions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id INTEGER NOT NULL,
    model TEXT NOT NULL,
    checkpoint TEXT NOT NULL,
    checkpoint_created REAL NOT NULL,
    step INTEGER NOT NULL,
    promoted INTEGER NOT NULL,
    reason TEXT NOT NULL,
    metrics TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    tenant_id INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    model TEXT NOT NULL,
    route TEXT NOT NULL,
    step INTEGER NOT NULL,
    response TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (tenant_id, request_id)
);
"""


def check_name(value: str, what: str = "model name", param: str = "name") -> str:
    """`value` if it is a safe name (a single path segment, no '@'), else a 400 saying why."""
    if not isinstance(value, str) or not _NAME.match(value) or ".." in value:
        raise InvalidRequestError(
            f"invalid {what} {value!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, without '..'",
            param=param,
        )
    return value


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Tenant:
    id: int
    name: str


@dataclass(frozen=True)
class ModelRow:
    tenant_id: int
    name: str
    base_model: str
    lora_rank: int
    options: dict[str, Any]
    step: int
    created: float

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "base_model": self.base_model, "lora_rank": self.lora_rank, "step": self.step}

    def spec(self) -> ModelSpec:
        return ModelSpec(base_model=self.base_model, lora_rank=self.lora_rank, options=ModelOptions(**self.options))


@dataclass(frozen=True)
class CheckpointRow:
    tenant_id: int
    model: str
    checkpoint: str
    step: int
    created: float

    def public(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "step": self.step, "created": self.created}


@dataclass(frozen=True)
class PromotionRow:
    tenant_id: int
    model: str
    checkpoint: str
    checkpoint_created: float
    step: int
    promoted: bool
    reason: str
    metrics: dict[str, float]
    created: float

    def public(self) -> dict[str, Any]:
        return {
            "version": f"{self.model}@{self.step}",
            "checkpoint": self.checkpoint,
            "step": self.step,
            "promoted": self.promoted,
            "reason": self.reason,
            "metrics": self.metrics,
            "created": self.created,
        }


@dataclass(frozen=True)
class RequestRow:
    request_id: str
    model: str
    route: str
    step: int
    response: dict[str, Any]


class Store:
    def __init__(self, home: str | Path):
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)  # keys' hashes and tenants' weights: the owner's alone
        self._database = Database(self.home / DB_FILE, _SCHEMA)
        self.transaction = self._database.transaction  # one atomic unit: everything inside commits together or not at all
        self._query = self._database.query

    def close(self) -> None:
        self._database.close()

    # ------------------------------------------------------------------ tenants and keys
    def tenant(self, name: str, create: bool = False) -> Tenant | None:
        check_name(name, "tenant name", "tenant")
        with self.transaction() as db:
            row = db.execute("SELECT id, name FROM tenants WHERE name = ?", (name,)).fetchone()
            if row is None and create:
                cursor = db.execute("INSERT INTO tenants (name, created) VALUES (?, ?)", (name, time.time()))
                row = (cursor.lastrowid, name)
        return Tenant(*row) if row else None

    def create_key(self, tenant_name: str) -> tuple[int, str]:
        """A new key for the tenant (created if new): (key id, the key). The key is shown once, stored hashed."""
        tenant = self.tenant(tenant_name, create=True)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO api_keys (tenant_id, key_hash, prefix, created) VALUES (?, ?, ?, ?)",
                (tenant.id, hash_key(key), key[: len(KEY_PREFIX) + 6], time.time()),
            )
        return cursor.lastrowid, key

    def authenticate(self, key: str) -> Tenant | None:
        """The tenant owning `key`, or None for an unknown or revoked key."""
        digest = hash_key(key)
        rows = self._query(
            "SELECT k.key_hash, t.id, t.name FROM api_keys k JOIN tenants t ON t.id = k.tenant_id "
            "WHERE k.key_hash = ? AND k.revoked IS NULL",
            (digest,),
        )
        for stored, tenant_id, name in rows:
            if hmac.compare_digest(stored, digest):
                return Tenant(tenant_id, name)
        return None

    def revoke_key(self, key_id: int) -> bool:
        with self.transaction() as db:
            cursor = db.execute("UPDATE api_keys SET revoked = ? WHERE id = ? AND revoked IS NULL", (time.time(), key_id))
        return cursor.rowcount == 1

    def list_keys(self) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT k.id, t.name, k.prefix, k.created, k.revoked FROM api_keys k JOIN tenants t ON t.id = k.tenant_id ORDER BY k.id"
        )
        return [{"id": r[0], "tenant": r[1], "prefix": r[2], "created": r[3], "revoked": r[4]} for r in rows]

    # ------------------------------------------------------------------ models
    def models(self, tenant_id: int | None = None) -> list[ModelRow]:
        sql = "SELECT tenant_id, name, base_model, lora_rank, options, step, created FROM models"
        rows = self._query(sql + " WHERE tenant_id = ? ORDER BY name", (tenant_id,)) if tenant_id is not None else self._query(
            sql + " ORDER BY tenant_id, name"
        )
        return [ModelRow(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]

    def model(self, tenant_id: int, name: str) -> ModelRow | None:
        found = [m for m in self.models(tenant_id) if m.name == name]
        return found[0] if found else None

    def add_model(self, row: ModelRow) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO models (tenant_id, name, base_model, lora_rank, options, step, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row.tenant_id, row.name, row.base_model, row.lora_rank, json.dumps(row.options), row.step, row.created),
            )

    def set_step(self, tenant_id: int, name: str, step: int) -> None:
        with self.transaction() as db:
            db.execute("UPDATE models SET step = ? WHERE tenant_id = ? AND name = ?", (step, tenant_id, name))

    def delete_model(self, tenant_id: int, name: str) -> None:
        """The model, its checkpoints and its request records, in one transaction."""
        with self.transaction() as db:
            db.execute("DELETE FROM models WHERE tenant_id = ? AND name = ?", (tenant_id, name))
            db.execute("DELETE FROM checkpoints WHERE tenant_id = ? AND model = ?", (tenant_id, name))
            db.execute("DELETE FROM requests WHERE tenant_id = ? AND model = ?", (tenant_id, name))
            db.execute("DELETE FROM promotions WHERE tenant_id = ? AND model = ?", (tenant_id, name))

    # ------------------------------------------------------------------ checkpoints
    def checkpoints(self, tenant_id: int, model: str) -> list[CheckpointRow]:
        rows = self._query(
            "SELECT tenant_id, model, checkpoint, step, created FROM checkpoints WHERE tenant_id = ? AND model = ? "
            "ORDER BY created, checkpoint",
            (tenant_id, model),
        )
        return [CheckpointRow(*r) for r in rows]

    def delete_checkpoint(self, tenant_id: int, model: str, checkpoint: str) -> None:
        with self.transaction() as db:
            db.execute(
                "DELETE FROM checkpoints WHERE tenant_id = ? AND model = ? AND checkpoint = ?", (tenant_id, model, checkpoint)
            )

    @staticmethod
    def record_checkpoint(db: sqlite3.Connection, row: CheckpointRow) -> None:
        """Inside a transaction: the checkpoint row (replacing one of the same name)."""
        db.execute(
            "INSERT OR REPLACE INTO checkpoints (tenant_id, model, checkpoint, step, created) VALUES (?, ?, ?, ?, ?)",
            (row.tenant_id, row.model, row.checkpoint, row.step, row.created),
        )

    # ------------------------------------------------------------------ promotions
    def promotions(self, tenant_id: int, model: str) -> list[PromotionRow]:
        rows = self._query(
            "SELECT tenant_id, model, checkpoint, checkpoint_created, step, promoted, reason, metrics, created FROM promotions "
            "WHERE tenant_id = ? AND model = ? ORDER BY seq",
            (tenant_id, model),
        )
        return [PromotionRow(*r[:5], bool(r[5]), r[6], json.loads(r[7]), r[8]) for r in rows]

    def record_promotion(self, row: PromotionRow) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO promotions (tenant_id, model, checkpoint, checkpoint_created, step, promoted, reason, metrics, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row.tenant_id, row.model, row.checkpoint, row.checkpoint_created, row.step, int(row.promoted), row.reason, json.dumps(row.metrics), row.created),
            )

    # ------------------------------------------------------------------ completed requests
    def completed(self, tenant_id: int, request_id: str) -> RequestRow | None:
        rows = self._query(
            "SELECT request_id, model, route, step, response FROM requests WHERE tenant_id = ? AND request_id = ?",
            (tenant_id, request_id),
        )
        return RequestRow(rows[0][0], rows[0][1], rows[0][2], rows[0][3], json.loads(rows[0][4])) if rows else None

    @staticmethod
    def record_request(db: sqlite3.Connection, tenant_id: int, request: RequestRow) -> None:
        """Inside a transaction: a completed request and its response (kept if already there)."""
        db.execute(
            "INSERT OR IGNORE INTO requests (tenant_id, request_id, model, route, step, response, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (tenant_id, request.request_id, request.model, request.route, request.step, json.dumps(request.response), time.time()),
        )

    def forget_requests(self, tenant_id: int, model: str, route: str, min_step: int) -> int:
        """Drop records of `route` on `model` made at step >= min_step (their effect did not survive)."""
        with self.transaction() as db:
            cursor = db.execute(
                "DELETE FROM requests WHERE tenant_id = ? AND model = ? AND route = ? AND step >= ?",
                (tenant_id, model, route, min_step),
            )
        return cursor.rowcount
