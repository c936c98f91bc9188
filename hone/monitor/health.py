"""Is the run healthy? Per-step health metrics from the rollouts, and warnings that read them.

RL runs fail quietly: the policy stops exploring, every attempt in a group becomes the same, replies
run into the length limit, the reward climbs while real success does not. This module turns a
step's groups into `health/...` metrics and, step by step, into warnings a person can act on:

    metrics.update(rollout_health(groups))           # reply length, truncation, diversity, ...
    for warning in monitor.check(step, metrics):      # each warning once, on the step it starts
        print(warning.line(step))

The trainer's own figures join them: `train/entropy` (exact over the vocabulary, on the trained
tokens) and the sampler/trainer mismatch (`train/kl_sampler_trainer_k3`, `train/logprob_abs_diff`);
the judge scorer's `judge/agreement` with the environment's ground truth.

Knows metric dictionaries and groups of trajectories (by duck typing); no models, no environments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import fmean
from typing import Any, Sequence

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
        for message in replies[len(replies) - len(t.turns) :]:  # the sampled ones, not a prompt's worked example
            if message.get("tool_calls"):
                attempted, valid = attempted + 1, valid + 1
            elif _looks_like_a_call(message.get("content") or ""):
                attempted += 1
    if attempted:
        metrics["health/tool_call_validity"] = valid / attempted
    return metrics


def group_diversity(group: Any) -> float:
    """0 when every attempt wrote the same tokens, 1 when no two share a trigram.

    Each attempt's replies (all turns) give a set of token n-grams; with G attempts the union over
    the sum of set sizes runs from 1/G (identical) to 1 (disjoint), rescaled to 0..1."""
    sets = []
    for t in group.trajectories:
        tokens = [tok for turn in t.turns for tok in turn.completion_tokens]
        n = min(NGRAM, len(tokens))
        sets.append({tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)} if n else {()})
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
}


@dataclass(frozen=True)
class HealthThresholds:
    entropy_fraction: float = 0.1  # collapse: entropy under this share of its early value ...
    entropy_floor: float = 0.05  # ... and under this many nats (a confident but healthy policy stays above)
    stalled_share: float = 0.5  # diversity collapse: this share of groups identical and failing ...
    stalled_steps: int = 2  # ... for this many steps running
    truncated_share: float = 0.10  # ... of replies cut by max_tokens, and not falling
    mismatch_k3: float = 0.05  # KL(sampler ‖ trainer), k3 estimate: on-policy it is ~1e-3 (bf16 sampler, fp32 trainer)
    mismatch_abs: float = 0.5  # mean |Δ logprob| in nats
    hacking_window: int = 8  # steps over which reward and validation are compared
    hacking_min_span: int = 3  # the two validation points must be at least this many steps apart
    hacking_sigmas: float = 3.0  # the reward's rise must exceed this many standard errors
    drift_drop: float = 0.15  # judge agreement: recent mean this far below the early mean
    drift_steps: int = 3  # steps in each of the early and recent means


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

    def replay(self, history: Sequence[dict[str, Any]]) -> None:
        for record in history:
            self.check(record["step"], {k: v for k, v in record.items() if k not in ("step", "warnings")})

    def check(self, step: int, metrics: dict[str, Any]) -> list[HealthWarning]:
        self.history.append({"step": step, **metrics})
        found = {w.code: w for w in self._conditions()}
        started = [w for code, w in found.items() if code not in self.active]
        self.active = set(found)
        return started

    # ------------------------------------------------------------------ conditions
    def _conditions(self) -> list[HealthWarning]:
        checks = (self._entropy, self._stalled, self._truncation, self._mismatch, self._hacking, self._drift)
        return [w for check in checks if (w := check()) is not None]

    def _series(self, key: str) -> list[tuple[int, float]]:
        return [(r["step"], r[key]) for r in self.history if _number(r.get(key))]

    def _latest(self, key: str) -> float | None:
        record = self.history[-1]
        return record[key] if _number(record.get(key)) else None

    def _entropy(self) -> HealthWarning | None:
        series = self._series("train/entropy")
        now = self._latest("train/entropy")
        if now is None or len(series) < 3:
            return None
        early = sorted(v for _, v in series[:3])[1]  # median of the first three steps
        t = self.thresholds
        if now < t.entropy_floor and now < t.entropy_fraction * early:
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
        series = [v for _, v in self._series("health/truncated")]
        now = self._latest("health/truncated")
        if now is None or now <= self.thresholds.truncated_share or len(series) < 2:
            return None
        early = fmean(series[:2]) if len(series) > 2 else series[0]
        if now < early - 0.02:
            return None
        return HealthWarning(
            "truncation",
            f"{now:.0%} of replies hit the length limit (mean {self._latest('health/reply_tokens') or 0:.0f} tokens), "
            f"no fewer than early in the run ({early:.0%}); cut replies train on broken text",
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
        """Training reward up, validation success flat or down, over the last window of steps."""
        t = self.thresholds
        points = self._series("validation/success")
        if not points:
            return None
        step = points[-1][0]  # judged at each validation point; the verdict holds until the next one
        validation = [(s, v) for s, v in points if s >= step - t.hacking_window]
        (first_step, first), (_, last) = validation[0], validation[-1]
        if step - first_step < t.hacking_min_span or first >= 0.95:
            return None  # too short to judge, or validation has no room left to rise
        before = self._reward_window(first_step + 1, first_step + 2)  # rollouts of the policy validated at first_step
        after = self._reward_window(step - 1, step)
        if before is None or after is None:
            return None
        (mean_before, se_before), (mean_after, se_after) = before, after
        rise = mean_after - mean_before
        if rise > t.hacking_sigmas * math.hypot(se_before, se_after) and last <= first:
            return HealthWarning(
                "reward_hacking",
                f"training reward rose {mean_before:.3f} → {mean_after:.3f} between steps {first_step} and {step} "
                f"while validation success went {first:.0%} → {last:.0%}",
                "read the highest-reward trajectories: the reward (or the judge) pays for something validation does not; "
                "the best checkpoint by validation is kept",
            )
        return None

    def _reward_window(self, first: int, last: int) -> tuple[float, float] | None:
        """Mean training reward over steps first..last and its standard error."""
        rows = [r for r in self.history if first <= r["step"] <= last and _number(r.get("reward/mean"))]
        if not rows:
            return None
        n = sum(r.get("rollouts/ok") or 1 for r in rows)
        std = math.sqrt(fmean((r.get("reward/std") or 0.0) ** 2 for r in rows))
        return fmean(r["reward/mean"] for r in rows), std / math.sqrt(n)

    def _drift(self) -> HealthWarning | None:
        t = self.thresholds
        series = [v for _, v in self._series("judge/agreement")]
        if len(series) < 2 * t.drift_steps or self._latest("judge/agreement") is None:
            return None
        early, recent = fmean(series[: t.drift_steps]), fmean(series[-t.drift_steps :])
        if recent < early - t.drift_drop:
            return HealthWarning(
                "judge_drift",
                f"the judge agrees with the ground truth on {recent:.0%} of pairs lately, down from {early:.0%} early in the run",
                "the policy may be exploiting the judge: tighten the rubric, use a stronger judge, or mix in a code reward",
            )
        return None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
