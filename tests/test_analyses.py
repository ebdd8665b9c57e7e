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
