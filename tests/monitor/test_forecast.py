import math
import time

import numpy as np
import pytest

from hone.monitor.forecast import DECLINE_Z, INTERVAL, MAX_CEILING_WIDTH, STEEPNESS_RANGE, _chi2_sf, _fit, fit_forecast

# The run the tests forecast: ScaleRL's curve with A = 0.8, R0 = 0.2, C_mid = 10, B = 1.5, validated on
# 100 tasks every 4 steps up to step 40. Its 90% point is C_mid · 9^(1/B) = 10 · 9^(2/3) ≈ 43.3.
CEILING, R0, MIDPOINT, STEEPNESS, N = 0.8, 0.2, 10.0, 1.5, 100
STEPS = np.arange(0, 41, 4)
STEP_90 = MIDPOINT * 9 ** (1 / STEEPNESS)


def true_curve(steps) -> np.ndarray:
    c = np.asarray(steps, dtype=float)
    with np.errstate(divide="ignore"):
        return R0 + (CEILING - R0) / (1 + (MIDPOINT / c) ** STEEPNESS)  # c = 0: (10/0)^B = inf → R0


def noisy_run(seed: int) -> np.ndarray:
    """Validation success of one synthetic run: each point is k/100 with k binomial around the curve."""
    return np.random.default_rng(seed).binomial(N, true_curve(STEPS)) / N


# Two runs the curve cannot describe as it stands, validated at every step 0..20:
EVERY_STEP = np.arange(0, 21)


def peak_then_fall(seed: int, n: int) -> np.ndarray:
    """Rises 0.2 → 0.7 by step 8, then falls 0.02 a step to 0.46 at step 20 (over-training, collapse)."""
    p = np.where(EVERY_STEP <= 8, 0.2 + 0.5 * EVERY_STEP / 8, 0.7 - 0.02 * (EVERY_STEP - 8))
    return np.random.default_rng(seed).binomial(n, p) / n


def jump_to_plateau(seed: int, n: int) -> np.ndarray:
    """0.2 at step 0, then 0.6 flat from step 1: the whole rise happened between two logged steps."""
    return np.random.default_rng(seed).binomial(n, np.where(EVERY_STEP == 0, 0.2, 0.6)) / n


# --- a forecast of a known curve -------------------------------------------------------------------


def test_a_known_curve_is_forecast_with_the_true_ceiling_inside_its_interval():
    forecast = fit_forecast(STEPS, noisy_run(0), n=N)
    assert forecast.ok, forecast.reason
    assert forecast.points == 11 and forecast.r0 == 0.21  # the step-0 value, as drawn, is held fixed
    low, high = forecast.ceiling_interval
    assert low <= CEILING <= high
    assert low <= forecast.ceiling <= high
    # 90% of the gain at step 43.3; the run stops at 40, so within a quarter of that is near
    assert abs(forecast.step_90 - STEP_90) < 0.25 * STEP_90
    assert forecast.step_90_interval[0] <= STEP_90 <= forecast.step_90_interval[1]
    assert forecast.step_90 == pytest.approx(forecast.midpoint * 9 ** (1 / forecast.steepness))
    # the fitted curve stays within 0.05 of the true one over the steps run (point noise is sd 0.05)
    over_the_run = np.arange(0, 41)
    assert np.max(np.abs(forecast.predict(over_the_run) - true_curve(over_the_run))) < 0.05


def test_the_band_of_the_curve_holds_the_fitted_curve_and_starts_near_r0():
    forecast = fit_forecast(STEPS, noisy_run(0), n=N)
    steps = np.array([0, 4, 20, 40, 80])
    low, high = forecast.predict_interval(steps)
    fitted = forecast.predict(steps)
    assert np.all(low <= fitted + 1e-9) and np.all(fitted <= high + 1e-9)
    # at step 0 the band is R0's own noise: sd √(0.21·0.79/100) ≈ 0.04, so ±1.28 sd ≈ ±0.05
    assert forecast.predict([0])[0] == forecast.r0
    assert 0.05 < high[0] - low[0] < 0.15
    assert np.all(high[1:] - low[1:] > 0)


