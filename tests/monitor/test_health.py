"""Health metrics from real trajectories, and the warnings that read them, on histories written out step by step."""

import pytest

from hone.monitor.health import HealthMonitor, group_diversity, rollout_health, stop_codes
from hone.rl.trajectory import SampledTurn, Trajectory, TrajectoryGroup

TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


def attempt(tokens, reward=0.0, finish="stop", content="", tool_calls=None, success=None):
    t = Trajectory(messages=[{"role": "user", "content": "q"}], tools=TOOLS if tool_calls is not None else None, reward=reward)
    t.turns.append(SampledTurn(prompt_tokens=[1, 2], completion_tokens=tokens, completion_logprobs=[-1.0] * len(tokens), finish_reason=finish))
    message = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    t.messages.append(message)
    if success is not None:
        t.metrics["success"] = success
    return t


def test_diversity_is_zero_for_repeated_replies_and_one_for_disjoint_ones():
    same = TrajectoryGroup(trajectories=[attempt([5, 6, 7, 8]) for _ in range(4)])
    disjoint = TrajectoryGroup(trajectories=[attempt([10 * i + k for k in range(4)]) for i in range(4)])
    # two of four share every trigram: union 2 sets of 2 over 8 → ratio 0.5 → (0.5·4 − 1)/3 = 1/3
    half = TrajectoryGroup(trajectories=[attempt([1, 2, 3, 4]), attempt([1, 2, 3, 4]), attempt([7, 8, 9, 10]), attempt([7, 8, 9, 10])])
    assert group_diversity(same) == 0.0
    assert group_diversity(disjoint) == 1.0
    assert group_diversity(half) == pytest.approx(1 / 3)


def test_rollout_health_counts_truncation_zero_variance_stalls_and_tool_call_validity():
    call = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    stalled = TrajectoryGroup(trajectories=[attempt([1, 2, 3], reward=0.0, success=0.0) for _ in range(4)])
    solved = TrajectoryGroup(trajectories=[attempt([1, 2, 3], reward=1.0, success=1.0, tool_calls=call) for _ in range(4)])
    learning = TrajectoryGroup(
        trajectories=[
            attempt([4, 5, 6, 7], reward=1.0, tool_calls=call),
            attempt([8, 9, 10, 11], reward=0.0, finish="length", tool_calls=[], content='<tool_call>{"name": "f", "argu'),
            attempt([12, 13, 14, 15], reward=0.0, finish="length", content="no call at all"),
            attempt([16, 17, 18, 19], reward=0.5),
        ]
    )
    metrics = rollout_health([stalled, solved, learning])
    assert metrics["health/reply_tokens"] == pytest.approx((8 * 3 + 4 * 4) / 12)
    assert metrics["health/truncated"] == pytest.approx(2 / 12)
    assert metrics["health/zero_variance_groups"] == pytest.approx(2 / 3)
    assert metrics["health/stalled_groups"] == pytest.approx(1 / 3)  # the solved group repeats itself too, but it succeeds
    # 5 parsed calls, 1 broken one; the plain-text reply is not an attempted call
    assert metrics["health/tool_call_validity"] == pytest.approx(5 / 6)


def test_a_healthy_run_raises_no_warning():
    rows = [
        {"reward/mean": 0.2 + 0.05 * i, "reward/std": 0.3, "rollouts/ok": 32, "train/entropy": 0.9 - 0.03 * i,
         "train/kl_sampler_trainer_k3": 0.002, "train/logprob_abs_diff": 0.03, "health/truncated": 0.02,
         "health/stalled_groups": 0.25, "judge/agreement": 0.8, **({"validation/success": 0.2 + 0.04 * i} if i % 3 == 0 else {})}
        for i in range(1, 16)
    ]
    assert feed_from(HealthMonitor(), rows, first_step=1) == {}


def test_entropy_collapse_warns_once_when_it_starts_and_again_after_it_clears():
    # one clear step (8) is hovering, not recovery: no second warning at 9; three clear steps (10-12) are
    entropies = [0.8, 0.7, 0.75, 0.3, 0.04, 0.02, 0.01, 0.5, 0.01, 0.6, 0.6, 0.6, 0.01]
    started = feed_from(HealthMonitor(), [{"train/entropy": e} for e in entropies], first_step=1)
    assert started == {5: ["entropy_collapse"], 13: ["entropy_collapse"]}
    # a confident policy whose groups still disagree has not collapsed
    assert feed_from(HealthMonitor(), [{"train/entropy": e, "health/zero_variance_groups": 0.25} for e in entropies], first_step=1) == {}


