"""Supervised probes: how linearly (or MLP-) decodable is a label from each layer.

Each (layer, label) gets an outer stratified k-fold cross-validation; in every outer
training fold the probe is

``logreg``
    StandardScaler -> [PCA to ``max_dims`` when the layer is wider] -> multinomial
    logistic regression with an L2 penalty, C chosen from ``(0.01, 0.1, 1, 10)`` by an
    inner 3-fold cross-validation on the training fold only, over the whole pipeline
    (:class:`InnerCVProbe`): each inner fold refits the scaler and the PCA on its own
    training rows, so its validation rows shape nothing; then refitted on the fold,
``mlp``
    StandardScaler -> [PCA] -> one hidden layer of 256 ReLU units (``MLPClassifier``),
    Adam with early stopping on a 10% validation split of the training fold that is
    stratified and group-disjoint like the folds (:class:`EarlyStoppedMLP`; scaler and
    PCA fitted without the validation rows); training folds too small for a >= 100-row
    validation split use L-BFGS instead.

Two implementations of ``logreg`` fit that same model (``solver``):

``torch`` (the default)
    :mod:`layerwise.analyses.linear_probe`: the scaler and PCA of every (inner) training
    fold from moments downdated by the held-out rows, the C grid as one warm-started path
    by full-batch L-BFGS in float32, on the GPU when the job has one. Same folds, same C
    grid, same model and stopping rule as ``sklearn``; 54,000 rows x 13 layers in minutes on
    2 cores (``benchmarks/bench_scale.py``).
``sklearn``
    :class:`InnerCVProbe` (scikit-learn's ``LogisticRegression``, float64): the reference,
    hours at 54,000 rows.

Choices that trade exactness for speed (measured on 2,700 rows x 768 dims):

* The PCA bounds the cost of wide layers; ``max_dims=None`` switches it off. It is
  fitted within each (inner) training fold (``pca_on="train"``, leaks nothing), or,
  much faster on 768-d layers, once per layer on all rows (``pca_on="all"``: no labels
  are used, but test rows shape the basis).
* ``tol=1e-3`` and ``max_iter=100`` for L-BFGS; nearly separable folds with large C
  stop at the iteration cap, which changes accuracy very little but saves most of the
  time. Convergence warnings from these capped fits are silenced.
* BLAS/OpenMP threads are limited to one per fit: the matrices are small, and
  oversubscribed threads were 10-50x slower on a shared machine. Parallelism comes from
  ``n_jobs`` worker processes, one task per layer and label.

Folds (and the inner splits of each training fold) are made once per label and reused for
every layer, so layers are compared on identical splits. With ``group`` (e.g. the speaker)
the folds are group-disjoint (``StratifiedGroupKFold``, also for the inner splits), so a
probe cannot score by recognising a speaker it saw in training. The label that is the group
itself (the speaker) cannot have group-disjoint folds; it, and every label when ``group`` is
None, is grouped by ``fallback_group`` instead (the workflow passes the utterance), so that
the words, phones and frames of one utterance - near-duplicates for a speaker probe - never
sit on both sides of a split. Classes too small for the folds are dropped with a warning
(see :func:`probe_splits`). At corpus size a word or phone label (``limited``) first keeps
its ``max_classes`` most frequent classes with at least ``min_count`` rows each
(:func:`layerwise.analyses.subsample.kept_classes`, as convexity): thousands of word types,
most with a handful of tokens, cannot be decoded from a few examples, and a probe's cost
grows with its classes.

Reported per metric (``accuracy``, ``macro_f1``): mean over outer folds, standard
deviation over folds, a fold-based 95% interval ``mean +- t(0.975, f-1) * std / sqrt(f)``
(it treats the folds as independent, which they are not quite, so it is indicative), and
the chance level: the same metric for a majority-class predictor (the most frequent
class of the training fold), averaged over folds. For accuracy that is the share of
the majority class in the test folds.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
import sklearn
import torch
from scipy import stats
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from layerwise.analyses import layer_tasks, linear_probe, subsample
from layerwise.analyses.validation import (
    check_int,
    check_label_frame,
    check_labels,
    check_layer,
    check_matrix,
)

__all__ = [
    "PROBE_COLUMNS",
    "EarlyStoppedMLP",
    "InnerCVProbe",
    "make_probe",
    "probe_scores",
    "probe_splits",
    "probe_table",
]

#: Columns of :func:`probe_table`.
PROBE_COLUMNS = (
    "model", "layer", "span", "pooling", "label", "probe", "metric",
    "value", "std", "ci_low", "ci_high", "chance", "folds", "n_rows", "n_classes",
    "min_count", "max_classes",
)  # fmt: skip

#: Grid of inverse L2 strengths searched by the inner cross-validation.
C_GRID = (0.01, 0.1, 1.0, 10.0)

_METRICS = ("accuracy", "macro_f1")
_INNER_FOLDS = 3
_PROBES = ("logreg", "mlp")
_SOLVERS = ("torch", "sklearn")
_SKLEARN = tuple(int(part) for part in sklearn.__version__.split(".")[:2])


def _preprocessing(n_features: int, n_rows: int, max_dims: int | None, seed) -> list:
    """Pipeline steps before the classifier: standardise, then PCA when too wide."""
    steps = [("scale", StandardScaler())]
    if max_dims is not None and n_features > max_dims:
        # exact either way: eigh of the d x d covariance for tall data, SVD for wide data
        tall = n_rows >= n_features and _SKLEARN >= (1, 5)
        solver = "covariance_eigh" if tall else "full"
        pca = PCA(min(max_dims, n_rows), svd_solver=solver, random_state=seed)
        steps.append(("pca", pca))
    return steps


def _preprocessor(pipeline: Pipeline, n_rows: int) -> Pipeline:
    """A fresh copy of the steps before the classifier, its PCA no wider than ``n_rows``.

    The PCA width is set for the outer training rows; an inner or early-stopping fold fits
    it on fewer rows, and PCA cannot keep more components than it has rows.
    """
    preprocess = clone(Pipeline(pipeline.steps[:-1]))
    if "pca" in preprocess.named_steps:
        pca = preprocess.named_steps["pca"]
        pca.set_params(n_components=min(pca.n_components, n_rows))
    return preprocess


def make_probe(
    probe: str = "logreg",
    *,
    n_features: int,
    y_train,
    groups=None,
    max_dims: int | None = 256,
    preprocess: bool = True,
    seed: int | None = 0,
    cv: list | None = None,
):
    """Unfitted probe for one outer training fold: preprocessing refitted on every split.

    Parameters
    ----------
    probe : {"logreg", "mlp"}, default="logreg"
    n_features : int
        Width of the input; PCA is added when it exceeds ``max_dims``.
    y_train : array-like of shape (n_train,)
        Training targets; the PCA width is capped at ``n_train``.
    groups : array-like of shape (n_train,), optional
        Group of each training row (e.g. speaker or utterance): the inner splits (C
        search, MLP validation split) are group-disjoint, like the outer folds.
    max_dims : int or None, default=256
        Upper bound on the input width after PCA; None keeps all dimensions.
    preprocess : bool, default=True
        False leaves out scaler and PCA (for input that was already preprocessed).
    seed : int or None, default=0
        Seed of the inner splits, the PCA and the MLP.
    cv : list of (ndarray, ndarray) or None, default=None
        The ``logreg`` probe's inner splits of the training rows when they were made
        already (the probes make them once per label, for every layer); None makes them
        from ``y_train``, ``groups`` and ``seed``.

    Returns
    -------
    estimator
        ``logreg``: :class:`InnerCVProbe` of the pipeline (scaler, PCA, logistic
        regression), which refits the scaler and the PCA on every inner training fold.
        ``mlp``: the pipeline (scaler, PCA, MLP), with early stopping on a group-disjoint
        validation split (:class:`EarlyStoppedMLP`) when there are enough rows, else
        trained by L-BFGS.

    Examples
    --------
    >>> probe = make_probe("logreg", n_features=768, y_train=[0, 1] * 400)
    >>> probe.pipeline.named_steps["pca"]
    PCA(n_components=256, random_state=0, svd_solver='covariance_eigh')
    >>> len(probe.cv), probe.Cs
    (3, (0.01, 0.1, 1.0, 10.0))
    """
    if probe not in _PROBES:
        raise ValueError(f"probe must be one of {_PROBES}, got {probe!r}")
    y_train = np.asarray(y_train)
    n_train = len(y_train)
    steps = _preprocessing(n_features, n_train, max_dims, seed) if preprocess else []
    if probe == "logreg":
        classifier = LogisticRegression(tol=1e-3, max_iter=100)
        cv = _inner_splits(y_train, groups, seed) if cv is None else cv
        if cv is None:
            raise ValueError("no class of y_train has two rows: no C can be validated")
        return InnerCVProbe(Pipeline([*steps, ("classifier", classifier)]), cv)
    validation = _validation_split(y_train, groups, seed)
    if validation is None:
        # Too few rows for a validation split that would not saturate at 100% after a
        # few epochs and freeze an under-trained snapshot: L-BFGS, which sklearn
        # recommends for small data sets.
        mlp = MLPClassifier(hidden_layer_sizes=(256,), max_iter=200, random_state=seed,
                            solver="lbfgs")
        return Pipeline([*steps, ("classifier", mlp)])
    mlp = MLPClassifier(hidden_layer_sizes=(256,), random_state=seed)
    return EarlyStoppedMLP(Pipeline([*steps, ("classifier", mlp)]), validation)


class InnerCVProbe(ClassifierMixin, BaseEstimator):
    """A pipeline ending in a logistic regression whose C is chosen by inner CV.

    What ``GridSearchCV`` over the pipeline does, with the preprocessing (scaler, PCA)
    fitted once per inner training fold and shared by every C (the regression runs from
    small C to large, warm-started), which makes it several times faster when the PCA
    dominates.  Ties go to the smaller C; the pipeline is then refitted on all rows.

    Parameters
    ----------
    pipeline : sklearn.pipeline.Pipeline
        Preprocessing steps, then a ``LogisticRegression`` named ``classifier``.
    cv : list of (ndarray, ndarray)
        Inner (training, validation) row indices of the rows passed to :meth:`fit`.
    Cs : tuple of float, default=C_GRID
    """

    def __init__(self, pipeline, cv, Cs=C_GRID):
        self.pipeline = pipeline
        self.cv = cv
        self.Cs = Cs

    def fit(self, X, y):
        y = np.asarray(y)
        Cs = sorted(self.Cs)
        scores = np.zeros(len(Cs))
        for train, validation in self.cv:
            Z_train, Z_val = X[train], X[validation]
            if len(self.pipeline) > 1:
                preprocess = _preprocessor(self.pipeline, len(train))
                Z_train = preprocess.fit_transform(Z_train, y[train])
                Z_val = preprocess.transform(Z_val)
            classifier = clone(self.pipeline.steps[-1][1]).set_params(warm_start=True)
            for k, C in enumerate(Cs):
                classifier.set_params(C=C).fit(Z_train, y[train])
                scores[k] += accuracy_score(y[validation], classifier.predict(Z_val))
        self.C_ = Cs[int(np.argmax(scores))]
        self.pipeline_ = clone(self.pipeline).set_params(classifier__C=self.C_).fit(X, y)
        self.classes_ = self.pipeline_.classes_
        return self

    def predict(self, X):
        return self.pipeline_.predict(X)


class EarlyStoppedMLP(ClassifierMixin, BaseEstimator):
    """A pipeline ending in an MLP, trained with early stopping on a given validation split.

    The preprocessing steps are fitted on the training part of ``split`` only; the MLP
    is trained epoch by epoch (``partial_fit``) on it and keeps the weights of the epoch
    with the best validation accuracy, stopping after ``patience`` epochs without an
    improvement of ``tol`` (scikit-learn's ``early_stopping`` rule, but with a split
    that is group-disjoint like the probe's folds, rather than a random one in which
    near-duplicate rows of one utterance or speaker sit on both sides).

    Parameters
    ----------
    pipeline : sklearn.pipeline.Pipeline
        Preprocessing steps, then an ``MLPClassifier`` named ``classifier``.
    split : (ndarray, ndarray)
        Training and validation row indices of the rows passed to :meth:`fit`.
    max_epochs, patience : int, default=200, 10
    tol : float, default=1e-4
    """

    def __init__(self, pipeline, split, *, max_epochs=200, patience=10, tol=1e-4):
        self.pipeline = pipeline
        self.split = split
        self.max_epochs = max_epochs
        self.patience = patience
        self.tol = tol

    def fit(self, X, y):
        train, validation = self.split
        y = np.asarray(y)
        preprocess = _preprocessor(self.pipeline, len(train)) if len(self.pipeline) > 1 else None
        mlp = clone(self.pipeline.steps[-1][1])
        Z_train, Z_val = X[train], X[validation]
        if preprocess is not None:
            Z_train = preprocess.fit_transform(Z_train, y[train])
            Z_val = preprocess.transform(Z_val)
        self.classes_ = np.unique(y)
        best, best_weights, waited = -np.inf, None, 0
        for epoch in range(1, self.max_epochs + 1):
            self.n_epochs_ = epoch
            mlp.partial_fit(Z_train, y[train], classes=self.classes_)
            score = accuracy_score(y[validation], mlp.predict(Z_val))
            if score > best + self.tol:
                best, waited = score, 0
                best_weights = ([w.copy() for w in mlp.coefs_],
                                [b.copy() for b in mlp.intercepts_])
            else:
                waited += 1
                if waited > self.patience:
                    break
        mlp.coefs_, mlp.intercepts_ = best_weights
        self.validation_score_ = best
        steps = [] if preprocess is None else list(preprocess.steps)
        self.pipeline_ = Pipeline([*steps, ("classifier", mlp)])
        return self

    def predict(self, X):
        return self.pipeline_.predict(X)


@dataclass(frozen=True)
class _Plan:
    """Rows, targets, groups and outer splits of one label (shared by all layers)."""

    rows: np.ndarray
    y: np.ndarray
    groups: np.ndarray | None
    splits: list[tuple[np.ndarray, np.ndarray]]
    #: per outer fold, the inner (C search) splits of its training rows (None for a fold
    #: whose training rows hold one class, or no class twice): made once here, not per layer
    inner: list[list | None]


def _planned(rows: np.ndarray, y: np.ndarray, groups: np.ndarray | None, splits: list, seed
             ) -> _Plan:
    """The plan of these outer splits, with the inner splits of each training fold."""
    inner = [
        None if len(np.unique(y[train])) < 2
        else _inner_splits(y[train], None if groups is None else groups[train], seed)
        for train, _ in splits
    ]
    return _Plan(rows, y, groups, splits, inner)


def _plan(labels: np.ndarray, groups: np.ndarray | None, *, folds: int, seed, name: str,
          keep: np.ndarray | None = None):
    """Drop classes too small for the folds, then make the outer splits (None if impossible).

    Only the rows in ``keep`` (a mask; default all) are candidates. A class needs ``folds``
    members (distinct groups when grouped) to appear in every test fold. Such classes are
    dropped; if fewer than two classes would be left, the number of folds is reduced
    instead to the smallest class size (at least 2).
    """
    if keep is not None:
        candidates = np.flatnonzero(keep)
        plan = _plan(labels[candidates], None if groups is None else groups[candidates],
                     folds=folds, seed=seed, name=name)
        return None if plan is None else _Plan(candidates[plan.rows], plan.y, plan.groups,
                                               plan.splits, plan.inner)
    classes, codes = np.unique(labels, return_inverse=True)
    if groups is None:
        size = np.bincount(codes, minlength=len(classes))
    else:
        _, group_codes = np.unique(groups, return_inverse=True)
        pairs = np.unique(np.stack([codes, group_codes]), axis=1)
        size = np.bincount(pairs[0], minlength=len(classes))
    unit = "groups" if groups is not None else "members"
    keep = size >= folds
    if keep.sum() < 2:
        keep = size >= 2
        if keep.sum() < 2:
            warnings.warn(
                f"{name}: fewer than two classes with 2+ {unit}; no probe possible",
                UserWarning,
                stacklevel=3,
            )
            return None
        warnings.warn(
            f"{name}: reducing folds from {folds} to {size[keep].min()} (small classes)",
            UserWarning,
            stacklevel=3,
        )
        folds = int(size[keep].min())
    if not keep.all():
        dropped = [str(c) for c in classes[~keep]]
        shown = ", ".join(dropped[:5]) + (", ..." if len(dropped) > 5 else "")
        warnings.warn(
            f"{name}: dropping {len(dropped)} class(es) with fewer than {folds} {unit}: {shown}",
            UserWarning,
            stacklevel=3,
        )
    rows = np.flatnonzero(keep[codes])
    y = codes[rows]
    if groups is None:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        splits = list(splitter.split(rows, y))
        return _planned(rows, y, None, splits, seed)
    kept_groups = groups[rows]
    n_groups = len(np.unique(kept_groups))
    if n_groups < folds:
        if n_groups < 2:
            warnings.warn(f"{name}: fewer than two groups; no probe possible", stacklevel=3)
            return None
        warnings.warn(f"{name}: only {n_groups} groups; using {n_groups} folds", stacklevel=3)
        folds = n_groups
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return _planned(rows, y, kept_groups, list(splitter.split(rows, y, kept_groups)), seed)


def _inner_splits(y: np.ndarray, groups: np.ndarray | None, seed) -> list | None:
    """Inner (C search) splits of an outer training fold, group-disjoint when grouped; None
    when no class has two rows (nothing to validate a C on: scikit-learn's splitters raise)."""
    present = np.unique(y, return_counts=True)[1]
    if present.max() < 2:
        return None
    n_splits = max(2, min(_INNER_FOLDS, present.min()))
    n_groups = 0 if groups is None else len(np.unique(groups))
    if n_groups >= 2:
        splitter = StratifiedGroupKFold(
            n_splits=min(n_splits, n_groups), shuffle=True, random_state=seed
        )
        return list(splitter.split(y, y, groups))
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(splitter.split(y, y))


def _validation_split(y: np.ndarray, groups: np.ndarray | None, seed):
    """(train, validation) rows for the MLP's early stopping, or None (use L-BFGS).

    About 10% of the rows (more with many classes), stratified, group-disjoint when
    grouped; None when that would hold fewer than 100 rows or more than 30%.
    """
    classes, counts = np.unique(y, return_counts=True)
    fraction = max(0.1, (len(classes) + 1) / len(y))
    if fraction > 0.3 or fraction * len(y) < 100 or counts.min() < 2:
        return None
    n_splits = int(round(1.0 / fraction))
    n_groups = 0 if groups is None else len(np.unique(groups))
    if groups is not None:
        if n_groups < n_splits:
            return None
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        train, validation = next(splitter.split(y, y, groups))
    else:
        splitter = StratifiedKFold(n_splits=min(n_splits, counts.min()), shuffle=True,
                                   random_state=seed)
        train, validation = next(splitter.split(y, y))
    if len(validation) < 100 or len(np.unique(y[train])) < 2:
        return None
    return train, validation


def _fold_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float]:
    return (
        accuracy_score(y_true, y_pred),
        f1_score(y_true, y_pred, average="macro", zero_division=0),
    )


