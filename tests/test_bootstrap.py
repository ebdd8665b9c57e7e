"""Intervals of layerwise.analyses.similarity, tested by their coverage in simulation.

An interval is checked by how often it covers a population value known independently of the
package (closed forms for Gaussian data, written here), never by ``low < value < high``.
Simulations are seeded and small; ``python tests/test_bootstrap.py`` prints the figures.
"""

from __future__ import annotations

import functools
import itertools
import sys
import warnings

import numpy as np
import pytest

import layerwise.analyses.similarity as sim
from benchmarks import schema
from layerwise.analyses.similarity import (
    METRICS,
    UndefinedSimilarityWarning,
    bootstrap_ci,
    cka_debiased,
    mutual_knn,
    similarity_table,
)
from layerwise.analyses.similarity.gram import _GramComputation

#: called with the schema's defaults (benchmarks/schema.py) unless a test says otherwise
similarity_table = schema.with_defaults(similarity_table, "similarity", max_rows=None)

N_SIM, N_BOOT = 100, 100

# --------------------------------------------------------------------------------------
# Population values of jointly Gaussian layers X ~ N(0, Sxx), Y = X B + N(0, s² I)
# --------------------------------------------------------------------------------------


def _inv_sqrt(S):
    w, V = np.linalg.eigh(S)
    return (V / np.sqrt(w)) @ V.T


def _gauss_rbf_mean(cov, precision):
    """E exp(-zᵀ Q z / 2) for z ~ N(0, cov), Q = precision (diagonal)."""
    return np.linalg.det(np.eye(len(cov)) + np.diag(precision) @ cov) ** -0.5


def _rbf_hsic(S11, S12, S22, bw1, bw2):
    """Population HSIC of RBF kernels exp(-d²/(2 bw)) for jointly Gaussian (x, y):
    E k l + E k E l - 2 E k(x, x') l(y, y''), each a Gaussian integral of differences."""
    p, q = len(S11), len(S22)
    prec = np.r_[np.full(p, 1 / bw1), np.full(q, 1 / bw2)]
    same = _gauss_rbf_mean(2 * np.block([[S11, S12], [S12.T, S22]]), prec)
    three = _gauss_rbf_mean(np.block([[2 * S11, S12], [S12.T, 2 * S22]]), prec)
    apart = _gauss_rbf_mean(2 * S11, prec[:p]) * _gauss_rbf_mean(2 * S22, prec[p:])
    return same + apart - 2 * three


def linear_cka(Sxx, B, noise):
    """||Σxy||² / (||Σxx|| ||Σyy||) of the population covariances."""
    Sxy = Sxx @ B
    Syy = B.T @ Sxx @ B + noise**2 * np.eye(B.shape[1])
    return np.linalg.norm(Sxy) ** 2 / (np.linalg.norm(Sxx) * np.linalg.norm(Syy))


def population(Sxx, B, noise, *, threshold=0.5, n=None, knn_k=10, seed=0):
    """Population value of every metric (mutual k-NN: its mean at n rows, by Monte Carlo)."""
    rng = np.random.default_rng(seed)
    Sxy = Sxx @ B
    Syy = B.T @ Sxx @ B + noise**2 * np.eye(B.shape[1])
    out = {"cka_linear": linear_cka(Sxx, B, noise)}
    out["cka_debiased"] = out["cka_linear"]
    # CCA of the population covariances; PWCCA weights by Morcos' formula on X's neurons
    U, rho, _ = np.linalg.svd(_inv_sqrt(Sxx) @ Sxy @ _inv_sqrt(Syy))
    A = _inv_sqrt(Sxx) @ U[:, : len(rho)]  # unit-variance canonical directions of X
    alpha = np.abs(Sxx @ A).sum(axis=0)  # Σ_j |cov(u_i, x_j)|
    out["svcca"], out["pwcca"] = rho.mean(), alpha @ rho / alpha.sum()
    # RBF: the bandwidth is t² times the median of |x - x'|², x - x' ~ N(0, 2 S)
    big = 200_000
    dx = rng.multivariate_normal(np.zeros(len(Sxx)), 2 * Sxx, big)
    dy = rng.multivariate_normal(np.zeros(len(Syy)), 2 * Syy, big)
    bx, by = (threshold**2 * np.median((d**2).sum(1)) for d in (dx, dy))
    out["cka_rbf"] = _rbf_hsic(Sxx, Sxy, Syy, bx, by) / np.sqrt(
        _rbf_hsic(Sxx, Sxx, Sxx, bx, bx) * _rbf_hsic(Syy, Syy, Syy, by, by))
    X, Y = sample(Sxx, B, noise, big, rng)
    out["cosine"] = float(np.mean((X * Y).sum(1) / np.linalg.norm(X, axis=1)
                                  / np.linalg.norm(Y, axis=1)))
    if n is not None:
        out["mutual_knn"] = float(np.mean([mutual_knn(*sample(Sxx, B, noise, n, rng), k=knn_k)
                                           for _ in range(200)]))
    return out


