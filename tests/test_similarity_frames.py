"""Similarity on the frame span, exact over every frame streamed from the feature store."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from layerwise import analyses
from layerwise.analyses.similarity import cka_linear, similarity_table
from layerwise.errors import InputError
from layerwise.extract.encoders import LayerInfo
from layerwise.io import store

DIMS = {"layer.0": 6, "layer.1": 5, "layer.2": 6}
PARAMS = {"metrics": ["cka_linear", "cka_rbf", "cka_debiased", "cosine", "mutual_knn", "svcca",
                      "pwcca"],
          "n_boot": 4, "knn_k": 3, "rbf_threshold": 0.5, "svcca_components": 3, "max_rows": 40}


def _write_store(folder, rng, shards=2, utts_per_shard=12):
    """Shards of correlated frame layers; returns the paths and each layer's frames in store
    order with the utterance of every frame."""
    infos = [LayerInfo(name, "transformer", 50.0, d) for name, d in DIMS.items()]
    frames = {name: [] for name in DIMS}
    utterance, paths = [], []
    for s in range(shards):
        path = folder / f"shard-{s}.h5"
        ids = [f"u{s}-{k}" for k in range(utts_per_shard)]
        lengths = rng.integers(3, 30, size=len(ids))
        data = {name: [] for name in DIMS}
        for k, T in enumerate(lengths):
            latent = rng.standard_normal((T, 4)) + rng.standard_normal(4)  # utterance effect
            for i, (name, d) in enumerate(DIMS.items()):
                mix = np.random.default_rng(i).standard_normal((4, d))
                data[name].append(latent @ mix + (0.5 + i) * rng.standard_normal((T, d)) + i)
            utterance += [len(paths) * utts_per_shard + k] * int(T)
        with store.ShardWriter(path, infos, set(DIMS), dtype="float32") as w:
            w.append(ids, [16000] * len(ids), data)
        for name in DIMS:
            frames[name] += data[name]
        paths.append(path)
    return paths, {n: np.concatenate(v).astype(np.float32) for n, v in frames.items()}, \
        np.asarray(utterance)


def test_stored_rows_read_every_frame_across_shards(tmp_path):
    paths, frames, utterance = _write_store(tmp_path, np.random.default_rng(0))
    fs = store.open(paths)
    rows = store.StoredRows(fs, "layer.1")
    X = frames["layer.1"]
    assert rows.shape == X.shape
    boundary = sum(fs.n_frames("layer.1")[u] for u in fs.utt_ids[:12])  # first of shard 1
    np.testing.assert_array_equal(rows[boundary - 3:boundary + 4], X[boundary - 3:boundary + 4])
    np.testing.assert_array_equal(rows[:], X)
    pick = np.array([boundary + 2, boundary - 1, boundary - 5])
    np.testing.assert_array_equal(rows[pick], X[pick])
    np.testing.assert_array_equal(rows[-1], X[-1])
    np.testing.assert_array_equal(rows[0, np.array([True, False, True, False, True])],
                                  X[0, [0, 2, 4]])
    np.testing.assert_array_equal(store.stored_utterances(fs, "layer.1"), utterance)
    rows.close()


@pytest.mark.filterwarnings("ignore:cosine is undefined")
def test_frame_similarity_streams_every_frame(tmp_path, monkeypatch):
    from layerwise.analyses.similarity import gram

    monkeypatch.setattr(gram, "_CHUNK_ELEMENTS", 17 * 50)  # chunks of 50 rows span the shards
    rng = np.random.default_rng(1)
    paths, frames, utterance = _write_store(tmp_path, rng)
    n = len(utterance)
    # the pooled frame sample: some frames of each utterance, as pool_layers writes them
    sample = np.sort(rng.choice(n, size=60, replace=False))
    index = pd.DataFrame({"row": np.arange(sample.size),
                          "utt_id": [f"utt{u}" for u in utterance[sample]]})
    pooled = {name: X[sample] for name, X in frames.items()}

    table = analyses.run("similarity", index, pooled, model="m", span="frame", pooling="mean",
                         labels=[], params=PARAMS, seed=3, features=paths)

    exact = ["cka_linear", "cka_debiased", "cosine", "svcca", "pwcca"]
    reference = similarity_table(frames, None, model_a="m", model_b="m", span="frame",
                                 pooling="mean", seed=3, groups=utterance, progress=False,
                                 **{**PARAMS, "metrics": exact})
    key = ["layer_a", "layer_b", "metric"]
    got = table[table.metric.isin(exact)].set_index(key).sort_index()
    want = reference.set_index(key).sort_index()
    assert (got["n_rows"] == n).all()
    np.testing.assert_allclose(got[["value", "ci_low", "ci_high"]].to_numpy(),
                               want[["value", "ci_low", "ci_high"]].to_numpy(),
                               rtol=1e-9, atol=1e-12)
    # and against the n x n definition of linear CKA, written independently of the engine
    value = got.loc[("layer.0", "layer.2", "cka_linear"), "value"]
    assert value == pytest.approx(cka_linear(frames["layer.0"], frames["layer.2"]), rel=1e-9)

    sampled = ["cka_rbf", "mutual_knn"]
    reference = similarity_table(pooled, None, model_a="m", model_b="m", span="frame",
                                 pooling="mean", seed=3, groups=index["utt_id"].to_numpy(),
                                 progress=False, **{**PARAMS, "metrics": sampled})
    got = table[table.metric.isin(sampled)].set_index(key).sort_index()
    want = reference.set_index(key).sort_index()
    assert (got["n_rows"] == PARAMS["max_rows"]).all()
    np.testing.assert_allclose(got[["value", "ci_low", "ci_high"]].to_numpy(),
                               want[["value", "ci_low", "ci_high"]].to_numpy(), equal_nan=True)


def test_frame_similarity_refuses_unmatched_frame_grids(tmp_path):
    paths, frames, _ = _write_store(tmp_path, np.random.default_rng(2), shards=1)
    bad = tmp_path / "other"
    bad.mkdir()
    infos = [LayerInfo("layer.0", "transformer", 50.0, 6), LayerInfo("layer.1", "transformer",
                                                                      25.0, 5)]
    with store.ShardWriter(bad / "shard-0.h5", infos, {"layer.0", "layer.1"},
                           dtype="float32") as w:
        w.append(["u"], [16000], {"layer.0": [np.ones((8, 6))], "layer.1": [np.ones((4, 5))]})
    index = pd.DataFrame({"row": [0, 1], "utt_id": ["u", "u"]})
    pooled = {"layer.0": np.ones((2, 6), np.float32), "layer.1": np.ones((2, 5), np.float32)}
    with pytest.raises(InputError, match="other frame grids"):
        analyses.run("similarity", index, pooled, model="m", span="frame", pooling="mean",
                     labels=[], params=PARAMS, seed=0, features=[bad / "shard-0.h5"])

