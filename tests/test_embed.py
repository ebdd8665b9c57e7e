"""2-D embeddings: PCA agrees with scikit-learn, small sets work, UMAP is optional."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA
from threadpoolctl import threadpool_limits

from benchmarks import schema
from layerwise import analyses
from layerwise.analyses import embed, subsample
from layerwise.analyses.embed import EMBED_COLUMNS, embedding_table, resolve_layer_positions

#: called with the schema's defaults (benchmarks/schema.py) unless a test says otherwise
embedding_table = schema.with_defaults(embedding_table, "embed", rename={"layers": "layers_to_embed"})


@pytest.fixture(autouse=True)
def one_thread():
    """t-SNE's OpenMP threads spin badly on a busy machine; these inputs are tiny."""
    with threadpool_limits(limits=1):
        yield


def make_layers(n=40, d=6, names=("cnn.0", "layer.0", "layer.1", "layer.2"), seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal((n, d)) * np.arange(1, d + 1) for name in names}


def labels_for(n=40):
    return pd.DataFrame({"speaker": np.repeat(["a", "b"], n // 2), "word": ["w"] * n})


def test_pca_explained_variance_equals_sklearn():
    layers = make_layers()
    table = embedding_table(
        layers, labels_for(), layers_to_embed=["layer.1"], methods=["pca"], model="m",
        span="word", pooling="mean", progress=False,
    )  # fmt: skip
    reference = PCA(n_components=2).fit(layers["layer.1"])
    assert table["explained_variance"].unique() == pytest.approx(
        [reference.explained_variance_ratio_.sum()]
    )
    coords = reference.transform(layers["layer.1"])
    np.testing.assert_allclose(np.abs(table[["x", "y"]].to_numpy()), np.abs(coords), atol=1e-8)


def test_table_shape_columns_and_labels():
    layers = make_layers()
    table = embedding_table(
        layers, labels_for(), methods=["pca", "tsne"], model="m", span="word", pooling="mean",
        progress=False,
    )  # fmt: skip
    assert tuple(table.columns) == (*EMBED_COLUMNS, "speaker", "word")
    assert len(table) == 3 * 2 * 40  # first/middle/last x two methods x rows
    assert table.groupby(["layer", "method"]).size().eq(40).all()
    assert table.loc[table["method"] == "tsne", "explained_variance"].isna().all()
    first = table[(table["layer"] == "layer.0") & (table["method"] == "pca")]
    assert (first["speaker"].to_numpy() == labels_for()["speaker"].to_numpy()[first["row"]]).all()


def test_tsne_with_ten_rows_adapts_perplexity():
    assert embed.tsne_perplexity(10) == pytest.approx(3.0)
    assert embed.tsne_perplexity(5000) == pytest.approx(30.0)
    layers = make_layers(n=10)
    table = embedding_table(
        layers, labels_for(10), layers_to_embed=["last"], methods=["tsne"], model="m",
        span="word", pooling="mean", progress=False,
    )  # fmt: skip
    assert len(table) == 10 and np.isfinite(table[["x", "y"]].to_numpy()).all()


def test_umap_is_skipped_with_a_logged_note_when_missing(monkeypatch, caplog):
    monkeypatch.setattr(embed, "umap_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="layerwise.analyses.embed"):
        table = embedding_table(
            make_layers(), labels_for(), layers_to_embed=["first"], methods=["pca", "umap"],
            model="m", span="word", pooling="mean", progress=False,
        )  # fmt: skip
    assert set(table["method"]) == {"pca"}
    assert "umap-learn is not installed" in caplog.text


@pytest.mark.skipif(embed.umap_available(), reason="umap-learn is installed")
def test_umap_2d_raises_import_error_when_missing():
    with pytest.raises(ImportError):
        embed.umap_2d(np.random.default_rng(0).standard_normal((20, 3)))


def test_rows_are_subsampled_identically_for_every_layer_and_method():
    table = embedding_table(
        make_layers(n=60), labels_for(60), methods=["pca"], model="m", span="word",
        pooling="mean", max_rows=25, progress=False,
    )  # fmt: skip
    rows = table.groupby("layer")["row"].apply(tuple)
    assert rows.nunique() == 1 and len(rows.iloc[0]) == 25 == len(set(rows.iloc[0]))


def test_resolve_layer_positions_defaults_numeric_order_and_names():
    names = ["cnn.0", "proj", *(f"layer.{i}" for i in (10, 2, 0, 1, 9, 11, 12, 3, 4, 5, 6, 7, 8))]
    assert resolve_layer_positions(names) == ["layer.0", "layer.6", "layer.12"]
    assert resolve_layer_positions(names, ["proj", "last", "layer.12"]) == ["proj", "layer.12"]
    assert resolve_layer_positions(names, "middle") == ["layer.6"]
    with pytest.raises(ValueError, match="neither a layer name"):
        resolve_layer_positions(names, ["layer.99"])
    with pytest.raises(ValueError, match="no 'layer.<i>' names"):
        resolve_layer_positions(["cnn.0"], ["first"])


@pytest.mark.parametrize(
    ("kwargs", "labels", "match"),
    [
        ({"methods": ["lle"]}, labels_for(), "methods must be"),
        ({"methods": []}, labels_for(), "methods must be"),
        ({}, labels_for()[:10], "labels_df must be a DataFrame with 40 rows"),
        ({}, labels_for().rename(columns={"word": "x"}), "clash"),
    ],
)
def test_invalid_arguments_raise(kwargs, labels, match):
    with pytest.raises(ValueError, match=match):
        embedding_table(
            make_layers(), labels, model="m", span="s", pooling="p", progress=False,
            **{"methods": ["pca"], **kwargs},
        )  # fmt: skip


def pool_index(n_utts=30, per_utt=4):
    return pd.DataFrame({"row": np.arange(n_utts * per_utt),
                         "utt_id": np.repeat([f"u{i:02d}" for i in range(n_utts)], per_utt),
                         "start_s": np.tile(np.arange(per_utt) * 0.5, n_utts),
                         "speaker": np.repeat([f"s{i % 3}" for i in range(n_utts)], per_utt)})


def test_rows_are_the_shared_subsample_for_every_model_and_stratified():
    index = pool_index()
    tables = [
        embedding_table(
            make_layers(n=120, seed=seed), index, label_columns=["speaker"], methods=["pca"],
            model=f"m{seed}", span="word", pooling="mean", max_rows=30, seed=5, progress=False,
        )  # fmt: skip
        for seed in (0, 1)  # two "models" with the same index
    ]
    expected = subsample.rows(index, 30, seed=5, stratify=("utt_id", "speaker"))
    for table in tables:
        for _, rows in table.groupby("layer")["row"]:
            np.testing.assert_array_equal(rows.to_numpy(), expected)
        assert (table["n_rows"] == 30).all()
        assert list(table.columns[len(EMBED_COLUMNS):]) == ["speaker"]  # utt_id not copied
    # 30 of 120 rows: one per utterance, ten per speaker
    picked = index.iloc[expected]
    assert picked["utt_id"].nunique() == 30
    assert picked["speaker"].value_counts().tolist() == [10, 10, 10]


def test_only_the_sampled_rows_of_embedded_layers_are_read():
    layers = make_layers(n=120)
    taken = subsample.take(layers, np.arange(120))
    assert taken is layers
    lazy = subsample.take(layers, np.arange(10, 120))
    table = embedding_table(lazy, pool_index().iloc[10:].reset_index(drop=True),
                            label_columns=["speaker"], layers_to_embed=["last"], methods=["pca"],
                            model="m", span="word", pooling="mean", max_rows=20, progress=False)
    assert set(table["layer"]) == {"layer.2"} and len(table) == 20


@pytest.mark.parametrize("backend", embed.TSNE_BACKENDS)
def test_both_tsne_backends_separate_two_blobs_reproducibly(backend):
    if backend == "opentsne" and not embed.opentsne_available():
        pytest.skip("openTSNE is not installed")
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (40, 5)), rng.normal(12, 1, (40, 5))])
    Y = embed.tsne_2d(X, seed=0, backend=backend)
    assert Y.shape == (80, 2) and np.isfinite(Y).all()
    gap = np.linalg.norm(Y[:40].mean(0) - Y[40:].mean(0))
    assert gap > 3 * max(Y[:40].std(0).max(), Y[40:].std(0).max())
    np.testing.assert_array_equal(Y, embed.tsne_2d(X, seed=0, backend=backend))


def test_tsne_uses_opentsne_fft_from_enough_rows_and_falls_back_to_sklearn(monkeypatch):
    calls = []

    class Fake:
        def __init__(self, **kwargs):
            calls.append(kwargs)

        def fit(self, X):
            return np.zeros((len(X), 2))

        fit_transform = fit

    openTSNE = pytest.importorskip("openTSNE")
    monkeypatch.setattr(openTSNE, "TSNE", Fake)
    monkeypatch.setattr(embed, "FFT_MIN_ROWS", 20)
    X = np.random.default_rng(0).standard_normal((30, 3))
    embed.tsne_2d(X)
    embed.tsne_2d(X[:12])
    assert [c["negative_gradient_method"] for c in calls] == ["fft", "bh"]
    assert {c["n_jobs"] for c in calls} == {1}
    monkeypatch.setattr(embed, "opentsne_available", lambda: False)
    monkeypatch.setattr(embed, "TSNE", Fake)
    assert embed.tsne_2d(X[:12]).shape == (12, 2)
    assert "init" in calls[-1] and calls[-1]["perplexity"] == pytest.approx(11 / 3)
    with pytest.raises(ValueError, match="backend"):
        embed.tsne_2d(X, backend="bhtsne")


def test_run_embeds_with_schema_params(schema_params):
    index = pool_index().assign(word=lambda d: [f"w{i % 7}" for i in range(len(d))])
    layers = make_layers(n=len(index))
    params = {**schema_params["embed"], "methods": ["pca"], "max_rows": 50}
    table = analyses.run("embed", index, layers, model="m", span="word", pooling="mean",
                         labels=["speaker"], params=params, seed=0)
    assert set(table["layer"]) == {"layer.0", "layer.1", "layer.2"}
    assert (table["n_rows"] == 50).all() and list(table.columns[-2:]) == ["speaker", "word"]
