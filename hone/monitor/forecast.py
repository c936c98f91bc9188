"""Where is the run heading? A saturating curve fitted to validation success, with intervals.

ScaleRL's curve for performance against compute, with the training step as the compute axis:

    R(C) − R0 = (A − R0) / (1 + (C_mid / C)^B)        C = steps since the first point

R0 is the first point's value (normally step 0, before training), held fixed, not fitted. A is the
ceiling (bounded to [0, 1]: a success rate; a fit below R0 is allowed and refused as "no rise"),
B > 0 the steepness and C_mid > 0 the step count of half the gain; 90% of the gain is reached at
C_mid · 9^(1/B). If the first point is not at step 0 (a resumed run, or logging that started late),
C counts steps from it, and `midpoint` and `step_90` are reported back in absolute steps.

    forecast = fit_forecast(steps, successes, n=len(validation_tasks))
    print(forecast.describe())            # "validation success heading to 0.82 (80% interval ...)"
    metrics.update(forecast.as_metrics())

A value that is NaN or None (a validation that produced no number) is dropped with its step; a value
outside [0, 1], or a step that is not finite, raises ValueError: the caller validates its inputs.

How, in numbered points:
1. Noise: each value is a success rate on `n` tasks, so its variance is p(1−p)/n, with p smoothed
   as (k+1)/(n+2) so that 0/n and n/n keep some noise. The fit weights each point by the inverse of
   that variance taken from the fitted curve (fit once with the observed values, once more with the
   curve). Without `n`, the noise is one unknown level, estimated from the residuals.
2. Fit without scipy: A enters the curve linearly, so for each (B, C_mid) the best A is a weighted
   least-squares ratio, clipped to [0, 1]. A grid over log B × log C_mid, then four zooms around the
   best cell, finds the best of all three; it cannot fail to converge, and it fits all bootstrap
   resamples at once (numpy only).
3. Intervals: parametric bootstrap. Each value (R0 included) is redrawn from its normal noise around
   the fitted curve, the curve is refitted, and the 10th and 90th percentiles of each figure give an
   80% interval (`INTERVAL`). If the residuals exceed the binomial noise (reduced chi-square > 1),
   the noise is scaled up to match, as curve_fit does without absolute sigma.
   What the intervals cover: the binomial sampling noise of each point, independently, and nothing
   else. Not the error in the curve's form: a run that does not follow this curve (an exponential
   rise, say) gets intervals around the wrong curve, which narrow as n grows; the chi-square scale
   widens them only as far as the residuals stray, which a smooth misfit barely does (a reviewer
   measured 35% coverage of the nominal 80% for an exponential rise on 256 tasks). Not the correlation from
   re-measuring the same validation tasks at every point: the same tasks are re-solved as the curve
   passes their difficulty, so the points' errors move together rather than cancel (measured: 67%
   coverage of the nominal 80%). Read them as a lower bound on the uncertainty.
4. Refusals: too few points; a decline (the last third of the points jointly below the rising curve,
   `DECLINE_Z`); a poor fit; no rise above R0 beyond noise; a curve that has not bent (the end of the
   run not in sight); a ceiling too uncertain to use. `ok=False` with `reason`, one sentence. The
   fitted figures are kept on a refused forecast when a fit was made (for plotting and debugging);
   trust them only when `ok`.
5. Levelled off: when the fit's own step_90 is at or before the last point, the run has levelled off
   and describe() says so, with `levelled_by` the first logged step at or after it. Its step_90
   interval is then kept only while its upper end is within `MAX_STEP_90_RATIO` × the steps run, and
   None beyond: a jump to a plateau between two logged steps leaves the steepness and midpoint
   unidentified below the spacing of the points, and the bootstrap's upper end then measures the
   grid's bounds, not the run (the ceiling interval, still required to be narrow, says how much gain
   could remain). A curve whose step_90 is past the last point is still refused as not bent while
   its interval reaches beyond `MAX_STEP_90_RATIO` × the steps run.

Knows lists of (step, value) and numpy; knows nothing about runs, models or metric files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

# ----------------------------------------------------------------------------- constants
INTERVAL = 0.8  # intervals are 80%: the 10th-90th percentiles, steady with a few hundred resamples
RESAMPLES = 200  # bootstrap refits; all 200 together take tens of milliseconds for 30 points
MIN_CEILING_GAIN = 0.02  # A − R0 below 2 points of success (1 task in 50) is no rise worth forecasting
MIN_GAIN_Z = 2.0  # the fitted gain at the last step must exceed 2 sd of its noise to count as a rise
MAX_REDUCED_CHI2 = 4.0  # residuals twice the binomial noise on average: the curve does not describe the run
POOR_FIT_P = 0.01  # ... and pure noise would give that chi-square less than 1% of the time (guards few points)
MAX_CEILING_WIDTH = 0.5  # an 80% interval over half the [0, 1] scale says nothing a user can act on
MAX_STEP_90_RATIO = 10.0  # 90% of the gain possibly beyond 10× the steps run: the curve has not bent yet
# A decline: E = Σ (value − curve) / sd over the last third of the points after R0 (DECLINE_SHARE, at
# least 1). A rising curve cannot follow a run that rose and is now falling, so those points lie below
# it jointly. E's spread for a run that does follow the curve is taken from the bootstrap (the same
# statistic on each resample around its own refit, so the part of the residuals the fit absorbs is
# accounted for), without the overdispersion scale (the fall itself inflates the chi-square).
# Refused when E < −DECLINE_Z × that spread. 2.5, not 2: measured over 100 runs each, 2 refused
# 4–8% of runs sitting on a flat plateau (the curve's form is only one of many that fit, the ceiling is
# clipped to [0, 1]: the statistic is not quite normal), 2.5 refuses 1–2% of them and 95% of a run
# that peaks at 0.7 by step 8 and falls to 0.46 by step 20, validated every step on 64 tasks.
DECLINE_Z = 2.5
DECLINE_SHARE = 1 / 3
MIN_END_SD = 0.1  # a floor on E's spread: guards the division when the refits absorb the tested points
# the grid of the fit: B from gentle to a near step; C_mid from well before the first point to far after
# the last (the far end is where a still-straight curve lands, and is then refused as not bent)
STEEPNESS_RANGE = (0.2, 10.0)
MIDPOINT_RANGE = (0.1, 1000.0)  # × the first and × the last step after R0
GRID = (25, 49)  # coarse cells in log B and log C_mid
ZOOMS = 4  # each zoom searches 7 × 7 points over the 3 × 3 cells around the best: cells shrink 3× a zoom
NINETY = 9.0  # 1 / (1 + (C_mid / C)^B) = 0.9  ⇔  C = C_mid · 9^(1/B)


@dataclass(frozen=True)
class Forecast:
    """A fit of the saturating curve to validation success, or a refusal that says why.

    Intervals are 80% (`INTERVAL`) percentile intervals from a parametric bootstrap, covering the
    binomial noise of each point only (see the module's point 3). `midpoint` and `step_90` are
    absolute steps. On a refusal after a fit, the figures are the fit's (so `predict`
    works), but only `ok` says they are worth reading; a refusal before any fit has them all None.
    """

    ok: bool
    reason: str  # "" when ok; otherwise one sentence a user reads
    points: int  # (step, value) points used
    r0: float | None
    ceiling: float | None  # A
    ceiling_interval: tuple[float, float] | None
    step_90: float | None  # step where 90% of the gain R0 → A is reached (the fit's point estimate)
    step_90_interval: tuple[float, float] | None  # None when levelled off with an uninformative interval
    steepness: float | None  # B
    midpoint: float | None  # step of half the gain
    origin: float = 0.0  # the first point's step: C = step − origin
    draws: np.ndarray | None = field(default=None, repr=False, compare=False)  # (RESAMPLES, 4): R0, A, B, C_mid
    # levelled off: `step_90` lies at or before the last point, and this is the first logged step at or
    # after it (the points cannot place it more finely); None while 90% of the gain is still ahead
    levelled_by: float | None = None

    def predict(self, steps: Sequence[float] | np.ndarray) -> np.ndarray:
        """The fitted curve at `steps` (R0 at and before the first point). Raises if no fit was made."""
        if self.ceiling is None:
            raise ValueError(f"no curve was fitted ({self.reason}), so there is nothing to predict")
        return _curve(self._since_origin(steps), self.r0, self.ceiling, self.steepness, self.midpoint - self.origin)

    def predict_interval(self, steps: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The 80% band of the curve at `steps`, from the same resamples as the intervals."""
        if self.draws is None:
            raise ValueError(f"no curve was fitted ({self.reason}), so there is no band to give")
        r0, a, b, c_mid = (self.draws[:, i : i + 1] for i in range(4))
        curves = _curve(self._since_origin(steps)[None, :], r0, a, b, c_mid)  # (RESAMPLES, len(steps))
        low, high = _percentiles(curves, axis=0)
        return low, high

    def as_metrics(self) -> dict[str, float]:
        """Flat numbers for metrics.jsonl, namespaced `forecast/`; only `forecast/ok` when refused.
        `forecast/levelled_off` is 1 or 0; `forecast/levelled_by` only when 1, and `step_90_low` and
        `step_90_high` only when there is a step_90 interval."""
        if not self.ok:
            return {"forecast/ok": 0.0}
        metrics = {
            "forecast/ok": 1.0,
            "forecast/interval_level": INTERVAL,
            "forecast/ceiling": self.ceiling,
            "forecast/ceiling_low": self.ceiling_interval[0],
            "forecast/ceiling_high": self.ceiling_interval[1],
            "forecast/step_90": self.step_90,
            "forecast/levelled_off": float(self.levelled_by is not None),
        }
        if self.levelled_by is not None:
            metrics["forecast/levelled_by"] = self.levelled_by
        if self.step_90_interval is not None:
            metrics["forecast/step_90_low"], metrics["forecast/step_90_high"] = self.step_90_interval
        return metrics

    def describe(self) -> str:
        """One console line."""
        if not self.ok:
            return f"no forecast yet: {self.reason}"
        a_low, a_high = self.ceiling_interval
        if self.levelled_by is not None:
            s_interval = "" if self.step_90_interval is None else " ({:.0f}–{:.0f})".format(*self.step_90_interval)
            return (
                f"validation success has levelled off at {self.ceiling:.2f} ({INTERVAL:.0%} interval {a_low:.2f}–{a_high:.2f}), "
                f"90% of the gain reached by step {self.levelled_by:g}{s_interval}"
            )
        s_low, s_high = self.step_90_interval
        return (
            f"validation success heading to {self.ceiling:.2f} ({INTERVAL:.0%} interval {a_low:.2f}–{a_high:.2f}); "
            f"90% of the gain by step {self.step_90:.0f} ({s_low:.0f}–{s_high:.0f})"
        )

    def _since_origin(self, steps: Sequence[float] | np.ndarray) -> np.ndarray:
        return np.maximum(np.asarray(steps, dtype=float) - self.origin, 0.0)


