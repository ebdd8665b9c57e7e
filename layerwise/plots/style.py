"""Shared helpers of the figure modules: layer ordering and tick labels, titles, grids, saving.

Every figure function of :mod:`layerwise.plots` runs under :func:`themed` (the package's
:data:`RC` settings, applied in a context so the user's own settings are left alone), builds
its figure with :func:`new_figure`, lays its panels out with :func:`panel_grid` (only as many
axes as panels with data: a figure never shows an empty axes), labels layers with
:func:`set_layer_ticks` (``C3``, ``P``, ``L12``, thinned) and ends with :func:`finish`, which
writes the file(s) and either closes the figure or hands it back (``return_fig=True``).

Panels versus other axes: colour bars are axes too; :func:`panel_axes` returns only the data
panels (matplotlib labels colour-bar axes ``"<colorbar>"``), which is what the tests count.

Importing this module selects the non-interactive Agg backend.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import Colormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from layerwise.vocabulary import (  # noqa: E402
    LAYER_GROUPS,
    layer_group,
    layer_index,
    layer_sort_key,
    pick_evenly,
)

__all__ = [
    "DPI",
    "RC",
    "MISSING_COLOUR",
    "SIMILARITY_METRICS",
    "band",
    "finish",
    "filter_rows",
    "is_bottom",
    "layer_group_boundaries",
    "layer_index",
    "layer_tick_positions",
    "missing_patch",
    "model_colours",
    "n_label",
    "new_figure",
    "panel_axes",
    "panel_grid",
    "pick_evenly",
    "qualitative",
    "sequential_cmap",
    "set_layer_ticks",
    "short_layer",
    "sort_layers",
    "themed",
    "title",
]

DPI = 150
#: Colour of cells / points without a value (NaN); explained in each figure's legend.
MISSING_COLOUR = "#bdbdbd"
#: Similarity metrics in display order, with the name shown in panel titles.
SIMILARITY_METRICS = {
    "cka_linear": "linear CKA",
    "cka_rbf": "RBF CKA",
    "cka_debiased": "debiased CKA",
    "cosine": "cosine (matched rows)",
    "mutual_knn": "mutual k-NN",
    "svcca": "SVCCA",
    "pwcca": "PWCCA",
}
#: Largest number of tick labels on a layer axis before labels are thinned.
MAX_LAYER_TICKS = 12

#: Settings of every figure of the package, applied by :func:`themed` (not globally, so
#: importing the package leaves the user's own matplotlib settings alone).
RC = {
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "figure.titlesize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def themed(fn):
    """Decorator of the figure functions: run them under the package's :data:`RC`."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with plt.rc_context(RC):
            return fn(*args, **kwargs)
    return wrapper


# --------------------------------------------------------------------------- layers


def sort_layers(layers: Iterable[str]) -> list[str]:
    """Unique layer names in model order (``cnn.* < proj < layer.*``, numeric within)."""
    return sorted({str(x) for x in layers}, key=lambda n: (*layer_sort_key(n), n))


def short_layer(name: str) -> str:
    """Compact tick label: ``layer.12`` -> ``L12``, ``cnn.3`` -> ``C3``, ``proj`` -> ``P``."""
    group, idx = layer_group(name)
    prefix = dict(zip(LAYER_GROUPS, "CPL", strict=True)).get(group)
    if prefix is None:
        return str(name)
    return prefix + ("" if idx is None else str(idx))


def layer_group_boundaries(layers: Sequence[str]) -> list[float]:
    """Positions (between ticks) where the layer group changes, e.g. between ``cnn`` and
    ``proj``; used to draw thin separators on layer axes."""
    groups = [layer_group(n)[0] for n in layers]
    return [i - 0.5 for i in range(1, len(groups)) if groups[i] != groups[i - 1]]


def _nice_step(step: int) -> int:
    """The smallest of 1, 2, 4, 5, 10, 20, 25, 50, ... that is >= ``step``."""
    for nice in (1, 2, 4, 5, 10, 20, 25, 50, 100):
        if nice >= step:
            return nice
    return step


