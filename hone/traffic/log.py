"""The traffic log: completions a model served, and the feedback they got later, in SQLite.

    traffic_settings  tenant_id, model, enabled, retention_days, max_completions, labels
    completions       tenant_id, id, model, version (NAME@STEP), rollout_id, task_key, prompt_hash,
                      endpoint, created, record (JSON: the request's messages and tools, the prompt's
                      token ids, each choice's token ids, fp32 logprobs, forced flags and reply)
    feedback          tenant_id, id, completion_id, rollout_id, model, choice, reward, label, created

Logging is opt-in per model (`configure`). A completion is committed before its reply is
acknowledged and the database runs with `synchronous=FULL`, so a killed server loses nothing it
answered. Feedback names a completion (or a whole rollout), may come hours later, and is kept as
a reward: a label is mapped to its reward by the model's `labels` when it arrives.

Scoped by tenant: every read and write names its tenant_id, and another tenant's ids read as
unknown (the same 404). In-process use (LocalBackend) takes tenant 0. Knows SQLite and JSON;
knows nothing of HTTP, engines or training.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hone.database import Database
from hone.errors import ConflictError, InvalidRequestError, ModelNotFoundError

# A request with this header is served but not logged: validation and evaluation calls, which must
# not become training data (a malformed reply is trained on even without feedback).
UNLOGGED_HEADERS = {"X-Hone-Traffic": "off"}
LOCAL_TENANT = 0  # the tenant id of an in-process LocalBackend's log (a service's tenants start at 1)
DEFAULT_LABELS = {"thumbs_up": 1.0, "thumbs_down": 0.0, "accepted": 1.0, "rejected": 0.0}
MAX_REWARD = 1e6  # a reward beyond this is a bug in the sender, not a signal
PRUNE_EVERY_S = 60.0  # retention runs at most this often per model, on the write path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS traffic_settings (
    tenant_id INTEGER NOT NULL,
    model TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    retention_days REAL NOT NULL,
    max_completions INTEGER NOT NULL,
    labels TEXT NOT NULL,
    PRIMARY KEY (tenant_id, model)
);
CREATE TABLE IF NOT EXISTS completions (
    tenant_id INTEGER NOT NULL,
    id TEXT NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    step INTEGER NOT NULL,
    rollout_id TEXT,
    task_key TEXT,
    prompt_hash TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    created REAL NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS completions_by_model ON completions (tenant_id, model, created);
CREATE INDEX IF NOT EXISTS completions_by_rollout ON completions (tenant_id, rollout_id);
CREATE TABLE IF NOT EXISTS feedback (
    tenant_id INTEGER NOT NULL,
    id TEXT NOT NULL,
    model TEXT NOT NULL,
    completion_id TEXT,
    rollout_id TEXT,
    choice INTEGER NOT NULL,
    reward REAL NOT NULL,
    label TEXT,
    created REAL NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS feedback_by_model ON feedback (tenant_id, model, created);
"""


