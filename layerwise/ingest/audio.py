"""Audio decoding and checks: every file becomes 16 kHz mono float32, or a one-line reason why not.

soundfile (libsndfile) decodes FLAC/WAV/OGG and soxr resamples, so no FFmpeg or torchaudio is
needed. Every failure is turned into a :class:`RejectedAudio` with a sentence a person can read;
the workflow writes it to ``rejected.tsv`` and carries on with the other files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

#: wav2vec2-style models need at least one 400-sample (25 ms at 16 kHz) receptive field.
MIN_SECONDS = 0.025


class RejectedAudio(Exception):
    """An input file that cannot be used; ``str(exc)`` is the one-line reason."""


@dataclass(frozen=True)
class AudioInfo:
    """What the header says about a file (no samples decoded)."""

    duration_s: float
    sample_rate: int
    channels: int
    frames: int


def probe(path: str | Path) -> AudioInfo:
    """Read a file's header; raise :class:`RejectedAudio` if libsndfile cannot open it."""
    path = Path(path)
    if not path.exists():
        raise RejectedAudio("file not found")
    if path.is_dir():
        raise RejectedAudio("a folder, not an audio file")
    if path.stat().st_size == 0:
        raise RejectedAudio("empty file (0 bytes)")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile raises several types; all mean "unreadable"
        raise RejectedAudio(f"not readable as audio: {_one_line(exc)}") from exc
    if info.frames <= 0 or info.samplerate <= 0:
        raise RejectedAudio("no audio samples in file")
    declared = _wav_declared_bytes(path)
    if declared is not None and declared > path.stat().st_size:
        raise RejectedAudio(
            f"truncated: the WAV header declares {declared} bytes, the file has {path.stat().st_size}"
        )
    return AudioInfo(info.frames / info.samplerate, info.samplerate, info.channels, info.frames)


def load(
    path: str | Path,
    *,
    sample_rate: int = 16000,
    min_seconds: float = MIN_SECONDS,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Decode ``path`` to a mono float32 waveform at ``sample_rate``.

    Stereo (or more channels) is averaged; other rates are resampled with soxr (HQ). Raises
    :class:`RejectedAudio` for unreadable, truncated, empty, silent, non-finite, too short or
    too long audio, so a caller never feeds a model something meaningless.
    """
    info = probe(path)
    if max_seconds is not None and info.duration_s > max_seconds:
        raise RejectedAudio(
            f"too long: {info.duration_s:.1f} s > audio.max_seconds = {max_seconds:g} s"
        )
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise RejectedAudio(f"decoding failed: {_one_line(exc)}") from exc
    if data.shape[0] < info.frames:
        raise RejectedAudio(
            f"truncated: header says {info.frames} samples, only {data.shape[0]} decodable"
        )
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if wave.size == 0:
        raise RejectedAudio("no audio samples in file")
    if not np.all(np.isfinite(wave)):
        raise RejectedAudio("contains NaN or infinite sample values")
    if not np.any(wave):
        raise RejectedAudio("digital silence: every sample is zero")
    if sr != sample_rate:
        wave = soxr.resample(wave, sr, sample_rate, quality="HQ").astype(np.float32, copy=False)
    duration = wave.size / sample_rate
    if duration < min_seconds:
        raise RejectedAudio(
            f"too short: {duration * 1000:.1f} ms < {min_seconds * 1000:g} ms "
            "(the model's receptive field)"
        )
    return np.ascontiguousarray(wave, dtype=np.float32)


def write_wav(path: str | Path, wave: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> None:
    """Write a mono waveform; the parent folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, sample_rate, subtype=subtype)


def _wav_declared_bytes(path: Path) -> int | None:
    """End offset of the ``data`` chunk a RIFF/WAVE header declares (libsndfile silently
    shortens truncated WAVs, so a cut-off download would otherwise pass as a shorter file)."""
    import struct

    with path.open("rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        while True:
            chunk = fh.read(8)
            if len(chunk) < 8:
                return None
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                return fh.tell() + size if size != 0xFFFFFFFF else None
            fh.seek(size + (size & 1), 1)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
