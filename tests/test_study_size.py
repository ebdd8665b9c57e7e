"""A study-sized run of the whole default workflow (``make test-slow``).

The corpus is built here from the bundled demo: 800 utterances, each two demo utterances of
one speaker joined by a short pause, with their TextGrids shifted to match — about 1.7 h of
audio, ≈ 11k word tokens and ≈ 45k phones, in LibriSpeech layout with word alignments and the
demo's speaker labels. The model is a random wav2vec2 with base-sized layers (768 dims, 4
transformer layers) saved locally as a user's folder would be. The default target (every
analysis and figure of utterance, word and frame spans) must finish, and no job process may
exceed 4 GiB resident: the largest descendant's peak RSS is read from the kernel's
``RUSAGE_CHILDREN`` accounting once snakemake has reaped every job.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from layerwise.ingest import alignments

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "resources" / "demo"
N_UTTERANCES = 800
PAUSE_S = 0.3
LIMIT_GIB = 4.0

pytestmark = pytest.mark.slow


def write_textgrid(path: Path, duration: float, tiers: dict[str, list[tuple]]) -> None:
    """A long-format TextGrid with one interval tier per entry (gaps left as empty text)."""
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0",
             f"xmax = {duration}", "tiers? <exists>", f"size = {len(tiers)}", "item []:"]
    for i, (name, intervals) in enumerate(tiers.items(), 1):
        lines += [f"    item [{i}]:", '        class = "IntervalTier"', f'        name = "{name}"',
                  "        xmin = 0", f"        xmax = {duration}",
                  f"        intervals: size = {len(intervals)}"]
        for k, (start, end, label) in enumerate(intervals, 1):
            lines += [f"        intervals [{k}]:", f"            xmin = {start}",
                      f"            xmax = {end}", f'            text = "{label}"']
    path.write_text("\n".join(lines) + "\n")


def joined_corpus(root: Path, n: int = N_UTTERANCES, seed: int = 0) -> dict:
    """``root/LibriSpeech/dev-clean`` + ``root/alignments`` of ``n`` joined demo utterances."""
    rng = np.random.default_rng(seed)
    flacs = sorted((DEMO / "LibriSpeech" / "dev-clean").rglob("*.flac"))
    by_speaker: dict[str, list[Path]] = {}
    for f in flacs:
        by_speaker.setdefault(f.name.split("-")[0], []).append(f)
    grids = {f.stem: alignments.read_textgrid(DEMO / "alignments" / f"{f.stem}.TextGrid")
             for f in flacs}
    split, aligned = root / "LibriSpeech" / "dev-clean", root / "alignments"
    aligned.mkdir(parents=True)
    speakers = sorted(by_speaker)
    words = 0
    for k in range(n):
        spk = speakers[k % len(speakers)]
        chapter = f"{spk}{k // (len(speakers) * 20):03d}"
        utt = f"{spk}-{chapter}-{k:04d}"
        a, b = rng.choice(len(by_speaker[spk]), size=2, replace=False)
        parts = [by_speaker[spk][a], by_speaker[spk][b]]
        waves, tiers, offset = [], {}, 0.0
        for part in parts:
            x, sr = sf.read(part, dtype="float32")
            for name, intervals in grids[part.stem].items():
                tiers.setdefault(name, []).extend(
                    (round(s + offset, 6), round(e + offset, 6), lab) for s, e, lab in intervals
                    if lab.strip())
            waves += [x, np.zeros(int(PAUSE_S * sr), dtype=np.float32)]
            offset += len(x) / sr + PAUSE_S
        folder = split / spk / chapter
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"{utt}.flac", np.concatenate(waves), sr)
        with (folder / f"{spk}-{chapter}.trans.txt").open("a") as fh:
            fh.write(f"{utt} {' '.join(lab for _, _, lab in tiers['words']).upper()}\n")
        write_textgrid(aligned / f"{utt}.TextGrid", round(offset, 6), tiers)
        words += len(tiers["words"])
    shutil.copy(DEMO / "LibriSpeech" / "SPEAKERS.TXT", root / "LibriSpeech" / "SPEAKERS.TXT")
    shutil.copy(DEMO / "speakers.tsv", root / "speakers.tsv")
    return {"utterances": n, "words": words}


def base_sized_model(out: Path) -> Path:
    """A random wav2vec2 with the base feature encoder and 4 transformer layers of 768."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    model = Wav2Vec2Model(Wav2Vec2Config(num_hidden_layers=4, feat_extract_norm="group"))
    model.save_pretrained(out)
    Wav2Vec2FeatureExtractor(return_attention_mask=False).save_pretrained(out)
    return out


def test_study_sized_corpus_runs_every_analysis_within_memory(tmp_path):
    corpus = joined_corpus(tmp_path / "corpus")
    assert corpus["words"] > 10_000
    model = base_sized_model(tmp_path / "w2v-base-4")
    config = {
        "results": "results",
        "corpus": {"name": "study", "source": "librispeech",
                   "path": "corpus/LibriSpeech/dev-clean", "alignments": "corpus/alignments",
                   "label_table": {"path": "corpus/speakers.tsv", "on": "speaker"},
                   "labels": ["speaker", "gender", "accent"], "shards": 4},
        "models": [{"name": "w2v", "source": str(model)}],
        "pool": {"spans": ["utterance", "word", "frame"], "poolings": ["mean"]},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
           str(tmp_path), "--configfile", str(tmp_path / "config.yaml"), "--cores", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=5400)
    assert proc.returncode == 0, proc.stderr[-6000:]
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    print(f"\nstudy-size run: {corpus}, largest job peak RSS {peak_gib:.2f} GiB")
    assert peak_gib <= LIMIT_GIB, f"a job reached {peak_gib:.2f} GiB resident"
    out = tmp_path / "results" / "study"
    for name in ("similarity", "probes", "convexity", "clustering", "featstats", "embed"):
        for span in ("utterance", "word", "frame"):
            assert (out / "tables" / "w2v" / f"{name}-{span}-mean.tsv").stat().st_size > 0
    assert (tmp_path / "figures" / "study" / "index.html").exists()
