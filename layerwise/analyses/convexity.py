"""Graph convexity of class regions in a layer's representation space.

A class region is convex in the graph sense when the shortest path between two members
of the class, along a nearest-neighbour graph of all points, stays inside the class.
Tětková et al. (2023) use the share of same-class points on such paths as a measure of
how "concept-like" a representation is; Dorszewski et al. (2024) track it per layer of
speech models and use it to prune layers.

Procedure (per layer and label):

1. Euclidean k-NN graph (``k=10``), exact (scikit-learn: brute force on BLAS at layer
   widths, a tree in few dimensions; ``benchmarks/bench_scale.py`` compares it with
   pynndescent), symmetrised as the union of the directed edges, edge weight = Euclidean
   distance (:func:`knn_graph`).
2. Per class, up to ``max_pairs`` ordered pairs of distinct members: all pairs when there
   are at most that many; otherwise ``ceil(max_pairs / (m - 1))`` sources of the ``m``
   members, drawn without replacement, each paired with every other member (the last with
   a random part of them). One Dijkstra run scores all pairs of a source, so few sources
   keep the cost down.
3. Dijkstra from the sampled sources only, in chunks of sources so that no
   ``n x n`` matrix is ever held; each shortest path is rebuilt from the predecessors.
4. Path score: 1 for a path of <= 2 vertices (a direct edge), otherwise the share of the
   interior vertices (both endpoints excluded) that belong to the class; 0 when the two
   points are not connected.
5. Per class: mean score x 100, its standard error x 100 and the number of pairs; and
   ``__all__``: the mean over all sampled pairs of all classes.

At corpus size (:func:`convexity_table`) a label with thousands of classes (words, phones)
keeps its classes with at least ``min_count`` rows, at most the ``max_classes`` most frequent;
the graph holds the rows of the kept classes, at most ``max_rows`` of them, a seeded sample
stratified by utterance and label (:func:`layerwise.analyses.subsample.rows`), the same for every layer.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits

from layerwise.analyses import layer_tasks, subsample
from layerwise.analyses.validation import check_int, check_label_frame, check_labels, check_matrix

__all__ = [
    "CONVEXITY_COLUMNS",
    "POOLED_CLASS",
    "convexity_table",
    "graph_convexity",
    "knn_graph",
]

#: Columns of :func:`convexity_table`.
CONVEXITY_COLUMNS = (
    "model", "layer", "span", "pooling", "label", "class", "value", "sem", "n_pairs", "n_rows",
    "min_count", "max_classes",
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
    k = check_int(k, "k", low=1)
    if k >= X.shape[0]:
        warnings.warn(
            f"k={k} needs more than {X.shape[0]} rows; using k={X.shape[0] - 1}",
            UserWarning,
            stacklevel=2,
        )
        k = X.shape[0] - 1
    # one thread: scikit-learn splits the distance computation by thread count, and a
    # near-tie may then flip, so the graph (and the table) would depend on the job's cores
    with threadpool_limits(limits=1):
        graph = NearestNeighbors(n_neighbors=k).fit(X).kneighbors_graph(mode="distance")
    graph = graph.astype(np.float64)
    graph.data = np.maximum(graph.data, np.finfo(np.float64).tiny)
    return sp.csr_matrix(graph.maximum(graph.T))


def _sample_pairs(
    codes: np.ndarray, classes: np.ndarray, *, max_pairs: int, seed, name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ordered same-class pairs of distinct points: (class code, source, target) arrays.

    Whole sources are sampled (module docstring, step 2). Classes with fewer than two members
    have no pair and are skipped with a warning.
    """
    rng = np.random.default_rng(seed)
    pair_class, src, dst, skipped = [], [], [], []
    for c in range(len(classes)):
        members = np.flatnonzero(codes == c)
        m = len(members)
        if m < 2:
            skipped.append(classes[c])
            continue
        if m * (m - 1) <= max_pairs:
            first = np.repeat(np.arange(m), m - 1)
            rest = np.tile(np.arange(m - 1), m)
        else:  # whole sources: one Dijkstra run scores all pairs of a source
            n_sources = -(-max_pairs // (m - 1))
            first = np.repeat(rng.choice(m, size=n_sources, replace=False), m - 1)[:max_pairs]
            rest = np.tile(np.arange(m - 1), n_sources)
            rest[-(m - 1):] = rng.permutation(m - 1)  # the last source's part is random
            rest = rest[:max_pairs]
        second = rest + (rest >= first)  # skip the diagonal
        pair_class.append(np.full(len(first), c))
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
    max_pairs = check_int(max_pairs, "max_pairs", low=1)
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


@dataclass
class _Graph:
    """The rows of one graph and the pairs scored on it, for labels that share those rows."""

    rows: np.ndarray
    names: list[str]
    classes: list[np.ndarray]
    codes: np.ndarray  # (labels, rows)
    pair_class: list[np.ndarray]
    src: np.ndarray
    dst: np.ndarray
    which: np.ndarray


def _graphs(labels_df, labelings, *, limited, min_count, max_classes, max_rows, max_pairs,
            seed) -> list[_Graph]:
    """One graph per distinct row set: labels without dropped classes share all the rows."""
    masks: dict[bytes, tuple[np.ndarray, list[str]]] = {}
    for name, labels in labelings.items():
        mask = np.ones(len(labels), dtype=bool)
        if name in limited:
            mask = subsample.kept_classes(labels, min_count=min_count, max_classes=max_classes)
        if mask.sum() < 2:
            warnings.warn(f"{name}: no class has {min_count} rows; no convexity",
                          UserWarning, stacklevel=3)
            continue
        masks.setdefault(np.packbits(mask).tobytes(), (np.flatnonzero(mask), []))[1].append(name)
    graphs = []
    for candidates, names in masks.values():
        strata = [c for c in ("utt_id", *names) if c in labels_df.columns]
        rows = candidates[subsample.rows(labels_df.iloc[candidates], max_rows, seed,
                                         stratify=strata)]
        classes, codes, pairs = [], [], []
        for index, name in enumerate(names):
            label_classes, label_codes = np.unique(labelings[name][rows], return_inverse=True)
            classes.append(label_classes)
            codes.append(label_codes)
            pair_class, src, dst = _sample_pairs(
                label_codes, label_classes, max_pairs=max_pairs, seed=seed, name=name
            )
            pairs.append((pair_class, src, dst, np.full(len(src), index, dtype=np.intp)))
        graphs.append(_Graph(rows, names, classes, np.vstack(codes), [p[0] for p in pairs],
                             *(np.concatenate([p[i] for p in pairs]) for i in (1, 2, 3))))
    return graphs


def convexity_table(
    layers: Mapping[str, np.ndarray],
    labels_df: pd.DataFrame,
    *,
    label_columns: Sequence[str] | str,
    model: str,
    span: str,
    pooling: str,
    k: int,
    max_pairs: int,
    max_rows: int,
    min_count: int,
    max_classes: int,
    limited: Sequence[str] = (),
    seed: int = 0,
    n_jobs: int | None = 1,
    progress: bool = True,
) -> pd.DataFrame:
    """Tidy table of graph convexity per layer, label and class, on a stated sample of rows.

    Each label's graph holds the rows of its kept classes (all classes unless the label is
    ``limited``), at most ``max_rows`` of them, sampled by :func:`layerwise.analyses.subsample.rows`
    (seeded, stratified by ``utt_id`` when ``labels_df`` has it, and by the label). Rows and
    pairs depend only on ``labels_df`` and ``seed``, so they are the same at every layer;
    labels with the same rows share one k-NN graph and one chunked Dijkstra run per layer.
    Values equal :func:`graph_convexity` on each layer's sampled rows.

    Parameters
    ----------
    layers : dict of str to array-like of shape (n_samples, n_features)
        Layer name -> representations; all layers share the same rows. Only the sampled rows
        are read (a :func:`layerwise.analyses.subsample.take` selection stays lazy).
    labels_df : pandas.DataFrame of n_samples rows
        One column per label (string values); ``utt_id`` (and ``start_s``, ``end_s``) when
        present identify the rows for the sample.
    label_columns : sequence of str or str
        Columns of ``labels_df`` to analyse.
    model, span, pooling : str
        Written to the identically named columns.
    k : int, default=10
        Neighbours of the k-NN graph.
    max_pairs : int, default=5000
        Most ordered same-class pairs per class.
    max_rows : int, default=5000
        Most rows of a graph (the cost grows with their square).
    min_count : int, default=20
        Classes of a ``limited`` label with fewer rows are left out.
    max_classes : int, default=100
        At most this many classes of a ``limited`` label are kept, the most frequent.
    limited : sequence of str, default=()
        Labels whose classes ``min_count`` and ``max_classes`` limit. The workflow limits
        the span's unit labels (word, phone): thousands of classes, most with a handful of
        rows.
    seed : int, default=0
        Seed of the row sample and of the pair sampling.
    n_jobs : int or None, default=1
        Layers side by side in worker processes (:mod:`layerwise.analyses.layer_tasks`).
    progress : bool, default=True
        Show a progress bar on stderr.

    Returns
    -------
    pandas.DataFrame
        Columns ``model, layer, span, pooling, label, class, value, sem, n_pairs, n_rows,
        min_count, max_classes``; ``class == "__all__"`` is the pooled row of each layer and
        label, ``n_rows`` the rows of the graph, ``min_count``/``max_classes`` the limits
        applied (NaN for a label not limited). Empty (with these columns) when
        ``label_columns`` is empty.

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
    ...                 pooling="mean", k=10, max_pairs=5000, max_rows=5000, min_count=20,
    ...                 max_classes=100, progress=False).shape
    (4, 12)
    """
    n_rows = subsample.shared_rows(layers)
    labelings = check_label_frame(labels_df, label_columns=label_columns, n_rows=n_rows)
    max_pairs = check_int(max_pairs, "max_pairs", low=1)
    max_rows = check_int(max_rows, "max_rows", low=2)
    min_count = check_int(min_count, "min_count", low=2)
    max_classes = check_int(max_classes, "max_classes", low=1)
    limited = {limited} if isinstance(limited, str) else set(limited)
    if not labelings:
        return pd.DataFrame(columns=list(CONVEXITY_COLUMNS))
    graphs = _graphs(labels_df, labelings, limited=limited, min_count=min_count,
                     max_classes=max_classes, max_rows=max_rows, max_pairs=max_pairs, seed=seed)
    limits = {name: (min_count, max_classes) if name in limited else (np.nan, np.nan)
              for name in labelings}
    names = list(layers)
    by_layer = layer_tasks.map_layers(_layer_summaries, layers, names, n_jobs=n_jobs,
                                      progress=progress, desc="convexity", graphs=graphs, k=k,
                                      limits=limits)
    rows = [(model, layer, span, pooling, name, *e)
            for layer, summaries in zip(names, by_layer, strict=True)
            for name in labelings  # in the order asked for
            for e in summaries.get(name, [])]
    return pd.DataFrame(rows, columns=list(CONVEXITY_COLUMNS))


def _layer_summaries(layers: Mapping[str, np.ndarray], layer: str, *, graphs: list[_Graph],
                     k: int, limits: dict) -> dict[str, list[tuple]]:
    """Each label's summary rows at one layer, its sampled rows read here (one task of
    :func:`convexity_table`)."""
    summaries = {}
    for g in graphs:
        X = check_matrix(subsample.take(layers, g.rows)[layer], name=f"layers[{layer!r}]",
                         min_rows=2)
        scores = _path_scores(knn_graph(X, k=k), g.src, g.dst, g.codes, g.which)
        for index, name in enumerate(g.names):
            summary = _summarise(scores[g.which == index], g.pair_class[index],
                                 g.classes[index])
            summaries[name] = [(*entry, len(g.rows), *limits[name]) for entry in summary]
    return summaries