def layer_tick_positions(layers: Sequence[str], max_ticks: int = MAX_LAYER_TICKS) -> list[int]:
    """Positions of the layers to label on an axis of ``len(layers)`` layers.

    At most about ``max_ticks`` labels, at least ``step // 2`` positions apart; chosen in
    priority: first and last layer, first transformer layer, first layer of each group,
    round in-group indices (``L0, L4, L8, ...`` with a step of 1, 2, 4, 5, 10, ...) and
    the last layer of each group.
    """
    n = len(layers)
    step = _nice_step(math.ceil(n / max_ticks))
    gap = max(1, step // 2)
    groups = [layer_group(x)[0] for x in layers]
    in_group = [0] * n
    for i in range(1, n):
        in_group[i] = in_group[i - 1] + 1 if groups[i] == groups[i - 1] else 0
    starts = [i for i in range(n) if in_group[i] == 0]
    ends = [i for i in range(n) if i == n - 1 or groups[i + 1] != groups[i]]
    candidates = [0, n - 1]
    candidates += [i for i in starts if groups[i] == LAYER_GROUPS[-1]]
    candidates += starts
    candidates += [i for i in range(n) if in_group[i] % step == 0]
    candidates += ends
    chosen: list[int] = []
    for i in candidates:
        if i not in chosen and all(abs(i - j) >= gap for j in chosen):
            chosen.append(i)
    return sorted(chosen)


def set_layer_ticks(ax: Axes, layers: Sequence[str], axis: str = "x", *,
                    max_ticks: int = MAX_LAYER_TICKS, rotate: bool | None = None,
                    minor: bool = False) -> None:
    """Label positions ``0..len(layers)-1`` with short layer names (``C3``, ``P``, ``L12``),
    thinned by :func:`layer_tick_positions`; with ``minor`` every layer gets a minor tick
    (off by default: markers and heatmap cells already show each layer, and hundreds of
    tick objects make drawing slow). x labels are rotated when they would otherwise crowd."""
    if len(layers) == 0:
        return
    pos = layer_tick_positions(layers, max_ticks)
    labels = [short_layer(layers[i]) for i in pos]
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_ticks(pos, labels)
    if minor:
        target.set_ticks(range(len(layers)), minor=True)
        ax.tick_params(axis=axis, which="minor", length=2)
    if axis == "x":
        if rotate is None:
            rotate = len(pos) > 8 or max(len(t) for t in labels) > 4
        if rotate:
            plt.setp(ax.get_xticklabels(), rotation=90)


# --------------------------------------------------------------------------- data


def filter_rows(df: pd.DataFrame, **equal) -> pd.DataFrame:
    """Rows whose columns equal the given values; columns that are absent or values that
    are None are ignored (e.g. ``pooling`` for the CCA table)."""
    mask = np.ones(len(df), dtype=bool)
    for col, val in equal.items():
        if val is None or col not in df.columns:
            continue
        mask &= (df[col].astype(str) == str(val)).to_numpy()
    return df.loc[mask]


def n_label(values) -> str:
    """``"n = 5,000"`` (or ``"n = 4,800–5,000"`` when they differ) for the rows behind the
    values of a panel, from an ``n_rows`` column; empty when there is none."""
    n = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").dropna()
    if n.empty:
        return ""
    lo, hi = int(n.min()), int(n.max())
    return f"n = {hi:,}" if lo == hi else f"n = {lo:,}–{hi:,}"


def qualitative(n: int) -> list:
    """``n`` distinct colours without grey (grey means "missing" or "other" here):
    tab10 less its grey, then black, then the light tab20 shades (cycled beyond 19)."""
    tab10 = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7]
    light = [c for i, c in enumerate(plt.get_cmap("tab20").colors) if i % 2 and i != 15]
    base = [*tab10, (0.0, 0.0, 0.0), *light]
    return [base[i % len(base)] for i in range(n)]


def model_colours(models: Iterable[str]) -> dict[str, tuple]:
    """One qualitative colour per model (or label), stable in the given order."""
    keys = list(dict.fromkeys(models))
    return dict(zip(keys, qualitative(len(keys)), strict=True))


def sequential_cmap(name: str = "viridis") -> Colormap:
    """A sequential colour map whose NaN ("bad") colour is :data:`MISSING_COLOUR`."""
    return plt.get_cmap(name).with_extremes(bad=MISSING_COLOUR)


