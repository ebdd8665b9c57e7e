"""Tests of layerwise.analyses.similarity, three ways, as scikit-learn tests its metrics.

1. Known answers: identities and invariances every correct implementation satisfies.
2. Published reference values: the outputs printed in Kornblith et al.'s notebook.
3. Independent brute force: explicit-formula implementations written here, compared
   with the library's fast ones.
Then registry-driven checks over METRICS, and the similarity table.
"""

from __future__ import annotations

import doctest
import functools
import inspect
import itertools
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist

import layerwise.analyses.similarity as sim
from benchmarks import schema
from layerwise.analyses.similarity import (
    METRICS,
    SYMMETRIC_METRICS,
    TABLE_COLUMNS,
    LinearCKAAccumulator,
    StreamingGram,
    UndefinedSimilarityWarning,
    bootstrap_ci,
    cca_correlations,
    cka_debiased,
    cka_linear,
    cka_rbf,
    cosine_matched,
    mean_squared_cca,
    mutual_knn,
    pwcca,
    similarity_table,
    svcca,
)

#: called with the schema's defaults (benchmarks/schema.py) unless a test says otherwise
similarity_table = schema.with_defaults(similarity_table, "similarity", n_boot=0, max_rows=None)

METRIC_NAMES = ["cka_linear", "cka_rbf", "cka_debiased", "cosine", "mutual_knn", "svcca", "pwcca"]
CKA_VARIANTS = [cka_linear, cka_rbf, cka_debiased]


def orthogonal(p: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((p, p)))
    return q * np.sign(np.diag(r))


