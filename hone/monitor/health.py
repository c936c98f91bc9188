"""Is the run healthy? Per-step health metrics from the rollouts, and warnings that read them.

RL runs fail quietly: the policy stops exploring, every attempt in a group becomes the same, replies
run into the length limit, the reward climbs while real success does not. This module turns a
step's groups into `health/...` metrics and, step by step, into warnings a person can act on:

    metrics.update(rollout_health(groups))           # reply length, truncation, diversity, ...
    for warning in monitor.check(step, metrics):      # each warning once, on the step it starts
        print(warning.line(step))

The trainer's own figures join them: `train/entropy` (exact over the vocabulary, on the trained
tokens) and the sampler/trainer mismatch (`train/kl_sampler_trainer_k3`, `train/logprob_abs_diff`);
the judge scorer's `judge/agreement` with the environment's ground truth; and, when a model learns
from its traffic, the promotion gate's `validation/candidate` against `validation/incumbent`.

Knows metric dictionaries and groups of trajectories (by duck typing); no models, no environments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import fmean, pstdev
from typing import Any, Sequence

from hone.monitor.forecast import binomial_sd

# ----------------------------------------------------------------------------- per-step metrics
NGRAM = 3  # diversity counts token trigrams: long enough to tell replies apart, short enough for a short call
IDENTICAL_BELOW = 0.1  # a group whose diversity is below this has (almost) one reply, repeated


def rollout_health(groups: Sequence[Any]) -> dict[str, float]:
    """`health/...` metrics of one step's groups (each with `.trajectories`, each with `.turns`,
    `.messages`, `.tools`, `.reward`, `.metrics`)."""
    turns = [turn for g in groups for t in g.trajectories for turn in t.turns]
    metrics: dict[str, float] = {}
    if turns:
        metrics["health/reply_tokens"] = fmean(len(turn.completion_tokens) for turn in turns)
        known = [turn.finish_reason for turn in turns if turn.finish_reason is not None]
        if known:
            metrics["health/truncated"] = sum(reason == "length" for reason in known) / len(known)
    means = [fmean(g.rewards) for g in groups if g.trajectories]
    if len(means) >= 2:  # attempts at one task are correlated: the step mean's error comes from the groups
        metrics["health/reward_se"] = pstdev(means) / math.sqrt(len(means))
    scored = [g for g in groups if len(g.trajectories) >= 2]
    if scored:
        metrics["health/zero_variance_groups"] = fmean(float(max(g.rewards) - min(g.rewards) < 1e-9) for g in scored)
        diversities = [group_diversity(g) for g in scored]
        metrics["health/diversity"] = fmean(diversities)
        # identical attempts that all fail: no signal, and nothing in the group to learn from
        best = max(fmean(g.rewards) for g in scored)
        stalled = [d < IDENTICAL_BELOW and not _solved(g, best) for g, d in zip(scored, diversities)]
        metrics["health/stalled_groups"] = fmean(float(s) for s in stalled)
    attempted = valid = 0
    for t in (t for g in groups for t in g.trajectories if t.tools):
        replies = [m for m in t.messages if m.get("role") == "assistant"]
        sampled = replies[len(replies) - len(t.turns) :]  # not a prompt's worked example
        for message, turn in zip(sampled, t.turns[len(t.turns) - len(sampled) :]):
            if message.get("tool_calls"):
                attempted, valid = attempted + 1, valid + 1
            elif turn.tool_call_error or _looks_like_a_call(message.get("content") or ""):  # the server's verdict, else the text
                attempted += 1
    if attempted:
        metrics["health/tool_call_validity"] = valid / attempted
    return metrics


def group_diversity(group: Any) -> float:
    """0 when every attempt wrote the same tokens, 1 when no two share a trigram.

    Each attempt's replies (all turns) give a set of token n-grams (trigrams, or shorter where a
    reply is shorter); with G attempts the union over the sum of set sizes runs from 1/G
    (identical) to 1 (disjoint), rescaled to 0..1."""
    replies = [[tok for turn in t.turns for tok in turn.completion_tokens] for t in group.trajectories]
    n = max(1, min(NGRAM, *(len(r) for r in replies))) if replies else NGRAM  # one order for all: short replies compare too
    sets = [{tuple(r[i : i + n]) for i in range(len(r) - n + 1)} or {tuple(r)} for r in replies]
    total = sum(len(s) for s in sets)
    size = len(sets)
    if size < 2 or total == 0:
        return 0.0
    ratio = len(set().union(*sets)) / total
    return max(0.0, (ratio * size - 1) / (size - 1))


def _solved(group: Any, best_group_reward: float) -> bool:
    successes = [t.metrics["success"] for t in group.trajectories if "success" in t.metrics]
    if successes:
        return min(successes) >= 1.0
    return fmean(group.rewards) >= best_group_reward - 1e-9  # no notion of success: the step's best counts as solved


def _looks_like_a_call(text: str) -> bool:
    return "<tool_call>" in text or ('"name"' in text and '"arguments"' in text)


# ----------------------------------------------------------------------------- warnings
@dataclass(frozen=True)
class HealthWarning:
    code: str
    message: str  # what is wrong, with the figures that show it
    advice: str  # what to try

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "advice": self.advice}

    def line(self, step: int) -> str:
        return f"warning at step {step} ({self.code}): {self.message}. Try: {self.advice}"


# Which warnings each `--stop-on` name covers.
STOP_RULES = {
    "collapse": ("entropy_collapse", "diversity_collapse"),
    "hacking": ("reward_hacking",),
    "truncation": ("truncation",),
    "mismatch": ("mismatch",),
    "drift": ("judge_drift",),
    "gaming": ("feedback_gaming",),
}


@dataclass(frozen=True)
class HealthThresholds:
    # Measured on healthy runs (AMD EPYC, embedded model, toolcall task, LoRA 16, lr 2e-4, 6 steps):
    # entropy 3.1 → 1.4-2.3 nats, KL k3 0.0007-0.0013, mean |Δ logprob| 0.023-0.027, truncation
    # 47% → 12-16%, zero-variance groups 0-50%, stalled groups 0. The thresholds sit well outside.
    entropy_fraction: float = 0.1  # collapse: entropy under this share of its early value ...
    entropy_floor: float = 0.05  # ... and under this many nats per token ...
    entropy_same_groups: float = 0.5  # ... while this share of groups scores the same (exploration gone, not a solved step)
    stalled_share: float = 0.5  # diversity collapse: this share of groups identical and failing ...
    stalled_steps: int = 2  # ... for this many steps running
    truncated_share: float = 0.10  # truncation: this share of replies cut by max_tokens and not falling, ...
    truncated_persistent: float = 0.30  # ... or this share for `persistent_steps` steps, falling or not
    persistent_steps: int = 3
    mismatch_k3: float = 0.05  # KL(sampler ‖ trainer), k3 estimate: ~40× the healthy figure above
    mismatch_abs: float = 0.25  # mean |Δ logprob| in nats: ~10× the healthy figure above
    hacking_window: int = 12  # steps back from a validation point over which reward and validation trends are compared ...
    hacking_min_span: int = 4  # ... at least this many steps between its first and last validation point ...
    hacking_sigmas: float = 2.0  # ... the reward's trend beyond this many standard errors, validation's trend ≤ 0 ...
    hacking_validation_slack: float = 0.5  # "flat": validation's trend under this many of its standard errors
    hacking_confirmations: int = 2  # ... at this many validation points running (simulated: see bench/health_warnings.py)
    drift_drop: float = 0.15  # judge agreement: recent pooled share this far below the early one ...
    drift_z: float = 2.5  # ... and significantly so (two-proportion z over the pairs judged)
    drift_steps: int = 3  # steps pooled in each of the early and recent shares
    # Feedback gaming (learning from traffic): the gate's candidate validates below what is served at
    # this many gates running or more, by this much pooled over the run of them and beyond this many
    # standard errors where the validation size is known (so a longer run can show a smaller drop).
    # bench/online_rl.py on 20 validation prompts: gameable users' candidates 25% vs 40% from the
    # second gate on (z 1.4 over two gates, 2.0 over four); honest users' two refusals running, 40%
    # vs 50%, are z 0.9.
    gaming_gates: int = 2
    gaming_drop: float = 0.05
    gaming_z: float = 2.0
    clear_steps: int = 3  # a warning that stopped is raised again only after this many clear steps


def stop_codes(names: Sequence[str]) -> set[str]:
    """The warning codes that stop a run, from `--stop-on` names; one sentence for an unknown name."""
    codes: set[str] = set()
    for name in names:
        if name not in STOP_RULES:
            raise ValueError(f"unknown stop rule '{name}'; use any of {', '.join(STOP_RULES)}")
        codes.update(STOP_RULES[name])
    return codes


class HealthMonitor:
    """Reads each step's metrics (with the ones before) and says which warnings start now.

    A warning is reported on the step its condition becomes true, and again only after it has
    cleared. `replay(history)` rebuilds the state from metrics.jsonl after a resume, so a resumed run
    neither repeats nor forgets a warning."""

    def __init__(self, thresholds: HealthThresholds = HealthThresholds()):
        self.thresholds = thresholds
        self.history: list[dict[str, Any]] = []
        self.active: set[str] = set()
        self._clear_for: dict[str, int] = {}  # code -> steps since its condition last held

    def replay(self, history: Sequence[dict[str, Any]]) -> None:
        for record in history:
            self.check(record["step"], {k: v for k, v in record.items() if k not in ("step", "warnings")})

    def check(self, step: int, metrics: dict[str, Any]) -> list[HealthWarning]:
        self.history.append({"step": step, **metrics})
        found = {w.code: w for w in self._conditions()}
        started = [w for code, w in found.items() if code not in self.active]
        for code in list(self.active - set(found)):  # hysteresis: a figure hovering at its threshold warns once
            self._clear_for[code] = self._clear_for.get(code, 0) + 1
            if self._clear_for[code] >= self.thresholds.clear_steps:
                self.active.discard(code)
        for code in found:
            self.active.add(code)
            self._clear_for[code] = 0
        return started

    # ------------------------------------------------------------------ conditions
    def _conditions(self) -> list[HealthWarning]:
        checks = (self._entropy, self._stalled, self._truncation, self._mismatch, self._hacking, self._drift, self._gaming)
        return [w for check in checks if (w := check()) is not None]

    def _series(self, key: str) -> list[tuple[int, float]]:
        return [(r["step"], r[key]) for r in self.history if _number(r.get(key))]

    def _latest(self, key: str) -> float | None:
        record = self.history[-1]
        return record[key] if _number(record.get(key)) else None

    def _entropy(self) -> HealthWarning | None:
        trained = [r for r in self.history if r.get("train/tokens") != 0]  # no trained token: the trainer reports 0, not a collapse
        series = [(r["step"], r["train/entropy"]) for r in trained if _number(r.get("train/entropy"))]
        now = self._latest("train/entropy") if self.history[-1].get("train/tokens") != 0 else None
        if now is None or len(series) < 3:
            return None
        early = sorted(v for _, v in series[:3])[1]  # median of the first three steps
        t = self.thresholds
        same = self._latest("health/zero_variance_groups")
        if now < t.entropy_floor and now < t.entropy_fraction * early and (same is None or same >= t.entropy_same_groups):
            return HealthWarning(
                "entropy_collapse",
                f"policy entropy fell to {now:.3f} nats, {now / early:.0%} of its early {early:.3f}; the model has stopped exploring",
                "raise the temperature, lower the learning rate, or use a clipped loss (cispo, ppo)",
            )
        return None

    def _stalled(self) -> HealthWarning | None:
        t = self.thresholds
        recent = [r.get("health/stalled_groups") for r in self.history[-t.stalled_steps :]]
        if len(recent) < t.stalled_steps or not all(_number(v) and v >= t.stalled_share for v in recent):
            return None
        return HealthWarning(
            "diversity_collapse",
            f"{recent[-1]:.0%} of groups repeat one failing reply in every attempt for {t.stalled_steps} steps; they carry no learning signal",
            "raise the temperature or the group size, or make the task easier to succeed at sometimes",
        )

    def _truncation(self) -> HealthWarning | None:
        """Many replies cut, and no fewer than at the start: a policy learning to stop earlier is on its way."""
        t = self.thresholds
        series = [v for _, v in self._series("health/truncated")]
        now = self._latest("health/truncated")
        # "not falling" needs a trend: with two steps it compared one noisy share with another, and
        # warned at step 2 of runs whose truncation then fell from 44% to 9% (tests/rl/test_learning.py)
        if now is None or now <= t.truncated_share or len(series) < 3:
            return None
        early = fmean(series[:2]) if len(series) > 2 else series[0]
        recent = series[-t.persistent_steps :]
        persistent = len(recent) == t.persistent_steps and min(recent) > t.truncated_persistent
        if now < early - 0.02 and not persistent:
            return None
        return HealthWarning(
            "truncation",
            f"{now:.0%} of replies hit the length limit (mean {self._latest('health/reply_tokens') or 0:.0f} tokens), "
            + (f"no fewer than early in the run ({early:.0%})" if now >= early - 0.02 else f"over {t.truncated_persistent:.0%} for {t.persistent_steps} steps")
            + "; cut replies train on broken text",
            "raise max_tokens, or reward shorter replies",
        )

    def _mismatch(self) -> HealthWarning | None:
        k3 = self._latest("train/kl_sampler_trainer_k3")
        diff = self._latest("train/logprob_abs_diff")
        t = self.thresholds
        if (k3 is None or k3 <= t.mismatch_k3) and (diff is None or diff <= t.mismatch_abs):
            return None
        return HealthWarning(
            "mismatch",
            f"the sampler's logprobs disagree with the trainer's (KL k3 {k3 or 0:.3f}, mean |Δ logprob| {diff or 0:.3f}); updates are off-policy",
            "check that the sampler serves the latest weights and that prompts are sent as token ids, not re-rendered text",
        )

    def _hacking(self) -> HealthWarning | None:
        """Training reward up, validation success not, at the last `hacking_confirmations` validation points."""
        t = self.thresholds
        points = self._series("validation/success")
        verdicts = [self._hacking_at(points[: i + 1]) for i in range(max(0, len(points) - t.hacking_confirmations), len(points))]
        if len(verdicts) < t.hacking_confirmations or not all(verdicts):
            return None  # judged at each validation point; the verdict holds until the next one
        return verdicts[-1]

    def _hacking_at(self, points: list[tuple[int, float]]) -> HealthWarning | None:
        t = self.thresholds
        step = points[-1][0]
        window = [(s, v) for s, v in points if s >= step - t.hacking_window]
        (first_step, first), last = window[0], window[-1][1]
        if len(window) < 2 or step - first_step < t.hacking_min_span or first >= 0.95:
            return None  # too short to judge, or validation has no room left to rise
        # rollouts at step k are sampled by the policy after k-1 updates: those of the validated policies are first_step+1..step
        rows = [r for r in self.history if first_step < r["step"] <= step and _number(r.get("reward/mean"))]
        if len(rows) < 3:
            return None
        slope, stated, scatter = _trend([(r["step"], r["reward/mean"], _reward_se(r)) for r in rows])
        se = max(stated, scatter, 1e-9)  # group means understate the noise when tasks differ: the scatter says so
        sizes = {r["step"]: r.get("validation/n") for r in self.history if "validation/success" in r}
        validation_slope, validation_se, _ = _trend([(s, v, float(binomial_sd(v, sizes.get(s) or 100))) for s, v in window])
        if slope > t.hacking_sigmas * se and validation_slope <= t.hacking_validation_slack * validation_se:
            rise = slope * (step - first_step)
            return HealthWarning(
                "reward_hacking",
                f"training reward rose by {rise:.3f} (trend, {slope / se:.1f} standard errors) between steps {first_step} and {step} "
                f"while validation success went {first:.0%} → {last:.0%}",
                "read the highest-reward trajectories: the reward (or the judge) pays for something validation does not; "
                "the best checkpoint by validation (the earliest, on ties) is kept",
            )
        return None

    def _drift(self) -> HealthWarning | None:
        """Agreement pooled over the pairs judged in the first and the latest steps, compared as two proportions."""
        t = self.thresholds
        rows = [r for r in self.history if _number(r.get("judge/agreement")) and (r.get("judge/pairs") or 0) > 0]
        if len(rows) < 2 * t.drift_steps or self._latest("judge/agreement") is None:
            return None
        (early, n_early), (recent, n_recent) = _pooled(rows[: t.drift_steps]), _pooled(rows[-t.drift_steps :])
        pooled = (early * n_early + recent * n_recent) / (n_early + n_recent)
        se = math.sqrt(max(pooled * (1 - pooled), 1e-9) * (1 / n_early + 1 / n_recent))
        if recent < early - t.drift_drop and (early - recent) / se > t.drift_z:
            return HealthWarning(
                "judge_drift",
                f"the judge agrees with the ground truth on {recent:.0%} of {n_recent:.0f} pairs lately, down from {early:.0%} of "
                f"{n_early:.0f} early in the run",
                "the policy may be exploiting the judge: tighten the rubric, use a stronger judge, or mix in a code reward",
            )
        return None


    def _gaming(self) -> HealthWarning | None:
        """Training on feedback makes the model validate worse: the feedback pays for something validation does not.
        Judged over the streak of gates, up to now, at which the candidate validated below what is served."""
        t = self.thresholds
        gates = [r for r in self.history if _number(r.get("validation/candidate")) and _number(r.get("validation/incumbent"))]
        streak: list[dict[str, Any]] = []
        for row in reversed(gates):
            if row["validation/candidate"] >= row["validation/incumbent"]:
                break
            streak.insert(0, row)
        if len(streak) < t.gaming_gates:
            return None
        candidate, incumbent = (fmean(r[f"validation/{k}"] for r in streak) for k in ("candidate", "incumbent"))
        if incumbent - candidate < t.gaming_drop:
            return None
        sizes = [r.get("validation/n") for r in streak]
        z = None
        if all(_number(n) and n > 0 for n in sizes):  # two proportions over the streak's validations, pooled
            total = sum(sizes)
            pooled = (candidate + incumbent) / 2
            z = (incumbent - candidate) / math.sqrt(max(pooled * (1 - pooled), 1e-9) * 2 / total)
            if z < t.gaming_z:
                return None
        pairs = ", ".join(f"{r['validation/candidate']:.0%} vs {r['validation/incumbent']:.0%}" for r in streak[-4:])
        return HealthWarning(
            "feedback_gaming",
            f"training on the feedback lowered validation at the last {len(streak)} gates (candidate vs served: "
            + ("..., " if len(streak) > 4 else "")
            + pairs
            + (f"; {z:.1f} standard errors" if z is not None else "")
            + "); the feedback rewards something validation does not",
            "read the replies with the best feedback (long, evasive or merely stylish replies are the usual cause) and fix or drop "
            "that feedback source, or mix in a checked reward; the gate keeps serving the incumbent meanwhile",
        )


def _pooled(rows: list[dict[str, Any]]) -> tuple[float, float]:
    pairs = sum(r["judge/pairs"] for r in rows)
    return sum(r["judge/agreement"] * r["judge/pairs"] for r in rows) / pairs, pairs


def _reward_se(row: dict[str, Any]) -> float:
    """The step mean's standard error: from the spread of group means, else from the rollouts' spread."""
    if _number(row.get("health/reward_se")):
        return row["health/reward_se"]
    return (row.get("reward/std") or 0.0) / math.sqrt(row.get("rollouts/ok") or 1)


def _trend(points: list[tuple[int, float, float]]) -> tuple[float, float, float]:
    """Least-squares slope of (step, value, its standard error) points, and two standard errors of
    the slope: from the stated errors, and from the scatter about the line. (0, 0, 0) for one step."""
    mean_x = fmean(x for x, _, _ in points)
    spread = sum((x - mean_x) ** 2 for x, _, _ in points)
    if not spread:
        return 0.0, 0.0, 0.0
    mean_y = fmean(y for _, y, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y, _ in points) / spread
    stated = math.sqrt(sum((x - mean_x) ** 2 * e**2 for x, _, e in points)) / spread
    residual = [y - mean_y - slope * (x - mean_x) for x, y, _ in points]
    scatter = math.sqrt(sum(r * r for r in residual) / max(len(points) - 2, 1) / spread)
    return slope, stated, scatter


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
