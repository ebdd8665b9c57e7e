"""How well unsupervised k-means clusters of a layer line up with a label.

Following Pasad et al. (2023), who take the measure from HuBERT (Hsu et al., 2021):
each layer is clustered with (mini-batch) k-means, and the clusters are compared with a
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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.cluster import MiniBatchKMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.metrics.cluster import contingency_matrix

from layerwise.featstats import (
    check_label_frame,
    check_labels,
    check_layers,
    check_matrix,
    check_positive_int,
    progress_bar,
)

__all__ = [
    "CLUSTERING_COLUMNS",
    "cluster_scores",
    "clustering_table",
    "kmeans_clusters",
    "label_normalized_mi",
    "purity",
]

#: Columns of :func:`clustering_table`.
CLUSTERING_COLUMNS = ("model", "layer", "span", "pooling", "label", "metric", "value", "k")


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


def kmeans_clusters(X, *, k: int, seed: int | None = 0, n_init: int = 3) -> np.ndarray:
    """Cluster the rows of ``X`` with mini-batch k-means.

    Mini-batch k-means keeps the per-layer cost low for many layers and rows; the best of
    ``n_init`` seeded initialisations is kept.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    k : int
        Number of clusters, ``1 <= k <= n_samples``.
    seed : int or None, default=0
        ``random_state`` of the k-means initialisation and batches.
    n_init : int, default=3
        Initialisations tried.

    Returns
    -------
    ndarray of shape (n_samples,)
        Cluster index of each row, in ``[0, k)``.

    References
    ----------
    D. Sculley, "Web-scale k-means clustering", WWW 2010.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0], [0.1], [10.0], [10.1]])
    >>> clusters = kmeans_clusters(X, k=2)
    >>> bool(clusters[0] == clusters[1] != clusters[2] == clusters[3])
    True
    """
    X = check_matrix(X, min_rows=1)
    k = check_positive_int(k, name="k")
    if k > X.shape[0]:
        raise ValueError(f"k={k} exceeds the number of rows ({X.shape[0]})")
    n_init = check_positive_int(n_init, name="n_init")
    model = MiniBatchKMeans(
        n_clusters=k, n_init=n_init, random_state=seed, batch_size=min(1024, X.shape[0])
    )
    return model.fit_predict(X)


def clustering_table(
    layers: Mapping[str, np.ndarray],
    labels_df: pd.DataFrame,
    *,
    label_columns: Sequence[str] | str,
    model: str,
    span: str,
    pooling: str,
    k: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Tidy table of k-means/label agreement per layer and label (Pasad et al., 2023).

    Parameters
    ----------
    layers : dict of str to array-like of shape (n_samples, n_features)
        Layer name -> representations; all layers share the same rows.
    labels_df : pandas.DataFrame of n_samples rows
        One column per label (string values).
    label_columns : sequence of str or str
        Columns of ``labels_df`` to compare with.
    model, span, pooling : str
        Written to the identically named columns.
    k : int or None, default=None
        Number of clusters. None uses the number of classes of each label (one
        clustering per distinct class count); an int uses one clustering per layer for
        all labels. Capped at the number of rows.
    seed : int, default=0
        ``random_state`` of k-means.
    progress : bool, default=True
        Show a progress bar on stderr.

    Returns
    -------
    pandas.DataFrame
        Columns ``model, layer, span, pooling, label, metric, value, k`` with ``metric``
        in ``nmi, ari, purity`` (see :func:`cluster_scores`); empty when
        ``label_columns`` is empty.

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
    ...                  pooling="mean", progress=False).shape
    (3, 8)
    """
    layers = check_layers(layers)
    n_rows = next(iter(layers.values())).shape[0]
    labelings = check_label_frame(labels_df, label_columns=label_columns, n_rows=n_rows)
    if k is not None:
        k = check_positive_int(k, name="k")
    if not labelings:
        return pd.DataFrame(columns=list(CLUSTERING_COLUMNS))
    k_of = {
        name: min(n_rows, k if k is not None else len(np.unique(labels)))
        for name, labels in labelings.items()
    }
    rows = []
    for layer, X in progress_bar(layers.items(), progress=progress, desc="clustering"):
        clusterings: dict[int, np.ndarray] = {}
        for name, labels in labelings.items():
            n_clusters = k_of[name]
            if n_clusters not in clusterings:
                clusterings[n_clusters] = kmeans_clusters(X, k=n_clusters, seed=seed)
            scores = cluster_scores(labels, clusterings[n_clusters])
            rows.extend(
                (model, layer, span, pooling, name, metric, value, n_clusters)
                for metric, value in scores.items()
            )
    return pd.DataFrame(rows, columns=list(CLUSTERING_COLUMNS))
