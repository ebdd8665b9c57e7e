"""Streaming linear CKA over row chunks."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from layerwise.analyses.similarity._numerics import (
    FloatMatrix,
    UndefinedSimilarityWarning,
    _column_means,
    _sq_norm,
)
from layerwise.analyses.validation import check_matrix, check_pair

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
    >>> from layerwise.analyses.similarity import cka_linear
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
        arrays = [check_matrix(c, f"chunks[{i}]", min_rows=0) for i, c in enumerate(chunks)]
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
    >>> from layerwise.analyses.similarity import cka_linear
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
        X, Y = check_pair(X, Y, min_samples=0)
        self._gram._add([X, Y])
        return self

    def value(self) -> float:
        """Linear CKA of all rows seen so far (``nan`` with a warning if undefined)."""
        return self._gram.cka(0, 1)


