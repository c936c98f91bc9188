"""The run report: one self-contained HTML page about a run, rewritten during training and at the end.

    write_run_report(run_dir, history, title="inbox agent", live=True, seed=0)   # -> run_dir / "report.html"
    write_run_report(run_dir, history, title="inbox agent", live=False, status="run stopped: ...")   # at the end

`history` is what `MetricsLog.read()` returns: one dict per completed step (`{"step": 12, ...}`),
with any metric missing or None on any line. The page holds:
1) a summary: steps done, latest reward, latest and best validation success with their CI, the
   forecast of where validation success is heading, the number of warnings;
2) curves: reward per step; validation success with CI bars and the forecast curve and band; a grid
   of health panels (only those whose metrics appear), each marking the warnings that concern it;
3) the warnings table: step, code, message, advice.
A live page refreshes itself every `refresh_seconds`; images are data: URIs, so the file can be
opened, copied or mailed on its own. Knows metric names and matplotlib; nothing about models.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from hone.files import write_file_atomically
from hone.monitor.forecast import INTERVAL, Forecast, fit_forecast
from hone.monitor.report import img_tag, png_bytes

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

REPORT_NAME = "report.html"
VALIDATION_KEY = "validation/success"
BASELINE_IS_BEST = "best validation before training (step 0): training has not beaten the base model yet"
FORECAST_REACH = 2.5  # the forecast stops at 2.5 × the last step, however far step_90 is: the measured points stay readable


@dataclass(frozen=True)
class Panel:
    """One health panel: series on the left axis, optionally on a right one (another unit)."""

    title: str
    left: tuple[tuple[str, str], ...]  # (metric key, legend label)
    right: tuple[tuple[str, str], ...] = ()
    left_ylim: tuple[float, float] | None = None
    right_ylim: tuple[float, float] | None = None
    codes: frozenset[str] = frozenset()  # warning codes marked on this panel


SHARE = (0.0, 1.05)
HEALTH_PANELS = (
    Panel("policy entropy (nats)", (("train/entropy", "entropy"),), codes=frozenset({"entropy_collapse"})),
    Panel(
        "sampler vs trainer mismatch",
        (("train/kl_sampler_trainer_k3", "KL (k3)"),),
        (("train/logprob_abs_diff", "mean |Δ logprob|"),),
        codes=frozenset({"mismatch"}),
    ),
    Panel(
        "reply length",
        (("health/reply_tokens", "mean reply tokens"),),
        (("health/truncated", "truncated share"),),
        right_ylim=SHARE,
        codes=frozenset({"truncation"}),
    ),
    Panel(
        "group signal",
        (("health/zero_variance_groups", "zero-variance groups"), ("health/diversity", "diversity"), ("health/stalled_groups", "stalled groups")),
        left_ylim=SHARE,
        codes=frozenset({"diversity_collapse"}),
    ),
    Panel(
        "tools and judge",
        (("health/tool_call_validity", "tool-call validity"), ("judge/agreement", "judge agreement")),
        left_ylim=SHARE,
        codes=frozenset({"judge_drift"}),
    ),
)
VALIDATION_CODES = frozenset({"reward_hacking"})  # reward rising while validation does not
CLAIMED_CODES = VALIDATION_CODES.union(*(p.codes for p in HEALTH_PANELS))


@dataclass(frozen=True)
class RunWarning:
    step: int
    code: str
    message: str
    advice: str


def write_run_report(
    run_dir: Path,
    history: list[dict[str, Any]],
    *,
    title: str,
    live: bool,
    refresh_seconds: int = 15,
    seed: int = 0,
    status: str | None = None,
) -> Path:
    """Write `run_dir / "report.html"` atomically (a browser refreshing it never sees half a page).

    `seed` goes to `fit_forecast`: pass the run's, so the page shows the band the training loop
    logged. `status` replaces "run finished" on a final (`live=False`) page, e.g. "run stopped: the
    reward_hacking warning (stop_on)" or "run ended with an error"; a live page ignores it."""
    path = Path(run_dir) / REPORT_NAME
    page = run_report_html(history, title=title, live=live, refresh_seconds=refresh_seconds, seed=seed, status=status)
    write_file_atomically(path, page)
    return path