def _outer_folds(plan: _Plan, fold_predictions) -> np.ndarray:
    """Scores of shape (2 metrics, 2 [probe, chance], n_folds); NaN for skipped folds.

    ``fold_predictions(f, train, test, y_train, groups)`` fits a probe on the training rows
    of outer fold ``f`` (indices into ``plan.rows``; ``plan.inner[f]``: their inner splits)
    and predicts the classes of its test rows.
    """
    out = np.full((len(_METRICS), 2, len(plan.splits)), np.nan)
    for f, (train, test) in enumerate(plan.splits):
        y_train = plan.y[train]
        present = np.unique(y_train)
        if len(present) < 2 or plan.inner[f] is None:
            reason = "one class" if len(present) < 2 else "no class with two rows"
            warnings.warn(f"an outer training fold holds {reason}; fold skipped", stacklevel=3)
            continue
        groups = None if plan.groups is None else plan.groups[train]
        predicted = fold_predictions(f, train, test, y_train, groups)
        out[:, 0, f] = _fold_metrics(plan.y[test], predicted)
        majority = present[np.argmax(np.bincount(y_train)[present])]
        out[:, 1, f] = _fold_metrics(plan.y[test], np.full(len(test), majority))
    return out


def _evaluate(
    X: np.ndarray, plan: _Plan, *, probe: str, max_dims, preprocess: bool, seed
) -> np.ndarray:
    """:func:`_outer_folds` of a scikit-learn probe (:func:`make_probe`)."""
    X = X[plan.rows]

    def fold_predictions(f, train, test, y_train, groups):
        pipeline = make_probe(probe, n_features=X.shape[1], y_train=y_train, groups=groups,
                              max_dims=max_dims, preprocess=preprocess, seed=seed,
                              cv=plan.inner[f])
        return pipeline.fit(X[train], y_train).predict(X[test])

    return _outer_folds(plan, fold_predictions)


