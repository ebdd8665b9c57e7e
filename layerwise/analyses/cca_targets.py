"""CCA of each layer with a known target: word / phone identity, or log-mel features.

The log-mel matrix is made by the pooling stage (:mod:`layerwise.pool.mel`, rule ``pool_mel``);
this module only reads it as a target.

Pasad et al. (2021, "Layer-wise analysis of a self-supervised speech representation model";
2023, "Comparative layer-wise analysis of self-supervised speech models") measure how much of a
layer is linearly related to word identity, phone identity or the log-mel spectrum with
projection-weighted CCA (Morcos et al. 2018) under a held-out protocol:

1. split the rows into train / dev / test (60 / 20 / 20 %, stratified by the label when there
   is one);
2. fit regularised CCA on train for each ε in a grid (ε added to both covariance diagonals,
   relative to their mean variance), keep the ε whose PWCCA is best on dev;
3. report PWCCA of the held-out test rows, projected on the train directions;
4. repeat over ``n_trials`` random splits: the mean, and the smallest and largest trial as a
   range (``trial_min``, ``trial_max``; a spread over splits, not a confidence interval).

The CCA and the PWCCA are those of :mod:`layerwise.analyses.similarity` (:func:`cca_directions`,
:func:`projected_pwcca`): each correlation is weighted by how much of the *layer's* centred
neurons its canonical variate accounts for (``weighted_side="layer"``), as the similarity
table's PWCCA weights by its first layer, so that models of different widths are weighted
alike.  Pasad et al.'s code weights the side with fewer dimensions (``weighted_side="fewer"``),
in practice the target (80 mel bins, or fewer word/phone types than the layer's width).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.model_selection import train_test_split

from layerwise.analyses.similarity import (
    CCADirections,
    HeldOutRows,
    PrincipalBasis,
    UndefinedSimilarityWarning,
    cca_directions_path,
    projected_pwcca,
)
from layerwise.analyses.similarity._parallel import _for_each
from layerwise.analyses.validation import (
    check_int,
    check_layer_shapes,
    check_matrix,
    check_shape,
)
from layerwise.logs import progress_bar

EPSILONS = (1e-4, 1e-3, 1e-2, 1e-1)
#: Which side's neurons weight the correlations, see the module docstring.
WEIGHTED_SIDES = ("layer", "target", "fewer")
#: Columns of :func:`cca_table`.
CCA_COLUMNS = ("model", "layer", "span", "target", "metric", "value", "trial_min", "trial_max",
               "n_trials")


def one_hot(labels: np.ndarray) -> sparse.csr_array:
    """(n, C) indicator matrix of string labels, sparse: dense, the word identities of
    dev-clean (54,000 tokens x 1,119 types) are 480 MB, and a cross-product with them costs
    C times the class sums it is."""
    classes, idx = np.unique(np.asarray(labels).astype(str), return_inverse=True)
    n = len(idx)
    return sparse.csr_array((np.ones(n), idx, np.arange(n + 1)), shape=(n, len(classes)))


def _check_target(target) -> np.ndarray | sparse.csr_array:
    """``target`` as validated float64 rows, a sparse one kept sparse (CSR)."""
    if not sparse.issparse(target):
        return check_matrix(target, "target", min_rows=2)
    target = sparse.csr_array(target, dtype=np.float64)
    check_shape(target.shape, "target", min_rows=2)
    if not np.isfinite(target.data).all():
        raise ValueError("target contains NaN or infinity")
    return target


def _rms(A: np.ndarray | sparse.csr_array) -> float:
    """Root mean variance of the columns (1 for constant input), the scale of ε."""
    n = A.shape[0]
    if n < 2:
        return 1.0
    if sparse.issparse(A):
        mean = np.asarray(A.mean(axis=0)).ravel()
        squares = np.asarray(A.multiply(A).sum(axis=0)).ravel()
        scale = float(np.sqrt(((squares - n * mean**2) / (n - 1)).mean()))
    else:
        scale = float(np.sqrt(A.var(axis=0, ddof=1).mean()))
    return scale if scale > 0.0 else 1.0


def fit_cca(X: np.ndarray, Y: np.ndarray, epsilon: float) -> CCADirections:
    """Canonical directions of (X, Y) with ridge ε relative to each side's mean variance.

    Each side is divided by its root mean variance, so that ε is relative; CCA and
    PWCCA do not depend on that scale.  Project rows with :func:`pwcca_projected`.
    """
    return _fit_path(_Side.of(np.array(X, dtype=np.float64)), _Side.of(_check_target(Y).copy()),
                     [epsilon])[0]


@dataclass(frozen=True)
class _Side:
    """One side's training rows, divided by their root mean variance, as CCA needs them."""

    scale: float
    basis: PrincipalBasis

    @classmethod
    def of(cls, A: np.ndarray) -> _Side:
        """Of float64 rows ``A``, which it overwrites (one copy fewer of n × d)."""
        scale = _rms(A)
        if sparse.issparse(A):
            A.data /= scale
        else:
            A /= scale
        return cls(scale, PrincipalBasis.of(A))