@pytest.fixture
def xy():
    """Two related representations with matched rows (120 samples, 12 features)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 12))
    Y = np.tanh(X @ rng.standard_normal((12, 12))) + 0.5 * rng.standard_normal((120, 12))
    return X, Y


@pytest.fixture
def decaying():
    """200 x 30 with a decaying spectrum, so that leading subspaces are well defined."""
    rng = np.random.default_rng(1)
    return rng.standard_normal((200, 30)) * np.geomspace(5.0, 0.1, 30)


# --------------------------------------------------------------------------------------
# 1. Known answers
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cka", CKA_VARIANTS)
def test_cka_of_a_representation_with_itself_is_one(cka, xy):
    X, _ = xy
    assert cka(X, X) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("cka", CKA_VARIANTS)
def test_cka_is_invariant_to_rotation_and_isotropic_scaling(cka, xy):
    X, Y = xy
    rng = np.random.default_rng(2)
    reference = cka(X, Y)
    assert cka(X @ orthogonal(12, rng), Y) == pytest.approx(reference, abs=1e-10)
    assert cka(X, Y @ orthogonal(12, rng)) == pytest.approx(reference, abs=1e-10)
    assert cka(2.5 * X, 0.1 * Y) == pytest.approx(reference, abs=1e-10)


@pytest.mark.parametrize("cka", CKA_VARIANTS)
def test_cka_is_not_invariant_to_an_arbitrary_invertible_map(cka, xy):
    X, Y = xy
    rng = np.random.default_rng(3)
    A = orthogonal(12, rng) @ np.diag(np.geomspace(10.0, 0.1, 12)) @ orthogonal(12, rng)
    assert np.linalg.cond(A) < 1e3  # invertible
    assert abs(cka(X @ A, Y) - cka(X, Y)) > 1e-2


def test_debiased_cka_of_independent_gaussian_blocks_is_near_zero():
    rng = np.random.default_rng(4)
    X, Y = rng.standard_normal((500, 10)), rng.standard_normal((500, 10))
    assert abs(cka_debiased(X, Y)) < 0.05
    # ... unlike the biased estimator, whose bias at this n and width is visible.
    assert cka_linear(X, Y) > cka_debiased(X, Y) + 0.005


def test_mutual_knn_and_cosine_of_a_representation_with_itself_are_one(xy):
    X, _ = xy
    assert mutual_knn(X, X) == 1.0
    assert mutual_knn(X, 3.0 * X, k=1) == 1.0
    assert cosine_matched(X, X) == pytest.approx(1.0, abs=1e-12)
    assert cosine_matched(X, -X) == pytest.approx(-1.0, abs=1e-12)


def test_svcca_and_pwcca_of_a_rotated_copy_are_one(decaying):
    X = decaying
    XQ = X @ orthogonal(30, np.random.default_rng(5))
    assert svcca(X, XQ) == pytest.approx(1.0, abs=1e-6)  # top 20 of 30 directions
    assert svcca(X, XQ, n_components=None) == pytest.approx(1.0, abs=1e-6)
    assert pwcca(X, XQ) == pytest.approx(1.0, abs=1e-6)
    assert pwcca(X, XQ, n_components=20) == pytest.approx(1.0, abs=1e-6)


def test_svcca_and_pwcca_with_a_wider_full_rank_map_are_one(decaying):
    """Y = X M with M of shape (30, 45): q != p, same column space."""
    X = decaying
    Y = X @ np.random.default_rng(6).standard_normal((30, 45))
    # SVCCA with fewer than all directions compares *different* leading subspaces
    # (M distorts the spectrum), so keep all 30 directions that exist.
    assert svcca(X, Y, n_components=30) == pytest.approx(1.0, abs=1e-6)
    assert svcca(X, Y, n_components=None, variance=1.0) == pytest.approx(1.0, abs=1e-6)
    # PWCCA weights on X's side, with X's own canonical variates, in both orders.
    assert pwcca(X, Y) == pytest.approx(1.0, abs=1e-6)
    assert pwcca(Y, X) == pytest.approx(1.0, abs=1e-6)
    assert mean_squared_cca(X, Y) == pytest.approx(1.0, abs=1e-6)
    # Y has rank 30, not 45: the 15 null directions are dropped, not reported as 0.
    assert cca_correlations(X, Y).shape == (30,)


def test_cca_correlations_are_sorted_bounded_and_shrunk_by_epsilon(xy):
    X, Y = xy
    rho = cca_correlations(X, Y)
    assert rho.shape == (12,)
    assert np.all(np.diff(rho) <= 1e-12) and rho.min() >= 0.0 and rho.max() <= 1.0
    assert np.all(cca_correlations(X, Y, epsilon=0.5) < rho)


def test_svcca_components_are_capped_by_rank():
    rng = np.random.default_rng(7)
    X, Y = rng.standard_normal((10, 40)), rng.standard_normal((10, 40))
    # centred data of 10 rows has rank 9: n_components=20 keeps 9 directions, and
    # two random 9-dimensional subspaces of the 9-dimensional centred row space
    # coincide.
    assert svcca(X, Y) == pytest.approx(1.0, abs=1e-6)


# --- nan + warning paths -------------------------------------------------------------


def test_cosine_of_different_widths_is_nan_with_a_warning(xy):
    X, _ = xy
    with pytest.warns(UndefinedSimilarityWarning, match="different numbers of features"):
        assert np.isnan(cosine_matched(X, X[:, :5]))


@pytest.mark.parametrize("X", [np.eye(6), np.diag(np.arange(1.0, 7.0))], ids=["eye", "diag"])
def test_debiased_cka_with_zero_unbiased_self_hsic_is_nan_with_a_warning(X):
    Y = np.random.default_rng(8).standard_normal((6, 3))
    with pytest.warns(UndefinedSimilarityWarning, match="unbiased self-HSIC of X is <= 0"):
        assert np.isnan(cka_debiased(X, Y))


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        (cka_linear, "all rows of X are identical"),
        (cka_rbf, "median squared distance between rows of X is 0"),
        (cka_debiased, "self-HSIC of X"),
        (mean_squared_cca, "all rows of X are identical"),
        (svcca, "all rows of X are identical"),
        (pwcca, "all rows of X are identical"),
    ],
)
def test_constant_input_gives_nan_with_a_warning(metric, message):
    X = np.tile([0.1, 0.2, 0.3], (20, 1))  # column means round: exercise exact centring
    Y = np.random.default_rng(9).standard_normal((20, 3))
    with pytest.warns(UndefinedSimilarityWarning, match=message):
        assert np.isnan(metric(X, Y))


def test_rbf_cka_with_mostly_duplicate_rows_is_nan_with_a_warning():
    rng = np.random.default_rng(10)
    X = np.vstack([np.ones((15, 3)), rng.standard_normal((5, 3))])
    with pytest.warns(UndefinedSimilarityWarning, match="bandwidth is 0"):
        assert np.isnan(cka_rbf(rng.standard_normal((20, 3)), X))


def test_mutual_knn_of_a_matrix_clamped_to_zero_is_nan_with_a_warning():
    rng = np.random.default_rng(11)
    X = np.zeros((40, 25))
    X[:, 0] = rng.standard_normal(40)  # 96% of the entries are 0
    with pytest.warns(UndefinedSimilarityWarning, match="clamping zeroes X"):
        assert np.isnan(mutual_knn(X, rng.standard_normal((40, 4)), k=3))


# --------------------------------------------------------------------------------------
# 2. Published reference values (Kornblith et al. 2019, Demo.ipynb)
# --------------------------------------------------------------------------------------


@pytest.fixture
def kornblith_xy():
    # np.random.seed(1337); X = np.random.randn(100, 10); Y = np.random.randn(100, 10) + X
    # without touching numpy's global state (same stream: a legacy RandomState).
    rs = np.random.RandomState(1337)
    X = rs.randn(100, 10)
    Y = rs.randn(100, 10) + X
    return X, Y


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        (cka_linear, 0.55761),
        (functools.partial(cka_rbf, threshold=0.5), 0.65483),
        (cka_debiased, 0.51346),
        (mean_squared_cca, 0.54540),
    ],
    ids=["linear", "rbf", "debiased", "mean_squared_cca"],
)
def test_published_reference_values(metric, expected, kornblith_xy):
    assert round(metric(*kornblith_xy), 5) == expected


def test_notebook_mean_squared_cca_differs_only_by_centring(kornblith_xy):
    """The notebook prints 0.54312: its `cca` skips centring. 0.54540 is the centred value."""
    X, Y = kornblith_xy
    qx, _ = np.linalg.qr(X)
    qy, _ = np.linalg.qr(Y)
    assert round(np.linalg.norm(qx.T @ qy) ** 2 / 10, 5) == 0.54312
    assert round(mean_squared_cca(X, Y), 5) == 0.54540


# --------------------------------------------------------------------------------------
# 3. Independent brute-force implementations
# --------------------------------------------------------------------------------------


def hsic_explicit(K: np.ndarray, L: np.ndarray) -> float:
    """Biased HSIC (times (n - 1)²) with an explicit centring matrix H = I - 11ᵀ/n."""
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(K @ H @ L @ H))


def cka_explicit(K: np.ndarray, L: np.ndarray, hsic=hsic_explicit) -> float:
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


def rbf_explicit(X: np.ndarray, threshold: float) -> np.ndarray:
    D2 = cdist(X, X, "sqeuclidean")
    return np.exp(-D2 / (2 * threshold**2 * np.median(D2)))


def hsic_unbiased_explicit(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. (2012), Eq. 5, on Gram matrices with zeroed diagonal."""
    n = K.shape[0]
    Kt, Lt = K.copy(), L.copy()
    np.fill_diagonal(Kt, 0.0)
    np.fill_diagonal(Lt, 0.0)
    one = np.ones(n)
    value = (
        np.trace(Kt @ Lt)
        + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ Kt @ Lt @ one)
    )
    return float(value / (n * (n - 3)))