def _evaluate_torch(X: np.ndarray, plan: _Plan, *, max_dims, preprocess: bool, seed
                    ) -> np.ndarray:
    """:func:`_outer_folds` of the ``logreg`` probe by :mod:`~layerwise.analyses.linear_probe`.

    The same outer and inner splits, C grid (ties to the smaller C) and refit on the outer
    training fold as :class:`InnerCVProbe`; each (inner) training fold's scaler and PCA come
    from the moments of all rows minus those of its held-out rows.

    The test folds partition the rows, and the validation folds of the inner splits partition
    an outer training fold: all rows' moments are the sum of the test folds', and the last
    validation fold's are the training fold's minus the others', so a pass over the rows is
    made for the test folds and all validation folds but one.
    """
    Xt = torch.as_tensor(np.asarray(X[plan.rows], dtype=np.float32), device=linear_probe.device())
    Xt -= Xt.mean(0)  # centred once, so that the float32 Gram matrices lose nothing to the mean
    rows, moments = linear_probe.take, linear_probe.Moments.of
    tests = [moments(rows(Xt, test)) for _, test in plan.splits] if preprocess else None
    everything = sum(tests[1:], tests[0]) if preprocess else None
    Cs = sorted(C_GRID)

    def fold_predictions(f, train, test, y_train, groups):
        X_train = rows(Xt, train)
        inner_splits = plan.inner[f]
        fold = held = None
        if preprocess:
            fold = everything - tests[f]
            held = [moments(rows(X_train, validation)) for _, validation in inner_splits[:-1]]
            held.append(fold - sum(held[1:], held[0]))
        scores = np.zeros(len(Cs))
        for i, (inner, validation) in enumerate(inner_splits):
            Z = _projected(X_train, fold - held[i] if preprocess else None, max_dims)
            path = linear_probe.fit_path(rows(Z, inner), y_train[inner], Cs)
            Z_validation = rows(Z, validation)
            scores += [np.mean(linear_probe.predict(Z_validation, *fit) == y_train[validation])
                       for fit in path]
        C = Cs[int(np.argmax(scores))]
        Z = _projected(Xt, fold, max_dims)
        fit = linear_probe.fit_path(rows(Z, train), y_train, [c for c in Cs if c <= C])[-1]
        return linear_probe.predict(rows(Z, test), *fit)

    return _outer_folds(plan, fold_predictions)


