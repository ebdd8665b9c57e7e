"""The workflow end to end on a LibriSpeech-layout tree with bad files among good ones; every
span (utterance, word, frame) with two locally saved models; a Hugging Face dataset's scan."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from corpora import librispeech_tree

from layerwise.io import store

REPO = Path(__file__).resolve().parents[1]


def command(workdir: Path, *targets: str, extra=()) -> list[str]:
    """The snakemake command line for ``workdir/config.yaml`` (2 cores)."""
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
            str(workdir), "--configfile", str(workdir / "config.yaml"), "--cores", "2", *targets,
            *extra]


def snakemake(workdir: Path, *targets: str, extra=()) -> subprocess.CompletedProcess:
    return subprocess.run(command(workdir, *targets, extra=extra), capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Run the whole default DAG once on a small corpus with two tiny models."""
    wd = tmp_path_factory.mktemp("wf")
    tree = librispeech_tree(wd / "corpus")
    (wd / "speakers.tsv").write_text("speaker\taccent\n101\tus\n202\tgb\n303\tus\n")
    config = {
        "results": "out",
        "corpus": {"name": "t", "source": "librispeech", "path": "corpus/dev-clean", "shards": 2,
                   "batch_groups": 4, "labels": ["speaker", "gender", "accent"],
                   "label_table": {"path": "speakers.tsv", "on": "speaker"}},
        "models": [{"name": "w2v", "source": "random:tiny-wav2vec2"},
                   {"name": "wh", "source": "random:tiny-whisper"}],
        "extract": {"batch_seconds": 6},
        "pool": {"spans": ["utterance"], "poolings": ["mean"]},
        "analysis": {"similarity": {"n_boot": 2}, "probes": {"folds": 2},
                     "embed": {"methods": ["pca"]}},
    }
    (wd / "config.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(wd)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return wd, tree, proc


def test_every_good_file_kept_every_bad_file_rejected(run):
    wd, tree, proc = run
    out = wd / "out" / "t"
    manifest = pd.read_csv(out / "manifest.tsv", sep="\t", dtype=str)
    kept = set()
    for shard in ("000", "001"):
        table = pd.read_csv(out / "wav" / f"shard-{shard}.tsv", sep="\t", dtype=str)
        assert all((wd / p).exists() for p in table["path"])
        kept |= set(table["utt_id"])
    assert kept == set(tree["good"])
    assert set(manifest["accent"].dropna()) == {"us", "gb"}
    rejected = pd.read_csv(out / "rejected.tsv", sep="\t")
    assert sorted(Path(p).name for p in rejected["path"]) == sorted(tree["bad"])
    for name, fragment in tree["bad"].items():
        reason = rejected.loc[rejected["path"].str.endswith(name), "reason"].item()
        assert not fragment or fragment.split()[0] in reason, reason
    summary = (out / "summary.txt").read_text()
    assert "rejected:       5 files" in summary
    assert "rejected" in proc.stdout + proc.stderr  # the final summary is printed


def test_features_cover_every_kept_utterance(run):
    wd, tree, _ = run
    fs = store.open(wd / "out" / "t" / "features" / "w2v")
    assert sorted(fs.utt_ids) == sorted(tree["good"])
    assert fs.layers[:3] == ["cnn.0", "cnn.1", "cnn.2"] and fs.layers[-1] == "layer.2"
    x = fs.frames("layer.2", tree["good"][0])
    assert x.shape[1] == 32 and np.isfinite(x).all()
    wh = store.open(wd / "out" / "t" / "features" / "wh")
    assert wh.attrs["model_type"] == "whisper"


def test_tables_have_the_documented_columns(run):
    wd, _, _ = run
    tables = wd / "out" / "t" / "tables"
    sim = pd.read_csv(tables / "w2v" / "similarity-utterance-mean.tsv", sep="\t")
    assert list(sim.columns) == ["model_a", "layer_a", "model_b", "layer_b", "span", "pooling",
                                 "metric", "value", "ci_low", "ci_high", "n_rows"]
    probes = pd.read_csv(tables / "w2v" / "probes-utterance-mean.tsv", sep="\t")
    assert set(probes["label"]) >= {"speaker", "gender"}
    cross = pd.read_csv(tables / "cross" / "w2v--wh" / "similarity-utterance-mean.tsv", sep="\t")
    assert set(cross["model_b"]) == {"wh"}
    from layerwise.analyses.temporal import SELFSIM_COLUMNS, TRAJECTORY_COLUMNS

    for model in ("w2v", "wh"):
        selfsim = pd.read_csv(tables / model / "temporal-selfsim.tsv", sep="\t")
        assert list(selfsim.columns) == SELFSIM_COLUMNS and len(selfsim)
        trajectory = pd.read_csv(tables / model / "temporal-trajectory.tsv", sep="\t")
        assert list(trajectory.columns) == TRAJECTORY_COLUMNS and len(trajectory)


def test_rerun_is_a_no_op_and_edits_rebuild_only_what_is_stale(run):
    wd, _, _ = run
    proc = snakemake(wd, extra=["-n"])
    assert "Nothing to be done" in proc.stdout + proc.stderr
    # a changed analysis parameter reruns that analysis, not extraction (dry run, in a copy)
    cfg = yaml.safe_load((wd / "config.yaml").read_text())
    cfg["analysis"]["probes"]["folds"] = 3
    (wd / "changed.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(wd, extra=["-n", "--quiet", "rules", "--configfile", str(wd / "changed.yaml")])
    text = proc.stdout + proc.stderr
    assert "analyse" in text and "extract_features" not in text


def test_figures_target_and_touching_a_table_redraws_only_its_figures(run):
    wd, _, _ = run
    figs = wd / "figures" / "t"
    assert (figs / "index.html").exists()
    pngs = sorted(p.relative_to(figs).as_posix() for p in figs.rglob("*.png"))
    assert "curves-utterance-mean.png" in pngs and "w2v/similarity-utterance-mean.png" in pngs
    assert (figs / "w2v" / "temporal-trajectory.gif").exists()
    for target in ("figures/", "figures"):
        proc = snakemake(wd, target, extra=["-n"])
        assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr
    # a changed table (Snakemake ignores a mere touch when the content is unchanged)
    table = wd / "out" / "t" / "tables" / "w2v" / "featstats-utterance-mean.tsv"
    table.write_text(table.read_text() + "w2v\tlayer.0\tmean\t0.0\n")
    proc = snakemake(wd, "figures/", extra=["-n", "--quiet", "rules"])
    text = proc.stdout + proc.stderr
    assert "plot_featstats" in text and "figures" in text  # and plot_summary, which reads it
    for other in ("plot_similarity", "plot_maps", "plot_curves", "analyse", "extract_features"):
        assert other not in text, text


def test_report_contains_every_figure(run):
    wd, _, _ = run
    proc = snakemake(wd, extra=["--report", "report.html"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (wd / "report.html").read_text(errors="replace")
    for png in (wd / "out" / "t" / "plots").rglob("*.png"):
        assert png.name in html, png.name


def test_report_after_figures_target_finds_every_table(run):
    """`snakemake figures/` builds every table the report declares, so `--report` works."""
    wd, _, _ = run
    table = wd / "out" / "t" / "tables" / "wh" / "embed-utterance-mean.tsv"
    table.unlink()
    proc = snakemake(wd, "figures/")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert table.exists()
    proc = snakemake(wd, extra=["--report", "report.html"])
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_damaged_pooled_matrix_stops_with_one_line_and_the_fix_works(run):
    wd, _, _ = run
    folder = wd / "out" / "t" / "pooled" / "w2v" / "utterance-mean"
    np.save(folder / "layer.0.npy", np.zeros((2, 3), dtype=np.float32))
    target = "out/t/tables/w2v/featstats-utterance-mean.tsv"
    proc = snakemake(wd, target, extra=["--force"])
    assert proc.returncode != 0
    log = (wd / "out" / "t" / "logs" / "analyse" / "w2v-featstats-utterance-mean.log").read_text()
    assert "Traceback" not in log, log
    line = next(x for x in log.splitlines() if "ERROR" in x)
    assert "layer.0.npy: shape (2, 3), expected" in line, line
    assert f"delete {folder.relative_to(wd)} and run snakemake again" in line, line
    # the message's fix: delete the folder, run again


    shutil.rmtree(folder)
    proc = snakemake(wd, target)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _store_config(wd: Path, store_mode: str) -> None:
    """One tiny model, utterance and frame spans, ``extract.store: store_mode``."""
    config = {
        "results": "out",
        "corpus": {"name": "t", "source": "librispeech", "path": "corpus/dev-clean", "shards": 2,
                   "batch_groups": 4, "labels": ["speaker"]},
        "models": [{"name": "w2v", "source": "random:tiny-wav2vec2"}],
        "extract": {"batch_seconds": 3, "store": store_mode},
        "pool": {"spans": ["utterance", "frame"], "poolings": ["mean", "max"], "max_frames": 40},
    }
    (wd / "config.yaml").write_text(yaml.safe_dump(config))


def test_pooled_store_plans_no_temporal_figures(tmp_path):
    """A dry run of the whole DAG: the frames mode draws the temporal figures, pooled does not."""
    librispeech_tree(tmp_path / "corpus", bad=False)
    planned = {}
    for mode in ("frames", "pooled"):
        _store_config(tmp_path, mode)
        proc = snakemake(tmp_path, extra=["-n"])
        assert proc.returncode == 0, proc.stderr[-3000:]
        planned[mode] = proc.stdout
    assert "plot_temporal" in planned["frames"]
    assert "plot_temporal" not in planned["pooled"]
    assert "extract_features" in planned["pooled"] and "pool_layers" in planned["pooled"]


def test_pooled_store_gives_the_frames_mode_pooled_folders(tmp_path):
    """The workflow in pooled mode, then switched to frames: extraction reruns (store is a param)
    and every pooled folder is rewritten byte for byte the same."""
    librispeech_tree(tmp_path / "corpus", bad=False)
    targets = [f"out/t/pooled/w2v/{sp}" for sp in ("utterance-mean", "utterance-max",
                                                   "frame-mean")]
    folders = {}
    for mode in ("pooled", "frames"):
        _store_config(tmp_path, mode)
        proc = snakemake(tmp_path, *targets)
        assert proc.returncode == 0, proc.stderr[-3000:]
        fs = store.open(tmp_path / "out" / "t" / "features" / "w2v")
        assert fs.mode == mode
        folders[mode] = tmp_path / mode
        shutil.copytree(tmp_path / "out" / "t" / "pooled" / "w2v", folders[mode])
    assert "extract_features" in proc.stderr  # the store setting reran extraction
    for sp in ("utterance-mean", "utterance-max", "frame-mean"):
        a, b = folders["pooled"] / sp, folders["frames"] / sp
        names = sorted(p.name for p in a.iterdir())
        assert names == sorted(p.name for p in b.iterdir()) and "layer.0.npy" in names
        for name in names:
            assert (a / name).read_bytes() == (b / name).read_bytes(), f"{sp}/{name}"


SPANS = ("utterance", "word", "frame")


def span_analyses() -> list[tuple[str, str]]:
    """(analysis, span) of the spans run: every analysis that applies on words and frames; on
    utterances, which the ``run`` fixture covers with every analysis, similarity alone (time)."""
    from layerwise.analyses.registry import REGISTRY

    return [(a, span) for span in SPANS for a, analysis in REGISTRY.items()
            if span in analysis.spans and (span != "utterance" or a == "similarity")]


@pytest.fixture(scope="module")
def spans_run(tmp_path_factory):
    """Every analysis table of the utterance, word and frame spans, with the cross-model tables,
    for two tiny models saved locally (folder sources, as users' own models are), with word
    alignments from a CTM file and a reduced analysis config."""
    from layerwise.extract import models

    wd = tmp_path_factory.mktemp("spans")
    tree = librispeech_tree(wd / "corpus", bad=False)
    lines = [f"{utt} 1 {start:.2f} 0.25 {word}" for utt in tree["good"]
             for start, word in ((0.1, "hello"), (0.4, "world"), (0.7, "number"))]
    (wd / "words.ctm").write_text("\n".join(lines) + "\n")
    for name, preset in (("w2v", "tiny-wav2vec2"), ("wh", "tiny-whisper")):
        models.prepare(f"random:{preset}", wd / "models" / name)
    config = {
        "results": "out",
        "corpus": {"name": "s", "source": "librispeech", "path": "corpus/dev-clean",
                   "alignments": "words.ctm", "shards": 1, "labels": ["speaker", "gender"]},
        "models": [{"name": "w2v", "source": "models/w2v"},
                   {"name": "wh", "source": "models/wh"}],
        "extract": {"batch_seconds": 6},
        "pool": {"spans": list(SPANS), "poolings": ["mean"], "max_frames": 300},
        "analysis": {"similarity": {"n_boot": 2, "max_rows": 200}, "probes": {"folds": 2},
                     "convexity": {"min_count": 3, "max_rows": 200},
                     "clustering": {"n_clusters": 4}, "featstats": {"n_pairs": 100},
                     "cca": {"n_trials": 1, "min_count": 3},
                     "embed": {"methods": ["pca"], "max_rows": 100}},
    }
    (wd / "config.yaml").write_text(yaml.safe_dump(config))
    targets = [f"out/s/tables/{m}/{a}-{span}-mean.tsv" for m in ("w2v", "wh")
               for a, span in span_analyses()]
    targets += [f"out/s/tables/cross/w2v--wh/similarity-{span}-mean.tsv" for span in SPANS]
    # one thread per analysis job, so that the two cores run two of these small jobs at once
    proc = snakemake(wd, *targets, extra=["--set-threads", "analyse=1", "analyse_cross=1"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    return wd, tree, targets


def exact_rows(feature_dir, span: str, pooled_rows: int) -> int:
    """Rows behind the exact similarity metrics: every frame of the feature files on the frame
    span (streamed), the pooled rows on the others."""
    from layerwise.io import store

    if span != "frame":
        return pooled_rows
    fs = store.open(sorted(feature_dir.glob("shard-*.h5")))
    frames = store.StoredRows(fs, fs.layers[-1])
    try:
        return frames.shape[0]
    finally:
        frames.close()


@pytest.mark.parametrize("span", SPANS)
def test_every_span_has_every_table_for_both_models(spans_run, span):
    wd, tree, _ = spans_run
    tables = wd / "out" / "s" / "tables"
    for model in ("w2v", "wh"):
        index = pd.read_csv(wd / "out" / "s" / "pooled" / model / f"{span}-mean" / "index.tsv",
                            sep="\t", keep_default_na=False)
        assert set(index["utt_id"]) == set(tree["good"])
        if span == "word":
            assert len(index) == 3 * len(tree["good"])
            assert set(index["unit"]) == {"hello", "world", "number"}
        if span == "frame":
            assert len(index) == 300 and set(index["word"]) >= {"hello", "world", "number", ""}
        for name in (a for a, sp in span_analyses() if sp == span):
            table = pd.read_csv(tables / model / f"{name}-{span}-mean.tsv", sep="\t")
            assert len(table) > 0, (model, name)
            if "model" in table.columns:
                assert set(table["model"]) == {model}, (model, name)
            if "span" in table.columns:
                assert set(table["span"]) == {span}, (model, name)
        sim = pd.read_csv(tables / model / f"similarity-{span}-mean.tsv", sep="\t")
        linear = sim[sim.metric == "cka_linear"]
        assert np.isfinite(linear["value"]).all()
        assert (linear["n_rows"] == exact_rows(tables.parent / "features" / model, span,
                                               len(index))).all()
        assert linear[linear.layer_a == linear.layer_b]["value"].to_numpy() == pytest.approx(1.0)
        if span != "utterance":
            cca = pd.read_csv(tables / model / f"cca-{span}-mean.tsv", sep="\t")
            assert set(cca["target"]) == {"mel" if span == "frame" else "word"}
            assert np.isfinite(cca["value"]).all() and cca["value"].between(0, 1).all()
        if span != "utterance":
            probes = pd.read_csv(tables / model / f"probes-{span}-mean.tsv", sep="\t")
            assert {"speaker", "gender", "word"} <= set(probes["label"])
            assert probes["value"].notna().any()


@pytest.mark.parametrize("span", SPANS)
def test_cross_model_table_pairs_every_layer_of_the_two_models(spans_run, span):
    from layerwise.io import pooled

    wd, _, _ = spans_run
    out = wd / "out" / "s"
    cross = pd.read_csv(out / "tables" / "cross" / "w2v--wh" / f"similarity-{span}-mean.tsv",
                        sep="\t")
    layers = {m: pooled.read_meta(out / "pooled" / m / f"{span}-mean")["layers"]
              for m in ("w2v", "wh")}
    assert set(cross["model_a"]) == {"w2v"} and set(cross["model_b"]) == {"wh"}
    linear = cross[cross.metric == "cka_linear"]
    assert set(zip(linear.layer_a, linear.layer_b, strict=True)) == {
        (a, b) for a in layers["w2v"] for b in layers["wh"]}
    assert np.isfinite(linear["value"]).all() and linear["value"].between(0, 1 + 1e-9).all()
    n_index = len(pd.read_csv(out / "pooled" / "w2v" / f"{span}-mean" / "index.tsv", sep="\t"))
    assert (linear["n_rows"] == n_index).all()  # both models kept every utterance


def test_hf_dataset_audio_is_an_output_of_the_scan(tmp_path):
    """A Hugging Face dataset's audio is written by corpus_scan into its declared hf_audio/
    folder: the manifest points there, and the audio shards that read it have it as an input."""
    datasets = pytest.importorskip("datasets")
    import soundfile as sf
    from conftest import speechlike

    clips = []
    for i in range(2):
        sf.write(tmp_path / f"clip{i}.flac", speechlike(8000, i), 16000)
        clips.append({"bytes": (tmp_path / f"clip{i}.flac").read_bytes(), "path": f"clip{i}.flac"})
    datasets.Dataset.from_dict({"audio": clips, "label": ["a", "b"]}).cast_column(
        "audio", datasets.Audio(decode=False)).save_to_disk(tmp_path / "ds")
    config = {"results": "out", "corpus": {"name": "h", "source": "hf", "path": "ds"},
              "models": [{"name": "w2v", "source": "random:tiny-wav2vec2"}]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    target = "out/h/wav/shard-000.tsv"
    proc = snakemake(tmp_path, target)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = pd.read_csv(tmp_path / "out" / "h" / "manifest.tsv", sep="\t")
    audio_dir = (tmp_path / "out" / "h" / "hf_audio").resolve()
    assert len(manifest) == 2
    assert all((tmp_path / p).resolve().parent == audio_dir and (tmp_path / p).is_file()
               for p in manifest["path"])
    assert "Nothing to be done" in snakemake(tmp_path, target, extra=["-n"]).stdout
    # the shards read the folder: rebuilding one without it rebuilds it first
    shutil.rmtree(audio_dir)
    (tmp_path / target).unlink()
    proc = snakemake(tmp_path, target, extra=["-n"])
    assert "Missing output files: out/h/hf_audio" in proc.stdout + proc.stderr
