"""The pooled-matrix format: one folder per (model, span, pooling), written and read here only.

Pooling writes, and every analysis reads, a folder (encoding-type ``layerwise-pooled``,
encoding-version ``1.0.0``)::

    pooled/{model}/{span}-{pooling}/
        meta.json       encoding-type, encoding-version, model, span, pooling, n_rows,
                        layers (names in model order), dims ({layer: columns})
        index.tsv       the rows: row, utt_id, start_s, end_s, unit, label columns
        {layer}.npy     float32 (n_rows, dim) for each layer named in meta.json

One job writes the whole folder, so the set of layers is a fact of the folder (``meta.json``)
rather than of the workflow's DAG. The reader maps each layer when it is looked up (:class:`Layers`),
so that an analysis holds only the layers it is using. The reader checks every file against ``meta.json`` and
stops with one line that names the damaged file and how to rebuild it, rather than letting an
analysis fail later on a shape mismatch.
"""

from __future__ import annotations

import json
import mmap
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from layerwise.errors import InputError
from layerwise.io.tables import read_tsv, write_tsv

ENCODING_TYPE = "layerwise-pooled"
ENCODING_VERSION = "1.0.0"
META = "meta.json"
INDEX = "index.tsv"


class PooledError(InputError):
    """A pooled folder that does not match its ``meta.json``; the message says how to rebuild."""


def _damaged(folder: Path, what: str) -> PooledError:
    return PooledError(f"{what} — delete {folder} and run snakemake again to rebuild it")


def write(folder: str | Path, index: pd.DataFrame, layers: Iterable[tuple[str, np.ndarray]], *,
          model: str, span: str, pooling: str) -> dict:
    """Write ``index`` and each ``(name, matrix)`` of ``layers`` (consumed one at a time, so
    only one layer is in memory), then ``meta.json`` last: a folder without it is incomplete."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_tsv(index, folder / INDEX)
    names, dims = [], {}
    for name, x in layers:
        if x.ndim != 2 or len(x) != len(index):
            raise ValueError(f"layer {name}: shape {x.shape}, expected ({len(index)}, dim)")
        np.save(folder / f"{name}.npy", np.ascontiguousarray(x, dtype=np.float32))
        names.append(name)
        dims[name] = int(x.shape[1])
    meta = {"encoding-type": ENCODING_TYPE, "encoding-version": ENCODING_VERSION,
            "model": model, "span": span, "pooling": pooling, "n_rows": len(index),
            "layers": names, "dims": dims}
    (folder / META).write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def read_meta(folder: str | Path) -> dict:
    """``meta.json`` of a pooled folder, checked for type and version."""
    folder = Path(folder)
    path = folder / META
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise _damaged(folder, f"{path}: missing (the pooling job did not finish)") from None
    except (OSError, ValueError) as exc:
        raise _damaged(folder, f"{path}: unreadable ({exc})") from None
    if meta.get("encoding-type") != ENCODING_TYPE:
        raise _damaged(folder, f"{path}: encoding-type {meta.get('encoding-type')!r} is not "
                               f"{ENCODING_TYPE!r}")
    if meta.get("encoding-version") != ENCODING_VERSION:
        raise _damaged(folder, f"{path}: encoding-version {meta.get('encoding-version')!r} is "
                               f"not one this layerwise reads ({ENCODING_VERSION})")
    return meta


def read_index(folder: str | Path) -> pd.DataFrame:
    """The rows of a pooled folder (times as floats; labels as strings, missing ones as '')."""
    folder = Path(folder)
    meta = read_meta(folder)
    path = folder / INDEX
    dtypes = defaultdict(lambda: str, row=int, start_s=float, end_s=float, time_s=float)
    try:
        index = read_tsv(path, dtype=dtypes, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise _damaged(folder, f"{path}: unreadable ({exc})") from None
    if len(index) != meta["n_rows"] or "utt_id" not in index.columns:
        raise _damaged(folder, f"{path}: stale or foreign index ({len(index)} rows, "
                               f"meta.json says {meta['n_rows']})")
    return index


def read_layer(folder: str | Path, name: str, meta: dict | None = None) -> np.ndarray:
    """One layer's matrix, memory-mapped and checked against ``meta.json`` (rows and columns;
    ``meta``: the folder's, when the caller has read it already)."""
    folder = Path(folder)
    meta = read_meta(folder) if meta is None else meta
    if name not in meta["layers"]:
        raise KeyError(f"{folder}: no layer {name!r}; it has {', '.join(meta['layers'])}")
    path = folder / f"{name}.npy"
    try:
        x = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise _damaged(folder, f"{path}: unreadable ({' '.join(str(exc).split())})") from None
    want = (meta["n_rows"], meta["dims"][name])
    if x.shape != want:
        raise _damaged(folder, f"{path}: shape {x.shape}, expected {want}")
    return np.asarray(x)


class Layers(Mapping):
    """``{layer: matrix}`` of a pooled folder in model layer order, each layer memory-mapped
    when it is looked up and unmapped when the caller lets go of it.

    Why: a process's peak resident memory (what a cluster's memory limit and the kernel's
    out-of-memory killer count) includes the pages of a mapped file it has read. Layers held
    open for the whole analysis would keep every page read, 5.5 GB for 25 layers x 1024 at
    54,000 rows; looked up one at a time, only the layer in use is resident. Code that keeps
    layers open across passes hands back their pages with :func:`release`. Pickled (to a
    worker process) as the folder's name.
    """

    def __init__(self, folder: str | Path, meta: dict | None = None) -> None:
        self.folder = Path(folder)
        self.meta = read_meta(self.folder) if meta is None else meta
        for name in self:  # a damaged file stops here, before any analysis has begun
            self[name]

    def __getitem__(self, name: str) -> np.ndarray:
        return read_layer(self.folder, name, self.meta)

    def __iter__(self) -> Iterator[str]:
        return iter(self.meta["layers"])

    def __len__(self) -> int:
        return len(self.meta["layers"])


def release(x: np.ndarray) -> None:
    """Hand the resident pages of a memory-mapped matrix back to the kernel (``madvise``
    ``MADV_DONTNEED``); the file stays mapped and a later read pages it in again from the
    page cache. Nothing happens to an array in memory."""
    base = x
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, mmap.mmap) and not base.closed:
        base.madvise(mmap.MADV_DONTNEED)


def read(folder: str | Path) -> tuple[pd.DataFrame, Layers]:
    """The index and the lazily mapped layers (:class:`Layers`)."""
    layers = Layers(folder)
    return read_index(folder), layers
