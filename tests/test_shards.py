"""layerwise.ingest.shards: one shard's files decoded to 16 kHz mono WAV, with its rejections."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import speechlike

from layerwise.ingest import shards
from layerwise.io.tables import REJECTED_COLUMNS, read_tsv


@pytest.fixture
def manifest(tmp_path):
    """Shard 0: a 16 kHz mono file, a 44.1 kHz stereo one with an id that is no file name, and
    digital silence; shard 1: one more file."""
    src = tmp_path / "src"
    src.mkdir()
    mono = speechlike(8000, seed=1)
    sf.write(src / "mono.wav", mono, 16000, subtype="FLOAT")
    left, right = speechlike(22050, seed=2), speechlike(22050, seed=3)
    sf.write(src / "stereo.flac", np.stack([left, right], axis=1) * 0.5, 44100)
    sf.write(src / "silence.wav", np.zeros(4000, dtype=np.float32), 16000)
    sf.write(src / "other.wav", speechlike(6000, seed=4), 16000)
    rows = [("a", "mono.wav", 0, 0), ("spk 1/utt ü", "stereo.flac", 0, 1),
            ("s", "silence.wav", 0, 1), ("o", "other.wav", 1, 2)]
    return pd.DataFrame([(u, str(src / f), s, g) for u, f, s, g in rows],
                        columns=["utt_id", "path", "shard", "group"]), mono


def test_safe_name_keeps_plain_ids_and_disambiguates_the_rest():
    assert shards.safe_name("1001-10010-0000") == "1001-10010-0000"
    crc = f"{zlib.crc32('spk 1/utt ü'.encode()):08x}"
    assert shards.safe_name("spk 1/utt ü") == f"spk_1_utt-{crc}"  # runs of other characters: one _, none at the ends
    assert shards.safe_name("a/b") != shards.safe_name("a b")  # same characters kept, other crc
    assert shards.safe_name("..").startswith("utt-")


def test_build_shard_writes_its_own_files_and_rejections(manifest, tmp_path):
    table, mono = manifest
    kept, bad = shards.build_shard(table, 0, tmp_path / "wav", tmp_path / "shard.tsv",
                                   tmp_path / "shard.rejected.tsv", progress=False)
    assert (kept, bad) == (2, 1)
    out = read_tsv(tmp_path / "shard.tsv", dtype={"utt_id": str})
    assert list(out.columns) == shards.SHARD_COLUMNS
    assert out["utt_id"].tolist() == ["a", "spk 1/utt ü"]  # shard 1's file is not here
    assert out["group"].tolist() == [0, 1]
    for row in out.itertuples():
        data, sr = sf.read(row.path, always_2d=True)
        assert sr == 16000 and data.shape == (row.n_samples, 1)
        assert row.duration_s == pytest.approx(row.n_samples / 16000, abs=1e-6)
    assert out["path"].iloc[1].endswith(shards.safe_name("spk 1/utt ü") + ".wav")
    # 16 kHz mono passes through, only quantised to PCM_16
    np.testing.assert_allclose(sf.read(out["path"].iloc[0])[0], mono, atol=1 / 32768)
    # 0.5 s at 44.1 kHz -> 8000 samples at 16 kHz (soxr keeps the duration)
    assert abs(out["n_samples"].iloc[1] - 8000) <= 1
    rejected = read_tsv(tmp_path / "shard.rejected.tsv")
    assert list(rejected.columns) == REJECTED_COLUMNS
    assert rejected["path"].str.endswith("silence.wav").tolist() == [True]
    assert rejected["stage"].tolist() == ["audio"]
    assert "silence" in rejected["reason"].item()


def test_build_shard_without_conversion_points_at_the_sources(manifest, tmp_path):
    table, _ = manifest
    kept, bad = shards.build_shard(table, 1, tmp_path / "wav", tmp_path / "t.tsv",
                                   tmp_path / "r.tsv", convert=False, progress=False)
    out = read_tsv(tmp_path / "t.tsv", dtype={"utt_id": str})
    assert (kept, bad) == (1, 0)
    assert out["path"].tolist() == [table["path"].iloc[3]]
    assert out["n_samples"].tolist() == [6000]
    assert not any((tmp_path / "wav").iterdir())
    assert len(read_tsv(tmp_path / "r.tsv")) == 0
