"""Resampling weights, half-samples and interval formulas shared by the bootstrap and the table."""

from __future__ import annotations

import warnings
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike, NDArray

# --------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------
#
# Why not the percentile bootstrap over rows. (1) Rows are not independent: the words,
# phones and frames of one utterance are resampled together (cluster bootstrap).
# (2) The biased estimators (linear and RBF CKA, SVCCA, PWCCA) are off by O(1/n), and a
# resample is off by about as much again, so percentile intervals sit on the wrong side
# of their own estimate; the basic interval reflects that shift back. For RBF CKA the
# bias is many standard errors at realistic n (0.53 vs 0.36 at n = 100, sd 0.02), too
# much for any correction of the biased estimator, so the CKA intervals come from the
# unbiased HSIC. (3) Copies of a row are not independent samples: a U-statistic on a
# resample must exclude pairs of copies as it excludes the diagonal. (4) Mutual k-NN
# depends on n and its per-row overlaps are dependent: it is half-sampled instead.

_BOUNDS = {
    "cka_linear": (0.0, 1.0),
    "cka_rbf": (0.0, 1.0),
    "cka_debiased": (-1.0, 1.0),  # its estimate may be < 0; keep it inside its interval
    "cosine": (-1.0, 1.0),
    "mutual_knn": (0.0, 1.0),
    "svcca": (0.0, 1.0),
    "pwcca": (0.0, 1.0),
}
"""Range of each metric's population value; intervals are clipped to it."""

_UNBIASED_REPLICATES = frozenset({"cka_linear", "cka_rbf", "cka_debiased"})
"""Metrics whose replicates are U-statistics (percentile interval, no bias correction)."""

_HALF_SAMPLED = frozenset({"svcca", "pwcca", "mutual_knn"})
"""Metrics whose intervals come from half-samples without replacement, not the bootstrap."""


def _group_codes(groups: ArrayLike | None, n: int) -> NDArray[np.intp] | None:
    """Cluster number ``0..G-1`` of each row; None when every row is its own cluster."""
    if groups is None:
        return None
    labels = np.asarray(groups)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"groups must hold one label per row ({n}), got shape {labels.shape}")
    try:
        _, codes = np.unique(labels, return_inverse=True)
    except TypeError as error:  # e.g. a mix of str and float
        raise ValueError(f"groups must be labels of one comparable type: {error}") from None
    if codes.max(initial=0) < 1:
        raise ValueError("groups must hold at least 2 distinct values, else nothing is resampled")
    return codes.astype(np.intp)


MAX_UNITS = 64
"""Most resampling units of a bootstrap or half-sample: beyond it, blocks of clusters."""


def _resampling_units(codes, n: int) -> NDArray[np.intp]:
    """Unit of each row, ``0..K-1``: what a replicate draws whole.

    The units are the clusters (``codes``; without them, the rows), or, when there are more
    than :data:`MAX_UNITS`, blocks of consecutive clusters (in the order of their first
    rows) holding about ``n / MAX_UNITS`` rows each.  Independent clusters make
    independent blocks, so the cluster bootstrap stays valid with ``K`` units; the
    cross-product engine then forms every replicate from one product per block
    (:mod:`~.gram`), instead of one pass over the rows per replicate.  Consecutive
    utterances are often one speaker's, so a block also keeps a speaker's rows together.
    """
    clusters = np.arange(n, dtype=np.intp) if codes is None else np.asarray(codes, np.intp)
    n_clusters = int(clusters.max(initial=0)) + 1
    if n_clusters <= MAX_UNITS:
        return clusters
    first = np.full(n_clusters, n, dtype=np.intp)
    np.minimum.at(first, clusters, np.arange(n, dtype=np.intp))
    order = np.argsort(first, kind="stable")
    sizes = np.bincount(clusters, minlength=n_clusters)[order]
    block = np.empty(n_clusters, dtype=np.intp)
    block[order] = (np.cumsum(sizes) - sizes) * MAX_UNITS // n
    return np.unique(block, return_inverse=True)[1].astype(np.intp)[clusters]


