"""Label-free activation statistics of one model, per layer.

Input: the feature-statistics table (columns ``model, layer, statistic, value``; statistics
``mean, std, var_top1, var_top10, effective_rank, anisotropy`` and the per-dimension variance
histogram ``var_hist_count_00..19`` / ``var_hist_edge_00..20``, see
:mod:`layerwise.analyses.featstats`). Each panel is drawn only when its statistics are present.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from layerwise.plots import style

__all__ = ["default_hist_layers", "feature_stats", "featstats_matrix", "layer_axis"]


def featstats_matrix(df: pd.DataFrame, model: str) -> pd.DataFrame:
    """The model's statistics as a layer x statistic table, layers in model order."""
    d = style.filter_rows(df, model=model)
    if d.empty:
        return pd.DataFrame()
    wide = (d.assign(layer=d["layer"].astype(str),
                     value=pd.to_numeric(d["value"], errors="coerce"))
            .pivot_table(index="layer", columns="statistic", values="value", aggfunc="mean",
                         dropna=False))
    return wide.reindex(style.sort_layers(wide.index))


def _has(wide: pd.DataFrame, *cols: str) -> bool:
    return all(c in wide.columns and wide[c].notna().any() for c in cols)


def layer_axis(ax: Axes, layers: list[str], *, xlabel: bool = True) -> None:
    """Categorical layer x axis: short thinned labels, dotted lines between layer groups."""
    style.set_layer_ticks(ax, layers, "x")
    for b in style.layer_group_boundaries(layers):
        ax.axvline(b, color="0.6", linewidth=0.8, linestyle=":")
    ax.set_xlim(-0.7, len(layers) - 0.3)
    if xlabel:
        ax.set_xlabel("layer")
    ax.grid(alpha=0.3)


def default_hist_layers(layers: list[str]) -> list[str]:
    """First, middle and last transformer layer (or of all layers, without transformer)."""
    pool = [x for x in layers if style.layer_index(x) is not None] or list(layers)
    return list(dict.fromkeys(style.pick_evenly(pool, 3)))