def _projected(X: torch.Tensor, moments, max_dims) -> torch.Tensor:
    """``X`` standardised and PCA-projected by the basis of ``moments`` (None: as it is)."""
    if moments is None:
        return X
    return linear_probe.project(X, *linear_probe.standardised_pca(moments, max_dims))


def _evaluate_layer(
    X: np.ndarray, plans: list[_Plan | None], *, probe: str, max_dims, pca_on: str, seed,
    solver: str = "torch",
) -> list[np.ndarray | None]:
    """Scores of every label's plan on one layer (one task of :func:`probe_table`)."""
    threads = torch.get_num_threads()
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        torch.set_num_threads(1)
        try:
            preprocess = pca_on == "train"
            if not preprocess:  # the same scaler + PCA, fitted once on all rows of the layer
                X = Pipeline(_preprocessing(X.shape[1], len(X), max_dims, seed)).fit_transform(X)
            evaluate = _evaluate_torch if probe == "logreg" and solver == "torch" else partial(
                _evaluate, probe=probe)
            return [
                None
                if plan is None
                else evaluate(X, plan, max_dims=max_dims, preprocess=preprocess, seed=seed)
                for plan in plans
            ]
        finally:
            torch.set_num_threads(threads)


def _evaluate_stored(layers: Mapping[str, np.ndarray], layer: str, *,
                     plans: list[_Plan | None], **options) -> list[np.ndarray | None]:
    """:func:`_evaluate_layer` of layer ``layer`` of ``layers``, read and checked here."""
    return _evaluate_layer(check_layer(layers, layer, min_rows=2), plans, **options)


