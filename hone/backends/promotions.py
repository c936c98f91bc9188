"""Named checkpoints and promotion decisions of an in-process LocalBackend (issue 17).

    ROOT/MODEL/checkpoints/CHECKPOINT/   the trainer's state (hone.training.checkpoint)
    ROOT/MODEL/book.json                 {"checkpoints": [...], "promotions": [...]}, replaced whole on each write

What `hone serve --home` keeps in SQLite (hone.service.store), kept in a folder for one process: a
LocalBackend given the same folder after a restart serves what was promoted, and a new
TrafficLearner reads the earlier decisions back. Knows files and JSON; nothing of models or engines.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hone.errors import CheckpointError, ConflictError, InvalidRequestError

LIVE = "live"  # NAME@live: the live weights, even where NAME serves a promoted checkpoint
BOOK_FILE = "book.json"
_CHECKPOINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class SavedCheckpoint:
    checkpoint: str
    step: int
    created: float  # a checkpoint saved again under its name is another one: its served copy is reloaded


@dataclass(frozen=True)
class Decision:
    checkpoint: str
    checkpoint_created: float
    step: int
    promoted: bool
    reason: str
    metrics: dict[str, float]
    created: float

    def public(self, model: str) -> dict[str, Any]:
        """The row `promotions(NAME)["history"]` holds, as `hone serve` answers it."""
        return {
            "version": f"{model}@{self.step}", "checkpoint": self.checkpoint, "step": self.step, "promoted": self.promoted,
            "reason": self.reason, "metrics": dict(self.metrics), "created": self.created,
        }  # fmt: skip


class CheckpointBook:
    """Per model: the checkpoints saved under a name, and every gate decision on them."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._books: dict[str, dict[str, list]] = {}  # model -> {"checkpoints": [...], "promotions": [...]}, read once
        self._lock = threading.Lock()

    def folder(self, model: str, checkpoint: str) -> Path:
        return self.root / model / "checkpoints" / checkpoint

    def checkpoints(self, model: str) -> list[SavedCheckpoint]:
        return list(self._book(model)["checkpoints"])

    def decisions(self, model: str) -> list[Decision]:
        return list(self._book(model)["promotions"])

    def find(self, model: str, version: str) -> SavedCheckpoint:
        """The newest checkpoint of step `version` when it is digits, else (or if none) the one named
        `version`: the order `hone serve` resolves NAME@VERSION in, so both backends agree."""
        saved = self.checkpoints(model)
        matches = [c for c in saved if version.isdigit() and c.step == int(version)] or [c for c in saved if c.checkpoint == version]
        if not matches:
            kept = ", ".join(c.checkpoint for c in saved) or "none"
            raise CheckpointError(f"the model '{model}' has no checkpoint '{version}' (it keeps: {kept})")
        return max(matches, key=lambda c: c.created)

    def promoted(self, model: str) -> SavedCheckpoint | None:
        """What NAME serves: the checkpoint of the newest promotion; None (the live weights) if none,
        or if that checkpoint was saved again since (then it is not what was validated)."""
        promotions = [d for d in self.decisions(model) if d.promoted]
        if not promotions:
            return None
        latest = promotions[-1]
        return next((c for c in self.checkpoints(model) if (c.checkpoint, c.created) == (latest.checkpoint, latest.checkpoint_created)), None)

    def check_new(self, model: str, checkpoint: str) -> None:
        """Refuse a name that is not one, is reserved, or is what NAME serves (it was validated as it is)."""
        if not _CHECKPOINT_NAME.fullmatch(checkpoint):
            raise InvalidRequestError(f"'{checkpoint}' is not a checkpoint name: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", param="checkpoint")
        if checkpoint == LIVE:
            raise InvalidRequestError(f"'{LIVE}' is reserved: NAME@{LIVE} names the live weights; pick another checkpoint name", param="checkpoint")
        serving = self.promoted(model)
        if serving is not None and serving.checkpoint == checkpoint:
            raise ConflictError(f"checkpoint '{checkpoint}' is what '{model}' serves (it was promoted); save under another name", param="checkpoint")

    def record_checkpoint(self, model: str, checkpoint: str, step: int) -> SavedCheckpoint:
        saved = SavedCheckpoint(checkpoint, step, time.time())
        with self._lock:
            book = self._book(model)
            book["checkpoints"] = [c for c in book["checkpoints"] if c.checkpoint != checkpoint] + [saved]
            self._write(model)
        return saved

    def record_decision(self, model: str, checkpoint: str, promoted: bool, reason: str, metrics: dict[str, float]) -> Decision:
        saved = self.find_named(model, checkpoint)
        decision = Decision(saved.checkpoint, saved.created, saved.step, promoted, reason, {k: float(v) for k, v in metrics.items()}, time.time())
        with self._lock:
            self._book(model)["promotions"].append(decision)
            self._write(model)
        return decision

    def find_named(self, model: str, checkpoint: str) -> SavedCheckpoint:
        """By name only: a decision names the checkpoint it judged."""
        for saved in self.checkpoints(model):
            if saved.checkpoint == checkpoint:
                return saved
        raise CheckpointError(f"the model '{model}' has no checkpoint '{checkpoint}'; save_checkpoint first, or list them with list_checkpoints")

    def info(self, model: str) -> dict[str, Any]:
        """What NAME serves and every decision, shaped as `hone serve` answers GET .../promotions."""
        serving = self.promoted(model)
        return {
            "model": model,
            "serving": f"{model}@{serving.checkpoint if serving is not None else LIVE}",
            "checkpoint": serving.checkpoint if serving is not None else None,
            "step": serving.step if serving is not None else None,
            "history": [d.public(model) for d in self.decisions(model)],
        }

    def forget(self, model: str) -> None:
        """The model was deleted: its checkpoints and decisions go with it."""
        with self._lock:
            self._books.pop(model, None)
            shutil.rmtree(self.root / model, ignore_errors=True)

    def _book(self, model: str) -> dict[str, list]:
        if model not in self._books:
            self._books[model] = _read(self.root / model / BOOK_FILE)
        return self._books[model]

    def _write(self, model: str) -> None:
        """Write the whole book to a new file, then rename it over the old: a crash leaves one or the other."""
        book = self._books[model]
        path = self.root / model / BOOK_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({key: [asdict(row) for row in rows] for key, rows in book.items()}, indent=1))
        os.replace(temporary, path)


def _read(path: Path) -> dict[str, list]:
    if not path.exists():
        return {"checkpoints": [], "promotions": []}
    try:
        raw = json.loads(path.read_text())
        return {"checkpoints": [SavedCheckpoint(**row) for row in raw["checkpoints"]], "promotions": [Decision(**row) for row in raw["promotions"]]}
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path} is not a checkpoint book hone wrote ({error}); move it aside to start the model's promotions afresh") from None