def _bootstrap_counts(units: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """How often each unit was drawn, per replicate: (n_boot, K) float64."""
    rng = np.random.default_rng(seed)
    n_units = int(units.max(initial=0)) + 1
    counts = np.zeros((n_boot, n_units))
    for r in range(n_boot):
        counts[r] = np.bincount(rng.integers(0, n_units, size=n_units), minlength=n_units)
    return counts


def _bootstrap_weights(n: int, codes, n_boot: int, seed: int) -> list[np.ndarray]:
    """Row weights of each replicate: how often the row's unit (:func:`_resampling_units`)
    was drawn.

    A replicate is never materialised: every metric is evaluated on the original rows
    with these weights, which is what a later streaming pass can accumulate per chunk.
    """
    units = _resampling_units(codes, n)
    return list(_bootstrap_counts(units, n_boot, seed)[:, units])


class _HalfSamples:
    """Half-samples drawn without replacement: half of the units (clusters, rows, or
    blocks of them: :func:`_resampling_units`), whole.

    ``rows[h]`` are the rows of half-sample ``h``, ``chosen[h]`` a mask of its units.
    ``variance_factor = k / (G - k)`` scales the spread of half-sample values to the
    variance of the full-sample value (delete-d jackknife with ``k = G // 2`` of ``G`` clusters kept; Shao and Wu, 1989).
    A half-sample of ``m`` rows is an iid sample of size ``m`` (unconditionally), so an
    O(1/n) bias ``c/n`` appears in the half-sample mean as ``c mean(1/m)``: the full
    sample's bias is ``(mean_h θ_h - θ̂) · bias_scale`` with
    ``bias_scale = (1/n) / (mean(1/m) - 1/n)``, 1 when ``m = n/2`` (Richardson
    extrapolation, as in the half-sample jackknife).
    """

    def __init__(self, n: int, codes, n_half: int, seed: int) -> None:
        rng = np.random.default_rng([seed, 1])  # a stream of its own, apart from the bootstrap
        units = _resampling_units(codes, n)
        n_groups = int(units.max(initial=0)) + 1
        kept = n_groups // 2
        self.rows, self.chosen = [], []
        for _ in range(n_half):
            chosen = np.zeros(n_groups, dtype=bool)
            chosen[rng.choice(n_groups, size=kept, replace=False)] = True
            self.rows.append(np.flatnonzero(chosen[units]))
            self.chosen.append(chosen)
        self.variance_factor = kept / (n_groups - kept)
        inverse = np.mean([1.0 / rows.size for rows in self.rows]) if self.rows else 2.0 / n
        self.bias_scale = (1.0 / n) / (inverse - 1.0 / n)

    def interval(self, value, halves, level: float, *, bias: bool, bounds=None):
        """Normal interval ``θ̃ ± z sqrt(v)`` over axis 0 of the half-sample values, with
        ``θ̃`` the value, less its estimated bias when ``bias``; nan halves are ignored."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-nan slices
            mean = np.nanmean(halves, axis=0)
            spread = np.nanmean((halves - mean) ** 2, axis=0)
        centre = value - (mean - value) * self.bias_scale if bias else value
        half_width = (NormalDist().inv_cdf((1.0 + level) / 2.0)
                      * np.sqrt(self.variance_factor * spread))
        low, high = centre - half_width, centre + half_width
        if bounds is not None:
            low, high = np.clip(low, *bounds), np.clip(high, *bounds)
        return low, high


def _quantiles(replicates, level: float):
    """The ``(1 -+ level)/2`` quantiles over axis 0, ignoring nan (all nan -> nan)."""
    alpha = (1.0 - level) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan slices
        return np.nanquantile(replicates, [alpha, 1.0 - alpha], axis=0)


def _basic_interval(centre, replicates, level: float, bounds=None):
    """Basic bootstrap interval ``(2θ̂ - q_hi, 2θ̂ - q_lo)`` over axis 0 of ``replicates``.

    Where the replicates sit above ``θ̂`` by a bias, the interval sits below it by as
    much, which is what corrects the bias (Davison and Hinkley, 1997, eq. 5.6).
    """
    q_low, q_high = _quantiles(replicates, level)
    low, high = 2.0 * centre - q_high, 2.0 * centre - q_low
    if bounds is not None:
        low, high = np.clip(low, *bounds), np.clip(high, *bounds)
    return low, high


def _percentile_interval(replicates, level: float, bounds=None):
    """Percentile interval ``(q_lo, q_hi)``: for statistics without bias (the U-statistic
    CKA), it keeps the skew of a bounded statistic the right way round."""
    low, high = _quantiles(replicates, level)
    if bounds is not None:
        low, high = np.clip(low, *bounds), np.clip(high, *bounds)
    return low, high