@pytest.mark.parametrize(("n", "p"), [(80, 5), (30, 60)], ids=["n>p", "n<p"])
def test_cka_matches_explicit_hsic_on_gram_matrices(n, p):
    """Uncentred Gram matrices + explicit H vs the centred feature-space formulas."""
    rng = np.random.default_rng(12)
    X = rng.standard_normal((n, p)) + 3.0
    Y = X[:, ::-1] ** 2 + rng.standard_normal((n, p))
    assert cka_linear(X, Y) == pytest.approx(cka_explicit(X @ X.T, Y @ Y.T), rel=1e-10)
    expected_rbf = cka_explicit(rbf_explicit(X, 0.7), rbf_explicit(Y, 0.7))
    assert cka_rbf(X, Y, threshold=0.7) == pytest.approx(expected_rbf, rel=1e-10)
    expected_debiased = cka_explicit(X @ X.T, Y @ Y.T, hsic=hsic_unbiased_explicit)
    assert cka_debiased(X, Y) == pytest.approx(expected_debiased, rel=1e-9)


def mutual_knn_naive(X, Y, k, q=0.95):
    def neighbours(A):
        t = np.quantile(np.abs(A), q)
        A = np.clip(A, -t, t)
        A = A / np.linalg.norm(A, axis=1, keepdims=True)
        out = []
        for i in range(len(A)):
            sims = [(float(A[i] @ A[j]), j) for j in range(len(A)) if j != i]
            out.append({j for _, j in sorted(sims, reverse=True)[:k]})
        return out

    return np.mean([len(a & b) / k for a, b in zip(neighbours(X), neighbours(Y), strict=True)])


