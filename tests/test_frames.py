"""Frame grids: centres and receptive fields from the conv configs, checked on the models' convs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Wav2Vec2Config, WhisperConfig, WhisperFeatureExtractor

from layerwise.extract import encoders, frames, models
from layerwise.extract.encoders import LayerInfo
from layerwise.io import store

SR = 16000


def _grids(infos):
    return {i.name: frames.FrameGrid(i.frame_rate_hz, i.first_centre_s, i.receptive_field_s)
            for i in infos}


def test_wav2vec2_frame_k_is_centred_on_sample_320k_plus_200():
    g = _grids(encoders.conv_front_layers(Wav2Vec2Config(), SR))
    for name in ("cnn.6", "proj", "layer.0", "layer.12"):
        np.testing.assert_allclose(g[name].centres(4) * SR, [200, 520, 840, 1160])
        start, end = g[name].field(np.arange(4))
        np.testing.assert_allclose(start * SR, [0, 320, 640, 960], atol=1e-9)
        np.testing.assert_allclose(end * SR, [400, 720, 1040, 1360], atol=1e-9)
    np.testing.assert_allclose(g["cnn.0"].centres(2) * SR, [5, 10])  # samples [5k, 5k + 10)
    assert g["cnn.0"].receptive_field_s * SR == pytest.approx(10)


def test_whisper_encoder_frame_i_is_centred_at_20i_ms():
    g = _grids(encoders.whisper_layers(WhisperConfig(encoder_layers=2), WhisperFeatureExtractor()))
    for name in ("cnn.1", "layer.0", "layer.2"):
        np.testing.assert_allclose(g[name].centres(4), [0, 0.02, 0.04, 0.06], atol=1e-12)
        assert g[name].receptive_field_s == pytest.approx(0.065)  # mel frames 2i-2 .. 2i+2
    np.testing.assert_allclose(g["cnn.0"].centres(3), [0, 0.01, 0.02], atol=1e-12)


def test_nearest_frame_and_its_ties():
    g = frames.FrameGrid(50.0, 0.0, 0.065)
    assert g.nearest([0.0, 0.009, 0.011, 0.01, 0.03, 0.5], 10).tolist() == [0, 0, 1, 0, 1, 9]
    assert g.nearest([0.05, 0.05], [2, 5]).tolist() == [1, 2]  # per-utterance frame counts


def _changed(before: torch.Tensor, after: torch.Tensor) -> list[int]:
    """Time steps (last axis) where a conv output moved."""
    return torch.nonzero((after - before).abs().amax(dim=(0, 1)) > 1e-6).flatten().tolist()


def test_wav2vec2_receptive_fields_match_its_convs():
    """An impulse at sample c moves exactly the frames whose receptive field holds c."""
    model, _ = models.build_random("tiny-wav2vec2-layernorm")  # layer norm: no time mixing
    grids = _grids(encoders.conv_front_layers(model.config, SR))
    x0 = torch.zeros(1, 2000)
    for c in (0, 437, 1203):
        x1 = x0.clone()
        x1[0, c] = 1.0
        h0, h1 = x0[:, None], x1[:, None]
        with torch.no_grad():
            for i, conv in enumerate(model.feature_extractor.conv_layers):
                h0, h1 = conv(h0), conv(h1)
                start, end = grids[f"cnn.{i}"].field(np.arange(h0.shape[-1]))
                inside = np.flatnonzero((start * SR <= c + 1e-6) & (c + 1 <= end * SR + 1e-6))
                assert _changed(h0, h1) == inside.tolist(), (c, i)


def test_whisper_receptive_fields_match_its_convs():
    """A pulse in mel frame m moves exactly the conv frames whose receptive field is centred
    within (their field − a mel frame's field) / 2 of it."""
    model, fe = models.build_random("tiny-whisper")
    mel, conv1, conv2 = frames.whisper(SR, fe.hop_length, fe.n_fft)
    enc = model.encoder
    x0 = torch.zeros(1, 80, 60)
    for m in (0, 17, 30):
        x1 = x0.clone()
        x1[0, :, m] = 1.0
        with torch.no_grad():
            a0, a1 = enc.conv1(x0), enc.conv1(x1)
            b0 = enc.conv2(torch.nn.functional.gelu(a0))
            b1 = enc.conv2(torch.nn.functional.gelu(a1))
        t = mel.centres(m + 1)[m]
        for grid, h0, h1 in ((conv1, a0, a1), (conv2, b0, b1)):
            reach = (grid.receptive_field_s - mel.receptive_field_s) / 2
            inside = np.flatnonzero(np.abs(grid.centres(h0.shape[-1]) - t) <= reach + 1e-9)
            assert _changed(h0, h1) == inside.tolist(), (m, grid)


def test_whisper_mel_frame_m_is_centred_on_sample_160m():
    fe = WhisperFeatureExtractor()
    for m in (5, 6, 40):
        wave = np.zeros(SR, dtype=np.float32)
        wave[160 * m] = 1.0
        feats = fe(wave, sampling_rate=SR, return_tensors="np").input_features[0, :, :100]
        assert int(np.argmax(feats.sum(axis=0))) == m


def _store(tmp_path, infos, model_type, *, grid_attrs=True):
    if not grid_attrs:
        infos = [LayerInfo(i.name, i.kind, i.frame_rate_hz, i.dim) for i in infos]
    path = tmp_path / f"{model_type}.h5"
    with store.ShardWriter(path, infos, {i.name for i in infos}, dtype="float32",
                           attrs={"model_type": model_type, "sample_rate": SR}) as w:
        w.append(["u"], [SR], {i.name: [np.zeros((3, i.dim))] for i in infos})
    return store.open(path)


@pytest.mark.parametrize("grid_attrs", [True, False])
def test_store_records_the_grids_and_derives_them_for_older_files(tmp_path, grid_attrs):
    w2v = encoders.conv_front_layers(Wav2Vec2Config(conv_dim=[2] * 7, hidden_size=2,
                                                    num_hidden_layers=1), SR)
    wsp = encoders.whisper_layers(WhisperConfig(d_model=2, encoder_layers=1),
                                  WhisperFeatureExtractor())
    for infos, model_type in ((w2v, "wav2vec2"), (wsp, "whisper")):
        fs = _store(tmp_path, infos, model_type, grid_attrs=grid_attrs)
        for want in infos:
            got = fs.grid(want.name)
            assert got.rate_hz == want.frame_rate_hz
            assert got.first_centre_s == pytest.approx(want.first_centre_s, abs=1e-12)
            assert got.receptive_field_s == pytest.approx(want.receptive_field_s, abs=1e-12)


def test_unknown_geometry_falls_back_to_the_frame_span(tmp_path, caplog):
    fs = _store(tmp_path, [LayerInfo("layer.0", "transformer", 25.0, 2)], "sew")
    assert fs.grid("layer.0") == frames.FrameGrid(25.0, 0.02, 0.04)
    assert "receptive field unknown" in caplog.text
