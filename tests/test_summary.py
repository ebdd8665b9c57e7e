"""layerwise.ingest.summary: every job's rejection records merged, and the run's counts."""

from __future__ import annotations

import pandas as pd

from layerwise.ingest.summary import summarise
from layerwise.io.tables import REJECTED_COLUMNS, read_tsv, rejected_frame, write_tsv


def test_summary_counts_every_stage(tmp_path):
    write_tsv(pd.DataFrame({"utt_id": [f"u{i}" for i in range(6)]}), tmp_path / "manifest.tsv")
    write_tsv(pd.DataFrame({"utt_id": ["u0", "u1", "u2"]}), tmp_path / "shard-000.tsv")
    write_tsv(pd.DataFrame({"utt_id": ["u3", "u4"]}), tmp_path / "shard-001.tsv")
    records = {
        "scan.rejected.tsv": [("x.flac", "scan", "empty file (0 bytes)"),
                              ("y.flac", "scan", "not readable as audio")],
        "shard-000.rejected.tsv": [],
        "shard-001.rejected.tsv": [("u5.flac", "audio", "digital silence")],
        "features-a-000.rejected.tsv": [("u1.wav", "extract", "out of memory")],
        "features-b-000.rejected.tsv": [],
    }
    for name, rows in records.items():
        write_tsv(rejected_frame(rows), tmp_path / name)
    text = summarise(tmp_path / "manifest.tsv",
                     [tmp_path / "shard-000.tsv", tmp_path / "shard-001.tsv"],
                     [tmp_path / name for name in records], tmp_path / "rejected.tsv",
                     tmp_path / "summary.txt")
    assert (tmp_path / "summary.txt").read_text() == text
    lines = text.splitlines()
    assert lines[:4] == ["files found:    8",  # 6 in the manifest + 2 rejected at scan
                         "kept:           5 utterances",
                         "rejected:       3 files",
                         "extraction failures (utterance x model): 1"]
    assert lines[4:7] == ["  at scan: 2", "  at audio: 1", "  at extract: 1"]
    assert lines[7] == f"reasons: see {tmp_path / 'rejected.tsv'}"
    merged = read_tsv(tmp_path / "rejected.tsv")
    assert list(merged.columns) == REJECTED_COLUMNS
    assert merged["path"].tolist() == ["x.flac", "y.flac", "u5.flac", "u1.wav"]  # stage order


def test_summary_of_a_clean_run(tmp_path):
    write_tsv(pd.DataFrame({"utt_id": ["u0", "u1"]}), tmp_path / "manifest.tsv")
    write_tsv(pd.DataFrame({"utt_id": ["u0", "u1"]}), tmp_path / "shard.tsv")
    write_tsv(rejected_frame(), tmp_path / "none.tsv")
    text = summarise(tmp_path / "manifest.tsv", [tmp_path / "shard.tsv"], [tmp_path / "none.tsv"],
                     tmp_path / "rejected.tsv", tmp_path / "summary.txt")
    assert text.splitlines() == ["files found:    2", "kept:           2 utterances",
                                 "rejected:       0 files",
                                 "extraction failures (utterance x model): 0"]
    assert len(read_tsv(tmp_path / "rejected.tsv")) == 0
