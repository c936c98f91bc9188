"""Forecast error: fit on the first half of a run's validation points, predict its last one.

For each run directory, the `validation/success` lines of its metrics.jsonl (the step-0 line holds
the baseline; `validation/n` the validation set size):
1. fit `hone.monitor.forecast` on the first half of the points (rounded up, so the last point is
   never in the fit);
2. predict the value at the last point's step: absolute error, and whether the curve's 80% band
   there covers the observed value. The band is the curve's, not one noisy measurement's, so
   validation noise alone keeps this coverage under 80% (more so on small validation sets);
3. beside it, persistence: the last fitted value held to the end, the forecast's baseline to beat.
A refused forecast is listed with its reason and left out of the error and the coverage.

    .venv/bin/python bench/forecast.py RUN_DIR [RUN_DIR ...] [--label NAME]
    .venv/bin/python bench/forecast.py --train toolcall --seeds 0 1 2 [--label demo RUN_DIR ...]

`--train toolcall` first trains 12 steps per seed, validated every step, into
runs/forecast_toolcall_seed_<seed> (a re-run resumes). The demo is analysed by passing its RL run
directories, `<hone demo --out>/run` (bench/demo_seeds.py leaves them at
bench/results/demo_seed_<seed>/run), provided its run validated during training; the summary is
given per label (`toolcall` for trained runs, `--label` for the directories passed) and overall.

Writes bench/results/forecast.json (`--results` to write elsewhere).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from statistics import fmean

from common import machine

from hone.envs.toolcall import ToolCallEnv
from hone.monitor import MetricsLog
from hone.monitor.forecast import INTERVAL, fit_forecast
from hone.rl.loop import RunConfig, run_training

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "forecast.json"
TASKS = {"toolcall": ToolCallEnv}


def train(task: str, seeds: list[int]) -> list[Path]:
    """One short run per seed, validated at every step so the curve has a point per step."""
    run_dirs = []
    for seed in seeds:
        out = ROOT / "runs" / f"forecast_{task}_seed_{seed}"
        config = RunConfig(
            out_dir=str(out), steps=12, group_size=8, groups_per_step=4, learning_rate=2e-4, lora_rank=16,
            seed=seed, validate_every=1, show_progress=False,
        )  # fmt: skip
        asyncio.run(run_training(TASKS[task](), config))
        run_dirs.append(out)
    return run_dirs


def validation_points(run_dir: Path) -> tuple[list[float], list[float], int | None]:
    """(steps, success, n) from a run's metrics.jsonl; a step logged twice keeps its last line."""
    by_step: dict[float, tuple[float, int | None]] = {}
    for record in MetricsLog(run_dir / "metrics.jsonl").read():
        if "validation/success" in record:
            by_step[record["step"]] = (record["validation/success"], record.get("validation/n"))
    steps = sorted(by_step)
    sizes = [by_step[s][1] for s in steps if by_step[s][1] is not None]
    return steps, [by_step[s][0] for s in steps], min(sizes) if sizes else None  # smallest n: most noise


def evaluate(run_dir: Path, group: str) -> dict:
    """Fit on the first half, predict the last point; one row of the report."""
    steps, values, n = validation_points(run_dir)
    row: dict = {"run": str(run_dir), "group": group, "points": len(steps), "n": n}
    if len(steps) < 2:
        return row | {"ok": False, "reason": f"{len(steps)} validation points in metrics.jsonl; two halves need at least 2"}
    half = (len(steps) + 1) // 2
    forecast = fit_forecast(steps[:half], values[:half], n=n)
    row |= {"fitted_points": half, "fitted_until_step": steps[half - 1], "predicted_step": steps[-1], "observed": values[-1]}
    row |= {"ok": forecast.ok, "reason": forecast.reason, "forecast": forecast.as_metrics(), "persistence_abs_error": abs(values[half - 1] - values[-1])}
    if forecast.ok:
        predicted = float(forecast.predict([steps[-1]])[0])
        low, high = (float(edge[0]) for edge in forecast.predict_interval([steps[-1]]))
        row |= {"predicted": predicted, "band": [low, high], "abs_error": abs(predicted - values[-1]), "covered": low <= values[-1] <= high}
    return row


def summarise(rows: list[dict]) -> dict:
    """Mean absolute error and coverage over the forecasts made; persistence over the same runs."""
    made = [r for r in rows if r["ok"]]
    return {
        "runs": len(rows),
        "forecasts_made": len(made),
        "mean_abs_error": fmean(r["abs_error"] for r in made) if made else None,
        "coverage": fmean(float(r["covered"]) for r in made) if made else None,
        "persistence_mean_abs_error": fmean(r["persistence_abs_error"] for r in made) if made else None,
    }


def print_table(rows: list[dict], summaries: dict[str, dict]) -> None:
    print(f"{'run':48s} {'fit':>7s} {'step':>5s} {'obs':>5s} {'pred':>5s} {f'{INTERVAL:.0%} band':>11s} {'|err|':>6s} {'cov':>4s} {'persist':>7s}")
    for r in rows:
        name = r["run"][-48:]
        if not r["ok"]:
            print(f"{name:48s} refused: {r['reason']}")
            continue
        low, high = r["band"]
        print(
            f"{name:48s} {r['fitted_points']:>3d}/{r['points']:<3d} {r['predicted_step']:>5g} {r['observed']:>5.2f} {r['predicted']:>5.2f} "
            f"{low:>5.2f}–{high:<5.2f} {r['abs_error']:>6.3f} {'yes' if r['covered'] else 'no':>4s} {r['persistence_abs_error']:>7.3f}"
        )
    for group, s in summaries.items():
        if s["forecasts_made"]:
            print(
                f"{group}: {s['forecasts_made']}/{s['runs']} forecasts; mean |error| {s['mean_abs_error']:.3f} "
                f"(persistence {s['persistence_mean_abs_error']:.3f}); band coverage {s['coverage']:.0%}"
            )
        else:
            print(f"{group}: no forecast made in {s['runs']} runs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="*", type=Path, help="run directories, each with a metrics.jsonl")
    parser.add_argument("--label", default="given", help="the group name of the run directories passed")
    parser.add_argument("--train", choices=sorted(TASKS), help="train runs of this task first (see the docstring)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not args.run_dirs and not args.train:
        parser.error("pass run directories, --train TASK, or both")
    for run_dir in args.run_dirs:
        if not (run_dir / "metrics.jsonl").exists():
            parser.error(f"{run_dir} has no metrics.jsonl; pass the run directory itself (for the demo, <--out>/run)")

    groups = [(run_dir, args.train) for run_dir in train(args.train, args.seeds)] if args.train else []
    groups += [(run_dir, args.label) for run_dir in args.run_dirs]
    rows = [evaluate(run_dir, group) for run_dir, group in groups]
    summaries = {group: summarise([r for r in rows if r["group"] == group]) for group in dict.fromkeys(g for _, g in groups)}
    if len(summaries) > 1:
        summaries["all"] = summarise(rows)
    print_table(rows, summaries)

    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({"machine": machine(), "interval": INTERVAL, "summary": summaries, "runs": rows}, indent=2) + "\n")
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
