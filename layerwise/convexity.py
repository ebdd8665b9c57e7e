"""Graph convexity of class regions in a layer's representation space.

A class region is convex in the graph sense when the shortest path between two members
of the class, along a nearest-neighbour graph of all points, stays inside the class.
Tětková et al. (2023) use the share of same-class points on such paths as a measure of
how "concept-like" a representation is; Dorszewski et al. (2024) track it per layer of
speech models and use it to prune layers.

Procedure (per layer and label):

1. Euclidean k-NN graph (``k=10``), symmetrised as the union of the directed edges,
   edge weight = Euclidean distance (:func:`knn_graph`).
2. Per class, up to ``max_pairs`` ordered pairs of distinct members (all pairs when
   there are fewer, otherwise a seeded sample without replacement).
3. Dijkstra from the sampled sources only, in chunks of sources so that no
   ``n x n`` matrix is ever held; each shortest path is rebuilt from the predecessors.
4. Path score: 1 for a path of <= 2 vertices (a direct edge), otherwise the share of the
   interior vertices (both endpoints excluded) that belong to the class; 0 when the two
   points are not connected.
5. Per class: mean score x 100, its standard error x 100 and the number of pairs; and
   ``__all__``: the mean over all sampled pairs of all classes.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra
from sklearn.neighbors import NearestNeighbors

from layerwise.featstats import (
    check_label_frame,
    check_labels,
    check_layers,
    check_matrix,
    check_positive_int,
    progress_bar,
)

__all__ = ["CONVEXITY_COLUMNS", "POOLED_CLASS", "convexity_table", "graph_convexity", "knn_graph"]

#: Columns of :func:`convexity_table`.
CONVEXITY_COLUMNS = (
    "model", "layer", "span", "pooling", "label", "class", "value", "sem", "n_pairs",
)  # fmt: skip

#: Name of the pooled (all classes) row.
POOLED_CLASS = "__all__"

#: Memory allowed for one chunk of Dijkstra output (distances + predecessors).
_CHUNK_BYTES = 256 * 2**20


def knn_graph(X, *, k: int = 10) -> sp.csr_matrix:
    """Symmetric Euclidean k-nearest-neighbour graph.

    Each point is joined to its ``k`` nearest other points; an edge exists when either
    end point lists the other (union), weighted by the Euclidean distance. Zero
    distances (duplicate points) get the smallest positive weight so that the edge is
    kept by the sparse graph routines.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    k : int, default=10
        Neighbours per point; reduced (with a warning) to ``n_samples - 1`` if larger.

    Returns
    -------
    scipy.sparse.csr_matrix of shape (n_samples, n_samples)
        Symmetric, float64 distances, no self loops; about ``n_samples * k`` to
        ``2 * n_samples * k`` stored edges.

    Examples
    --------
    >>> import numpy as np
    >>> knn_graph(np.array([[0.0], [1.0], [3.0]]), k=1).toarray()
    array([[0., 1., 0.],
           [1., 0., 2.],
           [0., 2., 0.]])
    """
    X = check_matrix(X, min_rows=2)
    k = check_positive_int(k, name="k")
    if k >= X.shape[0]:
        warnings.warn(
            f"k={k} needs more than {X.shape[0]} rows; using k={X.shape[0] - 1}",
            UserWarning,
            stacklevel=2,
        )
        k = X.shape[0] - 1
    graph = NearestNeighbors(n_neighbors=k).fit(X).kneighbors_graph(mode="distance")
    graph = graph.astype(np.float64)
    graph.data = np.maximum(graph.data, np.finfo(np.float64).tiny)
    return sp.csr_matrix(graph.maximum(graph.T))


def _sample_pairs(
    codes: np.ndarray, classes: np.ndarray, *, max_pairs: int, seed, name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ordered same-class pairs of distinct points: (class code, source, target) arrays.

    Classes with fewer than two members have no pair and are skipped with a warning.
    """
    rng = np.random.default_rng(seed)
    pair_class, src, dst, skipped = [], [], [], []
    for c in range(len(classes)):
        members = np.flatnonzero(codes == c)
        m = len(members)
        if m < 2:
            skipped.append(classes[c])
            continue
        n_ordered = m * (m - 1)
        if n_ordered <= max_pairs:
            flat = np.arange(n_ordered)
        else:
            flat = np.sort(rng.choice(n_ordered, size=max_pairs, replace=False))
        first = flat // (m - 1)
        rest = flat % (m - 1)
        second = rest + (rest >= first)  # skip the diagonal
        pair_class.append(np.full(len(flat), c))
        src.append(members[first])
        dst.append(members[second])
    if skipped:
        shown = ", ".join(str(c) for c in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        warnings.warn(
            f"{name}: {len(skipped)} class(es) with fewer than 2 members skipped: {shown}",
            UserWarning,
            stacklevel=3,
        )
    if not src:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty, empty
    return np.concatenate(pair_class), np.concatenate(src), np.concatenate(dst)


def _path_scores(
    graph: sp.csr_matrix,
    src: np.ndarray,
    dst: np.ndarray,
    codes: np.ndarray,
    which: np.ndarray,
) -> np.ndarray:
    """Share of interior path vertices that share the class of the source, per pair.

    ``codes`` is (n_labelings, n) and ``which`` picks the labeling of each pair, so that
    one Dijkstra run per layer serves every label. Sources are handled in chunks to keep
    memory at ``O(chunk * n)``.
    """
    n = graph.shape[0]
    scores = np.zeros(len(src), dtype=np.float64)
    if len(src) == 0:
        return scores
    sources = np.unique(src)
    chunk = max(1, _CHUNK_BYTES // (n * 12))  # float64 distances + int32 predecessors
    for start in range(0, len(sources), chunk):
        block = sources[start : start + chunk]
        dist, pred = dijkstra(graph, directed=True, indices=block, return_predecessors=True)
        sel = np.flatnonzero(np.isin(src, block))
        s, t, w = src[sel], dst[sel], which[sel]
        row = np.searchsorted(block, s)
        reachable = np.isfinite(dist[row, t])
        interior = np.zeros(len(sel), dtype=np.int64)
        same = np.zeros(len(sel), dtype=np.int64)
        current = t.copy()
        active = np.flatnonzero(reachable)
        while len(active):  # walk all paths back from their targets at once
            prev = pred[row[active], current[active]]
            inside = prev != s[active]
            active = active[inside]
            prev = prev[inside]
            interior[active] += 1
            same[active] += codes[w[active], prev] == codes[w[active], s[active]]
            current[active] = prev
        share = np.divide(same, interior, out=np.ones(len(sel)), where=interior > 0)
        scores[sel] = np.where(reachable, share, 0.0)
    return scores


def _summarise(scores: np.ndarray, pair_class: np.ndarray, classes: np.ndarray) -> list[tuple]:
    """(class, mean x 100, SEM x 100, n_pairs) per class with pairs, then the pooled row."""

    def row(name, values):
        n = len(values)
        sem = values.std(ddof=1) / np.sqrt(n) if n > 1 else np.nan
        mean = values.mean() if n else np.nan
        return (name, 100.0 * mean, 100.0 * sem, n)

    out = [row(str(classes[c]), scores[pair_class == c]) for c in np.unique(pair_class)]
    out.append(row(POOLED_CLASS, scores))
    return out


def graph_convexity(
    X,
    labels,
    *,
    k: int = 10,
    max_pairs: int = 5000,
    seed: int | np.random.Generator | None = 0,
) -> pd.DataFrame:
    """Graph convexity of every class region (Tětková et al., 2023).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Representations, one row per item.
    labels : array-like of shape (n_samples,)
        Class of each row; any hashable values (strings are fine).
    k : int, default=10
        Neighbours of the k-NN graph (:func:`knn_graph`).
    max_pairs : int, default=5000
        Most ordered same-class pairs per class; all pairs are used when a class has at
        most this many.
    seed : int, Generator or None, default=0
        Seed of the pair sampling.

    Returns
    -------
    pandas.DataFrame
        Columns ``class, value, sem, n_pairs``: one row per class with at least two
        members, then ``__all__`` (all sampled pairs pooled). ``value`` is the mean path
        score in ``[0, 100]`` (100 = every shortest path stays in the class; about
        ``100 x class share`` when labels are unrelated to the geometry), ``sem`` its
        standard error (NaN for a single pair).

    References
    ----------
    L. Tětková, T. Brüsch, T. K. Scheidt, F. M. Mager, R. Ø. Aagaard, J. Foldager,
    T. S. Alstrøm and L. K. Hansen, "On convex decision regions in deep network
    representations", 2023 (arXiv:2305.17154).
    T. Dorszewski, L. Tětková and L. K. Hansen, "Convexity-based pruning of speech
    representation models", 2024 (arXiv:2408.11858).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(0, 0.1, (20, 2)), rng.normal(5, 0.1, (20, 2))])
    >>> labels = np.repeat(["a", "b"], 20)
    >>> graph_convexity(X, labels)["value"].tolist()
    [100.0, 100.0, 100.0]
    """
    X = check_matrix(X, min_rows=2)
    labels = check_labels(labels, n_rows=X.shape[0])
    max_pairs = check_positive_int(max_pairs, name="max_pairs")
    classes, codes = np.unique(labels, return_inverse=True)
    pair_class, src, dst = _sample_pairs(
        codes, classes, max_pairs=max_pairs, seed=seed, name="labels"
    )
    scores = _path_scores(
        knn_graph(X, k=k), src, dst, codes[None, :], np.zeros(len(src), dtype=np.intp)
    )
    return pd.DataFrame(
        _summarise(scores, pair_class, classes), columns=["class", "value", "sem", "n_pairs"]
    )


def convexity_table(
    layers: Mapping[str, np.ndarray],
    labels_df: pd.DataFrame,
    *,
    label_columns: Sequence[str] | str,
    model: str,
    span: str,
    pooling: str,
    k: int = 10,
    max_pairs: int = 5000,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Tidy table of graph convexity per layer, label and class.

    The same pairs are used at every layer (they depend only on the labels and
    ``seed``), and one k-NN graph and one chunked Dijkstra run per layer serve all
    labels. Values equal :func:`graph_convexity` on each layer and label.

    Parameters
    ----------
    layers : dict of str to array-like of shape (n_samples, n_features)
        Layer name -> representations; all layers share the same rows.
    labels_df : pandas.DataFrame of n_samples rows
        One column per label (string values).
    label_columns : sequence of str or str
        Columns of ``labels_df`` to analyse.
    model, span, pooling : str
        Written to the identically named columns.
    k : int, default=10
        Neighbours of the k-NN graph.
    max_pairs : int, default=5000
        Most ordered same-class pairs per class.
    seed : int, default=0
        Seed of the pair sampling.
    progress : bool, default=True
        Show a progress bar on stderr.

    Returns
    -------
    pandas.DataFrame
        Columns ``model, layer, span, pooling, label, class, value, sem, n_pairs``;
        ``class == "__all__"`` is the pooled row of each layer and label. Empty (with
        these columns) when ``label_columns`` is empty.

    References
    ----------
    Tětková et al. (2023); Dorszewski et al. (2024), see :func:`graph_convexity`.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> layers = {"layer.0": rng.standard_normal((30, 4))}
    >>> labels_df = pd.DataFrame({"spk": np.repeat(["a", "b", "c"], 10)})
    >>> convexity_table(layers, labels_df, label_columns=["spk"], model="m", span="word",
    ...                 pooling="mean", progress=False).shape
    (4, 9)
    """
    layers = check_layers(layers, min_rows=2)
    n_rows = next(iter(layers.values())).shape[0]
    labelings = check_label_frame(labels_df, label_columns=label_columns, n_rows=n_rows)
    max_pairs = check_positive_int(max_pairs, name="max_pairs")
    if not labelings:
        return pd.DataFrame(columns=list(CONVEXITY_COLUMNS))
    names = list(labelings)
    classes, codes, pairs = [], [], []
    for index, name in enumerate(names):
        label_classes, label_codes = np.unique(labelings[name], return_inverse=True)
        classes.append(label_classes)
        codes.append(label_codes)
        pair_class, src, dst = _sample_pairs(
            label_codes, label_classes, max_pairs=max_pairs, seed=seed, name=name
        )
        pairs.append((pair_class, src, dst, np.full(len(src), index, dtype=np.intp)))
    src = np.concatenate([p[1] for p in pairs])
    dst = np.concatenate([p[2] for p in pairs])
    which = np.concatenate([p[3] for p in pairs])
    codes = np.vstack(codes)

    rows = []
    for layer, X in progress_bar(layers.items(), progress=progress, desc="convexity"):
        scores = _path_scores(knn_graph(X, k=k), src, dst, codes, which)
        for index, name in enumerate(names):
            summary = _summarise(scores[which == index], pairs[index][0], classes[index])
            rows.extend((model, layer, span, pooling, name, *entry) for entry in summary)
    return pd.DataFrame(rows, columns=list(CONVEXITY_COLUMNS))
