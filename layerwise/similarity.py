"""Similarity between two layer representations with matched rows.

Every metric compares ``X`` of shape ``(n_samples, n_features_x)`` with ``Y`` of
shape ``(n_samples, n_features_y)`` where row ``i`` of both matrices describes the
same frame or utterance, and returns a plain ``float``.  Inputs are validated once,
at the public boundary (2-D, same number of rows, finite values, else ``ValueError``
naming the argument), converted to float64, and never modified.  When a value is
undefined for the given input (e.g. a layer with no variance) the metric returns
``nan`` and emits an :class:`UndefinedSimilarityWarning` that says why; it never
raises for that.

Contents
--------
CKA family
    :func:`cka_linear`, :func:`cka_rbf`, :func:`cka_debiased`
Row-wise and neighbourhood
    :func:`cosine_matched`, :func:`mutual_knn`
CCA family
    :func:`cca_correlations`, :func:`mean_squared_cca`, :func:`svcca`, :func:`pwcca`,
    :func:`cca_directions` and :func:`projected_pwcca` (held-out PWCCA)
Streaming (frame-level data that does not fit in memory)
    :class:`StreamingGram`, :class:`LinearCKAAccumulator`
Uncertainty and tables
    :func:`bootstrap_ci`, :data:`METRICS`, :func:`similarity_table`
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import linalg
from scipy.linalg import blas
from threadpoolctl import ThreadpoolController
from tqdm import tqdm

__all__ = [
    "METRICS",
    "SYMMETRIC_METRICS",
    "TABLE_COLUMNS",
    "CCADirections",
    "LinearCKAAccumulator",
    "StreamingGram",
    "UndefinedSimilarityWarning",
    "bootstrap_ci",
    "cca_correlations",
    "cca_directions",
    "cka_debiased",
    "cka_linear",
    "cka_rbf",
    "cosine_matched",
    "mean_squared_cca",
    "mutual_knn",
    "projected_pwcca",
    "pwcca",
    "similarity_table",
    "svcca",
]

FloatMatrix = NDArray[np.float64]

# Row blocks of n x n similarity matrices are sized to hold about this many float64
# values (64 MiB), so that memory stays O(n * block) however large n is.  Up to
# n = 2,896 the whole matrix is one block, and numpy computes Z Zᵀ as a symmetric
# rank-k update (syrk), at half the cost of two blocks.
_BLOCK_ELEMENTS = 1 << 23


class UndefinedSimilarityWarning(UserWarning):
    """A similarity is undefined for the given input; ``nan`` was returned instead."""


# --------------------------------------------------------------------------------------
# Validation (done once, at the public boundary)
# --------------------------------------------------------------------------------------


def _check_matrix(A: ArrayLike, name: str, *, as_float64: bool = True) -> np.ndarray:
    """Return ``A`` as a finite 2-D float64 array, or raise ValueError naming ``name``.

    ``as_float64=False`` keeps a float dtype (e.g. float32) as it is, to save a copy.
    """
    A = np.asarray(A)
    if A.dtype.kind not in "biuf":
        raise ValueError(f"{name} must contain real numbers, got an array of dtype {A.dtype}")
    if A.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_samples, n_features), got shape {A.shape}"
        )
    if A.shape[1] == 0:
        raise ValueError(f"{name} must have at least one feature column, got shape {A.shape}")
    if as_float64 or A.dtype.kind != "f":
        A = A.astype(np.float64, copy=False)
    if not np.isfinite(A).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return A


def _check_pair(X: ArrayLike, Y: ArrayLike, *, min_samples: int = 2) -> tuple[FloatMatrix, ...]:
    X = _check_matrix(X, "X")
    Y = _check_matrix(Y, "Y")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(
            "X and Y must have the same number of rows (one per matched sample), "
            f"got {X.shape[0]} and {Y.shape[0]}"
        )
    if X.shape[0] < min_samples:
        raise ValueError(f"X and Y need at least {min_samples} rows, got {X.shape[0]}")
    return X, Y


def _check_int(value: object, name: str, *, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        upper = "inf" if high is None else str(high)
        raise ValueError(f"{name} must be in [{low}, {upper}], got {value}")
    return int(value)


def _check_real(
    value: object,
    name: str,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if math.isnan(value) or too_low or too_high:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return value


def _undefined(message: str) -> float:
    """Warn that a value is undefined and return nan (called directly by public metrics)."""
    warnings.warn(message, UndefinedSimilarityWarning, stacklevel=3)
    return math.nan


# --------------------------------------------------------------------------------------
# Shared numerical building blocks
# --------------------------------------------------------------------------------------


def _column_means(X: np.ndarray) -> np.ndarray:
    """Column means in float64; a constant column's mean is exactly its value."""
    means = X.mean(axis=0, dtype=np.float64)
    # Edge case: the computed mean of a constant column can round (0.1 + 0.1 + 0.1 !=
    # 0.3), which would leave ~1e-17 noise where there is no variance at all; with the
    # exact value, centring gives exact zeros and "no variance" is detected exactly.
    constant = (X == X[0]).all(axis=0)
    means[constant] = X[0, constant]
    return means


def _centre(X: FloatMatrix) -> FloatMatrix:
    """Subtract column means; constant columns become exact zeros."""
    return X - _column_means(X)


def _sq_norm(A: np.ndarray) -> float:
    """Squared Frobenius norm."""
    return float(np.vdot(A, A))


def _row_sq_norms(A: FloatMatrix) -> np.ndarray:
    return np.einsum("ij,ij->i", A, A)


def _gram_to_sq_distances(G: FloatMatrix) -> FloatMatrix:
    """Turn a Gram matrix ``G = Z Zᵀ`` into squared Euclidean distances, in place."""
    sq = np.diag(G).copy()
    G *= -2.0
    G += sq[:, None]
    G += sq[None, :]
    # Edge cases: a row's distance to itself is exactly 0, and rounding may push the
    # distance between (near-)identical rows slightly below 0.
    np.fill_diagonal(G, 0.0)
    np.maximum(G, 0.0, out=G)
    return G


def _double_centre(K: FloatMatrix) -> FloatMatrix:
    """``H K H`` with ``H = I - 11ᵀ/n`` for a symmetric ``K``, in place."""
    means = K.mean(axis=0)
    K -= means[:, None]
    K -= means[None, :]
    K += means.mean()
    return K


def _unit_rows(X: FloatMatrix) -> FloatMatrix:
    norms = np.linalg.norm(X, axis=1)
    # Edge case: an all-zero row has no direction. It stays zero, so its cosine with any
    # row is 0 (the convention of sklearn.metrics.pairwise.cosine_similarity).
    norms[norms == 0.0] = 1.0
    return X / norms[:, None]


def _matched_cosines(X: FloatMatrix, Y: FloatMatrix, x_norms, y_norms) -> np.ndarray:
    """``cos(x_i, y_i)`` for every row, given the row norms; 0 where a row is zero."""
    dots = np.einsum("ij,ij->i", X, Y)
    norms = x_norms * y_norms
    # Edge case: as in _unit_rows, a zero row's cosine is 0 rather than 0/0.
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0.0)


# --------------------------------------------------------------------------------------
# CKA family
# --------------------------------------------------------------------------------------


def _linear_hsic_terms(Xc: FloatMatrix, Yc: FloatMatrix) -> tuple[float, float, float]:
    """``(<K, L>, <K, K>, <L, L>)`` for linear Gram matrices ``K = Xc Xcᵀ``, ``L = Yc Ycᵀ``.

    ``<XXᵀ, YYᵀ> = ||YᵀX||²_F``: the feature route costs ``n(p² + pq + q²)``
    multiply-adds and the n x n route ``n²(p + q)``; the cheaper one is used.
    """
    n, p = Xc.shape
    q = Yc.shape[1]
    if n * (p + q) < p * p + p * q + q * q:
        K = Xc @ Xc.T
        L = Yc @ Yc.T
        return float(np.vdot(K, L)), _sq_norm(K), _sq_norm(L)
    return _sq_norm(Xc.T @ Yc), _sq_norm(Xc.T @ Xc), _sq_norm(Yc.T @ Yc)


def _unbiased_hsic(dot_kl, diag_dot, trace_k, trace_l, n: int):
    """Unbiased HSIC estimator times ``n(n - 3)``, from centred linear-kernel terms.

    ``dot_kl = <K, L>``, ``diag_dot = Σ_i K_ii L_ii``, ``trace_k = tr K``, with ``K``
    and ``L`` the Gram matrices of the *centred* features.  This is Song et al.
    (2012, Eq. 5) rearranged as in ``_debiased_dot_product_similarity_helper`` of
    Kornblith et al.'s notebook; it equals the U-statistic computed on Gram matrices
    with zeroed diagonal.  Works elementwise on arrays (used by the table).
    """
    return dot_kl - n / (n - 2.0) * diag_dot + trace_k * trace_l / ((n - 1.0) * (n - 2.0))


def _unbiased_hsic_floor(biased, diag_dot, trace_k, trace_l, n: int):
    """Rounding floor of :func:`_unbiased_hsic`: values at or below it count as <= 0.

    The unbiased self-HSIC of a linear kernel is a squared norm of U-centred Gram
    matrices (Székely and Rizzo, 2014), so it is never negative; it is exactly 0 for
    degenerate inputs such as mutually orthogonal rows, where cancellation leaves
    +-1e-15 noise of the size of its terms, which would otherwise give a finite CKA.
    """
    terms = abs(biased) + n / (n - 2.0) * abs(diag_dot)
    return 1e-10 * (terms + abs(trace_k * trace_l) / ((n - 1.0) * (n - 2.0)))


def _which_constant(X: FloatMatrix, Y: FloatMatrix) -> str:
    return "X" if (X == X[0]).all() else "Y"


def cka_linear(X: ArrayLike, Y: ArrayLike) -> float:
    """Linear centered kernel alignment (CKA).

    ``CKA(X, Y) = ||YᵀX||²_F / (||XᵀX||_F ||YᵀY||_F)`` after centring the columns of
    both matrices; equal to the kernel form ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``
    with ``K = XXᵀ``, ``L = YYᵀ``.  Invariant to orthogonal transformations and
    isotropic scaling of either input, not to arbitrary invertible linear maps.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
        Rows of ``X`` and ``Y`` are matched samples.

    Returns
    -------
    float
        In ``[0, 1]``; 1 when ``Y`` is an orthogonal transform of ``X`` up to scale.
        ``nan`` (with :class:`UndefinedSimilarityWarning`) when all rows of ``X`` or
        of ``Y`` are identical.

    References
    ----------
    Kornblith, S., Norouzi, M., Lee, H. and Hinton, G. (2019). Similarity of Neural
    Network Representations Revisited. ICML. arXiv:1905.00414.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((100, 8))
    >>> Q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    >>> round(cka_linear(X, 3.0 * X @ Q), 6)
    1.0
    """
    X, Y = _check_pair(X, Y)
    xy, xx, yy = _linear_hsic_terms(_centre(X), _centre(Y))
    # Edge case: identical rows give a zero centred Gram matrix and CKA = 0/0.
    if xx == 0.0 or yy == 0.0:
        which = _which_constant(X, Y)
        return _undefined(f"cka_linear is undefined: all rows of {which} are identical")
    return float(xy / (math.sqrt(xx) * math.sqrt(yy)))


def _rbf_kernel(X: FloatMatrix, threshold: float) -> FloatMatrix | None:
    """RBF Gram matrix with the median heuristic of Kornblith et al., or None if undefined.

    ``K_ij = exp(-d²_ij / (2 t² median(d²)))`` where the median runs over the whole
    n x n squared-distance matrix, zero diagonal included (as the reference notebook
    does).
    """
    Xc = _centre(X)
    D2 = _gram_to_sq_distances(Xc @ Xc.T)
    median = float(np.median(D2))
    # Edge case: when at least half of all row pairs coincide, median(d²) = 0 and the
    # bandwidth heuristic gives sigma = 0; the kernel is undefined.
    if median <= 0.0:
        return None
    D2 *= -1.0 / (2.0 * threshold**2 * median)
    return np.exp(D2, out=D2)