def sample(Sxx, B, noise, n, rng):
    X = rng.multivariate_normal(np.zeros(len(Sxx)), Sxx, n)
    return X, X @ B + noise * rng.standard_normal((n, B.shape[1]))


@functools.cache
def correlated_design(n=100, p=5):
    rng = np.random.default_rng(2024)
    Sxx = np.diag(np.geomspace(4.0, 0.25, p))
    B = rng.standard_normal((p, p)) / np.sqrt(p)
    return Sxx, B, 1.0, population(Sxx, B, 1.0, n=n), n


@functools.cache
def correlated_runs():
    """Every metric's value and interval over N_SIM samples of the correlated design."""
    Sxx, B, noise, _, n = correlated_design()
    rng = np.random.default_rng(7)
    runs = []
    for s in range(N_SIM):
        X, Y = sample(Sxx, B, noise, n, rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedSimilarityWarning)
            table = similarity_table({"x": X}, {"y": Y}, metrics=list(METRICS), model_a="m",
                                     model_b="m", span="word", pooling="mean", n_boot=N_BOOT,
                                     seed=s, progress=False)
        runs.append(table.set_index("metric"))
    return runs


# --------------------------------------------------------------------------------------
# Coverage
# --------------------------------------------------------------------------------------


def test_debiased_cka_interval_covers_zero_for_independent_layers():
    """The issue: 0 of 40. Independent layers have population CKA 0."""
    rng = np.random.default_rng(1)
    covered = 0
    for s in range(N_SIM):
        X, Y = rng.standard_normal((80, 8)), rng.standard_normal((80, 8))
        low, high = bootstrap_ci(cka_debiased, X, Y, n_boot=N_BOOT, seed=s)
        covered += low <= 0.0 <= high
    assert covered / N_SIM >= 0.90


@pytest.mark.parametrize("metric", list(METRICS))
def test_interval_covers_the_population_value(metric):
    truth = correlated_design()[3][metric]
    runs = correlated_runs()
    covered = np.mean([r.loc[metric, "ci_low"] <= truth <= r.loc[metric, "ci_high"]
                       for r in runs])
    assert covered >= 0.85, (metric, truth, covered)


@pytest.mark.parametrize("metric", sorted(set(METRICS) - {"cka_rbf"}))
def test_interval_contains_its_estimate(metric):
    runs = correlated_runs()
    inside = np.mean([r.loc[metric, "ci_low"] <= r.loc[metric, "value"] <= r.loc[metric, "ci_high"]
                      for r in runs])
    assert inside >= 0.95


def test_rbf_cka_is_never_below_its_interval_as_documented():
    """RBF CKA (the biased estimator) overshoots its population value, at this n often by
    more than the interval's half-width; bootstrap_ci's Notes say so."""
    runs = correlated_runs()
    value, low, high = (np.array([r.loc["cka_rbf", c] for r in runs])
                        for c in ("value", "ci_low", "ci_high"))
    assert (value >= low).all() and np.mean(value > high) >= 0.3
    assert "RBF CKA is biased upwards" in " ".join(bootstrap_ci.__doc__.split())


