"""analyses.run passes the pool index's utterances on: the bootstrap resamples utterances and
the probes keep an utterance's rows in one fold."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from benchmarks import schema
from layerwise import analyses
from layerwise.analyses.similarity import UndefinedSimilarityWarning, bootstrap_ci

SIMILARITY = schema.defaults("analysis", "similarity")
CCA = schema.defaults("analysis", "cca")


@pytest.fixture
def word_span():
    """40 utterances of 3 words each, two layers, speaker labels."""
    rng = np.random.default_rng(0)
    n = 120
    index = pd.DataFrame({"utt_id": np.repeat([f"u{i}" for i in range(40)], 3),
                          "start_s": np.tile([0.0, 0.5, 1.0], 40).astype(str),
                          "end_s": np.tile([0.5, 1.0, 1.5], 40).astype(str),
                          "speaker": np.repeat([f"s{i}" for i in range(8)], 15)})
    base = rng.standard_normal((n, 4))
    layers = {"layer.0": base, "layer.1": base + rng.standard_normal((n, 4))}
    return index, layers


def test_similarity_resamples_utterances(word_span):
    index, layers = word_span
    params = {**SIMILARITY, "metrics": ["cka_linear"], "n_boot": 20, "progress": False}
    table = analyses.run("similarity", index, layers, model="m", span="word", pooling="mean",
                         labels=[], params=params, seed=3)
    row = table[(table.layer_a == "layer.0") & (table.layer_b == "layer.1")].iloc[0]
    expected = bootstrap_ci("cka_linear", layers["layer.0"], layers["layer.1"], n_boot=20,
                            seed=3, groups=index["utt_id"])
    assert (row.ci_low, row.ci_high) == pytest.approx(expected)


def test_cross_model_similarity_resamples_utterances_and_has_no_cosine(word_span):
    index, layers = word_span
    params = {**SIMILARITY, "metrics": ["cka_linear", "cosine"], "n_boot": 20, "progress": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedSimilarityWarning)
        table = analyses.cross_similarity(index, layers, index, layers, model_a="a",
                                          model_b="b", span="word", pooling="mean",
                                          params=params, seed=3)
    assert table[table.metric == "cosine"].value.isna().all()
    row = table[(table.metric == "cka_linear") & (table.layer_a == "layer.0")
                & (table.layer_b == "layer.1")].iloc[0]
    expected = bootstrap_ci("cka_linear", layers["layer.0"], layers["layer.1"], n_boot=20,
                            seed=3, groups=index["utt_id"])
    assert (row.ci_low, row.ci_high) == pytest.approx(expected)


def test_cross_model_rbf_and_knn_use_the_same_sample_of_aligned_rows(word_span):
    """max_rows: the sample is drawn after alignment, on the aligned utterances, so both
    models' rows are the same units; exact metrics keep every aligned row."""
    index, layers = word_span
    params = {**SIMILARITY, "metrics": ["cka_linear", "cka_rbf", "mutual_knn"], "n_boot": 2,
              "knn_k": 3, "max_rows": 50, "progress": False}
    other = index.iloc[::-1].reset_index(drop=True)  # model b stores rows in another order
    layers_b = {k: v[::-1] for k, v in layers.items()}
    table = analyses.cross_similarity(index, layers, other, layers_b, model_a="a", model_b="b",
                                      span="word", pooling="mean", params=params, seed=3)
    n_rows = table.groupby("metric").n_rows.unique()
    assert list(n_rows["cka_linear"]) == [120] and list(n_rows["cka_rbf"]) == [50]
    assert list(n_rows["mutual_knn"]) == [50]
    same = table[(table.layer_a == table.layer_b) & (table.metric != "mutual_knn")]
    assert same.value.to_numpy() == pytest.approx(1.0)  # the same rows on both sides
    knn = table[(table.layer_a == table.layer_b) & (table.metric == "mutual_knn")]
    assert knn.value.to_numpy() == pytest.approx(1.0)


def test_speaker_probe_folds_keep_utterances_whole(word_span, monkeypatch):
    index, layers = word_span
    seen = {}

    def probe_table(layers, labels_df, **kwargs):
        seen.update(kwargs)
        return pd.DataFrame()

    monkeypatch.setattr("layerwise.analyses.probes.probe_table", probe_table)
    analyses.run("probes", index, layers, model="m", span="word", pooling="mean",
                 labels=["speaker"], params=schema.defaults("analysis", "probes"), seed=0)
    assert seen["group"] == "speaker" and seen["fallback_group"] == "utt_id"


