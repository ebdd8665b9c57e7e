"""Layer x layer similarity heatmaps, within one model and between two models.

Input: the similarity table (columns ``model_a, layer_a, model_b, layer_b, span, pooling,
metric, value, ci_low, ci_high, n_rows``). One panel per metric that has at least one value;
all panels share one colour bar with the fixed range 0-1 (values outside are clipped and the
colour bar gets an arrow), NaN cells are grey and explained in the legend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from layerwise.plots import style

__all__ = ["cross_model_heatmaps", "layer_heatmaps"]


@style.themed
def layer_heatmaps(df: pd.DataFrame, out: str | Path, *, corpus: str, model: str, span: str,
                   pooling: str, metrics: list[str] | None = None, return_fig: bool = False):
    """Within-model similarity: one layer x layer heatmap per available metric.

    Parameters
    ----------
    df : DataFrame
        Similarity table; rows with ``model_a == model_b == model`` and the given ``span``
        and ``pooling`` are used.
    out : path
        PNG to write (``.pdf``: PDF plus a PNG beside it).
    corpus, model, span, pooling : str
        Select the rows and name the figure.
    metrics : list of str, optional
        Metrics to show (default: every metric with at least one finite value).
    return_fig : bool
        Also return the (open) figure: ``(path, fig)``.

    Returns
    -------
    Path, or (Path, Figure) with ``return_fig``.
    """
    d = style.filter_rows(df, model_a=model, model_b=model, span=span, pooling=pooling)
    ttl = style.title("Layer x layer similarity", corpus=corpus, model=model, span=span,
                      pooling=pooling, rows=_n_rows(d))
    return _heatmaps(d, out, ttl, ylabel=f"layer ({model})", xlabel=f"layer ({model})",
                     metrics=metrics, return_fig=return_fig)


@style.themed
def cross_model_heatmaps(df: pd.DataFrame, out: str | Path, *, corpus: str, model_a: str,
                         model_b: str, span: str, pooling: str, metrics: list[str] | None = None,
                         return_fig: bool = False):
    """Between-model similarity: rows are ``model_a``'s layers, columns ``model_b``'s.

    Rows stored the other way round (``model_a`` and ``model_b`` swapped in the table) are
    used, transposed, when the requested orientation is absent. Other parameters and the
    return value as :func:`layer_heatmaps`.
    """
    d = style.filter_rows(df, model_a=model_a, model_b=model_b, span=span, pooling=pooling)
    if d.empty:
        d = style.filter_rows(df, model_a=model_b, model_b=model_a, span=span, pooling=pooling)
        d = d.rename(columns={"model_a": "model_b", "model_b": "model_a",
                              "layer_a": "layer_b", "layer_b": "layer_a"})
    ttl = style.title("Cross-model layer similarity", corpus=corpus,
                      model=f"{model_a} (rows) vs {model_b} (columns)", span=span,
                      pooling=pooling, rows=_n_rows(d))
    return _heatmaps(d, out, ttl, ylabel=f"layer ({model_a})", xlabel=f"layer ({model_b})",
                     metrics=metrics, return_fig=return_fig)


def _n_rows(d: pd.DataFrame):
    """The number of rows compared, when the table names one."""
    if "n_rows" not in d.columns:
        return None
    n = pd.to_numeric(d["n_rows"], errors="coerce").dropna().unique()
    return int(n[0]) if len(n) == 1 else None


def _available_metrics(d: pd.DataFrame, metrics: list[str] | None) -> list[str]:
    has_value = d.groupby("metric")["value"].apply(lambda v: np.isfinite(
        pd.to_numeric(v, errors="coerce").to_numpy(dtype=float)).any())
    present = [m for m in has_value.index if has_value[m]]
    order = list(style.SIMILARITY_METRICS) + sorted(set(present) - set(style.SIMILARITY_METRICS))
    wanted = order if metrics is None else list(metrics)
    return [m for m in wanted if m in present]


def _matrix(d: pd.DataFrame, rows: list[str], cols: list[str]) -> np.ndarray:
    values = pd.to_numeric(d["value"], errors="coerce")
    grid = (d.assign(value=values).groupby(["layer_a", "layer_b"])["value"].mean()
            .unstack("layer_b").reindex(index=rows, columns=cols))
    return grid.to_numpy(dtype=float)


def _heatmaps(d: pd.DataFrame, out, ttl: str, *, ylabel: str, xlabel: str,
              metrics: list[str] | None, return_fig: bool):
    d = d.assign(layer_a=d["layer_a"].astype(str), layer_b=d["layer_b"].astype(str))
    shown = _available_metrics(d, metrics)
    if not shown:
        raise ValueError(f"no similarity values to plot for: {ttl.splitlines()[1]}")
    rows = style.sort_layers(d["layer_a"])
    cols = style.sort_layers(d["layer_b"])
    mats = {m: _matrix(d[d["metric"] == m], rows, cols) for m in shown}

    n = len(shown)
    ncols = {1: 1, 2: 2, 3: 3, 4: 2}.get(n, 4 if n != 6 else 3)
    nrows = -(-n // ncols)
    side = 3.0 if max(len(rows), len(cols)) > 12 else 2.6
    aspect = len(rows) / max(len(cols), 1)
    panel_w, panel_h = side * min(1.0, 1 / aspect), side * min(1.0, aspect)
    fig = style.new_figure(ncols * (panel_w + 0.5) + 1.2, nrows * (panel_h + 0.7) + 1.3)
    axes = style.panel_grid(fig, n, ncols)
    cmap = style.sequential_cmap("viridis")
    any_nan = False
    lo = min(np.nanmin(m) if np.isfinite(m).any() else 0.0 for m in mats.values())
    hi = max(np.nanmax(m) if np.isfinite(m).any() else 1.0 for m in mats.values())
    for i, (ax, metric) in enumerate(zip(axes, shown, strict=True)):
        M = mats[metric]
        any_nan |= bool(np.isnan(M).any())
        im = ax.imshow(np.ma.masked_invalid(M), origin="lower", cmap=cmap, vmin=0.0, vmax=1.0,
                       interpolation="nearest", aspect="auto")
        # the exact metrics stand on every row, cka_rbf / mutual_knn on a sample: n per panel
        rows_behind = d.loc[d["metric"] == metric, "n_rows"] if "n_rows" in d.columns else []
        ax.set_title("\n".join(filter(None, [style.SIMILARITY_METRICS.get(metric, metric),
                                              style.n_label(rows_behind)])))
        style.set_layer_ticks(ax, cols, "x")
        style.set_layer_ticks(ax, rows, "y")
        for b in style.layer_group_boundaries(cols):
            ax.axvline(b, color="white", linewidth=0.8)
        for b in style.layer_group_boundaries(rows):
            ax.axhline(b, color="white", linewidth=0.8)
        ax.spines[["top", "right"]].set_visible(True)
        if i % ncols == 0:
            ax.set_ylabel(ylabel)
        if i + ncols >= n:  # no panel below
            ax.set_xlabel(xlabel)
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max",
              (True, True): "both"}[(lo < 0.0, hi > 1.0)]
    fig.colorbar(im, ax=axes, shrink=min(0.9, 0.45 + 0.25 * nrows), extend=extend,
                 label="similarity (fixed scale 0 to 1)")
    fig.suptitle(ttl)
    if any_nan:
        fig.legend(handles=[style.missing_patch("no value (NaN or pair not computed)")],
                   loc="outside lower center", frameon=False)
    return style.finish(fig, out, return_fig=return_fig)