def test_the_ceiling_interval_covers_the_true_ceiling_in_most_synthetic_runs():
    fits = [fit_forecast(STEPS, noisy_run(seed), n=N) for seed in range(30)]
    covered = sum(f.ceiling_interval[0] <= CEILING <= f.ceiling_interval[1] for f in fits)
    # measured 26 of 30 (87%) for the 80% interval; over seeds 0..99 it was 92 of 100 (the bound A ≤ 1
    # makes the upper end generous). 21 of 30 leaves room for noise and still fails a broken interval.
    assert covered >= 21, f"the {INTERVAL:.0%} interval covered the true ceiling in only {covered} of 30 runs"
    # a run that truly follows the curve is never refused as a poor fit or a decline (a false alarm)
    assert not [f.reason for f in fits if "does not fit" in f.reason or "is falling" in f.reason]


def test_without_the_validation_set_size_the_noise_comes_from_the_residuals():
    forecast = fit_forecast(STEPS, noisy_run(0))
    assert forecast.ok, forecast.reason
    assert forecast.ceiling_interval[0] <= CEILING <= forecast.ceiling_interval[1]
    # ... which takes one point more than with n
    four = fit_forecast([0, 4, 8, 12], [0.2, 0.4, 0.55, 0.6])
    assert not four.ok and "at least 5" in four.reason


def test_a_run_whose_first_point_is_not_at_step_0_counts_steps_from_it():
    at_zero = fit_forecast(STEPS, noisy_run(0), n=N)
    shifted = fit_forecast(STEPS + 100, noisy_run(0), n=N)
    assert shifted.ok and shifted.ceiling == pytest.approx(at_zero.ceiling)
    assert shifted.step_90 == pytest.approx(at_zero.step_90 + 100)
    assert shifted.midpoint == pytest.approx(at_zero.midpoint + 100)
    # before the first point the curve is R0
    assert shifted.predict([50, 100]) == pytest.approx([shifted.r0, shifted.r0])


# --- refusals ---------------------------------------------------------------------------------------


def test_too_few_points_are_refused_saying_how_many_there_are_and_are_needed():
    forecast = fit_forecast([0, 4, 8], [0.2, 0.4, 0.5], n=N)
    assert not forecast.ok
    assert forecast.reason == "only 3 validation points so far; a forecast needs at least 4"
    assert forecast.ceiling is None and forecast.draws is None
    with pytest.raises(ValueError, match="no curve was fitted"):
        forecast.predict([10])
    # points at too few distinct steps are as good as too few points
    repeated = fit_forecast([0, 4, 4, 4, 4], [0.2, 0.5, 0.6, 0.5, 0.5], n=N)
    assert repeated.reason == "the points after the first cover only 1 distinct step; the curve needs 3"


def test_a_flat_run_is_refused_as_no_rise_above_step_0():
    # drawn at a constant 0.3 on 100 tasks: wobbles of ±0.05 are noise, not a trend
    flat = [0.30, 0.27, 0.25, 0.39, 0.30, 0.25, 0.31, 0.33, 0.31, 0.36, 0.22]
    forecast = fit_forecast(STEPS, flat, n=N)
    assert not forecast.ok
    assert forecast.reason == "validation success has not risen above its step-0 value by more than its noise"
    assert forecast.ceiling is not None  # the fit is kept for plotting, but not trusted


def test_a_falling_run_is_refused_as_no_rise():
    falling = np.linspace(0.6, 0.2, len(STEPS)).round(2)
    forecast = fit_forecast(STEPS, falling, n=N)
    assert not forecast.ok and "has not risen" in forecast.reason
    assert 0.0 <= forecast.ceiling < forecast.r0  # A may fall below R0 but stays a success rate


def test_a_zigzag_is_refused_as_a_poor_fit():
    # rising on the whole, but alternating by 0.4 where 100 tasks give noise of sd 0.05
    zigzag = [0.2, 0.6, 0.3, 0.7, 0.35, 0.75, 0.4, 0.8, 0.45, 0.8, 0.5]
    forecast = fit_forecast(STEPS, zigzag, n=N)
    assert not forecast.ok
    assert forecast.reason.startswith("the curve does not fit: the points stray from it")
    assert forecast.reason.endswith("as far as validation noise on 100 tasks explains")