def _evaluate_layers(layers: Mapping[str, np.ndarray], plans: list[_Plan | None], *, n_jobs,
                     progress: bool, pca_on: str, **options) -> list[list[np.ndarray | None]]:
    """Scores of every label's plan on every layer: ``[layer][label]``.

    One task per layer and label (each reads its layer itself, :func:`_evaluate_stored`),
    so that the workers stay busy to the end whatever the number of layers; with
    ``pca_on="all"`` one task per layer, which fits the layer's scaler and PCA once for
    every label.
    """
    batches = [[j] for j, plan in enumerate(plans) if plan is not None] if pca_on == "train" \
        else [list(range(len(plans)))]
    tasks = [(name, {"plans": [plans[j] for j in batch]}) for name in layers for batch in batches]
    done = iter(layer_tasks.map_tasks(partial(_evaluate_stored, pca_on=pca_on, **options), layers,
                                      tasks, n_jobs=n_jobs, progress=progress, desc="probes"))
    by_layer = []
    for _ in layers:
        scores: list[np.ndarray | None] = [None] * len(plans)
        for batch in batches:
            for j, result in zip(batch, next(done), strict=True):
                scores[j] = result
        by_layer.append(scores)
    return by_layer


def _summary(scores: np.ndarray | None) -> list[tuple]:
    """(metric, mean, std, ci_low, ci_high, chance, folds) per metric."""
    if scores is None:
        return [(metric, *[np.nan] * 5, 0) for metric in _METRICS]
    out = []
    for m, metric in enumerate(_METRICS):
        values = scores[m, 0][np.isfinite(scores[m, 0])]
        n = len(values)
        mean = values.mean() if n else np.nan
        std = values.std(ddof=1) if n > 1 else np.nan
        half = stats.t.ppf(0.975, n - 1) * std / np.sqrt(n) if n > 1 else np.nan
        chance = np.nanmean(scores[m, 1]) if n else np.nan
        out.append((metric, mean, std, mean - half, mean + half, chance, n))
    return out


