"""Probes: chance on shuffled labels, perfect on separable ones, group-disjoint folds."""

from __future__ import annotations

import gc
import warnings
import weakref

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from benchmarks import schema
from layerwise.analyses import linear_probe, probes, subsample
from layerwise.analyses.probes import PROBE_COLUMNS, _plan, probe_scores, probe_splits, probe_table

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


@pytest.mark.filterwarnings("ignore:The least populated class")  # the inner splits, expected
@pytest.mark.parametrize("solver", ["torch", "sklearn"])
def test_training_folds_of_single_rows_are_skipped_not_an_error(solver):
    """Two rows per speaker, two folds: each training fold holds every speaker once, so no
    C can be validated (scikit-learn's splitters raised, killing the job): those folds are
    skipped with a warning; folds that can be validated are still scored."""
    rng = np.random.default_rng(9)
    labels = np.repeat([f"s{i}" for i in range(6)], 2)
    X = rng.standard_normal((12, 5)) + 3.0 * np.eye(6, 5)[np.repeat(np.arange(6), 2)]
    with pytest.warns(UserWarning, match="no class with two rows; fold skipped"):
        result = scores(probe_scores(X, labels, folds=2, solver=solver))
    assert result["value"].isna().all() and (result["folds"] == 0).all()
    labels[:4] = ["s0", "s0", "s0", "s0"]  # s0 twice in each training fold: a C search
    result = scores(probe_scores(X, labels, folds=2, solver=solver))
    assert (result["folds"] == 2).all() and result["value"].notna().all()


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


# --------------------------------------------------------------------------- the torch solver


def blobs(n=900, dims=30, n_classes=4, spread=0.3, seed=20):
    """Overlapping Gaussian classes with an offset and unequal column scales (so that the
    scaler matters): accuracy well below 1, so C changes the predictions."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    X = spread * rng.standard_normal((n_classes, dims))[y] + rng.standard_normal((n, dims))
    return (X * rng.uniform(0.5, 20, dims) + 50).astype(np.float32), y


@pytest.mark.parametrize("pca_on", ["train", "all"])
def test_each_label_gets_its_own_scores_when_layers_and_labels_run_side_by_side(pca_on):
    """Two workers, one task per layer and label (per layer with pca_on="all"): each label's
    rows are those of a table of that label alone, on one worker."""
    rng = np.random.default_rng(5)
    X, labels = separable(n_per_class=30, dims=8)
    layers = {f"layer.{i}": X + rng.normal(0, 1.0 + i, X.shape) for i in range(3)}
    labels_df = pd.DataFrame({"word": labels, "half": np.where(X[:, 0] > np.median(X[:, 0]),
                                                               "hi", "lo")})
    settings = dict(model="m", span="word", pooling="mean", folds=3, pca_on=pca_on,
                    progress=False)
    both = probe_table(layers, labels_df, label_columns=["word", "half"], n_jobs=2, **settings)
    for label in ("word", "half"):
        alone = probe_table(layers, labels_df, label_columns=label, n_jobs=1, **settings)
        pd.testing.assert_frame_equal(both[both["label"] == label].reset_index(drop=True), alone)
    assert both[both["label"] == "word"]["value"].to_numpy().tolist() != \
        both[both["label"] == "half"]["value"].to_numpy().tolist()


@pytest.mark.parametrize("grouped", [False, True])
def test_test_folds_partition_the_rows_and_validation_folds_each_training_fold(grouped):
    """The torch probe adds the test folds' moments for all rows' and subtracts validation
    folds' from a training fold's: both rest on these partitions."""
    rng = np.random.default_rng(4)
    labels = rng.choice(list("abcd"), 400)
    groups = rng.integers(0, 40, 400).astype(str) if grouped else None
    plan = _plan(labels, groups, folds=5, seed=0, name="l")
    tests = np.sort(np.concatenate([test for _, test in plan.splits]))
    np.testing.assert_array_equal(tests, np.arange(len(plan.rows)))
    for (train, _), inner in zip(plan.splits, plan.inner, strict=True):
        held = np.sort(np.concatenate([validation for _, validation in inner]))
        np.testing.assert_array_equal(held, np.arange(len(train)))


def test_moments_and_rows_on_the_cpu_are_those_of_float64_numpy():
    """Moments' column sums (by NumPy, in float64) and the fold rows taken (linear_probe.take)."""
    X = np.random.default_rng(2).normal(3.0, 1.0, (500, 7)).astype(np.float32)
    moments = linear_probe.Moments.of(torch.as_tensor(X))
    np.testing.assert_allclose(moments.sums.numpy(), X.astype(np.float64).sum(0), rtol=1e-12)
    assert moments.sums.dtype == torch.float64 and moments.count == 500
    rows = np.array([4, 0, 499, 4])
    assert torch.equal(linear_probe.take(torch.as_tensor(X), rows), torch.as_tensor(X[rows]))


