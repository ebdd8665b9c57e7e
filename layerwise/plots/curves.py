"""Per-layer curves of the label analyses, one line per model on shared axes.

:func:`curve_table` turns the probe, convexity, CCA and clustering tables into one long table
of curves (also used by :mod:`layerwise.plots.summary`); :func:`layer_curves` draws one panel
per (analysis, label or target) with a line per model, so that models compare directly.

Bands: probes show their fold-based 95% interval (``ci_low``/``ci_high``, or ``value +- std``
without one); CCA the range over its train/dev/test trials (``trial_min``/``trial_max``: a
spread over splits, not a confidence interval); convexity ``value +- 1.96 sem``.
Panels of tables with an ``n_rows`` column (convexity, clustering) say how many rows are
behind the values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from layerwise.plots import style

__all__ = ["CURVE_COLUMNS", "FAMILIES", "curve_table", "fixed_ylim", "layer_curves", "panel_keys",
           "panel_title"]

#: Columns of :func:`curve_table`.
CURVE_COLUMNS = ["family", "key", "metric", "model", "layer", "value", "low", "high", "chance",
                 "n_rows"]

#: Per analysis family: panel title prefix, y-axis label and fixed y range (None: auto).
FAMILIES = {
    "probe": ("probe", "accuracy", (0.0, 1.0)),
    "convexity": ("convexity", "convex pairs (%)", (0.0, 100.0)),
    "cca": ("CCA with", "CCA", None),
    "clustering": ("clustering", "NMI", (0.0, 1.0)),  # ARI: widened below 0 when needed
}
CCA_TARGETS = ["word", "phone", "mel"]


def _num(s) -> np.ndarray:
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)


def _col(d: pd.DataFrame, name: str) -> np.ndarray:
    return _num(d[name]) if name in d.columns else np.full(len(d), np.nan)


def _curves(d: pd.DataFrame, family: str, key, metric, value, low=None, high=None,
            chance=None) -> pd.DataFrame:
    nan = np.full(len(d), np.nan)
    return pd.DataFrame({
        "family": family, "key": key, "metric": metric, "model": d["model"].astype(str).to_numpy(),
        "layer": d["layer"].astype(str).to_numpy(), "value": np.asarray(value, dtype=float),
        "low": nan if low is None else np.asarray(low, dtype=float),
        "high": nan if high is None else np.asarray(high, dtype=float),
        "chance": nan if chance is None else np.asarray(chance, dtype=float),
        "n_rows": _col(d, "n_rows")})


def _with_variant(d: pd.DataFrame, base: pd.Series, variant: str, name: str) -> pd.Series:
    """Append `` (name=variant)`` to the keys whose rows take several ``variant`` values
    (e.g. two probes for one label), so that each becomes its own curve."""
    if variant not in d.columns:
        return base
    varies = d.groupby(base.to_numpy())[variant].transform("nunique") > 1
    suffix = f" ({name}=" + d[variant].astype(str) + ")"
    return base.where(~varies.to_numpy(), base + suffix)


def curve_table(tables: dict, *, span: str | None = None, pooling: str | None = None,
                model: str | None = None, probe_metric: str = "accuracy",
                cluster_metric: str = "nmi") -> pd.DataFrame:
    """One long table of per-layer curves from the analysis tables.

    Parameters
    ----------
    tables : dict
        Any of ``"probes"``, ``"convexity"``, ``"cca"``, ``"clustering"`` (other keys are
        ignored) mapping to the tidy tables.
    span, pooling, model : str, optional
        Keep only these rows (None: no filter; ``pooling`` does not apply to CCA).
    probe_metric : str
        ``accuracy`` or ``macro_f1``.
    cluster_metric : str
        ``nmi``, ``ari`` or ``purity``.

    Returns
    -------
    DataFrame with :data:`CURVE_COLUMNS`; ``family`` is a key of :data:`FAMILIES` and
    ``key`` the label or target (with the probe, metric or k when these vary).
    """
    parts = []
    sel = {"span": span, "pooling": pooling, "model": model}
    if (t := tables.get("probes")) is not None and len(t):
        d = style.filter_rows(t, metric=probe_metric, **sel)
        if len(d):
            value, std = _col(d, "value"), _col(d, "std")
            low, high = _col(d, "ci_low"), _col(d, "ci_high")
            no_ci = ~(np.isfinite(low) & np.isfinite(high))
            low = np.where(no_ci, value - std, low)
            high = np.where(no_ci, value + std, high)
            key = _with_variant(d, d["label"].astype(str), "probe", "probe")
            parts.append(_curves(d, "probe", key.to_numpy(), probe_metric, value, low, high,
                                 _col(d, "chance")))
    if (t := tables.get("convexity")) is not None and len(t):
        d = style.filter_rows(t, **{"class": "__all__"}, **sel)
        if len(d):
            value, sem = _col(d, "value"), _col(d, "sem")
            parts.append(_curves(d, "convexity", d["label"].astype(str).to_numpy(),
                                 "convexity", value, value - 1.96 * sem, value + 1.96 * sem))
    if (t := tables.get("cca")) is not None and len(t):
        d = style.filter_rows(t, span=span, model=model)
        if len(d):
            key = _with_variant(d, d["target"].astype(str), "metric", "metric")
            parts.append(_curves(d, "cca", key.to_numpy(), d["metric"].astype(str).to_numpy(),
                                 _col(d, "value"), _col(d, "trial_min"), _col(d, "trial_max")))
    if (t := tables.get("clustering")) is not None and len(t):
        d = style.filter_rows(t, metric=cluster_metric, **sel)
        if len(d):
            key = _with_variant(d, d["label"].astype(str), "k", "k")
            parts.append(_curves(d, "clustering", key.to_numpy(), cluster_metric,
                                 _col(d, "value"), chance=_col(d, "chance")))
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    out = pd.concat(parts, ignore_index=True)
    # an undefined curve (e.g. a probe with too few groups per class) gets no empty panel
    out = out[np.isfinite(out["value"].to_numpy(dtype=float))]
    # duplicates (e.g. several k for one label when unnamed) are averaged
    return (out.groupby(["family", "key", "metric", "model", "layer"], sort=False,
                        as_index=False)
            .agg({"value": "mean", "low": "mean", "high": "mean", "chance": "mean",
                  "n_rows": "max"})
            [CURVE_COLUMNS])


def panel_keys(curves: pd.DataFrame, family: str) -> list[str]:
    """Keys of one family in display order: labels alphabetical, CCA targets word, phone,
    mel (then others)."""
    keys = sorted(curves.loc[curves["family"] == family, "key"].unique().tolist())
    if family == "cca":
        rank = {t: i for i, t in enumerate(CCA_TARGETS)}
        keys.sort(key=lambda k: (rank.get(k.split(" ")[0], len(rank)), k))
    return keys


def _panel_order(curves: pd.DataFrame) -> list[tuple[str, str]]:
    """(family, key) in family order, keys as :func:`panel_keys`."""
    return [(fam, k) for fam in FAMILIES for k in panel_keys(curves, fam)]


#: Display names of metrics on y axes.
METRIC_NAMES = {"accuracy": "accuracy", "macro_f1": "macro F1", "nmi": "NMI", "ari": "ARI",
                "purity": "purity", "convexity": "convex pairs (%)"}


def panel_title(family: str, key: str, metrics) -> tuple[str, str]:
    """Title and y label of a curve panel of ``family`` for ``key`` (label or target;
    empty: all of them) whose curves show ``metrics``."""
    names = sorted({METRIC_NAMES.get(str(m), str(m).replace("_", " ")) for m in metrics})
    ylabel = " / ".join(names) if names else FAMILIES[family][1]
    if family == "cca":
        return ("CCA with " + (key or "targets")), f"CCA: {ylabel}"
    prefix = {"probe": f"probe {ylabel}", "convexity": "convexity",
              "clustering": f"clustering {ylabel}"}[family]
    return (f"{prefix}: {key}" if key else prefix), ylabel


@style.themed
def layer_curves(tables: dict, out: str | Path, *, corpus: str, span: str, pooling: str,
                 relative_depth: bool | None = None, models: list[str] | None = None,
                 probe_metric: str = "accuracy", cluster_metric: str = "nmi",
                 ncols: int = 4, return_fig: bool = False):
    """Grid of per-layer curves, one panel per analysis and label/target, a line per model.

    Panels (each only when its table has rows for ``span``/``pooling``): probe accuracy per
    label (chance level dashed, 95% interval shaded), convexity of the pooled class
    ``__all__`` per label, CCA with word / phone / mel (range over trials shaded), and NMI
    per label. Only transformer layers (``layer.i``) are drawn, at x = i.

    Parameters
    ----------
    tables : dict
        ``{"probes": df, "convexity": df, "cca": df, "clustering": df}``; any may be absent.
    out : path
        PNG to write (``.pdf``: PDF plus a PNG beside it).
    corpus, span, pooling : str
        Select the rows and name the figure.
    relative_depth : bool, optional
        x = i / (last layer index of the model), so models of different depths align.
        Default: on when the models' depths differ.
    models : list of str, optional
        Models to draw, in legend order (default: all, in order of appearance).
    probe_metric, cluster_metric : str
        Which probe metric (``accuracy``/``macro_f1``) and clustering metric to draw.
    ncols : int
        Panels per row.
    return_fig : bool
        Also return the (open) figure: ``(path, fig)``.
    """
    curves = curve_table(tables, span=span, pooling=pooling, probe_metric=probe_metric,
                         cluster_metric=cluster_metric)
    curves = curves.assign(idx=curves["layer"].map(style.layer_index))
    curves = curves[curves["idx"].notna()]
    if models is not None:
        curves = curves[curves["model"].isin(models)]
    if curves.empty:  # e.g. too few speakers per class for any probe: say so, don't fail
        return style.note_figure(
            out, style.title("Representation across layers", corpus=corpus, span=span,
                             pooling=pooling),
            "No per-layer value is defined for these units (too few rows or classes for the "
            "probes,\nconvexity, CCA and clustering; see the job logs).", return_fig=return_fig)
    models = list(models) if models is not None else list(dict.fromkeys(curves["model"]))
    models = [m for m in models if (curves["model"] == m).any()]
    depth = _depths(tables, models)
    if relative_depth is None:
        relative_depth = len(set(depth.values())) > 1
    colours = style.model_colours(models)

    panels = _panel_order(curves)
    fig = style.new_figure(min(ncols, len(panels)) * 3.3 + 0.4,
                           -(-len(panels) // ncols) * 2.7 + 1.4)
    axes = style.panel_grid(fig, len(panels), ncols)
    has_chance = has_band = False
    ncols = min(ncols, len(panels))
    for i, (ax, (fam, key)) in enumerate(zip(axes, panels, strict=True)):
        p = curves[(curves["family"] == fam) & (curves["key"] == key)]
        for m in models:
            s = p[p["model"] == m].sort_values("idx")
            if s.empty:
                continue
            x = s["idx"].to_numpy(dtype=float)
            if relative_depth:
                x = x / max(depth[m], 1)
            style.band(ax, x, s["value"], s["low"], s["high"], colours[m], label=m)
            has_band |= bool((np.isfinite(s["low"]) & np.isfinite(s["high"])).any())
        chance = p["chance"].to_numpy(dtype=float)
        if np.isfinite(chance).any():
            ax.axhline(np.nanmean(chance), color="0.25", linestyle="--", linewidth=1)
            has_chance = True
        ttl, ylabel = panel_title(fam, key, p["metric"].unique())
        ax.set_title(" · ".join(filter(None, [ttl, style.n_label(p["n_rows"])])))
        ax.set_ylabel(ylabel)
        fixed_ylim(ax, FAMILIES[fam][2], p["value"])
        if relative_depth:
            ax.set_xlim(-0.03, 1.03)
            xlabel = "relative depth (layer.i / last layer)"
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
            xlabel = "transformer layer (layer.i)"
        if style.is_bottom(i, len(panels), ncols):
            ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colours[m], marker="o", markersize=3,
                      label=f"{m} (layer.0-{depth[m]})") for m in models]
    if has_chance:
        handles.append(Line2D([], [], color="0.25", linestyle="--", label="chance level"))
    if has_band:
        handles.append(Patch(color="0.5", alpha=0.3, label="band: probes 95% CI (without CI: "
                             "±1 std); CCA min-max over trials; convexity ±1.96 SEM"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4),
               frameon=False)
    fig.suptitle(style.title("Representation across layers", corpus=corpus,
                             model=", ".join(models), span=span, pooling=pooling))
    return style.finish(fig, out, return_fig=return_fig)


def fixed_ylim(ax, ylim: tuple[float, float] | None, values) -> None:
    """Fixed y range of a family (e.g. 0-1 for accuracy), widened to show every value."""
    if ylim is None:
        return
    v = np.asarray(values, dtype=float)
    lo = min(ylim[0], float(np.nanmin(v))) if np.isfinite(v).any() else ylim[0]
    hi = max(ylim[1], float(np.nanmax(v))) if np.isfinite(v).any() else ylim[1]
    span = hi - lo
    ax.set_ylim(lo - 0.02 * span * (lo < ylim[0]), hi + 0.02 * span)


def _depths(tables: dict, models: list[str]) -> dict[str, int]:
    """Last transformer-layer index per model over every table given."""
    depth = dict.fromkeys(models, 0)
    for t in tables.values():
        if t is None or "layer" not in getattr(t, "columns", ()) or "model" not in t.columns:
            continue
        idx = t["layer"].map(style.layer_index)
        ok = idx.notna() & t["model"].isin(models)
        for m, i in t.loc[ok].assign(i=idx[ok]).groupby("model")["i"].max().items():
            depth[m] = max(depth[m], int(i))
    return depth