@dataclass(frozen=True)
class TrafficSettings:
    enabled: bool = False
    retention_days: float = 30.0
    max_completions: int = 100_000  # per model; the oldest go first
    labels: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LABELS))

    def public(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ServedChoice:
    token_ids: list[int]
    logprobs: list[float]
    forced: list[bool] | None
    message: dict[str, Any]  # the reply as a chat message (content, tool_calls)
    finish_reason: str
    tool_call_error: str | None = None


@dataclass(frozen=True)
class ServedCompletion:
    """One completion as the routes served it: what the traffic log keeps of it."""

    id: str  # the id the client saw (chatcmpl-..., resp_...)
    endpoint: str  # "chat.completions" or "responses"
    served: str  # the model name the client asked for: NAME or NAME@STEP
    request: dict[str, Any]  # messages and tools as sent
    prompt_token_ids: list[int]
    choices: list[ServedChoice]
    rollout_id: str | None = None
    task_key: str | None = None  # the client's key for "the same task"; None = the same prompt
    created: float = field(default_factory=time.time)


@dataclass(frozen=True)
class LoggedCompletion:
    id: str
    model: str
    version: str
    step: int
    rollout_id: str | None
    task_key: str | None
    prompt_hash: str
    endpoint: str
    created: float
    request: dict[str, Any]
    prompt_token_ids: list[int]
    choices: list[ServedChoice]
    seq: int = 0  # the order it was logged in, per log (the paging cursor)

    def public(self) -> dict[str, Any]:
        return {**asdict(self), "choices": [asdict(c) for c in self.choices]}


@dataclass(frozen=True)
class Feedback:
    id: str
    model: str
    completion_id: str | None
    rollout_id: str | None
    choice: int
    reward: float
    label: str | None
    created: float

    def public(self) -> dict[str, Any]:
        return asdict(self)


def prompt_hash(tokens: list[int]) -> str:
    """What "the same prompt" means when a client gives no task key: the same prompt tokens."""
    return hashlib.sha256(json.dumps(tokens).encode()).hexdigest()[:32]


class TrafficLog:
    def __init__(self, path: str | Path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._database = Database(path, _SCHEMA)  # created readable by its owner alone: served text is the tenant's
        self._transaction = self._database.transaction
        self._query = self._database.query
        self._last_prune: dict[tuple[int, str], float] = {}

    def close(self) -> None:
        self._database.close()

    # ------------------------------------------------------------------ settings
    def settings(self, tenant_id: int, model: str) -> TrafficSettings:
        rows = self._query(
            "SELECT enabled, retention_days, max_completions, labels FROM traffic_settings WHERE tenant_id = ? AND model = ?",
            (tenant_id, model),
        )
        if not rows:
            return TrafficSettings()
        enabled, days, most, labels = rows[0]
        return TrafficSettings(bool(enabled), days, most, json.loads(labels))

    def configure(self, tenant_id: int, model: str, settings: TrafficSettings) -> TrafficSettings:
        check_settings(settings)
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO traffic_settings (tenant_id, model, enabled, retention_days, max_completions, labels) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (tenant_id, model, int(settings.enabled), settings.retention_days, settings.max_completions, json.dumps(settings.labels)),
            )
        self._last_prune.pop((tenant_id, model), None)
        self.prune(tenant_id, model)  # a shorter retention applies now, not at the next write
        return settings

    # ------------------------------------------------------------------ completions
    def record(self, tenant_id: int, model: str, step: int, completion: ServedCompletion) -> None:
        """Log `completion` of `model` (served at `step`), durably; the caller checked it is enabled."""
        version = f"{model}@{step}"  # the weights' step, whichever name (NAME, NAME@live, NAME@CHECKPOINT) reached them
        record = {"request": completion.request, "prompt_token_ids": completion.prompt_token_ids, "choices": [asdict(c) for c in completion.choices]}
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO completions (tenant_id, id, model, version, step, rollout_id, task_key, prompt_hash, endpoint, created, record) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    tenant_id,
                    completion.id,
                    model,
                    version,
                    step,
                    completion.rollout_id,
                    completion.task_key,
                    prompt_hash(completion.prompt_token_ids),
                    completion.endpoint,
                    completion.created,
                    json.dumps(record),
                ),
            )
        if time.monotonic() - self._last_prune.get((tenant_id, model), -math.inf) > PRUNE_EVERY_S:
            self.prune(tenant_id, model)

    def completion(self, tenant_id: int, completion_id: str) -> LoggedCompletion | None:
        rows = self._query(f"SELECT {_COMPLETION_COLUMNS} FROM completions WHERE tenant_id = ? AND id = ?", (tenant_id, completion_id))
        return _completion(rows[0]) if rows else None

    def completions(self, tenant_id: int, model: str, after: int = 0, limit: int = 1000) -> list[LoggedCompletion]:
        """The model's logged completions logged after sequence number `after`, in the order they
        were committed (a page's last `seq` is the next page's `after`: no row is skipped)."""
        rows = self._query(
            f"SELECT {_COMPLETION_COLUMNS} FROM completions WHERE tenant_id = ? AND model = ? AND rowid > ? ORDER BY rowid LIMIT ?",
            (tenant_id, model, after, limit),
        )
        return [_completion(r) for r in rows]

    def counts(self, tenant_id: int, model: str) -> dict[str, int]:
        completions = self._query("SELECT COUNT(*) FROM completions WHERE tenant_id = ? AND model = ?", (tenant_id, model))[0][0]
        feedback = self._query("SELECT COUNT(*) FROM feedback WHERE tenant_id = ? AND model = ?", (tenant_id, model))[0][0]
        return {"completions": completions, "feedback": feedback}

    # ------------------------------------------------------------------ feedback
    def add_feedback(
        self,
        tenant_id: int,
        *,
        completion_id: str | None = None,
        rollout_id: str | None = None,
        reward: float | None = None,
        label: str | None = None,
        choice: int = 0,
        feedback_id: str | None = None,
    ) -> Feedback:
        """Feedback on one completion (and one of its choices) or a whole rollout: a reward, or a
        label the model's settings map to one. The same `feedback_id` sent again is answered with
        what was stored the first time (a client's retry adds nothing)."""
        if (completion_id is None) == (rollout_id is None):
            raise InvalidRequestError("name exactly one of completion_id and rollout_id", param="completion_id")
        if (reward is None) == (label is None):
            raise InvalidRequestError("send exactly one of reward (a number) and label (a word such as thumbs_up)", param="reward")
        if reward is not None and (isinstance(reward, bool) or not isinstance(reward, (int, float)) or not math.isfinite(reward) or abs(reward) > MAX_REWARD):
            raise InvalidRequestError(f"reward must be a finite number between -{MAX_REWARD:g} and {MAX_REWARD:g}; got {reward!r}", param="reward")
        if feedback_id is not None and (stored := self._feedback(tenant_id, feedback_id)) is not None:
            return stored
        target = self.completion(tenant_id, completion_id) if completion_id is not None else self._rollout_completion(tenant_id, rollout_id)
        if target is None:
            what = f"completion '{completion_id}'" if completion_id is not None else f"rollout '{rollout_id}'"
            raise ModelNotFoundError(f"no logged {what}: feedback needs a completion served by a model whose traffic log is on")
        if not 0 <= choice < len(target.choices):
            raise InvalidRequestError(f"choice {choice} is out of range: the completion has {len(target.choices)} choice(s)", param="choice")
        if label is not None:
            labels = self.settings(tenant_id, target.model).labels
            if label not in labels:
                raise InvalidRequestError(
                    f"label '{label}' is not one of the model's labels ({', '.join(sorted(labels))}); send a reward, or set the labels",
                    param="label",
                )
            reward = labels[label]
        feedback = Feedback(feedback_id or "fb_" + secrets.token_hex(12), target.model, completion_id, rollout_id, choice, float(reward), label, time.time())
        try:
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO feedback (tenant_id, id, model, completion_id, rollout_id, choice, reward, label, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (tenant_id, feedback.id, feedback.model, completion_id, rollout_id, choice, feedback.reward, label, feedback.created),
                )
        except sqlite3.IntegrityError:  # the same id, sent twice at once: the first one stored wins
            stored = self._feedback(tenant_id, feedback.id)
            if stored is None:
                raise ConflictError(f"feedback id '{feedback.id}' could not be stored; send it again", param="feedback_id") from None
            return stored
        return feedback

    def feedback(self, tenant_id: int, model: str) -> list[Feedback]:
        """The model's feedback, oldest first."""
        rows = self._query(f"SELECT {_FEEDBACK_COLUMNS} FROM feedback WHERE tenant_id = ? AND model = ? ORDER BY created, id", (tenant_id, model))
        return [Feedback(*r) for r in rows]

    def feedback_on(self, tenant_id: int, completions: list[LoggedCompletion]) -> list[Feedback]:
        """The feedback naming these completions or their rollouts, oldest first."""
        ids = [c.id for c in completions]
        rollouts = sorted({c.rollout_id for c in completions if c.rollout_id is not None})
        if not ids:
            return []
        marks = lambda n: ",".join("?" * n)  # noqa: E731
        rows = self._query(
            f"SELECT {_FEEDBACK_COLUMNS} FROM feedback WHERE tenant_id = ? AND (completion_id IN ({marks(len(ids))}) "
            f"OR rollout_id IN ({marks(len(rollouts))})) ORDER BY created, id",
            (tenant_id, *ids, *rollouts),
        )
        return [Feedback(*r) for r in rows]

    def _feedback(self, tenant_id: int, feedback_id: str) -> Feedback | None:
        rows = self._query(f"SELECT {_FEEDBACK_COLUMNS} FROM feedback WHERE tenant_id = ? AND id = ?", (tenant_id, feedback_id))
        return Feedback(*rows[0]) if rows else None

    def _rollout_completion(self, tenant_id: int, rollout_id: str) -> LoggedCompletion | None:
        rows = self._query(
            f"SELECT {_COMPLETION_COLUMNS} FROM completions WHERE tenant_id = ? AND rollout_id = ? ORDER BY created DESC LIMIT 1",
            (tenant_id, rollout_id),
        )
        return _completion(rows[0]) if rows else None

    # ------------------------------------------------------------------ retention and deletion
    def prune(self, tenant_id: int, model: str) -> int:
        """Drop the model's completions past its retention (age, then count) and their feedback;
        returns how many completions went."""
        settings = self.settings(tenant_id, model)
        cutoff = time.time() - settings.retention_days * 86400
        self._last_prune[(tenant_id, model)] = time.monotonic()
        with self._transaction() as db:
            doomed = "SELECT id FROM completions WHERE tenant_id = ? AND model = ? AND (created < ? OR id NOT IN (SELECT id FROM completions WHERE tenant_id = ? AND model = ? ORDER BY created DESC, id DESC LIMIT ?))"
            args = (tenant_id, model, cutoff, tenant_id, model, settings.max_completions)
            db.execute(f"DELETE FROM feedback WHERE tenant_id = ? AND completion_id IN ({doomed})", (tenant_id, *args))
            gone = db.execute(f"DELETE FROM completions WHERE tenant_id = ? AND id IN ({doomed})", (tenant_id, *args)).rowcount
            db.execute(  # rollout feedback whose rollout has no completion left
                "DELETE FROM feedback WHERE tenant_id = ? AND model = ? AND rollout_id IS NOT NULL "
                "AND rollout_id NOT IN (SELECT rollout_id FROM completions WHERE tenant_id = ? AND rollout_id IS NOT NULL)",
                (tenant_id, model, tenant_id),
            )
        return gone

    def delete(self, tenant_id: int, model: str, settings_too: bool = False) -> int:
        """Forget the model's logged completions and feedback (and its settings, with `settings_too`)."""
        with self._transaction() as db:
            gone = db.execute("DELETE FROM completions WHERE tenant_id = ? AND model = ?", (tenant_id, model)).rowcount
            db.execute("DELETE FROM feedback WHERE tenant_id = ? AND model = ?", (tenant_id, model))
            if settings_too:
                db.execute("DELETE FROM traffic_settings WHERE tenant_id = ? AND model = ?", (tenant_id, model))
        return gone

    def models(self) -> list[tuple[int, str]]:
        """Every (tenant, model) with settings or logged traffic."""
        rows = self._query("SELECT tenant_id, model FROM traffic_settings UNION SELECT DISTINCT tenant_id, model FROM completions")
        return sorted((r[0], r[1]) for r in rows)


