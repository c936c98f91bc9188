"""Scored trajectory groups to training datums.

Each trajectory's sampled turns become training sequences token for token. A turn joins the
sequence of an earlier turn when its prompt begins with exactly that sequence so far (a
conversation continued verbatim, as captured rollouts bridge them; the newest such sequence, so
interleaved conversations each stay whole); otherwise it starts a sequence of its own. Prompt and
tool tokens get weight 0; sampled tokens weight 1, with their sampler logprobs and the
trajectory's advantage. Tokens a grammar forced (the only one it allowed) get weight 0 unless
`train_forced_tokens`: the model made no choice there, and pushing their probability up or down
only moves mass the grammar would have overruled anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

from hone.rl.trajectory import SampledTurn, Trajectory, TrajectoryGroup
from hone.training.advantages import group_advantages, is_zero_variance
from hone.types import Datum


@dataclass
class GroupsToDatums:
    datums: list[Datum]
    groups_used: int
    groups_dropped_zero_variance: int
    groups_dropped_too_small: int


def datums_from_groups(groups: list[TrajectoryGroup], scale_by_std: bool = False, train_forced_tokens: bool = False) -> GroupsToDatums:
    """Advantages per group (reward − group mean), then datums; groups without signal are dropped."""
    datums: list[Datum] = []
    used = zero_variance = too_small = 0
    for group in groups:
        rewards_G = group.rewards
        if len(rewards_G) < 2:
            too_small += 1
            continue
        if is_zero_variance(rewards_G):
            zero_variance += 1
            continue
        used += 1
        for trajectory, advantage in zip(group.trajectories, group_advantages(rewards_G, scale_by_std=scale_by_std)):
            datums.extend(datums_from_trajectory(trajectory, advantage, train_forced_tokens))
    return GroupsToDatums(datums, used, zero_variance, too_small)


def datums_from_trajectory(trajectory: Trajectory, advantage: float, train_forced_tokens: bool = False) -> list[Datum]:
    datums = []
    for tokens, weights, logprobs in merged_sequences(trajectory.turns, train_forced_tokens):
        if not any(weights):
            continue
        advantages = [advantage * w for w in weights]
        datums.append(Datum.from_sequence(tokens, weights, logprobs, advantages))
    return datums


def merged_sequences(turns: list[SampledTurn], train_forced_tokens: bool) -> list[tuple[list[int], list[float], list[float]]]:
    sequences: list[tuple[list[int], list[float], list[float]]] = []
    for turn in turns:
        continued = next((s for s in reversed(sequences) if turn.prompt_tokens[: len(s[0])] == s[0]), None)
        if continued is not None:
            tokens, weights, logprobs = continued
            extra = turn.prompt_tokens[len(tokens) :]  # tool results and the next turn's header
        else:
            tokens, weights, logprobs = [], [], []
            sequences.append((tokens, weights, logprobs))
            extra = turn.prompt_tokens
        tokens.extend(extra)
        weights.extend([0.0] * len(extra))
        logprobs.extend([0.0] * len(extra))
        tokens.extend(turn.completion_tokens)
        if turn.completion_forced is None or train_forced_tokens:
            weights.extend([1.0] * len(turn.completion_tokens))
        else:
            weights.extend([0.0 if forced else 1.0 for forced in turn.completion_forced])
        logprobs.extend(turn.completion_logprobs)
    return sequences
