"""Temporal dynamics of one utterance through the layers, as two tidy tables the plots draw.

``selfsim``: the frame × frame cosine similarity of each chosen layer (rows ``frame_i ≤
frame_j``; the matrix is symmetric). ``trajectory``: each frame's position in a PCA space
fitted once on the frames of every chosen layer of one width, so positions compare across
layers. Frames are read from the feature store (layers stored frame by frame); one utterance,
at most ``max_layers`` layers and ``max_seconds`` of it, so the tables stay small: the
self-similarity table has Σ_layers T(T+1)/2 rows for T frames (50 Hz, 8 s: 80,200 per layer).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from layerwise.analyses.validation import check_matrix
from layerwise.vocabulary import pick_evenly

log = logging.getLogger(__name__)

SELFSIM_COLUMNS = ["model", "utt_id", "layer", "frame_i", "frame_j", "time_i_s", "time_j_s",
                   "cosine"]
TRAJECTORY_COLUMNS = ["model", "utt_id", "layer", "frame", "time_s", "pc1", "pc2",
                      "pc1_share", "pc2_share"]


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
        X = np.asarray(X, dtype=np.float64)
        sd = X.std(axis=0)
        Z.append((X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0))
    stacked = np.concatenate(Z)
    _, s, vt = np.linalg.svd(stacked - stacked.mean(axis=0), full_matrices=False)
    comps = vt[:n_components]
    ratio = (s**2 / max(float((s**2).sum()), np.finfo(float).tiny))[:n_components]
    return [z @ comps.T for z in Z], ratio


def selfsim_table(frames: Mapping[str, np.ndarray], times: Mapping[str, np.ndarray], *,
                  model: str, utt_id: str) -> pd.DataFrame:
    """Cosine self-similarity of each layer's frames, rows ``frame_i ≤ frame_j``.

    ``frames``: ``{layer: (T, D)}``; ``times``: ``{layer: (T,)}`` frame centres (s).
    """
    parts = []
    for layer, X in frames.items():
        _check_frames(layer, X, times[layer])
        S = cosine_self_similarity(X)
        i, j = np.triu_indices(len(S))
        t = np.asarray(times[layer], dtype=float)
        parts.append(pd.DataFrame({"model": model, "utt_id": utt_id, "layer": layer,
                                   "frame_i": i, "frame_j": j, "time_i_s": t[i],
                                   "time_j_s": t[j], "cosine": S[i, j].astype(np.float32)}))
    return pd.concat(parts, ignore_index=True)[SELFSIM_COLUMNS]


def trajectory_table(frames: Mapping[str, np.ndarray], times: Mapping[str, np.ndarray], *,
                     model: str, utt_id: str) -> pd.DataFrame:
    """Each frame's first two coordinates in a PCA space shared by the layers given (of one
    width); ``pc1_share``/``pc2_share`` are the components' shares of the variance."""
    layers = list(frames)
    for layer in layers:
        _check_frames(layer, frames[layer], times[layer])
    proj, ratio = shared_pca([frames[x] for x in layers])
    parts = [pd.DataFrame({"model": model, "utt_id": utt_id, "layer": layer,
                           "frame": np.arange(len(P)), "time_s": np.asarray(times[layer], float),
                           "pc1": P[:, 0], "pc2": P[:, 1], "pc1_share": ratio[0],
                           "pc2_share": ratio[1]})
             for layer, P in zip(layers, proj, strict=True)]
    return pd.concat(parts, ignore_index=True)[TRAJECTORY_COLUMNS]


def _check_frames(layer: str, X: np.ndarray, times) -> None:
    check_matrix(X, f"frames of {layer}", min_rows=2)
    if len(times) != len(X):
        raise ValueError(f"{layer}: {len(times)} times for {len(X)} frames")


def choose_utterance(utt_ids: Sequence[str], alignments: pd.DataFrame,
                     utt_id: str | None) -> str:
    """``utt_id``, or else the first (sorted id) with word alignments, or else the first."""
    if utt_id is not None:
        if utt_id not in set(utt_ids):
            raise ValueError(f"analysis.temporal.utt_id {utt_id!r} is not in the feature store")
        return utt_id
    words = alignments.loc[alignments["tier"] == "word", "utt_id"].astype(str)
    aligned = sorted(set(words) & set(utt_ids))
    return aligned[0] if aligned else sorted(utt_ids)[0]


def temporal_tables(store, alignments: pd.DataFrame, *, model: str, utt_id: str | None,
                    max_layers: int, max_seconds: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``selfsim`` and ``trajectory`` tables of one utterance from a feature store.

    Layers: up to ``max_layers`` of those stored frame by frame, evenly spread in model order;
    the trajectory takes those of the last one's width. Frames centred after ``max_seconds``
    are left out.
    """
    framed = [n for n in store.layers if store.layer_info(n).get("storage") == "frames"]
    if not framed:
        raise ValueError("no layer is stored frame by frame (extract.frames)")
    utt = choose_utterance(store.utt_ids, alignments, utt_id)
    chosen = pick_evenly(framed, max_layers)
    frames, times = {}, {}
    for layer in chosen:
        X = store.frames(layer, utt)
        t = store.grid(layer).centres(len(X))
        keep = t <= max_seconds
        frames[layer], times[layer] = X[keep], t[keep]
    log.info("%s: %s, layers %s, %d frames of the last", model, utt, ", ".join(chosen),
             len(frames[chosen[-1]]))
    width = frames[chosen[-1]].shape[1]
    same = [x for x in chosen if frames[x].shape[1] == width]
    return (selfsim_table(frames, times, model=model, utt_id=utt),
            trajectory_table({x: frames[x] for x in same}, {x: times[x] for x in same},
                             model=model, utt_id=utt))
