"""Loading models: every family loads and extracts with the default config, attention included."""

from __future__ import annotations

import logging

import pytest
from conftest import run_extract, tiny_presets

from benchmarks import schema
from layerwise.extract import models


@pytest.mark.parametrize("preset", tiny_presets())
def test_every_family_extracts_with_the_default_config(preset, wav_table, tmp_path):
    """The schema's defaults (attn_implementation: sdpa) load every family; the file records the
    attention implementation that ran (eager for WavLM, which has no SDPA attention)."""
    model_dir = models.prepare(f"random:{preset}", tmp_path / preset)
    params = {**schema.defaults("extract"), "batch_seconds": 8}
    params.pop("device")  # run_extract extracts on the CPU
    assert params["attn_implementation"] == "sdpa"
    fs, summary = run_extract(wav_table.head(3), tmp_path, preset, model_dir, **params)
    assert summary["rejected"] == 0 and len(fs.utt_ids) == 3
    used = models.load(str(model_dir)).model.config._attn_implementation
    assert fs.attrs["attn_implementation"] == used
    assert used == ("eager" if preset == "tiny-wavlm" else "sdpa")


def test_attention_falls_back_to_eager_only_without_sdpa(caplog):
    from transformers import Wav2Vec2Model, WavLMModel

    with caplog.at_level(logging.WARNING, logger="layerwise.extract.models"):
        assert models.attention_for(WavLMModel, "sdpa") == "eager"
    assert "WavLMModel has no SDPA attention" in caplog.text
    assert models.attention_for(Wav2Vec2Model, "sdpa") == "sdpa"
    assert models.attention_for(WavLMModel, "eager") == "eager"