def test_moments_downdated_basis_is_sklearns_scaler_and_pca_on_the_training_rows():
    """All rows minus the held-out rows give the training rows' StandardScaler -> PCA (up to
    column signs, which an L2 logistic regression does not see)."""
    from sklearn.pipeline import make_pipeline

    X, _ = blobs()
    held = np.arange(len(X)) % 4 == 0
    Xt = torch.as_tensor(X)
    Xt -= Xt.mean(0)
    moments = linear_probe.Moments.of(Xt) - linear_probe.Moments.of(Xt[held])
    assert moments.count == (~held).sum()
    shift, A = linear_probe.standardised_pca(moments, max_dims=10)
    ours = linear_probe.project(torch.as_tensor(X) - torch.as_tensor(X).mean(0), shift, A).numpy()
    reference = make_pipeline(StandardScaler(), PCA(10)).fit(X[~held].astype(np.float64))
    theirs = reference.transform(X.astype(np.float64))
    signs = np.sign((ours * theirs).sum(0))
    # float32 data and Gram (relative precision ~1e-7, times sqrt(rows) in the sums)
    np.testing.assert_allclose(ours * signs, theirs, atol=2e-3 * np.abs(theirs).max())


@pytest.mark.parametrize("C", [0.01, 1.0, 100.0])
def test_torch_logreg_equals_sklearn_at_the_same_C(C):
    """Converged (tight tol on both), the float32 L-BFGS fit is scikit-learn's model: class
    probabilities within 1e-3 (float32 gradients: ~1e-6 relative, so the optimum moves by
    ~1e-4 in the weights) and the same predicted class on at least 99.5% of rows (rows whose
    two top classes are that close may flip)."""
    from sklearn.linear_model import LogisticRegression

    X, y = blobs()
    Z = StandardScaler().fit_transform(X.astype(np.float64))
    reference = LogisticRegression(C=C, tol=1e-10, max_iter=10_000).fit(Z, y)
    Zt = torch.as_tensor(Z, dtype=torch.float32)
    classes, W, b = linear_probe.fit_path(Zt, y, [C], tol=1e-6, max_iter=2_000)[-1]
    ours = torch.softmax(Zt @ W + b, dim=1).numpy()
    np.testing.assert_allclose(ours, reference.predict_proba(Z), atol=1e-3)
    agree = (linear_probe.predict(Zt, classes, W, b) == reference.predict(Z)).mean()
    assert agree >= 0.995
    assert 0.4 < (reference.predict(Z) == y).mean() < 0.95  # not a trivial problem


def test_warm_started_path_ends_where_a_cold_fit_does():
    X, y = blobs(seed=21)
    Zt = torch.as_tensor(StandardScaler().fit_transform(X), dtype=torch.float32)
    path = linear_probe.fit_path(Zt, y, [0.01, 0.1, 1.0], tol=1e-6, max_iter=2_000)
    cold = linear_probe.fit_path(Zt, y, [1.0], tol=1e-6, max_iter=2_000)[-1]
    np.testing.assert_allclose(path[-1][1].numpy(), cold[1].numpy(), atol=1e-3)
    norms = [float(W.norm()) for _, W, _ in path]
    assert norms[0] < norms[1] < norms[2]  # weaker penalty, larger weights: a real path