@style.themed
def feature_stats(df: pd.DataFrame, out: str | Path, *, corpus: str, model: str,
                  hist_layers: list[str] | None = None, return_fig: bool = False):
    """Activation statistics per layer of one model.

    Panels: mean +- std of the activations (error bars); effective rank; anisotropy;
    variance share of the top 1 / top 10 principal components; histograms of the
    per-dimension variance (log scale) for ``hist_layers``.

    Parameters
    ----------
    df : DataFrame
        Feature-statistics table; rows of ``model`` are used.
    out : path
        PNG to write (``.pdf``: PDF plus a PNG beside it).
    corpus, model : str
        Select the rows and name the figure.
    hist_layers : list of str, optional
        Layers whose variance histogram is drawn (default: first, middle and last
        transformer layer); names absent from the table are skipped.
    return_fig : bool
        Also return the (open) figure: ``(path, fig)``.
    """
    wide = featstats_matrix(df, model)
    if wide.empty:
        raise ValueError(f"no feature statistics for model {model!r}")
    layers = list(wide.index)
    x = np.arange(len(layers))
    count_cols = sorted(c for c in wide.columns if str(c).startswith("var_hist_count_"))
    edge_cols = sorted(c for c in wide.columns if str(c).startswith("var_hist_edge_"))
    has_hist = bool(count_cols) and len(edge_cols) == len(count_cols) + 1
    if has_hist:
        hist_ok = [name for name in layers if wide.loc[name, count_cols].notna().all()
                   and wide.loc[name, edge_cols].notna().all()]
        wanted = default_hist_layers(hist_ok) if hist_layers is None else list(hist_layers)
        hist_layers = [name for name in wanted if name in hist_ok]
        has_hist = bool(hist_layers)

    panels = []
    if _has(wide, "mean"):
        panels.append("meanstd")
    if _has(wide, "effective_rank"):
        panels.append("effective_rank")
    if _has(wide, "anisotropy"):
        panels.append("anisotropy")
    if _has(wide, "var_top1") or _has(wide, "var_top10"):
        panels.append("top_pc")
    if has_hist:
        panels.append("hist")
    if not panels:
        raise ValueError(f"no known statistics for model {model!r}")

    ncols = 3 if len(panels) != 4 else 2
    fig = style.new_figure(min(ncols, len(panels)) * 3.8 + 0.3,
                           -(-len(panels) // ncols) * 3.0 + 0.9)
    # the histogram (always last) stretches over the free cells of its row
    axes = style.panel_grid(fig, len(panels), ncols, span_last=has_hist)
    ncols = min(ncols, len(panels))
    for i, (ax, panel) in enumerate(zip(axes, panels, strict=True)):
        if panel == "meanstd":
            std = wide["std"].to_numpy(dtype=float) if "std" in wide else None
            ax.errorbar(x, wide["mean"].to_numpy(dtype=float), yerr=std, fmt="o-",
                        markersize=3, linewidth=1.2, capsize=2, color="C0", ecolor="C0",
                        elinewidth=0.8)
            ax.axhline(0, color="0.5", linewidth=0.6)
            ax.set_title("mean ± std of all activations" if std is not None
                         else "mean of all activations")
            ax.set_ylabel("activation value")
            layer_axis(ax, layers, xlabel=style.is_bottom(i, len(panels), ncols))
        elif panel == "effective_rank":
            ax.plot(x, wide["effective_rank"].to_numpy(dtype=float), "o-", markersize=3,
                    color="C2")
            ax.set_title("effective rank")
            ax.set_ylabel("effective rank (dimensions)")
            ax.set_ylim(bottom=0)
            layer_axis(ax, layers, xlabel=style.is_bottom(i, len(panels), ncols))
        elif panel == "anisotropy":
            ax.plot(x, wide["anisotropy"].to_numpy(dtype=float), "o-", markersize=3,
                    color="C3")
            ax.set_title("anisotropy (mean cosine of random pairs)")
            ax.set_ylabel("mean cosine")
            lo = np.nanmin(wide["anisotropy"].to_numpy(dtype=float))
            ax.set_ylim(min(0.0, lo - 0.05), 1.02)
            layer_axis(ax, layers, xlabel=style.is_bottom(i, len(panels), ncols))
        elif panel == "top_pc":
            for col, lab, c in (("var_top1", "top 1 PC", "C4"), ("var_top10", "top 10 PCs",
                                                                  "C1")):
                if _has(wide, col):
                    ax.plot(x, wide[col].to_numpy(dtype=float), "o-", markersize=3, color=c,
                            label=lab)
            ax.set_title("variance share of top principal components")
            ax.set_ylabel("share of total variance")
            ax.set_ylim(0, 1.02)
            ax.legend(loc="best")
            layer_axis(ax, layers, xlabel=style.is_bottom(i, len(panels), ncols))
        else:
            _histograms(ax, wide, hist_layers, count_cols, edge_cols)
    fig.suptitle(style.title("Activation statistics per layer", corpus=corpus, model=model))
    return style.finish(fig, out, return_fig=return_fig)


def _histograms(ax: Axes, wide: pd.DataFrame, layers: list[str], count_cols: list[str],
                edge_cols: list[str]) -> None:
    cmap = style.sequential_cmap("plasma")
    for i, layer in enumerate(layers):
        counts = wide.loc[layer, count_cols].to_numpy(dtype=float)
        edges = wide.loc[layer, edge_cols].to_numpy(dtype=float)
        colour = cmap(0.85 * i / max(len(layers) - 1, 1))
        ax.stairs(counts, edges, color=colour, linewidth=1.5, label=layer)
    ax.set_xscale("log")
    ax.set_title("per-dimension variance")
    ax.set_xlabel("variance of a dimension (log; outer bins hold clipped values)")
    ax.set_ylabel("number of dimensions")
    ax.legend(title="layer", loc="best")
    ax.grid(alpha=0.3)