def _fit_path(x: _Side, y: _Side, epsilons) -> list[CCADirections]:
    """:func:`fit_cca` at each ε, on the sides' shared bases (back in the rows' own scale)."""
    sx, sy = x.scale, y.scale
    return [CCADirections(fit.mean_x * sx, fit.mean_y * sy, fit.x / sx, fit.y / sy,
                          fit.correlations)
            for fit in cca_directions_path(x.basis, y.basis, epsilons)]


def _side(weighted_side: str, n_layer: int, n_target: int) -> str:
    if weighted_side not in WEIGHTED_SIDES:
        raise ValueError(f"weighted_side must be one of {WEIGHTED_SIDES}, got {weighted_side!r}")
    if weighted_side == "fewer":  # Pasad et al.: x when it has fewer dimensions, else y
        return "x" if n_layer < n_target else "y"
    return "x" if weighted_side == "layer" else "y"


def pwcca_projected(X: np.ndarray, Y: np.ndarray, fit: CCADirections, *,
                    weighted_side: str = "layer") -> float:
    """Held-out PWCCA of rows (X, Y) on the directions of :func:`fit_cca`."""
    weights = _side(weighted_side, X.shape[1], Y.shape[1])
    return projected_pwcca(fit, X, Y.toarray() if sparse.issparse(Y) else Y, weights=weights)


def heldout_pwcca(X: np.ndarray, Y: np.ndarray, *, strata: np.ndarray | None = None,
                  n_trials: int = 3, seed: int = 0, epsilons=EPSILONS,
                  weighted_side: str = "layer") -> tuple[float, float, float]:
    """Mean held-out PWCCA over trials and its range: ``(mean, trial_min, trial_max)``."""
    scores = _heldout_scores({"X": X}, Y, strata=strata, n_trials=n_trials, seed=seed,
                             epsilons=epsilons, weighted_side=weighted_side)["X"]
    return float(scores.mean()), float(scores.min()), float(scores.max())


def _split(n: int, strata: np.ndarray | None, seed: int):
    """Train, dev and test rows (60 / 20 / 20 %, stratified where every class allows it)."""
    idx = np.arange(n)
    train, rest = train_test_split(idx, test_size=0.4, random_state=seed,
                                   stratify=_safe_strata(strata, idx))
    dev, test = train_test_split(rest, test_size=0.5, random_state=seed,
                                 stratify=_safe_strata(strata, rest))
    return train, dev, test


