"""Learning from production, a round at a time: train on the traffic, gate, read the run's health.

    learner = TrafficLearner(backend, "agent", validate, validation_n=20)
    ... users are served by "agent" and send feedback ...
    result = await learner.round()            # steps on the traffic, then the gate, then the monitor
    for warning in result.warnings:
        print(warning.line(result.number))

The first round pins what NAME serves (hone.traffic.promotion.pin), so users keep the weights they
had until a candidate validates no worse. Each round's metrics (what the steps used and dropped,
the feedback reward, the gate's candidate and incumbent validation) go to a HealthMonitor: the
`feedback_gaming` warning starts when training on the feedback keeps lowering validation, and
`reward_hacking` when a promoted model's feedback rises while validation does not. A round whose
traffic gave nothing to learn from makes no step and no gate.

The gate's decisions are kept by the server with their validation figures, and a new learner reads
them back into its monitor: rounds run by separate processes (a cron job, a restarted run) are
judged as one run, and a warning already raised is not raised again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from hone.monitor.health import HealthMonitor, HealthWarning, stop_codes
from hone.traffic.promotion import GateDecision, Validate, gate, pin
from hone.traffic.train import Score, TrafficTrainConfig, train_from_traffic


@dataclass
class TrafficRound:
    number: int  # 1, 2, ... over this learner's life
    metrics: dict[str, float]  # the last step's, the steps made, and the gate's validation/...
    decision: GateDecision | None  # None: nothing to learn from, so nothing to gate
    warnings: list[HealthWarning] = field(default_factory=list)  # the ones that started this round
    stop: bool = False  # one of them is in stop_on

    def line(self) -> str:
        """What a person reads after each round."""
        used = f"{self.metrics.get('traffic/scored', 0):.0f} scored replies in {self.metrics.get('traffic/groups', 0):.0f} groups"
        if self.decision is None:
            return f"round {self.number}: no step, nothing to learn from ({used})"
        d = self.decision
        verdict = "promoted" if d.promoted else "refused"
        return (
            f"round {self.number}: {self.metrics.get('traffic/steps', 0):.0f} step(s) on {used}, mean reward "
            f"{self.metrics.get('reward/mean', float('nan')):.2f}; candidate {d.candidate_score:.1%} vs served "
            f"{d.incumbent_score:.1%} -> {verdict}; now serving {d.serving}"
        )


class TrafficLearner:
    """Rounds of train-from-traffic and gate for one served model, with a health monitor across them."""

    def __init__(
        self,
        backend: Any,
        name: str,
        validate: Validate,
        config: TrafficTrainConfig = TrafficTrainConfig(),
        *,
        steps_per_round: int = 1,
        tolerance: float = 0.0,
        validation_n: int | None = None,
        score: Score | None = None,
        monitor: HealthMonitor | None = None,
        stop_on: Sequence[str] = (),
    ):
        self.backend, self.name, self.validate, self.config = backend, name, validate, config
        self.steps_per_round, self.tolerance, self.validation_n, self.score = steps_per_round, tolerance, validation_n, score
        self.monitor = monitor or HealthMonitor()
        self.stop_codes = stop_codes(stop_on)
        self.rounds: int | None = None  # rounds so far, counting the gates of earlier learners; read at the first round

    async def round(self) -> TrafficRound:
        await pin(self.backend, self.name)
        if self.rounds is None:
            self.rounds = self._replay_earlier_gates()
        self.rounds += 1
        metrics: dict[str, float] = {}
        steps = 0
        for _ in range(self.steps_per_round):
            trained = await train_from_traffic(self.backend, self.name, self.config, self.score)
            if trained.get("train/skipped"):
                metrics = metrics or trained  # the last step that trained says more than the one that found nothing
                break
            metrics, steps = trained, steps + 1
        metrics["traffic/steps"] = float(steps)
        decision = None
        if steps:
            decision = await gate(self.backend, self.name, self.validate, self.tolerance, validation_n=self.validation_n)
            metrics.update(decision.metrics())
        warnings = self.monitor.check(self.rounds, metrics)
        return TrafficRound(self.rounds, metrics, decision, warnings, any(w.code in self.stop_codes for w in warnings))

    def _replay_earlier_gates(self) -> int:
        history = self.backend.promotions(self.name)["history"]
        gates = [h["metrics"] for h in history if "validation/candidate" in (h.get("metrics") or {})]
        self.monitor.replay([{"step": number, **metrics} for number, metrics in enumerate(gates, start=1)])
        return len(gates)
