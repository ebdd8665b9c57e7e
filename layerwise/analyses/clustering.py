"""How well unsupervised k-means clusters of a layer line up with a label.

Following Pasad et al. (2023), who take the measure from HuBERT (Hsu et al., 2021):
each layer is clustered by mini-batch k-means into a fixed number of clusters (500 by
default, not the number of classes, which is thousands for words), fitted on a training
split of the rows; the held-out rows are assigned to clusters, which are compared with a
label by

``nmi``
    label-normalised mutual information ``I(cluster; label) / H(label)``: the fraction
    of the label's uncertainty removed by knowing the cluster ("PNMI" when the label is
    the phone). This is *not* sklearn's ``normalized_mutual_info_score``, which divides
    by a mean of both entropies and so also penalises having more clusters than classes.
``ari``
    adjusted Rand index (Hubert & Arabie, 1985), from scikit-learn.
``purity``
    share of rows whose cluster's majority label is their own label.

The split is grouped: all rows of an utterance (or of a ``group`` value, e.g. a speaker) lie
on one side, so that held-out rows are not near-copies of training rows (overlapping frames,
a word repeated within an utterance).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.cluster import MiniBatchKMeans, kmeans_plusplus
from sklearn.metrics import adjusted_rand_score
from sklearn.metrics.cluster import contingency_matrix
from sklearn.model_selection import GroupShuffleSplit
from threadpoolctl import threadpool_limits

from layerwise.analyses import layer_tasks, subsample
from layerwise.analyses.validation import check_int, check_label_frame, check_labels, check_matrix

__all__ = [
    "CLUSTERING_COLUMNS",
    "cluster_scores",
    "clustering_table",
    "fit_kmeans",
    "held_out_split",
    "kmeans_clusters",
    "label_normalized_mi",
    "purity",
]

#: Columns of :func:`clustering_table`.
CLUSTERING_COLUMNS = (
    "model", "layer", "span", "pooling", "label", "metric", "value", "chance", "k", "n_rows",
)  # fmt: skip


def _contingency(labels, clusters) -> np.ndarray:
    """Counts of (label, cluster) pairs: rows = label values, columns = clusters."""
    labels = check_labels(labels, n_rows=len(labels), name="labels")
    clusters = check_labels(clusters, n_rows=len(labels), name="clusters")
    if len(labels) == 0:
        raise ValueError("labels must not be empty")
    return contingency_matrix(labels, clusters)


def label_normalized_mi(labels, clusters) -> float:
    """Mutual information between clusters and labels divided by the label entropy.

    Parameters
    ----------
    labels : array-like of shape (n_samples,)
        Reference classes.
    clusters : array-like of shape (n_samples,)
        Cluster assignments.

    Returns
    -------
    float
        ``I(cluster; label) / H(label)`` in ``[0, 1]``: 1 when the cluster determines the
        label, 0 when they are independent; NaN when the label is constant (H = 0).

    References
    ----------
    W.-N. Hsu, B. Bolte, Y.-H. H. Tsai, K. Lakhotia, R. Salakhutdinov and A. Mohamed,
    "HuBERT: Self-supervised speech representation learning by masked prediction of
    hidden units", IEEE/ACM TASLP 29, 2021 (phone-normalised mutual information).
    A. Pasad, B. Shi and K. Livescu, "Comparative layer-wise analysis of self-supervised
    speech models", ICASSP 2023.

    Examples
    --------
    >>> label_normalized_mi(["a", "a", "b", "b"], [0, 0, 1, 1])
    1.0
    >>> label_normalized_mi(["a", "b", "a", "b"], [0, 0, 1, 1])
    0.0
    """
    counts = _contingency(labels, clusters).astype(np.float64)
    p = counts / counts.sum()
    p_label = p.sum(axis=1)
    p_cluster = p.sum(axis=0)
    h_label = -(p_label * np.log(p_label)).sum()
    if h_label <= 0:
        return float("nan")
    nz = p > 0
    mi = (p[nz] * np.log(p[nz] / np.outer(p_label, p_cluster)[nz])).sum()
    return float(np.clip(mi / h_label, 0.0, 1.0))


def purity(labels, clusters) -> float:
    """Share of rows that carry the majority label of their cluster.

    Parameters
    ----------
    labels, clusters : array-like of shape (n_samples,)

    Returns
    -------
    float
        Value in ``(0, 1]``; 1 when every cluster holds a single label (so one cluster
        per row also scores 1: read it together with ``k``).

    Examples
    --------
    >>> purity(["a", "a", "b", "b", "b"], [0, 0, 0, 1, 1])
    0.8
    """
    counts = _contingency(labels, clusters)
    return float(counts.max(axis=0).sum() / counts.sum())


def cluster_scores(labels, clusters) -> dict[str, float]:
    """``{"nmi", "ari", "purity"}`` of a clustering against a label.

    Parameters
    ----------
    labels, clusters : array-like of shape (n_samples,)

    Returns
    -------
    dict of str to float
        See :func:`label_normalized_mi`, :func:`sklearn.metrics.adjusted_rand_score`
        (``[-0.5, 1]``, 0 for chance) and :func:`purity`.

    References
    ----------
    L. Hubert and P. Arabie, "Comparing partitions", Journal of Classification 2, 1985.

    Examples
    --------
    >>> cluster_scores(["a", "a", "b"], [1, 1, 0])
    {'nmi': 1.0, 'ari': 1.0, 'purity': 1.0}
    """
    labels = check_labels(labels, n_rows=len(labels), name="labels")
    clusters = check_labels(clusters, n_rows=len(labels), name="clusters")
    return {
        "nmi": label_normalized_mi(labels, clusters),
        "ari": float(adjusted_rand_score(labels, clusters)),
        "purity": purity(labels, clusters),
    }


def fit_kmeans(X, *, k: int, seed: int | None = 0, n_init: int = 1) -> MiniBatchKMeans:
    """Mini-batch k-means fitted to the rows of ``X`` (k-means++ initialisation).

    Mini-batch k-means keeps the per-layer cost low for many layers and rows: its steps stop
    when the smoothed inertia no longer improves, whatever the number of rows. The best of
    ``n_init`` seeded initialisations is kept. The fit runs on one thread (OpenMP and BLAS):
    k-means++ multiplies 8 candidates by chunks of rows, products too small for threads
    (OpenBLAS on 2 threads: 9.3 s for 2,000 of them against 1.2 s on one; a whole fit of 2,162
    utterance rows into 500 clusters took 15 s), while a fit of 43,000 x 768 word rows costs
    7 % more on one thread (2.75 s against 2.57 s); and threads that wait for each other stall
    on a busy machine. The k-means++ seeds are computed in float64 (:func:`_seeds`).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    k : int
        Number of clusters, ``1 <= k <= n_samples``.
    seed : int or None, default=0
        ``random_state`` of the initialisation and batches.
    n_init : int, default=1
        Initialisations tried.

    Returns
    -------
    sklearn.cluster.MiniBatchKMeans
        The fitted model (``predict`` assigns rows to clusters).

    References
    ----------
    D. Sculley, "Web-scale k-means clustering", WWW 2010.
    """
    X = check_matrix(X, min_rows=1)
    k = check_int(k, "k", low=1)
    if k > X.shape[0]:
        raise ValueError(f"k={k} exceeds the number of rows ({X.shape[0]})")
    n_init = check_int(n_init, "n_init", low=1)
    model = MiniBatchKMeans(n_clusters=k, init=_seeds, n_init=n_init, random_state=seed,
                            batch_size=min(1024, X.shape[0]), compute_labels=False)
    with threadpool_limits(limits=1):
        return model.fit(X)


def _seeds(X: np.ndarray, n_clusters: int, random_state) -> np.ndarray:
    """k-means++ seeds of the rows ``X`` (scikit-learn's, on its sample of the rows), computed
    in float64. For float32 rows scikit-learn computes the same distances in float64 chunk
    by chunk, 2-4 times slower (4.3 s against 1.0 s for 2,162 x 768 rows into 500 clusters);
    the mini-batch steps stay in the rows' type, where float64 would double their traffic."""
    centers, _ = kmeans_plusplus(np.asarray(X, dtype=np.float64), n_clusters,
                                 random_state=random_state)
    return centers.astype(X.dtype)


def kmeans_clusters(X, *, k: int, seed: int | None = 0, n_init: int = 1) -> np.ndarray:
    """Cluster index in ``[0, k)`` of each row of ``X``, by :func:`fit_kmeans` on ``X``.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0], [0.1], [10.0], [10.1]])
    >>> clusters = kmeans_clusters(X, k=2)
    >>> bool(clusters[0] == clusters[1] != clusters[2] == clusters[3])
    True
    """
    return fit_kmeans(X, k=k, seed=seed, n_init=n_init).predict(check_matrix(X))


def held_out_split(groups, *, held_out: float, seed: int | None = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, held-out) row numbers; all rows of a group lie on one side.

    ``round(held_out * groups)`` of the groups are held out (at least one, and at least one
    is left to train on), drawn by ``seed`` among the sorted group values: the split depends
    on the groups alone, not on the row order or the layer.

    Examples
    --------
    >>> train, test = held_out_split(list("aabbccdd"), held_out=0.25, seed=0)
    >>> len(train), len(test)
    (6, 2)
    """
    groups = np.asarray(groups)
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ValueError(f"a held-out split needs at least 2 groups, got {n_groups}")
    if not 0 < held_out < 1:
        raise ValueError(f"held_out must be in (0, 1), got {held_out!r}")
    n_test = min(max(1, round(held_out * n_groups)), n_groups - 1)
    split = GroupShuffleSplit(n_splits=1, test_size=n_test, random_state=seed)
    train, test = next(split.split(groups, groups=groups))
    return np.sort(train), np.sort(test)


def clustering_table(
    layers: Mapping[str, np.ndarray],
    labels_df: pd.DataFrame,
    *,
    label_columns: Sequence[str] | str,
    model: str,
    span: str,
    pooling: str,
    n_clusters: int,
    held_out: float,
    group: str | None,
    seed: int = 0,
    n_jobs: int | None = 1,
    progress: bool = True,
) -> pd.DataFrame:
    """Tidy table of held-out k-means/label agreement per layer and label (Pasad et al., 2023).

    Per layer, :func:`fit_kmeans` on the training rows of :func:`held_out_split` (the same
    split at every layer) assigns the held-out rows to clusters, which are scored against
    every label by :func:`cluster_scores`.

    Parameters
    ----------
    layers : dict of str to array-like of shape (n_samples, n_features)
        Layer name -> representations; all layers share the same rows. One layer is read
        at a time (a :func:`layerwise.analyses.subsample.take` selection stays lazy).
    labels_df : pandas.DataFrame of n_samples rows
        One column per label (string values), and the grouping column.
    label_columns : sequence of str or str
        Columns of ``labels_df`` to compare with.
    model, span, pooling : str
        Written to the identically named columns.
    n_clusters : int, default=500
        Clusters of k-means, capped at the number of training rows.
    held_out : float, default=0.2
        Share of the groups whose rows are held out and scored.
    group : str or None, default=None
        Column of ``labels_df`` whose values stay on one side of the split. None, or a
        column that is absent: ``utt_id`` (without it, each row is its own group).
    seed : int, default=0
        Seed of the split and of k-means.
    n_jobs : int or None, default=1
        Layers side by side in worker processes (:mod:`layerwise.analyses.layer_tasks`).
    progress : bool, default=True
        Show a progress bar on stderr.

    Returns
    -------
    pandas.DataFrame
        Columns ``model, layer, span, pooling, label, metric, value, chance, k, n_rows``
        with ``metric`` in ``nmi, ari, purity`` (see :func:`cluster_scores`), ``chance`` the
        same metric for the same clusters shuffled over the held-out rows (what unrelated
        clusters of these sizes score: the plug-in NMI of 500 clusters against thousands of
        word types is far above 0), ``k`` the number of clusters and ``n_rows`` the held-out
        rows scored; empty when ``label_columns`` is empty.

    References
    ----------
    A. Pasad, B. Shi and K. Livescu, "Comparative layer-wise analysis of self-supervised
    speech models", ICASSP 2023.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> layers = {"layer.0": rng.standard_normal((30, 4))}
    >>> labels_df = pd.DataFrame({"spk": np.repeat(["a", "b", "c"], 10)})
    >>> clustering_table(layers, labels_df, label_columns="spk", model="m", span="word",
    ...                  pooling="mean", n_clusters=3, held_out=0.2, group=None,
    ...                  progress=False).shape
    (3, 10)
    """
    n_rows = subsample.shared_rows(layers)
    labelings = check_label_frame(labels_df, label_columns=label_columns, n_rows=n_rows)
    n_clusters = check_int(n_clusters, "n_clusters", low=1)
    if not labelings:
        return pd.DataFrame(columns=list(CLUSTERING_COLUMNS))
    by = group if group in labels_df.columns else "utt_id"
    groups = labels_df[by].to_numpy() if by in labels_df.columns else np.arange(n_rows)
    train, test = held_out_split(groups, held_out=held_out, seed=seed)
    k = min(n_clusters, len(train))
    shuffle = np.random.default_rng(seed).permutation(len(test))
    names = list(layers)
    assigned = layer_tasks.map_layers(_held_out_clusters, layers, names, n_jobs=n_jobs,
                                      progress=progress, desc="clustering", train=train,
                                      test=test, k=k, seed=seed)
    rows = []
    for layer, clusters in zip(names, assigned, strict=True):
        for name, labels in labelings.items():
            scores = cluster_scores(labels[test], clusters)
            chance = cluster_scores(labels[test], clusters[shuffle])
            rows.extend(
                (model, layer, span, pooling, name, metric, value, chance[metric], k, len(test))
                for metric, value in scores.items()
            )
    return pd.DataFrame(rows, columns=list(CLUSTERING_COLUMNS))


def _held_out_clusters(layers: Mapping[str, np.ndarray], layer: str, *, train: np.ndarray,
                       test: np.ndarray, k: int, seed) -> np.ndarray:
    """The clusters of the held-out rows of one layer, read here (one task of the table)."""
    X = check_matrix(layers[layer], name=f"layers[{layer!r}]")
    return fit_kmeans(X[train], k=k, seed=seed).predict(X[test])
