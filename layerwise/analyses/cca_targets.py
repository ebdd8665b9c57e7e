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

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from layerwise.analyses.similarity import (
    CCADirections,
    UndefinedSimilarityWarning,
    cca_directions,
    projected_pwcca,
)
from layerwise.analyses.validation import check_int, check_layers, check_matrix
from layerwise.logs import progress_bar

EPSILONS = (1e-4, 1e-3, 1e-2, 1e-1)
#: Which side's neurons weight the correlations, see the module docstring.
WEIGHTED_SIDES = ("layer", "target", "fewer")
#: Columns of :func:`cca_table`.
CCA_COLUMNS = ("model", "layer", "span", "target", "metric", "value", "trial_min", "trial_max",
               "n_trials")


def one_hot(labels: np.ndarray) -> np.ndarray:
    """(n, C) indicator matrix of string labels."""
    classes, idx = np.unique(np.asarray(labels).astype(str), return_inverse=True)
    out = np.zeros((len(idx), len(classes)))
    out[np.arange(len(idx)), idx] = 1.0
    return out


def _rms(A: np.ndarray) -> float:
    """Root mean variance of the columns (1 for constant input), the scale of ε."""
    scale = float(np.sqrt(A.var(axis=0, ddof=1).mean())) if len(A) > 1 else 0.0
    return scale if scale > 0.0 else 1.0


def fit_cca(X: np.ndarray, Y: np.ndarray, epsilon: float) -> CCADirections:
    """Canonical directions of (X, Y) with ridge ε relative to each side's mean variance.

    Each side is divided by its root mean variance, so that ε is relative; CCA and
    PWCCA do not depend on that scale.  Project rows with :func:`pwcca_projected`.
    """
    sx, sy = _rms(X), _rms(Y)
    fit = cca_directions(X / sx, Y / sy, epsilon=epsilon)
    return CCADirections(fit.mean_x * sx, fit.mean_y * sy, fit.x / sx, fit.y / sy,
                         fit.correlations)


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
    return projected_pwcca(fit, X, Y, weights=weights)


def heldout_pwcca(X: np.ndarray, Y: np.ndarray, *, strata: np.ndarray | None = None,
                  n_trials: int = 3, seed: int = 0, epsilons=EPSILONS,
                  weighted_side: str = "layer") -> tuple[float, float, float]:
    """Mean held-out PWCCA over trials and its range: ``(mean, trial_min, trial_max)``."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    _side(weighted_side, X.shape[1], Y.shape[1])
    scores = []
    for t in range(n_trials):
        rs = seed + t
        idx = np.arange(len(X))
        train, rest = train_test_split(idx, test_size=0.4, random_state=rs,
                                       stratify=_safe_strata(strata, idx))
        dev, test = train_test_split(rest, test_size=0.5, random_state=rs,
                                     stratify=_safe_strata(strata, rest))
        best, best_dev = None, -np.inf
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedSimilarityWarning)  # nan: not chosen
            for eps in epsilons:
                fit = fit_cca(X[train], Y[train], eps)
                score = pwcca_projected(X[dev], Y[dev], fit, weighted_side=weighted_side)
                if score > best_dev:
                    best, best_dev = fit, score
            scores.append(np.nan if best is None else
                          pwcca_projected(X[test], Y[test], best, weighted_side=weighted_side))
    s = np.array(scores)
    return float(s.mean()), float(s.min()), float(s.max())


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


def cca_table(layers: dict[str, np.ndarray], target: np.ndarray, *, target_name: str, model: str,
              span: str, strata: np.ndarray | None = None, n_trials: int, seed: int = 0,
              weighted_side: str = "layer", progress: bool = True) -> pd.DataFrame:
    """Held-out PWCCA of every layer with ``target`` (one-hot labels or mel features).

    Columns :data:`CCA_COLUMNS`: ``model, layer, span, target, metric, value, trial_min,
    trial_max, n_trials`` (metric ``pwcca``; value the mean over trials).
    """
    layers = check_layers(layers, min_rows=2)
    target = check_matrix(target, "target", min_rows=2)
    n_trials = check_int(n_trials, "n_trials", low=1)
    rows = []
    for name, X in progress_bar(layers.items(), progress=progress, desc=f"cca-{target_name}"):
        mean, low, high = heldout_pwcca(X, target, strata=strata, n_trials=n_trials, seed=seed,
                                        weighted_side=weighted_side)
        rows.append((model, name, span, target_name, "pwcca", mean, low, high, n_trials))
    return pd.DataFrame(rows, columns=list(CCA_COLUMNS))
