"""Cluster/label agreement against hand-computed contingency tables (Pasad et al. 2023)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import entropy
from sklearn.metrics import mutual_info_score, normalized_mutual_info_score

from benchmarks import schema
from layerwise.analyses.clustering import (
    CLUSTERING_COLUMNS,
    cluster_scores,
    clustering_table,
    held_out_split,
    kmeans_clusters,
    label_normalized_mi,
    purity,
)

#: called with the schema's defaults (benchmarks/schema.py) unless a test says otherwise
clustering_table = schema.with_defaults(clustering_table, "clustering")

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
        pooling="mean", n_clusters=4, progress=False,
    )  # fmt: skip
    assert dict(zip(table["metric"], table["value"], strict=True)) == pytest.approx(
        {"nmi": 1.0, "ari": 1.0, "purity": 1.0}
    )
    assert (table["k"] == 4).all()
    assert (table["n_rows"] == 20).all()  # 20 % of 100 rows, each its own group, held out


def known_clusters(n_utts=150, per_utt=8, n_words=12, seed=0):
    """Word-class means far apart in 16 dims, utterances of ``per_utt`` words."""
    rng = np.random.default_rng(seed)
    word = rng.integers(0, n_words, n_utts * per_utt)
    means = 6 * rng.standard_normal((n_words, 16))
    X = means[word] + rng.standard_normal((len(word), 16))
    index = pd.DataFrame({"utt_id": np.repeat([f"u{i:03d}" for i in range(n_utts)], per_utt),
                          "speaker": np.repeat([f"s{i % 10}" for i in range(n_utts)], per_utt),
                          "word": [f"w{w}" for w in word]})
    return {"layer.0": X, "layer.1": X[:, ::-1].copy()}, index


def test_held_out_clusters_recover_known_classes_and_not_shuffled_labels():
    layers, index = known_clusters(n_utts=600)
    index["shuffled"] = np.random.default_rng(9).permutation(index["word"].to_numpy())
    table = clustering_table(
        layers, index, label_columns=["word", "shuffled"], model="m", span="word",
        pooling="mean", n_clusters=12, progress=False,
    )  # fmt: skip
    value = table.set_index(["layer", "label", "metric"])["value"]
    assert (value.xs(("word", "nmi"), level=("label", "metric")) > 0.95).all()
    # the plug-in NMI of independent labels is biased up by about 0.025 at 960 rows
    assert (value.xs(("shuffled", "nmi"), level=("label", "metric")) < 0.06).all()
    assert (value.xs(("shuffled", "ari"), level=("label", "metric")).abs() < 0.02).all()
    # the chance column: the same clusters shuffled score like unrelated labels
    chance = table.set_index(["layer", "label", "metric"])["chance"]
    assert (chance.xs(("word", "nmi"), level=("label", "metric")) < 0.06).all()
    assert (chance.xs(("word", "ari"), level=("label", "metric")).abs() < 0.02).all()
    held = table["n_rows"].unique()
    assert len(held) == 1 and held[0] == 120 * 8  # 20 % of 600 utterances, whole
    assert (table["k"] == 12).all()


def test_split_keeps_each_group_on_one_side():
    _, index = known_clusters()
    for column in ("utt_id", "speaker"):
        train, test = held_out_split(index[column], held_out=0.2, seed=3)
        assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == len(index)
        assert not set(index[column].iloc[train]) & set(index[column].iloc[test])
    _, test = held_out_split(index["speaker"], held_out=0.2, seed=3)
    assert index["speaker"].iloc[test].nunique() == 2  # 20 % of 10 speakers
    again = held_out_split(index["utt_id"].iloc[::-1].reset_index(drop=True), held_out=0.2,
                           seed=3)[1]
    assert sorted(index["utt_id"].iloc[::-1].iloc[again]) == sorted(
        index["utt_id"].iloc[held_out_split(index["utt_id"], held_out=0.2, seed=3)[1]])
    with pytest.raises(ValueError, match="at least 2 groups"):
        held_out_split(["a", "a"], held_out=0.5)


def test_group_column_sets_the_split_and_k_is_capped_at_training_rows():
    layers, index = known_clusters(n_utts=20, per_utt=3)
    by_speaker = clustering_table(
        layers, index, label_columns="word", model="m", span="word", pooling="mean",
        group="speaker", progress=False,
    )  # fmt: skip
    _, test = held_out_split(index["speaker"], held_out=0.2, seed=0)
    assert (by_speaker["n_rows"] == len(test)).all()
    assert (by_speaker["k"] == len(index) - len(test)).all()  # 500 capped
    absent = clustering_table(
        layers, index, label_columns="word", model="m", span="word", pooling="mean",
        group="dialect", progress=False,
    )  # fmt: skip
    _, by_utt = held_out_split(index["utt_id"], held_out=0.2, seed=0)
    assert (absent["n_rows"] == len(by_utt)).all()


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


def test_clustering_table_columns_and_one_clustering_for_all_labels():
    rng = np.random.default_rng(4)
    layers = {f"layer.{i}": rng.standard_normal((80, 5)) for i in range(2)}
    labels_df = pd.DataFrame(
        {"speaker": rng.choice(["s1", "s2", "s3"], 80), "word": rng.choice(list("abcdef"), 80)}
    )
    table = clustering_table(
        layers, labels_df, label_columns=["speaker", "word"], model="m", span="word",
        pooling="mean", n_clusters=10, progress=False,
    )  # fmt: skip
    assert tuple(table.columns) == CLUSTERING_COLUMNS
    assert len(table) == 2 * 2 * 3
    assert set(table["metric"]) == {"nmi", "ari", "purity"}
    assert (table["k"] == 10).all() and (table["n_rows"] == 16).all()


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


def test_seeds_in_float64_are_scikit_learns_kmeans_plusplus_seeds():
    """fit_kmeans seeds in float64 (faster than scikit-learn's chunked upcast of float32 rows):
    the same rows are picked as by scikit-learn's k-means++ on the float32 rows."""
    from sklearn.cluster import kmeans_plusplus

    from layerwise.analyses import clustering

    X = np.random.default_rng(6).normal(size=(300, 8)).astype(np.float32)
    ours = clustering._seeds(X, 12, random_state=np.random.RandomState(3))
    theirs, _ = kmeans_plusplus(X, 12, random_state=np.random.RandomState(3))
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, theirs)
    other = clustering._seeds(X, 12, random_state=np.random.RandomState(4))
    assert not np.array_equal(ours, other)
