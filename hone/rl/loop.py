"""The training run, top to bottom: resume, then for each step sample → score → train → checkpoint → log.

1. Resume first: the newest complete checkpoint gives the step to start from and the trainer's
   state; metric lines written after it (by a run killed before its next checkpoint) are dropped,
   and a line missing for it (a kill between checkpoint and log) is restored from the checkpoint.
2. Each step's tasks are a pure function of (seed, step), so the data cursor is the step and a
   resumed run sees exactly the batches an uninterrupted one would.
3. Each rollout's sampling seed is a pure function of (seed, step, task, attempt), so a run with
   `concurrency=1` is reproducible bit for bit (with more concurrency, batch composition can move
   bf16 rounding and so, rarely, a sampled token).
4. Rewards come from the environment; a `score` hook may rescore each step's groups before
   training (`hone.rewards.judge_scorer` is the relative LLM judge). The loop knows no judge.
5. Health: each step's rollouts and trainer figures become `health/...` metrics, and warnings
   (entropy collapse, reward hacking, ...) are printed once, on the step they start, and logged in
   that step's line; `stop_on` names the ones that end the run.
6. Validation (`hone.rl.validation`), where the environment offers a split: greedy success before
   training, every K steps and at the end; the best checkpoint is the best by validation, a
   forecast of where validation success levels off is fitted as points arrive, and `report.html`
   is rewritten as the run goes.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import fmean, pstdev
from typing import Any, Awaitable, Callable, Literal

from hone.backends import Backend
from hone.errors import HoneError
from hone.models import DEFAULT_MODEL
from hone.monitor import MetricsLog, StepPrinter
from hone.monitor.forecast import fit_forecast
from hone.monitor.health import HealthMonitor, rollout_health, stop_codes
from hone.monitor.run_report import write_run_report
from hone.rl.capture import play
from hone.rl.checkpoints import CheckpointDir
from hone.rl.env import CapturedEnvironment, Environment
from hone.rl.gather import GatherConfig, gather_groups
from hone.rl.model import TrainableModel
from hone.rl.step import TrainConfig
from hone.rl.trajectory import TrajectoryGroup
from hone.rl.validation import validate, validation_due, validation_tasks_of
from hone.training.losses import get_loss

# Rescores a step's groups in place (rewards, metrics) and returns namespaced step metrics; its
# failures count against the same budget as the rollouts', which the GatherConfig carries.
ScoreHook = Callable[[list[TrajectoryGroup], GatherConfig], Awaitable[dict[str, float]]]


@dataclass(frozen=True)
class RunConfig:
    out_dir: str = "runs/default"
    base_model: str = DEFAULT_MODEL
    steps: int = 20
    groups_per_step: int = 4
    group_size: int = 8
    learning_rate: float = 5e-5
    loss: str = "cispo"
    lora_rank: int = 16  # 0 = full fine-tuning
    temperature: float = 1.0
    seed: int = 0
    concurrency: int = 32
    retries: int = 0
    max_exceptions: int | float = 0.25
    keep_last: int = 2
    best_metric: str | None = None  # None: validation/success where the run validates, else reward/mean
    validate_every: int | None = None  # None: automatic (≤ 15% of run time), 0: never, K: every K steps
    stop_on: tuple[str, ...] = ()  # warnings that end the run: collapse, hacking, truncation, mismatch, drift
    report_every_s: float = 30.0  # rewrite report.html at most this often during the run; 0: only at the end
    scale_by_std: bool = False
    autocast_bf16: bool | Literal["auto"] = False  # "auto": where the trainer's hardware multiplies in bf16 natively
    log_sinks: tuple[str, ...] = ()  # "wandb", "tensorboard"
    show_progress: bool = True


@dataclass
class RunResult:
    model: TrainableModel
    history: list[dict[str, Any]]
    resumed_from: int
    best_checkpoint: Path | None = None  # by validation success where the run validates, else by reward
    stopped_by: str | None = None  # the warning code that ended the run early (see RunConfig.stop_on)


async def run_training(
    env: Environment | CapturedEnvironment,
    config: RunConfig,
    backend: Backend | None = None,
    model: TrainableModel | None = None,
    on_step: Callable[[int, dict[str, Any]], None] | None = None,
    printer: StepPrinter | None = None,
    score: ScoreHook | None = None,
) -> RunResult:
    check_run_config(config)  # before anything loads: a mistake costs seconds, not a model load and a step
    stop = stop_codes(config.stop_on)
    validation_tasks = validation_tasks_of(env, config.validate_every)
    best_metric = config.best_metric or ("validation/success" if validation_tasks else "reward/mean")
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if model is None:  # loading a model takes seconds: off the event loop
        model = await asyncio.to_thread(make_model, "policy", config, backend)
    client = model.openai_client()
    checkpoints = CheckpointDir(out / "checkpoints", keep_last=config.keep_last, best_metric=best_metric)
    log = MetricsLog(out / "metrics.jsonl", sinks=config.log_sinks)
    printer = printer or StepPrinter()
    report = _ReportWriter(out, env, config.report_every_s, config.seed, printer.console)

    # 1) resume
    start_step = 0
    latest = checkpoints.latest()
    if latest is not None:
        await model.load_state(latest.trainer_path)
        start_step = latest.step
    log.truncate_after(start_step)
    logged = log.read()
    if latest is not None and (not logged or logged[-1]["step"] < start_step):
        # killed between writing the checkpoint and its metric line: the checkpoint kept them
        log.append(start_step, latest.loop_state()["metrics"])
        logged = log.read()
    monitor = HealthMonitor()
    monitor.replay(logged)  # warnings already printed stay printed; their state carries on
    if monitor.active:
        printer.console.print(f"resuming at step {start_step} with warnings still active: {', '.join(sorted(monitor.active))}", style="yellow")

    # 0) the baseline: validation before any training (a run resumed past step 0 has trained weights loaded)
    if validation_tasks and start_step == 0 and not any(r["step"] == 0 for r in logged):
        metrics = await _validation_metrics(env, model, validation_tasks, config, logged, step=0)
        log.append(0, metrics)
        monitor.check(0, metrics)  # the reference the hacking check compares against
        printer.console.print(_validation_line(0, metrics))
    history = log.read()

    tasks = list(env.train_tasks())
    gather_config = GatherConfig(
        group_size=config.group_size,
        concurrency=config.concurrency,
        retries=config.retries,
        max_exceptions=config.max_exceptions,
        show_progress=config.show_progress,
    )
    train_config = TrainConfig(learning_rate=config.learning_rate, loss=config.loss, scale_by_std=config.scale_by_std)

    warned_of_broken_turns = False
    stopped_by = None
    status = "run ended with an error"  # until the loop finishes or stops on a warning
    try:
        for step in range(start_step, config.steps):
            # 2) sample and score
            started = time.perf_counter()
            batch = tasks_for_step(tasks, step, config.groups_per_step, config.seed)

            async def rollout(task_and_index: tuple[int, Any], attempt: int, step: int = step):
                task_index, task = task_and_index
                seed = rollout_seed(config.seed, step, task_index, attempt)
                return await play(env, model.backend, client, model.name, task, seed=seed, temperature=config.temperature)

            groups = await gather_groups(list(enumerate(batch)), rollout, gather_config)
            score_metrics = await score(groups, gather_config) if score is not None else {}
            metrics = {**rollout_metrics(groups), **score_metrics}
            health_started = time.perf_counter()
            metrics.update(rollout_health(groups))
            metrics["time/health"] = time.perf_counter() - health_started
            metrics["time/sample"] = time.perf_counter() - started

            # 3) train
            metrics.update(await model.train(groups, train_config))

            # 4) validate when due, then read the run's health
            if validation_tasks and validation_due(step + 1, config.steps, config.validate_every, history):
                metrics.update(await _validation_metrics(env, model, validation_tasks, config, history, step=step + 1))
            warnings = monitor.check(step + 1, metrics)
            if warnings:
                metrics["warnings"] = [w.as_dict() for w in warnings]

            # 5) checkpoint, then log: a step is done once its checkpoint exists
            loop_state = {
                "data_cursor": (step + 1) * config.groups_per_step,
                "metrics": metrics,
                "config": _jsonable(config),
                "best_metric": best_metric,
            }
            await checkpoints.save(step + 1, model.save_state, loop_state)
            metrics["time/step"] = time.perf_counter() - started - metrics.get("time/validation", 0.0)  # validation has its own time
            log.append(step + 1, metrics)
            history.append({"step": step + 1, **metrics})
            printer.print(step + 1, metrics)
            if "validation/success" in metrics:
                printer.console.print(_validation_line(step + 1, metrics))
            for warning in warnings:
                printer.console.print(warning.line(step + 1), style="yellow", highlight=False)
            if metrics.get("turns/broken", 0) > 0 and not warned_of_broken_turns:
                warned_of_broken_turns = True
                printer.console.print(
                    f"note: {metrics['turns/broken']:.0f} captured turns could not continue their conversation verbatim (the agent "
                    "edited its history or changed its tools; tool_choice='none' hides them); each trains as a sequence of its own"
                )
            report.maybe_write(history, live=True)
            if on_step is not None:
                on_step(step + 1, metrics)
            stopped_by = next((w.code for w in warnings if w.code in stop), None)
            if stopped_by is not None:
                printer.console.print(
                    f"stopping at step {step + 1}: the '{stopped_by}' warning is in stop_on. Re-running resumes from this step and "
                    "does not stop on it again while it stays active",
                    style="bold yellow",
                )
                break
        status = f"run stopped: the {stopped_by} warning (stop_on)" if stopped_by else None
    finally:
        report.write(history, live=False, status=status)  # never leave a page refreshing after the run has ended

    best = checkpoints.best()
    return RunResult(
        model=model, history=log.read(), resumed_from=start_step, best_checkpoint=best.path if best else None, stopped_by=stopped_by
    )


async def _validation_metrics(
    env: Any, model: TrainableModel, tasks: list[Any], config: RunConfig, history: list[dict[str, Any]], step: int
) -> dict[str, Any]:
    """Validation success at this step, and the forecast fitted to every point so far."""
    started = time.perf_counter()
    metrics: dict[str, Any] = await validate(env, model, tasks, config.concurrency)
    metrics["time/validation"] = time.perf_counter() - started
    points = [(r["step"], r["validation/success"]) for r in history if r.get("validation/success") is not None and r["step"] < step]
    points.append((step, metrics["validation/success"]))
    try:
        forecast = fit_forecast([p[0] for p in points], [p[1] for p in points], n=len(tasks), seed=config.seed)
    except ValueError as exc:  # a forecast is advice: it never stops a run
        metrics.update({"forecast/ok": 0.0, "forecast/text": f"no forecast: {exc}"})
        return metrics
    metrics.update(forecast.as_metrics())
    metrics["forecast/text"] = forecast.describe()
    return metrics


def _validation_line(step: int, metrics: dict[str, Any]) -> str:
    line = (
        f"validation at step {step}: success {metrics['validation/success']:.1%} "
        f"(95% CI {metrics['validation/ci_low']:.1%}–{metrics['validation/ci_high']:.1%}, n={metrics['validation/n']:.0f})"
    )
    return line + (f"; {metrics['forecast/text']}" if step > 0 else "")


class _ReportWriter:
    """report.html in the run directory: rewritten during the run at most every `every_s` seconds, and at
    the end. A page that cannot be drawn is reported once and never stops the run."""

    def __init__(self, out: Path, env: Any, every_s: float, seed: int, console: Any):
        self.out, self.every_s, self.seed, self.console = out, every_s, seed, console
        self.title = f"hone run: {getattr(env, 'name', type(env).__name__)} ({out.name})"
        self.last = time.perf_counter()  # the first live write waits one interval: short runs write once, at the end
        self.failed = False

    def maybe_write(self, history: list[dict[str, Any]], live: bool) -> None:
        if self.every_s > 0 and time.perf_counter() - self.last >= self.every_s:
            self.write(history, live)

    def write(self, history: list[dict[str, Any]], live: bool, status: str | None = None) -> None:
        self.last = time.perf_counter()
        try:
            write_run_report(self.out, history, title=self.title, live=live, seed=self.seed, status=status)
        except Exception as exc:  # a report is a view of metrics.jsonl, which is already safe on disk
            if not self.failed:
                self.failed = True
                self.console.print(f"note: report.html could not be written ({type(exc).__name__}: {exc}); metrics.jsonl has every figure")


def check_run_config(config: RunConfig) -> None:
    """One sentence for a setting that cannot work."""
    get_loss(config.loss)  # an unknown loss name: InvalidRequestError listing the known ones
    if config.group_size < 2:
        raise HoneError(
            f"group_size must be at least 2, got {config.group_size}: advantages compare the attempts within a group, "
            "so groups of one attempt can never train"
        )
    for name in ("steps", "groups_per_step", "concurrency"):
        if getattr(config, name) < 1:
            raise HoneError(f"{name} must be at least 1, got {getattr(config, name)}")
    if config.lora_rank < 0:
        raise HoneError(f"lora_rank must be 0 (full fine-tuning) or more, got {config.lora_rank}")
    if not config.learning_rate > 0:
        raise HoneError(f"learning_rate must be more than 0, got {config.learning_rate}")
    if config.best_metric is not None and config.best_metric.startswith("validation/") and config.validate_every == 0:
        raise HoneError(f"best_metric='{config.best_metric}' needs validation; drop validate_every=0 or choose another best_metric")
    if config.validate_every is not None and config.validate_every < 0:
        raise HoneError(f"validate_every must be 0 (never), a number of steps, or None (automatic), got {config.validate_every}")
    try:
        stop_codes(config.stop_on)
    except ValueError as exc:
        raise HoneError(str(exc)) from None


def make_model(name: str, config: RunConfig, backend: Backend | None = None) -> TrainableModel:
    """The trainable model a run config describes (LoRA at its rank, or full fine-tuning at rank 0)."""
    return TrainableModel(name, config.base_model, backend, lora_rank=config.lora_rank, autocast_bf16=config.autocast_bf16, seed=config.seed)


def tasks_for_step(tasks: list[Any], step: int, groups_per_step: int, seed: int) -> list[Any]:
    """The step's tasks: walk a seeded shuffle of all tasks, reshuffled each epoch."""
    chosen = []
    for position in range(step * groups_per_step, (step + 1) * groups_per_step):
        epoch, offset = divmod(position, len(tasks))
        order = list(range(len(tasks)))
        random.Random(f"{seed}/{epoch}").shuffle(order)
        chosen.append(tasks[order[offset]])
    return chosen


