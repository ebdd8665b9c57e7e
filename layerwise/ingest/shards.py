"""Audio shards: the manifest's files of one shard, decoded once into 16 kHz mono WAV.

Extraction jobs then read plain WAV at the model's rate, and every file that cannot be used is
found here, once, with its reason (stage ``audio``), instead of crashing a GPU job later.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from layerwise.ingest import audio
from layerwise.io.tables import rejected_frame, write_tsv

SHARD_COLUMNS = ["utt_id", "path", "n_samples", "duration_s", "group"]


def safe_name(utt_id: str) -> str:
    """A file name for an utterance id (ids may hold slashes, spaces or non-ASCII)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", utt_id).strip("._") or "utt"
    if name != utt_id:
        name += f"-{zlib.crc32(utt_id.encode('utf-8')):08x}"
    return name


def build_shard(
    manifest: pd.DataFrame,
    shard: int,
    wav_dir: str | Path,
    table: str | Path,
    rejected: str | Path,
    *,
    sample_rate: int = 16000,
    convert: bool = True,
    min_seconds: float = audio.MIN_SECONDS,
    max_seconds: float | None = None,
    subtype: str = "PCM_16",
    progress: bool = True,
) -> tuple[int, int]:
    """Decode shard ``shard`` of ``manifest``; write its WAVs, its table and its rejections.

    With ``convert=False`` the files are still decoded and checked, but the table points at the
    source files (extraction then resamples on the fly). Returns ``(kept, rejected)`` counts.
    """
    wav_dir = Path(wav_dir)
    wav_dir.mkdir(parents=True, exist_ok=True)
    rows, bad = [], []
    todo = manifest[manifest["shard"] == shard]
    for utt_id, src, group in tqdm(
        zip(todo["utt_id"], todo["path"], todo["group"], strict=True), total=len(todo),
        desc=f"shard {shard}",
        unit="file", disable=not progress,
    ):
        try:
            wave = audio.load(
                src, sample_rate=sample_rate, min_seconds=min_seconds, max_seconds=max_seconds
            )
        except audio.RejectedAudio as exc:
            bad.append((src, "audio", str(exc)))
            continue
        path = src
        if convert:
            path = str(wav_dir / f"{safe_name(utt_id)}.wav")
            audio.write_wav(path, wave, sample_rate, subtype)
        rows.append((utt_id, path, wave.size, round(wave.size / sample_rate, 6), group))
    write_tsv(pd.DataFrame(rows, columns=SHARD_COLUMNS), table)
    write_tsv(rejected_frame(bad), rejected)
    return len(rows), len(bad)
