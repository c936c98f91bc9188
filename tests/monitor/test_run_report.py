"""The run report page, opened in a real headless Chromium: no script errors, every plot drawn,
the warning and its advice on the page, the live page refreshing itself and the final one not."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from hone.monitor.forecast import fit_forecast
from hone.monitor.run_report import write_run_report

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package, installed by `make setup`; never playwright's download
# the network here is closed: without the background-networking flags Chromium keeps retrying refused connections
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADVICE = "raise the sampling temperature or add an entropy bonus"
VALIDATION_STEPS = (0, 3, 6, 9, 12)
VALIDATION_N = 256  # enough tasks for the forecast to commit after 5 points (with 64 it waits)


def saturating(step: float) -> float:
    return 0.2 + 0.55 * (1 - math.exp(-step / 4))  # 20% before training, heading for 75%


def realistic_history(steps: int = 12) -> list[dict]:
    history = [{"step": 0, **validation(0)}]  # the baseline, measured before any training
    for step in range(1, steps + 1):
        record = {
            "step": step,
            "reward/mean": 0.1 + 0.6 * (1 - math.exp(-step / 5)),
            "reward/std": 0.3,
            "success/rate": 0.05 + 0.6 * (1 - math.exp(-step / 5)),
            "train/entropy": 1.4 * math.exp(-step / 6),
            "train/kl_sampler_trainer_k3": 1e-4 * (1 + step % 3),
            "train/logprob_abs_diff": 0.01 + 0.002 * step,
            "health/reply_tokens": 90 + 8 * step,
            "health/truncated": min(1.0, 0.01 * step),
            "health/zero_variance_groups": 0.1 + 0.03 * step,
            "health/diversity": 0.8 - 0.04 * step,
            "health/tool_call_validity": 0.85 + 0.01 * step,
            "judge/agreement": 0.9,
            "time/step": 4.2,
        }
        if step in VALIDATION_STEPS:
            record.update(validation(step))
            record["time/validation"] = 6.0
        if step == 7:
            record["warnings"] = [{"code": "entropy_collapse", "message": "policy entropy fell to 0.43 nats", "advice": ADVICE}]
        history.append(record)
    return history


def validation(step: int) -> dict:
    p = saturating(step)
    half = 1.96 * math.sqrt(p * (1 - p) / VALIDATION_N)  # normal-approximation 95% CI
    return {"validation/success": p, "validation/ci_low": p - half, "validation/ci_high": p + half, "validation/n": VALIDATION_N}


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module; without one, the sentence that says why, so that each
    test fails with it (a missing browser is a broken set-up: it must not pass as a skip)."""
    if not CHROMIUM.exists():
        yield f"headless Chromium not found at {CHROMIUM}: run `make setup`, which installs Debian's chromium"
        return
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        yield "the playwright package is missing: run `make setup`, which installs the test extra"
        return
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_report(browser, path: Path) -> dict:
    """Load the page; return its text, its images (alt, complete, naturalWidth), refresh meta and errors."""
    if isinstance(browser, str):
        pytest.fail(browser, pytrace=False)
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(path.as_uri(), wait_until="load")
    images = page.evaluate("() => Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
    refresh = page.locator('meta[http-equiv="refresh"]')
    seen = {
        "text": page.inner_text("body"),
        "images": images,
        "refresh": refresh.get_attribute("content") if refresh.count() else None,
        "errors": errors,
    }
    page.close()
    return seen


def assert_every_image_drawn(seen: dict) -> None:
    assert seen["images"], "the page has no plots"
    for alt, complete, width in seen["images"]:
        assert complete and width > 0, f"plot '{alt}' did not load (complete={complete}, naturalWidth={width})"


@pytest.mark.parametrize("live", [True, False], ids=["live", "final"])
def test_report_page_draws_every_plot_and_shows_the_warning_with_its_advice(browser, tmp_path, live):
    history = realistic_history()
    path = write_run_report(tmp_path, history, title="inbox agent", live=live)
    assert path == tmp_path / "report.html"
    seen = open_report(browser, path)

    assert seen["errors"] == []
    assert_every_image_drawn(seen)
    assert [alt for alt, _, _ in seen["images"]] == ["reward per step", "validation success", "health panels"]
    assert "entropy_collapse" in seen["text"] and ADVICE in seen["text"]
    forecast = fit_forecast(list(VALIDATION_STEPS), [saturating(s) for s in VALIDATION_STEPS], VALIDATION_N)
    assert forecast.ok, forecast.reason  # so the page drew the forecast curve and band
    assert forecast.describe() in seen["text"]
    # best validation: 75% - 55% e^-3 = 72.3%, reached at the last validation, step 12
    assert f"{saturating(12):.1%}" in seen["text"] and "at step 12" in seen["text"]
    if live:
        assert seen["refresh"] == "15"
        assert "run in progress" in seen["text"] and "refreshes every 15 s" in seen["text"]
    else:
        assert seen["refresh"] is None
        assert "run finished" in seen["text"] and "refreshes" not in seen["text"]


def test_a_run_without_a_finished_step_gets_a_page_that_says_so(browser, tmp_path):
    seen = open_report(browser, write_run_report(tmp_path, [], title="fresh run", live=True, refresh_seconds=5))
    assert seen["errors"] == []
    assert "has not finished a step yet" in seen["text"]
    assert seen["refresh"] == "5" and seen["images"] == []


def test_missing_values_a_single_point_and_a_baseline_alone_render(browser, tmp_path):
    holes = realistic_history()
    for i, record in enumerate(holes):
        for key in list(record)[1:]:
            if (i + len(key)) % 3 == 0 and key != "warnings":
                record[key] = None  # NaN is written as null in metrics.jsonl
    only_reward = [{"step": 1, "reward/mean": 0.4, "train/entropy": None}]
    baseline_only = [{"step": 0, **validation(0)}]
    cases = {"holes": holes, "only_reward": only_reward, "baseline_only": baseline_only}
    for name, history in cases.items():
        seen = open_report(browser, write_run_report(tmp_path / name, history, title=name, live=False))
        assert seen["errors"] == [], name
        assert_every_image_drawn(seen)
        assert "No warnings." in seen["text"] or name == "holes"
        if name == "baseline_only":
            assert "no forecast yet: only 1 validation points" in seen["text"]  # a refusal shows its reason
    # panels whose metrics never appear are left out: a reward alone is one plot
    seen = open_report(browser, tmp_path / "only_reward" / "report.html")
    assert [alt for alt, _, _ in seen["images"]] == ["reward per step"]
    assert "no validation yet" in seen["text"]


def test_a_200_step_run_renders_quickly_enough_to_rewrite_every_step(tmp_path):
    history = realistic_history(steps=200)  # every health panel, 200 points each, one warning
    start = time.perf_counter()
    write_run_report(tmp_path, history, title="long run", live=True)
    elapsed = time.perf_counter() - start
    # ~0.6 s on a busy 2-core machine; 3 s leaves room for a loaded CI box and still catches a
    # figure per point or per warning
    assert elapsed < 3.0, f"200 steps took {elapsed:.2f} s to render"


def summary_row(text: str, name: str) -> str:
    """The value of one summary row, as the browser shows the page's text."""
    rows = [line for line in text.splitlines() if line.startswith(name + "\t")]
    assert len(rows) == 1, f"no single '{name}' row in:\n{text}"
    return rows[0].split("\t", 1)[1]


def test_the_run_seed_reaches_the_forecast_and_the_page_renders(browser, tmp_path):
    history = realistic_history()
    seen = open_report(browser, write_run_report(tmp_path, history, title="seeded", live=False, seed=7))
    assert seen["errors"] == []
    assert_every_image_drawn(seen)
    forecast = fit_forecast(list(VALIDATION_STEPS), [saturating(s) for s in VALIDATION_STEPS], VALIDATION_N, seed=7)
    assert forecast.ok, forecast.reason
    assert forecast.describe() in seen["text"]


def test_a_forecast_that_raises_becomes_a_refusal_with_its_reason_and_the_page_still_renders(browser, tmp_path):
    history = realistic_history()
    history[6]["validation/success"] = 1.5  # step 6: not a success rate, so fit_forecast raises ValueError
    with pytest.raises(ValueError) as raised:
        fit_forecast(list(VALIDATION_STEPS), [1.5 if s == 6 else saturating(s) for s in VALIDATION_STEPS], VALIDATION_N)
    seen = open_report(browser, write_run_report(tmp_path, history, title="bad point", live=True))
    assert seen["errors"] == []
    assert_every_image_drawn(seen)
    assert summary_row(seen["text"], "forecast") == f"no forecast yet: the fit failed: {raised.value}"


def test_best_validation_is_the_first_step_to_reach_it_and_a_baseline_best_is_named(browser, tmp_path):
    def with_validation(values: dict[int, float]) -> list[dict]:
        history = realistic_history()
        for record in history:
            if record["step"] in values:
                record["validation/success"] = values[record["step"]]
                record["validation/ci_low"] = record["validation/ci_high"] = None
        return history

    # a tie after training began: the earlier step is the best
    seen = open_report(browser, write_run_report(tmp_path / "tie", with_validation({0: 0.2, 3: 0.5, 6: 0.5, 9: 0.3, 12: 0.4}), title="tie", live=False))
    assert seen["errors"] == []
    assert summary_row(seen["text"], "validation success, best") == "50.0%, n=256 at step 3"
    assert "before training (step 0)" not in seen["text"]

    # nothing after training beats the baseline (step 6 ties it): the page says the base model is still best
    seen = open_report(browser, write_run_report(tmp_path / "base", with_validation({0: 0.3, 3: 0.2, 6: 0.3, 9: 0.25, 12: 0.1}), title="base", live=False))
    assert seen["errors"] == []
    best = summary_row(seen["text"], "validation success, best")
    assert best == "best validation before training (step 0): training has not beaten the base model yet — 30.0%, n=256 at step 0"

    # a baseline alone is not "training has not beaten it": no training has been validated yet
    seen = open_report(browser, write_run_report(tmp_path / "alone", [{"step": 0, **validation(0)}], title="alone", live=False))
    assert "has not beaten" not in seen["text"]


def test_a_final_page_shows_the_status_it_is_given_and_a_live_one_ignores_it(browser, tmp_path):
    history = realistic_history()
    stopped = "run stopped: the reward_hacking warning (stop_on)"
    seen = open_report(browser, write_run_report(tmp_path / "stopped", history, title="stopped", live=False, status=stopped))
    assert seen["errors"] == [] and seen["refresh"] is None
    status_line = [line for line in seen["text"].splitlines() if line.strip()][1]  # under the title
    assert status_line.startswith(stopped + " — written ")
    assert "run finished" not in seen["text"]

    seen = open_report(browser, write_run_report(tmp_path / "error", [], title="error", live=False, status="run ended with an error"))
    assert seen["refresh"] is None and "run ended with an error — written " in seen["text"]

    seen = open_report(browser, write_run_report(tmp_path / "live", history, title="live", live=True, status=stopped))
    assert seen["refresh"] == "15" and "run in progress" in seen["text"] and stopped not in seen["text"]