def test_a_straight_rising_line_is_refused_as_not_bent_yet():
    line = (0.2 + 0.005 * STEPS).round(2)  # 0.2 → 0.4 over 40 steps, no sign of slowing
    forecast = fit_forecast(STEPS, line, n=N)
    assert not forecast.ok
    assert forecast.reason == "the curve has not bent yet; 90% of the gain may lie beyond 10× the 40 steps run so far"
    assert forecast.step_90 > 400 and forecast.step_90_interval[1] > 400  # the fit itself puts it far out
    assert forecast.levelled_by is None


def test_a_run_that_peaks_and_falls_is_refused_as_falling():
    # a rising curve fitted to it levels off near 0.6 and forecasts that: measured before the decline
    # test, 60 of 60 such runs on 64 tasks were 'ok'; with it, 19 of these 20 are refused (and 58 of 60)
    fits = [fit_forecast(EVERY_STEP, peak_then_fall(seed, 64), n=64) for seed in range(20)]
    falling = [f for f in fits if f.reason.startswith("validation success is falling: its last 7 points lie ")]
    assert len(falling) >= 18, [f.reason or f.describe() for f in fits]
    assert all(f.reason.endswith(" sd)") and f.ceiling is not None for f in falling)  # the fit is kept
    # the reason gives the mean drop below the curve (the true drop over steps 14..20 averages ~0.07)
    drops = [float(f.reason.split(" lie ")[1].split(" ")[0]) for f in falling]
    assert 0.03 < np.median(drops) < 0.12
    # on 256 tasks the fall is plain: it is called a fall, not only a poor fit
    assert fit_forecast(EVERY_STEP, peak_then_fall(0, 256), n=256).reason.startswith("validation success is falling")
    # and without n, the noise taken from the residuals, it is still seen
    assert fit_forecast(EVERY_STEP, peak_then_fall(0, 256)).reason.startswith("validation success is falling")


def test_a_run_that_has_levelled_off_is_not_refused_as_falling():
    # flat at 0.6 from step 1 is where the decline statistic sits at its boundary: the false alarms
    # there were measured at 1–2% with DECLINE_Z = 2.5 (4–8% at 2)
    assert DECLINE_Z == 2.5
    fits = [fit_forecast(EVERY_STEP, jump_to_plateau(seed, 64), n=64) for seed in range(40)]
    assert sum("is falling" in f.reason for f in fits) <= 2


def test_a_jump_to_a_plateau_is_forecast_as_levelled_off():
    # before: 50 of 60 such runs on 20 tasks were refused as 'not bent yet', since below the first step
    # after R0 the steepness and midpoint are free and the bootstrap's step_90 reached the grid's edge
    fits = [fit_forecast(EVERY_STEP, jump_to_plateau(seed, 20), n=20) for seed in range(20)]
    levelled = [f for f in fits if f.ok and f.levelled_by is not None]
    assert len(levelled) >= 15, [f.reason for f in fits if not f.ok]  # measured 18 of 20
    assert sum("not bent" in f.reason for f in fits) <= 2  # measured 1: a fit that chose a slow creep
    for f in levelled:
        assert abs(f.ceiling - 0.6) < 0.1
        assert f.step_90 <= f.levelled_by <= 20 and f.levelled_by in EVERY_STEP  # a logged step
    covered = sum(f.ceiling_interval[0] <= 0.6 <= f.ceiling_interval[1] for f in levelled)
    assert covered >= 0.7 * len(levelled)  # measured 16 of 18 for the 80% interval
    # the 90% point fell between steps 0 and 1; its interval, reaching the grid's edge, is not reported
    first = fits[0]
    assert first.levelled_by == 1 and first.step_90 < 1 and first.step_90_interval is None
    (a_low, a_high) = first.ceiling_interval
    assert first.describe() == (
        f"validation success has levelled off at {first.ceiling:.2f} (80% interval {a_low:.2f}–{a_high:.2f}), "
        "90% of the gain reached by step 1"
    )
    metrics = first.as_metrics()
    assert metrics["forecast/levelled_off"] == 1.0 and metrics["forecast/levelled_by"] == 1.0
    assert "forecast/step_90_low" not in metrics and "forecast/step_90_high" not in metrics
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())


