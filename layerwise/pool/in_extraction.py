"""Pooling inside the extraction job (``extract.store: pooled``): disk grows with units, not frames.

The extraction job hands each batch, as stored (in the storage dtype), to :class:`ShardPooler`,
which runs the functions ``pool_layers`` runs on a feature store — :func:`~layerwise.pool.unit_rows`,
:func:`~layerwise.pool.poolable_layers`, :func:`~layerwise.pool.pool_layer` — on a
:class:`BatchStore`, an in-memory view of that batch shaped like
:class:`~layerwise.io.store.FeatureStore`. The shard file then holds pooled rows and no frames;
:func:`layerwise.pool.read_pooled` concatenates the shards' rows for ``pool_layers`` in the order
:func:`~layerwise.pool.build_index` gives a frames-mode store. Both modes pool the same float32
values (the frames rounded to the storage dtype) with the same code in the same order, so their
pooled folders are bitwise equal.

Memory: one batch's frames (as the frames mode) plus its pooled rows; the manifest's sampled
instants and the alignments, grouped by utterance, are held for the whole job.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd

from layerwise import pool
from layerwise.extract.frames import FrameGrid, stored_grid
from layerwise.io.store import layer_sort_key


class BatchStore:
    """One batch's layers in memory, read through the part of the ``FeatureStore`` API that
    pooling uses (``attrs``, ``layers``, ``layer_info``, ``grid``, ``utt_ids``, ``n_samples``,
    ``n_frames``, ``iter_utterances``)."""

    def __init__(self, layer_attrs: dict[str, dict], attrs: dict, utt_ids: Sequence[str],
                 n_samples: Sequence[int], stored: dict[str, list[np.ndarray]]):
        self.attrs = attrs
        self.layers = sorted(layer_attrs, key=layer_sort_key)
        self._info = layer_attrs
        self.utt_ids = list(utt_ids)
        self._n_samples = {u: int(n) for u, n in zip(self.utt_ids, n_samples, strict=True)}
        self._stored = stored
        self._last: tuple[str, list[np.ndarray]] | None = None

    def layer_info(self, layer: str) -> dict:
        return self._info[layer]

    def grid(self, layer: str) -> FrameGrid:
        return stored_grid(layer, self._info[layer], self.attrs)

    def n_samples(self) -> dict[str, int]:
        return dict(self._n_samples)

    def n_frames(self, layer: str) -> dict[str, int]:
        return {u: len(x) for u, x in zip(self.utt_ids, self._stored[layer], strict=True)}

    def iter_utterances(self, layer: str) -> Iterator[tuple[str, np.ndarray]]:
        """As ``FeatureStore.iter_utterances``: float32 copies of the stored values (those of
        the last layer asked for are kept, so pooling a layer several ways converts it once)."""
        if self._last is None or self._last[0] != layer:
            self._last = None  # free the previous layer's copy first
            self._last = (layer, [x.astype(np.float32) for x in self._stored[layer]])
        yield from zip(self.utt_ids, self._last[1], strict=True)


class ShardPooler:
    """Pools each batch onto the rows of every configured ``span-pooling``."""

    def __init__(self, span_poolings: Sequence[str], manifest: pd.DataFrame,
                 alignments: pd.DataFrame, *, max_frames: int, seed: int = 0):
        self.names = list(span_poolings)
        self.spans: dict[str, list[str]] = {}
        for name in self.names:
            span, _, pooling = name.partition("-")
            if span not in pool.SPANS or pooling not in pool.POOLINGS:
                raise ValueError(f"not a span-pooling: {name!r}")
            self.spans.setdefault(span, []).append(pooling)
        for span in self.spans:
            pool.check_alignments(span, alignments[alignments["tier"] == span])
        self._empty = alignments.iloc[:0]
        self._aligned = {u: g for u, g in alignments.groupby("utt_id", sort=False)}
        self._instants = {}
        if "frame" in self.spans:
            instants = pool.sample_instants(manifest, max_frames=max_frames, seed=seed)
            self._instants = {u: g for u, g in instants.groupby("utt_id", sort=False)}
            self._no_instants = instants.iloc[:0]

    def pool(self, batch: BatchStore) -> dict[str, tuple[pd.DataFrame, dict[str, dict]]]:
        """``{span: (rows, {pooling: {layer: float32 matrix}})}`` for one batch."""
        aligned = _gather(self._aligned, batch.utt_ids, self._empty)
        rows = {}
        for span in self.spans:
            instants = (_gather(self._instants, batch.utt_ids, self._no_instants)
                        if span == "frame" else None)
            rows[span] = pool.unit_rows(batch, aligned, span, instants).reset_index(drop=True)
        matrices = {span: {p: {} for p in poolings} for span, poolings in self.spans.items()}
        with _quiet(pool.log):
            for name in batch.layers:  # layer by layer: one float32 copy of the batch at a time
                for span, poolings in self.spans.items():
                    for p in poolings:
                        if name in pool.poolable_layers(batch, span, p):
                            matrices[span][p][name] = pool.pool_layer(batch, name, rows[span], p)
        return {span: (rows[span], matrices[span]) for span in self.spans}


def _gather(groups: dict[str, pd.DataFrame], utt_ids: Sequence[str], empty: pd.DataFrame
            ) -> pd.DataFrame:
    """The rows of ``utt_ids``' groups, in that order (``empty`` when none has any)."""
    parts = [groups[u] for u in utt_ids if u in groups]
    return pd.concat(parts, ignore_index=True) if parts else empty


@contextmanager
def _quiet(logger: logging.Logger):
    """Silence ``pool_layer``'s per-layer statistics: logged for every batch, they would flood
    the extraction job's log."""
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
