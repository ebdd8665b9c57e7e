"""The temporal tables (layerwise.analyses.temporal) against computations written here, from a
feature store; the figures drawn from the tables alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA

from benchmarks import schema
from layerwise.analyses import temporal
from layerwise.extract.encoders import LayerInfo
from layerwise.ingest.alignments import COLUMNS as ALIGNMENT_COLUMNS
from layerwise.io import store
from layerwise.io.tables import read_tsv, write_tsv

SR = 16000
RATE = 50.0
FIRST = 0.0125  # wav2vec2's first centre (s)


def _infos(n_layers=8, dim=6):
    infos = [LayerInfo("cnn.0", "cnn", RATE, 3, FIRST, 0.025)]
    infos += [LayerInfo(f"layer.{i}", "transformer", RATE, dim, FIRST, 0.025)
              for i in range(n_layers)]
    return infos


def _store(path, lengths, *, seed=0, zero=None):
    """Random frames; ``zero``: (layer, utterance, frame) set to 0 (a zero-norm frame)."""
    rng = np.random.default_rng(seed)
    infos = _infos()
    with store.ShardWriter(path, infos, {i.name for i in infos}, dtype="float32",
                           attrs={"model_type": "wav2vec2", "sample_rate": SR}) as w:
        for utt, seconds in lengths.items():
            T = int(seconds * RATE)
            data = {i.name: [rng.standard_normal((T, i.dim)).astype(np.float32) + 0.3]
                    for i in infos}
            if zero and zero[1] == utt:
                data[zero[0]][0][zero[2]] = 0.0
            w.append([utt], [int(seconds * SR)], data)
    return store.open(path)


WORDS = pd.DataFrame([("b", "word", 0.1, 0.5, "hello"), ("b", "word", 0.5, 1.0, "world")],
                     columns=ALIGNMENT_COLUMNS)
PARAMS = schema.defaults("analysis", "temporal")


def test_tables_match_an_independent_computation(tmp_path):
    fs = _store(tmp_path / "s.h5", {"a": 1.0, "b": 1.2, "c": 0.8}, zero=("layer.7", "b", 4))
    selfsim, traj = temporal.temporal_tables(fs, WORDS, model="m", **PARAMS)
    # the utterance with word alignments; 6 layers evenly spread over the 9 framed ones
    assert set(selfsim.utt_id) == {"b"}
    chosen = ["cnn.0", "layer.1", "layer.2", "layer.4", "layer.5", "layer.7"]
    assert list(dict.fromkeys(selfsim.layer)) == chosen
    T = 60
    for layer in chosen:
        X = fs.frames(layer, "b").astype(np.float64)
        rows = selfsim[selfsim.layer == layer]
        assert len(rows) == T * (T + 1) // 2
        assert (rows.frame_i <= rows.frame_j).all()
        for r in rows.sample(200, random_state=0).itertuples():
            x, y = X[r.frame_i], X[r.frame_j]
            nx, ny = np.sqrt(sum(v * v for v in x)), np.sqrt(sum(v * v for v in y))
            if nx == 0 or ny == 0:
                assert np.isnan(r.cosine)
            else:
                assert r.cosine == pytest.approx(sum(x * y) / (nx * ny), abs=1e-6)
            assert r.time_i_s == pytest.approx(FIRST + r.frame_i / RATE)
        zero = rows[(rows.frame_i == 4) | (rows.frame_j == 4)]
        assert zero.cosine.isna().all() == (layer == "layer.7")
    # trajectory: the layers of the last one's width (cnn.0 is narrower), one sklearn PCA
    # of the per-layer standardised frames stacked
    layers = chosen[1:]
    assert list(dict.fromkeys(traj.layer)) == layers
    Z = []
    for layer in layers:
        X = fs.frames(layer, "b").astype(np.float64)
        sd = X.std(axis=0)
        Z.append((X - X.mean(axis=0)) / np.where(sd > 0, sd, 1))
    pca = PCA(n_components=2, svd_solver="full").fit(np.concatenate(Z))
    expected = np.concatenate([pca.transform(z) for z in Z])
    got = traj[["pc1", "pc2"]].to_numpy()
    signs = np.sign((got * expected).sum(axis=0))  # components are defined up to sign
    np.testing.assert_allclose(got, expected * signs, atol=1e-8)
    np.testing.assert_allclose(traj[["pc1_share", "pc2_share"]].iloc[0],
                               pca.explained_variance_ratio_, rtol=1e-10)


def test_utterance_choice_and_max_seconds(tmp_path):
    fs = _store(tmp_path / "s.h5", {"a": 1.0, "b": 1.2})
    params = {**PARAMS, "utt_id": "a", "max_seconds": 0.5, "max_layers": 2}
    selfsim, traj = temporal.temporal_tables(fs, WORDS, model="m", **params)
    assert set(selfsim.utt_id) == {"a"} and set(selfsim.layer) == {"cnn.0", "layer.7"}
    assert selfsim.time_j_s.max() <= 0.5 and selfsim.frame_j.max() == 24
    none = pd.DataFrame(columns=ALIGNMENT_COLUMNS)
    assert set(temporal.temporal_tables(fs, none, model="m", **PARAMS)[0].utt_id) == {"a"}
    with pytest.raises(ValueError, match="analysis.temporal.utt_id 'x'"):
        temporal.temporal_tables(fs, WORDS, model="m", **{**PARAMS, "utt_id": "x"})


def test_the_figures_draw_from_the_tables_alone(tmp_path):
    """The plots read the written tables: changing a table's values changes the figure."""
    from PIL import Image

    from layerwise import plots

    fs = _store(tmp_path / "s.h5", {"b": 1.2})
    selfsim, traj = temporal.temporal_tables(fs, WORDS, model="m", **PARAMS)
    write_tsv(selfsim, tmp_path / "selfsim.tsv")
    write_tsv(traj, tmp_path / "traj.tsv")
    selfsim, traj = (read_tsv(tmp_path / f, dtype={"utt_id": str})
                     for f in ("selfsim.tsv", "traj.tsv"))
    _, fig = plots.self_similarity(selfsim, tmp_path / "a.png", corpus="c", words=[
        (0.1, 0.5, "hello")], return_fig=True)
    titles = [ax.get_title() for ax in plots.panel_axes(fig)]
    assert titles == ["cnn.0", "layer.1", "layer.2", "layer.4", "layer.5", "layer.7"]
    image = plots.panel_axes(fig)[0].images[0].get_array()
    S = np.full((60, 60), np.nan)
    cnn = selfsim[selfsim.layer == "cnn.0"]
    S[cnn.frame_i, cnn.frame_j] = S[cnn.frame_j, cnn.frame_i] = cnn.cosine
    np.testing.assert_allclose(image.filled(np.nan), S)
    plots.temporal_figures(selfsim, traj, WORDS, tmp_path / "s.png", tmp_path / "t.gif",
                           corpus="c")
    with Image.open(tmp_path / "t.gif") as im:
        assert im.n_frames == 5 and im.size == (640, 560)
    with pytest.raises(ValueError, match="one model and utterance"):
        plots.self_similarity(pd.concat([selfsim, selfsim.assign(utt_id="z")]),
                              tmp_path / "x.png", corpus="c")
