"""Bad inputs beyond audio: each gives one line (config error, rejected.tsv row or log line).

Model sources that cannot be loaded offline and label tables with duplicate keys stop the run
before any job; alignments past the audio are cut or dropped with a line in the scan log;
missing manifest paths are rejected as "file not found"; a corpus label named like a unit label
(a Speech Commands ``word`` column) serves as that unit's label.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml
from conftest import speechlike
from test_workflow import snakemake

from layerwise import pool
from layerwise.config import ConfigError, check
from layerwise.extract import encoders, models
from layerwise.extract.encoders import LayerInfo
from layerwise.ingest import alignments, corpus
from layerwise.io import store

REPO = Path(__file__).resolve().parents[1]


def _config(tmp_path, **corpus_extra):
    (tmp_path / "c").mkdir(exist_ok=True)
    return {"corpus": {"name": "t", "source": "folder", "path": "c", **corpus_extra},
            "models": [{"name": "m", "source": "random:tiny-wav2vec2"}], "extract": {}}


# --------------------------------------------------------------------------- model sources


@pytest.mark.parametrize("setup,source,message", [
    (None, "random:tiny-bert", "unknown preset 'tiny-bert' (known: tiny-data2vec-audio,"),
    ("no_fe", "saved", "model folder 'saved' has no preprocessor_config.json"),
    (None, "./nowhere", "local model folder './nowhere' does not exist"),
    (None, "not a model", "'not a model' is neither an existing folder nor a Hugging Face hub id"),
])
def test_model_source_that_cannot_load_is_a_config_error(tmp_path, tiny_model_dir, setup, source,
                                                          message):
    if setup == "no_fe":  # a folder written by model.save_pretrained alone
        (tmp_path / "saved").mkdir()
        for f in tiny_model_dir.iterdir():
            if f.name != "preprocessor_config.json":
                (tmp_path / "saved" / f.name).write_bytes(f.read_bytes())
    cfg = _config(tmp_path)
    cfg["models"][0]["source"] = source
    with pytest.raises(ConfigError) as err:
        check(cfg, base=tmp_path)
    assert str(err.value).startswith("config key models[0].source: ")
    assert message in str(err.value)


def test_complete_model_folder_passes(tmp_path, tiny_model_dir):
    cfg = _config(tmp_path)
    cfg["models"][0]["source"] = str(tiny_model_dir)
    check(cfg, base=tmp_path)


def _fake_hub_cache(cache: Path, repo: str, files: list[str]) -> None:
    snap = cache / f"models--{repo.replace('/', '--')}"
    (snap / "refs").mkdir(parents=True)
    (snap / "refs" / "main").write_text("abc123")
    (snap / "snapshots" / "abc123").mkdir(parents=True)
    for name in files:
        (snap / "snapshots" / "abc123" / name).write_text("{}")


def test_hub_id_offline_must_be_in_the_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    _fake_hub_cache(cache, "org/full", ["config.json", "preprocessor_config.json",
                                        "model.safetensors"])
    _fake_hub_cache(cache, "org/half", ["config.json"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    models.check_loadable("org/full", cache_dir=cache)
    with pytest.raises(models.ModelSourceError) as err:
        models.check_loadable("org/half", cache_dir=cache)
    assert str(err.value) == (
        f"hub id 'org/half' is not in the local Hugging Face cache ({cache}: no "
        "preprocessor_config.json) and HF_HUB_OFFLINE is set: download it first "
        "(huggingface-cli download org/half) or unset HF_HUB_OFFLINE")
    with pytest.raises(models.ModelSourceError, match="'org/nothing' at revision v2 is not in"):
        models.check_loadable("org/nothing", revision="v2", cache_dir=cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # online: the job downloads it
    models.check_loadable("org/nothing", cache_dir=cache)


def test_uncached_hub_id_offline_stops_snakemake_before_any_job(tmp_path):
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["models"] = [{"name": "w2v", "source": "facebook/wav2vec2-base"}]
    cfg["results"] = str(tmp_path / "results")
    (tmp_path / "offline.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_CACHE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", str(tmp_path / "offline.yaml")],
        cwd=REPO, capture_output=True, text=True, timeout=120, env=env,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert ("Invalid config: config key models[0].source: hub id 'facebook/wav2vec2-base' is "
            "not in the local Hugging Face cache") in out, out[-2000:]
    assert not (tmp_path / "results").exists()


# --------------------------------------------------------------------------- label tables


def test_label_table_with_duplicate_keys_is_a_config_error(tmp_path):
    (tmp_path / "speakers.tsv").write_text("speaker\taccent\n101\tus\n202\tgb\n101\tau\n")
    cfg = _config(tmp_path, label_table={"path": "speakers.tsv", "on": "speaker"})
    with pytest.raises(ConfigError) as err:
        check(cfg, base=tmp_path)
    assert str(err.value) == (
        f"config key corpus.label_table: {tmp_path / 'speakers.tsv'}: speaker '101' is on 2 rows "
        "(a label table needs one row per speaker)")
    cfg["corpus"]["label_table"]["on"] = "spk"
    with pytest.raises(ConfigError, match="has no column 'spk' \\(columns: speaker, accent\\)"):
        check(cfg, base=tmp_path)
    (tmp_path / "speakers.tsv").write_text("")
    with pytest.raises(ConfigError, match="speakers.tsv: not a readable table \\(No columns"):
        check(cfg, base=tmp_path)


# --------------------------------------------------------------------------- alignments


def test_alignments_past_the_audio_are_cut_or_dropped_with_a_log_line(tmp_path, caplog):
    sf.write(tmp_path / "u1.wav", speechlike(16000, 0), 16000)  # 1.0 s
    sf.write(tmp_path / "u2.wav", speechlike(8000, 1), 16000)  # 0.5 s
    (tmp_path / "a.ctm").write_text(
        "u1 1 0.10 0.50 hello\n"
        "u1 1 0.60 0.405 world\n"  # ends 5 ms late: rounding, cut silently
        "u2 1 0.10 0.30 yes\n"
        "u2 1 0.40 0.60 no\n"  # ends at 1.0 s in a 0.5 s file: cut
        "u2 1 0.70 0.20 gone\n"  # starts after the end: dropped
    )
    with caplog.at_level(logging.WARNING, logger="layerwise.ingest.corpus"):
        res = corpus.scan({"source": "folder", "path": str(tmp_path), "glob": "*.wav",
                           "alignments": str(tmp_path / "a.ctm")})
    got = res.alignments[["utt_id", "label", "end_s"]].round(6).values.tolist()
    assert got == [["u1.wav", "hello", 0.6], ["u1.wav", "world", 1.0],
                   ["u2.wav", "yes", 0.4], ["u2.wav", "no", 0.5]]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "alignments: 2 segments of 1 utterances end after the audio by up to 0.50 s (first: "
        "u2.wav word 'no' 0.40-1.00 s, audio 0.50 s): 1 cut at the audio's end, "
        "1 that start after it dropped"]


def test_alignments_within_the_audio_are_untouched():
    table = pd.DataFrame([("u", "word", 0.1, 0.5, "a")], columns=alignments.COLUMNS)
    out, note = alignments.clip_to_audio(table, {"u": 0.5})
    assert note is None and out.equals(table)


# --------------------------------------------------------------------------- manifests


def test_manifest_paths_that_do_not_exist(tmp_path):
    sf.write(tmp_path / "x.wav", speechlike(8000, 0), 16000)
    (tmp_path / "m.tsv").write_text("path\tword\nx.wav\tyes\nno/such.wav\tno\nsub\tup\n")
    (tmp_path / "sub").mkdir()
    res = corpus.scan({"source": "manifest", "path": str(tmp_path / "m.tsv")})
    assert res.manifest["utt_id"].tolist() == ["x"]
    assert res.rejected.values.tolist() == [
        [str(tmp_path / "no/such.wav"), "scan", "file not found"],
        [str(tmp_path / "sub"), "scan", "a folder, not an audio file"]]
    (tmp_path / "none.tsv").write_text("path\nnope1.wav\nnope2.wav\n")
    with pytest.raises(corpus.CorpusError) as err:
        corpus.scan({"source": "manifest", "path": str(tmp_path / "none.tsv")})
    assert str(err.value) == (
        f"corpus: all 2 files of {tmp_path / 'none.tsv'} were rejected at scan (2 file not found; "
        f"first: {tmp_path / 'nope1.wav'}) (manifest paths are relative to the manifest's folder)")


# --------------------------------------------------------------------------- unit-named labels


def _store(tmp_path) -> store.FeatureStore:
    path = tmp_path / "shard-000.h5"
    with store.ShardWriter(path, [LayerInfo("layer.0", "transformer", 50.0, 2)], {"layer.0"},
                           attrs={"sample_rate": 16000}) as w:
        w.append(["a", "b"], [16000, 8000],
                 {"layer.0": [np.ones((50, 2)), np.ones((25, 2))]})
    return store.open(path)


SPEECH_COMMANDS = pd.DataFrame({"utt_id": ["a", "b"], "word": ["yes", "no"],
                                "speaker": ["s1", "s2"], "duration_s": ["1.0", "0.5"]})


@pytest.mark.parametrize("span", ["frame", "utterance"])
def test_corpus_word_label_serves_as_the_word_without_alignments(tmp_path, caplog, span):
    no_alignments = pd.DataFrame(columns=alignments.COLUMNS)
    with caplog.at_level(logging.INFO, logger="layerwise.pool"):
        index = pool.build_index(_store(tmp_path), SPEECH_COMMANDS, no_alignments, span,
                                 labels=["word", "speaker"], max_frames=30)
    words = dict(zip(SPEECH_COMMANDS["utt_id"], SPEECH_COMMANDS["word"], strict=True))
    assert (index["word"] == index["utt_id"].map(words)).all()
    assert (index["speaker"] != "").all()
    if span == "frame":
        assert "corpus label 'word' serves as the word of these rows (no word alignments)" \
            in caplog.text


def test_word_alignments_win_over_a_corpus_word_label(tmp_path, caplog):
    aligned = pd.DataFrame([("a", "word", 0.0, 1.0, "YES"), ("b", "word", 0.0, 0.5, "NO")],
                           columns=alignments.COLUMNS)
    for span in ("frame", "word"):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="layerwise.pool"):
            index = pool.build_index(_store(tmp_path), SPEECH_COMMANDS, aligned, span,
                                     labels=["word"], max_frames=30)
        assert set(index["word"]) == {"YES", "NO"}, span
        assert "corpus label 'word' not used: the alignments give these rows their word" \
            in caplog.text


def test_describe_names_a_folder_it_cannot_load(tmp_path, tiny_model_dir):
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "config.json").write_bytes((tiny_model_dir / "config.json").read_bytes())
    with pytest.raises(models.ModelSourceError, match=r"saved: cannot load model \("):
        encoders.describe(str(tmp_path / "saved"))


def test_speech_commands_manifest_runs_to_the_pooled_rows(tmp_path):
    """A manifest with a ``word`` column (one word per file) and a missing file, through snakemake."""
    rows = []
    for i, (word, spk) in enumerate([("yes", "s1"), ("no", "s1"), ("yes", "s2"), ("no", "s2")]):
        (tmp_path / "sc" / word).mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / "sc" / word / f"{spk}_{i}.wav", speechlike(12000, i), 16000)
        rows.append(f"{word}/{spk}_{i}.wav\t{word}\t{spk}")
    rows.append("up/s3_9.wav\tup\ts3")  # listed, never downloaded
    (tmp_path / "sc" / "manifest.tsv").write_text("path\tword\tspeaker\n" + "\n".join(rows) + "\n")
    config = {
        "results": "out",
        "corpus": {"name": "sc", "source": "manifest", "path": "sc/manifest.tsv",
                   "labels": ["word", "speaker"]},
        "models": [{"name": "w2v", "source": "random:tiny-wav2vec2"}],
        "pool": {"spans": ["utterance", "frame"], "poolings": ["mean"], "max_frames": 100},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "out" / "sc"
    targets = [f"out/sc/pooled/w2v/{span}-mean" for span in ("utterance", "frame")]
    proc = snakemake(tmp_path, *targets, "out/sc/rejected.tsv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rejected = pd.read_csv(out / "rejected.tsv", sep="\t")
    assert rejected.values.tolist() == [["sc/up/s3_9.wav", "scan", "file not found"]]
    for span in ("utterance", "frame"):
        index = pd.read_csv(out / "pooled" / "w2v" / f"{span}-mean" / "index.tsv", sep="\t")
        assert (index["word"] == index["utt_id"].str.split("/").str[0]).all(), span
        assert set(index["speaker"]) == {"s1", "s2"}
    log = (out / "logs" / "pool_layers" / "w2v-frame-mean.log").read_text()
    assert "corpus label 'word' serves as the word of these rows (no word alignments)" in log
