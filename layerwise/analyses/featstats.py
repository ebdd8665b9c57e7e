"""Label-free statistics of one layer's activations.

Besides the statistics themselves, this module holds the small input checks and the
progress bar shared by every analysis module (``convexity``, ``probes``, ``clustering``,
``embed``), so that each of them validates its arguments in the same way.

Statistics (one value per layer, names as in :func:`featstats_table`):

``mean``, ``std``
    Mean and standard deviation over all activations of the layer.
``var_hist_count_00`` .. ``var_hist_count_19``
    Number of feature dimensions whose variance falls in each of 20 fixed bins,
    log10-spaced from 1e-5 to 1e5 (:data:`VAR_HIST_EDGES`, half a decade per bin).
    Variances below the first edge (including constant dimensions) are counted in
    bin 00, those above the last edge in bin 19, so the counts always sum to d.
``var_hist_edge_00`` .. ``var_hist_edge_20``
    The 21 bin edges, repeated per layer so that the table is self-describing.
``var_top1``, ``var_top10``
    Share of the total variance carried by the first 1 and 10 principal components.
``effective_rank``
    Roy & Vetterli (2007) effective rank of the centred activations.
``anisotropy``
    Mean cosine similarity between random pairs of rows (Ethayarajh, 2019).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from layerwise.analyses import layer_tasks
from layerwise.analyses.validation import check_int, check_layer, check_layer_shapes, check_matrix

__all__ = [
    "VAR_HIST_EDGES",
    "FEATSTATS_COLUMNS",
    "activation_statistics",
    "anisotropy",
    "effective_rank",
    "featstats_table",
    "variance_histogram",
    "variance_shares",
]

#: Fixed log10-spaced bin edges (1e-5 .. 1e5, 20 bins) for the per-dimension variance
#: histogram; fixed so that histograms are comparable across layers and models.
VAR_HIST_EDGES = np.logspace(-5.0, 5.0, 21)

#: Columns of :func:`featstats_table`.
FEATSTATS_COLUMNS = ("model", "layer", "statistic", "value")


# --------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------


def _singular_values(X: np.ndarray, *, center: bool) -> np.ndarray:
    """Singular values (descending) of ``X`` or of its column-centred copy, in float64."""
    Xf = np.asarray(X, dtype=np.float64)
    if center:
        Xf = Xf - Xf.mean(axis=0)
    return np.linalg.svd(Xf, compute_uv=False)


def effective_rank(X, *, center: bool = True) -> float:
    """Effective rank of a matrix (Roy & Vetterli, 2007).

    ``exp(H(p))`` with ``p_i = s_i / sum(s)`` the L1-normalised singular values. It is a
    continuous version of the rank: a rank-r matrix with r equal singular values scores
    r, and skewed spectra score less.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Activations, one row per item.
    center : bool, default=True
        Subtract the column means first, so that the statistic describes the spread of
        the representation rather than its mean offset.

    Returns
    -------
    float
        Value in ``[1, min(n_samples, n_features)]``; NaN when the (centred) matrix is
        all zero, for which the effective rank is undefined.

    References
    ----------
    O. Roy and M. Vetterli, "The effective rank: A measure of effective dimensionality",
    EUSIPCO 2007.

    Examples
    --------
    >>> import numpy as np
    >>> round(effective_rank(np.outer(np.arange(1.0, 6.0), np.ones(3))), 6)
    1.0
    """
    X = check_matrix(X, min_rows=1)
    return _effective_rank_from_singular_values(_singular_values(X, center=center))


def _effective_rank_from_singular_values(s: np.ndarray) -> float:
    total = s.sum()
    if total <= 0:
        return float("nan")
    p = s[s > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def variance_shares(X, *, top: Sequence[int] = (1, 10)) -> dict[int, float]:
    """Share of the total variance carried by the first principal components.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    top : sequence of int, default=(1, 10)
        Numbers of leading components; counts beyond the number of components available
        give share 1.

    Returns
    -------
    dict of int to float
        ``{k: share}`` with shares in ``[0, 1]``, non-decreasing in ``k``; NaN when all
        rows are equal.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).standard_normal((100, 3)) * [10.0, 1.0, 0.1]
    >>> shares = variance_shares(X, top=(1, 3))
    >>> bool(shares[1] > 0.9), round(shares[3], 6)
    (True, 1.0)
    """
    X = check_matrix(X, min_rows=1)
    return _variance_shares_from_singular_values(_singular_values(X, center=True), top)


def _variance_shares_from_singular_values(s: np.ndarray, top: Sequence[int]) -> dict[int, float]:
    var = s**2
    total = var.sum()
    if total <= 0:
        return {int(k): float("nan") for k in top}
    cumulative = np.cumsum(var) / total
    return {int(k): float(min(1.0, cumulative[min(int(k), len(var)) - 1])) for k in top}


def variance_histogram(X, *, edges: np.ndarray = VAR_HIST_EDGES) -> np.ndarray:
    """Histogram of per-dimension variances over fixed (log-spaced) bin edges.

    Variances outside the edges are clipped into the first/last bin, so the counts sum
    to ``n_features`` and outlier dimensions (common in transformer layers) stay visible.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    edges : ndarray of shape (n_bins + 1,), default=VAR_HIST_EDGES
        Increasing bin edges.

    Returns
    -------
    ndarray of shape (n_bins,)
        Integer counts of dimensions per bin.

    Examples
    --------
    >>> import numpy as np
    >>> variance_histogram(np.random.default_rng(0).standard_normal((500, 4))).sum()
    np.int64(4)
    """
    X = check_matrix(X, min_rows=1)
    edges = np.asarray(edges, dtype=np.float64)
    var = np.asarray(X, dtype=np.float64).var(axis=0)
    clipped = np.clip(var, edges[0], np.nextafter(edges[-1], -np.inf))
    counts, _ = np.histogram(clipped, bins=edges)
    return counts


def anisotropy(X, *, n_pairs: int = 2000, seed: int | np.random.Generator | None = 0) -> float:
    """Mean cosine similarity between random pairs of distinct rows (Ethayarajh, 2019).

    A high value means that all representations point in a similar direction (a narrow
    cone), which inflates any cosine-based comparison; isotropic zero-mean data scores
    about 0. Rows with zero norm have no direction and are left out of the pairs.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    n_pairs : int, default=2000
        Number of random ordered pairs (drawn with replacement, the two rows distinct).
    seed : int, Generator or None, default=0
        Seed of the pair sampling.

    Returns
    -------
    float
        Mean cosine in ``[-1, 1]``; NaN when fewer than two rows have a non-zero norm.

    References
    ----------
    K. Ethayarajh, "How contextual are contextualized word representations? Comparing
    the geometry of BERT, ELMo, and GPT-2 embeddings", EMNLP 2019.

    Examples
    --------
    >>> import numpy as np
    >>> anisotropy(np.ones((5, 3)))
    1.0
    """
    X = check_matrix(X, min_rows=1)
    n_pairs = check_int(n_pairs, "n_pairs", low=1)
    Xf = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(Xf, axis=1)
    rows = np.flatnonzero(norms > 0)
    if len(rows) < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(rows), size=n_pairs)
    j = rng.integers(0, len(rows) - 1, size=n_pairs)
    j = j + (j >= i)  # uniform over the other rows
    a, b = rows[i], rows[j]
    cos = np.einsum("ij,ij->i", Xf[a], Xf[b]) / (norms[a] * norms[b])
    return float(np.clip(cos, -1.0, 1.0).mean())


def activation_statistics(
    X, *, n_pairs: int = 2000, seed: int | np.random.Generator | None = 0
) -> dict[str, float]:
    """All statistics of :func:`featstats_table` for one layer.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    n_pairs : int, default=2000
        Row pairs for :func:`anisotropy`.
    seed : int, Generator or None, default=0
        Seed for :func:`anisotropy`.

    Returns
    -------
    dict of str to float
        ``{statistic name: value}`` in the order of the table (see module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> stats = activation_statistics(np.random.default_rng(0).standard_normal((50, 4)))
    >>> len(stats), round(stats["var_top10"], 6)
    (47, 1.0)
    """
    X = check_matrix(X, min_rows=1)
    Xf = np.asarray(X, dtype=np.float64)
    s = _singular_values(Xf, center=True)
    stats = {"mean": float(Xf.mean()), "std": float(Xf.std())}
    counts = variance_histogram(Xf)
    stats.update({f"var_hist_count_{b:02d}": float(c) for b, c in enumerate(counts)})
    stats.update({f"var_hist_edge_{b:02d}": float(e) for b, e in enumerate(VAR_HIST_EDGES)})
    shares = _variance_shares_from_singular_values(s, (1, 10))
    stats["var_top1"], stats["var_top10"] = shares[1], shares[10]
    stats["effective_rank"] = _effective_rank_from_singular_values(s)
    stats["anisotropy"] = anisotropy(Xf, n_pairs=n_pairs, seed=seed)
    return stats


def featstats_table(
    layers: Mapping[str, np.ndarray],
    *,
    model: str,
    seed: int = 0,
    n_pairs: int,
    n_jobs: int | None = 1,
    progress: bool = True,
) -> pd.DataFrame:
    """Tidy table of label-free activation statistics for every layer.

    Parameters
    ----------
    layers : dict of str to array-like of shape (n_samples, n_features)
        Layer name -> activations; all layers share the same rows.
    model : str
        Model name written to the ``model`` column.
    seed : int, default=0
        Seed of the anisotropy pair sampling (the same pairs of rows for every layer).
    n_pairs : int, default=2000
        Row pairs for the anisotropy estimate.
    n_jobs : int or None, default=1
        Layers side by side in worker processes (:mod:`layerwise.analyses.layer_tasks`).
    progress : bool, default=True
        Show a progress bar on stderr.

    Returns
    -------
    pandas.DataFrame
        Columns ``model, layer, statistic, value``; one row per layer and statistic
        (statistic names in the module docstring).

    References
    ----------
    Roy & Vetterli (2007), see :func:`effective_rank`; Ethayarajh (2019), see
    :func:`anisotropy`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> layers = {"layer.0": rng.standard_normal((40, 8)), "layer.1": rng.standard_normal((40, 8))}
    >>> featstats_table(layers, model="toy", n_pairs=2000, progress=False).shape
    (94, 4)
    """
    check_layer_shapes(layers)
    names = list(layers)
    stats = layer_tasks.map_layers(_layer_statistics, layers, names, n_jobs=n_jobs,
                                   progress=progress, desc="featstats", n_pairs=n_pairs,
                                   seed=seed)
    rows = [(model, layer, name, value)
            for layer, layer_stats in zip(names, stats, strict=True)
            for name, value in layer_stats.items()]
    return pd.DataFrame(rows, columns=list(FEATSTATS_COLUMNS))


def _layer_statistics(layers: Mapping[str, np.ndarray], layer: str, *, n_pairs: int,
                      seed) -> dict[str, float]:
    """:func:`activation_statistics` of one layer, read here (one task of the table): a
    memory-mapped layer is let go before the next."""
    return activation_statistics(check_layer(layers, layer), n_pairs=n_pairs, seed=seed)