def _check_options(probe, folds, max_dims, pca_on, solver="torch") -> int:
    if probe not in _PROBES:
        raise ValueError(f"probe must be one of {_PROBES}, got {probe!r}")
    if solver not in _SOLVERS:
        raise ValueError(f"solver must be one of {_SOLVERS}, got {solver!r}")
    if pca_on not in ("train", "all"):
        raise ValueError(f"pca_on must be 'train' or 'all', got {pca_on!r}")
    if max_dims is not None:
        check_int(max_dims, "max_dims", low=1)
    return check_int(folds, "folds", low=2)


def probe_splits(labels, *, folds: int = 5, groups=None, seed: int | None = 0) -> list:
    """Outer cross-validation splits used by the probes, in row indices of ``labels``.

    Stratified by label; group-disjoint (``StratifiedGroupKFold``) when ``groups`` is
    given. Classes with fewer than ``folds`` members (distinct groups when grouped) are
    dropped with a warning, and their rows appear in no split; if that would leave fewer
    than two classes, the number of folds is reduced instead.

    Parameters
    ----------
    labels : array-like of shape (n_samples,)
    folds : int, default=5
    groups : array-like of shape (n_samples,) or None, default=None
        E.g. the speaker of each row.
    seed : int or None, default=0
        Shuffling seed of the splitter.

    Returns
    -------
    list of (ndarray, ndarray)
        ``(train_rows, test_rows)`` per fold; empty when no probe is possible.

    Examples
    --------
    >>> import numpy as np
    >>> splits = probe_splits(np.repeat(["a", "b"], 10), folds=5)
    >>> len(splits), [len(test) for _, test in splits]
    (5, [4, 4, 4, 4, 4])
    """
    labels = check_labels(labels, n_rows=len(labels))
    folds = check_int(folds, "folds", low=2)
    if groups is not None:
        groups = check_labels(groups, n_rows=len(labels), name="groups")
    plan = _plan(labels, groups, folds=folds, seed=seed, name="labels")
    if plan is None:
        return []
    return [(plan.rows[train], plan.rows[test]) for train, test in plan.splits]


