"""Shared fixtures: tiny models saved locally, and waveforms written by the tests themselves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

torch.set_num_threads(2)
N_UTTS = 7
LENGTHS = [16000 * 2 + 123, 4000, 16000 + 777]  # three waveforms for forward-pass comparisons
#: bfloat16 keeps 8 bits of mantissa: relative L2 error per layer and utterance, against float32
#: (measured on the tiny models, CPU: at most 1.5e-2).
BF16_RTOL = 3e-2


def speechlike(n_samples: int, seed: int, sr: int = 16000) -> np.ndarray:
    """A deterministic, non-stationary test signal (harmonics with a moving pitch + noise)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / sr
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (0.3 * x + 0.01 * rng.standard_normal(n_samples)).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random tiny wav2vec2 (group norm) saved with save_pretrained, as users' folders are."""
    from layerwise.extract import models

    out = tmp_path_factory.mktemp("models") / "tiny-wav2vec2"
    models.prepare("random:tiny-wav2vec2", out)
    return out


@pytest.fixture(scope="module")
def wav_table(tmp_path_factory):
    """A shard table of N_UTTS WAVs of different lengths in three hash groups."""
    d = tmp_path_factory.mktemp("wav")
    rows = []
    for i in range(N_UTTS):
        n = 4000 + 7919 * i
        p = d / f"u{i}.wav"
        sf.write(p, speechlike(n, seed=i), 16000, subtype="FLOAT")
        rows.append((f"u{i}", str(p), n, n / 16000, i % 3))
    return pd.DataFrame(rows, columns=["utt_id", "path", "n_samples", "duration_s", "group"])


def run_extract(table, tmp, name, model_dir, *, device="cpu", **kw):
    """``extract_shard`` over ``table``; the opened store and the summary."""
    from layerwise.extract import features
    from layerwise.io import store
    tsv = tmp / f"{name}.tsv"
    table.to_csv(tsv, sep="\t", index=False)
    out = tmp / f"{name}.h5"
    from benchmarks import schema

    # the config's defaults (extract:, audio.sample_rate, models[].revision), then the test's
    settings = {**schema.defaults("extract"), "revision": None,
                "sample_rate": schema.defaults("audio")["sample_rate"], "device": device,
                "store": "pooled" if kw.get("pooler") else "frames", **kw}
    summary = features.extract_shard(tsv, out, tmp / f"{name}.rejected.tsv", model_dir=str(model_dir),
                                    source="test", progress=False, **settings)
    return store.open(out), summary


def tiny_presets() -> list[str]:
    """Every ``random:tiny-*`` preset: one per architecture family."""
    from layerwise.extract import models

    return sorted(p for p in models.PRESETS if p.startswith("tiny-"))


def relative_errors(a: dict, b: dict) -> dict[str, float]:
    """Per layer, the worst relative L2 difference of ``a`` from ``b`` over utterances."""
    return {name: max(float((x.cpu() - y.cpu()).norm() / y.cpu().norm())
                      for x, y in zip(a[name], b[name], strict=True))
            for name in b}


@pytest.fixture(scope="session")
def schema_params():
    """``{analysis: params}`` as the workflow passes them: config.yaml filled by the schema."""
    from pathlib import Path

    import yaml
    from snakemake.utils import validate

    repo = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((repo / "config.yaml").read_text())
    validate(config, str(repo / "schemas" / "config.schema.yaml"))
    return config["analysis"]
