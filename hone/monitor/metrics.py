"""Per-step metrics: JSON lines in the run directory and a compact console table."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from rich.console import Console

from hone.errors import HoneError
from hone.files import write_file_atomically


class MetricsLog:
    """`metrics.jsonl`: one object per completed step, with `step` first.

    On resume, lines after the last checkpointed step are dropped, so a step redone after a kill
    appears once.
    """

    def __init__(self, path: Path, sinks: list[str] | tuple[str, ...] = ()):
        self.path = path
        self._sinks = [_make_sink(name, path.parent) for name in sinks]

    def append(self, step: int, metrics: dict[str, Any]) -> None:
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for sink in self._sinks:  # dashboards take numbers; warnings and the forecast's sentence stay in the file
            sink(step, numbers)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a kill mid-write
                continue
        return records

    def truncate_after(self, step: int) -> None:
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        write_file_atomically(self.path, "".join(json.dumps(r) + "\n" for r in kept))


class StepPrinter:
    """Prints one row per step under a header: the figures a user watches during a run."""

    COLUMNS = [  # one space between columns: the row fits 80
        ("step", "step", "{:>5.0f}"),
        ("reward/mean", "reward", "{:>7.3f}"),
        ("success/rate", "success", "{:>7.2f}"),
        ("train/entropy", "entropy", "{:>7.3f}"),
        ("train/kl_sampler_trainer_k3", "kl(k3)", "{:>7.4f}"),  # k3: cannot cancel between tokens, unlike k1
        ("optim/grad_norm", "|g|", "{:>7.3f}"),
        ("health/reply_tokens", "len", "{:>5.0f}"),
        ("health/truncated", "cut", "{:>5.0%}"),
        ("health/diversity", "div", "{:>5.2f}"),
        ("train/groups_dropped_zero_variance", "same", "{:>4.0f}"),
        ("rollouts/failed", "fail", "{:>4.0f}"),
        ("time/step", "t.step", "{:>6.1f}"),
    ]

    def __init__(self, console: Console | None = None):
        self.console = console or Console()
        self._printed_header = False

    def print(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": step, **metrics}
        if not self._printed_header:
            widths = [len(fmt.format(0)) for _, _, fmt in self.COLUMNS]
            self.console.print(" ".join(h.rjust(w) for (_, h, _), w in zip(self.COLUMNS, widths)), style="bold")
            self._printed_header = True
        cells = []
        for key, _, fmt in self.COLUMNS:
            value = row.get(key)
            width = len(fmt.format(0))
            cells.append(fmt.format(value) if isinstance(value, (int, float)) and not math.isnan(value) else "-".rjust(width))
        self.console.print(" ".join(cells), highlight=False)  # one space: the row fits 80 columns


def _plain(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


def _make_sink(name: str, run_dir: Path):
    """An optional logger; one clear sentence if the library the user asked for is missing."""
    if name == "wandb":
        try:
            import wandb
        except ImportError as exc:
            raise HoneError("--log wandb needs the wandb package: pip install wandb") from exc
        run = wandb.init(project="hone", dir=str(run_dir), resume="allow")
        return lambda step, metrics: run.log(metrics, step=step)
    if name == "tensorboard":
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise HoneError("--log tensorboard needs the tensorboard package: pip install tensorboard") from exc
        writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

        def write(step: int, metrics: dict[str, Any]) -> None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
                    writer.add_scalar(key, value, step)
            writer.flush()

        return write
    raise HoneError(f"unknown metrics sink '{name}'; use wandb or tensorboard")