def run_report_html(
    history: list[dict[str, Any]], *, title: str, live: bool, refresh_seconds: int = 15, seed: int = 0, status: str | None = None
) -> str:
    refresh = f'<meta http-equiv="refresh" content="{int(refresh_seconds)}">' if live else ""
    updated = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    if live:
        line = f"run in progress — updated {updated}, refreshes every {int(refresh_seconds)} s"
    else:
        line = f"{status or 'run finished'} — written {updated}"
    head = f'<!doctype html><html><head><meta charset="utf-8">{refresh}<title>{html.escape(title)}</title><style>{_CSS}</style></head>'
    top = f'<body><h1>{html.escape(title)}</h1><p class="status {"live" if live else "done"}">{html.escape(line)}</p>'
    if not history:
        return f"{head}{top}<p>The run has not finished a step yet.</p></body></html>"

    warnings = _warnings(history)
    forecast = _forecast(history, seed)
    last_step = max(int(r["step"]) for r in history)
    reward_png = _reward_png(history, warnings, last_step)
    validation = _validation_png(history, warnings, forecast, last_step)
    health_png = _health_png(history, warnings, last_step)

    curves = f'<figure>{img_tag(reward_png, "reward per step")}<figcaption>training rollouts: mean reward (band: ± std across rollouts) and success rate</figcaption></figure>'
    if validation is not None:
        curves += f'<figure>{img_tag(validation, "validation success")}<figcaption>{_forecast_caption(forecast)}</figcaption></figure>'
    health = f"<h2>Health</h2>{img_tag(health_png, 'health panels')}" if health_png is not None else ""
    return (
        f"{head}{top}{_summary_html(history, warnings, forecast, last_step)}"
        f'<h2>Curves</h2><div class="pair">{curves}</div>{health}'
        f'<h2 id="warnings">Warnings</h2>{_warnings_html(warnings)}</body></html>'
    )


# ---------------------------------------------------------------- reading the history


