"""Honest statistics for a paired before/after evaluation on the same held-out questions.

Questions come clustered by inbox (several questions read the same inbox), so they are not
independent: an agent that misreads one inbox tends to miss all of its questions. Intervals that
treat each question as its own draw are then too narrow. Here intervals come from a bootstrap that
resamples whole clusters, and the before/after change is tested with McNemar's exact test, which
uses only the questions whose outcome changed.

    report = compare(before_correct, after_correct, inbox_ids, seed=0)   # JSON-ready dict
"""

from __future__ import annotations

import math
from typing import Any, Hashable, Sequence

import numpy as np


def mcnemar(before: Sequence[bool], after: Sequence[bool]) -> dict[str, Any]:
    """Exact McNemar test: did the change flip more questions one way than the other?

    Only discordant pairs carry information: b = right before and wrong after, c = wrong before
    and right after. Under "no change" each discordant pair is a fair coin, so the two-sided p-value
    is the exact binomial test of c out of b + c at 1/2 (the same as `scipy.stats.binomtest(c, b + c,
    0.5)`, computed here with exact integers so scipy is not needed). p = 1.0 with no discordant pairs.
    """
    if len(before) != len(after):
        raise ValueError(f"before and after must pair up question by question, but have {len(before)} and {len(after)} outcomes")
    pairs = [(bool(x), bool(y)) for x, y in zip(before, after)]
    before_only = sum(x and not y for x, y in pairs)
    after_only = sum(y and not x for x, y in pairs)
    return {
        "n": len(pairs),
        "before_only": before_only,
        "after_only": after_only,
        "both": sum(x and y for x, y in pairs),
        "neither": sum(not x and not y for x, y in pairs),
        "p_value": _two_sided_sign_test(after_only, before_only + after_only),
    }


def _two_sided_sign_test(successes: int, trials: int) -> float:
    """Exact two-sided binomial p-value at probability 1/2.

    The distribution is symmetric, so the outcomes at least as unlikely as the observed one are
    the two tails beyond min(k, n - k): p = 2 * P(X <= min(k, n - k)), capped at 1.
    """
    if trials == 0:
        return 1.0
    tail = min(successes, trials - successes)
    tail_count = sum(math.comb(trials, k) for k in range(tail + 1))
    return min(1.0, 2 * tail_count / 2**trials)  # int / int is correctly rounded even for huge n


def cluster_bootstrap(
    values: Sequence[float],
    clusters: Sequence[Hashable],
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of `values`, resampling whole clusters.

    Each resample draws k clusters with replacement out of the k distinct ones and takes the mean
    over all their pooled values, so correlation within a cluster widens the interval as it should.
    Deterministic for a seed. Edge cases: empty input gives (nan, nan); a single cluster gives
    (mean, mean), because one cluster says nothing about how clusters vary: a degenerate
    interval, not a certain one.
    """
    if len(values) != len(clusters):
        raise ValueError(f"every value needs a cluster, but there are {len(values)} values and {len(clusters)} cluster labels")
    if not 0 < level < 1:
        raise ValueError(f"level must be strictly between 0 and 1, not {level}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, not {n_resamples}")
    if len(values) == 0:
        return (math.nan, math.nan)

    sums, counts = _cluster_sums_and_counts(values, clusters)
    if len(sums) == 1:
        mean = float(sums[0] / counts[0])
        return (mean, mean)

    # One row of cluster indices per resample; the pooled mean of a resample is the sum of its
    # clusters' sums over the sum of their sizes (clusters of unequal size weigh by their size).
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sums), size=(n_resamples, len(sums)))
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return (float(low), float(high))


def _cluster_sums_and_counts(values: Sequence[float], clusters: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster sum and size, in order of first appearance (labels need only be hashable)."""
    index: dict[Hashable, int] = {}
    codes = np.array([index.setdefault(label, len(index)) for label in clusters], dtype=np.intp)
    sums = np.bincount(codes, weights=np.asarray(values, dtype=float), minlength=len(index))
    counts = np.bincount(codes, minlength=len(index)).astype(float)
    return sums, counts


def paired_difference(
    before: Sequence[float],
    after: Sequence[float],
    clusters: Sequence[Hashable],
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Mean change after - before, with a cluster-bootstrap interval on the per-question differences.

    Bootstrapping the differences (not the two means separately) keeps each question paired with
    itself, which removes the shared difficulty of a question from the interval. The interval is
    under "ci95" whatever `level` is, for a stable report key.
    """
    if len(before) != len(after):
        raise ValueError(f"before and after must pair up question by question, but have {len(before)} and {len(after)} outcomes")
    differences = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    difference = float(differences.mean()) if len(differences) else math.nan
    ci = cluster_bootstrap(differences, clusters, n_resamples=n_resamples, seed=seed, level=level)
    return {"difference": difference, "ci95": ci}


def compare(
    before: Sequence[bool],
    after: Sequence[bool],
    clusters: Sequence[Hashable],
    seed: int = 0,
) -> dict[str, Any]:
    """One JSON-ready summary of a before/after evaluation: success rates, their change, McNemar.

    Plain floats, ints and lists only, so `json.dumps` takes it as it is (empty input gives NaN
    intervals, which json.dumps writes as NaN).
    """
    if len(before) != len(after):
        raise ValueError(f"before and after must pair up question by question, but have {len(before)} and {len(after)} outcomes")

    def success(outcomes: Sequence[bool]) -> dict[str, Any]:
        values = [float(bool(x)) for x in outcomes]
        mean = sum(values) / len(values) if values else math.nan
        return {"success": mean, "ci95": list(cluster_bootstrap(values, clusters, seed=seed))}

    change = paired_difference([float(bool(x)) for x in before], [float(bool(x)) for x in after], clusters, seed=seed)
    return {
        "before": success(before),
        "after": success(after),
        "difference": {"difference": change["difference"], "ci95": list(change["ci95"])},
        "mcnemar": mcnemar(before, after),
    }