def missing_patch(what: str = "no value (NaN)") -> Patch:
    """Legend entry that explains grey NaN cells."""
    return Patch(facecolor=MISSING_COLOUR, edgecolor="0.4", label=f"grey: {what}")


def band(ax: Axes, x, value, low, high, colour, *, label: str | None = None,
         marker: str = "o", linestyle: str = "-") -> None:
    """A line with markers and, where ``low``/``high`` are finite, a shaded band."""
    x = np.asarray(x, dtype=float)
    value = np.asarray(value, dtype=float)
    ax.plot(x, value, color=colour, marker=marker, markersize=3, linewidth=1.4,
            linestyle=linestyle, label=label)
    if low is None or high is None:
        return
    low = np.asarray(low, dtype=float)
    high = np.asarray(high, dtype=float)
    ok = np.isfinite(low) & np.isfinite(high)
    if ok.any():
        ax.fill_between(x, np.where(ok, low, np.nan), np.where(ok, high, np.nan),
                        color=colour, alpha=0.2, linewidth=0)


# --------------------------------------------------------------------------- figures


def title(what: str, *, corpus: str, model: str | None = None, span: str | None = None,
          pooling: str | None = None, **extra) -> str:
    """Figure title: what is shown, then the context (corpus, model, span, pooling, ...)."""
    parts = [f"corpus: {corpus}"]
    if model is not None:
        parts.append(f"model: {model}")
    if span is not None:
        parts.append(f"span: {span}")
    if pooling is not None:
        parts.append(f"pooling: {pooling}")
    parts += [f"{k.replace('_', ' ')}: {v}" for k, v in extra.items() if v is not None]
    return f"{what}\n" + "  ·  ".join(parts)


def new_figure(width: float, height: float, *, constrained: bool = True) -> Figure:
    """A figure with constrained layout (labels, colour bars and outside legends fit);
    ``constrained=False`` for fixed layouts drawn many times (animations)."""
    if not constrained:
        return plt.figure(figsize=(width, height))
    fig = plt.figure(figsize=(width, height), layout="constrained")
    fig.get_layout_engine().set(h_pad=0.06, w_pad=0.06, hspace=0.04, wspace=0.04)
    return fig


def panel_grid(fig: Figure, n: int, ncols: int, *, span_last: bool = False,
               **subplot_kw) -> list[Axes]:
    """``n`` panels in a grid of ``ncols`` columns; cells beyond ``n`` are not created
    (or, with ``span_last``, the last panel stretches over them)."""
    if n < 1:
        raise ValueError("nothing to plot: no panel has data")
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    gs = fig.add_gridspec(nrows, ncols)
    axes = []
    for i in range(n):
        r, c = divmod(i, ncols)
        cell = gs[r, c:] if span_last and i == n - 1 else gs[r, c]
        axes.append(fig.add_subplot(cell, **subplot_kw))
    return axes


def is_bottom(i: int, n: int, ncols: int) -> bool:
    """Whether panel ``i`` of :func:`panel_grid` has no panel below it (gets the x label)."""
    return i + ncols >= n


def panel_axes(fig: Figure) -> list[Axes]:
    """The data panels of a figure (colour-bar axes left out)."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def note_figure(out: str | Path, heading: str, text: str, *, return_fig: bool = False):
    """A figure that says why there is nothing to draw, in place of a failed job."""
    fig = new_figure(8, 3)
    fig.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    fig.suptitle(heading)
    return finish(fig, out, return_fig=return_fig)


def finish(fig: Figure, out: str | Path, *, return_fig: bool = False):
    """Write ``fig`` to ``out`` and return the path (and the figure when ``return_fig``).

    ``out`` ending in ``.pdf`` writes the PDF and a 150-dpi PNG beside it (same stem);
    any other suffix writes a 150-dpi PNG at ``out``. Parent folders are created. Without
    ``return_fig`` the figure is closed; with it the caller owns (and should close) it.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".pdf":
        fig.savefig(out)
        fig.savefig(out.with_suffix(".png"), dpi=DPI, format="png")
    else:
        fig.savefig(out, dpi=DPI, format="png")
    if return_fig:
        return out, fig
    plt.close(fig)
    return out