def probe_scores(
    X,
    labels,
    *,
    probe: str = "logreg",
    folds: int = 5,
    groups=None,
    seed: int | None = 0,
    max_dims: int | None = 256,
    pca_on: str = "train",
    solver: str = "torch",
) -> pd.DataFrame:
    """Cross-validated probe accuracy and macro-F1 for one layer and label.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    labels : array-like of shape (n_samples,)
        Target class of each row (any values; strings are fine).
    probe : {"logreg", "mlp"}, default="logreg"
        See the module docstring.
    folds : int, default=5
        Outer cross-validation folds (see :func:`probe_splits`).
    groups : array-like of shape (n_samples,) or None, default=None
        Group of each row (e.g. speaker); folds are then group-disjoint.
    seed : int or None, default=0
        Seed of the splits, the PCA and the MLP.
    max_dims : int or None, default=256
        PCA bound on the input width; None keeps every dimension.
    pca_on : {"train", "all"}, default="train"
        Fit the scaler and PCA on each outer training fold (no information from the
        test rows), or once on all rows of the layer ("all": label-free but
        transductive; about 40% faster on 768-d layers).
    solver : {"torch", "sklearn"}, default="torch"
        Implementation of the ``logreg`` probe (see the module docstring); the ``mlp``
        probe always uses scikit-learn.

    Returns
    -------
    pandas.DataFrame
        Columns ``metric, value, std, ci_low, ci_high, chance, folds`` with one row for
        ``accuracy`` and one for ``macro_f1``; values in ``[0, 1]`` (NaN when no probe
        is possible).

    References
    ----------
    G. Alain and Y. Bengio, "Understanding intermediate layers using linear classifier
    probes", ICLR workshop 2017.
    A. Pasad, J.-C. Chou and K. Livescu, "Layer-wise analysis of a self-supervised speech
    representation model", ASRU 2021.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(0, 1, (30, 5)), rng.normal(4, 1, (30, 5))])
    >>> result = probe_scores(X, np.repeat(["a", "b"], 30))
    >>> result.set_index("metric").loc["accuracy", "value"]
    np.float64(1.0)
    """
    X = check_matrix(X, min_rows=2)
    labels = check_labels(labels, n_rows=X.shape[0])
    folds = _check_options(probe, folds, max_dims, pca_on, solver)
    if groups is not None:
        groups = check_labels(groups, n_rows=X.shape[0], name="groups")
    plan = _plan(labels, groups, folds=folds, seed=seed, name="labels")
    [scores] = _evaluate_layer(X, [plan], probe=probe, max_dims=max_dims, pca_on=pca_on, seed=seed,
                               solver=solver)
    return pd.DataFrame(
        _summary(scores), columns=["metric", "value", "std", "ci_low", "ci_high", "chance", "folds"]
    )


