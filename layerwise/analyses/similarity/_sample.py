"""The rows behind the metrics that need n x n matrices (RBF CKA, mutual k-NN).

They are :func:`layerwise.analyses.subsample.rows` of the rows' utterances — the one stated subsample
the other quadratic analyses use too — so every layer, and both models of an aligned pair
(which share the utterance of each row), are measured on the same rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from layerwise.analyses import subsample


def _sample_rows(n: int, max_rows: int | None, groups: ArrayLike | None,
                 seed: int) -> NDArray[np.intp] | None:
    """Sorted indices of at most ``max_rows`` of ``n`` rows, seeded; None for all rows.

    Stratified by ``groups`` (e.g. the utterance of each row): every group keeps its share
    of the rows. Without groups, each row is its own group (a simple random sample).

    >>> _sample_rows(10, 20, None, 0) is None
    True
    >>> rows = _sample_rows(100, 10, np.repeat(np.arange(5), 20), 0)
    >>> rows.size, np.bincount(rows // 20).tolist()
    (10, [2, 2, 2, 2, 2])
    """
    if max_rows is None or n <= max_rows:
        return None
    units = np.arange(n) if groups is None else np.asarray(groups)
    index = pd.DataFrame({"utt_id": units.astype(str)})
    return subsample.rows(index, max_rows, seed).astype(np.intp)
