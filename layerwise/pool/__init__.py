"""Pooled matrices: one row per unit (utterance, word, phone or sampled frame) per layer.

Analyses compare layers on the *same rows*, so the rows are decided once per (span, pooling)
by :func:`build_index` — from the manifest, the alignments and the utterances present in the
feature store — and every layer is then pooled onto that index by :func:`pool_layer`, reading
the feature store utterance by utterance (memory bounded by one chunk, whatever the corpus).

Spans: ``utterance``; ``word`` and ``phone`` (frames whose centre falls inside the aligned
segment; a segment shorter than one frame gets the frame nearest its midpoint); ``frame``: at
most ``max_frames`` *instants* (``time_s``), drawn once per corpus — seeded, on a 10 ms grid,
from the manifest's durations, so every model gets the same instants — and each layer takes
its frame whose centre is nearest the instant. Frame centres and receptive fields come from
:mod:`layerwise.extract.frames`. A frame row's ``start_s``/``end_s`` are the receptive field of the
model's output frame at that instant (the window of its log-mel target); rows are matched
across models by ``(utt_id, time_s)``.
Poolings: ``mean``, ``meanstd`` (mean ‖ std), ``max``, ``center`` (middle frame), ``first``,
``last``, ``middle`` (mean over the middle third, as Pasad et al. use for phones).

With ``extract.store: pooled`` the extraction job ran these same functions on each batch
(:mod:`layerwise.pool.in_extraction`) and :func:`read_pooled` only gathers the shards' rows;
:func:`pool_store` is what ``pool_layers`` calls for either kind of store.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from layerwise.io.store import FeatureStore
from layerwise.vocabulary import POOLINGS, SPANS, layer_sort_key

log = logging.getLogger(__name__)
INDEX_COLUMNS = ["row", "utt_id", "start_s", "end_s", "unit"]
#: Instants are drawn on this grid (s), whatever the models' frame rates.
GRID_S = 0.01
#: No instant this close to either end of an utterance (s): a conv front end drops a partial
#: last window (wav2vec2's last frame may be centred 32 ms before the end).
EDGE_S = 0.03


def build_index(
    store: FeatureStore,
    manifest: pd.DataFrame,
    alignments: pd.DataFrame,
    span: str,
    *,
    labels: Sequence[str] = (),
    max_frames: int,
    seed: int = 0,
) -> pd.DataFrame:
    """The rows of a pooled matrix: ``row, utt_id, start_s, end_s, unit`` + label columns.

    ``unit`` is the word/phone label for word/phone spans. Frame rows add ``time_s`` (the
    instant), and the word and phone at that instant go to columns ``word`` and ``phone`` when
    alignments exist.
    """
    instants = (sample_instants(manifest, max_frames=max_frames, seed=seed) if span == "frame"
                else None)
    index = unit_rows(store, alignments, span, instants)
    check_alignments(span, index)
    return label_rows(index, manifest, labels)


def check_alignments(span: str, segments: pd.DataFrame) -> None:
    """Word and phone spans need segments of their tier (their rows, or the alignments')."""
    if span in ("word", "phone") and segments.empty:
        raise ValueError(f"span {span!r} needs {span} alignments (corpus.alignments)")


def unit_rows(store: FeatureStore, alignments: pd.DataFrame, span: str,
              instants: pd.DataFrame | None = None) -> pd.DataFrame:
    """The rows of ``span`` in ``store``'s utterances, before numbering and corpus labels.

    ``instants`` (from :func:`sample_instants`) are the frame span's; the rest need none.
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
        order = {u: i for i, u in enumerate(utts)}
        seg = seg.assign(_o=seg["utt_id"].map(order)).sort_values(["_o", "start_s"], kind="stable")
        index = pd.DataFrame({"utt_id": seg["utt_id"].to_numpy(), "start_s": seg["start_s"].to_numpy(),
                              "end_s": seg["end_s"].to_numpy(), "unit": seg["label"].to_numpy()})
        index[span] = index["unit"]
    else:
        if instants is None:
            raise ValueError("the frame span needs its instants (sample_instants)")
        index = _frame_rows(store, instants, duration)
        for tier in ("word", "phone"):
            index[tier] = pd.Series(_label_times(index["utt_id"], index["time_s"],
                                                 alignments[alignments["tier"] == tier]),
                                    index=index.index, dtype=str)
    return index


def label_rows(index: pd.DataFrame, manifest: pd.DataFrame, labels: Sequence[str] = ()
               ) -> pd.DataFrame:
    """Number the rows (column ``row``) and join the corpus ``labels`` from the manifest."""
    index = index.reset_index(drop=True)
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


def sample_instants(manifest: pd.DataFrame, *, max_frames: int, seed: int = 0,
                    grid_s: float = GRID_S, edge_s: float = EDGE_S) -> pd.DataFrame:
    """At most ``max_frames`` instants of the corpus: ``utt_id, time_s``, in manifest order.

    Drawn without replacement from the ``grid_s`` grid points of every manifest utterance
    (``duration_s``) at least ``edge_s`` from its ends, so the draw depends on the corpus and
    the seed only — not on a model's frame rate or on which files a model rejected.
    """
    if "duration_s" not in manifest.columns:
        raise ValueError("the frame span needs the manifest's duration_s column")
    utts = manifest["utt_id"].astype(str).to_numpy()
    dur = manifest["duration_s"].astype(float).to_numpy()
    first = int(np.ceil(edge_s / grid_s - 1e-9))
    counts = np.maximum(np.floor((dur - edge_s) / grid_s + 1e-9).astype(np.int64) - first + 1, 0)
    total = int(counts.sum())
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(total, size=min(max_frames, total), replace=False))
    owner = np.searchsorted(np.cumsum(counts), picks, side="right")
    step = first + picks - np.r_[0, np.cumsum(counts)][owner]
    return pd.DataFrame({"utt_id": utts[owner], "time_s": np.round(step * grid_s, 6)})


def output_layer(store: FeatureStore) -> str:
    """The layer whose frames stand for the model at an instant: its last framed layer."""
    framed = [n for n in store.layers if store.layer_info(n).get("storage") != "mean"]
    return max(framed or store.layers, key=layer_sort_key)


def _frame_rows(store: FeatureStore, instants: pd.DataFrame, duration: dict) -> pd.DataFrame:
    """Instants in this store's utterances, with the receptive field of the output frame."""
    dur = instants["utt_id"].map(duration).astype(float)  # float even with no instant
    keep = (dur.notna() & (instants["time_s"] <= dur - EDGE_S + 1e-4)).to_numpy()
    if not keep.all():
        log.info("frame span: %d of %d instants dropped, in %d utterances missing from this "
                 "store (or shorter than in the manifest)", (~keep).sum(), len(keep),
                 instants.loc[~keep, "utt_id"].nunique())
    instants = instants[keep].reset_index(drop=True)
    layer = output_layer(store)
    grid, n_frames = store.grid(layer), store.n_frames(layer)
    k = grid.nearest(instants["time_s"].to_numpy(),
                     instants["utt_id"].map(n_frames).to_numpy(dtype=np.int64))
    start, end = grid.field(k)
    return pd.DataFrame({"utt_id": instants["utt_id"], "start_s": np.round(start, 6),
                         "end_s": np.round(end, 6), "unit": "", "time_s": instants["time_s"]})


def _label_times(utt_ids: pd.Series, times: pd.Series, tier: pd.DataFrame) -> list[str]:
    """The label of the segment containing each time ('' outside any segment)."""
    out = [""] * len(utt_ids)
    by_utt = {u: g for u, g in tier.groupby("utt_id")}
    for i, (u, t) in enumerate(zip(utt_ids, times, strict=True)):
        g = by_utt.get(u)
        if g is None:
            continue
        k = np.searchsorted(g["start_s"].to_numpy(), t, side="right") - 1
        if k >= 0 and t < g["end_s"].iloc[k]:
            out[i] = g["label"].iloc[k]
    return out


def poolable_layers(store: FeatureStore, span: str, pooling: str) -> list[str]:
    """The stored layers that can be pooled this way, in model order.

    Layers stored only as utterance means (``extract.frames``) support utterance-mean alone.
    """
    if (span, pooling) == ("utterance", "mean"):
        return list(store.layers)
    return [n for n in store.layers if store.layer_info(n).get("storage", "frames") == "frames"]


def pool_layer(store: FeatureStore, layer: str, index: pd.DataFrame, pooling: str) -> np.ndarray:
    """Pool ``layer`` onto ``index``'s rows; returns float32 (rows, dim or 2·dim).

    Rows with a ``time_s`` (frame span) take the frame centred nearest that instant; other
    rows pool the frames centred in ``[start_s, end_s)``.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    info = store.layer_info(layer)
    dim = int(info["dim"])
    width = 2 * dim if pooling == "meanstd" else dim
    out = np.zeros((len(index), width), dtype=np.float32)
    instants = "time_s" in index.columns
    if info.get("storage") == "mean":
        if instants or not (index["start_s"] == 0).all() or pooling != "mean":
            raise ValueError(f"layer {layer} is stored only as an utterance mean "
                             "(add it to extract.frames to pool it otherwise)")
    grid = store.grid(layer)
    rows_of = index.groupby("utt_id", sort=False).indices
    short, gaps = 0, []
    for utt_id, frames in store.iter_utterances(layer):
        rows = rows_of.get(utt_id)
        if rows is None:
            continue
        if info.get("storage") == "mean":
            out[rows] = frames[0]
            continue
        if instants:
            times = index["time_s"].to_numpy(dtype=float)[rows]
            a = grid.nearest(times, len(frames))
            b = a + 1
            gaps.append(np.abs(grid.first_centre_s + a / grid.rate_hz - times))
        else:
            starts = index["start_s"].to_numpy(dtype=float)[rows]
            ends = index["end_s"].to_numpy(dtype=float)[rows]
            a, b = np.searchsorted(grid.centres(len(frames)), [starts, ends], side="left")
            empty = b <= a  # shorter than a frame: the frame nearest the midpoint
            a[empty] = grid.nearest((starts[empty] + ends[empty]) / 2, len(frames))
            b[empty] = a[empty] + 1
            short += int(empty.sum())
        for r, i, j in zip(rows, a, b, strict=True):
            out[r] = pool_frames(frames[i:j], pooling)
    if short:
        log.info("%s: %d segments shorter than one frame took their nearest frame", layer, short)
    if gaps:
        gap = np.concatenate(gaps) * 1000
        log.info("%s: instant to frame centre: median %.1f ms, max %.1f ms; %d of %d instants "
                 "outside their frame's receptive field", layer, np.median(gap), gap.max(),
                 (gap > grid.receptive_field_s * 500 + 1e-6).sum(), len(gap))
    return out


def pool_store(store: FeatureStore, manifest: pd.DataFrame, alignments: pd.DataFrame,
               span: str, pooling: str, *, labels: Sequence[str] = (), max_frames: int,
               seed: int) -> tuple[pd.DataFrame, list[str], Iterator[tuple[str, np.ndarray]]]:
    """A pooled folder's index, layer names and lazy ``(layer, matrix)`` pairs, from either
    kind of store: frames are pooled here; a pooled store's rows are read (:func:`read_pooled`).
    """
    names = poolable_layers(store, span, pooling)
    if store.mode == "pooled":
        index, layers = read_pooled(store, manifest, span, pooling, labels=labels)
    else:
        index = build_index(store, manifest, alignments, span, labels=labels,
                            max_frames=max_frames, seed=seed)
        layers = ((name, pool_layer(store, name, index, pooling)) for name in names)
    return index, names, layers


def read_pooled(store: FeatureStore, manifest: pd.DataFrame, span: str, pooling: str, *,
                labels: Sequence[str] = ()
                ) -> tuple[pd.DataFrame, Iterator[tuple[str, np.ndarray]]]:
    """The index and ``(layer, matrix)`` pairs of a pooled folder, from pooled-mode shards.

    Rows come in the order ``build_index`` gives a frames-mode store: the shards' processing
    order, except frame rows, which follow the manifest and then time (as ``sample_instants``).
    """
    index = store.pooled_index(span, pooling)
    check_alignments(span, index)
    if index.empty:
        raise ValueError(f"no {span} rows in any of {len(store.paths)} feature files "
                         "(every utterance rejected?)")
    order = np.arange(len(index))
    if span == "frame":
        position = {u: i for i, u in enumerate(manifest["utt_id"].astype(str))}
        order = np.lexsort((index["time_s"].to_numpy(), index["utt_id"].map(position).to_numpy()))
    index = label_rows(index.iloc[order], manifest, labels)
    layers = ((name, store.pooled_matrix(span, pooling, name)[order])
              for name in poolable_layers(store, span, pooling))
    return index, layers


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
