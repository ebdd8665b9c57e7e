"""Batched extraction equals one-utterance-at-a-time extraction, for every architecture family."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import speechlike

from layerwise.extract import encoders, models

FAMILIES = [
    "tiny-wav2vec2",
    "tiny-wav2vec2-layernorm",
    "tiny-hubert",
    "tiny-wavlm",
    "tiny-data2vec-audio",
    "tiny-unispeech-sat",
    "tiny-wav2vec2-conformer",
    "tiny-whisper",
]
LENGTHS = [16000 * 3 + 123, 4000, 16000 + 777, 1200]  # very different lengths


def _encoder(preset):
    model, fe = models.build_random(preset, seed=0)
    return encoders.wrap(model, fe, torch.device("cpu"))


@pytest.mark.parametrize("preset", FAMILIES)
def test_batched_equals_single_on_every_layer(preset):
    enc = _encoder(preset)
    names = {info.name for info in enc.layers}
    waves = [speechlike(n, seed=i) for i, n in enumerate(LENGTHS)]
    with torch.inference_mode():
        batched = enc.forward(waves, names, set())
        single = [enc.forward([w], names, set()) for w in waves]
    worst = 0.0
    for name in names:
        for b in range(len(waves)):
            a, s = batched[name][b], single[b][name][0]
            assert a.shape == s.shape, (name, b)
            worst = max(worst, float((a - s).abs().max()))
    assert worst < 1e-4, f"{preset}: max |batched - single| = {worst:.2e}"


@pytest.mark.parametrize("preset", ["tiny-wav2vec2", "tiny-data2vec-audio", "tiny-wav2vec2-conformer"])
def test_naive_padding_would_differ(preset):
    """The control: the plain HF model on a zero-padded batch does not match (so the test bites)."""
    model, fe = models.build_random(preset, seed=0)
    waves = [speechlike(n, seed=i) for i, n in enumerate(LENGTHS[:2])]
    with torch.inference_mode():
        alone = model(torch.from_numpy(waves[1])[None], output_hidden_states=True).hidden_states
        padded = torch.zeros(2, len(waves[0]))
        mask = torch.zeros(2, len(waves[0]), dtype=torch.long)
        for b, w in enumerate(waves):
            padded[b, : len(w)] = torch.from_numpy(w)
            mask[b, : len(w)] = 1
        both = model(padded, attention_mask=mask, output_hidden_states=True).hidden_states
    n = alone[-1].shape[1]
    assert float((both[-1][1, :n] - alone[-1][0]).abs().max()) > 1e-3


def test_single_matches_plain_model():
    """Our B=1 path is the model's own forward: hidden states equal HF's to float rounding."""
    model, fe = models.build_random("tiny-wav2vec2", seed=0)
    enc = encoders.wrap(model, fe, torch.device("cpu"))
    wave = speechlike(20000, seed=3)
    x = fe(wave, sampling_rate=16000, return_tensors="pt").input_values
    with torch.inference_mode():
        ref = model(x, output_hidden_states=True).hidden_states
        ours = enc.forward([wave], {f"layer.{i}" for i in range(len(ref))}, set())
    for i, h in enumerate(ref):
        np.testing.assert_allclose(ours[f"layer.{i}"][0].numpy(), h[0].numpy(), atol=1e-5)


def test_frame_counts_match_model_lengths():
    enc = _encoder("tiny-wav2vec2")
    for n in [400, 401, 16000, 33333]:
        expected = int(enc.model._get_feat_extract_output_lengths(torch.tensor(n)))
        assert enc.conv_lengths(n)[-1] == expected


def test_whisper_keeps_frames_of_real_audio_and_chunks_long_audio():
    enc = _encoder("tiny-whisper")
    names = {"cnn.0", "cnn.1", "layer.0", "layer.2"}
    short, long_ = speechlike(16000, 0), speechlike(16000 * 31, 1)
    with torch.inference_mode():
        out = enc.forward([short, long_], names, set())
    assert out["layer.2"][0].shape[0] == 50 and out["cnn.0"][0].shape[0] == 100
    assert out["layer.2"][1].shape[0] == 1500 + 50  # a 30 s window + 1 s
    rates = {i.name: i.frame_rate_hz for i in enc.layers}
    assert rates["cnn.0"] == 100 and rates["layer.0"] == 50
