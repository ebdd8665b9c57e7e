"""One utterance through the layers: frame self-similarity and the frame trajectory.

Drawn from the two tables of ``layerwise.analyses.temporal`` (``tables/{model}/temporal-selfsim``
and ``temporal-trajectory``), which hold every number shown; the word intervals
``[(start_s, end_s, word), ...]`` come from the alignments.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.animation import PillowWriter
from matplotlib.axes import Axes

from layerwise.plots import style

__all__ = ["self_similarity", "temporal_figures", "trajectory_gif"]

#: Resolution of the GIF (a 6.4 x 5.6 in figure: 640 x 560 pixels per frame).
GIF_DPI = 100
#: Colour of negative cosine similarities (below the 0-1 scale).
NEGATIVE_COLOUR = "black"
#: Font size of word labels.
WORD_FONT = 7

Words = Sequence[tuple[float, float, str]]


def _utterance(table: pd.DataFrame, what: str) -> tuple[str, str]:
    """The one model and utterance of a temporal table."""
    if table.empty:
        raise ValueError(f"the {what} table is empty")
    models, utts = table["model"].unique(), table["utt_id"].astype(str).unique()
    if len(models) != 1 or len(utts) != 1:
        raise ValueError(f"a {what} table of one model and utterance, got models "
                         f"{list(models)} and utterances {list(utts)}")
    return str(models[0]), str(utts[0])


def _matrix(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The full (T, T) matrix of one layer's ``frame_i ≤ frame_j`` rows, and frame times."""
    T = int(max(rows["frame_i"].max(), rows["frame_j"].max())) + 1
    S = np.full((T, T), np.nan)
    i, j = rows["frame_i"].to_numpy(int), rows["frame_j"].to_numpy(int)
    S[i, j] = S[j, i] = rows["cosine"].to_numpy(float)
    times = np.full(T, np.nan)
    times[i], times[j] = rows["time_i_s"].to_numpy(float), rows["time_j_s"].to_numpy(float)
    return S, times


def _edges(times: np.ndarray) -> tuple[float, float]:
    """Start of the first and end of the last frame, from evenly spaced centres."""
    hop = float(np.median(np.diff(times))) if len(times) > 1 else 0.02
    return float(times[0]) - hop / 2, float(times[-1]) + hop / 2


def _word_marks(ax: Axes, words: Words | None, duration: float, *, width_pt: float,
                both: bool = True) -> None:
    """Word boundaries as thin lines, words as labels on a top axis (turned upright when
    the shortest word is too narrow, at ``width_pt`` points per panel, for its label)."""
    if not words:
        return
    bounds = sorted({round(float(t), 4) for s, e, _ in words for t in (s, e)
                     if 0 < float(t) < duration})
    for b in bounds:
        ax.axvline(b, color="white", linewidth=0.6, alpha=0.8)
        if both:
            ax.axhline(b, color="white", linewidth=0.6, alpha=0.8)
    shown = [(float(s), min(float(e), duration), str(w)) for s, e, w in words
             if float(s) < duration]
    if not shown:
        return
    fits = all((e - s) / duration * width_pt > 0.62 * WORD_FONT * (len(w) + 1)
               for s, e, w in shown)
    top = ax.secondary_xaxis("top")
    top.set_xticks([0.5 * (s + e) for s, e, _ in shown], [w for _, _, w in shown],
                   fontsize=WORD_FONT, rotation=0 if fits else 90)
    top.tick_params(length=0, pad=1)


@style.themed
def self_similarity(table: pd.DataFrame, out: str | Path, *, corpus: str,
                    words: Words | None = None, ncols: int = 3, return_fig: bool = False):
    """Frame x frame cosine self-similarity of one utterance, one panel per layer.

    Parameters
    ----------
    table : DataFrame
        The ``selfsim`` table of one model and utterance (``layerwise.analyses.temporal``:
        ``layer, frame_i, frame_j, time_i_s, time_j_s, cosine``, rows ``frame_i <= frame_j``).
    out : path
        PNG to write (``.pdf``: PDF plus a PNG beside it).
    corpus : str
        Names the figure.
    words : list of (start_s, end_s, word), optional
        Word intervals: boundaries drawn as white lines, words written above each panel.
    return_fig : bool
        Also return the (open) figure: ``(path, fig)``.
    """
    model, utt_id = _utterance(table, "selfsim")
    layers = style.sort_layers(table["layer"])
    mats = {x: _matrix(table[table["layer"] == x]) for x in layers}
    negative = any(np.nanmin(S) < 0 for S, _ in mats.values() if np.isfinite(S).any())
    n = len(layers)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    panel_in = 3.3
    lift = 0.6 if words else 0.0  # room for the word labels above each panel
    fig = style.new_figure(ncols * panel_in + 1.0, nrows * (panel_in + 0.15 + lift) + 1.0)
    axes = style.panel_grid(fig, n, ncols)
    # fixed 0-1 scale; the (rare) negative cosines get their own colour, not half the map
    cmap = style.sequential_cmap("viridis").with_extremes(under=NEGATIVE_COLOUR)
    any_nan = False
    for i, (ax, layer) in enumerate(zip(axes, layers, strict=True)):
        S, times = mats[layer]
        any_nan |= bool(np.isnan(S).any())
        start, end = _edges(times)
        im = ax.imshow(np.ma.masked_invalid(S), cmap=cmap, vmin=0.0, vmax=1.0,
                       extent=(start, end, end, start), interpolation="nearest")
        _word_marks(ax, words, end, width_pt=0.8 * panel_in * 72)
        # word labels stand above the panel: lift the layer name over the longest one
        longest = max((len(str(w[2])) for w in words), default=0) if words else 0
        ax.set_title(f"{layer}", pad=6 + 5.5 * longest)
        ax.spines[["top", "right"]].set_visible(True)
        if i + ncols >= n:
            ax.set_xlabel("time (s)")
        if i % ncols == 0:
            ax.set_ylabel("time (s)")
    fig.colorbar(im, ax=axes, shrink=min(0.9, 0.5 + 0.2 * nrows),
                 extend="min" if negative else "neither",
                 label="cosine similarity (fixed scale 0 to 1"
                       + ("; below 0: black)" if negative else ")"))
    fig.suptitle(style.title("Frame self-similarity (cosine)", corpus=corpus, model=model,
                             utterance=utt_id))
    if any_nan:
        fig.legend(handles=[style.missing_patch("zero-norm frame (NaN)")],
                   loc="outside lower center", frameon=False)
    return style.finish(fig, out, return_fig=return_fig)