def probe_table(
    layers: Mapping[str, np.ndarray],
    labels_df: pd.DataFrame,
    *,
    label_columns: Sequence[str] | str,
    model: str,
    span: str,
    pooling: str,
    probe: str,
    folds: int,
    group: str | None,
    fallback_group: str | None,
    seed: int = 0,
    max_dims: int | None = 256,
    pca_on: str = "train",
    solver: str,
    min_count: int,
    max_classes: int,
    limited: Sequence[str] = (),
    n_jobs: int | None = 1,
    progress: bool = True,
) -> pd.DataFrame:
    """Tidy table of probe scores per layer and label.

    Parameters
    ----------
    layers : mapping of str to array-like of shape (n_samples, n_features)
        Layer name -> representations; all layers share the same rows. Read one layer at a
        time, when its probes start: a lazy mapping (:func:`layerwise.analyses.subsample.take`)
        is never copied whole.
    labels_df : pandas.DataFrame of n_samples rows
        One column per label (string values), plus the ``group`` column if used.
    label_columns : sequence of str or str
        Columns of ``labels_df`` to probe for.
    model, span, pooling : str
        Written to the identically named columns.
    probe : {"logreg", "mlp"}, default="logreg"
    folds : int, default=5
        Outer cross-validation folds.
    group : str or None, default=None
        Column of ``labels_df`` (e.g. ``"speaker"``) whose values must not be shared
        between training and test folds; not for the label that is the group itself.
    fallback_group : str or None, default=None
        Column whose values must not be shared between folds where ``group`` cannot be
        used: for the label that is ``group`` itself, and for every label when ``group``
        is None.  E.g. ``"utt_id"``: the words or frames of one utterance stay in one
        fold.  None: those labels get ungrouped stratified folds.
    seed : int, default=0
        Seed of the splits, the PCA and the MLP.
    max_dims : int or None, default=256
        PCA bound on the input width; None keeps every dimension.
    pca_on : {"train", "all"}, default="train"
        Fit the scaler and PCA on each outer training fold (no information from the
        test rows), or once on all rows of the layer ("all": label-free but
        transductive; about 40% faster on 768-d layers).
    solver : {"torch", "sklearn"}, default="torch"
        Implementation of the ``logreg`` probe (see the module docstring).
    min_count : int, default=20
        Classes of a ``limited`` label with fewer rows are left out.
    max_classes : int, default=100
        At most this many classes of a ``limited`` label are kept, the most frequent.
    limited : sequence of str, default=()
        Labels whose classes ``min_count`` and ``max_classes`` limit (the workflow: the
        span's word and phone labels; corpus labels such as the speaker are not limited).
    n_jobs : int or None, default=1
        Worker processes, one task per layer and label (per layer with ``pca_on="all"``;
        joblib semantics, -1 = all cores); 1 when the ``torch`` solver runs on a GPU.
    progress : bool, default=True
        Show a progress bar on stderr.

    Returns
    -------
    pandas.DataFrame
        Columns ``model, layer, span, pooling, label, probe, metric, value, std, ci_low,
        ci_high, chance, folds, n_rows, n_classes, min_count, max_classes`` with ``metric``
        in ``accuracy, macro_f1``; ``n_rows`` and ``n_classes`` are the rows and classes the
        folds hold (after ``min_count``, ``max_classes`` and the classes too small for the
        folds), ``min_count`` and ``max_classes`` the limits applied (NaN for a label not
        limited). Empty when ``label_columns`` is empty.

    References
    ----------
    See :func:`probe_scores`.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> layers = {"layer.0": rng.standard_normal((40, 4))}
    >>> labels_df = pd.DataFrame({"spk": np.repeat(["a", "b"], 20)})
    >>> probe_table(layers, labels_df, label_columns="spk", model="m", span="word",
    ...             pooling="mean", probe="logreg", folds=5, group=None,
    ...             fallback_group=None, solver="torch", min_count=20, max_classes=100,
    ...             progress=False).shape
    (2, 17)
    """
    n_rows = subsample.shared_rows(layers, min_rows=2)  # shapes only: no layer is read yet
    labelings = check_label_frame(labels_df, label_columns=label_columns, n_rows=n_rows)
    folds = _check_options(probe, folds, max_dims, pca_on, solver)
    min_count = check_int(min_count, "min_count", low=1)
    max_classes = check_int(max_classes, "max_classes", low=2)
    limited = {limited} if isinstance(limited, str) else set(limited)
    if not labelings:
        return pd.DataFrame(columns=list(PROBE_COLUMNS))
    groups, fallback = (
        None if column is None
        else check_label_frame(labels_df, label_columns=[column], n_rows=n_rows)[column]
        for column in (group, fallback_group)
    )
    names = list(labelings)
    plans = [
        _plan(labels, fallback if group is None or name == group else groups, folds=folds,
              seed=seed, name=name,
              keep=subsample.kept_classes(labels, min_count=min_count, max_classes=max_classes)
              if name in limited else None)
        for name, labels in labelings.items()
    ]
    used = [(0, 0) if plan is None else (len(plan.rows), len(np.unique(plan.y))) for plan in plans]
    limits = [(min_count, max_classes) if name in limited else (np.nan, np.nan) for name in names]
    if solver == "torch" and probe == "logreg" and linear_probe.device().type == "cuda":
        n_jobs = 1  # the GPU is the parallelism; one process holds it
    by_layer = _evaluate_layers(layers, plans, n_jobs=n_jobs, progress=progress, probe=probe,
                                max_dims=max_dims, pca_on=pca_on, seed=seed, solver=solver)
    rows = [
        (model, str(layer), span, pooling, name, probe, *entry, *counts, *limit)
        for layer, layer_scores in zip(layers, by_layer, strict=True)
        for name, scores, counts, limit in zip(names, layer_scores, used, limits, strict=True)
        for entry in _summary(scores)
    ]
    return pd.DataFrame(rows, columns=list(PROBE_COLUMNS))
