"""Graph convexity against its definition (Tětková et al. 2023) on data with known answers."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest

from benchmarks import schema
from layerwise import analyses
from layerwise.analyses import convexity, subsample
from layerwise.analyses.convexity import (
    CONVEXITY_COLUMNS,
    convexity_table,
    graph_convexity,
    knn_graph,
)

#: called with the schema's defaults (benchmarks/schema.py) unless a test says otherwise
convexity_table = schema.with_defaults(convexity_table, "convexity")


def by_class(result: pd.DataFrame) -> dict[str, float]:
    return dict(zip(result["class"], result["value"], strict=True))


def brute_force_convexity(X: np.ndarray, labels: np.ndarray, k: int) -> dict[str, float]:
    """Dense k-NN graph + Floyd-Warshall with next-hop matrix, all ordered same-class pairs."""
    n = len(X)
    dist = np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))
    W = np.full((n, n), np.inf)
    for i in range(n):
        order = [j for j in np.argsort(dist[i]) if j != i][:k]
        W[i, order] = dist[i, order]
        W[order, i] = dist[order, i]  # union of directed edges
    np.fill_diagonal(W, 0.0)
    D = W.copy()
    nxt = np.where(np.isfinite(W), np.arange(n)[None, :], -1)
    for m in range(n):
        shorter = D[:, [m]] + D[[m], :] < D
        D = np.where(shorter, D[:, [m]] + D[[m], :], D)
        nxt = np.where(shorter, nxt[:, [m]], nxt)
    scores: dict[str, list[float]] = {}
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        for a in members:
            for b in members:
                if a == b:
                    continue
                if not np.isfinite(D[a, b]):
                    scores.setdefault(c, []).append(0.0)
                    continue
                path = [a]
                while path[-1] != b:
                    path.append(nxt[path[-1], b])
                interior = path[1:-1]
                share = np.mean(labels[interior] == c) if interior else 1.0
                scores.setdefault(c, []).append(share)
    out = {c: 100 * np.mean(v) for c, v in scores.items()}
    out[convexity.POOLED_CLASS] = 100 * np.mean(np.concatenate(list(scores.values())))
    return out


def test_separated_clusters_are_fully_convex():
    rng = np.random.default_rng(0)
    centres = {"alpha": 0.0, "beta": 20.0, "gamma": 40.0}
    X = np.vstack([rng.normal(c, 0.5, (40, 3)) for c in centres.values()])
    labels = np.repeat(list(centres), 40)
    result = graph_convexity(X, labels)
    assert set(result["class"]) == {"alpha", "beta", "gamma", "__all__"}
    np.testing.assert_allclose(result["value"], 100.0)
    assert (result.loc[result["class"] != "__all__", "n_pairs"] == 40 * 39).all()


def test_shuffled_labels_score_near_class_share():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((900, 5))
    share = {"low": 0.2, "mid": 0.3, "high": 0.5}
    labels = rng.choice(list(share), size=len(X), p=list(share.values()))
    values = by_class(graph_convexity(X, labels, max_pairs=2000, seed=0))
    for name in share:
        observed_share = 100 * np.mean(labels == name)
        # direct-edge pairs score 1, so the value sits slightly above the share
        assert observed_share - 4 < values[name] < observed_share + 6, (name, values[name])


def test_hand_built_line_graph():
    # 1-NN graph on a line is the chain 0-1-2-3; class B sits between A points.
    X = np.array([[0.0], [1.0], [2.2], [3.6]])
    labels = np.array(["A", "A", "B", "A"])
    with pytest.warns(UserWarning, match="fewer than 2 members"):
        result = graph_convexity(X, labels, k=1)
    # pairs (0,1),(1,0): direct edge -> 1; (0,3),(3,0): interior {1:A, 2:B} -> 1/2;
    # (1,3),(3,1): interior {2:B} -> 0; mean = (1+1+0.5+0.5+0+0)/6
    values = by_class(result)
    assert values == pytest.approx({"A": 50.0, "__all__": 50.0})
    sem = 100 * np.std([1, 1, 0.5, 0.5, 0, 0], ddof=1) / np.sqrt(6)
    assert result["sem"].iloc[0] == pytest.approx(sem)
    assert "B" not in values


def test_disconnected_pairs_score_zero():
    X = np.array([[0.0], [0.1], [100.0], [100.1]])
    labels = np.array(["A", "B", "A", "B"])  # each class spans both components
    result = by_class(graph_convexity(X, labels, k=1))
    assert result == {"A": 0.0, "B": 0.0, "__all__": 0.0}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_brute_force_floyd_warshall(seed):
    rng = np.random.default_rng(seed)
    # two far-apart blobs -> the 3-NN graph is disconnected, labels mix across blobs
    X = np.vstack([rng.normal(0, 1, (14, 2)), rng.normal(30, 1, (12, 2))])
    labels = rng.choice(["x", "y", "z"], size=len(X))
    expected = brute_force_convexity(X, labels, k=3)
    got = by_class(graph_convexity(X, labels, k=3, max_pairs=10_000))
    assert got == pytest.approx(expected)


def test_chunked_dijkstra_matches_single_chunk(monkeypatch):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((60, 4))
    labels = rng.choice(["p", "q"], size=60)
    whole = graph_convexity(X, labels, k=4)
    monkeypatch.setattr(convexity, "_CHUNK_BYTES", 1)  # one source per chunk
    chunked = graph_convexity(X, labels, k=4)
    pd.testing.assert_frame_equal(whole, chunked)


def test_pair_sampling_is_seeded_and_capped():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((200, 3))
    labels = rng.choice(["a", "b"], size=200)
    first = graph_convexity(X, labels, max_pairs=50, seed=7)
    again = graph_convexity(X, labels, max_pairs=50, seed=7)
    pd.testing.assert_frame_equal(first, again)
    assert first.loc[first["class"] != "__all__", "n_pairs"].tolist() == [50, 50]
    assert first.loc[first["class"] == "__all__", "n_pairs"].item() == 100


def test_knn_graph_is_symmetric_union():
    X = np.array([[0.0], [1.0], [3.0], [7.0]])
    G = knn_graph(X, k=1).toarray()
    # directed 1-NN: 0->1, 1->0, 2->1, 3->2; union adds 1-2 and 2-3
    expected = np.array([[0, 1, 0, 0], [1, 0, 2, 0], [0, 2, 0, 4], [0, 0, 4, 0]], dtype=float)
    np.testing.assert_array_equal(G, expected)


def test_convexity_table_columns_and_pooled_rows():
    rng = np.random.default_rng(5)
    layers = {f"layer.{i}": rng.standard_normal((60, 4)) for i in range(2)}
    labels_df = pd.DataFrame(
        {"speaker": rng.choice(["s1", "s2", "s3"], 60), "accent": rng.choice(["en", "de"], 60)}
    )
    table = convexity_table(
        layers, labels_df, label_columns=["speaker", "accent"], model="m", span="word",
        pooling="mean", progress=False,
    )  # fmt: skip
    assert tuple(table.columns) == CONVEXITY_COLUMNS
    assert len(table) == 2 * (4 + 3)
    pooled = table[table["class"] == "__all__"]
    assert len(pooled) == 4
    # the table uses the same pairs as the single-layer function
    single = graph_convexity(layers["layer.1"], labels_df["accent"].to_numpy())
    rows = table[(table["layer"] == "layer.1") & (table["label"] == "accent")]
    np.testing.assert_allclose(rows["value"].to_numpy(), single["value"].to_numpy())


@pytest.mark.parametrize(
    ("X", "labels", "match"),
    [
        (np.zeros(5), ["a"] * 5, "X must be a 2-D"),
        (np.zeros((5, 2)), ["a"] * 4, "labels has 4 entries"),
        (np.full((3, 2), np.nan), ["a"] * 3, "X contains NaN"),
        (np.zeros((3, 2)), ["a", None, "b"], "labels contains missing"),
    ],
)
def test_invalid_input_raises(X, labels, match):
    with pytest.raises(ValueError, match=match):
        graph_convexity(X, labels)


@pytest.mark.slow
def test_scales_to_50k_rows_without_dense_matrices():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((50_000, 8)).astype(np.float32)
    labels = np.where(X[:, 0] > 0, "pos", "neg")  # half-spaces: convex classes
    tracemalloc.start()
    result = graph_convexity(X, labels, max_pairs=100)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 600 * 2**20  # an n x n float64 matrix would be 20 GB
    values = by_class(result)
    assert values["__all__"] > 80


def test_no_label_columns_gives_an_empty_table():
    table = convexity_table(
        {"layer.0": np.zeros((5, 2))}, pd.DataFrame(index=range(5)), label_columns=[],
        model="m", span="word", pooling="mean", progress=False,
    )  # fmt: skip
    assert table.empty and tuple(table.columns) == CONVEXITY_COLUMNS


def word_pool(n_utts=120, seed=0):
    """Pool-index-like rows: utterances of 10 words (Zipf over 60 types), 6 speakers; the
    words sit at class means in 8 dims, so word regions are convex."""
    rng = np.random.default_rng(seed)
    n = n_utts * 10
    p = 1 / np.arange(1, 61)
    word = rng.choice(60, n, p=p / p.sum())
    index = pd.DataFrame({"utt_id": np.repeat([f"u{i:03d}" for i in range(n_utts)], 10),
                          "start_s": np.tile(np.arange(10) * 0.4, n_utts),
                          "word": [f"w{w:02d}" for w in word],
                          "speaker": np.repeat([f"s{i % 6}" for i in range(n_utts)], 10)})
    means = 5 * rng.standard_normal((60, 8))
    layers = {f"layer.{i}": means[word] + (0.5 + i) * rng.standard_normal((n, 8))
              for i in range(2)}
    return layers, index


def test_kept_classes_by_count_then_frequency():
    labels = np.array(list("aaaaabbbbccccdde"))
    assert set(labels[subsample.kept_classes(labels, min_count=3, max_classes=10)]) == set("abc")
    # ties (b and c: 4 rows each) are broken by name
    assert set(labels[subsample.kept_classes(labels, min_count=1, max_classes=2)]) == set("ab")
    assert not subsample.kept_classes(labels, min_count=6, max_classes=3).any()


def test_limited_label_keeps_frequent_classes_and_reports_its_limits():
    layers, index = word_pool()
    table = convexity_table(
        layers, index, label_columns=["speaker", "word"], model="m", span="word",
        pooling="mean", max_rows=400, min_count=15, max_classes=8, limited=["word"],
        progress=False,
    )  # fmt: skip
    assert tuple(table.columns) == CONVEXITY_COLUMNS
    words = table[table["label"] == "word"]
    counts = index["word"].value_counts()
    ranked = sorted(counts[counts >= 15].index, key=lambda w: (-counts[w], w))  # ties by name
    expected = set(ranked[:8])
    assert counts[ranked[7]] == counts[ranked[8]]  # this draw has a tie at the cut
    assert set(words["class"]) - {"__all__"} == expected
    assert (words["min_count"] == 15).all() and (words["max_classes"] == 8).all()
    speakers = table[table["label"] == "speaker"]
    assert set(speakers["class"]) - {"__all__"} == set(index["speaker"])
    assert speakers["min_count"].isna().all() and speakers["max_classes"].isna().all()
    # graph rows: the word graph holds only kept-class rows, both at most max_rows
    assert (speakers["n_rows"] == 400).all()
    kept = index["word"].isin(expected).sum()
    assert (words["n_rows"] == min(400, kept)).all()


def test_graph_rows_are_the_shared_subsample_and_values_match_graph_convexity():
    layers, index = word_pool()
    table = convexity_table(
        layers, index, label_columns=["speaker"], model="m", span="word", pooling="mean",
        max_rows=300, max_pairs=200, seed=4, progress=False,
    )  # fmt: skip
    rows = subsample.rows(index, 300, seed=4, stratify=("utt_id", "speaker"))
    assert (table["n_rows"] == 300).all()
    for layer, X in layers.items():
        single = graph_convexity(X[rows], index["speaker"].to_numpy()[rows], max_pairs=200,
                                 seed=4)
        got = table[table["layer"] == layer]
        np.testing.assert_allclose(got["value"].to_numpy(), single["value"].to_numpy())


def test_pairs_come_from_few_whole_sources():
    codes = np.repeat([0, 1], [50, 6])
    pair_class, src, dst = convexity._sample_pairs(codes, np.array(["a", "b"]), max_pairs=120,
                                                   seed=0, name="x")
    a = pair_class == 0
    assert a.sum() == 120 and len(np.unique(src[a])) == 3  # ceil(120 / 49) sources
    assert len({(s, t) for s, t in zip(src[a], dst[a], strict=True)}) == 120
    assert (src != dst).all() and (codes[src] == codes[dst]).all()
    assert (~a).sum() == 30  # all 6 x 5 ordered pairs of the small class


def test_run_passes_schema_params_and_limits_only_unit_labels(schema_params):
    layers, index = word_pool()
    params = {**schema_params["convexity"], "max_rows": 500, "min_count": 30}
    table = analyses.run("convexity", index, layers, model="m", span="word", pooling="mean",
                         labels=["speaker"], params=params, seed=0)
    assert set(table["label"]) == {"speaker", "word"}
    words = table[table["label"] == "word"]
    assert (words["min_count"] == 30).all() and (words["max_classes"] == 100).all()
    counts = index["word"].value_counts()
    assert set(words["class"]) - {"__all__"} <= set(counts[counts >= 30].index)
    assert table.loc[table["label"] == "speaker", "min_count"].isna().all()
    assert (table["n_rows"] <= 500).all()
