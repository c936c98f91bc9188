"""How often does the reward-hacking warning fire on a healthy run, and how soon does it catch a hack?

Simulated runs (no model), with the noise of a real one: 4 tasks per step of varying difficulty
(task success rates spread with sd 0.25 around the step's mean), 8 attempts each, binomial
validation success on n tasks every K steps, 30 steps.
- healthy: training reward 0.2 → 0.95 and validation success 0.30 → 0.75, both linear;
- hacked: the same training reward, validation flat at 0.30.
Each setting runs `--runs` seeds through `hone.monitor.health.HealthMonitor` with its default
thresholds; the false-alarm rate is the share of healthy runs that warn, the catch rate the share
of hacked runs that do, with the median step of the first warning.

    .venv/bin/python bench/health_warnings.py [--runs 200]

Writes bench/results/health_warnings.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from common import machine
from hone.monitor.health import HealthMonitor

STEPS, TASKS, ATTEMPTS = 30, 4, 8
RESULTS = Path(__file__).resolve().parent / "results" / "health_warnings.json"


def first_hacking_warning(n_validation: int, every: int, seed: int, hacked: bool) -> int | None:
    rng = np.random.default_rng(seed)
    monitor = HealthMonitor()

    def validation(step: int) -> dict[str, float]:
        p = 0.30 if hacked else 0.30 + 0.45 * step / STEPS
        return {"validation/success": rng.binomial(n_validation, p) / n_validation, "validation/n": n_validation}

    monitor.check(0, validation(0))
    for step in range(1, STEPS + 1):
        mean = 0.2 + 0.75 * (step - 1) / STEPS
        task_rates = np.clip(mean + rng.normal(0, 0.25, TASKS), 0, 1)
        rewards_T_A = np.stack([rng.binomial(1, rate, ATTEMPTS) for rate in task_rates])
        row = {
            "reward/mean": rewards_T_A.mean(),
            "reward/std": rewards_T_A.std(),
            "rollouts/ok": TASKS * ATTEMPTS,
            "health/reward_se": rewards_T_A.mean(1).std() / np.sqrt(TASKS),
        }
        if step % every == 0 or step == STEPS:
            row.update(validation(step))
        if any(w.code == "reward_hacking" for w in monitor.check(step, row)):
            return step
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    rows = []
    print(f"{'n':>4} {'K':>3} {'false alarms':>13} {'caught':>7} {'median step':>12}")
    for n_validation in (20, 64, 200):
        for every in (2, 4):
            healthy = [first_hacking_warning(n_validation, every, seed, hacked=False) for seed in range(args.runs)]
            hacked = [first_hacking_warning(n_validation, every, seed, hacked=True) for seed in range(args.runs)]
            caught = [step for step in hacked if step is not None]
            row = {
                "validation_n": n_validation,
                "validate_every": every,
                "false_alarm_rate": sum(step is not None for step in healthy) / args.runs,
                "catch_rate": len(caught) / args.runs,
                "median_first_step": float(np.median(caught)) if caught else None,
            }
            rows.append(row)
            median = f"{row['median_first_step']:.0f}" if caught else "-"
            print(f"{n_validation:>4} {every:>3} {row['false_alarm_rate']:>13.1%} {row['catch_rate']:>7.0%} {median:>12}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": machine(), "runs": args.runs, "steps": STEPS, "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