def test_a_levelled_off_run_keeps_a_step_90_interval_that_says_something():
    # the known curve fitted on seed 0 puts its 90% point at ~38, before the last step (40): levelled
    # off, and its bootstrap interval (within 10× the steps run) is kept and shown
    forecast = fit_forecast(STEPS, noisy_run(0), n=N)
    assert forecast.ok and forecast.step_90 < 40 and forecast.levelled_by == 40
    (a_low, a_high), (s_low, s_high) = forecast.ceiling_interval, forecast.step_90_interval
    assert s_low <= STEP_90 <= s_high < 400
    assert forecast.describe() == (
        f"validation success has levelled off at {forecast.ceiling:.2f} (80% interval {a_low:.2f}–{a_high:.2f}), "
        f"90% of the gain reached by step 40 ({s_low:.0f}–{s_high:.0f})"
    )
    assert forecast.as_metrics()["forecast/step_90_high"] == s_high


def test_a_ceiling_too_uncertain_to_use_is_refused():
    # bending, but on 10 tasks a point's noise is sd ≈ 0.15: the ceiling could be anywhere from 0.45 to 1
    forecast = fit_forecast([0, 2, 4, 6, 8, 10], [0.2, 0.3, 0.45, 0.5, 0.55, 0.55], n=10)
    assert not forecast.ok
    assert forecast.reason.startswith("the ceiling is too uncertain to use: its 80% interval")
    assert forecast.ceiling_interval[1] - forecast.ceiling_interval[0] > MAX_CEILING_WIDTH


