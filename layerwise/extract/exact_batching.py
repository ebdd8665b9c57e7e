"""Padding that does not change features: a batched forward pass equal to one-at-a-time.

Zero-padding a short utterance into a batch leaks into its features in two places:

1. ``feat_extract_norm == "group"`` models (wav2vec2-base, HuBERT-base, WavLM-base, UniSpeech-SAT
   base) normalise each conv-0 channel over the *whole* time axis, padding included. We replace
   that GroupNorm by one whose statistics come from each utterance's valid conv-0 frames only.
2. Temporal convolutions inside the encoder (positional conv embeddings, e.g. data2vec-audio's
   stack of five, and the conformer's depthwise conv) see the padded frames' values, whereas a
   lone utterance sees the convolution's zero padding there. A pre-hook zeroes padded frames
   before each such convolution, so both cases see zeros.

Attention is handled by the model's own ``attention_mask``. Together these make batched features
equal to single-utterance ones up to float rounding (tests check every family to 1e-4).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


def masked_instance_norm(h: torch.Tensor, norm: nn.GroupNorm, lengths: Sequence[int]) -> torch.Tensor:
    """``norm`` applied to each utterance's valid frames ``h[b, :, :lengths[b]]`` alone.

    The very GroupNorm kernel a lone utterance would get; padded frames are left at zero (the
    convolutions that follow never let them reach a valid frame). The output has the norm's
    dtype, float32 under a bfloat16 autocast as for the model's own GroupNorm.
    """
    out = None
    for b, n in enumerate(lengths):
        part = nn.functional.group_norm(h[b : b + 1, :, :n], norm.num_groups, norm.weight,
                                        norm.bias, norm.eps)
        if out is None:
            out = h.new_zeros(h.shape, dtype=part.dtype)
        out[b : b + 1, :, :n] = part
    return out


@contextmanager
def masked_group_norm(conv_layer: nn.Module, lengths: Sequence[int]) -> Iterator[None]:
    """Temporarily make a ``*GroupNormConvLayer`` normalise over valid frames only."""
    original = conv_layer.forward

    def forward(hidden_states: torch.Tensor) -> torch.Tensor:
        h = conv_layer.conv(hidden_states)
        h = masked_instance_norm(h, conv_layer.layer_norm, lengths)
        return conv_layer.activation(h)

    conv_layer.forward = forward
    try:
        yield
    finally:
        conv_layer.forward = original


@contextmanager
def zero_padded_frames(module: nn.Module, frame_mask: torch.Tensor) -> Iterator[None]:
    """Zero padded frames at the input of every temporal ``Conv1d`` under ``module``.

    ``frame_mask`` is (batch, frames) with 1 for valid frames. Only inputs whose time axis has the
    mask's length are touched, so convolutions over other axes are left alone.
    """
    mask = frame_mask[:, None, :]

    def pre_hook(_module, args):
        x = args[0]
        if x.dim() == 3 and x.shape[-1] == mask.shape[-1] and x.shape[0] == mask.shape[0]:
            return (x * mask.to(x.dtype), *args[1:])
        return None

    handles = [
        m.register_forward_pre_hook(pre_hook)
        for m in module.modules()
        if isinstance(m, nn.Conv1d) and m.kernel_size[0] > 1
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
