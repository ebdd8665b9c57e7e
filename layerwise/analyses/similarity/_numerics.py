"""Shared numerics of the similarity metrics, and the warning for undefined values (input
checks: layerwise.analyses.validation)."""

from __future__ import annotations

import math
import warnings

import numpy as np
from numpy.typing import NDArray

FloatMatrix = NDArray[np.float64]

# Row blocks of n x n similarity matrices are sized to hold about this many float64
# values (64 MiB), so that memory stays O(n * block) however large n is.  Up to
# n = 2,896 the whole matrix is one block, and numpy computes Z Zᵀ as a symmetric
# rank-k update (syrk), at half the cost of two blocks.
_BLOCK_ELEMENTS = 1 << 23


class UndefinedSimilarityWarning(UserWarning):
    """A similarity is undefined for the given input; ``nan`` was returned instead."""


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


def _cka_ratio(cross: np.ndarray, self_a: np.ndarray, self_b: np.ndarray) -> np.ndarray:
    """``cross / sqrt(self_a ⊗ self_b)``, nan where a self-term is <= 0."""
    root_a = np.sqrt(np.maximum(self_a, 0.0))
    root_b = np.sqrt(np.maximum(self_b, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = cross / (root_a[:, None] * root_b[None, :])
    out[~((self_a > 0.0)[:, None] & (self_b > 0.0)[None, :])] = np.nan
    return out
