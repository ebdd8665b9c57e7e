"""Extract every layer of one model over one audio shard into one feature file.

One forward pass per batch gives all layers (never one pass per layer). Utterances are taken
group by group, longest first (sorted by length, then id, so the order does not depend on the
batch size), packed into batches of at most ``batch_seconds`` of padded audio, and written as
they come. Batches never mix the manifest's hash groups: a batch's members, and so its padded
shape and its float rounding, then depend only on the group, which makes the features bitwise
identical whatever the number of shards. A batch that fails (e.g. out of memory) is split in
halves and retried once the failed pass's tensors are freed; an utterance that fails on its own
is rejected with its reason and the shard completes without it.
"""

from __future__ import annotations

import gc
import json
import logging
import platform
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from layerwise.extract import devices, encoders, models
from layerwise.ingest import audio
from layerwise.io import store as feature_store
from layerwise.io.tables import read_tsv, rejected_frame, write_tsv
from layerwise.pool.in_extraction import BatchStore, ShardPooler

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def plan_batches(costs: Sequence[float], budget: float, *, equal_key: Sequence | None = None
                 ) -> list[list[int]]:
    """Consecutive batches of item indices whose padded cost (max cost × count) ≤ ``budget``.

    Items are expected in decreasing cost order within a key; a batch always holds at least one
    item. With ``equal_key``, only consecutive items with the same key share a batch.
    """
    batches: list[list[int]] = []
    current: list[int] = []
    for i, cost in enumerate(costs):
        same = not current or equal_key is None or equal_key[current[0]] == equal_key[i]
        width = max(costs[current[0]], cost) if current else cost
        if current and (not same or width * (len(current) + 1) > budget):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def batch_order(enc: encoders.SpeechEncoder, table: pd.DataFrame, batch_seconds: float
                ) -> tuple[pd.DataFrame, list[list[int]]]:
    """A shard table in processing order (group, longest first, id) and its batches."""
    if "group" not in table:
        table = table.assign(group=0)
    table = table.sort_values(["group", "n_samples", "utt_id"], ascending=[True, False, True],
                              kind="stable").reset_index(drop=True)
    costs = [enc.cost_seconds(int(n)) for n in table["n_samples"]]
    key = list(table["group"])
    if enc.batching == "equal-length":
        key = list(zip(table["group"], table["n_samples"], strict=True))
    return table, plan_batches(costs, batch_seconds, equal_key=key)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def extract_shard(
    shard_table: str | Path,
    out_path: str | Path,
    rejected_path: str | Path,
    *,
    model_dir: str,
    source: str,
    revision: str | None,
    layers: Sequence[str],
    frames: Sequence[str],
    dtype: str,
    compute_dtype: str,
    device: str,
    batch_seconds: float,
    compression: str | None,
    attn_implementation: str,
    sample_rate: int,
    store: str,
    params_hash: str = "",
    progress: bool = True,
    pooler: ShardPooler | None = None,
) -> dict:
    """Write ``out_path`` (HDF5) for the utterances of ``shard_table``; return a small summary.

    ``model_dir`` is what is loaded (a hub id or a prepared folder); ``source`` is what the user
    wrote in the config, recorded in the file. With a ``pooler`` (``extract.store: pooled``)
    each batch is pooled onto its units as it comes and the file holds those rows, not frames.
    """
    if (store == "pooled") != (pooler is not None):
        raise ValueError(f"extract.store is {store!r}: a pooler is needed exactly when it is 'pooled'")
    dev = devices.resolve(device)
    devices.use_ieee_float32()
    loaded = models.load(model_dir, revision=revision, attn_implementation=attn_implementation)
    enc = encoders.wrap(loaded.model, loaded.feature_extractor, dev, DTYPES[compute_dtype])
    names = encoders.expand_layer_groups(enc.layers, layers)
    framed = set(encoders.expand_layer_groups(enc.layers, frames)) & set(names)
    pooled = set(names) - framed
    infos = [i for i in enc.layers if i.name in names]
    log.info("model %s on %s: %d layers (%d stored as frames), batching=%s",
             source, dev, len(names), len(framed), enc.batching)
    if enc.batching == "equal-length":
        log.warning("%s cannot be batched exactly with padding; only equal-length utterances "
                    "share a batch", enc.family)

    table, batches = batch_order(enc, read_tsv(shard_table, dtype={"utt_id": str, "path": str}),
                                 batch_seconds)
    rows = table.to_dict("records")
    attrs = {
        "model_source": source,
        "model_revision": loaded.revision,
        "model_type": loaded.model.config.model_type,
        "config_hash": params_hash,
        "batching": enc.batching,
        "attn_implementation": getattr(loaded.model.config, "_attn_implementation", ""),
        "compute_dtype": compute_dtype,
        "device": str(dev),
        **devices.provenance(dev),
        "sample_rate": sample_rate,
        "versions": json.dumps(library_versions()),
    }
    rejected: list[tuple[str, str, str]] = []
    total_samples = int(table["n_samples"].sum())
    total_s = total_samples / sample_rate
    # counted in samples (integers), shown in seconds: float seconds summed batch by batch
    # overshot the total by rounding, and tqdm warned in every job log
    bar = tqdm(total=total_samples, unit="audio-s", unit_scale=1 / sample_rate,
               desc=f"extract {Path(out_path).name}", disable=not progress, file=sys.stderr,
               mininterval=2.0,
               bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} audio-s [{elapsed}<{remaining}, "
                          "{rate_fmt}{postfix}]")
    with feature_store.ShardWriter(out_path, infos, framed, dtype=dtype, compression=compression,
                                   attrs=attrs, store=store,
                                   pooled=pooler.names if pooler else ()
                                   ) as writer, ThreadPoolExecutor(1) as pool:
        loads = _prefetch(pool, rows, batches, sample_rate)
        done = 0
        for batch_rows, waves in loads:
            good_rows = [r for r, w in zip(batch_rows, waves, strict=False) if not isinstance(w, str)]
            rejected += [(r["path"], "extract", w) for r, w in zip(batch_rows, waves, strict=False)
                         if isinstance(w, str)]
            good_waves = [w for w in waves if not isinstance(w, str)]
            for sub_rows, data in _run(enc, good_rows, good_waves, framed, pooled, rejected):
                ids, lengths = [r["utt_id"] for r in sub_rows], [int(r["n_samples"]) for r in sub_rows]
                stored = writer.append(ids, lengths, data)
                if pooler is not None:
                    units = pooler.pool(BatchStore(writer.layer_attrs, attrs, ids, lengths, stored))
                    for span, (index, matrices) in units.items():
                        writer.append_pooled(span, index, matrices)
            done += len(batch_rows)
            bar.update(sum(int(r["n_samples"]) for r in batch_rows))
            bar.set_postfix(utt=f"{done}/{len(rows)}", refresh=False)
    bar.close()
    for name, n in writer.nonfinite.items():
        if n:
            log.warning("%s: %d non-finite values (inf/nan) stored as %s%s; counted in the "
                        "layer's attribute 'nonfinite'", name, n, dtype,
                        " (beyond ±65504 overflows: use extract.dtype float32)"
                        if dtype == "float16" else "")
    write_tsv(rejected_frame(rejected), rejected_path)
    return {"utterances": len(rows) - len(rejected), "rejected": len(rejected),
            "audio_seconds": total_s, "device": str(dev),
            "nonfinite": sum(writer.nonfinite.values())}