CLUSTER_SXX = np.diag(np.geomspace(3.0, 0.3, 5))
CLUSTER_B = np.random.default_rng(5).standard_normal((5, 5)) / np.sqrt(5)


def clustered(n_groups, size, rng, share=0.7):
    """Rows in clusters (e.g. words of an utterance) sharing a random effect: marginally
    the Gaussian design of ``population`` (noise 1), dependent within a cluster."""
    group = np.repeat(np.arange(n_groups), size)

    def part(width):
        shared = rng.standard_normal((n_groups, width))[group]
        return np.sqrt(share) * shared + np.sqrt(1 - share) * rng.standard_normal((len(group),
                                                                                     width))

    X = part(5) * np.sqrt(np.diag(CLUSTER_SXX))
    return X, X @ CLUSTER_B + part(5), group


def cluster_coverage():
    """Coverage of linear CKA's interval with and without the clusters as groups."""
    rng = np.random.default_rng(3)
    truth = linear_cka(CLUSTER_SXX, CLUSTER_B, 1.0)
    by_group = by_row = 0
    for s in range(N_SIM):
        X, Y, group = clustered(50, 3, rng)
        low, high = bootstrap_ci(cka_debiased, X, Y, n_boot=N_BOOT, seed=s, groups=group)
        by_group += low <= truth <= high
        low, high = bootstrap_ci(cka_debiased, X, Y, n_boot=N_BOOT, seed=s)
        by_row += low <= truth <= high
    return by_group / N_SIM, by_row / N_SIM


def test_cluster_bootstrap_covers_where_rows_of_a_cluster_are_dependent():
    by_group, by_row = cluster_coverage()
    assert by_group >= 0.85
    assert by_row < by_group  # rows resampled alone understate the uncertainty


@functools.cache
def block_coverage():
    """Coverage of debiased CKA's interval with more clusters (200 of 3 rows) than
    ``MAX_UNITS``: resampled as blocks of consecutive clusters, and, for comparison, as the
    clusters themselves (``MAX_UNITS`` raised)."""
    truth = linear_cka(CLUSTER_SXX, CLUSTER_B, 1.0)
    covered = {}
    for name, max_units in (("blocks", sim.MAX_UNITS), ("clusters", 10**6)):
        rng = np.random.default_rng(4)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sim._intervals, "MAX_UNITS", max_units)
            hits = 0
            for s in range(N_SIM):
                X, Y, group = clustered(200, 3, rng)
                # the engine of the workflow's exact metrics (equal to bootstrap_ci's,
                # tests/test_similarity_scale.py), which the blocks are for
                gram = _GramComputation([X], [Y], ["X"], ["Y"], ["cka_debiased"],
                                        n_boot=N_BOOT, seed=s, svcca_components=None,
                                        codes=sim._group_codes(group, len(group)))
                gram.run()
                low, high = (float(v[0, 0]) for v in gram.interval("cka_debiased"))
                hits += low <= truth <= high
        covered[name] = hits / N_SIM
    return covered


def test_blocks_of_clusters_cover_as_the_clusters_do():
    """Beyond MAX_UNITS clusters a replicate draws blocks of them (so that the exact metrics
    cost one pass over the rows for every replicate); the interval still covers."""
    covered = block_coverage()
    assert covered["blocks"] >= 0.88
    assert covered["blocks"] >= covered["clusters"] - 0.05


# --------------------------------------------------------------------------------------
# The procedures themselves, against brute force
# --------------------------------------------------------------------------------------


def u_hsic_over_distinct_rows(K, L, w):
    """Song et al.'s HSIC U-statistic over 4-tuples of distinct rows, each tuple weighted
    by the product of its rows' weights (copies of a row never pair with each other)."""
    num = den = 0.0
    for i, j, q, r in itertools.permutations(range(len(w)), 4):
        weight = w[i] * w[j] * w[q] * w[r]
        num += weight * (K[i, j] * L[i, j] + K[i, j] * L[q, r] - 2 * K[i, j] * L[i, q])
        den += weight
    return num / den