def test_diversity_truncation_mismatch_and_judge_drift_each_warn_with_figures_and_advice():
    monitor = HealthMonitor()
    rows = [{"health/stalled_groups": 0.75, "health/truncated": 0.0, "judge/agreement": 0.85, "judge/pairs": 60} for _ in range(3)]
    rows += [{"health/stalled_groups": 0.0, "health/truncated": 0.3, "health/reply_tokens": 128, "judge/agreement": 0.6, "judge/pairs": 60,
              "train/kl_sampler_trainer_k3": 0.2} for _ in range(3)]
    warnings = {}
    for step, row in enumerate(rows, start=1):
        for w in monitor.check(step, row):
            warnings[w.code] = (step, w)
    assert {code: step for code, (step, _) in warnings.items()} == {"diversity_collapse": 2, "truncation": 4, "mismatch": 4, "judge_drift": 6}
    assert "30% of replies hit the length limit" in warnings["truncation"][1].message and "early in the run (0%)" in warnings["truncation"][1].message
    assert "max_tokens" in warnings["truncation"][1].advice
    assert "60% of 180 pairs" in warnings["judge_drift"][1].message and "85% of 180" in warnings["judge_drift"][1].message
    # the same drop over a handful of pairs is noise: 0.85 → 0.6 over 6 pairs each is z ≈ 1
    few = [{"judge/agreement": a, "judge/pairs": 2} for a in (0.85, 0.85, 0.85, 0.6, 0.6, 0.6)]
    assert feed_from(HealthMonitor(), few, first_step=1) == {}


def test_reward_hacking_warns_when_reward_rises_and_validation_does_not():
    monitor = HealthMonitor()
    monitor.check(0, {"validation/success": 0.30})
    rows = [{"reward/mean": 0.1 + 0.08 * i, "reward/std": 0.2, "rollouts/ok": 32, **({"validation/success": 0.28} if i % 2 == 0 else {})} for i in range(1, 9)]
    # judged at validation points ≥ 4 steps after the window's first: step 4 (reward over steps 1-2 is 0.22,
    # over 3-4 0.38, a standard error of 0.2/√32/√2 per window, so a 4.5 σ rise; validation's slope ≤ 0), then
    # confirmed at the next validation point, step 6
    assert feed_from(monitor, rows, first_step=1) == {6: ["reward_hacking"]}


def test_rising_validation_is_not_hacking():
    monitor = HealthMonitor()
    monitor.check(0, {"validation/success": 0.30})
    rows = [{"reward/mean": 0.1 + 0.08 * i, "reward/std": 0.2, "rollouts/ok": 32, **({"validation/success": 0.3 + 0.05 * i} if i % 2 == 0 else {})} for i in range(1, 9)]
    assert feed_from(monitor, rows, first_step=1) == {}


def feed_from(monitor, rows, first_step):
    started = {}
    for step, row in enumerate(rows, start=first_step):
        codes = [w.code for w in monitor.check(step, row)]
        if codes:
            started[step] = codes
    return started


def test_replay_restores_state_so_a_resumed_run_does_not_repeat_a_warning():
    history = [{"step": s, "train/entropy": e} for s, e in enumerate([0.8, 0.7, 0.75, 0.02], start=1)]
    monitor = HealthMonitor()
    monitor.replay(history)
    assert monitor.active == {"entropy_collapse"}
    assert monitor.check(5, {"train/entropy": 0.01}) == []


def test_stop_rules_name_warning_codes_and_reject_unknown_names():
    assert stop_codes(["collapse", "hacking"]) == {"entropy_collapse", "diversity_collapse", "reward_hacking"}
    with pytest.raises(ValueError, match="unknown stop rule 'crash'; use any of collapse, hacking"):
        stop_codes(["crash"])