@pytest.mark.parametrize(("k", "q"), [(5, 0.95), (1, 1.0), (12, 0.8)])
def test_mutual_knn_matches_a_naive_loop(k, q, monkeypatch):
    rng = np.random.default_rng(13)
    X = rng.standard_normal((70, 6)) ** 3  # heavy tails: clamping matters
    Y = X[:, :4] + 0.7 * rng.standard_normal((70, 4))
    expected = mutual_knn_naive(X, Y, k, q)
    assert mutual_knn(X, Y, k=k, clamp_quantile=q) == pytest.approx(expected, abs=1e-12)
    monkeypatch.setattr(sim.neighbours, "_BLOCK_ELEMENTS", 200)  # many row blocks of 2 rows
    assert mutual_knn(X, Y, k=k, clamp_quantile=q) == pytest.approx(expected, abs=1e-12)


def test_streaming_linear_cka_matches_in_memory():
    rng = np.random.default_rng(14)
    X = rng.standard_normal((1000, 7)) + 1e4  # large offsets: naive sums would cancel
    Y = np.sin(X) @ rng.standard_normal((7, 9)) + 1e3
    acc = LinearCKAAccumulator()
    for start, stop in itertools.pairwise([0, 1, 1, 300, 301, 777, 1000]):  # incl. empty
        acc.update(X[start:stop], Y[start:stop])
    assert acc.n_rows == 1000
    assert acc.value() == pytest.approx(cka_linear(X, Y), abs=1e-6)
    assert acc.value() == pytest.approx(cka_linear(X, Y), rel=1e-9)


def test_streaming_gram_matches_pairwise_cka_for_all_layer_pairs():
    rng = np.random.default_rng(15)
    base = rng.standard_normal((600, 5))
    layers = [base @ rng.standard_normal((5, p)) + rng.standard_normal((600, p)) for p in (3, 8, 8, 16)]
    gram = StreamingGram()
    for start in range(0, 600, 128):
        gram.update([layer[start : start + 128] for layer in layers])
    expected = np.array([[cka_linear(a, b) for b in layers] for a in layers])
    np.testing.assert_allclose(gram.cka_matrix(), expected, atol=1e-10)
    centred = [layer - layer.mean(axis=0) for layer in layers]
    np.testing.assert_allclose(gram.comoment(2, 1), centred[2].T @ centred[1], rtol=1e-10)


def test_streaming_gram_accepts_float32_chunks_without_losing_precision():
    rng = np.random.default_rng(18)
    layers = [(rng.standard_normal((900, 6)) + 100.0).astype(np.float32) for _ in range(2)]
    gram = StreamingGram()
    for start in range(0, 900, 250):
        gram.update([layer[start : start + 250] for layer in layers])
    assert gram.cka(0, 1) == pytest.approx(cka_linear(*layers), rel=1e-10)


def test_streaming_gram_constant_layer_is_nan_with_a_warning():
    rng = np.random.default_rng(19)
    layers = [np.full((90, 3), 0.1), rng.standard_normal((90, 4))]
    gram = StreamingGram()
    for start in range(0, 90, 30):
        gram.update([layer[start : start + 30] for layer in layers])
    with pytest.warns(UndefinedSimilarityWarning, match=r"layers \[0\]"):
        matrix = gram.cka_matrix()
    assert np.isnan(matrix[0]).all() and np.isnan(matrix[:, 0]).all()
    assert matrix[1, 1] == pytest.approx(1.0)


def test_streaming_gram_state_fits_4_gib_for_25_layers_of_768():
    state = StreamingGram.state_bytes([768] * 25)
    assert state == 8 * (325 * 768 * 768 + 25 * 768)
    assert state < 4 * 2**30