def rbf_of_replicate(X, w, threshold):
    """RBF kernel with the bandwidth of a replicate: the median over pairs of distinct rows
    of the resample (pairs of copies left out) and one zero per resampled row."""
    D2 = ((X[:, None] - X[None]) ** 2).sum(-1)
    iu = np.triu_indices(len(w), 1)
    values = np.concatenate([np.zeros(int(w.sum())),
                             np.repeat(D2[iu], (2 * np.outer(w, w)[iu]).astype(int))])
    return np.exp(-D2 / (2 * threshold**2 * np.median(values)))


def test_replicates_are_u_statistics_without_pairs_of_copies():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((7, 3)) + 2.0
    Y = X[:, :2] ** 2 + rng.standard_normal((7, 2))
    w = np.array([2.0, 0.0, 1.0, 3.0, 1.0, 0.0, 1.0])
    computation = sim._TableComputation(
        [X], [Y], ["x"], ["y"], ["cka_debiased", "cka_rbf"], n_boot=1, seed=0, codes=None,
        knn_k=3, rbf_threshold=0.7, svcca_components=None)
    computation.weights = [w]
    computation.run()
    for metric, (K, L) in {
        "cka_debiased": (X @ X.T, Y @ Y.T),
        "cka_rbf": (rbf_of_replicate(X, w, 0.7), rbf_of_replicate(Y, w, 0.7)),
    }.items():
        cka = u_hsic_over_distinct_rows(K, L, w) / np.sqrt(
            u_hsic_over_distinct_rows(K, K, w) * u_hsic_over_distinct_rows(L, L, w))
        assert computation.replicates[metric][0, 0, 0] == pytest.approx(cka, rel=1e-9)


def test_linear_and_debiased_cka_share_one_interval_and_rbf_is_centred_on_its_u_statistic():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((50, 4))
    Y = X + rng.standard_normal((50, 4))
    low, high = bootstrap_ci(cka_debiased, X, Y, n_boot=30, seed=2)
    assert bootstrap_ci("cka_linear", X, Y, n_boot=30, seed=2) == (max(low, 0.0), high)
    Z = rng.standard_normal((50, 4))  # unrelated: the debiased interval reaches below 0
    low, high = bootstrap_ci(cka_debiased, X, Z, n_boot=30, seed=2)
    assert low < 0.0 < high
    assert bootstrap_ci("cka_linear", X, Z, n_boot=30, seed=2) == (0.0, high)
    computation = sim._TableComputation(
        [X], [Y], ["x"], ["y"], ["cka_rbf"], n_boot=0, seed=0, codes=None, knn_k=3,
        rbf_threshold=0.5, svcca_components=None)
    computation.run()
    n = 50
    K, L = (rbf_of_replicate(A, np.ones(n), 0.5) for A in (X, Y))
    H = np.eye(n) - 1.0 / n

    def u_hsic(K, L):  # Song et al. (2012), Eq. 5
        K, L = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
        one = np.ones(n)
        return (np.trace(K @ L) + one @ K @ one * (one @ L @ one) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * one @ K @ L @ one)

    expected = u_hsic(K, L) / np.sqrt(u_hsic(K, K) * u_hsic(L, L))
    assert computation.centres["cka_rbf"][0, 0] == pytest.approx(expected, rel=1e-9)
    assert computation.values["cka_rbf"][0, 0] == pytest.approx(
        np.trace(K @ H @ L @ H) / np.sqrt(np.trace(K @ H @ K @ H) * np.trace(L @ H @ L @ H)))


