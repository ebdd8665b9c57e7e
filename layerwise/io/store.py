"""The feature store: one HDF5 file per (model, shard) holding every layer, and its reader.

This is the only module that reads or writes feature files, and it is the Python API for
notebooks::

    from layerwise.io import store
    fs = store.open("results/demo/features/wav2vec2-small")   # a folder of shards, or one file
    fs.layers                                 # ['cnn.0', ..., 'proj', 'layer.0', ...]
    x = fs.frames("layer.6", "1001-1-0000")   # (T, D) float32 for one utterance
    for utt_ids, frames, offsets in fs.iter_chunks("layer.6", max_rows=100_000): ...

Layout (encoding-type ``layerwise-features``, encoding-version ``1.1.0``)::

    /utterances/utt_id      (N,)   str
    /utterances/n_samples   (N,)   int64
    /layers/{name}/frames   (ΣT, D) float16|float32, chunked along rows
    /layers/{name}/offsets  (N+1,) int64   rows of utterance k: offsets[k]:offsets[k+1]
    /layers/{name}.attrs    frame_rate_hz, dim, kind, storage ("frames" | "mean"),
                            nonfinite (count of inf/nan values stored),
                            first_centre_s, receptive_field_s (see layerwise.extract.frames)
    /.attrs                 encoding-type/-version, model source, revision, library versions,
                            dtype, config hash, creation time, batching, attn implementation,
                            device name, CUDA/cuDNN versions, float32 precision,
                            store ("frames" | "pooled"), pooled (JSON list of span-pooling)

With ``store = "pooled"`` (``extract.store: pooled``) the extraction job pooled the frames
itself and the file holds no frames: the layer groups keep their attributes only, and::

    /pooled/{span}/index/{column}    (R,) str|float64   the span's rows (utt_id, start_s, ...)
    /pooled/{span}/{pooling}/{layer} (R, dim|2·dim) float32

Readers that need frames refuse such a file with one line saying how to rebuild it; version
1.0.0 files (no ``store`` attribute) hold frames.

Layers stored with ``storage = "mean"`` hold one row per utterance (its mean frame), so their
offsets are ``0..N``. ``nonfinite`` counts the inf/nan values of a layer after conversion to
the storage dtype: float16 turns values beyond ±65504 into inf without an error. Files are
written under a temporary name and renamed when complete (:mod:`layerwise.io.atomic`), so a killed
job never leaves a file that looks finished. Readers keep paths, not open handles, and reopen
per call (safe across processes and forks).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from layerwise.errors import InputError
from layerwise.extract.frames import FrameGrid, stored_grid
from layerwise.io import atomic
from layerwise.vocabulary import layer_sort_key

ENCODING_TYPE = "layerwise-features"
ENCODING_VERSION = "1.1.0"
#: Versions this reader understands: 1.0.0 files predate ``extract.store`` and hold frames.
READABLE_VERSIONS = ("1.0.0", ENCODING_VERSION)
#: ``extract.store``: every frame of the framed layers, or only rows pooled during extraction.
STORE_MODES = ("frames", "pooled")
CHUNK_BYTES = 1 << 20
POOLED_CHUNK_BYTES = 1 << 16


class StoreError(InputError):
    """A feature file that does not follow the layout; the message names the file and key."""


def damaged(path: str | Path, what: str) -> StoreError:
    """The one-line error for a damaged feature file: which file, what is wrong, the fix."""
    return StoreError(f"{path}: {what} — delete it and run snakemake again to rebuild it")


# --------------------------------------------------------------------------- writing


class ShardWriter:
    """Append utterances to a new feature file; rename into place on :meth:`close`.

    Use as a context manager: on an exception the temporary file is removed. ``nonfinite``
    counts each layer's inf/nan values as stored; :meth:`close` records it per layer.
    """

    def __init__(self, path: str | Path, layers: Sequence, frame_layers: set[str], *,
                 dtype: str = "float16", compression: str | None = None, attrs: dict | None = None,
                 store: str = "frames", pooled: Sequence[str] = ()):
        if store not in STORE_MODES:
            raise ValueError(f"store must be one of {STORE_MODES}, got {store!r}")
        self.store = store
        self.compression = compression
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = atomic.temp_path(self.path)
        self.dtype = np.dtype(dtype)
        self.f = h5py.File(self.tmp, "w")
        self.f.attrs.update({"encoding-type": ENCODING_TYPE, "encoding-version": ENCODING_VERSION,
                             "dtype": self.dtype.name, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                             "store": store, "pooled": json.dumps(list(pooled))})
        self.f.attrs.update({k: _attr(v) for k, v in (attrs or {}).items()})
        utt = self.f.create_group("utterances")
        utt.create_dataset("utt_id", (0,), maxshape=(None,), dtype=h5py.string_dtype(), chunks=(4096,))
        utt.create_dataset("n_samples", (0,), maxshape=(None,), dtype="int64", chunks=(4096,))
        self.layers = {}
        #: Each layer's attributes as readers see them (``FeatureStore.layer_info``).
        self.layer_attrs: dict[str, dict] = {}
        for info in layers:
            g = self.f.create_group(f"layers/{info.name}")
            self.layer_attrs[info.name] = {
                "frame_rate_hz": float(info.frame_rate_hz), "dim": int(info.dim),
                "kind": info.kind, "storage": "frames" if info.name in frame_layers else "mean",
                **{key: float(getattr(info, key)) for key in ("first_centre_s", "receptive_field_s")
                   if getattr(info, key, None) is not None}}  # the layer's FrameGrid
            g.attrs.update(self.layer_attrs[info.name])
            self.layers[info.name] = g
            if store == "pooled":
                continue
            rows = max(1, CHUNK_BYTES // (info.dim * self.dtype.itemsize))
            if info.name not in frame_layers:  # one mean row per utterance: small chunks
                rows = min(rows, 256)
            g.create_dataset("frames", (0, info.dim), maxshape=(None, info.dim), dtype=self.dtype,
                             chunks=(rows, info.dim), compression=compression,
                             shuffle=compression is not None)
            g.create_dataset("offsets", data=np.zeros(1, dtype="int64"), maxshape=(None,),
                             chunks=(4096,))
        self.nonfinite = dict.fromkeys(self.layers, 0)
        self.n = 0

    def append(self, utt_ids: Sequence[str], n_samples: Sequence[int], data: dict[str, list]
               ) -> dict[str, list[np.ndarray]]:
        """Add a batch: ``data[layer]`` is a list of (T, D) frames or (D,) means per utterance.

        Returns the batch as stored (in the storage dtype, as (T, D) or (1, D) arrays), which is
        what pooling during extraction pools, so that both modes pool the same values. In
        pooled mode only the utterances are written here.
        """
        k = len(utt_ids)
        _grow(self.f["utterances/utt_id"], list(utt_ids))
        _grow(self.f["utterances/n_samples"], np.asarray(n_samples, dtype="int64"))
        stored = {}
        for name, g in self.layers.items():
            dim = self.layer_attrs[name]["dim"]
            with np.errstate(over="ignore"):  # overflow to inf is counted in self.nonfinite
                items = [np.asarray(x, dtype=self.dtype).reshape(-1, dim) for x in data[name]]
            if len(items) != k:
                raise StoreError(f"{self.path}: layers/{name}: {len(items)} items for {k} utterances")
            stored[name] = items
            rows = np.concatenate(items)
            self.nonfinite[name] += int(rows.size - np.count_nonzero(np.isfinite(rows)))
            if self.store == "frames":
                end = g["offsets"][-1]
                _grow(g["frames"], rows)
                _grow(g["offsets"], end + np.cumsum([len(x) for x in items]))
        self.n += k
        return stored

    def append_pooled(self, span: str, index, matrices: dict[str, dict[str, np.ndarray]]) -> None:
        """Add pooled rows of one span (pooled mode): ``index`` (a DataFrame, one line per row:
        text or float columns) and ``matrices[pooling][layer]`` (rows × width, float32)."""
        if self.store != "pooled":
            raise ValueError("append_pooled needs store='pooled'")
        if index.empty:  # nothing to add; its columns' dtypes may not be the real ones
            return
        g = self.f.require_group(f"pooled/{span}")
        if "index" not in g:  # HDF5 lists members alphabetically: keep the column order
            g.create_group("index").attrs["columns"] = json.dumps(list(index.columns))
        for col in index.columns:
            text = not pd.api.types.is_numeric_dtype(index[col])
            values = index[col].astype(str).tolist() if text else index[col].to_numpy(np.float64)
            _grow(_growable(g, f"index/{col}", (), h5py.string_dtype() if text else "float64",
                            None), values)
        for pooling, layers in matrices.items():
            for name, x in layers.items():
                _grow(_growable(g, f"{pooling}/{name}", x.shape[1:], "float32",
                                self.compression), x)

    def close(self) -> Path:
        self.f.attrs["n_utterances"] = self.n
        for name, g in self.layers.items():
            g.attrs["nonfinite"] = self.nonfinite[name]
        self.f.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        self.f.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _growable(group: h5py.Group, name: str, row_shape: tuple, dtype, compression
              ) -> h5py.Dataset:
    """The extendable dataset ``name`` of ``group``, created empty on first use.

    Chunks are small (at most ``POOLED_CHUNK_BYTES``, or 256 rows): a shard holds few rows per
    span, and HDF5 allocates whole chunks.
    """
    if name not in group:
        width = int(np.prod(row_shape)) if row_shape else 1
        rows = min(256, max(1, POOLED_CHUNK_BYTES // (4 * width)))
        group.create_dataset(name, (0, *row_shape), maxshape=(None, *row_shape), dtype=dtype,
                             chunks=(rows, *row_shape), compression=compression,
                             shuffle=compression is not None)
    return group[name]


def _grow(ds: h5py.Dataset, values) -> None:
    n = len(values)
    if n == 0:
        return
    start = ds.shape[0]
    ds.resize(start + n, axis=0)
    ds[start:] = values


def _attr(value):
    return "" if value is None else value


# --------------------------------------------------------------------------- reading


class FeatureStore:
    """Read one model's features from one or several shard files, lazily."""

    def __init__(self, paths: Sequence[str | Path]):
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise StoreError("no feature files given")
        self._index: dict[str, tuple[int, int]] = {}
        self._utt_ids: list[str] = []
        for i, p in enumerate(self.paths):
            with self._open(p) as f:
                for k, u in enumerate(f["utterances/utt_id"].asstr()[:]):
                    self._index[u] = (i, k)
                    self._utt_ids.append(u)
                layers = sorted(f["layers"].keys(), key=layer_sort_key)
                settings = (layers, f.attrs.get("config_hash"), f.attrs.get("store", "frames"))
                if i == 0:
                    self.attrs = dict(f.attrs)
                    self.layers = layers
                    self._info = {n: dict(f[f"layers/{n}"].attrs) for n in self.layers}
                    first = settings
                elif settings != first:
                    raise damaged(p, f"its layers or extraction settings differ from "
                                     f"{self.paths[0]}'s (a shard of another model or run)")

    @staticmethod
    def _open(path: Path) -> h5py.File:
        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise damaged(path, f"not a readable HDF5 file ({' '.join(str(exc).split())})"
                          ) from None
        kind, version = f.attrs.get("encoding-type"), f.attrs.get("encoding-version")
        if kind != ENCODING_TYPE or version not in READABLE_VERSIONS:
            f.close()
            what = (f"encoding-type {kind!r} is not {ENCODING_TYPE!r}" if kind != ENCODING_TYPE
                    else f"encoding-version {version!r} is not one this layerwise reads "
                         f"({', '.join(READABLE_VERSIONS)})")
            raise damaged(path, what)
        return f

    @property
    def utt_ids(self) -> list[str]:
        return list(self._utt_ids)

    @property
    def mode(self) -> str:
        """``extract.store`` of these files: ``frames`` or ``pooled`` (rows pooled at extraction)."""
        return self.attrs.get("store", "frames")

    def _need(self, mode: str) -> None:
        """Stop with one line naming the file when it holds the other kind of data."""
        if self.mode == mode:
            return
        if mode == "frames":
            raise StoreError(f"{self.paths[0]}: holds rows pooled during extraction "
                             "(extract.store: pooled), not frames — set extract.store: frames "
                             "and run snakemake again to re-extract it")
        raise StoreError(f"{self.paths[0]}: holds frames (extract.store: frames), not rows pooled "
                         "during extraction — pool it with layerwise.pool.pool_layer")

    @property
    def pooled_spans(self) -> list[str]:
        """The ``span-pooling`` names pooled during extraction (pooled mode)."""
        return json.loads(self.attrs.get("pooled") or "[]")

    def pooled_index(self, span: str, pooling: str) -> pd.DataFrame:
        """Every shard's rows of ``span`` pooled during extraction, in shard order."""
        self._need("pooled")
        parts = []
        for p in self.paths:
            with self._open(p) as f:
                self._check_pooled(p, f, span, pooling)
                g = f.get(f"pooled/{span}/index")
                if g is not None:
                    parts.append(pd.DataFrame({c: g[c].asstr()[:].astype(object)
                                               if h5py.check_string_dtype(g[c].dtype)
                                               else g[c][:] for c in json.loads(g.attrs["columns"])}))
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    def pooled_matrix(self, span: str, pooling: str, layer: str) -> np.ndarray:
        """Every shard's ``layer`` rows of ``span-pooling``, float32, in shard order."""
        self._need("pooled")
        info = self.layer_info(layer)
        width = int(info["dim"]) * (2 if pooling == "meanstd" else 1)
        parts = [np.zeros((0, width), np.float32)]
        for p in self.paths:
            with self._open(p) as f:
                self._check_pooled(p, f, span, pooling)
                ds = f.get(f"pooled/{span}/{pooling}/{layer}")
                n = len(f[f"pooled/{span}/index/utt_id"]) if f"pooled/{span}/index" in f else 0
                if (ds is None and n) or (ds is not None and ds.shape != (n, width)):
                    raise damaged(p, f"pooled/{span}/{pooling}/{layer}: not {n} rows of {width}")
                if ds is not None:
                    parts.append(ds[:])
        return np.concatenate(parts)

    @staticmethod
    def _check_pooled(path: Path, f: h5py.File, span: str, pooling: str) -> None:
        held = json.loads(f.attrs.get("pooled") or "[]")
        if f"{span}-{pooling}" not in held:
            raise StoreError(f"{path}: no rows pooled for {span}-{pooling} during extraction "
                             f"(it holds {', '.join(held) or 'none'}) — delete it and run "
                             "snakemake again to rebuild it")

    def layer_info(self, layer: str) -> dict:
        """``frame_rate_hz``, ``dim``, ``kind``, ``storage`` (and the grid attrs) of a layer."""
        try:
            return self._info[layer]
        except KeyError:
            raise StoreError(f"layers/{layer}: no such layer ({', '.join(self.layers)})") from None

    def grid(self, layer: str) -> FrameGrid:
        """Where the layer's frames sit in time (centres, receptive field)."""
        return stored_grid(layer, self.layer_info(layer), self.attrs)

    def frames(self, layer: str, utt_id: str) -> np.ndarray:
        """One utterance's rows of ``layer`` as float32 (T, D) (one row for pooled layers)."""
        self._need("frames")
        self.layer_info(layer)
        try:
            i, k = self._index[utt_id]
        except KeyError:
            raise StoreError(f"utterance {utt_id!r} is not in this store") from None
        with self._open(self.paths[i]) as f:
            g = f[f"layers/{layer}"]
            a, b = g["offsets"][k : k + 2]
            return g["frames"][a:b].astype(np.float32)

    def n_samples(self) -> dict[str, int]:
        out = {}
        for p in self.paths:
            with self._open(p) as f:
                out.update(zip(f["utterances/utt_id"].asstr()[:], f["utterances/n_samples"][:], strict=False))
        return out

    def n_frames(self, layer: str) -> dict[str, int]:
        """Rows of ``layer`` per utterance, from the offsets alone."""
        self._need("frames")
        self.layer_info(layer)
        out = {}
        for p in self.paths:
            with self._open(p) as f:
                off = f[f"layers/{layer}/offsets"][:]
                out.update(zip(f["utterances/utt_id"].asstr()[:], np.diff(off).tolist(),
                               strict=True))
        return out

    def iter_utterances(self, layer: str) -> Iterator[tuple[str, np.ndarray]]:
        """``(utt_id, frames)`` for every utterance, reading chunk by chunk."""
        for utt_ids, rows, offsets in self.iter_chunks(layer):
            for j, u in enumerate(utt_ids):
                yield u, rows[offsets[j] : offsets[j + 1]]

    def iter_chunks(self, layer: str, *, max_rows: int = 65536
                    ) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
        """Whole utterances, about ``max_rows`` rows at a time: ``(utt_ids, rows, offsets)``.

        ``rows[offsets[j]:offsets[j+1]]`` belong to ``utt_ids[j]``; memory stays bounded by
        ``max_rows`` (or one utterance, if longer).
        """
        self._need("frames")
        self.layer_info(layer)
        for p in self.paths:
            with self._open(p) as f:
                ids = f["utterances/utt_id"].asstr()[:]
                g = f[f"layers/{layer}"]
                off = g["offsets"][:]
                start = 0
                while start < len(ids):
                    stop = int(np.searchsorted(off, off[start] + max_rows, side="right")) - 1
                    stop = min(max(stop, start + 1), len(ids))
                    rows = g["frames"][off[start] : off[stop]].astype(np.float32)
                    yield list(ids[start:stop]), rows, off[start : stop + 1] - off[start]
                    start = stop


