import json
import math
import time

import numpy as np
import pytest

from hone.rl.stats import cluster_bootstrap, compare, mcnemar, paired_difference


def discordant(before_only: int, after_only: int, both: int = 0, neither: int = 0) -> tuple[list[bool], list[bool]]:
    """Paired outcomes with the given counts of each (before, after) combination."""
    pairs = [(True, False)] * before_only + [(False, True)] * after_only + [(True, True)] * both + [(False, False)] * neither
    return [b for b, _ in pairs], [a for _, a in pairs]


# --- McNemar ------------------------------------------------------------------------------------


def test_mcnemar_matches_a_hand_computed_exact_p_value():
    before, after = discordant(before_only=1, after_only=9, both=5, neither=3)
    result = mcnemar(before, after)
    # two-sided exact: 2 * (C(10,9) + C(10,10)) / 2^10 = 2 * 11 / 1024
    assert result == {"n": 18, "before_only": 1, "after_only": 9, "both": 5, "neither": 3, "p_value": pytest.approx(0.021484375)}
    assert 2 * sum(math.comb(10, k) for k in (9, 10)) / 2**10 == 0.021484375


def test_mcnemar_is_symmetric_when_before_and_after_swap():
    before, after = discordant(before_only=3, after_only=11, both=7, neither=2)
    forward, backward = mcnemar(before, after), mcnemar(after, before)
    assert forward["p_value"] == backward["p_value"]
    assert (forward["before_only"], forward["after_only"]) == (backward["after_only"], backward["before_only"])


def test_mcnemar_gives_p_one_without_discordant_pairs_and_with_balanced_ones():
    before, after = discordant(before_only=0, after_only=0, both=6, neither=4)
    assert mcnemar(before, after)["p_value"] == 1.0
    assert mcnemar([], [])["p_value"] == 1.0
    assert mcnemar(*discordant(before_only=4, after_only=4))["p_value"] == 1.0


def test_mcnemar_agrees_with_scipy_binomtest_when_scipy_is_installed():
    stats = pytest.importorskip("scipy.stats")
    for b, c in [(1, 9), (0, 5), (7, 3), (20, 31), (150, 190)]:
        expected = stats.binomtest(c, b + c, 0.5).pvalue
        assert mcnemar(*discordant(b, c))["p_value"] == pytest.approx(expected, rel=1e-9)


def test_mcnemar_rejects_unpaired_outcomes():
    with pytest.raises(ValueError, match="pair up"):
        mcnemar([True, False], [True])


# --- cluster bootstrap ----------------------------------------------------------------------------


def test_cluster_bootstrap_interval_contains_the_mean_and_is_reproducible():
    rng = np.random.default_rng(1)
    values = rng.random(60)
    clusters = [f"inbox-{i % 12}" for i in range(60)]
    low, high = cluster_bootstrap(values, clusters, seed=3)
    assert low < values.mean() < high
    assert cluster_bootstrap(values, clusters, seed=3) == (low, high)
    assert cluster_bootstrap(values, clusters, seed=4) != (low, high)