@style.themed
def trajectory_gif(table: pd.DataFrame, out_gif: str | Path, *, corpus: str,
                   words: Words | None = None, fps: float = 2.0, return_fig: bool = False):
    """Animated GIF of the utterance's frame trajectory in a shared PCA space, one
    animation frame per layer.

    The PCA was fitted once on the frames of every layer of the table
    (``layerwise.analyses.temporal.shared_pca``), so positions compare across animation
    frames; the axis limits are fixed. Points are coloured by time (colour bar in seconds)
    and joined in time order; word labels sit at the frame nearest each word's middle.

    Parameters
    ----------
    table : DataFrame
        The ``trajectory`` table of one model and utterance (``layer, frame, time_s, pc1, pc2,
        pc1_share, pc2_share``).
    out_gif : path
        GIF to write (parent folders are created).
    corpus : str
        Names the figure.
    words : list of (start_s, end_s, word), optional
    fps : float
        Animation frames (layers) per second.
    return_fig : bool
        Also return the (open) figure: ``(path, fig)``.
    """
    model, utt_id = _utterance(table, "trajectory")
    layers = style.sort_layers(table["layer"])
    rows = [table[table["layer"] == x].sort_values("frame") for x in layers]
    proj = [r[["pc1", "pc2"]].to_numpy(float) for r in rows]
    times = [r["time_s"].to_numpy(float) for r in rows]
    ratio = table[["pc1_share", "pc2_share"]].iloc[0].to_numpy(float)
    allp = np.concatenate(proj)
    lo, hi = allp.min(axis=0), allp.max(axis=0)
    pad = 0.06 * np.maximum(hi - lo, 1e-9)
    t_max = max(t[-1] for t in times)

    # a fixed layout (no layout engine): every animation frame is drawn once, not twice
    fig = style.new_figure(6.4, 5.6, constrained=False)
    fig.subplots_adjust(left=0.12, right=0.87, bottom=0.1, top=0.84)
    ax = fig.add_subplot()
    ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
    ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
    ax.set_xlabel(f"shared PC1 ({100 * ratio[0]:.1f}% of variance)")
    ax.set_ylabel(f"shared PC2 ({100 * ratio[1]:.1f}% of variance)")
    ax.grid(alpha=0.3)
    (line,) = ax.plot([], [], color="0.6", linewidth=0.8, zorder=1)
    sc = ax.scatter(proj[0][:, 0], proj[0][:, 1], c=times[0], cmap="viridis", vmin=0,
                    vmax=t_max, s=14, zorder=2)
    fig.colorbar(sc, ax=ax, label="time in the utterance (s)", fraction=0.05, pad=0.03)
    words = list(words or [])
    labels = [ax.text(0, 0, str(w), fontsize=WORD_FONT + 1, zorder=3,
                      bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.7,
                            "lw": 0}) for _, _, w in words]
    fig.suptitle(style.title("Frame trajectory in a shared PCA space", corpus=corpus,
                             model=model, utterance=utt_id))

    def draw(k: int):
        P, t = proj[k], times[k]
        sc.set_offsets(P)
        sc.set_array(t)
        line.set_data(P[:, 0], P[:, 1])
        for txt, (s, e, _) in zip(labels, words, strict=True):
            i = int(np.argmin(np.abs(t - 0.5 * (float(s) + float(e)))))
            txt.set_position((P[i, 0], P[i, 1]))
        ax.set_title(f"{layers[k]}  (layer {k + 1} of {len(layers)} shown)")

    out_gif = Path(out_gif)
    out_gif.parent.mkdir(parents=True, exist_ok=True)
    writer = PillowWriter(fps=fps)
    with writer.saving(fig, out_gif, dpi=GIF_DPI):
        for k in range(len(layers)):
            draw(k)
            writer.grab_frame()
    if return_fig:
        return out_gif, fig
    plt.close(fig)
    return out_gif


def utterance_words(alignments: pd.DataFrame, utt_id: str) -> list[tuple[float, float, str]]:
    """The word intervals of one utterance, ``[(start_s, end_s, word), ...]``."""
    g = alignments[(alignments["tier"] == "word") & (alignments["utt_id"].astype(str) == utt_id)]
    return list(zip(g["start_s"].astype(float), g["end_s"].astype(float),
                    g["label"].astype(str), strict=True))


def temporal_figures(selfsim: pd.DataFrame, trajectory: pd.DataFrame, alignments: pd.DataFrame,
                     out_png: str | Path, out_gif: str | Path, *, corpus: str) -> None:
    """The self-similarity panels and the trajectory GIF of a model's temporal tables, with
    the utterance's words from the alignments."""
    _, utt_id = _utterance(selfsim, "selfsim")
    words = utterance_words(alignments, utt_id) or None
    self_similarity(selfsim, out_png, corpus=corpus, words=words)
    trajectory_gif(trajectory, out_gif, corpus=corpus, words=words)