def test_torch_and_sklearn_solvers_give_the_same_scores():
    """Same folds, inner splits and C grid: the two implementations of the logreg probe give
    the same fold accuracies up to rows near a decision boundary (tol=1e-3, as the probe)."""
    X, y = blobs(n=600, dims=40, seed=22)
    labels = np.array([f"c{v}" for v in y])
    groups = np.repeat(np.arange(120), 5)
    torch_, sklearn_ = (scores(probe_scores(X, labels, groups=groups, max_dims=20, solver=s))
                        for s in ("torch", "sklearn"))
    assert abs(torch_.loc["accuracy", "value"] - sklearn_.loc["accuracy", "value"]) < 0.01
    assert torch_.loc["accuracy", "chance"] == sklearn_.loc["accuracy", "chance"]
    assert 0.4 < torch_.loc["accuracy", "value"] < 0.95


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_logreg_on_cuda_equals_the_cpu():
    X, y = blobs(seed=23)
    Z = torch.as_tensor(StandardScaler().fit_transform(X), dtype=torch.float32)
    cpu, cuda = (linear_probe.fit_path(Z.to(d), y, [0.1, 1.0], tol=1e-6, max_iter=2_000)[-1]
                 for d in ("cpu", "cuda"))
    np.testing.assert_allclose(cuda[1].cpu().numpy(), cpu[1].numpy(), atol=1e-3)


# --------------------------------------------------------------------------- class limits


def limited_labels():
    """Word counts e:40, a:30, b:25, c:25, d:19 (c ties b, lost by name; d below 20)."""
    counts = {"e": 40, "a": 30, "b": 25, "c": 25, "d": 19}
    word = np.concatenate([[w] * c for w, c in counts.items()])
    rng = np.random.default_rng(24)
    rng.shuffle(word)
    speaker = np.array([f"s{i % 3}" for i in range(len(word))])
    return pd.DataFrame({"word": word, "speaker": speaker})


def test_min_count_and_max_classes_limit_the_word_label_only():
    labels_df = limited_labels()
    rng = np.random.default_rng(25)
    codes = np.unique(labels_df["word"], return_inverse=True)[1]
    layers = {"layer.0": 3.0 * np.eye(5, 8)[codes] + rng.standard_normal((len(codes), 8))}
    table = probe_table(layers, labels_df, label_columns=["word", "speaker"], limited=["word"],
                        min_count=20, max_classes=3, model="m", span="word", pooling="mean",
                        folds=5, progress=False).set_index(["label", "metric"])
    assert set(PROBE_COLUMNS) <= set(table.reset_index().columns)
    word, speaker = table.loc[("word", "accuracy")], table.loc[("speaker", "accuracy")]
    assert (word["n_rows"], word["n_classes"]) == (40 + 30 + 25, 3)
    assert (word["min_count"], word["max_classes"]) == (20, 3)
    assert (speaker["n_rows"], speaker["n_classes"]) == (len(labels_df), 3)
    assert np.isnan(speaker["min_count"]) and np.isnan(speaker["max_classes"])
    # the rows the folds hold are exactly those of e, a and b
    keep = subsample.kept_classes(labels_df["word"], min_count=20, max_classes=3)
    plan = probes._plan(labels_df["word"].to_numpy(), None, folds=5, seed=0, name="word",
                        keep=keep)
    assert set(labels_df["word"].to_numpy()[plan.rows]) == {"e", "a", "b"}
    assert sorted(np.concatenate([test for _, test in plan.splits])) == list(range(95))


