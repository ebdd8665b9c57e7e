"""One utterance through the layers: frame self-similarity and the frame trajectory.

Inputs are the frames of one utterance per layer, ``{layer name: (T, D) array}`` (e.g. from
``layerwise.io.store.open(...).frames(layer, utt_id)``), the frame rate in Hz (one number, or
one per layer) and optionally word intervals ``[(start_s, end_s, word), ...]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.animation import PillowWriter
from matplotlib.axes import Axes

from layerwise.plots import style

__all__ = ["self_similarity", "trajectory_gif"]

#: Resolution of the GIF (a 6.4 x 5.6 in figure: 640 x 560 pixels per frame).
GIF_DPI = 100
#: Colour of negative cosine similarities (below the 0-1 scale).
NEGATIVE_COLOUR = "black"
#: Font size of word labels.
WORD_FONT = 7

Words = Sequence[tuple[float, float, str]]


def _rate(frame_rate_hz: float | Mapping[str, float], layer: str) -> float:
    rate = frame_rate_hz[layer] if isinstance(frame_rate_hz, Mapping) else frame_rate_hz
    rate = float(rate)
    if not rate > 0:
        raise ValueError(f"frame_rate_hz must be positive, got {rate} for {layer}")
    return rate


def _frames(frames_by_layer: Mapping[str, np.ndarray], layer: str) -> np.ndarray:
    X = np.asarray(frames_by_layer[layer], dtype=np.float64)
    if X.ndim != 2 or len(X) < 2:
        raise ValueError(f"frames of {layer} must be (T >= 2, D), got shape {X.shape}")
    return X


def _select(frames_by_layer: Mapping[str, np.ndarray], layers: Sequence[str] | None,
            max_layers: int | None) -> list[str]:
    """Requested layers (checked), or transformer layers (else all) thinned evenly."""
    if layers is not None:
        missing = [x for x in layers if x not in frames_by_layer]
        if missing:
            raise ValueError(f"layers not in frames_by_layer: {missing}")
        return list(layers)
    ordered = style.sort_layers(frames_by_layer)
    pool = [x for x in ordered if style.layer_index(x) is not None] or ordered
    if not pool:
        raise ValueError("frames_by_layer is empty")
    return pool if max_layers is None else style.pick_evenly(pool, max_layers)


def cosine_self_similarity(X: np.ndarray, *, center: bool = False) -> np.ndarray:
    """(T, T) cosine similarity between the frames of ``X`` (zero-norm frames give NaN)."""
    X = np.asarray(X, dtype=np.float64)
    if center:
        X = X - X.mean(axis=0)
    norm = np.linalg.norm(X, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        U = X / norm[:, None]
    U[norm == 0] = np.nan
    return np.clip(U @ U.T, -1.0, 1.0)


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
def self_similarity(frames_by_layer: Mapping[str, np.ndarray], out: str | Path, *,
                    corpus: str, model: str, utt_id: str,
                    frame_rate_hz: float | Mapping[str, float], words: Words | None = None,
                    layers: Sequence[str] | None = None, max_layers: int = 6,
                    center: bool = False, ncols: int = 3, return_fig: bool = False):
    """Frame x frame cosine self-similarity of one utterance, one panel per selected layer.

    Parameters
    ----------
    frames_by_layer : dict of str -> (T, D) array
        The utterance's frames per layer.
    out : path
        PNG to write (``.pdf``: PDF plus a PNG beside it).
    corpus, model, utt_id : str
        Name the figure.
    frame_rate_hz : float or dict of str -> float
        Frames per second (per layer when they differ); axes are in seconds.
    words : list of (start_s, end_s, word), optional
        Word intervals: boundaries drawn as white lines, words written above each panel.
    layers : list of str, optional
        Layers to show; default: transformer layers (all layers without any), evenly
        thinned to ``max_layers`` (first and last kept).
    center : bool
        Subtract the utterance's mean frame before the cosine (removes the common
        direction of anisotropic layers).
    return_fig : bool
        Also return the (open) figure: ``(path, fig)``.
    """
    layers = _select(frames_by_layer, layers, max_layers)
    sims = {x: cosine_self_similarity(_frames(frames_by_layer, x), center=center)
            for x in layers}
    negative = any(np.nanmin(S) < 0 for S in sims.values() if np.isfinite(S).any())
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
        S = sims[layer]
        any_nan |= bool(np.isnan(S).any())
        dur = len(S) / _rate(frame_rate_hz, layer)
        im = ax.imshow(np.ma.masked_invalid(S), cmap=cmap, vmin=0.0, vmax=1.0,
                       extent=(0, dur, dur, 0), interpolation="nearest")
        _word_marks(ax, words, dur, width_pt=0.8 * panel_in * 72)
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
    what = "Frame self-similarity (cosine" + (", centred)" if center else ")")
    fig.suptitle(style.title(what, corpus=corpus, model=model, utterance=utt_id))
    if any_nan:
        fig.legend(handles=[style.missing_patch("zero-norm frame (NaN)")],
                   loc="outside lower center", frameon=False)
    return style.finish(fig, out, return_fig=return_fig)


def shared_pca(frames: Sequence[np.ndarray], n_components: int = 2
               ) -> tuple[list[np.ndarray], np.ndarray]:
    """Project each layer's frames into one PCA space fitted on all of them.

    Each layer is standardised first (per dimension: zero mean, unit variance; constant
    dimensions are only centred), so that no layer dominates by its scale. Returns the
    projections ``[(T_i, n_components)]`` and the explained-variance ratios.
    """
    dims = {X.shape[1] for X in frames}
    if len(dims) != 1:
        raise ValueError(f"a shared PCA needs layers of one width, got widths {sorted(dims)}")
    Z = []
    for X in frames:
        sd = X.std(axis=0)
        Z.append((X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0))
    stacked = np.concatenate(Z)
    _, s, vt = np.linalg.svd(stacked - stacked.mean(axis=0), full_matrices=False)
    comps = vt[:n_components]
    ratio = (s**2 / max(float((s**2).sum()), np.finfo(float).tiny))[:n_components]
    return [z @ comps.T for z in Z], ratio


@style.themed
def trajectory_gif(frames_by_layer: Mapping[str, np.ndarray], out_gif: str | Path, *,
                   corpus: str, model: str, utt_id: str,
                   frame_rate_hz: float | Mapping[str, float], words: Words | None = None,
                   layers: Sequence[str] | None = None, fps: float = 2.0,
                   return_fig: bool = False):
    """Animated GIF of the utterance's frame trajectory in a shared PCA space, one
    animation frame per layer.

    The PCA is fitted once on the frames of every selected layer, stacked after per-layer
    standardisation (:func:`shared_pca`), so positions compare across animation frames;
    the axis limits are fixed. Points are coloured by time (colour bar in seconds) and
    joined in time order; word labels sit at the frame nearest each word's middle.

    Parameters
    ----------
    frames_by_layer : dict of str -> (T, D) array
        The utterance's frames per layer.
    out_gif : path
        GIF to write (parent folders are created).
    corpus, model, utt_id : str
        Name the figure.
    frame_rate_hz : float or dict of str -> float
        Frames per second (per layer when they differ).
    words : list of (start_s, end_s, word), optional
    layers : list of str, optional
        Layers to animate, all of one width; default: every layer with the width of the
        last layer, in model order.
    fps : float
        Animation frames (layers) per second.
    return_fig : bool
        Also return the (open) figure: ``(path, fig)``.
    """
    if layers is None:
        ordered = style.sort_layers(frames_by_layer)
        if not ordered:
            raise ValueError("frames_by_layer is empty")
        width = np.shape(frames_by_layer[ordered[-1]])[1]
        layers = [x for x in ordered if np.shape(frames_by_layer[x])[1] == width]
    else:
        layers = _select(frames_by_layer, layers, None)
    frames = [_frames(frames_by_layer, x) for x in layers]
    proj, ratio = shared_pca(frames)
    times = [np.arange(len(X)) / _rate(frame_rate_hz, x) for X, x in zip(frames, layers,
                                                                       strict=True)]
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
        rate = _rate(frame_rate_hz, layers[k])
        for txt, (s, e, _) in zip(labels, words, strict=True):
            i = int(np.clip(round(0.5 * (float(s) + float(e)) * rate), 0, len(P) - 1))
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