def test_bad_input_raises_with_one_sentence():
    with pytest.raises(ValueError, match="one length"):
        fit_forecast([0, 1, 2, 3], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        fit_forecast([0, 1, 2, 3], [0.1, 0.2, 1.3, 0.4])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        fit_forecast([0, 1, 2, 3], [0.1, 0.2, math.inf, 0.4])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        fit_forecast([0, 1, 2, 3], [0.1, 0.2, -0.1, 0.4])
    with pytest.raises(ValueError, match="steps must be finite"):
        fit_forecast([0, 1, math.nan, 3], [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="validation set size"):
        fit_forecast(STEPS, noisy_run(0), n=0)
    with pytest.raises(ValueError, match="at least 4 points"):
        fit_forecast(STEPS, noisy_run(0), min_points=3)


def test_nan_and_none_values_are_dropped_with_their_points():
    values = noisy_run(0)
    with_gaps = list(values[:3]) + [math.nan] + list(values[3:6]) + [None] + list(values[6:])
    steps = list(STEPS[:3]) + [10] + list(STEPS[3:6]) + [22] + list(STEPS[6:])
    assert fit_forecast(steps, with_gaps, n=N) == fit_forecast(STEPS, values, n=N)
    assert fit_forecast(np.array(steps), np.array(with_gaps, dtype=float), n=N).points == 11
    # a NaN at the first point: the next one becomes R0
    shifted = fit_forecast([0] + list(STEPS + 1), [math.nan] + list(values), n=N)
    assert shifted.r0 == values[0] and shifted.origin == 1
    # nothing but gaps is a refusal, not an error
    assert fit_forecast([0, 1, 2, 3], [None, math.nan, None, math.nan], n=N).reason == (
        "only 0 validation points so far; a forecast needs at least 4"
    )


def test_no_values_a_training_loop_can_log_make_the_fit_raise():
    rng = np.random.default_rng(0)
    for _ in range(60):  # duplicate steps, all-0 and all-1 runs, gaps, tiny and huge n, no n
        m = int(rng.integers(0, 12))
        steps = np.sort(rng.choice([0, 0, 1, 2, 3, 5, 8, 13, 100, 10**6], m))
        values = rng.choice(np.array([0.0, 1.0, 0.5, rng.random(), math.nan, None], dtype=object), m).tolist()
        n = [None, 1, 2, 10, 100, 10**6][int(rng.integers(0, 6))]
        forecast = fit_forecast(steps, values, n=n)
        forecast.describe(), forecast.as_metrics()


# --- what a user and metrics.jsonl see ----------------------------------------------------------------


def test_as_metrics_gives_flat_namespaced_numbers_and_only_ok_when_refused():
    forecast = fit_forecast(STEPS, noisy_run(2), n=N)  # seed 2: 90% of the gain still ahead, at ~45
    assert forecast.ok and forecast.levelled_by is None
    metrics = forecast.as_metrics()
    assert set(metrics) == {
        "forecast/ok", "forecast/interval_level", "forecast/ceiling", "forecast/ceiling_low", "forecast/ceiling_high",
        "forecast/step_90", "forecast/step_90_low", "forecast/step_90_high", "forecast/levelled_off",
    }  # fmt: skip
    assert metrics["forecast/ok"] == 1.0 and metrics["forecast/interval_level"] == 0.8
    assert metrics["forecast/levelled_off"] == 0.0
    assert metrics["forecast/ceiling_low"] <= metrics["forecast/ceiling"] <= metrics["forecast/ceiling_high"]
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert fit_forecast([0, 4], [0.2, 0.3], n=N).as_metrics() == {"forecast/ok": 0.0}


def test_describe_is_one_line_with_the_figures_or_the_reason():
    forecast = fit_forecast(STEPS, noisy_run(2), n=N)
    (a_low, a_high), (s_low, s_high) = forecast.ceiling_interval, forecast.step_90_interval
    assert forecast.describe() == (
        f"validation success heading to {forecast.ceiling:.2f} (80% interval {a_low:.2f}–{a_high:.2f}); "
        f"90% of the gain by step {forecast.step_90:.0f} ({s_low:.0f}–{s_high:.0f})"
    )
    assert fit_forecast([0, 4], [0.2, 0.3], n=N).describe() == (
        "no forecast yet: only 2 validation points so far; a forecast needs at least 4"
    )


def test_the_same_points_give_the_same_forecast_and_band():
    first, second = fit_forecast(STEPS, noisy_run(0), n=N), fit_forecast(STEPS, noisy_run(0), n=N)
    assert first == second
    assert np.array_equal(first.draws, second.draws)
    assert all(np.array_equal(a, b) for a, b in zip(first.predict_interval(STEPS), second.predict_interval(STEPS)))
    # the seed is the only source of randomness: another one moves the intervals, not the fit
    other = fit_forecast(STEPS, noisy_run(0), n=N, seed=1)
    assert other.ceiling == first.ceiling and other.ceiling_interval != first.ceiling_interval


def test_a_forecast_of_30_points_takes_well_under_a_second():
    steps = np.arange(0, 30)
    values = np.random.default_rng(0).binomial(N, true_curve(steps)) / N
    start = time.perf_counter()
    fit_forecast(steps, values, n=N)
    assert time.perf_counter() - start < 0.5  # measured ~0.02 s; 200 refits at once


def test_the_grid_and_zoom_fit_is_as_good_as_a_dense_brute_force_search():
    # a noisy run on 30 tasks, with the ceiling pressed against its bound: the hard case for a fit
    c = np.arange(1.0, 7.0)
    y, r0, w = np.array([0.2, 0.6, 0.5, 0.467, 0.867, 0.833]), 0.233, np.full(6, 1 / 0.08**2)
    ranges = (STEEPNESS_RANGE, (0.1, 6000.0))
    a, b, c_mid = (float(x[0]) for x in _fit(c, y[None], np.array([r0]), w, ranges))

    def sse(a, b, c_mid):
        return np.sum(w * (y - r0 - (a - r0) / (1 + (c_mid / c) ** b)) ** 2, axis=-1)

    # every (A, B, C_mid) on a 101 × 120 × 160 grid over the same bounds, 2 million curves
    grid_a = np.linspace(0, 1, 101)[:, None, None, None]
    grid_b = np.exp(np.linspace(*np.log(STEEPNESS_RANGE), 120))[None, :, None, None]
    grid_c = np.exp(np.linspace(*np.log(ranges[1]), 160))[None, None, :, None]
    assert sse(a, b, c_mid) <= sse(grid_a, grid_b, grid_c).min() + 1e-9


def test_the_chi_square_tail_matches_tabulated_95_percent_points():
    # P(χ²_k ≥ x) = 0.05 at these tabulated x, odd and even k (the closed forms differ)
    for dof, x in [(1, 3.841), (2, 5.991), (3, 7.815), (4, 9.488), (5, 11.070), (10, 18.307)]:
        assert _chi2_sf(x, dof) == pytest.approx(0.05, abs=2e-4)
    assert _chi2_sf(0.0, 3) == pytest.approx(1.0)