def test_streaming_rejects_inconsistent_chunks():
    gram = StreamingGram().update([np.zeros((4, 2)) + np.arange(4)[:, None], np.ones((4, 3))])
    with pytest.raises(ValueError, match="same number of rows"):
        gram.update([np.ones((4, 2)), np.ones((5, 3))])
    with pytest.raises(ValueError, match="widths changed"):
        gram.update([np.ones((4, 2)), np.ones((4, 4))])
    with pytest.raises(ValueError, match=r"chunks\[1\] contains NaN"):
        gram.update([np.ones((4, 2)), np.full((4, 3), np.nan)])
    with pytest.raises(ValueError, match="at least 2 rows"):
        LinearCKAAccumulator().update(np.ones((1, 2)), np.ones((1, 2))).value()


# --------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------


def test_bootstrap_ci_is_seeded_and_nested_by_level(xy):
    """Coverage and the procedures themselves are tested in test_bootstrap.py."""
    X, Y = xy
    low, high = bootstrap_ci(cka_linear, X, Y, n_boot=30, seed=3)
    assert bootstrap_ci("cka_linear", X, Y, n_boot=30, seed=3) == (low, high)
    assert bootstrap_ci(cka_linear, X, Y, n_boot=30, seed=4) != (low, high)
    low90, high90 = bootstrap_ci(cka_linear, X, Y, n_boot=30, seed=3, level=0.9)
    assert low <= low90 <= high90 <= high


def test_bootstrap_ci_skips_undefined_replicates(xy):
    X, Y = xy
    assert all(np.isnan(bootstrap_ci(lambda a, b: np.nan, X, Y, n_boot=5, seed=0)))
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(cka_linear, X, Y, n_boot=0, seed=0)
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(cka_linear, X, Y, n_boot=5, seed=0, level=1.0)


# --------------------------------------------------------------------------------------
# Registry-driven checks
# --------------------------------------------------------------------------------------


def test_registry_covers_every_metric_name():
    assert list(METRICS) == METRIC_NAMES
    assert all(callable(f) for f in METRICS.values())
    assert SYMMETRIC_METRICS == set(METRIC_NAMES) - {"pwcca"}


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_metric_returns_a_plain_float_and_takes_keyword_only_options(name, xy):
    signature = inspect.signature(METRICS[name])
    params = list(signature.parameters.values())
    assert [p.name for p in params[:2]] == ["X", "Y"]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[2:])
    assert type(METRICS[name](*xy)) is float


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_symmetry_where_the_metric_is_symmetric(name, xy):
    X, Y = xy
    forward, backward = METRICS[name](X, Y), METRICS[name](Y, X)
    if name in SYMMETRIC_METRICS:
        assert forward == pytest.approx(backward, abs=1e-10)
    else:
        assert abs(forward - backward) > 1e-6  # PWCCA weights by its first argument


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_row_permutation_invariance(name, xy):
    X, Y = xy
    order = np.random.default_rng(16).permutation(len(X))
    assert METRICS[name](X[order], Y[order]) == pytest.approx(METRICS[name](X, Y), abs=1e-10)


