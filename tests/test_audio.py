"""layerwise.ingest.audio on files the tests write: good ones in many formats, and bad ones."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from conftest import speechlike

from layerwise.ingest import audio


def test_stereo_44k_is_averaged_and_resampled(tmp_path):
    left, right = speechlike(44100, 1, 44100), speechlike(44100, 2, 44100)
    sf.write(tmp_path / "st.wav", np.stack([left, right], axis=1), 44100)
    wave = audio.load(tmp_path / "st.wav")
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(wave.size - 16000) <= 1
    # averaging then resampling == resampling the average (both linear)
    import soxr

    ref = soxr.resample((left + right) / 2, 44100, 16000, quality="HQ")
    np.testing.assert_allclose(wave, ref, atol=1e-4)


@pytest.mark.parametrize("sr,subtype", [(8000, "PCM_16"), (16000, "PCM_24"), (22050, "FLOAT")])
def test_rates_and_bit_depths(tmp_path, sr, subtype):
    sf.write(tmp_path / "x.wav", speechlike(sr, 0, sr), sr, subtype=subtype)
    wave = audio.load(tmp_path / "x.wav", sample_rate=16000)
    assert abs(wave.size - 16000) <= 1 and np.abs(wave).max() > 0.1


def test_non_ascii_name_with_spaces(tmp_path):
    p = tmp_path / "ça va — déjà vu 01.flac"
    sf.write(p, speechlike(8000, 0), 16000)
    assert audio.load(p).size == 8000


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(b"RIFF0000WAVEfmt garbage" * 3), "not readable"),
        (lambda p: sf.write(p, np.zeros(16000, np.float32), 16000), "silence"),
        (lambda p: sf.write(p, speechlike(200, 0), 16000), "too short"),
        (lambda p: sf.write(p, speechlike(16000 * 3, 0), 16000), "too long"),
    ],
)
def test_bad_files_get_a_reason(tmp_path, make, reason):
    p = tmp_path / "bad.wav"
    make(p)
    with pytest.raises(audio.RejectedAudio, match=reason):
        audio.load(p, max_seconds=2)


def test_truncated_wav_is_rejected(tmp_path):
    p = tmp_path / "t.wav"
    sf.write(p, speechlike(16000, 0), 16000)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(audio.RejectedAudio, match="truncated|decod|readable"):
        audio.load(p)


def test_missing_file(tmp_path):
    with pytest.raises(audio.RejectedAudio, match="file not found"):
        audio.probe(tmp_path / "nope.wav")