def cka_rbf(X: ArrayLike, Y: ArrayLike, *, threshold: float = 0.5) -> float:
    """CKA with Gaussian (RBF) kernels and the median-distance bandwidth.

    ``K_ij = exp(-||x_i - x_j||² / (2 t² m))`` with ``t = threshold`` and ``m`` the
    median of the n x n squared-distance matrix (zero diagonal included), likewise
    ``L`` for ``Y``; then ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with
    ``HSIC(K, L) = tr(K H L H)`` and ``H = I - 11ᵀ/n``.  Costs O(n²) memory.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    threshold : float, default=0.5
        Bandwidth as a fraction of the median distance (``sigma = t * sqrt(m)``).

    Returns
    -------
    float
        In ``[0, 1]``.  ``nan`` (with :class:`UndefinedSimilarityWarning`) when at
        least half of the row pairs of ``X`` or ``Y`` coincide (median distance 0).

    References
    ----------
    Kornblith, S., Norouzi, M., Lee, H. and Hinton, G. (2019). Similarity of Neural
    Network Representations Revisited. ICML. arXiv:1905.00414.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((50, 4))
    >>> round(cka_rbf(X, X), 6)
    1.0
    """
    X, Y = _check_pair(X, Y)
    threshold = _check_real(threshold, "threshold", low=0.0, low_open=True)
    K = _rbf_kernel(X, threshold)
    L = _rbf_kernel(Y, threshold)
    if K is None or L is None:
        which = "X" if K is None else "Y"
        return _undefined(
            f"cka_rbf is undefined: the median squared distance between rows of {which} is 0 "
            "(at least half of the row pairs coincide), so the RBF bandwidth is 0"
        )
    Kc = _double_centre(K)
    Lc = _double_centre(L)
    return float(np.vdot(Kc, Lc) / (math.sqrt(_sq_norm(Kc)) * math.sqrt(_sq_norm(Lc))))


def cka_debiased(X: ArrayLike, Y: ArrayLike) -> float:
    """Linear CKA from the unbiased HSIC estimator ("debiased CKA").

    Replaces each biased HSIC in linear CKA by the U-statistic of Song et al. (2012),
    computed from feature-space terms as in Kornblith et al.'s reference notebook
    (equivalent to U-centring the Gram matrices with zeroed diagonal).  The
    estimator of CKA is still biased, much less so for small ``n`` or wide layers;
    it is close to 0 for independent inputs and may be negative.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
        ``n_samples >= 4``.

    Returns
    -------
    float
        Usually in ``[-1, 1]``, 1 for ``X`` vs an orthogonal transform of ``X``.
        ``nan`` (with :class:`UndefinedSimilarityWarning`) when the unbiased
        self-HSIC of ``X`` or ``Y`` is ``<= 0`` up to rounding (its square root is
        the denominator); for linear kernels it is never negative, but it is 0 for
        degenerate inputs such as mutually orthogonal rows or identical rows.

    References
    ----------
    Song, L., Smola, A., Gretton, A., Bedo, J. and Borgwardt, K. (2012). Feature
    Selection via Dependence Maximization. JMLR 13, 1393-1434.

    Nguyen, T., Raghu, M. and Kornblith, S. (2021). Do Wide and Deep Networks Learn
    the Same Things? ICLR. arXiv:2010.15327.

    Székely, G. J. and Rizzo, M. L. (2014). Partial Distance Correlation with Methods
    for Dissimilarities. Annals of Statistics 42(6), 2382-2412.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X, Y = rng.standard_normal((500, 10)), rng.standard_normal((500, 10))
    >>> abs(cka_debiased(X, Y)) < 0.05
    True
    """
    X, Y = _check_pair(X, Y, min_samples=4)
    Xc, Yc = _centre(X), _centre(Y)
    n = X.shape[0]
    xy, xx, yy = _linear_hsic_terms(Xc, Yc)
    dx, dy = _row_sq_norms(Xc), _row_sq_norms(Yc)
    hsic_xy = _unbiased_hsic(xy, dx @ dy, dx.sum(), dy.sum(), n)
    self_terms = {"X": (xx, dx @ dx, dx.sum()), "Y": (yy, dy @ dy, dy.sum())}
    hsic_self = {}
    for which, (biased, diag_dot, trace) in self_terms.items():
        hsic_self[which] = _unbiased_hsic(biased, diag_dot, trace, trace, n)
        # Edge case: the unbiased self-HSIC is 0 (up to rounding) for degenerate
        # input, e.g. rows that are mutually orthogonal after centring or all
        # identical; CKA's denominator sqrt(HSIC_xx HSIC_yy) is then 0.
        if hsic_self[which] <= _unbiased_hsic_floor(biased, diag_dot, trace, trace, n):
            return _undefined(
                f"cka_debiased is undefined: the unbiased self-HSIC of {which} is <= 0 "
                f"(up to rounding; n_samples={n}), so CKA's denominator is 0"
            )
    return float(hsic_xy / (math.sqrt(hsic_self["X"]) * math.sqrt(hsic_self["Y"])))


# --------------------------------------------------------------------------------------
# Row-wise cosine and mutual nearest neighbours
# --------------------------------------------------------------------------------------


def cosine_matched(X: ArrayLike, Y: ArrayLike) -> float:
    """Mean cosine similarity of matched rows, ``mean_i cos(x_i, y_i)``.

    Only meaningful when both representations live in the same coordinates (same
    width, e.g. the residual stream of one model); the rows are not centred.  Two
    different models have unrelated coordinates even at equal widths, so
    :func:`similarity_table` gives ``nan`` between them.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    Y : array-like of shape (n_samples, n_features)

    Returns
    -------
    float
        In ``[-1, 1]``.  ``nan`` (with :class:`UndefinedSimilarityWarning`) when the
        widths differ.  An all-zero row counts as cosine 0.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[1.0, 0.0], [0.0, 2.0]])
    >>> cosine_matched(X, np.array([[2.0, 0.0], [1.0, 0.0]]))
    0.5
    """
    X, Y = _check_pair(X, Y, min_samples=1)
    # Edge case: vectors of different dimension have no angle between them.
    if X.shape[1] != Y.shape[1]:
        return _undefined(
            f"cosine is undefined: X and Y have different numbers of features "
            f"({X.shape[1]} vs {Y.shape[1]}), so matched rows cannot be compared"
        )
    norms = np.linalg.norm(X, axis=1), np.linalg.norm(Y, axis=1)
    return float(_matched_cosines(X, Y, *norms).mean())


def _clamped_unit_rows(X: FloatMatrix, clamp_quantile: float) -> FloatMatrix | None:
    """Clip ``X`` to ``[-q, q]`` (q = quantile of |X|), then L2-normalise rows."""
    q = float(np.quantile(np.abs(X), clamp_quantile))
    # Edge case: if that quantile of |X| is 0 the clamp zeroes the whole matrix and
    # there are no neighbourhoods left to compare.
    if q == 0.0:
        return None
    return _unit_rows(np.clip(X, -q, q))


