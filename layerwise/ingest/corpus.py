"""Corpus ingestion: find the utterances of a corpus, their labels and a stable shard for each.

A corpus comes from one of four sources (``librispeech``, ``folder``, ``manifest``, ``hf``); each
is turned into the same manifest table (``utt_id, path, duration_s, sample_rate, channels, shard``
plus label columns). Files whose header cannot be read are not dropped silently: they come back
as rejected rows with a reason.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from layerwise.ingest import alignments as alignments_mod
from layerwise.ingest.audio import RejectedAudio, probe
from layerwise.io.tables import rejected_frame

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".aiff", ".aif", ".au", ".mp3"}
MANIFEST_COLUMNS = ["utt_id", "path", "duration_s", "sample_rate", "channels", "shard", "group"]
log = logging.getLogger(__name__)
LIBRISPEECH_ID = re.compile(r"^(?P<speaker>\d+)-(?P<chapter>\d+)-(?P<utt>\d+)$")


@dataclass
class Candidate:
    """An utterance found by a source, before its header is read."""

    utt_id: str
    path: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class ScanResult:
    manifest: pd.DataFrame
    rejected: pd.DataFrame
    alignments: pd.DataFrame | None
    label_columns: list[str]


# --------------------------------------------------------------------------- sources


def librispeech_candidates(root: str | Path) -> list[Candidate]:
    """Scan ``<speaker>/<chapter>/<spk>-<chap>-<utt>.flac`` with transcripts and SPEAKERS.TXT."""
    root = Path(root)
    genders = _librispeech_genders(root)
    transcripts: dict[str, str] = {}
    for trans in root.rglob("*.trans.txt"):
        for line in trans.read_text(encoding="utf-8").splitlines():
            utt, _, text = line.partition(" ")
            transcripts[utt] = text.strip()
    out = []
    for path in sorted(root.rglob("*.flac")):
        m = LIBRISPEECH_ID.match(path.stem)
        labels = {"speaker": m["speaker"], "chapter": m["chapter"]} if m else {}
        if m and m["speaker"] in genders:
            labels["gender"] = genders[m["speaker"]]
        if path.stem in transcripts:
            labels["text"] = transcripts[path.stem]
        out.append(Candidate(path.stem if m else _relative_id(path, root), str(path), labels))
    return out


def _librispeech_genders(root: Path) -> dict[str, str]:
    for folder in (root, root.parent, root.parent.parent):
        speakers = folder / "SPEAKERS.TXT"
        if speakers.exists():
            genders = {}
            for line in speakers.read_text(encoding="utf-8").splitlines():
                if line.startswith(";") or "|" not in line:
                    continue
                fields = [f.strip() for f in line.split("|")]
                genders[fields[0]] = fields[1]
            return genders
    return {}


def folder_candidates(root: str | Path, glob: str, labels_from_path: str | None) -> list[Candidate]:
    """Any tree of audio files; labels come from named groups of a regex on the relative path."""
    root = Path(root)
    pattern = re.compile(labels_from_path) if labels_from_path else None
    out = []
    for path in sorted(root.glob(glob)):
        if not path.is_file() or path.suffix.lower() not in AUDIO_SUFFIXES:
            continue
        rel = path.relative_to(root).as_posix()
        labels = {}
        if pattern is not None:
            m = pattern.search(rel)
            labels = {k: v for k, v in (m.groupdict() if m else {}).items() if v is not None}
        out.append(Candidate(_relative_id(path, root), str(path), labels))
    return out


def manifest_candidates(manifest: str | Path) -> list[Candidate]:
    """A user TSV/CSV with a ``path`` column; other columns are labels (``utt_id`` is kept)."""
    manifest = Path(manifest)
    sep = "," if manifest.suffix.lower() == ".csv" else "\t"
    df = pd.read_csv(manifest, sep=sep, dtype=str, keep_default_na=False)
    if "path" not in df.columns:
        raise ValueError(f"{manifest}: no 'path' column (columns: {', '.join(df.columns)})")
    out = []
    for row in df.to_dict("records"):
        rel = row.pop("path")
        path = Path(rel) if Path(rel).is_absolute() else manifest.parent / rel
        utt = row.pop("utt_id", "") or Path(rel).with_suffix("").as_posix()
        out.append(Candidate(utt, str(path), row))
    return out


def hf_candidates(spec: dict, audio_dir: Path) -> list[Candidate]:
    """A Hugging Face ``datasets`` dataset (hub name, ``load_from_disk`` folder or audiofolder).

    Audio is read undecoded (``Audio(decode=False)``) and its bytes written under ``audio_dir``,
    so soundfile decodes it like any other file and no FFmpeg/TorchCodec is needed.
    """
    import datasets  # optional dependency: pip install 'layerwise[hf]'

    ds = _load_hf(datasets, spec)
    col = spec.get("audio_column", "audio")
    ds = ds.cast_column(col, datasets.Audio(decode=False))
    label_cols = spec.get("label_columns") or [c for c in ds.column_names if c != col]
    audio_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for i, row in enumerate(ds):
        audio = row[col]
        src = audio.get("path") or f"{i:08d}.wav"
        suffix = Path(src).suffix or ".wav"
        utt = str(row["id"]) if "id" in row and "id" not in label_cols else Path(src).stem
        utt = f"{i:08d}-{utt}" if not utt else utt
        dest = audio_dir / f"{i:08d}{suffix}"
        if audio.get("bytes") is not None:
            if not dest.exists() or dest.stat().st_size != len(audio["bytes"]):
                dest.write_bytes(audio["bytes"])
        else:
            dest = Path(audio["path"])
        out.append(Candidate(utt, str(dest), {c: str(row[c]) for c in label_cols}))
    return out


def _load_hf(datasets, spec: dict):
    name, split = spec.get("dataset"), spec.get("split", "train")
    path = spec.get("path")
    if path and (Path(path, "dataset_info.json").exists() or Path(path, "state.json").exists()):
        ds = datasets.load_from_disk(path)
        return ds[split] if isinstance(ds, datasets.DatasetDict) else ds
    if path:  # a plain folder of audio (+ metadata.csv): the audiofolder builder
        return datasets.load_dataset("audiofolder", data_dir=path, split=split)
    return datasets.load_dataset(name, spec.get("config"), split=split)


def _relative_id(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


# --------------------------------------------------------------------------- sharding


def batch_groups(utt_ids: Iterable[str], n_groups: int) -> np.ndarray:
    """A fixed hash group per utterance; extraction batches never mix groups.

    Because a batch's members (and so its padded shape) then depend only on the group, not on
    which shard the group landed in, features are bitwise identical whatever the shard count.
    """
    return np.array([_hash(u) % n_groups for u in utt_ids], dtype=int)


def assign_shards(groups: Iterable[int], durations: Iterable[float], n_shards: int) -> np.ndarray:
    """Balanced, stable shard numbers for whole groups, by bounded-load rendezvous hashing.

    Each group ranks the shards by ``hash(group, shard)`` and takes its best-ranked shard that
    stays within 2 % of a fair share of the total duration, or else the least loaded shard.
    Groups are placed in hash order, so adding files moves few groups, while no shard holds
    much more audio than another.
    """
    groups = np.asarray(list(groups))
    durations = np.asarray(list(durations), dtype=float)
    if n_shards <= 1 or not len(groups):
        return np.zeros(len(groups), dtype=int)
    keys, inverse = np.unique(groups, return_inverse=True)
    per_group = np.bincount(inverse, weights=durations)
    capacity = 1.02 * per_group.sum() / n_shards
    load = np.zeros(n_shards)
    shard_of = np.zeros(len(keys), dtype=int)
    for g in sorted(range(len(keys)), key=lambda k: _hash(str(keys[k]))):
        ranks = sorted(range(n_shards), key=lambda s, k=keys[g]: _hash(f"{k}\0{s}"))
        s = next((s for s in ranks if load[s] + per_group[g] <= capacity), int(np.argmin(load)))
        shard_of[g] = s
        load[s] += per_group[g]
    return shard_of[inverse]


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


# --------------------------------------------------------------------------- scan


def scan(cfg: dict, *, hf_audio_dir: str | Path | None = None, progress: bool = True) -> ScanResult:
    """Build the manifest for the ``corpus:`` section of the config.

    Reads every candidate's header (not its samples); unreadable files become rejected rows at
    stage ``scan``; duplicate ids are rejected too. ``limit`` keeps the first N ids in sorted order.
    """
    source = cfg["source"]
    if source == "librispeech":
        cands = librispeech_candidates(cfg["path"])
    elif source == "folder":
        cands = folder_candidates(cfg["path"], cfg.get("glob", "**/*"), cfg.get("labels_from_path"))
    elif source == "manifest":
        cands = manifest_candidates(cfg["path"])
    elif source == "hf":
        spec = {**(cfg.get("hf") or {}), "path": cfg.get("path")}
        cands = hf_candidates(spec, Path(hf_audio_dir or "hf_audio"))
    else:
        raise ValueError(f"corpus.source: unknown source {source!r}")
    cands.sort(key=lambda c: c.utt_id)
    if cfg.get("limit") is not None:
        cands = cands[: cfg["limit"]]

    rows, rejected, seen = [], [], set()
    for cand in tqdm(cands, desc="scan", unit="file", disable=not progress):
        if cand.utt_id in seen:
            rejected.append((cand.path, "scan", f"duplicate utt_id {cand.utt_id!r}"))
            continue
        try:
            info = probe(cand.path)
        except RejectedAudio as exc:
            rejected.append((cand.path, "scan", str(exc)))
            continue
        seen.add(cand.utt_id)
        rows.append(
            {
                "utt_id": cand.utt_id,
                "path": cand.path,
                "duration_s": round(info.duration_s, 6),
                "sample_rate": info.sample_rate,
                "channels": info.channels,
                **cand.labels,
            }
        )
    if not rows:
        raise CorpusError(_nothing_usable(cfg, len(cands), rejected))
    manifest = pd.DataFrame(rows)
    if "label_table" in cfg and cfg["label_table"] and len(manifest):
        manifest = join_label_table(manifest, cfg["label_table"])
    groups = batch_groups(manifest["utt_id"], cfg.get("batch_groups", 64))
    manifest.insert(5, "shard", assign_shards(groups, manifest["duration_s"], cfg.get("shards", 1)))
    manifest.insert(6, "group", groups)
    label_columns = [c for c in manifest.columns if c not in MANIFEST_COLUMNS and c != "text"]
    aligned = None
    if cfg.get("alignments"):
        keys = {u: u for u in manifest["utt_id"]}
        keys.update({Path(p).stem: u for u, p in zip(manifest["utt_id"], manifest["path"], strict=False)})
        aligned = alignments_mod.load(cfg["alignments"], keys)
        durations = dict(zip(manifest["utt_id"], manifest["duration_s"], strict=True))
        aligned, note = alignments_mod.clip_to_audio(aligned, durations)
        if note:
            log.warning(note)
    return ScanResult(manifest, rejected_frame(rejected), aligned, label_columns)


class LabelTableError(ValueError):
    """A label table that cannot be joined; the message names the table and the key."""


def read_label_table(path: str | Path, key: str) -> pd.DataFrame:
    """A side table of labels with one row per value of ``key`` (checked before any job).

    Two rows for one key would give an utterance two values of a label; rather than keep one
    silently, the first duplicate key is named.
    """
    path = Path(path)
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    try:
        side = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise LabelTableError(f"{path}: not a readable table ({' '.join(str(exc).split())})"
                              ) from None
    if key not in side.columns:
        raise LabelTableError(f"{path} has no column {key!r} (columns: {', '.join(side.columns)})")
    dup = side[key][side[key].duplicated()]
    if len(dup):
        first = dup.iloc[0]
        raise LabelTableError(f"{path}: {key} {first!r} is on {(side[key] == first).sum()} rows "
                              f"(a label table needs one row per {key})")
    return side


class CorpusError(ValueError):
    """A corpus with no usable utterance; the message says where it looked and why."""


def _nothing_usable(cfg: dict, n_found: int, rejected: list[tuple[str, str, str]]) -> str:
    where = cfg.get("path") or (cfg.get("hf") or {}).get("dataset")
    if not n_found:
        return f"corpus: no audio files found in {where} (corpus.source = {cfg['source']})"
    reasons = Counter(r for _, _, r in rejected)
    counts = "; ".join(f"{n} {r}" for r, n in reasons.most_common(3))
    hint = ""
    if cfg["source"] == "manifest":
        hint = " (manifest paths are relative to the manifest's folder)"
    return (f"corpus: all {n_found} files of {where} were rejected at scan ({counts}; first: "
            f"{rejected[0][0]}){hint}")


def join_label_table(manifest: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """Add columns from a side table (e.g. speaker → accent) joined on one key column."""
    path, key = Path(spec["path"]), spec["on"]
    side = read_label_table(path, key)
    if key not in manifest.columns:
        raise LabelTableError(f"corpus.label_table.on: the corpus has no column {key!r} "
                              f"(columns: {', '.join(manifest.columns)})")
    new = [c for c in side.columns if c == key or c not in manifest.columns]
    return manifest.merge(side[new], on=key, how="left")


def write_scan(result: ScanResult, manifest: str | Path, alignments: str | Path,
               rejected: str | Path) -> None:
    """Write the three scan outputs (alignments may be empty when the corpus has none)."""
    from layerwise.io.tables import write_tsv

    write_tsv(result.manifest, manifest)
    aligned = result.alignments
    write_tsv(aligned if aligned is not None else pd.DataFrame(columns=alignments_mod.COLUMNS),
              alignments)
    write_tsv(result.rejected, rejected)
