"""Pooled matrices: one row per unit (utterance, word, phone or sampled frame) per layer.

Analyses compare layers on the *same rows*, so the rows are decided once per (span, pooling)
by :func:`build_index` — from the manifest, the alignments and the utterances present in the
feature store — and every layer is then pooled onto that index by :func:`pool_layer`, reading
the feature store utterance by utterance (memory bounded by one chunk, whatever the corpus).

Spans: ``utterance``; ``word`` and ``phone`` (frames whose centre falls inside the aligned
segment; a segment shorter than one frame gets the frame nearest its midpoint); ``frame`` (a
seeded random subsample of at most ``max_frames`` time points, the same for every layer).
Poolings: ``mean``, ``meanstd`` (mean ‖ std), ``max``, ``center`` (middle frame), ``first``,
``last``, ``middle`` (mean over the middle third, as Pasad et al. use for phones).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from layerwise.store import FeatureStore

log = logging.getLogger(__name__)
SPANS = ("utterance", "word", "phone", "frame")
POOLINGS = ("mean", "meanstd", "max", "center", "first", "last", "middle")
INDEX_COLUMNS = ["row", "utt_id", "start_s", "end_s", "unit"]


def build_index(
    store: FeatureStore,
    manifest: pd.DataFrame,
    alignments: pd.DataFrame,
    span: str,
    *,
    labels: Sequence[str] = (),
    max_frames: int = 20000,
    frame_rate_hz: float = 50.0,
    seed: int = 0,
) -> pd.DataFrame:
    """The rows of a pooled matrix: ``row, utt_id, start_s, end_s, unit`` + label columns.

    ``unit`` is the word/phone label for word/phone spans; for frames, the word and phone the
    frame falls in go to columns ``word`` and ``phone`` when alignments exist.
    """
    if span not in SPANS:
        raise ValueError(f"span must be one of {SPANS}, got {span!r}")
    sr = int(store.attrs.get("sample_rate", 16000))
    duration = {u: n / sr for u, n in store.n_samples().items()}
    utts = [u for u in store.utt_ids]
    if span == "utterance":
        index = pd.DataFrame({"utt_id": utts, "start_s": 0.0,
                              "end_s": [duration[u] for u in utts], "unit": ""})
    elif span in ("word", "phone"):
        seg = alignments[(alignments["tier"] == span) & alignments["utt_id"].isin(duration)]
        if seg.empty:
            raise ValueError(f"span {span!r} needs {span} alignments (corpus.alignments)")
        order = {u: i for i, u in enumerate(utts)}
        seg = seg.assign(_o=seg["utt_id"].map(order)).sort_values(["_o", "start_s"], kind="stable")
        index = pd.DataFrame({"utt_id": seg["utt_id"].to_numpy(), "start_s": seg["start_s"].to_numpy(),
                              "end_s": seg["end_s"].to_numpy(), "unit": seg["label"].to_numpy()})
        index[span] = index["unit"]
    else:
        index = _sample_frames(utts, duration, max_frames, frame_rate_hz, seed)
        for tier in ("word", "phone"):
            index[tier] = _label_times(index, alignments[alignments["tier"] == tier])
    index.insert(0, "row", np.arange(len(index)))
    lab = manifest.set_index("utt_id")[[c for c in labels if c in manifest.columns]]
    return _join_labels(index, lab)


def _join_labels(index: pd.DataFrame, lab: pd.DataFrame) -> pd.DataFrame:
    """Join the corpus labels on ``utt_id``.

    A corpus label named like a column of the index (a Speech Commands ``word``, one word per
    file) serves as that column when the alignments gave no row a value (no word alignments);
    when both exist, the alignments win for the unit, and the log says so.
    """
    for col in lab.columns.intersection(index.columns):
        if (index[col].astype(str) != "").any():
            log.info("corpus label %r not used: the alignments give these rows their %s", col, col)
        else:
            index[col] = index["utt_id"].map(lab[col])
            log.info("corpus label %r serves as the %s of these rows (no %s alignments)",
                     col, col, col)
        lab = lab.drop(columns=col)
    return index.join(lab, on="utt_id")


def _sample_frames(utts, duration, max_frames, rate, seed) -> pd.DataFrame:
    counts = np.array([int(duration[u] * rate) for u in utts])
    total = int(counts.sum())
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(total, size=min(max_frames, total), replace=False))
    owner = np.searchsorted(np.cumsum(counts), picks, side="right")
    local = picks - np.r_[0, np.cumsum(counts)][owner]
    start = local / rate
    return pd.DataFrame({"utt_id": np.asarray(utts, dtype=object)[owner], "start_s": start,
                         "end_s": start + 1.0 / rate, "unit": ""})


def _label_times(index: pd.DataFrame, tier: pd.DataFrame) -> list[str]:
    """The label of the segment containing each row's centre ('' outside any segment)."""
    out = [""] * len(index)
    mids = ((index["start_s"] + index["end_s"]) / 2).to_numpy()
    by_utt = {u: g for u, g in tier.groupby("utt_id")}
    for i, (u, t) in enumerate(zip(index["utt_id"], mids, strict=True)):
        g = by_utt.get(u)
        if g is None:
            continue
        k = np.searchsorted(g["start_s"].to_numpy(), t, side="right") - 1
        if k >= 0 and t < g["end_s"].iloc[k]:
            out[i] = g["label"].iloc[k]
    return out


