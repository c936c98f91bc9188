"""`hone demo`: evaluate the inbox agent, train it with hone's loop, evaluate again, report.

1. Baseline: one attempt at every held-out question (held-out inboxes are never trained on).
2. Train: the GRPO loop from `hone.rl.loop` on training inboxes, checkpointed each step, so a
   killed demo re-run with the same --out resumes where it stopped.
3. Final: the same held-out evaluation with the trained weights.
4. Report: a summary table on the console, `results.json`, `report.html` and its two pictures
   (`curves.png`, `before_after.png`) in --out.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from hone.backends import Backend
from hone.monitor.report import before_after_png, curves_png, trajectory_html, write_report
from hone.rl.evaluate import EvalResult, evaluate
from hone.rl.loop import RunConfig, ScoreHook, make_model, run_training
from hone.rl.trajectory import Trajectory


@dataclass(frozen=True)
class DemoConfig:
    run: RunConfig
    eval_temperature: float = 0.0
    eval_limit: int = 0  # 0 = every held-out question; only for quick smoke runs
    score: ScoreHook | None = None  # rescoring of training groups (a judge); None = the env's reward


def run_demo(env: Any, config: DemoConfig, backend: Backend | None = None, console: Console | None = None) -> dict[str, Any]:
    return asyncio.run(_run_demo(env, config, backend, console or Console()))


async def _run_demo(env: Any, config: DemoConfig, backend: Backend | None, console: Console) -> dict[str, Any]:
    started = time.perf_counter()
    out = Path(config.run.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run_config = replace(config.run, out_dir=str(out / "run"))
    model = await asyncio.to_thread(make_model, "inbox-agent", run_config, backend)
    client = model.openai_client()
    eval_tasks = list(env.eval_tasks())
    if config.eval_limit:
        eval_tasks = eval_tasks[: config.eval_limit]

    # 1) baseline (kept on disk so a resumed demo does not redo it)
    console.print(f"[bold]1/3[/] evaluating the starting model on {len(eval_tasks)} held-out questions")
    baseline, baseline_trajectories = await _cached_eval(out / "baseline.json", env, client, model.name, eval_tasks, config)
    console.print(f"    success {baseline['success']:.1%}  (95% CI {baseline['ci95'][0]:.1%}–{baseline['ci95'][1]:.1%})")

    # 2) train
    console.print(f"[bold]2/3[/] training for {run_config.steps} steps ({run_config.groups_per_step} questions × {run_config.group_size} attempts each)")
    train_started = time.perf_counter()
    result = await run_training(env, run_config, model=model, score=config.score)
    train_wall = time.perf_counter() - train_started

    # 3) final
    console.print("[bold]3/3[/] evaluating the trained model on the same held-out questions")
    final_result = await evaluate(env, client, model.name, eval_tasks, temperature=config.eval_temperature, seed=run_config.seed)
    final = final_result.summary()
    final_trajectories = final_result.trajectories

    history = result.history
    results = {
        "baseline_success": baseline["success"],
        "final_success": final["success"],
        "baseline_ci95": baseline["ci95"],
        "final_ci95": final["ci95"],
        "baseline": baseline,
        "final": final,
        "steps": run_config.steps,
        "wall_s": time.perf_counter() - started,
        "train_wall_s": train_wall,
        "time_sampling_s": sum(r.get("time/sample") or 0 for r in history),
        "time_training_s": sum(r.get("time/train") or 0 for r in history),
        "eval_questions": len(eval_tasks),
        "reward_source": "code" if config.score is None else "judge",
        "judge_agreement": _mean_metric(history, "judge/agreement"),
        "config": {k: v for k, v in asdict(run_config).items() if isinstance(v, (int, float, str, bool))},
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    _write_html(out / "report.html", results, history, baseline_trajectories, final_trajectories)
    _print_summary(console, results, out)
    return results


async def _cached_eval(path: Path, env: Any, client: Any, model: str, tasks: list[Any], config: DemoConfig) -> tuple[dict[str, Any], list[Any]]:
    if path.exists():
        saved = json.loads(path.read_text())
        return saved["summary"], [Trajectory.model_validate(t) for t in saved["trajectories"]]
    result: EvalResult = await evaluate(env, client, model, tasks, temperature=config.eval_temperature, seed=config.run.seed)
    examples = result.trajectories[:12]
    path.write_text(json.dumps({"summary": result.summary(), "trajectories": [t.model_dump(exclude={"turns"}) for t in examples]}))
    return result.summary(), examples


def _mean_metric(history: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in history if isinstance(r.get(key), (int, float))]
    return sum(values) / len(values) if values else None


def _print_summary(console: Console, results: dict[str, Any], out: Path) -> None:
    b, f = results["baseline"], results["final"]
    table = Table(title="inbox agent, held-out questions")
    table.add_column("")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_row("success", f"{b['success']:.1%}", f"{f['success']:.1%}")
    table.add_row("95% CI", f"{b['ci95'][0]:.1%}–{b['ci95'][1]:.1%}", f"{f['ci95'][0]:.1%}–{f['ci95'][1]:.1%}")
    table.add_row("reward", f"{b['reward']:.3f}", f"{f['reward']:.3f}")
    table.add_row("turns", f"{b['turns']:.2f}", f"{f['turns']:.2f}")
    table.add_row("latency / question", f"{b['latency_s']:.2f} s", f"{f['latency_s']:.2f} s")
    console.print(table)
    console.print(
        f"{results['steps']} steps, wall {results['wall_s'] / 60:.1f} min "
        f"(sampling {results['time_sampling_s'] / 60:.1f} min, training {results['time_training_s'] / 60:.1f} min)"
    )
    if results["judge_agreement"] is not None:
        console.print(f"the judge ranked pairs like the ground truth {results['judge_agreement']:.0%} of the time")
    console.print(f"wrote {out / 'results.json'} and {out / 'report.html'}")


def _write_html(path: Path, results: dict[str, Any], history: list[dict[str, Any]], before: list[Any], after: list[Any]) -> None:
    b, f = results["baseline"], results["final"]
    rows = [
        ("success", f"{b['success']:.1%} ({b['ci95'][0]:.1%}–{b['ci95'][1]:.1%})", f"{f['success']:.1%} ({f['ci95'][0]:.1%}–{f['ci95'][1]:.1%})"),
        ("reward", f"{b['reward']:.3f}", f"{f['reward']:.3f}"),
        ("turns", f"{b['turns']:.2f}", f"{f['turns']:.2f}"),
        ("latency per question", f"{b['latency_s']:.2f} s", f"{f['latency_s']:.2f} s"),
    ]
    if results["judge_agreement"] is not None:
        rows.append(("judge agreement with ground truth (training pairs)", "", f"{results['judge_agreement']:.0%}"))
    images = [
        (curves_png(history, [("reward/mean", "training reward"), ("success/rate", "training success")]), "training curves"),
        (before_after_png(["before", "after"], [b["success"], f["success"]], [tuple(b["ci95"]), tuple(f["ci95"])], "held-out success"), "before and after"),
    ]
    for (png, _), name in zip(images, ("curves.png", "before_after.png")):  # also as files, for a README or a slide
        (path.parent / name).write_bytes(png)
    sections = [
        ("Before training", [trajectory_html(t, f"question {i + 1}: reward {t.reward:.2f}") for i, t in enumerate(before[:6])]),
        ("After training", [trajectory_html(t, f"question {i + 1}: reward {t.reward:.2f}") for i, t in enumerate(after[:6])]),
    ]
    write_report(path, "hone demo: inbox agent", rows, images, sections)