def check_settings(settings: TrafficSettings) -> None:
    if not (isinstance(settings.retention_days, (int, float)) and 0 < settings.retention_days <= 3650):
        raise InvalidRequestError("retention_days must be more than 0 and at most 3650", param="retention_days")
    if not (isinstance(settings.max_completions, int) and 1 <= settings.max_completions <= 10_000_000):
        raise InvalidRequestError("max_completions must be between 1 and 10,000,000", param="max_completions")
    if not settings.labels or len(settings.labels) > 64:
        raise InvalidRequestError("labels must map 1 to 64 words to rewards", param="labels")
    for word, reward in settings.labels.items():
        if not isinstance(word, str) or not 1 <= len(word) <= 64 or not isinstance(reward, (int, float)) or not math.isfinite(reward):
            raise InvalidRequestError(f"labels must map words of 1-64 characters to finite rewards; {word!r}: {reward!r} is not", param="labels")


_COMPLETION_COLUMNS = "id, model, version, step, rollout_id, task_key, prompt_hash, endpoint, created, record, rowid"
_FEEDBACK_COLUMNS = "id, model, completion_id, rollout_id, choice, reward, label, created"


def logged_completion(public: dict[str, Any]) -> LoggedCompletion:
    """A LoggedCompletion back from its `public()` form (what the HTTP routes send)."""
    return LoggedCompletion(**{**public, "choices": [ServedChoice(**c) for c in public["choices"]]})


def _completion(row: tuple) -> LoggedCompletion:
    record = json.loads(row[9])
    choices = [ServedChoice(**c) for c in record["choices"]]
    return LoggedCompletion(*row[:9], request=record["request"], prompt_token_ids=record["prompt_token_ids"], choices=choices, seq=row[10])
