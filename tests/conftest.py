"""Shared fixtures: tiny models saved locally, and waveforms written by the tests themselves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(2)


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
    from layerwise import models

    out = tmp_path_factory.mktemp("models") / "tiny-wav2vec2"
    models.prepare("random:tiny-wav2vec2", out)
    return out


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
