"""Batch planning: which datums run through the trunk together, as plain index lists.

    plan = plan_micro_batches(datums, micro_batch_tokens=2048, min_shared_prefix=16)
    # [[Unit([4, 5, 6], prefix_len=30), Unit([2])], [Unit([0]), Unit([1])], ...]

A `Unit` is what the trainer's forward runs as one piece: one datum alone (prefix_len 0), or a group
of datums sharing their first `prefix_len` input tokens (a GRPO group's prompt), whose prefix runs
once and whose suffixes run on top of its repeated KV cache. Units are packed into micro-batches
whose padded cost (`padded_cost`) stays within `micro_batch_tokens`; a unit bigger than that alone
runs alone. Every datum is in exactly one unit of the plan.

Knows token ids and lengths only: no model, no tensors, no losses.
"""

from __future__ import annotations

from dataclasses import dataclass

from hone.types import Datum


@dataclass
class Unit:
    """Datums run together: one alone (prefix_len 0), or a group sharing `prefix_len` input tokens."""

    indices: list[int]
    prefix_len: int = 0


def plan_micro_batches(datums: list[Datum], micro_batch_tokens: int, min_shared_prefix: int) -> list[list[Unit]]:
    """Units (shared-prefix groups or single datums) packed into micro-batches by padded cost.

    `min_shared_prefix` is the fewest shared input tokens that make a group; 0 = no groups.
    """
    if min_shared_prefix > 0:
        units = prefix_groups(datums, min_shared_prefix)
    else:
        units = [Unit([i]) for i in range(len(datums))]
    units = [piece for unit in units for piece in split_group(unit, datums, micro_batch_tokens)]
    units.sort(key=lambda u: padded_cost([u], datums), reverse=True)  # longest first: rows of similar length
    plan: list[list[Unit]] = []
    for unit in units:
        if plan and padded_cost(plan[-1] + [unit], datums) <= micro_batch_tokens:
            plan[-1].append(unit)
        else:
            plan.append([unit])
    return plan


def prefix_groups(datums: list[Datum], min_shared_prefix: int) -> list[Unit]:
    """Sort by tokens and sweep: neighbours sharing ≥ min_shared_prefix tokens join one group,
    unless joining would shrink the shared prefix so much that the group saves fewer tokens."""
    order = sorted(range(len(datums)), key=lambda i: datums[i].input_tokens)
    groups: list[tuple[list[int], int]] = []
    members, prefix = [order[0]], len(datums[order[0]].input_tokens)
    for i in order[1:]:
        common = common_prefix(datums[members[0]].input_tokens[:prefix], datums[i].input_tokens)
        G = len(members)
        if common >= min_shared_prefix and G * common >= (G - 1) * prefix:
            members.append(i)
            prefix = common
        else:
            groups.append((members, prefix))
            members, prefix = [i], len(datums[i].input_tokens)
    groups.append((members, prefix))
    units = []
    for members, prefix in groups:
        prefix = min(prefix, min(len(datums[i].input_tokens) for i in members) - 1)  # every suffix ≥ 1 token
        if len(members) >= 2 and prefix >= min_shared_prefix:
            units.append(Unit(sorted(members), prefix))
        else:
            units.extend(Unit([i]) for i in sorted(members))
    return units


def split_group(unit: Unit, datums: list[Datum], micro_batch_tokens: int) -> list[Unit]:
    """A group too big for one micro-batch becomes several groups sharing the same prefix."""
    if unit.prefix_len == 0 or padded_cost([unit], datums) <= micro_batch_tokens:
        return [unit]
    suffix = max(len(datums[i].input_tokens) - unit.prefix_len for i in unit.indices)
    per_part = (micro_batch_tokens - unit.prefix_len) // suffix
    if per_part < 2:
        return [Unit([i]) for i in unit.indices]
    return [
        Unit(unit.indices[s : s + per_part], unit.prefix_len) if len(unit.indices[s : s + per_part]) > 1
        else Unit(unit.indices[s : s + per_part])
        for s in range(0, len(unit.indices), per_part)
    ]


def padded_cost(units: list[Unit], datums: list[Datum]) -> int:
    """Tokens the trunk runs for these units in one micro-batch, padding included: the singles as
    one right-padded batch (count × longest), each group as its prefix once plus G × its longest suffix."""
    singles = [len(datums[u.indices[0]].input_tokens) for u in units if u.prefix_len == 0]
    cost = len(singles) * max(singles) if singles else 0
    for u in units:
        if u.prefix_len > 0:
            suffix = max(len(datums[i].input_tokens) - u.prefix_len for i in u.indices)
            cost += u.prefix_len + len(u.indices) * suffix
    return cost


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    n = min(len(a), len(b))
    for k in range(n):
        if a[k] != b[k]:
            return k
    return n