@pytest.mark.parametrize("name", METRIC_NAMES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("argument", ["X", "Y"])
def test_non_finite_input_is_rejected_naming_the_argument(name, bad, argument, xy):
    X, Y = (a.copy() for a in xy)
    (X if argument == "X" else Y)[3, 2] = bad
    with pytest.raises(ValueError, match=f"^{argument} contains NaN or infinity"):
        METRICS[name](X, Y)


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_shape_validation(name, xy):
    X, Y = xy
    with pytest.raises(ValueError, match="^Y must be a 2-D array"):
        METRICS[name](X, Y[:, 0])
    with pytest.raises(ValueError, match="^X must be a 2-D array"):
        METRICS[name](X[None], Y)
    with pytest.raises(ValueError, match="same number of rows"):
        METRICS[name](X, Y[:-1])
    with pytest.raises(ValueError, match="^X must contain real numbers"):
        METRICS[name](X.astype(complex), Y)


# --------------------------------------------------------------------------------------
# similarity_table
# --------------------------------------------------------------------------------------


@pytest.fixture
def layers():
    rng = np.random.default_rng(17)
    n = 60
    base = rng.standard_normal((n, 6)) * np.geomspace(3.0, 0.3, 6)
    out = {"cnn.0": base @ rng.standard_normal((6, 5)) + 0.3 * rng.standard_normal((n, 5))}
    out["proj"] = base @ rng.standard_normal((6, 8))
    for i in range(3):
        out[f"layer.{i}"] = np.tanh(out["proj"] @ rng.standard_normal((8, 8))) + 0.1 * i
    return out


TABLE_OPTIONS = {"knn_k": 4, "rbf_threshold": 0.7, "svcca_components": 3}


def reference_metric(name: str):
    """The metric function with the options TABLE_OPTIONS gives it in the table."""
    options = {
        "mutual_knn": {"k": 4},
        "cka_rbf": {"threshold": 0.7},
        "svcca": {"n_components": 3},
        "pwcca": {"n_components": 3},
    }.get(name, {})
    return functools.partial(METRICS[name], **options)


def table(layers_a, layers_b=None, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedSimilarityWarning)  # cosine, cnn.0 width
        return similarity_table(
            layers_a, layers_b, metrics=METRIC_NAMES, model_a="ma", model_b="mb",
            span="utterance", pooling="mean", progress=False, **TABLE_OPTIONS, **kwargs,
        )


def test_table_columns_rows_and_both_orders(layers):
    t = table(layers)
    assert tuple(t.columns) == TABLE_COLUMNS
    assert len(t) == len(METRIC_NAMES) * 5 * 5
    assert not t.duplicated(["metric", "layer_a", "layer_b"]).any()
    assert (t.n_rows == 60).all() and t.n_rows.dtype == np.int64
    assert t.ci_low.isna().all() and t.ci_high.isna().all()
    assert (t[["model_a", "model_b", "span", "pooling"]].drop_duplicates().values.tolist()
            == [["ma", "mb", "utterance", "mean"]])
    wide = t.pivot_table(index=["metric", "layer_a"], columns="layer_b", values="value",
                         dropna=False)
    for metric in SYMMETRIC_METRICS:
        V = wide.loc[metric].to_numpy()
        np.testing.assert_array_equal(V, V.T)  # both orders, one computation
    V = wide.loc["pwcca"].to_numpy()
    assert not np.allclose(V, V.T)  # asymmetric, computed per order


def test_table_diagonal_is_one_for_cka(layers):
    t = table(layers)
    diagonal = t[(t.layer_a == t.layer_b) & t.metric.str.startswith("cka")]
    assert len(diagonal) == 15
    np.testing.assert_allclose(diagonal.value, 1.0, atol=1e-12)


def test_table_values_equal_the_metric_functions(layers):
    t = table(layers)
    for row in t.itertuples():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedSimilarityWarning)
            expected = reference_metric(row.metric)(layers[row.layer_a], layers[row.layer_b])
        assert row.value == pytest.approx(expected, abs=1e-9, nan_ok=True), row


def test_table_intervals_equal_bootstrap_ci_with_the_same_seed(layers):
    t = table(layers, n_boot=4, seed=7)
    assert ((t.ci_low <= t.ci_high) | t.ci_low.isna()).all()
    for row in t.itertuples():
        X, Y = layers[row.layer_a], layers[row.layer_b]
        expected = bootstrap_ci(reference_metric(row.metric), X, Y, n_boot=4, seed=7)
        assert (row.ci_low, row.ci_high) == pytest.approx(expected, abs=1e-9, nan_ok=True), row


def test_table_intervals_resample_groups(layers):
    group = np.repeat(np.arange(20), 3)
    t = table(layers, n_boot=4, seed=7, groups=group)
    for row in t[t.layer_a != t.layer_b].itertuples():
        X, Y = layers[row.layer_a], layers[row.layer_b]
        expected = bootstrap_ci(reference_metric(row.metric), X, Y, n_boot=4, seed=7,
                                groups=group)
        assert (row.ci_low, row.ci_high) == pytest.approx(expected, abs=1e-9, nan_ok=True), row
    assert not np.allclose(t.ci_low, table(layers, n_boot=4, seed=7).ci_low, equal_nan=True)