@pytest.mark.parametrize("metric", ["mutual_knn", "svcca", "pwcca"])
def test_half_sampled_intervals(metric):
    """Half of the clusters, whole; the delete-d jackknife variance; for SVCCA and PWCCA
    the bias extrapolated from n/2 to n rows (mutual k-NN estimates its mean at n)."""
    rng = np.random.default_rng(6)
    X = rng.standard_normal((60, 5))
    Y = X + rng.standard_normal((60, 5))
    group = np.repeat(np.arange(20), 3)
    func = functools.partial(METRICS[metric], **({"k": 4} if metric == "mutual_knn" else {}))
    halves = sim._HalfSamples(60, sim._group_codes(group, 60), 40, 9)
    assert halves.variance_factor == 1.0 and halves.bias_scale == pytest.approx(1.0)
    assert all(len(np.unique(group[rows])) == 10 and len(rows) == 30 for rows in halves.rows)
    values = np.array([func(X[rows], Y[rows]) for rows in halves.rows])
    value = func(X, Y)
    centre = value if metric == "mutual_knn" else 2 * value - values.mean()
    half_width = 1.959963985 * np.sqrt(values.var())
    got = bootstrap_ci(func, X, Y, n_boot=40, seed=9, groups=group)
    assert got == pytest.approx((centre - half_width, centre + half_width), abs=1e-8)


def test_custom_callable_gets_the_basic_interval_of_cluster_resamples():
    rng = np.random.default_rng(8)
    X, Y = rng.standard_normal((30, 3)), rng.standard_normal((30, 3))
    group = np.repeat(np.arange(10), 3)

    def metric(A, B):
        return float(np.corrcoef(A[:, 0], B[:, 0])[0, 1])

    draws = np.random.default_rng(3)
    values = []
    for _ in range(25):
        counts = np.bincount(draws.integers(0, 10, 10), minlength=10)
        rows = np.repeat(np.arange(30), counts[group])
        values.append(metric(X[rows], Y[rows]))
    q_low, q_high = np.quantile(values, [0.05, 0.95])
    expected = (2 * metric(X, Y) - q_high, 2 * metric(X, Y) - q_low)
    got = bootstrap_ci(metric, X, Y, n_boot=25, seed=3, level=0.9, groups=group)
    assert got == pytest.approx(expected)


def test_groups_and_options_are_validated():
    X = np.random.default_rng(0).standard_normal((20, 3))
    with pytest.raises(ValueError, match="one label per row"):
        bootstrap_ci("cka_linear", X, X, n_boot=2, seed=0, groups=np.zeros(19))
    with pytest.raises(ValueError, match="at least 2 distinct"):
        bootstrap_ci("cka_linear", X, X, n_boot=2, seed=0, groups=np.zeros(20))
    with pytest.raises(ValueError, match="unknown metric"):
        bootstrap_ci("cka", X, X, n_boot=2, seed=0)
    with pytest.raises(ValueError, match="epsilon=0.0 only"):
        bootstrap_ci(functools.partial(sim.pwcca, epsilon=0.1), X, X, n_boot=2, seed=0)


def coverage_report() -> None:
    """Print the coverage figures of the correlated design (used in docs/metrics.md)."""
    truth = correlated_design()[3]
    runs = correlated_runs()
    for metric in METRICS:
        cover = np.mean([r.loc[metric, "ci_low"] <= truth[metric] <= r.loc[metric, "ci_high"]
                         for r in runs])
        inside = np.mean([r.loc[metric, "ci_low"] <= r.loc[metric, "value"]
                          <= r.loc[metric, "ci_high"] for r in runs])
        print(f"{metric:13s} population {truth[metric]:.3f}  coverage {cover:.2f}  "
              f"contains its estimate {inside:.2f}")
    by_group, by_row = cluster_coverage()
    print(f"clustered rows, linear CKA: coverage {by_group:.2f} resampling clusters, "
          f"{by_row:.2f} resampling rows")
    covered = block_coverage()
    print(f"200 clusters of 3 rows, debiased CKA: coverage {covered['blocks']:.2f} resampling "
          f"{sim.MAX_UNITS} blocks of clusters, {covered['clusters']:.2f} resampling clusters")


if __name__ == "__main__":
    coverage_report()
    sys.exit(0)
