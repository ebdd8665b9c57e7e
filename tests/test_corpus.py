"""layerwise.ingest.corpus and layerwise.ingest.alignments: every source, labels, limits and stable shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import speechlike
from corpora import librispeech_tree

from layerwise.ingest import alignments, corpus


def test_librispeech_scan_labels_and_rejections(tmp_path):
    tree = librispeech_tree(tmp_path)
    res = corpus.scan({"source": "librispeech", "path": str(tmp_path / "dev-clean"), "shards": 2})
    m = res.manifest
    assert set(tree["good"]) <= set(m["utt_id"])
    row = m.set_index("utt_id").loc["202-20-0001"]
    assert (row["speaker"], row["chapter"], row["gender"]) == ("202", "20", "M")
    assert row["text"] == "HELLO WORLD NUMBER 1"
    assert row["sample_rate"] == 16000 and row["channels"] == 1
    assert set(m["shard"]) == {0, 1}
    rejected = set(Path(p).name for p in res.rejected["path"])
    assert {"101-10-9000.flac", "101-10-9001.flac"} <= rejected  # unreadable headers
    assert all(res.rejected["reason"].str.len() > 5)
    assert {"speaker", "gender"} <= set(res.label_columns)


def test_limit_takes_first_ids(tmp_path):
    librispeech_tree(tmp_path, bad=False)
    res = corpus.scan({"source": "librispeech", "path": str(tmp_path), "limit": 3})
    assert list(res.manifest["utt_id"]) == ["101-10-0000", "101-10-0001", "101-20-0000"]


def test_folder_source_with_labels_from_path(tmp_path):
    for word in ("yes", "no"):
        for spk in ("anna", "bob"):
            p = tmp_path / word / f"{spk} take1.wav"
            p.parent.mkdir(exist_ok=True)
            sf.write(p, speechlike(8000, 0), 22050)
    res = corpus.scan({"source": "folder", "path": str(tmp_path), "glob": "**/*.wav",
                       "labels_from_path": r"(?P<word>[^/]+)/(?P<speaker>\w+)"})
    m = res.manifest.set_index("utt_id")
    assert m.loc["no/bob take1.wav", "word"] == "no"
    assert m.loc["no/bob take1.wav", "speaker"] == "bob"
    assert m.loc["no/bob take1.wav", "sample_rate"] == 22050


def test_manifest_source_relative_paths(tmp_path):
    (tmp_path / "a").mkdir()
    sf.write(tmp_path / "a" / "x.wav", speechlike(8000, 0), 16000)
    sf.write(tmp_path / "a" / "y.wav", speechlike(8000, 1), 16000)
    pd.DataFrame({"path": ["a/x.wav", "a/y.wav", "a/missing.wav"], "emotion": ["joy", "sad", "x"]}
                 ).to_csv(tmp_path / "m.tsv", sep="\t", index=False)
    res = corpus.scan({"source": "manifest", "path": str(tmp_path / "m.tsv")})
    assert list(res.manifest["emotion"]) == ["joy", "sad"]
    assert res.rejected["reason"].tolist() == ["file not found"]


def test_hf_dataset_from_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    files = []
    for i in range(3):
        p = tmp_path / f"clip{i}.flac"
        sf.write(p, speechlike(8000, i), 16000)
        files.append(p.read_bytes())
    ds = datasets.Dataset.from_dict(
        {"audio": [{"bytes": b, "path": f"clip{i}.flac"} for i, b in enumerate(files)],
         "label": ["a", "b", "a"]}
    ).cast_column("audio", datasets.Audio(decode=False))
    ds.save_to_disk(tmp_path / "ds")
    res = corpus.scan({"source": "hf", "path": str(tmp_path / "ds"), "hf": {}},
                      hf_audio_dir=tmp_path / "audio")
    assert list(res.manifest["label"]) == ["a", "b", "a"]
    assert (res.manifest["duration_s"] == 0.5).all()


def test_shards_balanced_and_stable():
    rng = np.random.default_rng(0)
    ids = [f"utt{i:05d}" for i in range(2000)]
    dur = rng.uniform(1, 20, len(ids))
    s = corpus.assign_shards(corpus.batch_groups(ids, 64), dur, 8)
    loads = np.bincount(s, weights=dur, minlength=8)
    assert loads.max() / loads.mean() < 1.15
    # adding 5% more files moves only a small share of the existing ones
    more_ids = ids + [f"new{i:05d}" for i in range(100)]
    s2 = corpus.assign_shards(corpus.batch_groups(more_ids, 64), np.r_[dur, rng.uniform(1, 20, 100)], 8)
    moved = np.mean(s2[: len(ids)] != s)
    assert moved < 0.2, moved


TEXTGRID_LONG = '''File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 1.5
tiers? <exists>
size = 2
item []:
    item [1]:
        class = "IntervalTier"
        name = "words"
        xmin = 0
        xmax = 1.5
        intervals: size = 3
        intervals [1]:
            xmin = 0
            xmax = 0.2
            text = ""
        intervals [2]:
            xmin = 0.2
            xmax = 0.9
            text = "hello"
        intervals [3]:
            xmin = 0.9
            xmax = 1.5
            text = "say ""hi"""
    item [2]:
        class = "TextTier"
        name = "events"
        xmin = 0
        xmax = 1.5
        points: size = 1
        points [1]:
            number = 0.5
            mark = "click"
'''


def test_textgrid_long_and_short_format(tmp_path):
    (tmp_path / "u1.TextGrid").write_text(TEXTGRID_LONG)
    short = ('File type = "ooTextFile"\nObject class = "TextGrid"\n\n0\n1\n<exists>\n1\n'
             '"IntervalTier"\n"phones"\n0\n1\n2\n0\n0.4\n"AH"\n0.4\n1\n"sil"\n')
    (tmp_path / "u2.TextGrid").write_text(short)
    df = alignments.load(tmp_path, {"u1": "u1", "u2": "u2"})
    assert df.values.tolist() == [
        ["u1", "word", 0.2, 0.9, "hello"],
        ["u1", "word", 0.9, 1.5, 'say "hi"'],
        ["u2", "phone", 0.0, 0.4, "AH"],
    ]


def test_ctm(tmp_path):
    (tmp_path / "a.ctm").write_text("u1 1 0.10 0.30 hello 0.9\nu1 1 0.40 0.20 world\nzz 1 0 1 x\n")
    df = alignments.load(tmp_path / "a.ctm", {"u1": "u1"})
    assert df["label"].tolist() == ["hello", "world"]
    assert df["end_s"].round(6).tolist() == [0.4, 0.6]


def test_bad_textgrid_names_the_file(tmp_path):
    (tmp_path / "u1.TextGrid").write_text('File type = "ooTextFile"\nObject class = "TextGrid"\n0\n')
    with pytest.raises(alignments.AlignmentError, match="u1.TextGrid"):
        alignments.load(tmp_path, {"u1": "u1"})