def _heldout_scores(layers: Mapping[str, np.ndarray], Y: np.ndarray, *, strata, n_trials: int,
                    seed: int, epsilons, weighted_side: str, rows: np.ndarray | None = None,
                    bar=None) -> dict[str, np.ndarray]:
    """Each layer's held-out PWCCA with ``Y`` in each trial, ``{name: (n_trials,)}``.

    A trial's split does not depend on the layer, so the target's training basis is computed
    once per trial and each layer's once per trial, for every ε of the grid; the layers of a
    trial are scored side by side on the job's cores (``similarity._parallel``). ``rows`` selects
    the rows of every layer that ``Y`` describes (read one layer at a time; None: all).
    """
    Y = _check_target(Y)
    names = list(layers)
    scores = {name: np.empty(n_trials) for name in names}

    def score(i: int, t: int, train, dev, test, target: _Side, on_dev_y, on_test_y) -> None:
        name = names[i]
        # as stored (float32), each part in float64 when it is used
        X = check_matrix(layers[name] if rows is None else layers[name][rows],
                         f"layers[{name!r}]", min_rows=2)
        weights = _side(weighted_side, X.shape[1], Y.shape[1])
        on_dev = HeldOutRows.of(X[dev].astype(np.float64), on_dev_y)
        best, best_dev = None, -np.inf
        for fit in _fit_path(_Side.of(X[train].astype(np.float64)), target, epsilons):
            dev_score = on_dev.pwcca(fit, weights)
            if dev_score > best_dev:
                best, best_dev = fit, dev_score
        scores[name][t] = np.nan if best is None else HeldOutRows.of(
            X[test].astype(np.float64), on_test_y).pwcca(best, weights)

    for t in range(n_trials):
        train, dev, test = _split(Y.shape[0], strata, seed + t)
        # the target's training basis and its centred dev and test rows, for every layer
        trial = partial(score, t=t, train=train, dev=dev, test=test, target=_Side.of(Y[train]),
                        on_dev_y=HeldOutRows.target(Y[dev]),
                        on_test_y=HeldOutRows.target(Y[test]))
        # one filter for the threads (warnings' filters are the process'): an undefined dev
        # score (nan) is simply not chosen
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedSimilarityWarning)
            _for_each(trial, len(names), bar)
    return scores


def _safe_strata(strata, idx):
    """Stratify when every class has ≥ 2 rows in this subset; otherwise split at random."""
    if strata is None:
        return None
    sub = np.asarray(strata)[idx]
    _, counts = np.unique(sub, return_counts=True)
    return sub if counts.min() >= 2 else None


def min_count_filter(labels: np.ndarray, min_count: int) -> np.ndarray:
    """Rows whose label occurs at least ``min_count`` times (rare words cannot be held out)."""
    labels = np.asarray(labels).astype(str)
    classes, counts = np.unique(labels, return_counts=True)
    keep = set(classes[counts >= min_count])
    return np.array([lab in keep for lab in labels])


def cca_table(layers: Mapping[str, np.ndarray], target: np.ndarray, *, target_name: str,
              model: str, span: str, strata: np.ndarray | None = None, n_trials: int,
              seed: int = 0, weighted_side: str = "layer", rows: np.ndarray | None = None,
              progress: bool = True) -> pd.DataFrame:
    """Held-out PWCCA of every layer with ``target`` (one-hot labels or mel features).

    ``rows``: the rows of each layer that ``target`` describes (None: all), taken one layer at
    a time. Columns :data:`CCA_COLUMNS`: ``model, layer, span, target, metric, value,
    trial_min, trial_max, n_trials`` (metric ``pwcca``; value the mean over trials).

    Cost, for ``n`` rows, ``L`` layers of width ``d``, a target of ``c`` columns and ``T``
    trials: per trial the target's training cross-product (``n c²``; one-hot: the class
    counts) and its eigenvectors, per (trial, layer) the layer's (``n d²``) and ``XcᵀYc``
    (``n d c``; one-hot, kept sparse: the class sums, ``n d``), per ε one SVD of ``d × c``
    and the dev rows' quadratic forms (``d² c``, no pass over rows); memory: one layer's rows
    per core, the target's centred training, dev and test rows (``n c`` floats; one-hot:
    ``n`` nonzeros).
    """
    n_trials = check_int(n_trials, "n_trials", low=1)
    target = _check_target(target)
    n_rows = check_layer_shapes(layers, min_rows=2)
    if rows is not None:
        n_rows = len(np.arange(n_rows)[rows])  # an index or a mask of the rows
    if n_rows != target.shape[0]:
        raise ValueError(f"target has {target.shape[0]} rows, the layers' selected rows "
                         f"{n_rows}")
    with progress_bar(None, total=n_trials * len(layers), progress=progress,
                      desc=f"cca-{target_name}") as bar:
        scores = _heldout_scores(layers, target, strata=strata, n_trials=n_trials, seed=seed,
                                 epsilons=EPSILONS, weighted_side=weighted_side, rows=rows,
                                 bar=bar)
    return pd.DataFrame([(model, name, span, target_name, "pwcca", s.mean(), s.min(), s.max(),
                          n_trials) for name, s in scores.items()], columns=list(CCA_COLUMNS))
