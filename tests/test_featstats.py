"""Activation statistics on matrices whose answer is known in closed form."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import schema
from layerwise.analyses.featstats import (
    FEATSTATS_COLUMNS,
    VAR_HIST_EDGES,
    activation_statistics,
    anisotropy,
    effective_rank,
    featstats_table,
    variance_histogram,
    variance_shares,
)

#: called with the schema's defaults (benchmarks/schema.py) unless a test says otherwise
featstats_table = schema.with_defaults(featstats_table, "featstats")


def test_effective_rank_of_isotropic_gaussian_is_close_to_d():
    d = 20
    X = np.random.default_rng(0).standard_normal((5000, d))
    # singular values of an n x d Gaussian lie within (1 +- sqrt(d/n)) sqrt(n): nearly equal
    assert 0.97 * d < effective_rank(X) <= d


@pytest.mark.parametrize("center", [True, False])
def test_effective_rank_of_rank_one_matrix_is_one(center):
    rng = np.random.default_rng(1)
    X = np.outer(rng.standard_normal(50), rng.standard_normal(12))
    assert effective_rank(X, center=center) == pytest.approx(1.0, abs=1e-9)


def test_effective_rank_of_equal_singular_values_is_the_rank():
    X = np.zeros((6, 5))
    X[[0, 1, 2], [0, 1, 2]] = 3.0  # three equal singular values, no centring
    assert effective_rank(X, center=False) == pytest.approx(3.0)
    assert np.isnan(effective_rank(np.ones((4, 3))))  # centred matrix is all zero


def test_anisotropy_of_identical_rows_is_one():
    X = np.tile(np.array([[0.5, -2.0, 3.0]]), (30, 1))
    assert anisotropy(X) == pytest.approx(1.0)


def test_anisotropy_of_isotropic_zero_mean_gaussian_is_near_zero():
    X = np.random.default_rng(2).standard_normal((1000, 64))
    assert abs(anisotropy(X, n_pairs=4000, seed=0)) < 0.02


def test_anisotropy_of_shared_offset_is_high_and_seeded():
    rng = np.random.default_rng(3)
    X = 5.0 + rng.standard_normal((500, 16))  # cone around the all-ones direction
    # E[cos] ~ |mu|^2 / (|mu|^2 + d) = 400 / 416
    assert anisotropy(X, seed=1) == pytest.approx(400 / 416, abs=0.02)
    assert anisotropy(X, seed=1) == anisotropy(X, seed=1)


def test_variance_shares_follow_the_spectrum():
    rng = np.random.default_rng(4)
    scales = np.array([4.0, 2.0, 1.0, 1.0, 0.5])
    X = rng.standard_normal((20_000, 5)) * scales
    shares = variance_shares(X, top=(1, 2, 5, 10))
    expected = np.cumsum(scales**2) / np.sum(scales**2)
    assert shares[1] == pytest.approx(expected[0], abs=0.01)
    assert shares[2] == pytest.approx(expected[1], abs=0.01)
    assert shares[5] == pytest.approx(1.0) and shares[10] == pytest.approx(1.0)


def test_var_top_shares_are_ordered_and_bounded():
    X = np.random.default_rng(5).standard_normal((300, 40))
    stats = activation_statistics(X)
    assert 0 < stats["var_top1"] < stats["var_top10"] < 1
    assert variance_shares(X, top=(40,))[40] == pytest.approx(1.0)  # all shares sum to 1


def test_variance_histogram_bins_known_variances():
    n = 100
    signs = np.where(np.arange(n) % 2, 1.0, -1.0)  # column a * signs has variance a**2
    variances = np.array([0.0, 2e-2, 3.0, 3.0, 1e7])
    X = signs[:, None] * np.sqrt(variances)[None, :]
    counts = variance_histogram(X)
    expected = np.zeros(20, dtype=int)
    expected[0] += 1  # constant dimension, clipped into the first bin
    expected[int((np.log10(2e-2) + 5) // 0.5)] += 1
    expected[int((np.log10(3.0) + 5) // 0.5)] += 2
    expected[19] += 1  # above the last edge, clipped into the last bin
    np.testing.assert_array_equal(counts, expected)
    assert VAR_HIST_EDGES[0] == pytest.approx(1e-5) and VAR_HIST_EDGES[-1] == pytest.approx(1e5)


def test_mean_and_std_are_over_all_activations():
    X = np.arange(12.0).reshape(4, 3)
    stats = activation_statistics(X)
    assert stats["mean"] == pytest.approx(5.5)
    assert stats["std"] == pytest.approx(np.std(np.arange(12.0)))


def test_featstats_table_columns_and_statistics():
    rng = np.random.default_rng(6)
    layers = {"layer.0": rng.standard_normal((50, 8)), "layer.1": rng.standard_normal((50, 8))}
    table = featstats_table(layers, model="m", progress=False)
    assert tuple(table.columns) == FEATSTATS_COLUMNS
    names = set(table["statistic"])
    assert {"mean", "std", "var_top1", "var_top10", "effective_rank", "anisotropy"} <= names
    assert {f"var_hist_count_{i:02d}" for i in range(20)} <= names
    assert {f"var_hist_edge_{i:02d}" for i in range(21)} <= names
    assert len(table) == 2 * len(names)
    counts = table[table["statistic"].str.startswith("var_hist_count")]
    assert (counts.groupby("layer")["value"].sum() == 8).all()


@pytest.mark.parametrize(
    ("layers", "match"),
    [
        ({}, "non-empty dict"),
        ({"a": np.zeros(3)}, "must be a 2-D"),
        ({"a": np.zeros((3, 2)), "b": np.zeros((4, 2))}, "same rows"),
        ({"a": np.array([[1.0, np.inf]])}, "NaN or infinity"),
        ({"a": np.array([["x", "y"]])}, "real numbers"),
    ],
)
def test_invalid_layers_raise(layers, match):
    with pytest.raises(ValueError, match=match):
        featstats_table(layers, model="m", progress=False)