def fit_forecast(
    steps: Sequence[float], values: Sequence[float], n: int | None = None, *, min_points: int = 4, seed: int = 0
) -> Forecast:
    """Fit the curve to validation `values` (fractions in [0, 1]) logged at `steps`, each measured on
    `n` tasks (None: unknown, the noise is then estimated from the residuals and needs one more
    point). Deterministic for a given `seed`. A NaN or None value drops its point (and is not counted
    in `points`); a value outside [0, 1], a step that is not finite, or lists of unequal length raise
    ValueError, as do bad `n` and `min_points`; no other input raises."""
    if min_points < 4:
        raise ValueError(f"min_points={min_points}: the curve has three free parameters besides R0, so it needs at least 4 points")
    if n is not None and n < 1:
        raise ValueError(f"n={n}: the validation set size must be at least 1 (or None when unknown)")
    steps_arr, values_arr = _points(steps, values)
    points = len(steps_arr)

    # 1) enough points?
    needed = min_points + (n is None)
    if points < needed:
        unknown_n = " (one more than usual: without the validation set size, the noise comes from the points)" if n is None else ""
        return _refused(f"only {points} validation points so far; a forecast needs at least {needed}{unknown_n}", points)
    origin, r0 = float(steps_arr[0]), float(values_arr[0])
    c, y = steps_arr[1:] - origin, values_arr[1:]  # C since the first point; R0 is not fitted
    distinct = len(np.unique(c[c > 0]))
    if distinct < 3:
        return _refused(f"the points after the first cover only {distinct} distinct step{'s' * (distinct != 1)}; the curve needs 3", points)

    # 2) the fit, its noise and its chi-square
    dof = points - 4  # residuals of the points after R0, less A, B and C_mid
    ranges = (STEEPNESS_RANGE, (MIDPOINT_RANGE[0] * c[c > 0].min(), MIDPOINT_RANGE[1] * c.max()))
    if n is None:
        a, b, c_mid = _fit(c, y[None], np.array([r0]), np.ones_like(y), ranges)
        sigma = max(math.sqrt(np.sum((y - _curve(c, r0, a[0], b[0], c_mid[0])) ** 2) / dof), 1e-6)
        sd, sd0, scale, chi2 = np.full_like(y, sigma), sigma, 1.0, None
    else:
        a, b, c_mid = _fit(c, y[None], np.array([r0]), 1 / binomial_sd(y, n) ** 2, ranges)
        sd = binomial_sd(_curve(c, r0, a[0], b[0], c_mid[0]), n)  # weights from the curve, not the noisy values
        a, b, c_mid = _fit(c, y[None], np.array([r0]), 1 / sd**2, ranges)
        fitted = _curve(c, r0, a[0], b[0], c_mid[0])
        sd, sd0 = binomial_sd(fitted, n), float(binomial_sd(np.array(r0), n))
        chi2 = float(np.sum(((y - fitted) / sd) ** 2))
        scale = math.sqrt(max(1.0, chi2 / dof)) if dof > 0 else 1.0  # overdispersion widens the intervals
    a, b, c_mid = float(a[0]), float(b[0]), float(c_mid[0])
    fitted = _curve(c, r0, a, b, c_mid)

    # 3) parametric bootstrap: redraw every value around the curve, refit all at once
    rng = np.random.default_rng(seed)
    r0_draws = np.clip(r0 + scale * sd0 * rng.standard_normal(RESAMPLES), 0.0, 1.0)
    y_draws = np.clip(fitted + scale * sd * rng.standard_normal((RESAMPLES, len(y))), 0.0, 1.0)
    a_draws, b_draws, c_mid_draws = _fit(c, y_draws, r0_draws, 1 / sd**2, ranges)
    draws = np.stack([r0_draws, a_draws, b_draws, c_mid_draws], axis=1)
    step_90_draws = origin + c_mid_draws * NINETY ** (1 / b_draws)

    forecast = Forecast(
        ok=True, reason="", points=points, r0=r0, ceiling=a, ceiling_interval=_interval(a_draws),
        step_90=origin + c_mid * NINETY ** (1 / b), step_90_interval=_interval(step_90_draws),
        steepness=b, midpoint=origin + c_mid, origin=origin, draws=draws,
    )  # fmt: skip

    # 4) the refusals, most basic first (a decline before a poor fit: it says what the misfit is)
    last = float(c.max())
    levelled = c_mid * NINETY ** (1 / b) <= last  # 90% of the gain reached within the run, by the fit
    tested = max(1, math.ceil(DECLINE_SHARE * len(y)))
    end = _end_sum(y, fitted, sd, tested)
    end_draws = _end_sum(y_draws, _curve(c, r0_draws[:, None], a_draws[:, None], b_draws[:, None], c_mid_draws[:, None]), sd, tested)
    null_sd = max(float(np.std(end_draws)) / scale, MIN_END_SD)
    decline_z = float(end) / null_sd
    reason = ""
    if decline_z < -DECLINE_Z:
        below = float(np.mean((fitted - y)[-tested:]))
        reason = (
            f"validation success is falling: its last {tested} {'points lie' if tested != 1 else 'point lies'} {below:.2f} below "
            f"the rising curve fitted to the run, on average (jointly {decline_z:.1f} sd)"
        )
    elif chi2 is not None and dof > 0 and chi2 / dof > MAX_REDUCED_CHI2 and _chi2_sf(chi2, dof) < POOR_FIT_P:
        reason = (
            f"the curve does not fit: the points stray from it {math.sqrt(chi2 / dof):.1f}× as far as "
            f"validation noise on {n} tasks explains"
        )
    else:
        gain = _curve(last, r0, a, b, c_mid) - r0
        gain_draws = _curve(last, r0_draws, a_draws, b_draws, c_mid_draws) - r0_draws
        if gain < MIN_GAIN_Z * float(np.std(gain_draws)) or a - r0 < MIN_CEILING_GAIN:
            reason = f"validation success has not risen above its step-{origin:g} value by more than its noise"
        elif not levelled and forecast.step_90_interval[1] - origin > MAX_STEP_90_RATIO * last:
            reason = f"the curve has not bent yet; 90% of the gain may lie beyond {MAX_STEP_90_RATIO:g}× the {last:g} steps run so far"
        elif forecast.ceiling_interval[1] - forecast.ceiling_interval[0] > MAX_CEILING_WIDTH:
            low, high = forecast.ceiling_interval
            reason = f"the ceiling is too uncertain to use: its {INTERVAL:.0%} interval {low:.2f}–{high:.2f} is wider than {MAX_CEILING_WIDTH:g}"
    if reason:
        return replace(forecast, ok=False, reason=reason)
    if levelled:
        reached = float(steps_arr[steps_arr >= forecast.step_90 - 1e-9 * max(1.0, abs(forecast.step_90))][0])
        informative = forecast.step_90_interval[1] - origin <= MAX_STEP_90_RATIO * last
        return replace(forecast, step_90_interval=forecast.step_90_interval if informative else None, levelled_by=reached)
    return forecast