class StoredRows:
    """One layer's frames of every utterance of every shard as one read-only ``(n, d)``
    float32 array-like, read on demand: what the all-frame similarity streams chunk by
    chunk instead of loading a frame-level layer (hundreds of GiB on a real corpus).

    Indexing takes an int, a slice (step 1) or an array of row numbers; a read covers the
    rows between the smallest and largest asked for, so index compact runs of rows.  The
    shard files stay open while the object lives (one process; not for forks).
    """

    def __init__(self, store: FeatureStore, layer: str) -> None:
        self.layer = layer
        dim = int(store.layer_info(layer)["dim"])
        self._files = [store._open(p) for p in store.paths]
        self._frames = [f[f"layers/{layer}/frames"] for f in self._files]
        counts = [int(f[f"layers/{layer}/offsets"][-1]) for f in self._files]
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.shape = (int(self._starts[-1]), dim)
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def close(self) -> None:
        for f in self._files:
            f.close()

    def _range(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((max(stop - start, 0), self.shape[1]), dtype=np.float32)
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        for i in range(max(first, 0), len(self._frames)):
            lo, hi = max(start, self._starts[i]), min(stop, self._starts[i + 1])
            if lo >= stop:
                break
            if hi > lo:
                base = self._starts[i]
                out[lo - start:hi - start] = self._frames[i][lo - base:hi - base]
        return out

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):
            rows, cols = key
            return self[rows][..., cols]
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            if step != 1:
                raise IndexError("StoredRows takes slices of step 1")
            return self._range(start, stop)
        if np.ndim(key) == 0:
            row = int(key) + (self.shape[0] if int(key) < 0 else 0)
            return self._range(row, row + 1)[0]
        rows = np.asarray(key, dtype=np.int64)
        if rows.size == 0:
            return np.empty((0, self.shape[1]), dtype=np.float32)
        lo = int(rows.min())
        return self._range(lo, int(rows.max()) + 1)[rows - lo]


def stored_utterances(store: FeatureStore, layer: str) -> np.ndarray:
    """Utterance number (store order) of every row of :class:`StoredRows` ``(store, layer)``:
    the clusters of an all-frame bootstrap."""
    counts = []
    for p in store.paths:
        with store._open(p) as f:
            counts.append(np.diff(f[f"layers/{layer}/offsets"][:]))
    counts = np.concatenate(counts) if counts else np.empty(0, dtype=np.int64)
    return np.repeat(np.arange(counts.size), counts)


def open(path: str | Path | Sequence[str | Path]) -> FeatureStore:  # noqa: A001 - API name
    """Open a shard file, a folder of ``shard-*.h5`` files, or a list of files."""
    if isinstance(path, str | Path):
        path = Path(path)
        paths = sorted(path.glob("shard-*.h5")) if path.is_dir() else [path]
    else:
        paths = list(path)
    return FeatureStore(paths)