def rollout_seed(seed: int, step: int, task_index: int, attempt: int) -> int:
    digest = hashlib.sha256(f"{seed}/{step}/{task_index}/{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def rollout_metrics(groups: list[TrajectoryGroup]) -> dict[str, float]:
    trajectories = [t for g in groups for t in g.trajectories]
    rewards = [t.reward for t in trajectories]
    metrics: dict[str, float] = {
        "reward/mean": fmean(rewards) if rewards else float("nan"),
        "reward/std": pstdev(rewards) if len(rewards) > 1 else 0.0,
        "rollouts/ok": float(len(trajectories)),
        "rollouts/failed": float(sum(len(g.exceptions) for g in groups)),
        "tokens/sampled": float(sum(len(turn.completion_tokens) for t in trajectories for turn in t.turns)),
    }
    captured = [t for t in trajectories if "turns_bridged" in t.metadata]
    if captured:  # multi-turn captures: turns continued verbatim, and those that could not be
        metrics["turns/bridged"] = float(sum(t.metadata["turns_bridged"] for t in captured))
        metrics["turns/broken"] = float(sum(t.metadata["turns_broken"] for t in captured))
    successes = [t.metrics["success"] for t in trajectories if "success" in t.metrics]
    if successes:
        metrics["success/rate"] = fmean(successes)
    for key in sorted({k for t in trajectories for k in t.metrics if k != "success"}):
        values = [t.metrics[key] for t in trajectories if key in t.metrics]
        metrics[f"env/{key}"] = fmean(values)
    return metrics


def _jsonable(config: RunConfig) -> dict[str, Any]:
    return {k: (v if isinstance(v, (int, float, str, bool, type(None), list, tuple)) else repr(v)) for k, v in asdict(config).items()}