def test_workflow_entry_limits_the_unit_label_with_the_schema_keys():
    from layerwise import analyses

    labels_df = limited_labels()
    index = labels_df.assign(utt_id=[f"u{i // 2}" for i in range(len(labels_df))])
    layers = {"layer.0": np.random.default_rng(26).standard_normal((len(index), 6))}
    params = {**schema.defaults("analysis", "probes"), "max_classes": 2, "folds": 3}
    table = analyses.run("probes", index, layers, model="m", span="word", pooling="mean",
                         labels=["speaker"], params=params, seed=0).set_index(["label", "metric"])
    word = table.loc[("word", "accuracy")]
    assert (word["n_classes"], word["n_rows"], word["max_classes"]) == (2, 70, 2)
    assert word["min_count"] == schema.defaults("analysis", "probes")["min_count"]
    assert np.isnan(table.loc[("speaker", "accuracy"), "max_classes"])


def test_the_probe_takes_a_gpu_only_when_the_job_was_given_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for visible, expected in (("0", "cuda"), ("GPU-1234", "cuda"), ("", "cpu"), ("-1", "cpu")):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        assert linear_probe.device().type == expected
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert linear_probe.device().type == "cpu"  # installed, not given: an extraction job's
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert linear_probe.device().type == "cpu"


class _Watched(dict):
    """Layers that record, at each read, how many earlier reads' copies are still alive."""

    def __init__(self, layers):
        super().__init__(layers)
        self.copies, self.alive = [], []

    def __getitem__(self, key):
        gc.collect()
        self.alive.append(sum(ref() is not None for ref in self.copies))
        X = dict.__getitem__(self, key).copy()
        self.copies.append(weakref.ref(X))
        return X


def test_layers_are_read_one_at_a_time_and_lazily_give_the_same_table():
    """The workflow passes a lazy selection (subsample.take) of memory-mapped layers: each
    layer is copied when its probes start and let go after, and the table is bitwise the one
    of the layers' rows copied up front, in one process and in two."""
    rng = np.random.default_rng(5)
    X, labels = separable(n_per_class=30, dims=8)
    n = len(labels)
    layers = _Watched({f"layer.{i}": np.vstack([X + rng.normal(0, 1.0 + i, X.shape),
                                                np.full((5, 8), np.nan)]) for i in range(5)})
    keep = np.arange(n)  # the unlabelled rows (NaN here) are left out
    labels_df = pd.DataFrame({"word": labels})
    settings = dict(label_columns="word", model="m", span="word", pooling="mean", folds=3,
                    progress=False)
    lazy = subsample.take(layers, keep)
    one = probe_table(lazy, labels_df, n_jobs=1, **settings)
    assert len(layers.alive) == 5 and max(layers.alive) <= 1  # read once each, when used
    copied = {name: dict.__getitem__(layers, name)[keep] for name in layers}
    pd.testing.assert_frame_equal(one, probe_table(copied, labels_df, n_jobs=1, **settings),
                                  check_exact=True)
    pd.testing.assert_frame_equal(one, probe_table(lazy, labels_df, n_jobs=2, **settings),
                                  check_exact=True)


def test_a_bad_layer_is_named_when_it_is_read():
    """Shapes are checked before any probe, values when the layer is read: same messages."""
    X, labels = separable(n_per_class=10, dims=4)
    labels_df = pd.DataFrame({"word": labels})
    settings = dict(label_columns="word", model="m", span="word", pooling="mean", folds=3,
                    progress=False)
    with pytest.raises(ValueError, match="same rows"):
        probe_table({"a": X, "b": X[1:]}, labels_df, **settings)
    with pytest.raises(ValueError, match=r"layers\['b'\] must be a 2-D array"):
        probe_table({"a": X, "b": X[:, 0]}, labels_df, **settings)
    bad = X.copy()
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match=r"layers\['b'\] contains NaN or infinity"):
        probe_table(subsample.take({"a": X, "b": bad}, np.arange(len(X))[::-1]), labels_df,
                    **settings)
