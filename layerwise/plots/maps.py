"""2-D embeddings (PCA, t-SNE, UMAP) of one model's layers, coloured by a label.

Input: the embedding table (columns ``model, layer, span, pooling, method, row, x, y,
explained_variance`` plus one column per label). Rows of the grid are methods, columns are
layers; the ``top_n`` most frequent classes get their own colour, the rest (and missing
labels) are drawn grey as "other".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from layerwise.plots import style

__all__ = ["embedding_grid"]

METHOD_NAMES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
OTHER = "other"


def _as_text(labels: pd.Series) -> pd.Series:
    """Labels as class names; missing stays NaN, and ids read back from a TSV as floats
    (because of missing values) are written as integers (7.0 -> "7")."""
    def text(x):
        if isinstance(x, float | np.floating) and float(x).is_integer():
            return str(int(x))
        return str(x)
    return labels.map(text, na_action="ignore").astype(object)


def _categories(labels: pd.Series, top_n: int) -> tuple[list[str], dict, str]:
    """The ``top_n`` most frequent classes, the point count per class after folding the
    others (and missing labels) into "other", and what "other" holds."""
    missing = int(labels.isna().sum())
    lab = labels.dropna()
    counts = lab.value_counts()
    keep = sorted(counts.index[:top_n].tolist(), key=lambda c: (-counts[c], c))
    n_folded = len(counts) - len(keep)
    folded = lab.where(lab.isin(keep), OTHER).value_counts().to_dict()
    if missing:
        folded[OTHER] = folded.get(OTHER, 0) + missing
    what = [f"{n_folded} more class{'es' if n_folded > 1 else ''}"] if n_folded else []
    what += ["no label"] if missing else []
    return keep, folded, " or ".join(what)


def _fold(labels: pd.Series, keep: list[str]) -> np.ndarray:
    """Each label as its class name if kept, else "other" (missing labels too)."""
    return labels.where(labels.isin(keep), OTHER).to_numpy(dtype=object)


@style.themed
def embedding_grid(df: pd.DataFrame, out: str | Path, *, corpus: str, model: str, span: str,
                   pooling: str, label: str, layers: list[str] | None = None,
                   max_layers: int = 6, methods: list[str] | None = None, top_n: int = 10,
                   return_fig: bool = False):
    """Scatter plots of 2-D embeddings: rows = methods, columns = layers, colour = ``label``.

    Parameters
    ----------
    df : DataFrame
        Embedding table; rows of ``model``, ``span`` and ``pooling`` are used.
    out : path
        PNG to write (``.pdf``: PDF plus a PNG beside it).
    corpus, model, span, pooling : str
        Select the rows and name the figure.
    label : str
        Label column to colour by.
    layers : list of str, optional
        Layers (columns) to show; default: those present, evenly thinned to ``max_layers``
        (first and last kept).
    methods : list of str, optional
        Methods (rows) to show; default: every method present (pca, tsne, umap order).
    top_n : int
        Classes with their own colour; the others are grouped as "other".
    return_fig : bool
        Also return the (open) figure: ``(path, fig)``.
    """
    if label not in df.columns and "layer" in df.columns:  # dropped by the analysis
        return style.note_figure(
            out, style.title(f"2-D maps by {label}", corpus=corpus, model=model, span=span,
                             pooling=pooling),
            f"Label {label!r} has fewer than two classes among these rows (e.g. gender in a "
            "corpus of one gender):\nthere is nothing to colour by.", return_fig=return_fig)
    if label not in df.columns:
        raise ValueError(f"label column {label!r} not in the embedding table "
                         f"(columns: {', '.join(map(str, df.columns))})")
    d = style.filter_rows(df, model=model, span=span, pooling=pooling)
    d = d.assign(layer=d["layer"].astype(str), method=d["method"].astype(str),
                 x=pd.to_numeric(d["x"], errors="coerce"),
                 y=pd.to_numeric(d["y"], errors="coerce"))
    d = d[np.isfinite(d["x"]) & np.isfinite(d["y"])]
    present = d["method"].unique().tolist()
    order = [m for m in METHOD_NAMES if m in present] + sorted(set(present) - set(METHOD_NAMES))
    methods = [m for m in (order if methods is None else methods) if m in present]
    d = d[d["method"].isin(methods)]
    all_layers = style.sort_layers(d["layer"])
    layers = (style.pick_evenly(all_layers, max_layers) if layers is None
              else [x for x in layers if x in all_layers])
    d = d[d["layer"].isin(layers)]
    if d.empty:
        raise ValueError(f"no embeddings to plot for model {model!r}, span {span!r}, "
                         f"pooling {pooling!r}")

    # classes are counted over distinct rows (each row appears once per method and layer)
    points = d.drop_duplicates("row") if "row" in d.columns else d
    keep, counts, other_what = _categories(_as_text(points[label]), top_n)
    d = d.assign(_cat=_fold(_as_text(d[label]), keep))
    colours = dict(zip(keep, style.qualitative(len(keep)), strict=True))
    colours[OTHER] = style.MISSING_COLOUR

    nrows, ncols = len(methods), len(layers)
    fig = style.new_figure(ncols * 2.35 + 1.9, nrows * 2.45 + 0.9)
    gs = fig.add_gridspec(nrows, ncols)
    n_points = d.groupby(["method", "layer"]).size().max()
    size = float(np.clip(3000 / max(n_points, 1), 1.5, 25))
    for r, method in enumerate(methods):
        for c, layer in enumerate(layers):
            cell = d[(d["method"] == method) & (d["layer"] == layer)]
            if cell.empty:  # leave the grid cell blank rather than draw an empty axes
                continue
            ax = fig.add_subplot(gs[r, c])
            # one scatter per panel; "other" drawn first, underneath the named classes
            cell = cell.iloc[np.argsort(cell["_cat"].to_numpy() != OTHER, kind="stable")]
            ax.scatter(cell["x"], cell["y"], s=size, c=[colours[c] for c in cell["_cat"]],
                       alpha=0.75, linewidths=0, rasterized=True)
            name = METHOD_NAMES.get(method, method)
            ttl = f"{layer} · {name}"
            ev = (pd.to_numeric(cell["explained_variance"], errors="coerce").to_numpy(float)
                  if "explained_variance" in cell.columns else np.array([]))
            if method == "pca" and np.isfinite(ev).any():
                share = float(np.nanmean(ev))
                share = 100 * share if share <= 1 else share  # a fraction, or already in %
                ttl += f"\n2 PCs explain {share:.1f}% of variance"
            ax.set_title(ttl, fontsize=8.5)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.spines[["top", "right"]].set_visible(True)
            axis = "PC" if method == "pca" else f"{name} "
            ax.set_xlabel(f"{axis}1", fontsize=7.5, labelpad=1)
            ax.set_ylabel(f"{axis}2", fontsize=7.5, labelpad=1)
    handles = [Line2D([], [], linestyle="", marker="o", markersize=6, color=colours[c],
                      label=f"{c} ({counts.get(c, 0)})") for c in keep]
    if OTHER in counts:
        handles.append(Line2D([], [], linestyle="", marker="o", markersize=6,
                              color=colours[OTHER],
                              label=f"other: {other_what} ({counts[OTHER]})"))
    fig.legend(handles=handles, loc="outside right center", title=f"{label} (points)",
               frameon=False)
    n = style.n_label(d["n_rows"] if "n_rows" in d.columns else [len(points)])
    fig.suptitle(style.title(f"2-D embeddings coloured by {label} ({n} rows)", corpus=corpus,
                             model=model, span=span, pooling=pooling))
    return style.finish(fig, out, return_fig=return_fig)