def _as_float_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _series(history: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """The steps where `key` holds a finite number, and those numbers."""
    points = [(int(r["step"]), _as_float_or_none(r.get(key))) for r in history]
    kept = [(s, v) for s, v in points if v is not None]
    return [s for s, _ in kept], [v for _, v in kept]


def _warnings(history: list[dict[str, Any]]) -> list[RunWarning]:
    found = []
    for record in history:
        for w in record.get("warnings") or []:
            if isinstance(w, dict):
                found.append(RunWarning(int(record["step"]), str(w.get("code", "?")), str(w.get("message", "")), str(w.get("advice", ""))))
    return found


def _validation_points(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One dict per validation: step, success, ci_low, ci_high, n (the last three may be None)."""
    points = []
    for r in history:
        success = _as_float_or_none(r.get(VALIDATION_KEY))
        if success is not None:
            points.append(
                {
                    "step": int(r["step"]),
                    "success": success,
                    "ci_low": _as_float_or_none(r.get("validation/ci_low")),
                    "ci_high": _as_float_or_none(r.get("validation/ci_high")),
                    "n": _as_float_or_none(r.get("validation/n")),
                }
            )
    return points


def _forecast(history: list[dict[str, Any]], seed: int) -> Forecast:
    """The forecast as the training loop fits it (same seed; n: the smallest validation set known,
    the noisiest point). A fit that raises is shown as a refusal with the error's message: the page
    is rewritten inside the training loop, and a bad point must not end the run."""
    points = _validation_points(history)
    sizes = [p["n"] for p in points if p["n"] is not None]
    n = int(min(sizes)) if sizes else None
    try:
        return fit_forecast([p["step"] for p in points], [p["success"] for p in points], n, seed=seed)
    except Exception as error:  # only the fit: a failure anywhere else on the page still raises
        reason = f"the fit failed: {error}" if str(error) else f"the fit failed ({type(error).__name__})"
        return Forecast(False, reason, len(points), None, None, None, None, None, None, None)


# ---------------------------------------------------------------- summary and tables


def _summary_html(history: list[dict[str, Any]], warnings: list[RunWarning], forecast: Forecast, last_step: int) -> str:
    rows = [("steps done", str(last_step))]
    steps, rewards = _series(history, "reward/mean")
    if rewards:
        std = _series(history, "reward/std")
        spread = f" ± {std[1][-1]:.3f}" if std[0] and std[0][-1] == steps[-1] else ""
        rows.append(("latest reward", f"{rewards[-1]:.3f}{spread} (step {steps[-1]})"))
    points = _validation_points(history)
    if points:
        latest = points[-1]
        best = max(points, key=lambda p: (p["success"], -p["step"]))  # ties: the first step, as checkpoint retention on validation
        if points[0]["step"] == 0 and len(points) > 1:
            rows.append(("validation success, before training", _success_text(points[0])))
        rows.append(("validation success, latest", _success_text(latest)))
        best_text = _success_text(best)
        if best["step"] == 0 and len(points) > 1:  # validated after training began, never above the baseline
            best_text = f"{BASELINE_IS_BEST} — {best_text}"
        rows.append(("validation success, best", best_text))
        rows.append(("forecast", forecast.describe()))
    else:
        rows.append(("validation success", "no validation yet"))
    count = f'<a href="#warnings">{len(warnings)}</a>' if warnings else "0"
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="summary">{cells}<tr><th>warnings</th><td>{count}</td></tr></table>'


def _success_text(point: dict[str, Any]) -> str:
    text = f"{point['success']:.1%}"
    if point["ci_low"] is not None and point["ci_high"] is not None:
        text += f" (95% CI {point['ci_low']:.1%}–{point['ci_high']:.1%})"
    if point["n"] is not None:
        text += f", n={int(point['n'])}"
    return f"{text} at step {point['step']}"


def _forecast_caption(forecast: Forecast) -> str:
    shown = f"dashed curve and band: the fitted forecast and its {INTERVAL:.0%} band. " if forecast.ok else ""
    return html.escape(shown + forecast.describe())


def _warnings_html(warnings: list[RunWarning]) -> str:
    if not warnings:
        return "<p>No warnings.</p>"
    rows = "".join(
        f"<tr><td>{w.step}</td><td><code>{html.escape(w.code)}</code></td><td>{html.escape(w.message)}</td><td>{html.escape(w.advice)}</td></tr>"
        for w in warnings
    )
    return f'<table class="warnings"><tr><th>step</th><th>code</th><th>message</th><th>advice</th></tr>{rows}</table>'


# ---------------------------------------------------------------- figures


def _reward_png(history: list[dict[str, Any]], warnings: list[RunWarning], last_step: int) -> bytes:
    fig, ax = plt.subplots(figsize=(5.2, 3.3))
    steps, rewards = _series(history, "reward/mean")
    if rewards:
        ax.plot(steps, rewards, label="mean reward", color="#2f80ed", **_markers(steps))
        std_at = dict(zip(*_series(history, "reward/std")))
        band = [(s, r, std_at[s]) for s, r in zip(steps, rewards) if s in std_at]
        if band:
            xs, ys, sd = (np.array(c) for c in zip(*band))
            ax.fill_between(xs, ys - sd, ys + sd, color="#2f80ed", alpha=0.12, linewidth=0)
    s_steps, success = _series(history, "success/rate")
    if success:
        ax.plot(s_steps, success, label="success rate", color="#27ae60", **_markers(s_steps))
    if not rewards and not success:
        _empty(ax, "no training rollouts logged yet")
    _mark_warnings(ax, warnings)  # every warning: the reward curve is the run's timeline
    _finish(ax, "training rollouts", last_step)
    fig.tight_layout()
    return png_bytes(fig)


def _validation_png(history: list[dict[str, Any]], warnings: list[RunWarning], forecast: Forecast, last_step: int) -> bytes | None:
    points = _validation_points(history)
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 3.3))
    steps = np.array([p["step"] for p in points], dtype=float)
    success = np.array([p["success"] for p in points])
    low = np.array([p["ci_low"] if p["ci_low"] is not None else p["success"] for p in points])
    high = np.array([p["ci_high"] if p["ci_high"] is not None else p["success"] for p in points])
    right = max(last_step, 1)
    if forecast.ok:
        right = _forecast_reach(forecast, last_step)
        grid = np.linspace(steps.min(), right, 120)
        band_low, band_high = forecast.predict_interval(grid)
        ax.fill_between(grid, band_low, band_high, color="#c9a227", alpha=0.18, linewidth=0, label=f"forecast ({INTERVAL:.0%} band)")
        ax.plot(grid, forecast.predict(grid), color="#c9a227", linestyle="--")
        ax.axhline(forecast.ceiling, color="#8a6d00", linestyle=":", linewidth=1)
        ax.text(steps.min(), forecast.ceiling, f" ceiling {forecast.ceiling:.0%}", color="#8a6d00", fontsize=8, va="bottom")
        ax.axvline(last_step, color="#999", linewidth=0.8)  # left: measured; right: forecast
        ax.text(last_step, 0.02, "last step ", transform=ax.get_xaxis_transform(), fontsize=7, color="#777", ha="right")
    errors = [np.clip(success - low, 0, None), np.clip(high - success, 0, None)]
    ax.errorbar(steps, success, yerr=errors, fmt="o", color="#2f80ed", ecolor="#7fb0f0", capsize=3, markersize=4, label="validation (95% CI)")
    _mark_warnings(ax, [w for w in warnings if w.code in VALIDATION_CODES or w.code not in CLAIMED_CODES])
    ax.set_ylim(0, 1.05)
    _finish(ax, "validation success", right)
    fig.tight_layout()
    return png_bytes(fig)


def _forecast_reach(forecast: Forecast, last_step: int) -> float:
    """Far enough to see the curve bend: 1.5 × the last step, or to where 90% of the gain is expected."""
    reach = 1.5 * max(last_step, 1)
    interval = forecast.step_90_interval
    upper = _as_float_or_none(interval[1]) if interval is not None else None
    if upper is not None:
        reach = max(reach, upper * 1.05)
    return min(reach, FORECAST_REACH * max(last_step, 1))


def _health_png(history: list[dict[str, Any]], warnings: list[RunWarning], last_step: int) -> bytes | None:
    present = {k for r in history for k, v in r.items() if _as_float_or_none(v) is not None}
    panels = [p for p in HEALTH_PANELS if any(k in present for k, _ in p.left + p.right)]
    if not panels:
        return None
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.7 * columns, 2.7 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        legend = _draw_panel(ax, panel, history, present)
        _mark_warnings(ax, [w for w in warnings if w.code in panel.codes or w.code not in CLAIMED_CODES])
        _finish(ax, panel.title, last_step, legend=legend)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return png_bytes(fig)


_COLORS = ("#2f80ed", "#eb5757", "#27ae60", "#9b51e0")


def _draw_panel(ax: Any, panel: Panel, history: list[dict[str, Any]], present: set[str]) -> bool:
    """Draw the panel's series; True when it wants a legend. With a right axis (another unit) each
    axis is labelled in its series' colour instead: a legend cannot keep clear of two axes' lines."""
    colors = iter(_COLORS)
    left = [k for k in panel.left if k[0] in present]
    right = [k for k in panel.right if k[0] in present]
    for key, label in left:
        steps, values = _series(history, key)
        ax.plot(steps, values, label=label, color=next(colors), **_markers(steps))
    if panel.left_ylim:
        ax.set_ylim(*panel.left_ylim)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))  # KL ~1e-4: no 0.000125 tick labels
    if not right:
        return True
    twin = ax.twinx()
    for key, label in right:
        steps, values = _series(history, key)
        color = next(colors)
        twin.plot(steps, values, label=label, color=color, linestyle="--", **_markers(steps))
        twin.set_ylabel(label, color=color, fontsize=8)
    if panel.right_ylim:
        twin.set_ylim(*panel.right_ylim)
    twin.tick_params(labelsize=7)
    if len(left) > 1:
        return True
    if left:
        ax.set_ylabel(left[0][1], color=_COLORS[0], fontsize=8)
    return False


def _markers(steps: list[int]) -> dict[str, Any]:
    return {"marker": "o", "markersize": 3} if len(steps) <= 40 else {}  # dots help short runs, clutter long ones


def _mark_warnings(ax: Any, warnings: list[RunWarning]) -> None:
    for w in warnings:
        ax.axvline(w.step, color="#d35400", linestyle="--", linewidth=1, alpha=0.8)
        label = w.code.replace("_", " ")
        box = {"facecolor": "white", "alpha": 0.75, "edgecolor": "none", "pad": 1}  # readable over the curves
        ax.text(w.step, 0.97, label, transform=ax.get_xaxis_transform(), rotation=90, fontsize=7, color="#d35400", ha="right", va="top", bbox=box)


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#888")


def _finish(ax: Any, title: str, right: float, *, legend: bool = True) -> None:
    ax.set_xlim(-0.02 * right - 0.5, right * 1.02 + 0.5)  # one x range on every training panel: warnings line up
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best", framealpha=0.7)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1150px;margin:1.5em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em}h2{margin-top:1.4em;border-bottom:1px solid #ddd}
.status{color:#555;margin-top:0}.status.live::before{content:"● ";color:#27ae60}.status.done::before{content:"■ ";color:#888}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left;vertical-align:top}
table.summary th{background:#f6f7f9;font-weight:600;white-space:nowrap}table.warnings th{background:#fbeee6}
.pair{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;flex:1 1 480px}figcaption{color:#555;font-size:90%}
img{max-width:100%}"""
