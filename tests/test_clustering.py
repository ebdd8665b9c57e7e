"""Cluster/label agreement against hand-computed contingency tables (Pasad et al. 2023)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import entropy
from sklearn.metrics import mutual_info_score, normalized_mutual_info_score

from layerwise.clustering import (
    CLUSTERING_COLUMNS,
    cluster_scores,
    clustering_table,
    kmeans_clusters,
    label_normalized_mi,
    purity,
)

# labels a a a b b c against clusters 0 0 1 1 1 1: contingency a:[2, 1], b:[0, 2], c:[0, 1]
LABELS = np.array(["a", "a", "a", "b", "b", "c"])
CLUSTERS = np.array([0, 0, 1, 1, 1, 1])


def test_hand_computed_contingency_example():
    # I = sum p_ij log(p_ij / (p_i p_j)) = 1/3 ln 2 + 1/6 ln 1/2 + 1/3 ln 3/2 + 1/6 ln 3/2
    mi = np.log(2) / 6 + np.log(1.5) / 2
    h_label = np.log(2) / 2 + np.log(3) / 3 + np.log(6) / 6
    assert label_normalized_mi(LABELS, CLUSTERS) == pytest.approx(mi / h_label)
    assert mi / h_label == pytest.approx(0.314669, abs=1e-6)
    # cluster 0 -> majority a (2 rows), cluster 1 -> majority b (2 rows)
    assert purity(LABELS, CLUSTERS) == pytest.approx(4 / 6)
    # ARI: sum C(n_ij,2) = 2, rows 4, columns 7, C(6,2) = 15
    expected_index = 4 * 7 / 15
    ari = (2 - expected_index) / ((4 + 7) / 2 - expected_index)
    assert cluster_scores(LABELS, CLUSTERS)["ari"] == pytest.approx(ari)


def test_nmi_is_mutual_information_over_label_entropy():
    rng = np.random.default_rng(0)
    labels = rng.choice(list("abcde"), size=500)
    clusters = np.where(rng.random(500) < 0.6, np.searchsorted(list("abcde"), labels), 7)
    _, counts = np.unique(labels, return_counts=True)
    expected = mutual_info_score(labels, clusters) / entropy(counts)
    assert label_normalized_mi(labels, clusters) == pytest.approx(expected)


def test_differs_from_sklearn_nmi_when_clusters_split_classes():
    labels = ["a", "a", "b", "b"]
    clusters = [0, 1, 2, 3]  # every cluster is pure, so the label is fully determined
    assert label_normalized_mi(labels, clusters) == pytest.approx(1.0)
    assert normalized_mutual_info_score(labels, clusters) < 0.9


def test_perfect_clusters_score_one():
    rng = np.random.default_rng(1)
    centres = {"x": 0.0, "y": 10.0, "z": 20.0, "w": 30.0}
    X = np.vstack([rng.normal(c, 0.3, (25, 4)) for c in centres.values()])
    labels_df = pd.DataFrame({"phone": np.repeat(list(centres), 25)})
    table = clustering_table(
        {"layer.0": X}, labels_df, label_columns="phone", model="m", span="phone",
        pooling="mean", progress=False,
    )  # fmt: skip
    assert dict(zip(table["metric"], table["value"], strict=True)) == pytest.approx(
        {"nmi": 1.0, "ari": 1.0, "purity": 1.0}
    )
    assert (table["k"] == 4).all()


def test_independent_labels_give_nmi_near_zero():
    rng = np.random.default_rng(2)
    labels = rng.choice(list("abcd"), size=20_000)
    clusters = rng.integers(0, 5, size=20_000)
    assert label_normalized_mi(labels, clusters) < 0.005
    assert abs(cluster_scores(labels, clusters)["ari"]) < 0.005


def test_constant_label_gives_nan_nmi():
    assert np.isnan(label_normalized_mi(["a", "a", "a"], [0, 1, 0]))


def test_kmeans_is_seeded():
    X = np.random.default_rng(3).standard_normal((200, 5))
    np.testing.assert_array_equal(kmeans_clusters(X, k=4, seed=1), kmeans_clusters(X, k=4, seed=1))
    with pytest.raises(ValueError, match="exceeds the number of rows"):
        kmeans_clusters(X[:3], k=4)


def test_clustering_table_columns_and_k():
    rng = np.random.default_rng(4)
    layers = {f"layer.{i}": rng.standard_normal((80, 5)) for i in range(2)}
    labels_df = pd.DataFrame(
        {"speaker": rng.choice(["s1", "s2", "s3"], 80), "word": rng.choice(list("abcdef"), 80)}
    )
    table = clustering_table(
        layers, labels_df, label_columns=["speaker", "word"], model="m", span="word",
        pooling="mean", progress=False,
    )  # fmt: skip
    assert tuple(table.columns) == CLUSTERING_COLUMNS
    assert len(table) == 2 * 2 * 3
    assert set(table["metric"]) == {"nmi", "ari", "purity"}
    assert table.groupby("label")["k"].first().to_dict() == {"speaker": 3, "word": 6}
    fixed = clustering_table(
        layers, labels_df, label_columns=["speaker", "word"], model="m", span="word",
        pooling="mean", k=10, progress=False,
    )  # fmt: skip
    assert (fixed["k"] == 10).all()


def test_invalid_input_raises():
    with pytest.raises(ValueError, match="label_columns \\['nope'\\]"):
        clustering_table(
            {"layer.0": np.zeros((4, 2))}, pd.DataFrame({"a": list("abab")}),
            label_columns=["nope"], model="m", span="s", pooling="p", progress=False,
        )  # fmt: skip
    with pytest.raises(ValueError, match="clusters has 2 entries"):
        label_normalized_mi(["a", "b", "c"], [0, 1])


def test_no_label_columns_gives_an_empty_table():
    table = clustering_table(
        {"layer.0": np.zeros((5, 2))}, pd.DataFrame(index=range(5)), label_columns=[],
        model="m", span="word", pooling="mean", progress=False,
    )  # fmt: skip
    assert table.empty and tuple(table.columns) == CLUSTERING_COLUMNS
