"""The adapters' device and dtype handling: bfloat16 through autocast over float32 weights, and
Whisper's decoder left behind. (Batching exactness is in test_exact_batching.py.)"""

from __future__ import annotations

import pytest
import torch
from conftest import BF16_RTOL, LENGTHS, relative_errors, speechlike, tiny_presets

from layerwise.extract import encoders, models


@pytest.mark.parametrize("preset", tiny_presets())
def test_bfloat16_autocast_is_finite_and_close_to_float32(preset):
    model, fe = models.build_random(preset, seed=0)
    f32 = encoders.wrap(model, fe, torch.device("cpu"))
    bf16 = encoders.wrap(models.build_random(preset, seed=0)[0], fe, torch.device("cpu"),
                         torch.bfloat16)
    assert {p.dtype for p in bf16.model.parameters()} == {torch.float32}  # weights stay float32
    names = {info.name for info in f32.layers}
    waves = [speechlike(n, seed=i) for i, n in enumerate(LENGTHS)]
    with torch.inference_mode():
        ref, low = f32.forward(waves, names, set()), bf16.forward(waves, names, set())
    assert all(bool(torch.isfinite(x).all()) for v in low.values() for x in v)
    errors = relative_errors(low, ref)
    assert max(errors.values()) < BF16_RTOL, errors
    assert max(errors.values()) > 1e-4, "the control: bfloat16 did not run"


def test_whisper_decoder_stays_off_the_device():
    """Only the encoder is moved ("meta" stands in for a GPU here)."""
    model, fe = models.build_random("tiny-whisper", seed=0)
    enc = encoders.wrap(model, fe, torch.device("meta"))
    assert {p.device.type for p in enc.model.parameters()} == {"meta"}
    assert {p.device.type for p in model.decoder.parameters()} == {"cpu"}


def test_expand_layer_groups_in_model_order():
    names = ["cnn.0", "cnn.1", "proj", "layer.0", "layer.1", "layer.2"]
    layers = [encoders.LayerInfo(n, "transformer", 50.0, 4) for n in names]
    assert encoders.expand_layer_groups(layers, ["layer", "cnn.1"]) == [
        "cnn.1", "layer.0", "layer.1", "layer.2"]
    assert encoders.expand_layer_groups(layers, ["layer.2", "proj", "proj"]) == ["proj", "layer.2"]
    assert encoders.expand_layer_groups(layers, ["missing_group"]) == []
    with pytest.raises(ValueError, match="layer 'layer.9' does not exist"):
        encoders.expand_layer_groups(layers, ["layer.9"])
