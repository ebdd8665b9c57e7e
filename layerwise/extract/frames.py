"""Where each layer's frames sit in time: frame centres and receptive fields.

Pooling a span, sampling frames at given instants and computing the log-mel target of a frame
all need to know which stretch of audio frame ``n`` of a layer stands for. A stack of
convolutions decides it: frame ``n`` of a conv output covers input frames
``[n·stride − pad, n·stride − pad + kernel)``, so, from the input samples up, every layer has a
uniform :class:`FrameGrid` — a rate, the centre of frame 0 and the width of the receptive field.

* wav2vec2-style models (``conv_kernel``/``conv_stride`` in the Hugging Face config, no
  padding): wav2vec2-base frame ``k`` covers samples ``[320k, 320k + 400)``, centre
  ``320k + 200`` (12.5 ms after ``k`` × 20 ms); conv block ``cnn.i`` has its own grid.
* Whisper: log-mel frame ``m`` (``center=True``) is centred on sample ``hop·m``; ``conv1``
  (kernel 3, padding 1) keeps that grid, ``conv2`` (kernel 3, stride 2, padding 1) puts encoder
  frame ``i`` on mel frame ``2i`` (20i ms), with a 65 ms receptive field.

Transformer layers attend to the whole utterance; their grid is that of the frames they are
computed on (the conv front end's), which is what "the frame at an instant" means for them.
The grids are stored as layer attributes at extraction (``first_centre_s``,
``receptive_field_s``); :func:`stored_grid` derives them for files written before that.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from layerwise.vocabulary import layer_group

log = logging.getLogger(__name__)

#: Whisper's two encoder convs over the log-mel frames: (kernel, stride, padding).
WHISPER_CONVS = ((3, 1, 1), (3, 2, 1))
#: The wav2vec2/HuBERT/WavLM/data2vec conv front end (the Hugging Face defaults).
DEFAULT_CONV_KERNEL = (10, 3, 3, 3, 3, 2, 2)
DEFAULT_CONV_STRIDE = (5, 2, 2, 2, 2, 2, 2)
WHISPER_N_FFT, WHISPER_HOP = 400, 160


@dataclass(frozen=True)
class FrameGrid:
    """Frame ``n`` is centred at ``first_centre_s + n / rate_hz`` and sees ``receptive_field_s``
    of audio around its centre (times in seconds from the utterance start)."""

    rate_hz: float
    first_centre_s: float
    receptive_field_s: float

    def centres(self, n_frames: int) -> np.ndarray:
        return self.first_centre_s + np.arange(n_frames) / self.rate_hz

    def nearest(self, times, n_frames) -> np.ndarray:
        """The frame of ``n_frames`` (per time, or one count) centred nearest each time; a
        time halfway between two centres takes the earlier frame."""
        pos = (np.asarray(times, dtype=float) - self.first_centre_s) * self.rate_hz
        last = np.maximum(np.asarray(n_frames) - 1, 0)
        return np.clip(np.ceil(pos - 0.5 - 1e-6), 0, last).astype(np.int64)

    def field(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start and end (s) of the receptive field of each frame."""
        centre = self.first_centre_s + np.asarray(frames) / self.rate_hz
        return centre - self.receptive_field_s / 2, centre + self.receptive_field_s / 2

    def conv(self, kernel: int, stride: int, padding: int = 0) -> FrameGrid:
        """The grid of a convolution applied to frames on this grid."""
        hop = 1.0 / self.rate_hz
        return FrameGrid(self.rate_hz / stride,
                         self.first_centre_s + ((kernel - 1) / 2 - padding) * hop,
                         self.receptive_field_s + (kernel - 1) * hop)

    def attrs(self) -> dict[str, float]:
        """The layer attributes that record this grid in a feature store."""
        return {"first_centre_s": self.first_centre_s, "receptive_field_s": self.receptive_field_s}


def samples(sample_rate: float) -> FrameGrid:
    """The waveform itself: sample ``n`` spans ``[n, n + 1) / sample_rate``."""
    return FrameGrid(float(sample_rate), 0.5 / sample_rate, 1.0 / sample_rate)


def conv_stack(kernels: Sequence[int], strides: Sequence[int], sample_rate: float
               ) -> list[FrameGrid]:
    """Grids of each block of a wav2vec2-style conv feature encoder (no padding)."""
    grids, grid = [], samples(sample_rate)
    for k, s in zip(kernels, strides, strict=True):
        grid = grid.conv(k, s)
        grids.append(grid)
    return grids


def whisper(sample_rate: float, hop: int = WHISPER_HOP, n_fft: int = WHISPER_N_FFT
            ) -> list[FrameGrid]:
    """Grids of Whisper's log-mel frames, ``conv1`` and ``conv2`` (= the encoder layers)."""
    mel = FrameGrid(sample_rate / hop, 0.0, n_fft / sample_rate)
    conv1 = mel.conv(*WHISPER_CONVS[0])
    return [mel, conv1, conv1.conv(*WHISPER_CONVS[1])]


def stored_grid(name: str, info: dict, store_attrs: dict) -> FrameGrid:
    """A stored layer's grid: its attributes, else derived from the file's ``model_type``.

    Files written before the grid attributes existed get Whisper's grids or the default
    wav2vec2 conv front end when the stored rate agrees with them; otherwise frame ``n`` is
    taken to span ``[n, n + 1) / rate`` (and a warning says so).
    """
    rate = float(info["frame_rate_hz"])
    if "first_centre_s" in info and "receptive_field_s" in info:
        return FrameGrid(rate, float(info["first_centre_s"]), float(info["receptive_field_s"]))
    sr = float(store_attrs.get("sample_rate", 16000))
    group, idx = layer_group(name)
    if store_attrs.get("model_type") == "whisper":
        grid = whisper(sr)[1 if name == "cnn.0" else 2]
    else:
        stack = conv_stack(DEFAULT_CONV_KERNEL, DEFAULT_CONV_STRIDE, sr)
        grid = stack[idx] if group == "cnn" and idx is not None and idx < len(stack) else stack[-1]
    if np.isclose(grid.rate_hz, rate):
        return grid
    log.warning("layer %s (%g Hz, model_type %r): receptive field unknown; frame n taken to "
                "span [n, n+1)/rate", name, rate, store_attrs.get("model_type"))
    return FrameGrid(rate, 0.5 / rate, 1.0 / rate)
