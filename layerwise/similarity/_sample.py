"""The rows behind the metrics that need n x n matrices (RBF CKA, mutual k-NN).

Private stand-in until a shared ``layerwise.subsample`` module exists.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def _sample_rows(n: int, max_rows: int | None, groups: ArrayLike | None,
                 seed: int) -> NDArray[np.intp] | None:
    """Sorted indices of at most ``max_rows`` of ``n`` rows, seeded; None for all rows.

    Stratified by ``groups`` (e.g. the utterance of each row): every group keeps the
    same fraction ``max_rows / n`` of its rows, rounded by largest remainder (ties broken
    at random) so that exactly ``max_rows`` rows are drawn; the rows kept within a group
    are drawn at random.  Without groups, a simple random sample.  The same arguments
    give the same rows, so every layer (and both models of an aligned pair) use them.

    >>> _sample_rows(10, 20, None, 0) is None
    True
    >>> rows = _sample_rows(100, 10, np.repeat(np.arange(5), 20), 0)
    >>> rows.size, np.bincount(rows // 20).tolist()
    (10, [2, 2, 2, 2, 2])
    """
    if max_rows is None or n <= max_rows:
        return None
    rng = np.random.default_rng([seed, 2])  # a stream apart from the bootstrap's
    if groups is None:
        return np.sort(rng.choice(n, size=max_rows, replace=False)).astype(np.intp)
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    sizes = np.bincount(codes)
    quota = sizes * (max_rows / n)
    keep = np.floor(quota).astype(np.intp)
    short = max_rows - int(keep.sum())
    if short:
        remainder = quota - keep
        order = np.lexsort((rng.random(sizes.size), -remainder))
        keep[order[:short]] += 1
    # a random order of the rows within each group: sort by (group, random key)
    order = np.lexsort((rng.random(n), codes))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.empty(n, dtype=np.intp)
    rank[order] = np.arange(n) - np.repeat(starts, sizes)
    return np.flatnonzero(rank < keep[codes]).astype(np.intp)
