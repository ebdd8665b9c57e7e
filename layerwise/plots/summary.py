"""One page per model: the key per-layer curves side by side on a common layer axis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.lines import Line2D

from layerwise.plots import style
from layerwise.plots.curves import FAMILIES, curve_table, fixed_ylim, panel_keys, panel_title
from layerwise.plots.featstats import featstats_matrix, layer_axis

__all__ = ["model_summary"]

CONTEXT_KEYS = ("span", "pooling")


def _context(df: pd.DataFrame | None, model_cols: dict, span: str | None,
             pooling: str | None) -> tuple[pd.DataFrame, dict]:
    """Rows of the model in one (span, pooling): the given one, else the most frequent."""
    if df is None or not len(df):
        return pd.DataFrame(), {}
    d = style.filter_rows(df, span=span, pooling=pooling, **model_cols)
    keys = [k for k in CONTEXT_KEYS if k in d.columns]
    if d.empty or not keys:
        return d, {}
    sizes = d.groupby(keys, dropna=False).size()
    best = sorted(sizes.index[sizes == sizes.max()], key=str)[0]
    best = best if isinstance(best, tuple) else (best,)
    chosen = dict(zip(keys, best, strict=True))
    return style.filter_rows(d, **chosen), chosen


def _ctx_text(ctx: dict) -> str:
    return " · ".join(str(v) for v in ctx.values())


@style.themed
def model_summary(tables: dict, out: str | Path, *, corpus: str, model: str,
                  span: str | None = None, pooling: str | None = None,
                  similarity_metric: str = "cka_linear", ncols: int = 3,
                  return_fig: bool = False):
    """The key per-layer curves of one model on one page.

    Panels (each only when its table has rows for the model): linear CKA of every layer to
    the last transformer layer and between adjacent layers; probe accuracy, convexity
    (class ``__all__``) and NMI with one line per label; effective rank. All panels share
    the model's layer axis (cnn, proj and transformer layers in model order).

    Parameters
    ----------
    tables : dict
        Any of ``"similarity"``, ``"probes"``, ``"convexity"``, ``"clustering"``,
        ``"featstats"``.
    out : path
        PNG to write (``.pdf``: PDF plus a PNG beside it).
    corpus, model : str
        Select the rows and name the figure.
    span, pooling : str, optional
        Rows to use; default, per table, the most frequent (span, pooling) of the model,
        named in the panel title.
    similarity_metric : str
        Metric of the first panel (default ``cka_linear``).
    return_fig : bool
        Also return the (open) figure: ``(path, fig)``.
    """
    panels = []  # (title, ylabel, ylim, draw(ax, pos) -> handles)
    layers: set[str] = set()

    sim, ctx = _context(tables.get("similarity"), {"model_a": model, "model_b": model},
                        span, pooling)
    sim = style.filter_rows(sim, metric=similarity_metric)
    if len(sim) and np.isfinite(pd.to_numeric(sim["value"], errors="coerce")).any():
        sim = sim.assign(layer_a=sim["layer_a"].astype(str), layer_b=sim["layer_b"].astype(str))
        layers |= set(sim["layer_a"]) | set(sim["layer_b"])
        name = style.SIMILARITY_METRICS.get(similarity_metric, similarity_metric)
        panels.append((f"{name} to last layer / adjacent layers\n({_ctx_text(ctx)})", name,
                       (0.0, 1.0), lambda ax, pos, d=sim: _similarity_panel(ax, pos, d)))

    label_curves = []
    for key, family in (("probes", "probe"), ("convexity", "convexity"),
                        ("clustering", "clustering"), ("cca", "cca")):
        t, ctx = _context(tables.get(key), {"model": model}, span, pooling)
        c = curve_table({key: t}) if len(t) else pd.DataFrame()
        if len(c):
            layers |= set(c["layer"])
            label_curves.append((family, c, ctx))
    labels = sorted({k for f, c, _ in label_curves if f != "cca" for k in c["key"]})
    labels += panel_keys(pd.concat([c for f, c, _ in label_curves if f == "cca"] or
                                    [pd.DataFrame(columns=["family", "key"])]), "cca")
    colours = style.model_colours(labels)
    for family, c, ctx in label_curves:
        ttl, ylabel = panel_title(family, "", c["metric"].unique())
        ttl += f"\n({_ctx_text(ctx)})"
        ylim = FAMILIES[family][2]
        panels.append((ttl, ylabel, ylim,
                       lambda ax, pos, c=c: _label_panel(ax, pos, c, colours)))

    fs = tables.get("featstats")
    wide = featstats_matrix(fs, model) if fs is not None and len(fs) else pd.DataFrame()
    if "effective_rank" in wide.columns and wide["effective_rank"].notna().any():
        er = wide["effective_rank"].dropna()
        layers |= set(er.index)
        panels.append(("effective rank", "effective rank (dimensions)", None,
                       lambda ax, pos, er=er: _rank_panel(ax, pos, er)))
    if not panels:
        raise ValueError(f"nothing to summarise for model {model!r}")

    order = style.sort_layers(layers)
    pos = {x: i for i, x in enumerate(order)}
    ncols = min(ncols, len(panels))
    fig = style.new_figure(ncols * 3.9 + 0.3, -(-len(panels) // ncols) * 3.1 + 1.3)
    axes = style.panel_grid(fig, len(panels), ncols)
    for i, (ax, (ttl, ylabel, ylim, draw)) in enumerate(zip(axes, panels, strict=True)):
        draw(ax, pos)
        ax.set_title(ttl)
        ax.set_ylabel(ylabel)
        if ylim is not None:
            lines = [ln.get_ydata() for ln in ax.get_lines() if len(ln.get_ydata()) > 2]
            fixed_ylim(ax, ylim, np.concatenate(lines) if lines else [])
        layer_axis(ax, order, xlabel=style.is_bottom(i, len(panels), ncols))
    handles = [Line2D([], [], color=colours[k], marker="o", markersize=3, label=k)
               for k in labels]
    with_chance = [f for f, c, _ in label_curves if c["chance"].notna().any()]
    if with_chance:
        handles.append(Line2D([], [], color="0.3", linestyle="--",
                              label=f"chance level ({', '.join(with_chance)})"))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6),
                   frameon=False, title="label / CCA target")
    fig.suptitle(style.title("Model summary", corpus=corpus, model=model, span=span,
                             pooling=pooling))
    return style.finish(fig, out, return_fig=return_fig)


def _similarity_panel(ax: Axes, pos: dict, d: pd.DataFrame) -> None:
    cols = ["value", "ci_low", "ci_high"]
    d = d.assign(**{c: pd.to_numeric(d[c], errors="coerce") for c in cols})
    pairs = d.groupby(["layer_a", "layer_b"])[cols].mean()
    own = style.sort_layers(d["layer_a"])
    transformer = [x for x in own if style.layer_index(x) is not None]
    last = (transformer or own)[-1]
    to_last = pairs.reindex(pd.MultiIndex.from_tuples([(a, last) for a in own]))
    style.band(ax, [pos[x] for x in own], to_last["value"], to_last["ci_low"],
               to_last["ci_high"], "black", label=f"to last layer ({last})")
    if len(own) > 1:
        adj = pairs.reindex(pd.MultiIndex.from_tuples(list(zip(own[:-1], own[1:], strict=True))))
        style.band(ax, [pos[a] + 0.5 for a in own[:-1]], adj["value"], adj["ci_low"],
                   adj["ci_high"], "0.5", label="adjacent layers (i, i+1)", marker="s",
                   linestyle="--")
    ax.legend(loc="best", fontsize=7)


def _label_panel(ax: Axes, pos: dict, c: pd.DataFrame, colours: dict) -> None:
    for key, s in c.groupby("key", sort=True):
        s = s.assign(p=s["layer"].map(pos)).sort_values("p")
        style.band(ax, s["p"], s["value"], s["low"], s["high"], colours[key])
        chance = s["chance"].to_numpy(dtype=float)
        if np.isfinite(chance).any():
            ax.axhline(np.nanmean(chance), color=colours[key], linestyle="--", linewidth=0.9)


def _rank_panel(ax: Axes, pos: dict, er: pd.Series) -> None:
    ax.plot([pos[x] for x in er.index], er.to_numpy(dtype=float), "o-", markersize=3,
            color="0.2")
    ax.set_ylim(bottom=0)