@pytest.mark.parametrize("name", analyses.NAMES)
def test_run_stops_without_a_key_the_schema_defines(name, word_span):
    """The registered functions take their section's keys with no default of their own: each
    schema key is one of them, and leaving any out stops naming it."""
    from layerwise.analyses.registry import get

    analysis = get(name)
    defaults = schema.defaults("analysis", analysis.section)
    assert sorted(analysis.keys) == sorted(defaults)
    index, layers = word_span
    for key in defaults:
        params = {k: v for k, v in defaults.items() if k != key}
        with pytest.raises(ValueError, match=rf"analysis\.{analysis.section} lacks {key}"):
            analyses.run(name, index, layers, model="m", span="word", pooling="mean",
                         labels=[], params=params, seed=0)


def test_run_refuses_a_span_the_analysis_does_not_apply_to(word_span):
    index, layers = word_span
    with pytest.raises(ValueError, match="applies to spans word, phone, frame"):
        analyses.run("cca", index, layers, model="m", span="utterance", pooling="mean",
                     labels=[], params=schema.defaults("analysis", "cca"), seed=0)


def _linear_cka(X, Y):
    """Linear CKA (Kornblith et al. 2019), written out: ‖YᵀX‖² / (‖XᵀX‖ ‖YᵀY‖), centred."""
    X, Y = X - X.mean(0), Y - Y.mean(0)
    return np.linalg.norm(Y.T @ X) ** 2 / (np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y))


def test_align_rows_drops_a_missing_utterance_and_follows_a_order(word_span):
    """B lacks u3 and stores its rows in another order, with times written as text: each of
    A's rows whose utterance B has is paired with B's row of the same unit, once."""
    index, _ = word_span
    b = index[index.utt_id != "u3"].sample(frac=1.0, random_state=0).reset_index(drop=True)
    b = b.assign(start_s=b.start_s.astype(float).map("{:.6f}".format))  # "0.500000" vs "0.5"
    ra, rb = analyses.align_rows(index, b, span="word")
    assert ra.tolist() == np.flatnonzero(index.utt_id != "u3").tolist()
    assert sorted(rb.tolist()) == list(range(len(b)))
    key = ["utt_id", "start_s", "end_s"]
    pairs_a = index.iloc[ra][key].astype({"start_s": float, "end_s": float}).to_numpy()
    pairs_b = b.iloc[rb][key].astype({"start_s": float, "end_s": float}).to_numpy()
    assert (pairs_a == pairs_b).all()
    with pytest.raises(ValueError, match="no utt_id, time_s columns"):
        analyses.align_rows(index, b, span="frame")


def test_cross_similarity_compares_the_aligned_units(word_span):
    index, layers = word_span
    rng = np.random.default_rng(1)
    keep = np.flatnonzero(index.utt_id != "u0")[::-1]  # B: no u0, rows reversed
    index_b = index.iloc[keep].reset_index(drop=True)
    layers_b = {"enc.0": layers["layer.1"][keep] @ rng.standard_normal((4, 6))}
    table = analyses.cross_similarity(index, layers, index_b, layers_b, model_a="a", model_b="b",
                                      span="word", pooling="mean", seed=0,
                                      params={**SIMILARITY, "metrics": ["cka_linear"],
                                              "n_boot": 0, "progress": False})
    assert set(table.model_a) == {"a"} and set(table.model_b) == {"b"}
    assert set(zip(table.layer_a, table.layer_b, strict=True)) == {("layer.0", "enc.0"),
                                                                   ("layer.1", "enc.0")}
    rows_a = np.flatnonzero(index.utt_id != "u0")  # the units B has, in A's order
    for row in table.itertuples():
        expected = _linear_cka(layers[row.layer_a][rows_a], layers_b["enc.0"][::-1])
        assert row.value == pytest.approx(expected, rel=1e-9)
        assert row.n_rows == len(rows_a)


def _cca_index(n_per_word: dict[str, int]):
    words = np.concatenate([[w] * n for w, n in n_per_word.items()] + [[""] * 5])
    return pd.DataFrame({"utt_id": [f"u{i // 4}" for i in range(len(words))],
                         "start_s": np.arange(len(words)) * 0.5, "word": words})


