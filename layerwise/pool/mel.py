"""The log-mel target of frame rows: each row's spectrum over its frame's receptive field.

Part of pooling, not of the analyses: ``pool_mel`` computes it once per model from the frame
span's index (whose ``start_s``/``end_s`` are the receptive field of the model's output frame at
each instant, :mod:`layerwise.pool`), and ``cca_targets`` reads the matrix as a target like a
layer. Memory: one decoded utterance and one (rows, 80) float32 matrix; time grows with rows ×
FFT length.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd


def log_mel_windows(wave: np.ndarray, starts: np.ndarray, ends: np.ndarray, *,
                    sample_rate: int = 16000, n_fft: int | None = None, n_mels: int = 80
                    ) -> np.ndarray:
    """Log-mel spectrum (log10 power, slaney filters) of each window ``wave[start:end]``.

    A Hann window spans each window's own samples (those outside the wave count as silence);
    the FFT (``n_fft``, by default the longest window) is zero-padded to at least 25 ms, so the
    filters stay defined for short windows. Returns (windows, n_mels) float32.
    """
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.maximum(np.asarray(ends, dtype=np.int64), starts + 1)
    n_fft = max(n_fft or int((ends - starts).max(initial=1)), round(0.025 * sample_rate))
    filters = _mel_filters(n_fft, sample_rate, n_mels)
    padded = np.pad(np.asarray(wave, dtype=np.float64), n_fft)
    power = np.empty((len(starts), n_fft // 2 + 1))
    for i, (a, b) in enumerate(zip(starts, ends, strict=True)):
        seg = padded[a + n_fft : b + n_fft]
        hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(len(seg)) / len(seg))
        power[i] = np.abs(np.fft.rfft(seg * hann, n=n_fft)) ** 2
    return np.log10(np.maximum(power @ filters, 1e-10)).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _mel_filters(n_fft: int, sample_rate: int, n_mels: int) -> np.ndarray:
    from transformers.audio_utils import mel_filter_bank

    return mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels,
                           min_frequency=0.0, max_frequency=sample_rate / 2,
                           sampling_rate=sample_rate, norm="slaney", mel_scale="slaney")


def mel_matrix(index: pd.DataFrame, wav_paths: dict[str, str], *,
               sample_rate: int = 16000) -> np.ndarray:
    """The log-mel target of each row of an index, over the row's ``[start_s, end_s)``.

    A frame-span row's window is the receptive field of the model's frame at its instant (see
    :mod:`layerwise.pool`), so the target sees exactly the audio that frame sees. One
    utterance is decoded at a time.
    """
    from layerwise.ingest import audio

    start = np.floor(index["start_s"].to_numpy(dtype=float) * sample_rate + 1e-6)
    end = np.floor(index["end_s"].to_numpy(dtype=float) * sample_rate + 1e-6)
    n_fft = int((end - start).max(initial=1))
    out = np.zeros((len(index), 80), dtype=np.float32)
    for utt, rows in index.groupby("utt_id", sort=False).indices.items():
        wave = audio.load(wav_paths[utt], sample_rate=sample_rate, min_seconds=0)
        out[rows] = log_mel_windows(wave, start[rows], end[rows], sample_rate=sample_rate,
                                    n_fft=n_fft)
    return out
