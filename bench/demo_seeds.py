"""The demo over several training seeds: mean and spread of every headline figure.

One `hone demo` per seed, each in its own output folder (re-running resumes a seed that was cut
short); the seed changes the inboxes, the sampling and the LoRA initialisation. Not part of
`make demo`: three seeds take about three times as long.

    .venv/bin/python bench/demo_seeds.py [--seeds 0 1 2] [-- extra hone demo options]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from statistics import fmean, stdev

from common import machine

RESULTS = Path(__file__).parent / "results"
FIGURES = ("untrained_success", "final_success", "best_rule_success")


def run_seed(seed: int, extra: list[str]) -> dict:
    out = RESULTS / f"demo_seed_{seed}"
    subprocess.run([sys.executable, "-m", "hone.cli", "demo", "--seed", str(seed), "--out", str(out), *extra], check=True)
    return json.loads((out / "results.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="options passed on to `hone demo` (after --)")
    args = parser.parse_args()
    extra = [a for a in args.extra if a != "--"]
    per_seed = {seed: run_seed(seed, extra) for seed in args.seeds}

    summary = {}
    for key in FIGURES:
        values = [r[key] for r in per_seed.values()]
        summary[key] = {"mean": fmean(values), "spread_sd": stdev(values) if len(values) > 1 else 0.0, "min": min(values), "max": max(values)}
    for key in ("vs_untrained", "vs_best_rule"):
        values = [r[key]["difference"]["difference"] for r in per_seed.values()]
        summary[f"gain_{key}"] = {"mean": fmean(values), "spread_sd": stdev(values) if len(values) > 1 else 0.0, "min": min(values), "max": max(values)}
    report = {
        "machine": machine(),
        "seeds": args.seeds,
        "summary": summary,
        "per_seed": {
            seed: {k: r[k] for k in (*FIGURES, "best_rule", "chosen_on_validation", "wall_s")}
            | {"p_vs_untrained": r["vs_untrained"]["mcnemar"]["p_value"], "p_vs_best_rule": r["vs_best_rule"]["mcnemar"]["p_value"]}
            for seed, r in per_seed.items()
        },
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "demo_seeds.json").write_text(json.dumps(report, indent=1))
    for key, s in summary.items():
        print(f"{key:28s} mean {s['mean']:+.3f}  sd {s['spread_sd']:.3f}  range {s['min']:+.3f} .. {s['max']:+.3f}")
    print(f"wrote {RESULTS / 'demo_seeds.json'}")


if __name__ == "__main__":
    main()
