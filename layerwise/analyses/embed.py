"""2-D embeddings of selected layers, for scatter plots coloured by label.

Three views with different trade-offs: PCA is linear and faithful to global variance
(its 2-component explained-variance ratio says how much the plot leaves out); t-SNE
(van der Maaten & Hinton, 2008) and UMAP (McInnes et al., 2018) preserve local
neighbourhoods and show cluster structure but distort distances between clusters. UMAP
is used only when the optional ``umap-learn`` package is installed.

t-SNE and UMAP grow faster than the rows, so every method runs on one stated sample of at
most ``max_rows`` rows (:func:`layerwise.analyses.subsample.rows`), the same for every layer and
method. t-SNE runs through openTSNE on one thread, with its FFT-accelerated gradient from
:data:`FFT_MIN_ROWS` rows on: at 5,000 word rows x 768 it measured 2.4 times faster than
scikit-learn's Barnes-Hut on one thread, and 5.2 times faster than on two, whose OpenMP threads
stall on a busy machine (``benchmarks/bench_scale.py`` compares them); scikit-learn's is the
fallback when openTSNE is not installed.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from layerwise.analyses import layer_tasks, subsample
from layerwise.analyses.validation import check_int, check_matrix
from layerwise.vocabulary import layer_index

__all__ = [
    "EMBED_COLUMNS",
    "FFT_MIN_ROWS",
    "METHODS",
    "TSNE_BACKENDS",
    "embed_2d",
    "embedding_table",
    "pca_2d",
    "opentsne_available",
    "resolve_layer_positions",
    "tsne_2d",
    "tsne_perplexity",
    "umap_2d",
    "umap_available",
]

logger = logging.getLogger(__name__)

#: Fixed columns of :func:`embedding_table` (the label columns follow).
EMBED_COLUMNS = (
    "model", "layer", "span", "pooling", "method", "row", "x", "y", "explained_variance",
    "n_rows",
)  # fmt: skip

#: Embedding methods known to :func:`embed_2d`.
METHODS = ("pca", "tsne", "umap")
#: t-SNE implementations known to :func:`tsne_2d`.
TSNE_BACKENDS = ("opentsne", "sklearn")
#: From this many rows openTSNE's FFT gradient beats its Barnes-Hut one, whose cost grows
#: faster; the FFT's interpolation grid costs seconds whatever the rows (measured on one
#: thread: 5 s against 0.6 s at 40 rows, 9-11 s against 7-9 s at 2,703 utterance rows,
#: 10-11 s against 18-19 s at 5,000 word rows of 768 dims).
FFT_MIN_ROWS = 4_000

_DEFAULT_LAYERS = ("first", "middle", "last")


def resolve_layer_positions(
    names: Sequence[str], spec: Sequence[str] | str | None = None
) -> list[str]:
    """Resolve names and transformer-layer positions (first/middle/last) to layer names.

    Parameters
    ----------
    names : sequence of str
        Available layer names, e.g. ``["cnn.0", "proj", "layer.0", ..., "layer.12"]``.
    spec : sequence of str, str or None, default=None
        Layer names and/or the keywords ``"first"``, ``"middle"`` and ``"last"``, which
        refer to the transformer layers ``layer.<i>`` in numeric order (middle = index
        ``(count - 1) // 2``). None means ``["first", "middle", "last"]``.

    Returns
    -------
    list of str
        Selected names in the order of ``spec``, without duplicates.

    Examples
    --------
    >>> resolve_layer_positions(["cnn.0", "layer.10", "layer.2", "layer.0", "layer.1", "layer.3"])
    ['layer.0', 'layer.2', 'layer.10']
    >>> resolve_layer_positions(["cnn.0", "layer.0"], ["cnn.0", "last"])
    ['cnn.0', 'layer.0']
    """
    names = [str(name) for name in names]
    spec = list(_DEFAULT_LAYERS) if spec is None else [spec] if isinstance(spec, str) else spec
    numbered = sorted(
        (i, name) for name in names if (i := layer_index(name)) is not None
    )
    transformer = [name for _, name in numbered]
    keywords = {}
    if transformer:
        keywords = {
            "first": transformer[0],
            "middle": transformer[(len(transformer) - 1) // 2],
            "last": transformer[-1],
        }
    chosen: list[str] = []
    for item in spec:
        if item in names:
            name = item
        elif item in keywords:
            name = keywords[item]
        elif item in _DEFAULT_LAYERS:
            raise ValueError(f"spec uses {item!r} but there are no 'layer.<i>' names in {names}")
        else:
            raise ValueError(f"spec entry {item!r} is neither a layer name nor first/middle/last")
        if name not in chosen:
            chosen.append(name)
    return chosen


def pca_2d(X, *, seed: int | None = 0) -> tuple[np.ndarray, float]:
    """First two principal components of ``X``.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        At least 2 rows and 2 columns.
    seed : int or None, default=0
        Passed to PCA (the exact LAPACK solver is used, so it does not change results).

    Returns
    -------
    coords : ndarray of shape (n_samples, 2)
    explained_variance : float
        Share of the total variance carried by the two components, in ``[0, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> coords, ev = pca_2d(np.random.default_rng(0).standard_normal((20, 2)))
    >>> coords.shape, round(ev, 6)
    ((20, 2), 1.0)
    """
    X = check_matrix(X, min_rows=2, min_cols=2)
    pca = PCA(n_components=2, svd_solver="full", random_state=seed)
    coords = pca.fit_transform(X)
    return coords, float(pca.explained_variance_ratio_.sum())


def tsne_perplexity(n_samples: int) -> float:
    """Default t-SNE perplexity: 30, or ``(n_samples - 1) / 3`` when rows are few.

    t-SNE needs perplexity < n_samples and calibrates each point on about
    ``3 * perplexity`` neighbours, so small sets need a smaller perplexity.

    Examples
    --------
    >>> tsne_perplexity(5000), tsne_perplexity(10)
    (30.0, 3.0)
    """
    return float(min(30.0, (n_samples - 1) / 3))


def opentsne_available() -> bool:
    """Whether the ``openTSNE`` package can be imported."""
    return importlib.util.find_spec("openTSNE") is not None


def tsne_2d(X, *, seed: int | None = 0, perplexity: float | None = None,
            backend: str | None = None) -> np.ndarray:
    """2-D t-SNE embedding (PCA initialisation).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        At least 3 rows.
    seed : int or None, default=0
        ``random_state`` of t-SNE.
    perplexity : float or None, default=None
        None uses :func:`tsne_perplexity`.
    backend : {"opentsne", "sklearn"} or None, default=None
        openTSNE on one thread (results do not depend on the machine's cores), FFT gradient
        from :data:`FFT_MIN_ROWS` rows on, Barnes-Hut below; or scikit-learn's Barnes-Hut.
        None: openTSNE when it is installed.

    Returns
    -------
    ndarray of shape (n_samples, 2)

    References
    ----------
    L. van der Maaten and G. Hinton, "Visualizing data using t-SNE", JMLR 9, 2008.
    G. C. Linderman, M. Rachh, J. G. Hoskins, S. Steinerberger and Y. Kluger, "Fast
    interpolation-based t-SNE for improved visualization of single-cell RNA-seq data",
    Nature Methods 16, 2019.
    P. G. Poličar, M. Stražar and B. Zupan, "openTSNE: a modular Python library for t-SNE
    dimensionality reduction and embedding", Journal of Statistical Software 109, 2024.

    Examples
    --------
    >>> import numpy as np
    >>> tsne_2d(np.random.default_rng(0).standard_normal((10, 4))).shape
    (10, 2)
    """
    X = check_matrix(X, min_rows=3, min_cols=2)
    perplexity = tsne_perplexity(X.shape[0]) if perplexity is None else float(perplexity)
    if backend is None:
        backend = "opentsne" if opentsne_available() else "sklearn"
    if backend == "opentsne":
        import openTSNE

        gradient = "fft" if X.shape[0] >= FFT_MIN_ROWS else "bh"
        tsne = openTSNE.TSNE(n_components=2, perplexity=perplexity, initialization="pca",
                             negative_gradient_method=gradient, random_state=seed, n_jobs=1)
        return np.asarray(tsne.fit(X))
    if backend == "sklearn":
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
        return tsne.fit_transform(X)
    raise ValueError(f"backend must be one of {TSNE_BACKENDS} or None, got {backend!r}")


def umap_available() -> bool:
    """Whether the optional ``umap-learn`` package can be imported."""
    return importlib.util.find_spec("umap") is not None


def umap_2d(X, *, seed: int | None = 0, n_neighbors: int = 15) -> np.ndarray:
    """2-D UMAP embedding (needs the optional ``umap-learn`` package).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        At least 3 rows.
    seed : int or None, default=0
        ``random_state`` of UMAP (which makes it single-threaded but reproducible).
    n_neighbors : int, default=15
        Reduced to ``n_samples - 1`` for small sets.

    Returns
    -------
    ndarray of shape (n_samples, 2)

    Raises
    ------
    ImportError
        When ``umap-learn`` is not installed.

    References
    ----------
    L. McInnes, J. Healy and J. Melville, "UMAP: Uniform manifold approximation and
    projection for dimension reduction", arXiv:1802.03426, 2018.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).standard_normal((30, 4))
    >>> umap_2d(X).shape if umap_available() else (30, 2)
    (30, 2)
    """
    X = check_matrix(X, min_rows=3, min_cols=2)
    n_neighbors = check_int(n_neighbors, "n_neighbors", low=2)
    import umap  # optional dependency

    reducer = umap.UMAP(
        n_components=2, n_neighbors=min(n_neighbors, X.shape[0] - 1), random_state=seed
    )
    return np.asarray(reducer.fit_transform(X))


def embed_2d(X, method: str, *, seed: int | None = 0) -> tuple[np.ndarray, float]:
    """2-D embedding by ``method`` with its explained variance (NaN unless PCA).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    method : {"pca", "tsne", "umap"}
    seed : int or None, default=0

    Returns
    -------
    coords : ndarray of shape (n_samples, 2)
    explained_variance : float
        See :func:`pca_2d`; NaN for t-SNE and UMAP.

    Examples
    --------
    >>> import numpy as np
    >>> coords, ev = embed_2d(np.random.default_rng(0).standard_normal((12, 3)), "tsne")
    >>> coords.shape, bool(np.isnan(ev))
    ((12, 2), True)
    """
    if method == "pca":
        return pca_2d(X, seed=seed)
    if method == "tsne":
        return tsne_2d(X, seed=seed), float("nan")
    if method == "umap":
        return umap_2d(X, seed=seed), float("nan")
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def embedding_table(
    layers: Mapping[str, np.ndarray],
    labels_df: pd.DataFrame,
    *,
    label_columns: Sequence[str] | None = None,
    layers_to_embed: Sequence[str] | str | None,
    methods: Sequence[str],
    model: str,
    span: str,
    pooling: str,
    seed: int = 0,
    max_rows: int,
    n_jobs: int | None = 1,
    progress: bool = True,
) -> pd.DataFrame:
    """Long table of 2-D embeddings of some layers, with every row's labels.

    Parameters
    ----------
    layers : dict of str to array-like of shape (n_samples, n_features)
        Layer name -> representations; all layers share the same rows. Only the sampled
        rows of the embedded layers are read.
    labels_df : pandas.DataFrame of n_samples rows
        The rows' labels; ``utt_id`` (and ``start_s``, ``end_s``) when present identify the
        rows for the sample.
    label_columns : sequence of str or None, default=None
        Columns of ``labels_df`` copied to the output (e.g. for colouring plots); None: all.
        The sample is stratified by them and by ``utt_id``.
    layers_to_embed : sequence of str, str or None, default=None
        Layer names and/or ``first``/``middle``/``last`` (see :func:`resolve_layer_positions`);
        None embeds the first, middle and last transformer layers.
    methods : sequence of {"pca", "tsne", "umap"}, default=("pca", "tsne", "umap")
        UMAP is skipped, with a logged warning, when ``umap-learn`` is not installed.
    model, span, pooling : str
        Written to the identically named columns.
    seed : int, default=0
        Seed of the row subsample and of the embeddings.
    max_rows : int, default=5000
        Most rows embedded: a sample by :func:`layerwise.analyses.subsample.rows` beyond this (the
        same rows for every layer and method), since t-SNE and UMAP grow superlinearly.
    n_jobs : int or None, default=1
        Layers side by side in worker processes (:mod:`layerwise.analyses.layer_tasks`).
    progress : bool, default=True
        Show a progress bar on stderr.

    Returns
    -------
    pandas.DataFrame
        Columns ``model, layer, span, pooling, method, row, x, y, explained_variance,
        n_rows`` followed by the label columns; ``row`` is the row index in the input
        matrices, ``explained_variance`` the 2-component PCA share (NaN for the others),
        ``n_rows`` the rows embedded.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> layers = {f"layer.{i}": rng.standard_normal((20, 4)) for i in range(3)}
    >>> labels_df = pd.DataFrame({"spk": np.repeat(["a", "b"], 10)})
    >>> table = embedding_table(layers, labels_df, methods=["pca"], model="m", span="word",
    ...                         pooling="mean", layers_to_embed=None, max_rows=5000,
    ...                         progress=False)
    >>> table.shape, list(table.columns[-2:])
    ((60, 11), ['n_rows', 'spk'])
    """
    n_rows = subsample.shared_rows(layers)
    if not isinstance(labels_df, pd.DataFrame) or len(labels_df) != n_rows:
        raise ValueError(f"labels_df must be a DataFrame with {n_rows} rows (one per layer row)")
    columns = list(labels_df.columns if label_columns is None else label_columns)
    missing = [c for c in columns if c not in labels_df.columns]
    if missing:
        raise ValueError(f"label_columns {missing} are not columns of labels_df")
    clash = sorted(set(EMBED_COLUMNS) & set(map(str, columns)))
    if clash:
        raise ValueError(f"labels_df columns {clash} clash with the output columns")
    methods = list(methods)
    if not methods or any(method not in METHODS for method in methods):
        raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {methods}")
    max_rows = check_int(max_rows, "max_rows", low=3)
    chosen = resolve_layer_positions(list(layers), layers_to_embed)
    if "umap" in methods and not umap_available():
        logger.warning("umap-learn is not installed; skipping UMAP embeddings")
        methods = [method for method in methods if method != "umap"]

    strata = [c for c in ("utt_id", *columns) if c in labels_df.columns]
    rows = subsample.rows(labels_df, max_rows, seed, stratify=list(dict.fromkeys(strata)))
    sampled = subsample.take(layers, rows)
    labels = labels_df[columns].iloc[rows].reset_index(drop=True)
    embedded = layer_tasks.map_layers(_layer_embeddings, sampled, chosen, n_jobs=n_jobs,
                                      progress=progress, desc="embed", methods=methods,
                                      seed=seed)
    frames = []
    for layer, by_method in zip(chosen, embedded, strict=True):
        for method, (coords, explained) in zip(methods, by_method, strict=True):
            fixed = pd.DataFrame(
                {
                    "model": model, "layer": layer, "span": span, "pooling": pooling,
                    "method": method, "row": rows, "x": coords[:, 0], "y": coords[:, 1],
                    "explained_variance": explained, "n_rows": len(rows),
                }
            )  # fmt: skip
            frames.append(pd.concat([fixed, labels], axis=1))
    if not frames:
        return pd.DataFrame(columns=[*EMBED_COLUMNS, *columns])
    return pd.concat(frames, ignore_index=True)


def _layer_embeddings(layers: Mapping[str, np.ndarray], layer: str, *, methods: Sequence[str],
                      seed) -> list[tuple[np.ndarray, float]]:
    """:func:`embed_2d` of one layer's sampled rows by each method, read here (one task of
    :func:`embedding_table`)."""
    X = check_matrix(layers[layer], name=f"layers[{layer!r}]")
    return [embed_2d(X, method, seed=seed) for method in methods]