# ----------------------------------------------------------------------------- the curve and its fit
def _curve(c, r0, a, b, c_mid):
    """R0 + (A − R0) / (1 + (C_mid / C)^B), written as a logistic in log C (0 at C = 0, no overflow)."""
    with np.errstate(divide="ignore"):
        log_c = np.log(np.asarray(c, dtype=float))
    return r0 + (a - r0) * _shape(log_c, np.log(b), np.log(c_mid))


def _shape(log_c, log_b, log_c_mid):
    """1 / (1 + (C_mid / C)^B) = sigmoid(B · (log C − log C_mid)); tanh keeps it finite everywhere."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.exp(log_b) * (log_c - log_c_mid)))


def _fit(c: np.ndarray, y: np.ndarray, r0: np.ndarray, w: np.ndarray, ranges) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least squares of the curve for each row of `y` (R, m) with its own R0 (R,): A, B,
    C_mid, each (R,). Grid over (log B, log C_mid), A solved exactly in each cell, then zooms."""
    with np.errstate(divide="ignore"):
        log_c = np.log(c)  # -inf at C = 0: a repeat of the first step, shape 0
    gain = y - r0[:, None]  # (R, m): what the shape times (A − R0) must explain
    bounds = np.log(np.array(ranges))  # [[log B lo, hi], [log C_mid lo, hi]]

    # 1) coarse grid, shared by every row
    axes = [np.linspace(lo, hi, k) for (lo, hi), k in zip(bounds, GRID)]
    cell = np.array([axis[1] - axis[0] for axis in axes])
    log_b, log_c_mid = (g.ravel() for g in np.meshgrid(*axes, indexing="ij"))  # (K,)
    shapes = _shape(log_c, log_b[:, None], log_c_mid[:, None])[None]  # (1, K, m)
    best, d = _best_in(shapes, gain, r0, w)
    log_b, log_c_mid = log_b[best], log_c_mid[best]  # (R,)

    # 2) zooms: 7 × 7 points over the 3 × 3 cells around each row's best
    offsets = np.linspace(-1.0, 1.0, 7)
    local_b, local_c = (g.ravel() for g in np.meshgrid(offsets, offsets, indexing="ij"))  # (49,)
    rows = np.arange(len(y))
    for _ in range(ZOOMS):
        lb = np.clip(log_b[:, None] + cell[0] * local_b, *bounds[0])  # (R, 49)
        lc = np.clip(log_c_mid[:, None] + cell[1] * local_c, *bounds[1])
        shapes = _shape(log_c, lb[..., None], lc[..., None])  # (R, 49, m)
        best, d = _best_in(shapes, gain, r0, w)
        log_b, log_c_mid = lb[rows, best], lc[rows, best]
        cell = cell / 3

    d = d[rows, best]
    return r0 + d, np.exp(log_b), np.exp(log_c_mid)