def test_table_of_two_models(layers):
    names = list(layers)
    layers_a = {name: layers[name] for name in names[:2]}
    layers_b = {name: layers[name][:, ::-1] for name in names[2:]}
    t = table(layers_a, layers_b, n_boot=2, seed=0)
    assert len(t) == len(METRIC_NAMES) * 2 * 3
    assert set(t.layer_a) == set(names[:2]) and set(t.layer_b) == set(names[2:])
    # two models' coordinates are unrelated: their matched cosine is undefined
    assert t[t.metric == "cosine"].value.isna().all()
    for row in t[t.metric != "cosine"].itertuples():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedSimilarityWarning)
            expected = reference_metric(row.metric)(layers_a[row.layer_a], layers_b[row.layer_b])
        assert row.value == pytest.approx(expected, abs=1e-9, nan_ok=True), row


def test_table_cosine_between_models_is_nan_with_the_reason(layers):
    kwargs = {"metrics": ["cosine"], "span": "s", "pooling": "p", "progress": False}
    with pytest.warns(UndefinedSimilarityWarning, match="unrelated coordinates"):
        t = similarity_table({"a": layers["proj"]}, {"b": layers["proj"]}, model_a="m1",
                             model_b="m2", **kwargs)
    assert t.value.isna().all()
    t = similarity_table({"a": layers["proj"]}, {"b": layers["proj"]}, model_a="m1",
                         model_b="m1", **kwargs)
    assert t.value.iloc[0] == pytest.approx(1.0)


def test_table_without_svcca_components_uses_variance_and_full_pwcca(layers):
    t = similarity_table(layers, metrics=["svcca", "pwcca"], model_a="m", model_b="m", span="s",
                         pooling="p", svcca_components=None, progress=False)
    for row in t.itertuples():
        X, Y = layers[row.layer_a], layers[row.layer_b]
        expected = svcca(X, Y, n_components=None) if row.metric == "svcca" else pwcca(X, Y)
        assert row.value == pytest.approx(expected, abs=1e-7), row


def test_table_warns_once_per_metric_naming_the_layer(layers):
    layers = dict(layers, flat=np.tile([0.1, 0.2, 0.3], (60, 1)))
    with pytest.warns(UndefinedSimilarityWarning) as caught:
        t = similarity_table(layers, metrics=["cka_linear", "svcca"], model_a="m", model_b="m",
                             span="s", pooling="p", progress=False)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and all("m:flat" in m for m in messages)
    assert t[(t.layer_a == "flat") | (t.layer_b == "flat")].value.isna().all()
    assert t[(t.layer_a != "flat") & (t.layer_b != "flat")].value.notna().all()


def test_table_validation(layers):
    kwargs = {"model_a": "m", "model_b": "m", "span": "s", "pooling": "p", "progress": False}
    with pytest.raises(ValueError, match="unknown metrics"):
        similarity_table(layers, metrics=["cka"], **kwargs)
    with pytest.raises(ValueError, match=r"layers_a\['proj'\] has 59 rows"):
        similarity_table(dict(layers, proj=layers["proj"][:-1]), metrics=["cosine"], **kwargs)
    bad = layers["proj"].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"^layers_b\['x'\] contains NaN"):
        similarity_table(layers, {"x": bad}, metrics=["cosine"], **kwargs)
    with pytest.raises(ValueError, match="knn_k"):
        similarity_table(layers, metrics=["mutual_knn"], knn_k=60, **kwargs)


def test_table_accepts_float32_layers(layers):
    layers32 = {name: X.astype(np.float32) for name, X in layers.items()}
    t = similarity_table(layers32, metrics=["cka_linear"], model_a="m", model_b="m", span="s",
                         pooling="p", progress=False)
    expected = cka_linear(layers32["proj"], layers32["layer.0"])
    got = t[(t.layer_a == "proj") & (t.layer_b == "layer.0")].value.iloc[0]
    assert got == pytest.approx(expected, abs=1e-12)
    assert isinstance(t, pd.DataFrame)


# --------------------------------------------------------------------------------------
# Documentation
# --------------------------------------------------------------------------------------


def test_docstring_examples_run():
    attempted = 0
    for module in (sim.cka, sim.neighbours, sim.cca, sim.streaming, sim.bootstrap, sim.table):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0, module.__name__
        attempted += result.attempted
    assert attempted > 10
