"""`hone demo`: the inbox agent before and after training, beside the rules it has to beat.

1. Untrained: one greedy attempt at every test question (held-out inboxes, templates and fact
   kinds), and the no-learning rules (hone.envs.inbox.rules) on the same questions.
2. Warm start (SFT): supervised fine-tuning on worked episodes from training inboxes
   (hone.envs.inbox.demonstrations), then its success on the validation split.
3. RL: the GRPO loop from `hone.rl.loop` on training inboxes, checkpointed each step, so a killed
   demo re-run with the same --out resumes where it stopped; then validation again.
4. Choice on validation: the better of the SFT and RL weights goes on; the test split is touched
   once more, by that model.
5. Report: success with bootstrap intervals over inboxes, paired McNemar tests against the
   untrained model and the best rule, where the gain came from (valid calls, right email found and
   read, turns), whole trajectories; on the console, in `results.json` and `report.html`.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from statistics import fmean
from typing import Any

from rich.console import Console
from rich.table import Table

from hone.backends import Backend
from hone.envs.inbox import InboxEnv
from hone.errors import HoneError
from hone.envs.inbox.demonstrations import demonstration
from hone.envs.inbox.facts import HELD_OUT_KINDS
from hone.envs.inbox.rules import rule_scores
from hone.monitor.report import before_after_png, curves_png, trajectory_html, write_report
from hone.rl.evaluate import evaluate
from hone.rl.checkpoints import CheckpointDir
from hone.rl.loop import RunConfig, ScoreHook, make_model, run_training
from hone.rl.model import TrainableModel
from hone.rl.sft import Demonstration, supervised_warm_start
from hone.rl.stats import compare
from hone.rl.trajectory import Trajectory

STOP = ["</tool_call>"]  # the agent's requests stop after one call; demonstrations say so too


@dataclass(frozen=True)
class DemoConfig:
    run: RunConfig
    eval_temperature: float = 0.0
    eval_limit: int = 0  # 0 = every question of a split; only for quick smoke runs
    sft_demonstrations: int = 96  # worked training episodes; 0 = no warm start
    sft_epochs: int = 1
    sft_learning_rate: float = 1e-3
    sft_batch_size: int = 8
    score: ScoreHook | None = None  # rescoring of training groups (a judge); None = the env's reward


def run_demo(env: InboxEnv, config: DemoConfig, backend: Backend | None = None, console: Console | None = None) -> dict[str, Any]:
    return asyncio.run(_run_demo(env, config, backend, console or Console()))


@dataclass
class _Stage:
    """One evaluation of one model on one split, as stored on disk and reported."""

    summary: dict[str, Any]
    outcomes: dict[str, bool]  # question id -> strict success
    trajectories: list[Trajectory]


async def _run_demo(env: InboxEnv, config: DemoConfig, backend: Backend | None, console: Console) -> dict[str, Any]:
    started = time.perf_counter()
    out = Path(config.run.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # the demo validates the warm-start and RL weights itself (with its breakdown), so the loop does not
    run_config = replace(config.run, out_dir=str(out / "run"), validate_every=0)
    model = await asyncio.to_thread(make_model, "inbox-agent", run_config, backend)
    test = _limited(env.eval_tasks(), config.eval_limit)
    validation = _limited(env.validation_tasks(), config.eval_limit)

    # 1) untrained, and the rules
    console.print(f"[bold]1/4[/] the untrained model and the no-learning rules on {len(test)} test questions")
    untrained = await _cached_eval(out / "untrained_test.json", env, model, test, config)
    rules = rule_scores(test, env.train_tasks())
    best_rule = max(rules, key=lambda name: rules[name]["success"])
    console.print(f"    untrained {untrained.summary['success']:.1%}; best rule {best_rule} {rules[best_rule]['success']:.1%}")

    # 2) warm start
    checkpoints_exist = CheckpointDir(Path(run_config.out_dir) / "checkpoints").latest() is not None  # as run_training sees them
    sft_state = out / "sft_state"
    sft_stage = None
    if config.sft_demonstrations:
        demos = _demonstrations(env, config.sft_demonstrations, run_config.seed) if not (sft_state / "done").exists() else None
        if demos == []:
            raise HoneError(f"no worked episode fits in {env.max_turns} turns (one takes 3 or 4); raise --max-turns or pass --sft-demonstrations 0")
        if demos:
            console.print(f"[bold]2/4[/] supervised warm start on {len(demos)} worked training episodes × {config.sft_epochs} epochs")
            sft_started = time.perf_counter()
            history = await supervised_warm_start(
                model.backend, model.name, None, demos, epochs=config.sft_epochs, learning_rate=config.sft_learning_rate,
                batch_size=config.sft_batch_size, seed=run_config.seed,
            )
            await model.save_state(sft_state)
            (out / "sft_history.json").write_text(json.dumps(history))
            (sft_state / "done").write_text(json.dumps({"wall_s": time.perf_counter() - sft_started}))
        elif not checkpoints_exist:
            await model.load_state(sft_state)
        sft_stage = await _cached_eval(out / "sft_validation.json", env, model, validation, config)
        console.print(f"    validation success after the warm start: {sft_stage.summary['success']:.1%}")

    # 3) RL
    console.print(f"[bold]3/4[/] RL: {run_config.steps} steps ({run_config.groups_per_step} questions × {run_config.group_size} attempts each)")
    train_started = time.perf_counter()
    result = await run_training(env, run_config, model=model, score=config.score)
    train_wall = time.perf_counter() - train_started
    rl_stage = await _cached_eval(out / f"rl_validation_step{run_config.steps}.json", env, model, validation, config)
    console.print(f"    validation success after RL: {rl_stage.summary['success']:.1%}")

    # 4) choose on validation, then test once
    chosen = "rl"
    if sft_stage is not None and sft_stage.summary["success"] > rl_stage.summary["success"]:
        chosen = "sft"
        await model.load_state(sft_state, with_optimizer=False)
    tied = sft_stage is not None and sft_stage.summary["success"] == rl_stage.summary["success"]
    why = "tied on validation: the later ones" if tied else "better on validation"
    console.print(f"[bold]4/4[/] the {'RL' if chosen == 'rl' else 'warm-start'} weights ({why}) on the test questions")
    final = await _cached_eval(out / f"test_{chosen}_step{run_config.steps}.json", env, model, test, config)

    results = _results(env, config, run_config, test, untrained, final, rules, best_rule, sft_stage, rl_stage, chosen)
    results.update(
        wall_s=time.perf_counter() - started,
        train_wall_s=train_wall,
        time_sampling_s=sum(r.get("time/sample") or 0 for r in result.history),
        time_training_s=sum(r.get("time/train") or 0 for r in result.history),
        judge_agreement=_mean_metric(result.history, "judge/agreement"),
        warnings=[{"step": row["step"], **w} for row in result.history for w in row.get("warnings", [])],  # the RL run's health
        sft_wall_s=json.loads((sft_state / "done").read_text() or "{}").get("wall_s") if (sft_state / "done").exists() else None,
    )
    (out / "results.json").write_text(json.dumps(results, indent=1))
    _write_html(out / "report.html", results, result.history, untrained.trajectories, final.trajectories)
    _print_summary(console, results, out)
    return results


def _limited(tasks: Any, limit: int) -> list[Any]:
    tasks = list(tasks)
    return tasks[:limit] if limit else tasks


def _demonstrations(env: InboxEnv, n: int, seed: int) -> list[Demonstration]:
    """`n` worked episodes from training questions drawn across all training inboxes."""
    questions = list(env.train_tasks())
    random.Random(seed).shuffle(questions)
    demos = []
    for question in questions:
        worked = demonstration(question, env.max_turns, careful=True)
        if worked is not None:
            demos.append(Demonstration(**worked, stop=STOP))
        if len(demos) == n:
            break
    return demos


async def _evaluate(env: InboxEnv, model: TrainableModel, tasks: list[Any], config: DemoConfig) -> _Stage:
    result = await evaluate(env, model.openai_client(), model.name, tasks, temperature=config.eval_temperature, seed=config.run.seed)
    outcomes = {t.question_id: False for t in tasks}  # a rollout that failed counts as a miss
    outcomes.update({t.metadata["question_id"]: bool(t.metrics.get("success")) for t in result.trajectories})
    return _Stage({**result.summary(), **breakdown(result.trajectories)}, outcomes, result.trajectories)


async def _cached_eval(path: Path, env: InboxEnv, model: TrainableModel, tasks: list[Any], config: DemoConfig) -> _Stage:
    """An evaluation kept on disk, so a resumed demo does not redo it."""
    if path.exists():
        saved = json.loads(path.read_text())
        return _Stage(saved["summary"], saved["outcomes"], [Trajectory.model_validate(t) for t in saved["trajectories"]])
    stage = await _evaluate(env, model, tasks, config)
    examples = [t.model_dump(exclude={"turns"}) for t in stage.trajectories[:12]]
    path.write_text(json.dumps({"summary": stage.summary, "outcomes": stage.outcomes, "trajectories": examples}))
    return stage


def breakdown(trajectories: list[Trajectory]) -> dict[str, Any]:
    """Where success comes from: calls that parsed, the answer email found and read, turns, and
    success by trap and by whether the fact kind was ever trained on."""
    def mean(key: str) -> float | None:  # None, not NaN: results.json stays valid JSON
        values = [t.metrics[key] for t in trajectories if key in t.metrics]
        return fmean(values) if values else None

    calls = sum(t.metrics.get("tool_calls", 0) for t in trajectories)
    malformed = sum(t.metrics.get("malformed_calls", 0) for t in trajectories)
    by_trap: dict[str, list[float]] = {}
    by_kind: dict[str, list[float]] = {"trained kinds": [], "held-out kinds": []}
    for t in trajectories:
        for trap in t.metadata.get("traps", []) or ["none"]:
            by_trap.setdefault(trap, []).append(t.metrics.get("success", 0.0))
        held = t.metadata.get("fact") in HELD_OUT_KINDS
        by_kind["held-out kinds" if held else "trained kinds"].append(t.metrics.get("success", 0.0))
    return {
        "valid_call_rate": calls / (calls + malformed) if calls + malformed else None,  # None: no call was tried
        "tool_calls_per_question": mean("tool_calls"),
        "found_answer_email": mean("found_answer_email"),
        "read_answer_email": mean("read_answer_email"),
        "answered": mean("answered"),
        "success_by_trap": {k: fmean(v) for k, v in sorted(by_trap.items())},
        "success_by_kind": {k: fmean(v) if v else None for k, v in by_kind.items()},
    }


def _results(env, config, run_config, test, untrained, final, rules, best_rule, sft_stage, rl_stage, chosen) -> dict[str, Any]:
    ids = [q.question_id for q in test]
    clusters = [q.inbox_id for q in test]
    before = [untrained.outcomes[i] for i in ids]
    after = [final.outcomes[i] for i in ids]
    rule_outcomes = rules[best_rule]["outcomes"]

    vs_untrained = compare(before, after, clusters, seed=run_config.seed)
    vs_best_rule = compare(rule_outcomes, after, clusters, seed=run_config.seed)
    return {
        "task": {
            "model": run_config.base_model,
            "tools": ["search_inbox", "read_email"],
            "max_turns": env.max_turns,
            "forced": "nothing, except that the last turn offers no tools (the question is asked again and the reply is the answer)",
            "checker": "strict: a reply of at most 16 words naming exactly one value of the answer's type, the right one",
            "test": f"{len(test)} questions in {len(set(clusters))} held-out inboxes (held-out templates; {len(HELD_OUT_KINDS)} fact kinds never trained on)",
        },
        "untrained_success": fmean(before),
        "final_success": fmean(after),
        # success and its interval by bootstrap over inboxes (evaluate's own ci95 treats questions as independent)
        "untrained": {**untrained.summary, **vs_untrained["before"]},
        "final": {**final.summary, **vs_untrained["after"]},
        "chosen_on_validation": chosen,
        "validation": {"sft": sft_stage.summary if sft_stage else None, "rl": rl_stage.summary},
        "rules": {name: score["success"] for name, score in rules.items()},
        "best_rule": best_rule,
        "best_rule_success": rules[best_rule]["success"],  # the best of the rules on these same questions
        "best_rule_ci95": vs_best_rule["before"]["ci95"],
        "vs_untrained": vs_untrained,
        "vs_best_rule": vs_best_rule,
        "steps": run_config.steps,
        "eval_questions": len(test),
        "sft": {"demonstrations": config.sft_demonstrations, "epochs": config.sft_epochs, "learning_rate": config.sft_learning_rate},
        "reward_source": "code" if config.score is None else "judge",
        "config": {k: v for k, v in asdict(run_config).items() if isinstance(v, (int, float, str, bool))},
    }


def _mean_metric(history: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in history if isinstance(r.get(key), (int, float))]
    return sum(values) / len(values) if values else None


def _rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    b, f = results["untrained"], results["final"]
    def pct(value: float | None) -> str:
        return "—" if value is None else f"{value:.1%}"

    rows = [
        ("success (strict)", pct(b["success"]), pct(f["success"])),
        ("95% CI (bootstrap over inboxes)", f"{pct(b['ci95'][0])}–{pct(b['ci95'][1])}", f"{pct(f['ci95'][0])}–{pct(f['ci95'][1])}"),
        ("valid tool-call rate", pct(b["valid_call_rate"]), pct(f["valid_call_rate"])),
        ("answer email found", pct(b["found_answer_email"]), pct(f["found_answer_email"])),
        ("answer email read", pct(b["read_answer_email"]), pct(f["read_answer_email"])),
        ("turns", f"{b['turns']:.2f}", f"{f['turns']:.2f}"),
        ("latency / question", f"{b['latency_s']:.2f} s", f"{f['latency_s']:.2f} s"),
    ]
    for kind in f["success_by_kind"]:
        rows.append((f"success, {kind}", pct(b["success_by_kind"][kind]), pct(f["success_by_kind"][kind])))
    return rows


def _print_summary(console: Console, results: dict[str, Any], out: Path) -> None:
    table = Table(title="inbox agent, held-out test questions")
    for column, justify in (("", "left"), ("untrained", "right"), ("trained", "right")):
        table.add_column(column, justify=justify)
    for row in _rows(results):
        table.add_row(*row)
    console.print(table)
    rules = ", ".join(f"{name} {score:.1%}" for name, score in results["rules"].items())
    console.print(f"no-learning rules (same questions, strict checker): {rules}")
    for key, label in (("vs_untrained", "untrained model"), ("vs_best_rule", f"best rule ({results['best_rule']})")):
        d, m = results[key]["difference"], results[key]["mcnemar"]
        console.print(
            f"trained − {label}: {d['difference']:+.1%} (95% CI {d['ci95'][0]:+.1%} to {d['ci95'][1]:+.1%}), "
            f"McNemar p = {m['p_value']:.3g} ({m['after_only']} questions only the trained agent got, {m['before_only']} only the other)"
        )
    console.print(
        f"{results['steps']} RL steps after the warm start, {results['chosen_on_validation'].upper()} weights chosen on validation; "
        f"wall {results['wall_s'] / 60:.1f} min (RL sampling {results['time_sampling_s'] / 60:.1f} min, training {results['time_training_s'] / 60:.1f} min)"
    )
    if results["judge_agreement"] is not None:
        console.print(f"the judge ranked pairs like the ground truth {results['judge_agreement']:.0%} of the time")
    codes = ", ".join(f"{w['code']} (step {w['step']})" for w in results["warnings"]) or "none"
    console.print(f"RL run health warnings: {codes}; curves and health in {out / 'run' / 'report.html'}")
    console.print(f"wrote {out / 'results.json'} and {out / 'report.html'}")


def _write_html(path: Path, results: dict[str, Any], history: list[dict[str, Any]], before: list[Any], after: list[Any]) -> None:
    task = results["task"]
    rows = [("task", f"{task['model']}; tools {', '.join(task['tools'])}; up to {task['max_turns']} turns; forced: {task['forced']}",
             task["checker"])]
    rows += _rows(results)
    rows += [(f"rule: {name}", "", f"{score:.1%}") for name, score in results["rules"].items()]
    for key in ("vs_untrained", "vs_best_rule"):
        d, m = results[key]["difference"], results[key]["mcnemar"]
        rows.append((f"trained − {key[3:].replace('_', ' ')}", f"McNemar p = {m['p_value']:.3g}",
                     f"{d['difference']:+.1%} ({d['ci95'][0]:+.1%} to {d['ci95'][1]:+.1%})"))
    if results["judge_agreement"] is not None:
        rows.append(("judge agreement with ground truth (training pairs)", "", f"{results['judge_agreement']:.0%}"))
    b, f = results["untrained"], results["final"]
    labels = ["untrained", results["best_rule"], "trained"]
    values = [b["success"], results["best_rule_success"], f["success"]]
    intervals = [tuple(b["ci95"]), tuple(results["best_rule_ci95"]), tuple(f["ci95"])]
    images = [
        (curves_png(history, [("reward/mean", "training reward"), ("success/rate", "training success")]), "training curves"),
        (before_after_png(labels, values, intervals, "held-out success (strict)"), "before and after"),
    ]
    for (png, _), name in zip(images, ("curves.png", "before_after.png")):  # also as files, for a README or a slide
        (path.parent / name).write_bytes(png)
    sections = [
        ("Before training", [trajectory_html(t, f"question {i + 1}: reward {t.reward:.2f}") for i, t in enumerate(before[:6])]),
        ("After training", [trajectory_html(t, f"question {i + 1}: reward {t.reward:.2f}") for i, t in enumerate(after[:6])]),
    ]
    write_report(path, "hone demo: inbox agent", rows, images, sections)