def _best_in(shapes: np.ndarray, gain: np.ndarray, r0: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For shapes (R|1, K, m): each row's best cell (R,) and the gain A − R0 of every cell (R, K)."""
    s_gz = (shapes @ (w * gain)[:, :, None])[..., 0]  # (R, K): Σ w g z
    s_gg = np.maximum(np.sum(w * shapes**2, axis=-1), 1e-300)  # (R|1, K): Σ w g²
    d = np.clip(s_gz / s_gg, -r0[:, None], 1.0 - r0[:, None])  # A = R0 + d in [0, 1]; exact: 1-D quadratic
    sse_less_const = d**2 * s_gg - 2 * d * s_gz  # Σ w (z − d g)² without Σ w z², which is the same per row
    return np.argmin(sse_less_const, axis=1), d


# ----------------------------------------------------------------------------- noise and statistics
def _end_sum(y: np.ndarray, fitted: np.ndarray, sd: np.ndarray, tested: int) -> np.ndarray:
    """Σ (y − fitted) / sd over the last `tested` points, along the last axis."""
    return np.sum(((y - fitted) / sd)[..., -tested:], axis=-1)


def binomial_sd(p: np.ndarray, n: int) -> np.ndarray:
    """sd of a success rate on n tasks, p smoothed to (k+1)/(n+2) so 0/n and n/n keep some noise."""
    smoothed = (np.asarray(p, dtype=float) * n + 1) / (n + 2)
    return np.sqrt(smoothed * (1 - smoothed) / n)


def _chi2_sf(x: float, dof: int) -> float:
    """P(χ²_dof ≥ x) for integer dof, by the closed forms (no scipy)."""
    half = x / 2
    if dof % 2 == 0:
        term, total = 1.0, 1.0  # e^{-x/2} Σ_{j < dof/2} (x/2)^j / j!
        for j in range(1, dof // 2):
            term *= half / j
            total += term
        return math.exp(-half) * total
    # odd: erfc(√(x/2)) + √(2x/π) e^{-x/2} Σ_{j=1}^{(dof-1)/2} x^{j-1} / (3·5···(2j−1))
    term, total = math.sqrt(2 * x / math.pi), 0.0
    for j in range(1, (dof + 1) // 2):
        total += term
        term *= x / (2 * j + 1)
    return math.erfc(math.sqrt(half)) + math.exp(-half) * total


def _percentiles(draws: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    tail = 100 * (1 - INTERVAL) / 2
    low, high = np.percentile(draws, [tail, 100 - tail], axis=axis)
    return low, high


def _interval(draws: np.ndarray) -> tuple[float, float]:
    low, high = _percentiles(draws)
    return float(low), float(high)


def _points(steps: Sequence[float], values: Sequence[float | None]) -> tuple[np.ndarray, np.ndarray]:
    """The points as float arrays sorted by step, those whose value is NaN or None dropped (a
    validation that produced no number); a user's mistake raises with one sentence."""
    steps_arr, values_arr = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)  # None → NaN
    if steps_arr.shape != values_arr.shape or steps_arr.ndim != 1:
        raise ValueError(f"steps and values must be two flat lists of one length; got shapes {steps_arr.shape} and {values_arr.shape}")
    kept = ~np.isnan(values_arr)
    steps_arr, values_arr = steps_arr[kept], values_arr[kept]
    if not (np.all(np.isfinite(steps_arr)) and np.all((values_arr >= 0) & (values_arr <= 1))):
        raise ValueError("steps must be finite and values success rates in [0, 1] (or NaN or None, dropped)")
    order = np.argsort(steps_arr, kind="stable")
    return steps_arr[order], values_arr[order]


def _refused(reason: str, points: int) -> Forecast:
    return Forecast(False, reason, points, None, None, None, None, None, None, None)