def test_truncation_that_falls_as_the_policy_learns_to_stop_is_not_a_warning():
    # the toolcall task's untrained replies ramble into max_tokens; training teaches them to call and stop
    falling = [0.47, 0.38, 0.25, 0.12, 0.12, 0.16]
    assert feed_from(HealthMonitor(), [{"health/truncated": v} for v in falling], first_step=1) == {}
    # falling but stuck high is still a problem
    assert feed_from(HealthMonitor(), [{"health/truncated": v} for v in [1.0, 0.9, 0.7, 0.6, 0.5]], first_step=1) == {3: ["truncation"]}
    assert feed_from(HealthMonitor(), [{"health/truncated": v} for v in [0.05, 0.08, 0.2, 0.4]], first_step=1) == {3: ["truncation"]}


def test_a_call_the_server_rejected_counts_against_validity_whatever_its_text():
    t = attempt([1, 2, 3], content="get_weather(Paris)", tool_calls=[])
    t.turns[-1].tool_call_error = "arguments are not a JSON object"
    assert rollout_health([TrajectoryGroup(trajectories=[t, t])])["health/tool_call_validity"] == 0.0


def test_a_worked_example_in_the_prompt_is_not_counted_as_a_call_the_policy_made():
    example = {"role": "assistant", "content": '<tool_call>{"name": "f", "arguments": {}}</tool_call>'}
    t = attempt([1, 2, 3], content="plain words", tool_calls=[])
    t.messages.insert(1, example)
    assert "health/tool_call_validity" not in rollout_health([TrajectoryGroup(trajectories=[t, t])])


def test_a_figure_hovering_at_its_threshold_warns_once():
    hovering = [0.12, 0.09, 0.12, 0.09, 0.12, 0.09, 0.12]
    assert feed_from(HealthMonitor(), [{"health/truncated": v} for v in hovering], first_step=1) == {3: ["truncation"]}


def gate_row(candidate: float, incumbent: float, n: int | None = 20) -> dict:
    row = {"validation/candidate": candidate, "validation/incumbent": incumbent, "validation/success": max(candidate, incumbent)}
    return {**row, "validation/n": n} if n else row


def test_feedback_gaming_warns_when_training_on_feedback_keeps_lowering_validation():
    # bench/online_rl.py with gameable users (they like long replies): the first gate's candidate
    # validated level, every later one 65% against the served 85%, on 20 prompts
    gameable = [gate_row(0.85, 0.85)] + [gate_row(0.65, 0.85)] * 5
    monitor = HealthMonitor()
    assert feed_from(monitor, gameable, first_step=1) == {3: ["feedback_gaming"]}  # two refusals running, z ≈ 2.1; then once only
    warning = HealthMonitor()
    for step, row in enumerate(gameable[:3], start=1):
        started = warning.check(step, row)
    assert "lowered validation at the last 2 gates (candidate vs served: 65% vs 85%, 65% vs 85%; 2.1 standard errors)" in started[0].message
    assert "feedback source" in started[0].advice
    # honest users: candidates level or better
    honest = [gate_row(c, i) for c, i in [(0.85, 0.85), (0.9, 0.85), (1.0, 0.9), (1.0, 1.0), (1.0, 1.0)]]
    assert feed_from(HealthMonitor(), honest, first_step=1) == {}
    # one unlucky candidate between good ones, or a drop within the noise of 20 prompts, is not gaming
    assert feed_from(HealthMonitor(), [gate_row(0.8, 0.85), gate_row(0.9, 0.85), gate_row(0.8, 0.85)], first_step=1) == {}
    assert feed_from(HealthMonitor(), [gate_row(0.8, 0.9)] * 3, first_step=1) == {}  # z ≈ 1.1 over two gates, 1.4 over three
    # a smaller drop that lasts: 25% vs 40% is z 1.4 over two gates, 2.0 over four (the gameable users of the toolcall bench)
    assert feed_from(HealthMonitor(), [gate_row(0.4, 0.4)] + [gate_row(0.25, 0.4)] * 5, first_step=1) == {5: ["feedback_gaming"]}
    # without a validation size only the size of the drop counts
    assert feed_from(HealthMonitor(), [gate_row(0.8, 0.9, n=None)] * 2, first_step=1) == {2: ["feedback_gaming"]}
    assert stop_codes(["gaming"]) == {"feedback_gaming"}