def transformer_rate(store: FeatureStore) -> float:
    """The frame rate of the transformer layers: the grid the frame span samples."""
    first = next((n for n in store.layers if n.startswith("layer.")), store.layers[-1])
    return float(store.layer_info(first)["frame_rate_hz"])


def poolable_layers(store: FeatureStore, span: str, pooling: str) -> list[str]:
    """The stored layers that can be pooled this way, in model order.

    Layers stored only as utterance means (``extract.frames``) support utterance-mean alone.
    """
    if (span, pooling) == ("utterance", "mean"):
        return list(store.layers)
    return [n for n in store.layers if store.layer_info(n).get("storage", "frames") == "frames"]


def pool_layer(store: FeatureStore, layer: str, index: pd.DataFrame, pooling: str) -> np.ndarray:
    """Pool ``layer`` onto ``index``'s rows; returns float32 (rows, dim or 2·dim)."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    info = store.layer_info(layer)
    rate, dim = float(info["frame_rate_hz"]), int(info["dim"])
    width = 2 * dim if pooling == "meanstd" else dim
    out = np.zeros((len(index), width), dtype=np.float32)
    if info.get("storage") == "mean":
        if not (index["start_s"] == 0).all() or pooling != "mean":
            raise ValueError(f"layer {layer} is stored only as an utterance mean "
                             "(add it to extract.frames to pool it otherwise)")
    rows_of = index.groupby("utt_id", sort=False).indices
    short = 0
    for utt_id, frames in store.iter_utterances(layer):
        rows = rows_of.get(utt_id)
        if rows is None:
            continue
        if info.get("storage") == "mean":
            out[rows] = frames[0]
            continue
        starts = index["start_s"].to_numpy()[rows]
        ends = index["end_s"].to_numpy()[rows]
        centres = (np.arange(len(frames)) + 0.5) / rate
        for r, s, e in zip(rows, starts, ends, strict=True):
            a, b = np.searchsorted(centres, [s, e], side="left")
            if b <= a:  # shorter than a frame: the frame nearest the midpoint
                a = int(np.clip(round((s + e) / 2 * rate - 0.5), 0, len(frames) - 1))
                b = a + 1
                short += 1
            out[r] = pool_frames(frames[a:b], pooling)
    if short:
        log.info("%s: %d segments shorter than one frame took their nearest frame", layer, short)
    return out


def pool_frames(x: np.ndarray, pooling: str) -> np.ndarray:
    """Pool a (T, D) block of frames into one vector."""
    if pooling == "mean":
        return x.mean(axis=0)
    if pooling == "meanstd":
        return np.concatenate([x.mean(axis=0), x.std(axis=0)])
    if pooling == "max":
        return x.max(axis=0)
    if pooling == "center":
        return x[len(x) // 2]
    if pooling == "first":
        return x[0]
    if pooling == "last":
        return x[-1]
    third = len(x) // 3
    return x[third : len(x) - third].mean(axis=0) if len(x) >= 3 else x.mean(axis=0)