def test_cca_on_words_keeps_types_with_min_count_tokens():
    """run("cca") on the word span: words with fewer than min_count tokens and rows without a
    word are left out; the rest are one-hot coded and held out stratified by word."""
    from layerwise.analyses import cca_targets

    index = _cca_index({"a": 20, "b": 15, "c": 12, "rare": 3})
    words = index["word"].to_numpy()
    rng = np.random.default_rng(2)
    classes = {w: rng.standard_normal(5) for w in set(words)}
    layer = np.stack([classes[w] for w in words]) + 0.3 * rng.standard_normal((len(words), 5))
    table = analyses.run("cca", index, {"layer.0": layer}, model="m", span="word",
                         pooling="mean", labels=[], params={**CCA, "n_trials": 2, "min_count": 6},
                         seed=4)
    keep = np.isin(words, ["a", "b", "c"])
    Y = np.zeros((keep.sum(), 3))
    Y[np.arange(keep.sum()), np.searchsorted(["a", "b", "c"], words[keep])] = 1.0
    expected = cca_targets.heldout_pwcca(layer[keep], Y, strata=words[keep], n_trials=2, seed=4)
    row = table.iloc[0]
    assert (row.model, row.layer, row.span, row.target, row.n_trials) == (
        "m", "layer.0", "word", "word", 2)
    assert (row.value, row.trial_min, row.trial_max) == pytest.approx(expected)
    assert 0.5 < row.value <= 1.0  # the layer holds the word
    with pytest.raises(ValueError, match="analysis.cca.min_count"):
        analyses.run("cca", index, {"layer.0": layer}, model="m", span="word", pooling="mean",
                     labels=[], params={**CCA, "n_trials": 2, "min_count": 16}, seed=4)


def test_cca_on_frames_needs_and_uses_the_mel_matrix():
    from layerwise.analyses import cca_targets

    index = _cca_index({"a": 60})
    rng = np.random.default_rng(5)
    mel = rng.standard_normal((len(index), 8))
    layers = {"layer.0": mel @ rng.standard_normal((8, 6)) + 0.1 * rng.standard_normal((65, 6))}
    table = analyses.run("cca", index, layers, model="m", span="frame", pooling="mean",
                         labels=[], params={**CCA, "n_trials": 2}, mel=mel, seed=1)
    expected = cca_targets.heldout_pwcca(layers["layer.0"], mel, n_trials=2, seed=1)
    assert table.iloc[0].target == "mel"
    assert (table.iloc[0].value, table.iloc[0].trial_min, table.iloc[0].trial_max) == (
        pytest.approx(expected))
    with pytest.raises(ValueError, match="needs the log-mel matrix"):
        analyses.run("cca", index, layers, model="m", span="frame", pooling="mean", labels=[],
                     params=CCA, seed=1)


@pytest.mark.parametrize("name", ["convexity", "clustering", "featstats", "embed"])
def test_layers_side_by_side_give_the_same_table(name, tmp_path):
    """The workflow passes the job's threads as n_jobs: the layers of a pooled folder run in
    worker processes (each reads its own memory-mapped layer), with the same numbers as one
    after the other, each layer in its own place."""
    from layerwise.analyses.registry import get
    from layerwise.io import pooled

    rng = np.random.default_rng(4)
    n = 240
    speaker = np.repeat([f"s{i}" for i in range(6)], n // 6)
    index = pd.DataFrame({"row": np.arange(n), "utt_id": np.repeat([f"u{i}" for i in range(60)], 4),
                          "start_s": np.tile([0.0, 0.5, 1.0, 1.5], 60),
                          "end_s": np.tile([0.5, 1.0, 1.5, 2.0], 60), "unit": "",
                          "speaker": speaker})
    centres = rng.standard_normal((6, 16))[np.unique(speaker, return_inverse=True)[1]]
    layers = [(f"layer.{i}", (centres + (0.5 + i) * rng.standard_normal((n, 16))).astype(np.float32))
              for i in range(5)]
    pooled.write(tmp_path / "p", index, iter(layers), model="m", span="utterance", pooling="mean")
    index, stored = pooled.read(tmp_path / "p")
    params = schema.defaults("analysis", get(name).section)
    if name == "embed":
        params = {**params, "methods": ["pca", "tsne"], "layers": ["first", "middle", "last"]}
    one, two = (analyses.run(name, index, stored, model="m", span="utterance", pooling="mean",
                             labels=["speaker"], params=params, seed=0, n_jobs=n_jobs)
                for n_jobs in (1, 2))
    pd.testing.assert_frame_equal(one, two)
    assert sorted(set(one["layer"])) == (["layer.0", "layer.2", "layer.4"] if name == "embed"
                                         else [f"layer.{i}" for i in range(5)])
    if name == "featstats":  # noisier layers, larger spread: the layers were not mixed up
        spread = one[one["statistic"] == "std"].set_index("layer")["value"]
        assert spread.is_monotonic_increasing