def _knn_indices(Z: FloatMatrix, k: int) -> NDArray[np.intp]:
    """Indices of each row's ``k`` largest inner products with other rows (unordered).

    Similarities are built in row blocks of about ``_BLOCK_ELEMENTS`` values, so
    memory is O(n * block), never O(n²).  Ties at the k-th place are broken
    arbitrarily.
    """
    n = Z.shape[0]
    block = max(1, min(n, _BLOCK_ELEMENTS // n))
    out = np.empty((n, k), dtype=np.intp)
    for start in range(0, n, block):
        stop = min(n, start + block)
        S = Z[start:stop] @ Z.T
        local = np.arange(stop - start)
        S[local, start + local] = -np.inf  # a row is not its own neighbour
        out[start:stop] = np.argpartition(S, n - k, axis=1)[:, n - k :]
    return out


def _knn_overlap(A: NDArray[np.intp], B: NDArray[np.intp]) -> np.ndarray:
    """``|A_i ∩ B_i|`` for each row of two (n, k) neighbour-index arrays."""
    n, k = A.shape
    out = np.empty(n)
    block = max(1, _BLOCK_ELEMENTS // (k * k))
    for start in range(0, n, block):
        a, b = A[start : start + block], B[start : start + block]
        out[start : start + block] = (a[:, :, None] == b[:, None, :]).sum(axis=(1, 2))
    return out


def mutual_knn(
    X: ArrayLike, Y: ArrayLike, *, k: int = 10, clamp_quantile: float = 0.95
) -> float:
    """Mutual k-nearest-neighbour alignment of Huh et al. (2024).

    Each matrix is clamped elementwise to ``[-q, q]`` with ``q`` the
    ``clamp_quantile`` quantile of its absolute values, rows are L2-normalised, and
    each row's ``k`` nearest neighbours by inner product (itself excluded) are found
    in ``X`` and in ``Y``.  The score is ``mean_i |N_X(i) ∩ N_Y(i)| / k``.
    Neighbours are computed in row blocks, so memory stays O(n * block).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    k : int, default=10
        Neighbourhood size, ``1 <= k <= n_samples - 1``.
    clamp_quantile : float, default=0.95
        Quantile of ``|X|`` (and of ``|Y|``) at which values are clipped, in ``(0, 1]``;
        1 disables clamping.

    Returns
    -------
    float
        In ``[0, 1]``; 1 when both neighbourhood graphs coincide.  ``nan`` (with
        :class:`UndefinedSimilarityWarning`) when clamping zeroes a whole matrix.

    Notes
    -----
    The reference code (``platonic-rep``) computes the clamp quantile over all layers
    of a model at once; here it is per matrix, so each layer is treated alike.

    References
    ----------
    Huh, M., Cheung, B., Wang, T. and Isola, P. (2024). The Platonic Representation
    Hypothesis. ICML. arXiv:2405.07987.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).standard_normal((60, 5))
    >>> mutual_knn(X, 2.0 * X, k=5)
    1.0
    """
    X, Y = _check_pair(X, Y)
    k = _check_int(k, "k", low=1, high=X.shape[0] - 1)
    clamp_quantile = _check_real(clamp_quantile, "clamp_quantile", low=0.0, high=1.0, low_open=True)
    Zx = _clamped_unit_rows(X, clamp_quantile)
    Zy = _clamped_unit_rows(Y, clamp_quantile)
    if Zx is None or Zy is None:
        which = "X" if Zx is None else "Y"
        return _undefined(
            f"mutual_knn is undefined: the {clamp_quantile} quantile of |{which}| is 0, "
            f"so clamping zeroes {which}"
        )
    overlap = _knn_overlap(_knn_indices(Zx, k), _knn_indices(Zy, k))
    return float(overlap.mean() / k)


# --------------------------------------------------------------------------------------
# CCA family
# --------------------------------------------------------------------------------------


def _principal_basis(Xc: FloatMatrix) -> tuple[FloatMatrix, np.ndarray, FloatMatrix]:
    """Thin SVD ``Xc = U diag(s) Vt`` truncated to the numerical rank.

    The rank tolerance is numpy.linalg.matrix_rank's, ``s_max * max(n, p) * eps``.
    """
    U, s, Vt = np.linalg.svd(Xc, full_matrices=False)
    rank = 0
    if s.size and s[0] > 0.0:
        rank = int(np.count_nonzero(s > s[0] * max(Xc.shape) * np.finfo(np.float64).eps))
    return U[:, :rank], s[:rank], Vt[:rank]


def _n_kept(s: np.ndarray, n_components: int | None, variance: float) -> int:
    """How many leading singular directions SVCCA keeps.

    ``n_components`` if given, else the fewest that explain ``variance`` of the total
    variance ``Σ s²``; never more than the numerical rank ``len(s)`` (which is at most
    ``min(n_samples - 1, n_features)`` for centred data).
    """
    if n_components is not None:
        return min(s.size, n_components)
    if s.size == 0:
        return 0
    explained = np.cumsum(s**2) / np.sum(s**2)
    return min(s.size, int(np.searchsorted(explained, variance)) + 1)


def _shrinkage(s: np.ndarray, epsilon: float, n: int) -> np.ndarray | None:
    """Per-direction factor ``s / sqrt(s² + (n - 1) ε)`` from ridge-regularised CCA.

    Adding ``ε`` to the diagonal of the covariance ``XᵀX / (n - 1)`` shrinks each
    whitened principal direction by this factor; ``None`` means no shrinkage (ε = 0).
    """
    if epsilon == 0.0:
        return None
    return s / np.sqrt(s**2 + (n - 1) * epsilon)


def _canonical(
    Ux: FloatMatrix,
    Uy: FloatMatrix,
    fx: np.ndarray | None = None,
    fy: np.ndarray | None = None,
) -> tuple[np.ndarray, FloatMatrix, FloatMatrix]:
    """CCA between the column spans of orthonormal bases ``Ux`` (n, r) and ``Uy`` (n, t).

    Returns the ``min(r, t)`` canonical correlations (descending, in [0, 1]) and the
    canonical directions in each basis (``A``: r x c, ``B``: t x c), i.e. the SVD of
    ``Uxᵀ Uy`` (Björck and Golub, 1973), optionally shrunk by ``fx``, ``fy``.
    """
    M = Ux.T @ Uy
    if fx is not None and fy is not None:
        M = fx[:, None] * M * fy[None, :]
    A, rho, Bt = np.linalg.svd(M, full_matrices=False)
    return np.clip(rho, 0.0, 1.0), A, Bt.T


def _morcos_weights(projections: np.ndarray) -> np.ndarray:
    """PWCCA weights from ``projections[i, j] = <h_i, x_j>`` (unit-norm canonical variate
    ``h_i``, centred neuron ``x_j``): ``α_i ∝ Σ_j |<h_i, x_j>|``, summing to 1 (Morcos,
    Raghu and Bengio, 2018).  The one formula behind every PWCCA of the package."""
    alpha = np.abs(projections).sum(axis=1)
    return alpha / alpha.sum()


def _projection_weights(
    A: FloatMatrix, s: np.ndarray, Vt: FloatMatrix, f: np.ndarray | None = None
) -> np.ndarray:
    """:func:`_morcos_weights` of X's in-sample canonical variates, from its SVD.

    ``h_i`` is X's i-th canonical variate as a unit vector over samples,
    ``h_i = U a_i / ||a_i||`` with ``a_i`` the i-th column of ``A`` (times the
    shrinkage ``f``), and ``x_j`` is X's j-th centred neuron, ``U diag(s) Vt e_j``.
    Hence ``<h_i, x_j> = (a_i ∘ s)ᵀ Vt e_j / ||a_i||`` without touching the samples.
    """
    coef = A if f is None else A * f[:, None]
    projections = (coef * s[:, None]).T @ Vt
    return _morcos_weights(projections / np.linalg.norm(coef, axis=0)[:, None])


def cca_correlations(X: ArrayLike, Y: ArrayLike, *, epsilon: float = 0.0) -> np.ndarray:
    """Canonical correlations between the centred columns of ``X`` and ``Y``.

    Computed stably from orthonormal bases of the two column spaces: thin SVDs of the
    centred matrices, then the singular values of ``UxᵀUy`` (Björck and Golub, 1973),
    never by inverting covariance matrices.  Directions without variance (numerical
    rank deficiency) are dropped.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    epsilon : float, default=0.0
        Ridge regulariser added to the diagonals of both covariance matrices
        ``XᵀX / (n - 1)`` and ``YᵀY / (n - 1)``; 0 gives plain CCA.

    Returns
    -------
    ndarray of shape (min(rank X, rank Y),)
        Correlations in ``[0, 1]``, in decreasing order; empty when either input
        has no variance.

    References
    ----------
    Hotelling, H. (1936). Relations Between Two Sets of Variates. Biometrika 28.

    Björck, Å. and Golub, G. H. (1973). Numerical Methods for Computing Angles
    Between Linear Subspaces. Mathematics of Computation 27(123), 579-594.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).standard_normal((100, 3))
    >>> np.round(cca_correlations(X, X @ np.diag([1.0, 2.0, 3.0])), 6)
    array([1., 1., 1.])
    """
    X, Y = _check_pair(X, Y)
    epsilon = _check_real(epsilon, "epsilon", low=0.0)
    return _cca(X, Y, epsilon)[0]


def _cca(X: FloatMatrix, Y: FloatMatrix, epsilon: float, n_components: int | None = None):
    """Canonical correlations and both sides' decompositions ``(A, s, Vt, f)`` (the
    canonical directions ``A`` in the principal basis ``U diag(s) Vt`` of the centred
    input, and the shrinkage ``f``), for validated input; sides are None without
    variance."""
    n = X.shape[0]
    Ux, sx, Vtx = _principal_basis(_centre(X))
    Uy, sy, Vty = _principal_basis(_centre(Y))
    if n_components is not None:
        Ux, sx, Vtx = Ux[:, :n_components], sx[:n_components], Vtx[:n_components]
        Uy, sy, Vty = Uy[:, :n_components], sy[:n_components], Vty[:n_components]
    # Edge case: an input without variance has an empty basis and no correlations.
    if sx.size == 0 or sy.size == 0:
        return np.empty(0), None, None
    fx, fy = _shrinkage(sx, epsilon, n), _shrinkage(sy, epsilon, n)
    rho, A, B = _canonical(Ux, Uy, fx, fy)
    return rho, (A, sx, Vtx, fx), (B, sy, Vty, fy)


def _no_variance(metric: str, X: FloatMatrix, Y: FloatMatrix) -> float:
    return _undefined(
        f"{metric} is undefined: all rows of {_which_constant(X, Y)} are identical, "
        "so it has no directions to correlate"
    )


def mean_squared_cca(X: ArrayLike, Y: ArrayLike, *, epsilon: float = 0.0) -> float:
    """Mean squared canonical correlation, ``R²_CCA = mean(ρ_i²)``.

    With centred columns this is ``||Q_Yᵀ Q_X||²_F / min(rank)`` of Kornblith et al.
    (2019), Table 1, i.e. linear-regression fit averaged over canonical directions.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    epsilon : float, default=0.0
        Covariance ridge, see :func:`cca_correlations`.

    Returns
    -------
    float
        In ``[0, 1]``; ``nan`` (with :class:`UndefinedSimilarityWarning`) when all
        rows of ``X`` or ``Y`` are identical.

    References
    ----------
    Kornblith, S., Norouzi, M., Lee, H. and Hinton, G. (2019). Similarity of Neural
    Network Representations Revisited. ICML. arXiv:1905.00414.

    Examples
    --------
    >>> import numpy as np
    >>> np.random.seed(1337)
    >>> X = np.random.randn(100, 10)
    >>> Y = np.random.randn(100, 10) + X
    >>> round(mean_squared_cca(X, Y), 5)
    0.5454
    """
    X, Y = _check_pair(X, Y)
    epsilon = _check_real(epsilon, "epsilon", low=0.0)
    rho = _cca(X, Y, epsilon)[0]
    if rho.size == 0:
        return _no_variance("mean_squared_cca", X, Y)
    return float(np.mean(rho**2))


def svcca(
    X: ArrayLike, Y: ArrayLike, *, n_components: int | None = 20, variance: float = 0.99
) -> float:
    """Singular vector CCA (SVCCA): mean canonical correlation of the leading subspaces.

    Both matrices are centred and reduced to their top-``k`` singular directions
    (``k = n_components`` if given, else the fewest directions explaining
    ``variance`` of the variance; ``k`` never exceeds the numerical rank, hence
    ``min(n_samples - 1, n_features)``), then CCA is run between the two reduced
    views and the ``min(k_x, k_y)`` canonical correlations are averaged.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    n_components : int or None, default=20
        Directions kept per input (the reference tutorials keep 20; for wide layers
        usually far fewer than the 99% of the variance of Raghu et al.).  ``None``
        selects by ``variance`` instead, as the paper does.
    variance : float, default=0.99
        Fraction of variance to keep when ``n_components`` is None, in ``(0, 1]``.

    Returns
    -------
    float
        In ``[0, 1]``; 1 when the two leading subspaces coincide.  ``nan`` (with
        :class:`UndefinedSimilarityWarning`) when all rows of an input are identical.

    References
    ----------
    Raghu, M., Gilmer, J., Yosinski, J. and Sohl-Dickstein, J. (2017). SVCCA:
    Singular Vector Canonical Correlation Analysis for Deep Learning Dynamics and
    Interpretability. NeurIPS. arXiv:1706.05806.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 30)) * np.linspace(3.0, 0.1, 30)
    >>> Q, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    >>> round(svcca(X, X @ Q, n_components=10), 6)
    1.0
    """
    X, Y = _check_pair(X, Y)
    if n_components is not None:
        n_components = _check_int(n_components, "n_components", low=1)
    variance = _check_real(variance, "variance", low=0.0, high=1.0, low_open=True)
    bases = []
    for M in (X, Y):
        U, s, _ = _principal_basis(_centre(M))
        bases.append(U[:, : _n_kept(s, n_components, variance)])
    if bases[0].shape[1] == 0 or bases[1].shape[1] == 0:
        return _no_variance("svcca", X, Y)
    return float(_canonical(*bases)[0].mean())


def pwcca(
    X: ArrayLike, Y: ArrayLike, *, n_components: int | None = None, epsilon: float = 0.0
) -> float:
    """Projection-weighted CCA (PWCCA) of Morcos et al. (2018).

    CCA between the centred inputs gives correlations ``ρ_i`` and X's canonical
    variates ``h_i``; each is weighted by how much of X it accounts for,
    ``α_i ∝ Σ_j |<h_i, x_j>|`` over X's centred neurons ``x_j``, and
    ``PWCCA = Σ_i α_i ρ_i`` with ``Σ α_i = 1``.  Not symmetric: ``pwcca(X, Y)``
    weights by X.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
        The representation whose neurons define the weights.
    Y : array-like of shape (n_samples, n_features_y)
    n_components : int or None, default=None
        ``None`` runs CCA on the full centred inputs (the paper's method).  An int
        first restricts both inputs to their top ``n_components`` singular directions
        as SVCCA does; the weights still project X's original neurons.
    epsilon : float, default=0.0
        Covariance ridge, see :func:`cca_correlations`.

    Returns
    -------
    float
        In ``[0, 1]``; 1 when the column spaces coincide.  ``nan`` (with
        :class:`UndefinedSimilarityWarning`) when all rows of an input are identical.

    Notes
    -----
    The reference implementation (google/svcca, ``pwcca.compute_pwcca``) weights on
    the side with fewer neurons and, when that is Y, projects X's activations with
    Y's index mask and coefficients - wrong whenever the widths differ.  Here the
    weights are always X's, from X's own canonical variates.

    References
    ----------
    Morcos, A. S., Raghu, M. and Bengio, S. (2018). Insights on Representational
    Similarity in Neural Networks with Canonical Correlation. NeurIPS.
    arXiv:1806.05759.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((100, 5))
    >>> round(pwcca(X, X @ rng.standard_normal((5, 8))), 6)
    1.0
    """
    X, Y = _check_pair(X, Y)
    if n_components is not None:
        n_components = _check_int(n_components, "n_components", low=1)
    epsilon = _check_real(epsilon, "epsilon", low=0.0)
    rho, x_side, _ = _cca(X, Y, epsilon, n_components)
    if rho.size == 0:
        return _no_variance("pwcca", X, Y)
    # Weights on X's side, with X's own canonical variates (see Notes for why not the
    # narrower side as in google/svcca).
    return float(_projection_weights(*x_side) @ rho)


@dataclass(frozen=True)
class CCADirections:
    """Canonical directions fitted on one sample, to project other rows (held-out CCA).

    The i-th canonical variates of rows ``X`` and ``Y`` are ``(X - mean_x) @ x[:, i]``
    and ``(Y - mean_y) @ y[:, i]``; ``correlations`` are those of the fitted sample
    (shrunk by its ``epsilon``), in decreasing order.  Made by :func:`cca_directions`.
    """

    mean_x: np.ndarray
    mean_y: np.ndarray
    x: FloatMatrix
    y: FloatMatrix
    correlations: np.ndarray


def _feature_directions(side) -> FloatMatrix:
    """Canonical directions in feature space from a side ``(A, s, Vt, f)`` of :func:`_cca`:
    ``Xc Vtᵀ diag(f / s) A = U diag(f) A``, the (regularised) canonical variates."""
    A, s, Vt, f = side
    scale = 1.0 / s if f is None else f / s
    return Vt.T @ (A * scale[:, None])


def cca_directions(X: ArrayLike, Y: ArrayLike, *, epsilon: float = 0.0) -> CCADirections:
    """Fit (regularised) CCA on ``X``, ``Y`` and return the canonical directions.

    The same decomposition as :func:`cca_correlations` and :func:`pwcca` (thin SVDs of
    the centred inputs, then the SVD of ``UxᵀUy``), expressed in feature coordinates so
    that held-out rows can be projected (Pasad et al.'s protocol, see
    :mod:`layerwise.cca_targets`).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    epsilon : float, default=0.0
        Covariance ridge, see :func:`cca_correlations`.

    Returns
    -------
    CCADirections
        With ``min(rank X, rank Y)`` directions per side (none without variance).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((100, 4))
    >>> fit = cca_directions(X, X @ rng.standard_normal((4, 4)))
    >>> np.round(fit.correlations, 6)
    array([1., 1., 1., 1.])
    >>> fit.x.shape
    (4, 4)
    """
    X, Y = _check_pair(X, Y)
    epsilon = _check_real(epsilon, "epsilon", low=0.0)
    rho, x_side, y_side = _cca(X, Y, epsilon)
    if rho.size == 0:
        return CCADirections(_column_means(X), _column_means(Y), np.empty((X.shape[1], 0)),
                             np.empty((Y.shape[1], 0)), rho)
    return CCADirections(_column_means(X), _column_means(Y), _feature_directions(x_side),
                         _feature_directions(y_side), rho)


def projected_pwcca(
    directions: CCADirections, X: ArrayLike, Y: ArrayLike, *, weights: str = "x"
) -> float:
    """PWCCA of rows projected on fitted canonical directions (held-out PWCCA).

    Each pair of canonical variates of these rows is correlated (signed: a direction
    whose relation flips on new rows scores below 0), and the correlations are weighted
    by Morcos et al.'s projection weights ``α_i ∝ Σ_j |<h_i, x_j>|`` of these rows'
    centred neurons on the unit-norm variates of the ``weights`` side.  On the fitted
    rows with ``epsilon = 0`` this equals :func:`pwcca` (``weights="x"``).

    Parameters
    ----------
    directions : CCADirections
        From :func:`cca_directions`.
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    weights : {"x", "y"}, default="x"
        Whose neurons weight the correlations.

    Returns
    -------
    float
        ``nan`` (with :class:`UndefinedSimilarityWarning`) when no pair of variates
        varies on these rows.

    References
    ----------
    Morcos, A. S., Raghu, M. and Bengio, S. (2018). Insights on Representational
    Similarity in Neural Networks with Canonical Correlation. NeurIPS.

    Pasad, A., Chou, J.-C. and Livescu, K. (2021). Layer-wise Analysis of a
    Self-supervised Speech Representation Model. ASRU.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((100, 5))
    >>> Y = X @ rng.standard_normal((5, 3)) + rng.standard_normal((100, 3))
    >>> bool(np.isclose(projected_pwcca(cca_directions(X, Y), X, Y), pwcca(X, Y)))
    True
    """
    if not isinstance(directions, CCADirections):
        raise ValueError(f"directions must come from cca_directions, got {directions!r}")
    X, Y = _check_pair(X, Y)
    for name, M, D in (("X", X, directions.x), ("Y", Y, directions.y)):
        if M.shape[1] != D.shape[0]:
            raise ValueError(f"{name} has {M.shape[1]} features, the directions {D.shape[0]}")
    if weights not in ("x", "y"):
        raise ValueError(f"weights must be 'x' or 'y', got {weights!r}")
    U = _centre((X - directions.mean_x) @ directions.x)
    V = _centre((Y - directions.mean_y) @ directions.y)
    norm_u, norm_v = np.linalg.norm(U, axis=0), np.linalg.norm(V, axis=0)
    # Edge case: a variate can be constant on new rows (e.g. a one-hot class absent from
    # them); it has no correlation and no direction, so it is left out.
    tiny = 1e-10 * max(norm_u.max(initial=0.0), norm_v.max(initial=0.0))
    keep = (norm_u > tiny) & (norm_v > tiny)
    if not keep.any():
        return _undefined("projected_pwcca is undefined: no canonical variate varies on these rows")
    U, V, norm_u, norm_v = U[:, keep], V[:, keep], norm_u[keep], norm_v[keep]
    rho = np.einsum("ij,ij->j", U, V) / (norm_u * norm_v)
    H, neurons = (U / norm_u, X) if weights == "x" else (V / norm_v, Y)
    return float(_morcos_weights(H.T @ _centre(neurons)) @ rho)


# --------------------------------------------------------------------------------------
# Streaming linear CKA
# --------------------------------------------------------------------------------------


class StreamingGram:
    """Exact linear CKA between ``L`` layers from a single pass over row chunks.

    Accumulates, for every pair of layers ``i <= j``, the centred cross-product
    ``M_ij = Σ_rows (x_i - mean_i)(x_j - mean_j)ᵀ`` (shape ``p_i x p_j``) together
    with the column means; no n x n matrix is ever formed.  Chunks are merged with
    the pairwise update of Chan, Golub and LeVeque, which stays accurate when the
    activations carry large offsets.  Then
    ``CKA(i, j) = ||M_ij||²_F / (||M_ii||_F ||M_jj||_F)``, identical to
    :func:`cka_linear` on the concatenated rows.

    Memory is ``8 * Σ_{i<=j} p_i p_j`` bytes of state (see :meth:`state_bytes`),
    independent of the number of rows: 25 layers of width 768 need 325 blocks of
    768 x 768, 1.53 GB (all L² blocks would be 2.95 GB).  Each update adds one float64
    centred copy of the chunk (float32 chunks are not converted first): with chunks of
    4,096 frames x 25 layers x 768 that is 0.63 GB, plus 0.31 GB for the float32
    chunk itself, about 2.5 GB in all - within 4 GiB for a pass over 1,000,000 frames.
    Compute is ``Σ_{i<=j} p_i p_j`` multiply-adds per row (1.9e8 for 25 x 768), about
    2e14 for a million frames: BLAS-bound, worth many cores or a GPU node.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> layers = [rng.standard_normal((1000, 16)) for _ in range(3)]
    >>> acc = StreamingGram()
    >>> for start in range(0, 1000, 300):
    ...     _ = acc.update([layer[start:start + 300] for layer in layers])
    >>> bool(np.isclose(acc.cka_matrix()[0, 1], cka_linear(layers[0], layers[1])))
    True
    """

    def __init__(self) -> None:
        self._n = 0
        self._widths: tuple[int, ...] | None = None
        self._means: list[np.ndarray] = []
        self._blocks: dict[tuple[int, int], FloatMatrix] = {}

    @staticmethod
    def state_bytes(widths: Sequence[int]) -> int:
        """Bytes of accumulated state for layers of the given widths."""
        w = [int(p) for p in widths]
        return 8 * (sum(w[i] * w[j] for i in range(len(w)) for j in range(i, len(w))) + sum(w))

    @property
    def n_rows(self) -> int:
        """Rows accumulated so far."""
        return self._n

    @property
    def n_layers(self) -> int:
        return 0 if self._widths is None else len(self._widths)

    def update(self, chunks: Sequence[ArrayLike]) -> StreamingGram:
        """Add the same rows of every layer: ``chunks[i]`` has shape ``(rows, p_i)``."""
        # float32 chunks stay float32 here; centring below produces the float64 copy.
        arrays = [_check_matrix(c, f"chunks[{i}]", as_float64=False) for i, c in enumerate(chunks)]
        if not arrays:
            raise ValueError("chunks must hold one array per layer, got none")
        rows = {a.shape[0] for a in arrays}
        if len(rows) != 1:
            raise ValueError(f"every chunk must have the same number of rows, got {sorted(rows)}")
        self._add(arrays)
        return self

    def _add(self, arrays: list[FloatMatrix]) -> None:
        """Accumulate validated chunks with equal row counts."""
        widths = tuple(a.shape[1] for a in arrays)
        if self._widths is not None and widths != self._widths:
            raise ValueError(f"layer widths changed from {self._widths} to {widths}")
        m = arrays[0].shape[0]
        # Edge case: an empty chunk adds nothing (and would make its mean 0/0).
        if m == 0:
            return
        if self._widths is None:
            self._widths = tuple(a.shape[1] for a in arrays)
            self._means = [np.zeros(p) for p in self._widths]
            self._blocks = {
                (i, j): np.zeros((self._widths[i], self._widths[j]))
                for i in range(len(arrays))
                for j in range(i, len(arrays))
            }
        n_old, n_new = self._n, self._n + m
        # Chan et al.'s merge: M += C_chunk + (n_old m / n_new) δ_i δ_jᵀ, where C_chunk
        # is the chunk's own centred cross-product and δ the difference of means. The
        # correction is folded into the GEMM as one extra row sqrt(n_old m / n_new) δ.
        scale = math.sqrt(n_old * m / n_new)
        augmented, deltas = [], []
        for a, mean in zip(arrays, self._means, strict=True):
            chunk_mean = _column_means(a)
            delta = chunk_mean - mean
            rows = np.empty((m + 1, a.shape[1]))  # the one float64 copy of the chunk
            np.subtract(a, chunk_mean, out=rows[:m])
            rows[m] = scale * delta
            augmented.append(rows)
            deltas.append(delta)
        for (i, j), block in self._blocks.items():
            block += augmented[i].T @ augmented[j]
        for mean, delta in zip(self._means, deltas, strict=True):
            mean += delta * (m / n_new)
        self._n = n_new

    def comoment(self, i: int, j: int) -> FloatMatrix:
        """Centred cross-product ``Σ (x_i - mean_i)(x_j - mean_j)ᵀ``, shape (p_i, p_j)."""
        if self._widths is None:
            raise ValueError("no rows accumulated yet")
        return self._blocks[(i, j)] if i <= j else self._blocks[(j, i)].T

    def _cka(self, pairs: list[tuple[int, int]]) -> dict[tuple[int, int], float]:
        if self._n < 2:
            raise ValueError(f"linear CKA needs at least 2 rows, {self._n} accumulated")
        layers = sorted({i for pair in pairs for i in pair})
        norms = {i: math.sqrt(_sq_norm(self._blocks[(i, i)])) for i in layers}
        # Edge case: a layer without variance has a zero co-moment; CKA is 0/0.
        constant = [i for i in layers if norms[i] == 0.0]
        if constant:
            warnings.warn(
                f"linear CKA is undefined for layers {constant}: all their rows are identical",
                UndefinedSimilarityWarning,
                stacklevel=3,
            )
        return {
            (i, j): _sq_norm(self.comoment(i, j)) / (norms[i] * norms[j])
            if norms[i] > 0.0 and norms[j] > 0.0
            else math.nan
            for i, j in pairs
        }

    def cka_matrix(self) -> FloatMatrix:
        """Linear CKA between every pair of layers, shape (L, L).

        A layer whose rows were all identical gives ``nan`` in its row and column
        (with :class:`UndefinedSimilarityWarning`).
        """
        values = self._cka(list(self._blocks))
        out = np.empty((self.n_layers, self.n_layers))
        for (i, j), value in values.items():
            out[i, j] = out[j, i] = value
        return out

    def cka(self, i: int, j: int) -> float:
        """Linear CKA between layers ``i`` and ``j``."""
        return self._cka([(i, j)])[(i, j)]


class LinearCKAAccumulator:
    """Streaming :func:`cka_linear` between two representations, fed in row chunks.

    A two-layer :class:`StreamingGram`: holds column means and the centred ``XᵀX``,
    ``YᵀY`` and ``XᵀY`` (``8 (p² + pq + q²)`` bytes), never an n x n matrix.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((1000, 8))
    >>> Y = X + rng.standard_normal((1000, 8))
    >>> acc = LinearCKAAccumulator()
    >>> for start in range(0, 1000, 256):
    ...     _ = acc.update(X[start:start + 256], Y[start:start + 256])
    >>> bool(np.isclose(acc.value(), cka_linear(X, Y)))
    True
    """

    def __init__(self) -> None:
        self._gram = StreamingGram()

    @property
    def n_rows(self) -> int:
        return self._gram.n_rows

    def update(self, X: ArrayLike, Y: ArrayLike) -> LinearCKAAccumulator:
        """Add matched rows ``X`` (rows, p) and ``Y`` (rows, q)."""
        X, Y = _check_pair(X, Y, min_samples=0)
        self._gram._add([X, Y])
        return self

    def value(self) -> float:
        """Linear CKA of all rows seen so far (``nan`` with a warning if undefined)."""
        return self._gram.cka(0, 1)


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


def _bootstrap_weights(n: int, codes, n_boot: int, seed: int) -> list[np.ndarray]:
    """Row weights of each replicate: how often the row's cluster (or the row) was drawn.

    A replicate is never materialised: every metric is evaluated on the original rows
    with these weights, which is what a later streaming pass can accumulate per chunk.
    """
    rng = np.random.default_rng(seed)
    if codes is None:
        return [np.bincount(rng.integers(0, n, size=n), minlength=n).astype(np.float64)
                for _ in range(n_boot)]
    n_groups = int(codes.max()) + 1
    return [np.bincount(rng.integers(0, n_groups, size=n_groups), minlength=n_groups)[codes]
            .astype(np.float64) for _ in range(n_boot)]


class _HalfSamples:
    """Half-samples drawn without replacement: half of the clusters (or rows), whole.

    ``rows[h]`` are the rows of half-sample ``h``.  ``variance_factor = k / (G - k)``
    scales the spread of half-sample values to the variance of the full-sample value
    (delete-d jackknife with ``k = G // 2`` of ``G`` clusters kept; Shao and Wu, 1989).
    A half-sample of ``m`` rows is an iid sample of size ``m`` (unconditionally), so an
    O(1/n) bias ``c/n`` appears in the half-sample mean as ``c mean(1/m)``: the full
    sample's bias is ``(mean_h θ_h - θ̂) · bias_scale`` with
    ``bias_scale = (1/n) / (mean(1/m) - 1/n)``, 1 when ``m = n/2`` (Richardson
    extrapolation, as in the half-sample jackknife).
    """

    def __init__(self, n: int, codes, n_half: int, seed: int) -> None:
        rng = np.random.default_rng([seed, 1])  # a stream of its own, apart from the bootstrap
        n_groups = n if codes is None else int(codes.max()) + 1
        kept = n_groups // 2
        self.rows = []
        for _ in range(n_half):
            chosen = np.zeros(n_groups, dtype=bool)
            chosen[rng.choice(n_groups, size=kept, replace=False)] = True
            self.rows.append(np.flatnonzero(chosen if codes is None else chosen[codes]))
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


# Keyword options of each metric that the table's computation supports, as table options.
_TABLE_OPTIONS = {
    "cka_rbf": {"threshold": "rbf_threshold"},
    "mutual_knn": {"k": "knn_k"},
    "svcca": {"n_components": "svcca_components"},
    "pwcca": {"n_components": "svcca_components"},
}
# Options the table fixes: another value cannot be bootstrapped as the table does.
_FIXED_OPTIONS = {
    "mutual_knn": {"clamp_quantile": 0.95},
    "svcca": {"variance": 0.99},
    "pwcca": {"epsilon": 0.0},
}


def _resolve_metric(metric) -> tuple[str, dict] | None:
    """``(name, table options)`` when ``metric`` is a metric of :data:`METRICS` (by name,
    function or ``functools.partial`` with keyword options), else None."""
    if isinstance(metric, str):
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; known: {sorted(METRICS)}")
        func, options = METRICS[metric], {}
    elif isinstance(metric, functools.partial) and not metric.args:
        func, options = metric.func, dict(metric.keywords)
    else:
        func, options = metric, {}
    name = next((key for key, f in METRICS.items() if f is func), None)
    if name is None:
        return None
    defaults = {p.name: p.default for p in inspect.signature(func).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY}
    options = {**defaults, **options}
    for option, value in options.items():
        fixed = _FIXED_OPTIONS.get(name, {})
        if option in fixed and value != fixed[option]:
            raise ValueError(
                f"bootstrap_ci of {name} supports {option}={fixed[option]} only, got {value!r}"
            )
    table = _TABLE_OPTIONS.get(name, {})
    return name, {table[o]: v for o, v in options.items() if o in table}


def bootstrap_ci(
    metric: str | Callable[[np.ndarray, np.ndarray], float],
    X: ArrayLike,
    Y: ArrayLike,
    *,
    n_boot: int,
    seed: int,
    level: float = 0.95,
    groups: ArrayLike | None = None,
) -> tuple[float, float]:
    """Confidence interval of the population value of a similarity between X and Y.

    Resamples clusters of rows (``groups``, e.g. the utterance of each word or frame)
    or, without groups, rows, with replacement; a replicate is the original rows
    weighted by how often their cluster was drawn.  Per metric:

    * ``cka_linear``, ``cka_debiased``, ``cka_rbf``: the replicates are CKA from the
      unbiased HSIC with that kernel (for RBF, the median bandwidth of the replicate),
      as a U-statistic that leaves out pairs of copies of a row just as it leaves out
      the diagonal; percentile interval.  The biased HSIC is off by many standard errors
      at realistic ``n`` (RBF), too much to correct; the unbiased one needs no
      correction, and the percentile interval keeps the skew near 1 the right way
      round.  Linear and debiased CKA estimate the same population value and get the
      same interval (but for clipping at 0).
    * ``cosine`` (a mean of per-row scores): basic interval ``(2θ̂ - q_hi, 2θ̂ - q_lo)``.
    * ``svcca``, ``pwcca``: their O(p/n) bias is large and a resample underestimates it
      (its canonical correlations are already inflated), so they are recomputed on
      ``n_boot`` half-samples without replacement (half the clusters, whole): a
      half-sample is a true sample of half the size, whose mean shows the bias at
      ``n/2``; the interval is ``θ̂ - b ± z sqrt(v)`` with the bias ``b`` extrapolated
      to ``n`` (``b = mean(θ_half) - θ̂`` for halves of ``n/2`` rows) and the delete-d
      jackknife variance ``v`` of the half-sample values.
    * ``mutual_knn``: its value depends on ``n`` and its per-row overlaps are dependent;
      it is half-sampled likewise, without the bias term (the estimand is its mean at
      ``n`` rows): ``θ̂ ± z sqrt(v)``.
    * any other callable: basic interval of ``metric(X[draw], Y[draw])``; valid for
      plug-in statistics (smooth functions of the empirical distribution), not for
      U-statistics, on which copies of a row act as dependent samples.

    Intervals of the package's metrics are clipped to the range of the population value,
    ``[0, 1]`` (``[-1, 1]`` for cosine, and for debiased CKA, whose estimate may be
    negative).

    Parameters
    ----------
    metric : str or callable ``(X, Y) -> float``
        A name in :data:`METRICS`, its function, or a ``functools.partial`` of it with
        keyword options (e.g. ``partial(cka_rbf, threshold=0.7)``); or any callable.
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    n_boot : int
        Number of replicates (or half-samples), ``>= 1``.  Percentile and basic
        intervals end at tail quantiles: use a few hundred for a 95% interval.
    seed : int
        Seed of the draws; equal seeds give equal intervals.
    level : float, default=0.95
        Nominal coverage, in ``(0, 1)``.
    groups : array-like of shape (n_samples,), optional
        Cluster of each row; clusters are resampled whole, so that dependent rows (the
        words or frames of one utterance) are not counted as independent samples.

    Returns
    -------
    (low, high) : tuple of float
        ``(nan, nan)`` when every replicate is undefined.

    Notes
    -----
    The interval is for the population value, not for the estimate: a biased estimate
    may lie outside it.  RBF CKA is biased upwards by several standard errors at a few
    hundred rows, and linear CKA of unrelated layers is positive by bias alone, so their
    intervals can lie below their values.  SVCCA and PWCCA of unrelated layers are biased
    by far more
    than the half-sample correction removes (the bias is not O(1/n) there): their
    intervals then exclude 0.  Coverage was measured by simulation (docs/metrics.md).
    Under independence the interval of the CKAs is conservative: the bootstrap of a
    degenerate U-statistic overstates its spread (Arcones and Giné, 1992).

    References
    ----------
    Davison, A. C. and Hinkley, D. V. (1997). Bootstrap Methods and their Application.
    Cambridge University Press, sections 3.8 (clustered data) and 5.2 (basic interval).

    Field, C. A. and Welsh, A. H. (2007). Bootstrapping clustered data. Journal of the
    Royal Statistical Society B 69(3), 369-390.

    Arcones, M. A. and Giné, E. (1992). On the bootstrap of U and V statistics. Annals
    of Statistics 20(2), 655-674.

    Shao, J. and Wu, C. F. J. (1989). A general theory for jackknife variance
    estimation. Annals of Statistics 17(3), 1176-1197.

    Politis, D. N., Romano, J. P. and Wolf, M. (1999). Subsampling. Springer.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 5))
    >>> Y = X + rng.standard_normal((200, 5))
    >>> low, high = bootstrap_ci("cka_debiased", X, Y, n_boot=50, seed=0)
    >>> bool(low < cka_debiased(X, Y) < high)
    True
    >>> utterance = np.repeat(np.arange(40), 5)  # 5 words per utterance
    >>> bootstrap_ci("cka_linear", X, Y, n_boot=50, seed=0, groups=utterance) != (low, high)
    True
    """
    resolved = _resolve_metric(metric)
    if resolved is None and not callable(metric):
        raise ValueError(f"metric must be a metric name or callable, got {metric!r}")
    min_rows = 4 if resolved is not None and resolved[0] == "cka_debiased" else 2
    X, Y = _check_pair(X, Y, min_samples=min_rows)
    n_boot = _check_int(n_boot, "n_boot", low=1)
    seed = _check_int(seed, "seed", low=0)
    level = _check_real(level, "level", low=0.0, high=1.0, low_open=True, high_open=True)
    codes = _group_codes(groups, X.shape[0])
    if resolved is not None:
        name, options = resolved
        if name == "mutual_knn":
            _check_int(options["knn_k"], "k", low=1, high=X.shape[0] - 1)
        computation = _TableComputation(
            [X], [Y], ["X"], ["Y"], [name], n_boot=n_boot, seed=seed, codes=codes,
            **{"knn_k": 10, "rbf_threshold": 0.5, "svcca_components": 20, **options},
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedSimilarityWarning)
            computation.run()
        low, high = computation.interval(name, level)
        return float(low[0, 0]), float(high[0, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedSimilarityWarning)
        value = metric(X, Y)
        rows = np.arange(X.shape[0])
        values = []
        for weights in _bootstrap_weights(X.shape[0], codes, n_boot, seed):
            draw = np.repeat(rows, weights.astype(np.intp))
            values.append(metric(X[draw], Y[draw]))
    low, high = _basic_interval(value, np.array(values, dtype=np.float64), level)
    return float(low), float(high)


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------

METRICS: dict[str, Callable[..., float]] = {
    "cka_linear": cka_linear,
    "cka_rbf": cka_rbf,
    "cka_debiased": cka_debiased,
    "cosine": cosine_matched,
    "mutual_knn": mutual_knn,
    "svcca": svcca,
    "pwcca": pwcca,
}
"""Metric name -> function ``(X, Y, **options) -> float``."""

SYMMETRIC_METRICS = frozenset(METRICS) - {"pwcca"}
"""Metrics with ``f(X, Y) == f(Y, X)`` (PWCCA weights by its first argument)."""

TABLE_COLUMNS = (
    "model_a",
    "layer_a",
    "model_b",
    "layer_b",
    "span",
    "pooling",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "n_rows",
)
"""Columns of :func:`similarity_table`, in order."""


# --------------------------------------------------------------------------------------
# Similarity table: every layer pair, every metric, one pass of per-layer precomputation
# --------------------------------------------------------------------------------------
#
# How the table stays fast. Per layer, once: the centred matrix, its n x n Gram matrix
# packed to the lower triangle (linear CKA and debiased CKA need nothing else) and the
# packed squared distances (RBF CKA), the kNN index sets and the row norms. Per
# replicate (each bootstrap draw, then the point estimate): a draw is summarised by how
# often each row was drawn, and every kernel metric on X[draw] is evaluated exactly on
# the distinct rows with those multiplicities as weights, so no resampled matrix is
# rebuilt: the weighted HSIC of *all* layer pairs is one product of the stacked packed
# kernels plus rank-one centring corrections, and SVCCA/PWCCA need one small
# eigendecomposition per layer and a k x k SVD per pair. Cosine and mutual k-NN are
# means of per-row scores, so their replicates are weighted means of one vector per pair.

_FAMILY = {
    "cka_linear": "linear",
    "cka_debiased": "linear",
    "cka_rbf": "rbf",
    "svcca": "subspace",
    "pwcca": "subspace",
    "mutual_knn": "knn",
    "cosine": "cosine",
}

# Weighted order statistics: sort directly below this size, else bin and recurse.
_SORT_CUTOFF = 1 << 15
_N_BINS = 1 << 12


def _weighted_order_stats(values: np.ndarray, weights: np.ndarray, ranks: list) -> list[float]:
    """Entries at 0-based positions ``ranks`` of sorted ``values`` repeated ``weights`` times.

    Exact (``weights`` are integer-valued), without a full sort: histogram the values,
    find the bin holding each rank from cumulative bin weights, recurse into that bin.
    """
    if values.size <= _SORT_CUTOFF:
        order = np.argsort(values, kind="stable")
        positions = np.searchsorted(np.cumsum(weights[order]), ranks, side="right")
        return [float(values[order[i]]) for i in positions]
    low, high = float(values.min()), float(values.max())
    if low == high:
        return [low] * len(ranks)
    scale = _N_BINS / (high - low)
    if not math.isfinite(scale):  # a range too narrow to bin: sort instead
        order = np.argsort(values, kind="stable")
        positions = np.searchsorted(np.cumsum(weights[order]), ranks, side="right")
        return [float(values[order[i]]) for i in positions]
    bins = ((values - low) * scale).astype(np.intp)
    np.minimum(bins, _N_BINS - 1, out=bins)
    cumulative = np.cumsum(np.bincount(bins, weights=weights, minlength=_N_BINS))
    targets = np.searchsorted(cumulative, ranks, side="right")
    out = [0.0] * len(ranks)
    for target in np.unique(targets):
        members = [i for i, t in enumerate(targets) if t == target]
        below = cumulative[target - 1] if target > 0 else 0.0
        inside = bins == target
        found = _weighted_order_stats(
            values[inside], weights[inside], [ranks[i] - below for i in members]
        )
        for i, value in zip(members, found, strict=True):
            out[i] = value
    return out


def _weighted_median(values: np.ndarray, weights: np.ndarray, total: int) -> float:
    """``np.median`` of the expanded multiset (``weights`` sum to ``total``)."""
    half = total // 2
    ranks = [half] if total % 2 else [half - 1, half]
    return float(np.mean(_weighted_order_stats(values, weights, ranks)))


class _Packing:
    """Lower triangle (diagonal included) of an n x n symmetric matrix, packed by rows.

    Entry ``(r, c)``, ``r >= c``, sits at ``r (r + 1) / 2 + c``, which is BLAS's
    upper-packed column-major layout, so ``dspmv`` applies directly.  An inner product
    of two symmetric matrices is the packed inner product with off-diagonal entries
    counted twice, hence ``sqrt_mult``.
    """

    def __init__(self, n: int) -> None:
        self.rows, self.cols = np.tril_indices(n)
        self.flat = self.rows * n + self.cols
        self.offdiag = self.rows != self.cols
        self.sqrt_mult = np.where(self.offdiag, math.sqrt(2.0), 1.0)


class _Replicate:
    """The rows one evaluation uses, as weights: all rows once, or a bootstrap replicate.

    ``weights[i]`` is how often row ``i`` (its cluster) was drawn; ``rows`` (None = all)
    are the rows with weight > 0, ``counts`` their weights and ``total`` their sum.  A
    plug-in metric of the resample equals the weighted metric over ``X[rows]``.  For
    packed kernels over the rows: ``pairs`` indexes their entries in the full packing
    (None = all), ``sqrt_mult`` is sqrt(2) off the diagonal (so that packed inner
    products count both triangles), ``median_weights`` how often each entry counts in
    the bandwidth's median (``2 c_i c_j`` for a pair of distinct rows; pairs of copies
    of a row are left out, and the diagonal counts one zero per resampled row, as in
    the point estimate), and ``u_weights`` the U-statistic weights of :func:`_u_hsic`.
    """

    def __init__(self, n: int, weights: np.ndarray | None, packing: _Packing | None) -> None:
        if weights is None:
            self.weights, self.rows, self.counts = np.ones(n), None, np.ones(n)
        else:
            self.weights = weights
            self.rows = np.flatnonzero(weights)
            self.counts = weights[self.rows]
        self.total = float(self.counts.sum())
        self.pairs = self.sqrt_mult = self.median_weights = self.u_weights = None
        self.median_total = 0
        if packing is None:
            return
        if self.rows is None:
            r, c, offdiag = packing.rows, packing.cols, packing.offdiag
            self.sqrt_mult = packing.sqrt_mult
        else:
            r, c = np.tril_indices(self.rows.size)
            self.pairs = (self.rows * (self.rows + 1) // 2)[r] + self.rows[c]
            offdiag = r != c
            self.sqrt_mult = np.where(offdiag, math.sqrt(2.0), 1.0)
        cr, cc = self.counts[r], self.counts[c]
        products = cr * cc
        self.median_weights = np.where(offdiag, 2.0 * products, cr)
        sum_sq = float(self.counts @ self.counts)
        self.median_total = int(round(self.total + self.total**2 - sum_sq))
        self.u_weights = products * ((self.total**2 - sum_sq) - self.total * (cr + cc)
                                     + 2.0 * products)
        self.u_weights[~offdiag] = 0.0

    def take(self, A: np.ndarray) -> np.ndarray:
        return A if self.rows is None else A[self.rows]

    def release(self) -> None:
        """Drop the per-pair arrays (memory) once the replicate has been evaluated."""
        self.pairs = self.sqrt_mult = self.median_weights = self.u_weights = None


class _KernelTerms:
    """One layer set's kernels on a replicate's rows, as :func:`_u_hsic` needs them.

    ``S`` (L, pairs): packed kernels times ``sqrt_mult``; ``a1``, ``a2`` (L, rows):
    ``K̃ c`` and ``K̃ c²`` with ``K̃`` the kernel with zeroed diagonal and ``c`` the row
    weights; ``total`` (L,): ``cᵀ K̃ c``; ``diag`` (L, rows): the kernel's diagonal.
    """

    def __init__(self, S, a1, a2, diag, counts) -> None:
        self.S, self.a1, self.a2, self.diag = S, a1, a2, diag
        self.total = a1 @ counts


def _packed_products(SA, SB, weights, same: bool):
    """``Σ_k SA[:, k] weights[k] SB[:, k]`` for all rows of SA and SB, and the self-terms,
    in column blocks so that the weighted copy stays small."""
    cross = np.zeros((SA.shape[0], SB.shape[0]))
    self_a, self_b = np.zeros(SA.shape[0]), np.zeros(SB.shape[0])
    block = max(1, _BLOCK_ELEMENTS // max(SA.shape[0], SB.shape[0]))
    for start in range(0, SA.shape[1], block):
        part = slice(start, start + block)
        weighted = SA[:, part] * weights[part]
        cross += weighted @ SB[:, part].T
        if not same:
            self_a += np.einsum("ij,ij->i", weighted, SA[:, part])
            self_b += np.einsum("ij,ij->i", SB[:, part] * weights[part], SB[:, part])
    if same:
        self_a = self_b = np.diag(cross).copy()
    return cross, self_a, self_b


def _u_hsic(A: _KernelTerms, B: _KernelTerms, rep: _Replicate, same: bool):
    """Weighted unbiased HSIC (times a common positive factor) for all pairs of layers.

    With weights ``c`` (``W = Σc``, ``P = Σc²``) and zero-diagonal kernels ``K̃, L̃``,
    the U-statistic of Song et al. (2012) over distinct *rows*, each 4-tuple weighted
    by the product of its rows' weights, is (times ``Σ_distinct c_i c_j c_q c_r``)

        Σ_ij s_ij K̃_ij L̃_ij + (cᵀa)(cᵀb) - 2 Σ_i (W c_i + c_i²) a_i b_i
            + 2 Σ_i c_i (a2_i b_i + a_i b2_i),
        s_ij = c_i c_j (W² - P - W (c_i + c_j) + 2 c_i c_j),

    with ``a = K̃c``, ``a2 = K̃c²`` (likewise ``b``, ``b2``).  With integer weights this is
    the U-statistic of the resample with pairs of copies left out like the diagonal; it
    is invariant to the centring of the features; with all weights 1 it is Song et al.'s
    Eq. 5 times ``n(n - 1)(n - 2)(n - 3)``.  Checked against the sum over 4-tuples in the
    tests.  For linear kernels every term is a weighted cross-product of the features
    (``Xᵀ diag(c) Y``, ``Xᵀ diag(c²) Y``), i.e. accumulable per chunk of rows.

    Returns ``(cross, self_a, self_b)``; a self-term at or below its rounding floor is 0.
    """
    c = rep.counts
    W = rep.total
    cross, m_a, m_b = _packed_products(A.S, B.S, rep.u_weights, same)
    linear = W * c + c * c
    cross += np.outer(A.total, B.total)
    cross -= 2.0 * ((A.a1 * linear) @ B.a1.T)
    cross += 2.0 * ((A.a2 * c) @ B.a1.T + (A.a1 * c) @ B.a2.T)

    def self_term(T: _KernelTerms, mpart):
        square = (T.a1 * T.a1) @ linear
        mixed = (T.a1 * T.a2) @ c
        value = mpart + T.total**2 - 2.0 * square + 4.0 * mixed
        # Edge case: the self-term is a non-negative combination of squared norms, 0 for
        # degenerate input (identical or mutually orthogonal rows) up to rounding noise.
        floor = 1e-10 * (np.abs(mpart) + T.total**2 + 2.0 * square + 4.0 * np.abs(mixed))
        return np.where(value <= floor, 0.0, value)

    self_a = self_term(A, m_a)
    self_b = self_a if same else self_term(B, m_b)
    if same:
        np.fill_diagonal(cross, self_a)
    return cross, self_a, self_b


_THREADPOOLS: ThreadpoolController | None = None


def _n_cpus() -> int:
    """CPUs this process may run on (respects taskset / SLURM affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _single_threaded_blas():
    """Context limiting BLAS to one thread.

    Small factorisations (768 x 768 eigh, k x k SVDs) gain nothing from OpenBLAS
    threads, and threads competing for busy cores made them 20x slower on a shared
    node; per-layer work is parallelised over layers instead.
    """
    global _THREADPOOLS
    if _THREADPOOLS is None:
        _THREADPOOLS = ThreadpoolController()
    return _THREADPOOLS.limit(limits=1, user_api="blas")


def _for_each_layer(func: Callable[[int], None], n_layers: int, bar=None) -> None:
    """Run ``func(i)`` for every layer, on one thread per CPU, BLAS single-threaded.

    numpy's large operations (matmul, take, exp) release the GIL, so per-layer work
    runs in parallel; one single-threaded GEMM per core is as fast as threaded GEMMs.
    """
    workers = min(_n_cpus(), n_layers)
    if workers <= 1:  # one layer (e.g. bootstrap_ci): a thread pool would only add overhead
        for i in range(n_layers):
            func(i)
            if bar is not None:
                bar.update(1)
        return
    with _single_threaded_blas(), ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(func, range(n_layers)):
            if bar is not None:
                bar.update(1)


class _Side:
    """Per-layer quantities of one set of layers, computed once per table."""

    def __init__(self, mats, families, packing, knn_k, bar) -> None:
        L, n = len(mats), mats[0].shape[0]
        self.centred = [None] * L
        self.gram = self.sq_dist = self.row_sq = None
        if families & {"linear", "rbf"}:
            m = packing.rows.size
            self.row_sq = np.empty((L, n))
            self.gram = np.empty((L, m)) if "linear" in families else None
            self.sq_dist = np.empty((L, m)) if "rbf" in families else None
        self.mats = mats
        self.knn = [None] * L
        self.row_norms = [None] * L

        def prepare(a: int) -> None:
            X = mats[a]
            Xc = self.centred[a] = _centre(X)
            if self.row_sq is not None:
                G = Xc @ Xc.T
                self.row_sq[a] = np.diag(G)
                if self.gram is not None:
                    np.take(G, packing.flat, out=self.gram[a])
                    self.gram[a] *= packing.sqrt_mult
                if self.sq_dist is not None:
                    np.take(_gram_to_sq_distances(G), packing.flat, out=self.sq_dist[a])
            if "knn" in families:
                self.knn[a] = _knn_of(X, knn_k)
            if "cosine" in families:
                self.row_norms[a] = np.linalg.norm(X, axis=1)

        _for_each_layer(prepare, L, bar)

    def linear_terms(self, rep: _Replicate) -> _KernelTerms:
        """Linear kernels of the centred layers on the replicate's rows."""
        L = len(self.centred)
        S = self.gram if rep.pairs is None else np.empty((L, rep.pairs.size))
        a1, a2 = np.empty((L, rep.counts.size)), np.empty((L, rep.counts.size))
        diag = self.row_sq if rep.rows is None else self.row_sq[:, rep.rows]
        c, c2 = rep.counts, rep.counts**2

        def build(a: int) -> None:
            if rep.pairs is not None:
                np.take(self.gram[a], rep.pairs, out=S[a])
            Xc = rep.take(self.centred[a])
            a1[a] = Xc @ (Xc.T @ c) - diag[a] * c
            a2[a] = Xc @ (Xc.T @ c2) - diag[a] * c2

        _for_each_layer(build, L)
        return _KernelTerms(S, a1, a2, diag, c)

    def rbf_terms(self, rep: _Replicate, threshold: float) -> tuple[_KernelTerms, np.ndarray]:
        """RBF kernels on the replicate's rows, with the bandwidth from the median over
        its pairs of distinct rows and one zero per resampled row, and which layers have
        median 0.  The point estimate (all rows) overwrites the stored distances, so it
        must come last."""
        L = len(self.centred)
        S = self.sq_dist if rep.pairs is None else np.empty((L, rep.pairs.size))
        a1, a2 = np.zeros((L, rep.counts.size)), np.zeros((L, rep.counts.size))
        diag = np.ones((L, rep.counts.size))
        undefined = np.zeros(L, dtype=bool)
        c, c2 = rep.counts, rep.counts**2

        def build(a: int) -> None:
            row = S[a]
            if rep.pairs is not None:
                np.take(self.sq_dist[a], rep.pairs, out=row)
            median = _weighted_median(row, rep.median_weights, rep.median_total)
            if median <= 0.0:  # same edge case as cka_rbf
                row[:] = 0.0
                diag[a] = 0.0
                undefined[a] = True
                return
            row *= -1.0 / (2.0 * threshold**2 * median)
            np.exp(row, out=row)
            a1[a] = blas.dspmv(c.size, 1.0, row, c) - c  # the diagonal exp(0) = 1 left out
            a2[a] = blas.dspmv(c.size, 1.0, row, c2) - c2
            row *= rep.sqrt_mult

        _for_each_layer(build, L)
        return _KernelTerms(S, a1, a2, diag, c), undefined

    def subspaces(self, rep: _Replicate, n_components: int | None):
        """Leading singular triplets of each layer's resampled centred rows (None: no variance)."""
        out = [None] * len(self.centred)
        root_counts = np.sqrt(rep.counts)[:, None]

        def build(a: int) -> None:
            Xu = rep.take(self.centred[a])
            B = Xu - (rep.counts @ Xu) / rep.total
            B *= root_counts
            out[a] = _top_singular(B, n_components)

        _for_each_layer(build, len(out))
        return out


def _knn_of(X: FloatMatrix, k: int):
    """kNN index sets of :func:`mutual_knn` (clamp 0.95), or None if the clamp zeroes X."""
    Z = _clamped_unit_rows(X, 0.95)
    return None if Z is None else _knn_indices(Z, k)


def _top_singular(B: FloatMatrix, n_components: int | None):
    """Top ``n_components`` (None: all) singular triplets ``(U, s, Vt)`` of ``B``.

    Fast path of the table: eigendecomposition of the smaller of ``BᵀB`` and ``BBᵀ``
    (like scikit-learn's ``covariance_eigh`` PCA solver), only the leading part.
    Accurate for directions with ``s`` above about ``sqrt(size * eps) * s_max``;
    smaller ones are dropped as numerically null.  None when ``B`` has no variance.
    """
    dual = B.shape[0] < B.shape[1]
    C = B @ B.T if dual else B.T @ B
    size = C.shape[0]
    k = size if n_components is None else min(n_components, size)
    lam, V = linalg.eigh(C, subset_by_index=[size - k, size - 1], overwrite_a=True,
                         check_finite=False)
    lam, V = lam[::-1], V[:, ::-1]
    if lam[0] <= 0.0:
        return None
    keep = lam > lam[0] * size * np.finfo(np.float64).eps
    s = np.sqrt(lam[keep])
    V = V[:, keep]
    if dual:
        return V, s, (B.T @ V / s).T
    return B @ V / s, s, V.T


def _cka_ratio(cross: np.ndarray, self_a: np.ndarray, self_b: np.ndarray) -> np.ndarray:
    """``cross / sqrt(self_a ⊗ self_b)``, nan where a self-term is <= 0."""
    root_a = np.sqrt(np.maximum(self_a, 0.0))
    root_b = np.sqrt(np.maximum(self_b, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = cross / (root_a[:, None] * root_b[None, :])
    out[~((self_a > 0.0)[:, None] & (self_b > 0.0)[None, :])] = np.nan
    return out


def _biased_hsic(SA, MA, SB, MB, n, same):
    """``n²·HSIC`` (biased) between every layer of A and of B, and the self-terms.

    The centred kernel is ``K - m1ᵀ - 1mᵀ + μ`` with ``m = K1/n`` and ``μ = 1ᵀm/n``, and
    ``Σ_ij K̃_ij L̃_ij = Σ_ij K_ij L_ij - 2n Σ_i m_i l_i + n² μ ν``; the first sum is
    ``SA SBᵀ`` for the packed kernels scaled by sqrt(2) off the diagonal.
    """
    cross = SA @ SA.T if same else SA @ SB.T
    cross -= 2.0 * n * (MA @ MB.T)
    mu_a = MA.sum(axis=1) / n
    mu_b = mu_a if same else MB.sum(axis=1) / n
    cross += n * n * np.outer(mu_a, mu_b)
    if same:
        diagonal = np.diag(cross).copy()
        return cross, diagonal, diagonal

    def self_terms(S, M, mu):
        return _row_sq_norms(S) - 2.0 * n * _row_sq_norms(M) + n * n * mu**2

    return cross, self_terms(SA, MA, mu_a), self_terms(SB, MB, mu_b)


class _TableComputation:
    """Values and interval statistics of every requested metric for every layer pair.

    ``values[metric]`` (L_a, L_b) are the point estimates; ``centres[metric]`` the
    statistic whose replicates are drawn (for the CKAs, CKA from the unbiased HSIC; else
    the value); ``replicates[metric]`` (n_boot, L_a, L_b) its bootstrap replicates, or
    for the metrics of :data:`_HALF_SAMPLED` its half-sample values.
    ``problems[metric]`` collects why point estimates are nan.
    """

    def __init__(self, mats_a, mats_b, labels_a, labels_b, metrics, *, n_boot, seed, codes,
                 knn_k, rbf_threshold, svcca_components, cross_model=False, bar=None) -> None:
        self.same = mats_b is None
        self.cross_model = cross_model
        self.labels_a, self.labels_b = labels_a, labels_b
        self.metrics = metrics
        self.families = {_FAMILY[m] for m in metrics}
        self.n = mats_a[0].shape[0]
        self.knn_k = knn_k
        self.rbf_threshold = rbf_threshold
        self.svcca_components = svcca_components
        self.bar = bar if bar is not None else tqdm(disable=True)
        self.packing = _Packing(self.n) if self.families & {"linear", "rbf"} else None
        self.side_a = _Side(mats_a, self.families, self.packing, knn_k, self.bar)
        self.side_b = (self.side_a if self.same
                       else _Side(mats_b, self.families, self.packing, knn_k, self.bar))
        bootstrapped = set(metrics) - _HALF_SAMPLED
        self.weights = _bootstrap_weights(self.n, codes, n_boot if bootstrapped else 0, seed)
        self.halves = _HalfSamples(self.n, codes, n_boot if set(metrics) & _HALF_SAMPLED else 0,
                                   seed)
        shape = (len(labels_a), len(labels_b))
        self.values = {m: np.full(shape, np.nan) for m in metrics}
        self.centres = {m: np.full(shape, np.nan) for m in metrics}
        self.replicates = {m: np.full((n_boot, *shape), np.nan) for m in metrics}
        self.problems: dict[str, set[str]] = {m: set() for m in metrics}

    def run(self) -> None:
        # Bootstrap replicates first: the point estimate can then turn the stored squared
        # distances into its RBF kernels in place, without a copy.
        for r in [*range(len(self.weights)), None]:
            rep = _Replicate(self.n, None if r is None else self.weights[r], self.packing)
            if "linear" in self.families:
                self._linear(r, rep)
            if "rbf" in self.families:
                self._rbf(r, rep)
            if "subspace" in self.families and r is None:
                self._subspace(r, rep)
            rep.release()
            self.bar.update(1)
        if self.families & {"knn", "cosine"}:
            with _single_threaded_blas():
                self._per_row()
            self.bar.update(1)
        for h, rows in enumerate(self.halves.rows):
            if "subspace" in self.families:
                weights = np.zeros(self.n)
                weights[rows] = 1.0
                self._subspace(h, _Replicate(self.n, weights, None))
            if "mutual_knn" in self.metrics:
                self._knn_half(h, rows)
            self.bar.update(1)
        if self.same:
            upper = np.triu_indices(len(self.labels_a), 1)
            for metric in SYMMETRIC_METRICS & set(self.metrics):
                for V in (self.values[metric], self.centres[metric], *self.replicates[metric]):
                    V.T[upper] = V[upper]  # one computation per unordered pair, both orders

    def interval(self, metric: str, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """``(low, high)`` of shape (L_a, L_b); nan without replicates (see bootstrap_ci)."""
        if not len(self.replicates[metric]):
            nan = np.full(self.values[metric].shape, np.nan)
            return nan, nan.copy()
        if metric in _HALF_SAMPLED:
            # mutual k-NN estimates its mean at n rows: no bias to remove
            return self.halves.interval(self.values[metric], self.replicates[metric], level,
                                        bias=metric != "mutual_knn", bounds=_BOUNDS[metric])
        if metric in _UNBIASED_REPLICATES:
            return _percentile_interval(self.replicates[metric], level, _BOUNDS[metric])
        return _basic_interval(self.centres[metric], self.replicates[metric], level,
                               _BOUNDS[metric])

    def _pairs(self):
        """Layer pairs to compute: unordered (a <= b) for one set of layers, all for two."""
        for a in range(len(self.labels_a)):
            for b in range(a if self.same else 0, len(self.labels_b)):
                yield a, b

    def _store(self, r, metric: str, V: np.ndarray, centre: np.ndarray | None = None) -> None:
        """Write a replicate (``r``) or the point estimate (``r`` None) of ``metric``."""
        if metric not in self.values:
            return
        if r is not None:
            self.replicates[metric][r] = V
            return
        self.values[metric] = V
        self.centres[metric] = V if centre is None else centre

    def _note(self, r, metric: str, bad_a, bad_b, reason: str) -> None:
        """Record, for the point estimate, which layers make ``metric`` undefined."""
        bad = [self.labels_a[i] for i in np.flatnonzero(bad_a)]
        if not self.same:
            bad += [self.labels_b[i] for i in np.flatnonzero(bad_b)]
        if r is None and bad and metric in self.problems:
            self.problems[metric].add(f"{reason} ({', '.join(bad)})")

    def _cka(self, r, rep: _Replicate, A: _KernelTerms, B: _KernelTerms, biased: str,
             unbiased: str | None, reason: str) -> None:
        """CKA from the unbiased HSIC (the interval statistic; the value of ``unbiased``)
        and, for the point estimate, from the biased HSIC (the value of ``biased``)."""
        cross, self_a, self_b = _u_hsic(A, B, rep, self.same)
        u = _cka_ratio(cross, self_a, self_b)
        if r is not None:
            self._store(r, biased, u)
            if unbiased:
                self._store(r, unbiased, u)
            return
        if unbiased:
            self._store(r, unbiased, u)
            self._note(r, unbiased, self_a <= 0, self_b <= 0, "unbiased self-HSIC <= 0")
        if biased in self.values:
            # Point estimate from the biased HSIC: Kornblith et al.'s value, same kernels.
            M_a = (A.a1 + A.diag) / self.n
            M_b = M_a if self.same else (B.a1 + B.diag) / self.n
            cross, self_a, self_b = _biased_hsic(A.S, M_a, B.S, M_b, self.n, self.same)
            self._store(r, biased, _cka_ratio(cross, self_a, self_b), centre=u)
            self._note(r, biased, self_a <= 0, self_b <= 0, reason)

    def _linear(self, r, rep: _Replicate) -> None:
        A = self.side_a.linear_terms(rep)
        B = A if self.same else self.side_b.linear_terms(rep)
        unbiased = "cka_debiased" if "cka_debiased" in self.values else None
        self._cka(r, rep, A, B, "cka_linear", unbiased, "all rows are identical")

    def _rbf(self, r, rep: _Replicate) -> None:
        t = self.rbf_threshold
        A, bad_a = self.side_a.rbf_terms(rep, t)
        B, bad_b = (A, bad_a) if self.same else self.side_b.rbf_terms(rep, t)
        self._cka(r, rep, A, B, "cka_rbf", None, "median squared distance 0, RBF bandwidth 0")

    def _subspace(self, r, rep: _Replicate) -> None:
        k = self.svcca_components
        bases_a = self.side_a.subspaces(rep, k)
        bases_b = bases_a if self.same else self.side_b.subspaces(rep, k)
        shape = (len(self.labels_a), len(self.labels_b))
        out = {m: np.full(shape, np.nan) for m in ("svcca", "pwcca") if m in self.values}
        with _single_threaded_blas():
            self._subspace_pairs(out, bases_a, bases_b)
        for metric, V in out.items():
            self._store(r, metric, V)
            self._note(r, metric, [x is None for x in bases_a], [x is None for x in bases_b],
                       "all rows are identical")

    def _subspace_pairs(self, out, bases_a, bases_b) -> None:
        k = self.svcca_components
        for a, b in self._pairs():
            if bases_a[a] is None or bases_b[b] is None:
                continue
            (Ua, sa, Vta), (Ub, sb, Vtb) = bases_a[a], bases_b[b]
            rho, A, B = _canonical(Ua, Ub)
            if "svcca" in out:
                # With svcca_components=None SVCCA keeps 99% of the variance (svcca's
                # default) while PWCCA uses every direction (pwcca's default).
                ka, kb = _n_kept(sa, k, 0.99), _n_kept(sb, k, 0.99)
                if (ka, kb) != (sa.size, sb.size):
                    rho_sv = _canonical(Ua[:, :ka], Ub[:, :kb])[0]
                else:
                    rho_sv = rho
                out["svcca"][a, b] = rho_sv.mean()
            if "pwcca" in out:
                out["pwcca"][a, b] = _projection_weights(A, sa, Vta) @ rho
                if self.same and a != b:  # asymmetric: the reverse order weights by b
                    out["pwcca"][b, a] = _projection_weights(B, sb, Vtb) @ rho

    def _per_row(self) -> None:
        """Cosine and mutual k-NN point estimates; cosine's replicates are weighted means
        of its per-row scores."""
        W = np.vstack(self.weights) if self.weights else np.empty((0, self.n))
        W /= np.maximum(W.sum(axis=1, keepdims=True), 1.0)
        A, B = self.side_a, self.side_b
        if "cosine" in self.values and self.cross_model:
            # Edge case: two models' coordinates are unrelated (each has its own basis), so
            # the angle between their vectors means nothing.
            self.problems["cosine"].add("the two models have unrelated coordinates (bases)")
        for a, b in self._pairs():
            if "cosine" in self.values and not self.cross_model:
                Xa, Xb = A.mats[a], B.mats[b]
                if Xa.shape[1] == Xb.shape[1]:
                    scores = _matched_cosines(Xa, Xb, A.row_norms[a], B.row_norms[b])
                    self.values["cosine"][a, b] = self.centres["cosine"][a, b] = scores.mean()
                    self.replicates["cosine"][:, a, b] = W @ scores
                else:  # same edge case as cosine_matched
                    self.problems["cosine"].add(
                        f"widths differ ({self.labels_a[a]}: {Xa.shape[1]}, "
                        f"{self.labels_b[b]}: {Xb.shape[1]})"
                    )
            if "mutual_knn" in self.values and A.knn[a] is not None and B.knn[b] is not None:
                overlap = _knn_overlap(A.knn[a], B.knn[b]).mean() / self.knn_k
                self.values["mutual_knn"][a, b] = self.centres["mutual_knn"][a, b] = overlap
        if "mutual_knn" in self.values:
            self._note(None, "mutual_knn", [x is None for x in A.knn],
                       [x is None for x in B.knn],
                       "clamping at the 0.95 quantile of |x| zeroes the layer")

    def _knn_half(self, h: int, rows: np.ndarray) -> None:
        """Mutual k-NN on half-sample ``h``, with the neighbourhoods of its rows."""
        k = self.knn_k
        if rows.size <= k:  # too few rows for k neighbours: no value, no interval
            return
        knn_a = self._half_knn(self.side_a, rows)
        knn_b = knn_a if self.same else self._half_knn(self.side_b, rows)
        for a, b in self._pairs():
            if knn_a[a] is not None and knn_b[b] is not None:
                self.replicates["mutual_knn"][h, a, b] = _knn_overlap(knn_a[a], knn_b[b]).mean() / k

    def _half_knn(self, side: _Side, rows: np.ndarray) -> list:
        """kNN index sets of every layer of ``side`` on the given rows."""
        found = [None] * len(side.mats)

        def build(a: int) -> None:
            found[a] = _knn_of(side.mats[a][rows], self.knn_k)

        _for_each_layer(build, len(found))
        return found


def _check_layers(layers: object, name: str) -> tuple[list[str], list[FloatMatrix]]:
    if not isinstance(layers, Mapping) or not layers:
        raise ValueError(f"{name} must be a non-empty dict of layer name -> 2-D array")
    names, mats = [], []
    for key, value in layers.items():
        if not isinstance(key, str):
            raise ValueError(f"{name} keys must be layer names (str), got {key!r}")
        names.append(key)
        mats.append(_check_matrix(value, f"{name}[{key!r}]"))
    return names, mats


def similarity_table(
    layers_a: Mapping[str, ArrayLike],
    layers_b: Mapping[str, ArrayLike] | None = None,
    *,
    metrics: Sequence[str],
    model_a: str,
    model_b: str,
    span: str,
    pooling: str,
    n_boot: int = 0,
    seed: int = 0,
    knn_k: int = 10,
    rbf_threshold: float = 0.5,
    svcca_components: int | None = 20,
    groups: ArrayLike | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Every requested metric for every pair of layers, as a long table.

    Parameters
    ----------
    layers_a : dict of str -> array-like of shape (n_samples, n_features_i)
        Layers of ``model_a`` by name (e.g. ``"cnn.0"``, ``"proj"``, ``"layer.3"``),
        rows matched across layers (and with ``layers_b``).
    layers_b : dict of str -> array-like, optional
        Layers of ``model_b``.  None compares ``layers_a`` with itself: each unordered
        pair is computed once and written in both orders (except PWCCA, which is
        asymmetric and computed per order).
    metrics : list of str
        Names from :data:`METRICS`.
    model_a, model_b, span, pooling : str
        Copied into the identifying columns.  When ``layers_b`` is given and
        ``model_b != model_a``, ``cosine`` is nan: the two models' coordinates are
        unrelated.
    n_boot : int, default=0
        Bootstrap replicates for the 95% intervals of the population values (see
        :func:`bootstrap_ci`); 0 leaves ``ci_low`` and ``ci_high`` nan.  All pairs and
        metrics share the same draws, so each interval equals
        ``bootstrap_ci(metric, X, Y, n_boot=n_boot, seed=seed, groups=groups)`` with the
        metric's options.
    seed : int, default=0
    knn_k : int, default=10
        ``k`` of :func:`mutual_knn` (clamp quantile 0.95).
    rbf_threshold : float, default=0.5
        ``threshold`` of :func:`cka_rbf`.
    svcca_components : int or None, default=20
        ``n_components`` of :func:`svcca` and, to keep PWCCA at O(k³) per pair, also of
        :func:`pwcca`.  None: SVCCA keeps 99% of the variance and PWCCA every direction.
        PWCCA weights by ``layer_a``'s neurons (``pwcca(X_a, X_b)``).
    groups : array-like of shape (n_samples,), optional
        Cluster of each row (e.g. its utterance), resampled whole by the bootstrap.
    progress : bool, default=True
        Show a tqdm progress bar on stderr.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TABLE_COLUMNS` = ``model_a, layer_a, model_b, layer_b, span,
        pooling, metric, value, ci_low, ci_high, n_rows``, one row per metric and
        ordered layer pair.  Undefined values are nan, with one
        :class:`UndefinedSimilarityWarning` per metric saying why.

    Notes
    -----
    Values equal the metric functions' (up to rounding), but are computed much
    faster: per layer the centred data, its packed n x n Gram matrix and squared
    distances, kNN index sets and row norms are computed once; the kernel metrics of
    all layer pairs then come from one product of stacked packed kernels, SVCCA and
    PWCCA from one small eigendecomposition per layer (of the smaller Gram matrix, as
    scikit-learn's ``covariance_eigh`` PCA solver does) and a k x k SVD per pair.
    Bootstrap replicates reuse these, weighting the distinct drawn rows by how often
    they were drawn instead of rebuilding resampled matrices.  Per-layer work runs on
    one thread per available CPU.  Memory grows as about ``L (8 n² + 16 n p)`` bytes
    for ``L`` layers of ``n`` rows and width ``p`` (per layer: a packed n x n triangle
    for the linear kernel and one for squared distances, a float64 copy and a centred
    copy of the layer), plus working memory: 13 layers x 2,700 rows x 768 peaked at
    2.0 GB, inputs included.  For many more rows, use :class:`StreamingGram` (linear
    CKA) or subsample rows.  Each replicate adds about one packed triangle per layer.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> layers = {f"layer.{i}": rng.standard_normal((100, 8)) for i in range(3)}
    >>> table = similarity_table(layers, metrics=["cka_linear"], model_a="m", model_b="m",
    ...                          span="utterance", pooling="mean", progress=False)
    >>> table.shape
    (9, 11)
    >>> round(float(table.query("layer_a == layer_b").value.min()), 12)
    1.0
    """
    if isinstance(metrics, str) or not isinstance(metrics, Sequence) or not metrics:
        raise ValueError(f"metrics must be a non-empty list of metric names, got {metrics!r}")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {sorted(METRICS)}")
    if len(set(metrics)) != len(metrics):
        raise ValueError(f"metrics contains duplicates: {list(metrics)}")
    for label, text in (("model_a", model_a), ("model_b", model_b), ("span", span),
                        ("pooling", pooling)):
        if not isinstance(text, str):
            raise ValueError(f"{label} must be a str, got {text!r}")
    names_a, mats_a = _check_layers(layers_a, "layers_a")
    names_b, mats_b = (names_a, None) if layers_b is None else _check_layers(layers_b, "layers_b")
    n = mats_a[0].shape[0]
    for name, mats, names in (("layers_a", mats_a, names_a), ("layers_b", mats_b or [], names_b)):
        for key, M in zip(names, mats, strict=False):
            if M.shape[0] != n:
                raise ValueError(
                    f"{name}[{key!r}] has {M.shape[0]} rows but {names_a[0]!r} of layers_a "
                    f"has {n}; rows must be matched samples"
                )
    min_rows = 4 if "cka_debiased" in metrics else 2
    if n < min_rows:
        raise ValueError(f"the layers need at least {min_rows} rows, got {n}")
    n_boot = _check_int(n_boot, "n_boot", low=0)
    seed = _check_int(seed, "seed", low=0)
    if "mutual_knn" in metrics:
        knn_k = _check_int(knn_k, "knn_k", low=1, high=n - 1)
    rbf_threshold = _check_real(rbf_threshold, "rbf_threshold", low=0.0, low_open=True)
    if svcca_components is not None:
        svcca_components = _check_int(svcca_components, "svcca_components", low=1)
    codes = _group_codes(groups, n)

    cross_model = layers_b is not None and model_a != model_b
    labels_a = [f"{model_a}:{name}" for name in names_a]
    labels_b = [f"{model_b}:{name}" for name in names_b]
    per_row = {"cosine", "mutual_knn"} & set(metrics)
    halves = n_boot if _HALF_SAMPLED & set(metrics) else 0
    boots = n_boot if set(metrics) - _HALF_SAMPLED else 0
    steps = len(mats_a) + len(mats_b or []) + 1 + boots + bool(per_row) + halves
    with tqdm(total=steps, desc=f"similarity {model_a} vs {model_b}", file=sys.stderr,
              disable=not progress, leave=False) as bar:
        computation = _TableComputation(
            mats_a, mats_b, labels_a, labels_b, list(metrics), n_boot=n_boot, seed=seed,
            codes=codes, knn_k=knn_k, rbf_threshold=rbf_threshold,
            svcca_components=svcca_components, cross_model=cross_model, bar=bar,
        )
        computation.run()

    La, Lb = len(names_a), len(names_b)
    frames = []
    for metric in metrics:
        V = computation.values[metric]
        low, high = computation.interval(metric)
        undefined = int(np.isnan(V).sum())
        if undefined:
            reasons = "; ".join(sorted(computation.problems[metric])) or "see its docstring"
            warnings.warn(
                f"{metric} is undefined (nan) for {undefined} of {La * Lb} layer pairs: "
                f"{reasons}",
                UndefinedSimilarityWarning,
                stacklevel=2,
            )
        frames.append(
            pd.DataFrame(
                {
                    "model_a": model_a,
                    "layer_a": np.repeat(names_a, Lb),
                    "model_b": model_b,
                    "layer_b": np.tile(names_b, La),
                    "span": span,
                    "pooling": pooling,
                    "metric": metric,
                    "value": V.ravel(),
                    "ci_low": low.ravel(),
                    "ci_high": high.ravel(),
                    "n_rows": np.full(La * Lb, n, dtype=np.int64),
                },
                columns=list(TABLE_COLUMNS),
            )
        )
    return pd.concat(frames, ignore_index=True)
