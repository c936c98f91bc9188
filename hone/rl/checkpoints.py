"""Run checkpoints: one folder per completed step, made whole before it becomes visible.

    RUN/checkpoints/step_000012/
        trainer/            the trainer's state (adapter or weights, optimizer, RNG)
        loop_state.json     step, data cursor, the step's metrics

A checkpoint is written in a staging folder, fsynced and renamed into place (hone.files), so a
process killed at any moment leaves either the whole checkpoint or none of it. Retention keeps the
last K and the best by one metric.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

from hone.files import remove_staging_debris, write_dir_atomically

PREFIX = "step_"


@dataclass
class Checkpoint:
    step: int
    path: Path

    @property
    def trainer_path(self) -> Path:
        return self.path / "trainer"

    def loop_state(self) -> dict[str, Any]:
        return json.loads((self.path / "loop_state.json").read_text())


class CheckpointDir:
    def __init__(self, root: Path, keep_last: int = 2, best_metric: str | None = "reward/mean"):
        self.root = root
        self.keep_last = keep_last
        self.best_metric = best_metric
        root.mkdir(parents=True, exist_ok=True)
        remove_staging_debris(root)  # from a kill mid-save

    def all(self) -> list[Checkpoint]:
        found = []
        for path in self.root.glob(PREFIX + "*"):
            if (path / "loop_state.json").exists():
                found.append(Checkpoint(int(path.name[len(PREFIX) :]), path))
        return sorted(found, key=lambda c: c.step)

    def latest(self) -> Checkpoint | None:
        found = self.all()
        return found[-1] if found else None

    async def save(self, step: int, save_trainer: Callable[[Path], Awaitable[Any]], loop_state: dict[str, Any]) -> Checkpoint:
        final = self.root / f"{PREFIX}{step:06d}"
        with write_dir_atomically(final) as staging:  # a re-run of a step whose checkpoint survived: replaced whole
            await save_trainer(staging / "trainer")
            (staging / "loop_state.json").write_text(json.dumps({"step": step, **loop_state}, indent=1))
        self._retain()
        return Checkpoint(step, final)

    def best(self) -> Checkpoint | None:
        if self.best_metric is None:
            return None
        scored = [(c.loop_state().get("metrics", {}).get(self.best_metric), c) for c in self.all()]
        scored = [(v, c) for v, c in scored if isinstance(v, (int, float))]
        # ties: by training reward the latest; by validation the earliest, the least trained of equals
        # (a validation split gives equal scores often, and a gamed reward keeps climbing through them)
        later_wins = 1 if not self.best_metric.startswith("validation/") else -1
        return max(scored, key=lambda vc: (vc[0], later_wins * vc[1].step))[1] if scored else None

    def _retain(self) -> None:
        found = self.all()
        keep = {c.step for c in found[-self.keep_last :]} if self.keep_last > 0 else {found[-1].step}
        best = self.best()
        if best is not None:
            keep.add(best.step)
        for checkpoint in found:
            if checkpoint.step not in keep:
                shutil.rmtree(checkpoint.path, ignore_errors=True)
