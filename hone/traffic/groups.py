"""Logged traffic and its feedback, made into trajectory groups a training step can use.

- **A trajectory** is one choice of one logged completion, its reward the newest feedback on that
  choice; or, for a rollout with feedback of its own, the rollout's calls in order as one
  multi-turn trajectory with that reward. The tokens and sampler logprobs are the ones served, so
  the clipped importance-sampled loss corrects for the version that served them.
- **Malformed replies** (a rejected tool call, an empty reply) get `malformed_reward` whatever
  the feedback said: filtered out they would teach nothing, and feedback that liked them would
  teach the model to emit them.
- **Stale data**: served by a version more than `max_staleness` steps from the model's current
  step (either way: a rollback makes newer data stale too) is dropped and counted; of the rest,
  only the newest `max_completions` are used (a gate that keeps resetting the weights would
  otherwise leave every old reply fresh, and each step would grow).
- **Groups** share a task key: the client's `task_key` (or the rollout's task id), else the same
  prompt tokens. A task seen once has no baseline to compare with: dropped and counted.
- **Unscored** replies (no feedback, not malformed) are left out and counted, unless a `score`
  hook (a relative judge) rates a group of them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from hone.rl.trajectory import SampledTurn, Trajectory, TrajectoryGroup
from hone.traffic.log import Feedback, LoggedCompletion, ServedChoice


@dataclass(frozen=True)
class TrafficDataConfig:
    max_staleness: int = 4  # steps between the serving version and the model now
    max_completions: int = 256  # the newest fresh completions a step uses
    malformed_reward: float = -1.0
    min_group_size: int = 2


@dataclass
class TrafficBatch:
    groups: list[TrajectoryGroup]
    unscored: dict[str, list[Trajectory]]  # by task key: what a judge could still rate
    counts: dict[str, int] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        return {f"traffic/{k}": float(v) for k, v in self.counts.items()}


def is_malformed(choice: ServedChoice) -> bool:
    """A reply no user could use: a tool call the server rejected, or nothing at all."""
    message = choice.message or {}
    return choice.tool_call_error is not None or (not (message.get("content") or "").strip() and not message.get("tool_calls"))


def groups_from_traffic(
    completions: list[LoggedCompletion], feedback: list[Feedback], current_step: int, config: TrafficDataConfig = TrafficDataConfig()
) -> TrafficBatch:
    counts = dict.fromkeys(
        ("completions", "stale_dropped", "malformed_penalised", "scored", "unscored", "rollouts_scored", "singletons_dropped", "groups"), 0
    )
    by_choice: dict[tuple[str, int], float] = {}
    by_rollout: dict[str, float] = {}
    for item in sorted(feedback, key=lambda f: f.created):  # the newest feedback wins
        if item.completion_id is not None:
            by_choice[(item.completion_id, item.choice)] = item.reward
        elif item.rollout_id is not None:
            by_rollout[item.rollout_id] = item.reward

    fresh = []
    for completion in completions:
        counts["completions"] += 1
        if abs(current_step - completion.step) > config.max_staleness:
            counts["stale_dropped"] += 1
        else:
            fresh.append(completion)
    fresh.sort(key=lambda c: c.created)
    counts["older_left_out"] = max(len(fresh) - config.max_completions, 0)
    fresh = fresh[-config.max_completions :]

    scored: dict[str, list[Trajectory]] = defaultdict(list)
    unscored: dict[str, list[Trajectory]] = defaultdict(list)
    rollouts: dict[str, list[LoggedCompletion]] = defaultdict(list)
    for completion in fresh:
        if completion.rollout_id is not None and completion.rollout_id in by_rollout:
            rollouts[completion.rollout_id].append(completion)
            continue
        for index, choice in enumerate(completion.choices):
            trajectory = _trajectory([(completion, choice)])
            reward = by_choice.get((completion.id, index))
            if is_malformed(choice):
                reward = config.malformed_reward
                counts["malformed_penalised"] += 1
            if reward is None:
                counts["unscored"] += 1
                unscored[_key(completion)].append(trajectory)
                continue
            trajectory.reward = reward
            counts["scored"] += 1
            scored[_key(completion)].append(trajectory)
    for rollout_id, calls in rollouts.items():
        calls.sort(key=lambda c: c.created)
        trajectory = _trajectory([(c, c.choices[0]) for c in calls])
        malformed = any(is_malformed(c.choices[0]) for c in calls)
        counts["malformed_penalised"] += int(malformed)
        trajectory.reward = config.malformed_reward if malformed else by_rollout[rollout_id]
        trajectory.metadata["rollout_id"] = rollout_id
        counts["rollouts_scored"] += 1
        scored[_key(calls[0])].append(trajectory)

    groups = []
    for key, trajectories in scored.items():
        if len(trajectories) < config.min_group_size:
            counts["singletons_dropped"] += len(trajectories)
            continue
        groups.append(TrajectoryGroup(trajectories=trajectories, metadata={"task_key": key}))
    counts["groups"] = len(groups)
    return TrafficBatch(groups, dict(unscored), counts)


def _key(completion: LoggedCompletion) -> str:
    return f"task:{completion.task_key}" if completion.task_key is not None else f"prompt:{completion.prompt_hash}"


def _trajectory(calls: list[tuple[LoggedCompletion, ServedChoice]]) -> Trajectory:
    """The calls' sampled turns, token for token; the last call's messages and reply for readers."""
    turns = [
        SampledTurn(
            prompt_tokens=completion.prompt_token_ids,
            completion_tokens=choice.token_ids,
            completion_logprobs=choice.logprobs,
            completion_forced=choice.forced,
            finish_reason="length" if choice.finish_reason == "length" else "stop",
            tool_call_error=choice.tool_call_error,
        )
        for completion, choice in calls
    ]
    last, reply = calls[-1]
    message = {k: v for k, v in reply.message.items() if v is not None}
    return Trajectory(
        messages=[*last.request.get("messages", []), message],
        tools=last.request.get("tools"),
        turns=turns,
        metadata={"completion_id": last.id, "version": last.version},
    )
