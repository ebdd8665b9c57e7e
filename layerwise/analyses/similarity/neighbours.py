"""Row-wise cosine and mutual nearest neighbours."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from layerwise.analyses.similarity._numerics import (
    _BLOCK_ELEMENTS,
    FloatMatrix,
    _matched_cosines,
    _undefined,
    _unit_rows,
)
from layerwise.analyses.validation import check_int, check_pair, check_real

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
    X, Y = check_pair(X, Y, min_samples=1)
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
    X, Y = check_pair(X, Y)
    k = check_int(k, "k", low=1, high=X.shape[0] - 1)
    clamp_quantile = check_real(clamp_quantile, "clamp_quantile", low=0.0, high=1.0, low_open=True)
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