def test_cluster_bootstrap_is_wider_when_values_are_correlated_within_clusters():
    values = [1.0] * 30 + [0.0] * 30  # the same 60 values, mean 0.5, in two arrangements
    correlated = [i // 5 for i in range(60)]  # 12 clusters of 5, each all ones or all zeros
    spread = [i % 12 for i in range(60)]  # 12 clusters of 5, each a mix of ones and zeros
    low_c, high_c = cluster_bootstrap(values, correlated, seed=0)
    low_s, high_s = cluster_bootstrap(values, spread, seed=0)
    assert high_c - low_c > 3 * (high_s - low_s)
    assert low_c < 0.5 < high_c


def test_cluster_bootstrap_edge_cases():
    assert all(math.isnan(x) for x in cluster_bootstrap([], []))
    assert cluster_bootstrap([1.0, 0.0, 1.0, 1.0], ["only"] * 4) == (0.75, 0.75)
    with pytest.raises(ValueError, match="cluster"):
        cluster_bootstrap([1.0, 0.0], ["a"])
    with pytest.raises(ValueError, match="level"):
        cluster_bootstrap([1.0, 0.0], ["a", "b"], level=95)


def test_cluster_bootstrap_weighs_unequal_clusters_by_their_size():
    # Half the resamples draw each cluster once; their mean must be the pooled 9/10, not the mean of
    # the two cluster means (1/2). A narrow interval around the median lands on exactly those.
    values = [1.0] * 9 + [0.0]
    clusters = ["big"] * 9 + ["small"]
    low, high = cluster_bootstrap(values, clusters, n_resamples=4000, seed=0, level=0.02)
    assert (low, high) == pytest.approx((0.9, 0.9))


def test_cluster_bootstrap_is_fast():
    rng = np.random.default_rng(0)
    values = rng.random(150)
    clusters = rng.integers(0, 15, size=150).tolist()
    started = time.perf_counter()
    cluster_bootstrap(values, clusters, n_resamples=2000)
    assert time.perf_counter() - started < 0.1


def test_cluster_bootstrap_covers_the_true_mean_under_clustered_bernoulli_data():
    # 12 inboxes x 10 questions; each inbox has its own success rate drawn from Beta(2, 3), so the
    # true mean is exactly 0.4 and questions in an inbox are correlated. Treating the 120 questions
    # as independent would under-cover badly; resampling inboxes should come close to 95%.
    rng = np.random.default_rng(2024)
    true_mean, n_datasets, n_clusters, per_cluster = 0.4, 200, 12, 10
    clusters = np.repeat(np.arange(n_clusters), per_cluster)
    covered = 0
    for dataset in range(n_datasets):
        rates = rng.beta(2, 3, size=n_clusters)
        values = (rng.random((n_clusters, per_cluster)) < rates[:, None]).astype(float).ravel()
        low, high = cluster_bootstrap(values, clusters, n_resamples=1000, seed=dataset)
        covered += low <= true_mean <= high
    assert 0.85 * n_datasets <= covered <= 0.99 * n_datasets


# --- paired difference and the report -------------------------------------------------------------


def test_paired_difference_has_the_right_sign_and_value():
    before = [0, 0, 1, 0, 1, 0, 0, 1]
    after = [1, 0, 1, 1, 1, 1, 0, 1]  # three questions fixed, none broken
    clusters = ["a", "a", "b", "b", "c", "c", "d", "d"]
    result = paired_difference(before, after, clusters, seed=0)
    assert result["difference"] == pytest.approx(3 / 8)
    low, high = result["ci95"]
    assert 0 <= low <= 3 / 8 <= high
    assert paired_difference(after, before, clusters, seed=0)["difference"] == pytest.approx(-3 / 8)


def test_compare_returns_plain_json_ready_types():
    before, after = discordant(before_only=2, after_only=8, both=10, neither=10)
    clusters = [i % 6 for i in range(len(before))]
    report = compare(np.array(before), np.array(after), clusters, seed=1)
    assert json.loads(json.dumps(report)) == report

    def plain(node):
        if isinstance(node, dict):
            return all(isinstance(k, str) and plain(v) for k, v in node.items())
        if isinstance(node, list):
            return all(plain(v) for v in node)
        return type(node) in (int, float)

    assert plain(report)
    assert report["before"]["success"] == pytest.approx(12 / 30)
    assert report["after"]["success"] == pytest.approx(18 / 30)
    assert report["difference"]["difference"] == pytest.approx(6 / 30)
    assert report["mcnemar"]["before_only"] == 2 and report["mcnemar"]["after_only"] == 8
    for part in ("before", "after"):
        low, high = report[part]["ci95"]
        assert low <= report[part]["success"] <= high
