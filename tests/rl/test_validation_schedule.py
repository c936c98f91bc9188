"""When the loop validates by default: spread out, within 15% of the run's time, and the same after a resume."""

from hone.rl.validation import VALIDATION_SHARE, validation_due


def schedule(steps, step_time, validation_time, validate_every=None):
    """Walk a run the way the loop does; return the validated steps and validation's share of the time."""
    history = [{"step": 0, "time/validation": validation_time}]
    for step in range(1, steps + 1):
        row = {"step": step, "time/step": step_time(step)}
        if validation_due(step, steps, validate_every, history):
            row["time/validation"] = validation_time
        history.append(row)
    validated = [r["step"] for r in history if "time/validation" in r]
    spent = sum(r.get("time/validation", 0) for r in history)
    return validated, spent / (spent + sum(r.get("time/step", 0) for r in history)), history


def test_default_validation_spreads_out_and_stays_within_its_share_of_the_run():
    # a validation costs half a step: 30 steps allow ~10 validations within 15%
    validated, share, _ = schedule(30, lambda s: 10.0, 5.0)
    assert validated[0] == 0 and validated[-1] == 30 and 6 <= len(validated) <= 12, validated
    assert share <= VALIDATION_SHARE, share
    gaps = [b - a for a, b in zip(validated[1:], validated[2:-1])]
    assert max(gaps) - min(gaps) <= 1, validated  # evenly spread between the first and the last
    # a slow first step (warm-up) and faster later ones: still within the share
    assert schedule(30, lambda s: 40.0 if s == 1 else 8.0, 5.0)[1] <= VALIDATION_SHARE


def test_validation_too_slow_for_its_share_runs_only_before_and_after_training():
    validated, _, _ = schedule(10, lambda s: 10.0, 50.0)
    assert validated == [0, 10]


def test_a_fixed_interval_is_kept_and_the_last_step_always_validates():
    assert schedule(10, lambda s: 10.0, 5.0, validate_every=4)[0] == [0, 4, 8, 10]


def test_the_decision_reads_only_logged_steps_so_a_resumed_run_validates_at_the_same_steps():
    validated, _, history = schedule(30, lambda s: 10.0 + (s % 3), 5.0)
    for resume_at in (5, 13, 22):
        logged = history[: resume_at + 1]
        redone = [s for s in range(resume_at + 1, 31) if validation_due(s, 30, None, logged + [r for r in history if resume_at < r["step"] < s])]
        assert redone == [s for s in validated if s > resume_at]