def _prefetch(pool, rows, batches, sample_rate) -> Iterator[tuple[list[dict], list]]:
    """Decode the next batch's audio in a thread while the model runs on the current one."""

    def decode(idx):
        out = []
        for i in idx:
            try:
                out.append(audio.load(rows[i]["path"], sample_rate=sample_rate, min_seconds=0))
            except audio.RejectedAudio as exc:
                out.append(str(exc))
        return [rows[i] for i in idx], out

    pending = pool.submit(decode, batches[0]) if batches else None
    for nxt in [*batches[1:], None]:
        result = pending.result()
        pending = pool.submit(decode, nxt) if nxt is not None else None
        yield result


def _run(enc, rows, waves, framed, pooled, rejected) -> Iterator[tuple[list[dict], dict]]:
    """Forward a batch; on failure split it, and reject utterances that fail alone."""
    if not rows:
        return
    data, failure = _forward(enc, waves, framed, pooled)
    if failure is None:
        yield rows, data
        return
    _release(enc.device)
    if len(rows) == 1:
        secs = len(waves[0]) / enc.sample_rate
        reason = f"{failure[0]} on {enc.device} for a {secs:.1f} s file: {failure[1]}"
        log.warning("rejected %s: %s", rows[0]["utt_id"], reason)
        rejected.append((rows[0]["path"], "extract", reason))
        return
    half = len(rows) // 2
    yield from _run(enc, rows[:half], waves[:half], framed, pooled, rejected)
    yield from _run(enc, rows[half:], waves[half:], framed, pooled, rejected)


def _forward(enc, waves, framed, pooled) -> tuple[dict | None, tuple[str, str] | None]:
    """One pass as numpy arrays, or ``(what, message)`` of its failure.

    Only text leaves the handler: the exception's traceback holds the failed pass's frames and
    so its device tensors, which must be unreferenced before the halves are retried.
    """
    try:
        with torch.inference_mode():
            out = enc.forward(waves, framed, pooled)
        return {k: [t.cpu().numpy() for t in v] for k, v in out.items()}, None
    except Exception as exc:  # noqa: BLE001 - any failure of one file must not end the shard
        what = "out of memory" if _is_oom(exc) else "model failed"
        return None, (what, " ".join(str(exc).split())[:200])


def _release(device: torch.device) -> None:
    """Free what a failed pass left: reference cycles, then the CUDA allocator's cached blocks."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def library_versions() -> dict[str, str]:
    import h5py
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "h5py": h5py.__version__,
            "numpy": np.__version__, "layerwise": __import__("layerwise").__version__,
            "pandas": pd.__version__}
