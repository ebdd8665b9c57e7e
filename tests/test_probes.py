"""Probes: chance on shuffled labels, perfect on separable ones, group-disjoint folds."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmarks import schema
from layerwise.analyses import probes
from layerwise.analyses.probes import PROBE_COLUMNS, probe_scores, probe_splits, probe_table

#: called with the schema's defaults (benchmarks/schema.py) unless a test says otherwise
probe_table = schema.with_defaults(probe_table, "probes", group=None, fallback_group=None)


def scores(result: pd.DataFrame) -> pd.DataFrame:
    return result.set_index("metric")


def separable(n_per_class=40, n_classes=3, dims=20, seed=0):
    rng = np.random.default_rng(seed)
    means = 6.0 * np.eye(n_classes, dims)
    X = np.vstack([rng.normal(means[c], 1.0, (n_per_class, dims)) for c in range(n_classes)])
    labels = np.repeat([f"class-{c}" for c in range(n_classes)], n_per_class)
    return X, labels


def test_separable_labels_are_decoded_perfectly():
    X, labels = separable()
    result = scores(probe_scores(X, labels))
    assert result.loc["accuracy", "value"] == pytest.approx(1.0)
    assert result.loc["macro_f1", "value"] == pytest.approx(1.0)
    assert result.loc["accuracy", "chance"] == pytest.approx(1 / 3, abs=0.02)
    assert (result["folds"] == 5).all()


def test_mlp_probe_decodes_separable_labels():
    X, labels = separable(seed=1)
    result = scores(probe_scores(X, labels, probe="mlp"))
    assert result.loc["accuracy", "value"] > 0.95


def test_shuffled_labels_score_near_chance():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((240, 30))
    labels = np.repeat(["a", "b", "c", "d"], 60)
    rng.shuffle(labels)
    result = scores(probe_scores(X, labels, seed=0))
    accuracy = result.loc["accuracy"]
    assert accuracy["chance"] == pytest.approx(0.25, abs=0.02)
    assert abs(accuracy["value"] - 0.25) < 0.1
    assert accuracy["ci_low"] <= accuracy["value"] <= accuracy["ci_high"]


def test_interval_is_the_fold_based_t_interval():
    fold_scores = np.array([0.70, 0.80, 0.75, 0.90, 0.85])
    block = np.stack([np.stack([fold_scores, np.full(5, 0.5)])] * 2)
    accuracy = dict(zip(["metric", "value", "std", "ci_low", "ci_high", "chance", "folds"],
                        probes._summary(block)[0], strict=True))  # fmt: skip
    half = 2.776445 * fold_scores.std(ddof=1) / np.sqrt(5)  # t(0.975, df=4)
    assert stats.t.ppf(0.975, 4) == pytest.approx(2.776445, abs=1e-6)
    assert accuracy["value"] == pytest.approx(0.8)
    assert accuracy["ci_low"] == pytest.approx(0.8 - half, abs=1e-6)
    assert accuracy["ci_high"] == pytest.approx(0.8 + half, abs=1e-6)
    assert accuracy["chance"] == 0.5 and accuracy["folds"] == 5


def test_group_folds_are_disjoint():
    rng = np.random.default_rng(3)
    speakers = np.repeat([f"spk{i}" for i in range(20)], 12)
    accent_of = {s: ["en", "de", "fr", "es"][i % 4] for i, s in enumerate(np.unique(speakers))}
    accents = np.array([accent_of[s] for s in speakers])
    words = rng.choice(["yes", "no", "stop"], size=len(speakers))
    for labels in (accents, words):
        splits = probe_splits(labels, folds=5, groups=speakers)
        assert len(splits) == 5
        for train, test in splits:
            assert not set(speakers[train]) & set(speakers[test])
            assert len(train) + len(test) == len(labels)
    # without groups the same speakers do land on both sides (the check above is not vacuous)
    ungrouped = probe_splits(words, folds=5)
    assert any(set(speakers[tr]) & set(speakers[te]) for tr, te in ungrouped)


def test_group_label_itself_is_grouped_by_the_fallback_group():
    """A speaker probe cannot have speaker-disjoint folds; its folds keep each utterance
    (here 2 rows: e.g. two words of one utterance) on one side instead."""
    rng = np.random.default_rng(4)
    speakers = np.repeat([f"spk{i}" for i in range(6)], 20)
    utterances = np.repeat([f"utt{i}" for i in range(60)], 2)
    X = rng.standard_normal((len(speakers), 8))
    labels_df = pd.DataFrame({"speaker": speakers, "utt_id": utterances,
                              "word": rng.choice(["a", "b"], len(speakers))})
    kwargs = {"label_columns": ["speaker", "word"], "group": "speaker", "model": "m",
              "span": "word", "pooling": "mean", "progress": False}
    table = probe_table({"layer.0": X}, labels_df, fallback_group="utt_id", **kwargs)
    assert (table["folds"] == 5).all()
    for train, test in probe_splits(speakers, folds=5, groups=utterances):
        assert not set(utterances[train]) & set(utterances[test])
    # without a fallback the speaker label gets plain stratified folds (as before)
    assert (probe_table({"layer.0": X}, labels_df, **kwargs)["folds"] == 5).all()


def test_near_duplicates_across_folds_inflate_a_speaker_probe():
    """Like one word per file at 3 speaking rates: rows of one utterance are near-copies.
    Ungrouped folds put copies on both sides and the probe recognises the utterance."""
    rng = np.random.default_rng(12)
    n_speakers, n_utts, rates = 6, 12, 3
    speaker_mean = 0.3 * rng.standard_normal((n_speakers, 10))
    utt_mean = rng.standard_normal((n_speakers * n_utts, 10))
    speakers = np.repeat(np.arange(n_speakers), n_utts * rates).astype(str)
    utterances = np.repeat(np.arange(n_speakers * n_utts), rates).astype(str)
    X = (np.repeat(speaker_mean, n_utts * rates, axis=0) + np.repeat(utt_mean, rates, axis=0)
         + 0.05 * rng.standard_normal((len(speakers), 10)))
    labels_df = pd.DataFrame({"speaker": speakers, "utt_id": utterances})
    kwargs = {"label_columns": ["speaker"], "group": "speaker", "model": "m", "span": "word",
              "pooling": "mean", "progress": False}
    grouped = probe_table({"l": X}, labels_df, fallback_group="utt_id", **kwargs)
    ungrouped = probe_table({"l": X}, labels_df, **kwargs)
    accuracy = {name: t.set_index("metric").loc["accuracy", "value"]
                for name, t in (("grouped", grouped), ("ungrouped", ungrouped))}
    assert accuracy["ungrouped"] > accuracy["grouped"] + 0.2


def test_inner_folds_refit_the_preprocessing_and_are_group_disjoint(monkeypatch):
    rng = np.random.default_rng(13)
    y = np.repeat(["a", "b"], 60)
    groups = np.repeat(np.arange(30), 4)
    probe = probes.make_probe(n_features=40, y_train=y, groups=groups, max_dims=10)
    assert [name for name, _ in probe.pipeline.steps] == ["scale", "pca", "classifier"]
    for train, validation in probe.cv:
        assert not set(groups[train]) & set(groups[validation])
    fitted_on = []
    fit = probes.StandardScaler.fit
    monkeypatch.setattr(probes.StandardScaler, "fit",
                        lambda self, X, y=None: fitted_on.append(len(X)) or fit(self, X, y))
    X = rng.standard_normal((120, 40)) + (y == "a")[:, None]
    probe.fit(X, y)
    # one scaler per inner training fold (never its validation rows), then all rows
    assert fitted_on == [len(train) for train, _ in probe.cv] + [120]
    assert probe.C_ in probes.C_GRID and (probe.predict(X) == y).mean() > 0.8


def test_mlp_early_stopping_split_is_group_disjoint_and_excluded_from_preprocessing():
    rng = np.random.default_rng(14)
    y = np.tile(["a", "b", "c"], 400)
    groups = np.repeat(np.arange(120), 10)
    X = rng.standard_normal((1200, 12)) + 2.0 * (y == "a")[:, None]
    probe = probes.make_probe("mlp", n_features=12, y_train=y, groups=groups, max_dims=8)
    assert isinstance(probe, probes.EarlyStoppedMLP)
    train, validation = probe.split
    assert not set(groups[train]) & set(groups[validation])
    assert 100 <= len(validation) <= 0.15 * len(y)
    probe.fit(X, y)
    assert probe.pipeline_.named_steps["scale"].n_samples_seen_ == len(train)
    assert probe.validation_score_ > 0.5 and (probe.predict(X) == y).mean() > 0.5
    small = probes.make_probe("mlp", n_features=12, y_train=y[:90], groups=groups[:90])
    assert small.named_steps["classifier"].solver == "lbfgs"  # too few rows to validate


def test_rare_classes_are_dropped_without_crashing():
    X, labels = separable(n_per_class=30, seed=5)
    X = np.vstack([X, np.zeros((3, X.shape[1]))])
    labels = np.concatenate([labels, ["rare-2", "rare-2", "rare-1"]])
    with pytest.warns(UserWarning, match="dropping 2 class"):
        result = scores(probe_scores(X, labels))
    assert result.loc["accuracy", "value"] == pytest.approx(1.0)
    with pytest.warns(UserWarning, match="dropping"):
        splits = probe_splits(labels)
    used = np.concatenate([test for _, test in splits])
    assert not {"rare-1", "rare-2"} & set(labels[used])


def test_only_small_classes_reduce_the_folds():
    X, labels = separable(n_per_class=3, n_classes=2, seed=6)
    with pytest.warns(UserWarning, match="reducing folds from 5 to 3"):
        result = scores(probe_scores(X, labels))
    assert (result["folds"] == 3).all()


def test_impossible_probe_gives_nan_not_an_error():
    X = np.random.default_rng(7).standard_normal((4, 3))
    with pytest.warns(UserWarning, match="no probe possible"):
        result = scores(probe_scores(X, ["a", "a", "a", "b"]))
    assert result["value"].isna().all() and (result["folds"] == 0).all()


def test_wide_layers_are_reduced_by_pca():
    rng = np.random.default_rng(8)
    latent, labels = separable(dims=3, seed=8)  # class structure in 3 of 40 dimensions
    X = latent @ rng.standard_normal((3, 40)) + 0.1 * rng.standard_normal((len(latent), 40))
    for pca_on in ("train", "all"):
        result = scores(probe_scores(X, labels, max_dims=10, pca_on=pca_on))
        assert result.loc["accuracy", "value"] > 0.95
    probe = probes.make_probe(n_features=40, y_train=labels[:100], max_dims=10)
    assert probe.pipeline.named_steps["pca"].n_components == 10


def test_probe_table_columns_and_rows():
    rng = np.random.default_rng(9)
    n = 90
    layers = {f"layer.{i}": rng.standard_normal((n, 6)) for i in range(3)}
    labels_df = pd.DataFrame(
        {"speaker": np.repeat(["s1", "s2", "s3"], 30), "word": rng.choice(["a", "b", "c"], n)}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about here
        table = probe_table(
            layers, labels_df, label_columns=["speaker", "word"], group="speaker", model="m",
            span="word", pooling="mean", folds=3, progress=False,
        )  # fmt: skip
    assert tuple(table.columns) == PROBE_COLUMNS
    assert len(table) == 3 * 2 * 2
    assert set(table["metric"]) == {"accuracy", "macro_f1"}
    assert (table["probe"] == "logreg").all()


def test_parallel_layers_give_the_same_table():
    """The workflow runs the probes with the job's threads as n_jobs: same numbers as one job."""
    rng = np.random.default_rng(3)
    X, labels = separable(n_per_class=30, dims=8)
    layers = {f"layer.{i}": X + rng.normal(0, 1.0 + i, X.shape) for i in range(3)}
    labels_df = pd.DataFrame({"word": labels})
    one, two = (
        probe_table(layers, labels_df, label_columns="word", model="m", span="word",
                    pooling="mean", folds=3, n_jobs=n_jobs, progress=False)
        for n_jobs in (1, 2)
    )
    pd.testing.assert_frame_equal(one, two)
    acc = one[one["metric"] == "accuracy"]["value"].to_numpy()
    assert acc[0] > acc[-1]  # more noise, lower accuracy: the layers were not mixed up


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"probe": "svm"}, "probe must be one of"), ({"folds": 1}, "folds must be an integer")],
)
def test_invalid_options_raise(kwargs, match):
    X, labels = separable()
    with pytest.raises(ValueError, match=match):
        probe_scores(X, labels, **kwargs)


def test_invalid_input_raises():
    with pytest.raises(ValueError, match="labels has 3 entries"):
        probe_scores(np.zeros((4, 2)), ["a", "b", "a"])
    with pytest.raises(ValueError, match="X contains NaN"):
        probe_scores(np.full((4, 2), np.nan), ["a", "b", "a", "b"])


def test_no_label_columns_gives_an_empty_table():
    table = probe_table(
        {"layer.0": np.zeros((5, 2))}, pd.DataFrame(index=range(5)), label_columns=[],
        model="m", span="word", pooling="mean", progress=False,
    )  # fmt: skip
    assert table.empty and tuple(table.columns) == PROBE_COLUMNS


@pytest.mark.parametrize("probe", ["logreg", "mlp"])
def test_pca_wider_than_an_inner_fold_is_capped(probe):
    """Fewer outer-training rows than max_dims: the PCA width fits the outer rows, and an
    inner (or early-stopping) fold has fewer still (the demo's 64 utterances, 512-dim cnn)."""
    rng = np.random.default_rng(3)
    labels = np.repeat(["a", "b"], 32)
    X = rng.standard_normal((64, 300)) + 2.0 * (labels == "a")[:, None]
    groups = np.repeat(np.arange(16), 4)
    result = scores(probe_scores(X, labels, probe=probe, groups=groups, max_dims=256))
    assert result.loc["accuracy", "value"] > 0.9
