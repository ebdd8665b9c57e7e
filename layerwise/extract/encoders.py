"""Every layer of a speech encoder from one forward pass, for a batch of raw waveforms.

Two adapters cover the Hugging Face audio encoders:

* :class:`ConvFrontEncoder` — models with a convolutional feature encoder on the waveform
  (wav2vec2, HuBERT, WavLM, data2vec-audio, UniSpeech(-SAT), Wav2Vec2-Conformer, SEW(-D)):
  layers ``cnn.i`` (conv blocks, forward hooks), ``proj`` (feature projection), ``layer.i``
  (``hidden_states``; ``layer.0`` is the input of the first transformer block);
* :class:`WhisperEncoder` — Whisper's encoder on 30 s log-mel windows: ``cnn.0``, ``cnn.1``
  (the two convs, after GELU) and ``layer.i``; only the frames covering real audio are kept,
  and audio longer than 30 s is cut into 30 s windows whose frames are concatenated.

``forward`` returns, per requested layer, either each utterance's frames or its mean frame
(for layers stored only pooled), already cut to the utterance's own length.

Weights stay float32 whatever ``compute_dtype``: ``bfloat16`` runs the forward pass under
``torch.autocast``, which keeps normalisations (group and layer norms), softmax and reductions in
float32 and runs only matmuls and convolutions in bfloat16.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
import torch

from layerwise.extract import exact_batching
from layerwise.extract import frames as frame_grids
from layerwise.extract.models import ModelSourceError

#: Families whose padded batches are made exact by exact_batching; others get equal-length batches.
MASKED_FAMILIES = {
    "wav2vec2",
    "hubert",
    "wavlm",
    "data2vec-audio",
    "unispeech",
    "unispeech-sat",
    "wav2vec2-conformer",
}
WHISPER_CHUNK_SECONDS = 30


@dataclass(frozen=True)
class LayerInfo:
    """One captured layer: its name, kind (cnn|projection|transformer), rate and width, and
    where its frames sit in time (:class:`layerwise.extract.frames.FrameGrid`; ``None`` if unknown)."""

    name: str
    kind: str
    frame_rate_hz: float
    dim: int
    first_centre_s: float | None = None
    receptive_field_s: float | None = None

    @classmethod
    def on(cls, name: str, kind: str, grid: frame_grids.FrameGrid, dim: int) -> LayerInfo:
        return cls(name, kind, grid.rate_hz, dim, **grid.attrs())


class SpeechEncoder:
    """Common interface: layer list, batching rule, and ``forward`` over raw waveforms."""

    #: "masked": any lengths may share a batch; "equal-length": only equal lengths may;
    #: "independent": each item is padded to a fixed window, so batches never interact.
    batching = "masked"

    def __init__(self, model: torch.nn.Module, feature_extractor, device: torch.device,
                 compute_dtype: torch.dtype = torch.float32):
        self.model = model.to(device=device, dtype=torch.float32).eval()
        self.fe = feature_extractor
        self.device = device
        self.compute_dtype = compute_dtype
        self.sample_rate = int(getattr(feature_extractor, "sampling_rate", 16000))
        self.layers: list[LayerInfo] = self._layers()

    def _layers(self) -> list[LayerInfo]:  # pragma: no cover - abstract
        raise NotImplementedError

    def cost_seconds(self, n_samples: int) -> float:
        """Audio seconds of compute one utterance costs inside a padded batch."""
        return n_samples / self.sample_rate

    def autocast(self) -> torch.autocast:
        """The context the model runs in: ``compute_dtype`` autocast, or plain float32."""
        return torch.autocast(self.device.type, dtype=self.compute_dtype,
                              enabled=self.compute_dtype != torch.float32)

    def forward(
        self, waves: Sequence[np.ndarray], frame_layers: set[str], pooled_layers: set[str]
    ) -> dict[str, list[torch.Tensor]]:
        """Run a batch; return ``{layer: [per-utterance (T, D) frames or (D,) mean]}``."""
        raise NotImplementedError  # pragma: no cover

    @staticmethod
    def _collect(
        out: dict, name: str, t: torch.Tensor, lengths: Sequence[int], frame_layers, pooled_layers
    ) -> None:
        """Cut a time-major batch tensor (B, T, D) to each utterance's frames (or mean)."""
        if name in frame_layers:
            out[name] = [t[b, :n].float() for b, n in enumerate(lengths)]
        elif name in pooled_layers:
            out[name] = [t[b, :n].float().mean(dim=0) for b, n in enumerate(lengths)]


class ConvFrontEncoder(SpeechEncoder):
    """wav2vec2-style models: conv feature encoder → projection → transformer."""

    def __init__(self, model, feature_extractor, device, compute_dtype=torch.float32):
        self.family = model.config.model_type
        self.batching = "masked" if self.family in MASKED_FAMILIES else "equal-length"
        super().__init__(model, feature_extractor, device, compute_dtype)

    @property
    def convs(self):
        return self.model.feature_extractor.conv_layers

    def _layers(self) -> list[LayerInfo]:
        return conv_front_layers(self.model.config, self.sample_rate)

    def conv_lengths(self, n_samples: int) -> list[int]:
        """Valid output frames of each conv block for ``n_samples`` input samples."""
        cfg, out, n = self.model.config, [], n_samples
        for k, s in zip(cfg.conv_kernel, cfg.conv_stride, strict=False):
            n = (n - k) // s + 1
            out.append(n)
        return out

    def forward(self, waves, frame_layers, pooled_layers):
        wanted = frame_layers | pooled_layers
        inputs = [self._preprocess(w) for w in waves]
        lengths = [x.shape[0] for x in inputs]
        batch = torch.zeros(len(inputs), max(lengths), dtype=torch.float32)
        for b, x in enumerate(inputs):
            batch[b, : x.shape[0]] = torch.from_numpy(x)
        batch = batch.to(self.device)
        sample_mask = (torch.arange(batch.shape[1])[None, :] < torch.tensor(lengths)[:, None])
        conv_lens = [self.conv_lengths(n) for n in lengths]  # [utt][conv]
        frames = [c[-1] for c in conv_lens]
        frame_mask = (torch.arange(max(frames))[None, :] < torch.tensor(frames)[:, None]).to(
            self.device
        )
        out: dict[str, list[torch.Tensor]] = {}
        with ExitStack() as stack:
            stack.enter_context(self.autocast())
            for i, conv in enumerate(self.convs):
                if f"cnn.{i}" in wanted:
                    lens_i = [c[i] for c in conv_lens]
                    stack.enter_context(self._capture(conv, f"cnn.{i}", lens_i, out,
                                                      frame_layers, pooled_layers, channels_first=True))
            if "proj" in wanted:
                stack.enter_context(self._capture(self.model.feature_projection, "proj", frames,
                                                  out, frame_layers, pooled_layers))
            if self.batching == "masked":
                if getattr(self.model.config, "feat_extract_norm", "layer") == "group":
                    stack.enter_context(
                        exact_batching.masked_group_norm(self.convs[0], [c[0] for c in conv_lens])
                    )
                stack.enter_context(exact_batching.zero_padded_frames(self.model.encoder, frame_mask))
            result = self.model(
                batch,
                attention_mask=sample_mask.to(self.device).long(),
                output_hidden_states=True,
            )
        hidden = result.hidden_states
        for i, h in enumerate(hidden):
            name = f"layer.{i}"
            if name in wanted:
                lens = frames if h.shape[1] == max(frames) else [h.shape[1]] * len(waves)
                self._collect(out, name, h, lens, frame_layers, pooled_layers)
        return out

    def _preprocess(self, wave: np.ndarray) -> np.ndarray:
        """The model's own per-utterance input normalisation (``do_normalize``)."""
        values = self.fe(wave, sampling_rate=self.sample_rate, return_tensors="np").input_values
        return np.asarray(values[0], dtype=np.float32)

    def _capture(self, module, name, lengths, out, frame_layers, pooled_layers,
                 channels_first=False):
        def hook(_module, _args, output):
            t = output[0] if isinstance(output, tuple) else output
            if channels_first:
                t = t.transpose(1, 2)
            self._collect(out, name, t, lengths, frame_layers, pooled_layers)

        return _Hook(module.register_forward_hook(hook))


class WhisperEncoder(SpeechEncoder):
    """Whisper's encoder: fixed 30 s log-mel windows, frames cut to the real audio.

    Only the encoder is kept (and moved to the device); the decoder is never run.
    """

    batching = "independent"
    family = "whisper"

    def __init__(self, model, feature_extractor, device, compute_dtype=torch.float32):
        super().__init__(model.get_encoder(), feature_extractor, device, compute_dtype)

    def _layers(self) -> list[LayerInfo]:
        return whisper_layers(self.model.config, self.fe)

    def cost_seconds(self, n_samples: int) -> float:
        chunks = max(1, math.ceil(n_samples / (WHISPER_CHUNK_SECONDS * self.sample_rate)))
        return chunks * WHISPER_CHUNK_SECONDS

    def forward(self, waves, frame_layers, pooled_layers):
        wanted = frame_layers | pooled_layers
        chunk = WHISPER_CHUNK_SECONDS * self.sample_rate
        pieces, owner = [], []
        for b, w in enumerate(waves):
            for start in range(0, max(len(w), 1), chunk):
                pieces.append(w[start : start + chunk])
                owner.append(b)
        feats = self.fe(
            pieces, sampling_rate=self.sample_rate, return_tensors="pt", padding="max_length"
        ).input_features.to(self.device, torch.float32)
        hop = self.fe.hop_length
        mel_frames = [min(math.ceil(len(p) / hop), feats.shape[-1]) for p in pieces]
        enc_frames = [math.ceil(n / 2) for n in mel_frames]
        captured: dict[str, torch.Tensor] = {}

        def grab(name):
            def hook(_m, _a, output):
                captured[name] = torch.nn.functional.gelu(output).transpose(1, 2)

            return hook

        with ExitStack() as stack:
            stack.enter_context(self.autocast())
            for i, conv in enumerate((self.model.conv1, self.model.conv2)):
                if f"cnn.{i}" in wanted:
                    stack.enter_context(_Hook(conv.register_forward_hook(grab(f"cnn.{i}"))))
            result = self.model(feats, output_hidden_states=True)
        for i, h in enumerate(result.hidden_states):
            captured[f"layer.{i}"] = h
        out: dict[str, list[torch.Tensor]] = {}
        for name, t in captured.items():
            if name not in wanted:
                continue
            lens = mel_frames if name == "cnn.0" else enc_frames
            per_piece = [t[p, :n].float() for p, n in enumerate(lens)]
            joined = [
                torch.cat([x for x, o in zip(per_piece, owner, strict=False) if o == b]) for b in range(len(waves))
            ]
            if name in frame_layers:
                out[name] = joined
            else:
                out[name] = [x.mean(dim=0) for x in joined]
        return out


def conv_front_layers(cfg, sample_rate: int) -> list[LayerInfo]:
    """Layers of a wav2vec2-style model, from its config alone."""
    grids = frame_grids.conv_stack(cfg.conv_kernel, cfg.conv_stride, sample_rate)
    layers = [LayerInfo.on(f"cnn.{i}", "cnn", g, dim)
              for i, (g, dim) in enumerate(zip(grids, cfg.conv_dim, strict=True))]
    out = grids[-1]
    if cfg.model_type not in ("sew", "sew-d") or cfg.conv_dim[-1] != cfg.hidden_size:
        layers.append(LayerInfo.on("proj", "projection", out, cfg.hidden_size))
    squeeze = getattr(cfg, "squeeze_factor", 1)  # SEW pools inside the encoder
    squeezed = out.conv(squeeze, squeeze)
    for i in range(cfg.num_hidden_layers + 1):
        last = i == cfg.num_hidden_layers
        grid = out if (squeeze == 1 or last) else squeezed
        layers.append(LayerInfo.on(f"layer.{i}", "transformer", grid, cfg.hidden_size))
    return layers


def whisper_layers(cfg, feature_extractor) -> list[LayerInfo]:
    """Layers of Whisper's encoder: two convs and the transformer stack."""
    _, conv1, conv2 = frame_grids.whisper(feature_extractor.sampling_rate,
                                     feature_extractor.hop_length, feature_extractor.n_fft)
    return [
        LayerInfo.on("cnn.0", "cnn", conv1, cfg.d_model),
        LayerInfo.on("cnn.1", "cnn", conv2, cfg.d_model),
        *(
            LayerInfo.on(f"layer.{i}", "transformer", conv2, cfg.d_model)
            for i in range(cfg.encoder_layers + 1)
        ),
    ]


def describe(model_dir: str, *, revision: str | None = None) -> list[LayerInfo]:
    """A model's layers from its config and feature extractor, without loading weights."""
    from transformers import AutoConfig, AutoFeatureExtractor

    try:
        cfg = AutoConfig.from_pretrained(model_dir, revision=revision)
        fe = AutoFeatureExtractor.from_pretrained(model_dir, revision=revision)
    except OSError as exc:
        raise ModelSourceError(f"{model_dir}: cannot load model ({' '.join(str(exc).split())})"
                               ) from exc
    if cfg.model_type == "whisper":
        return whisper_layers(cfg, fe)
    return conv_front_layers(cfg, int(getattr(fe, "sampling_rate", 16000)))


class _Hook:
    """A hook handle usable as a context manager."""

    def __init__(self, handle):
        self.handle = handle

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def wrap(model, feature_extractor, device: torch.device,
         compute_dtype: torch.dtype = torch.float32) -> SpeechEncoder:
    """Pick the adapter for a loaded model."""
    if model.config.model_type == "whisper":
        return WhisperEncoder(model, feature_extractor, device, compute_dtype)
    if not hasattr(model, "feature_extractor"):
        raise ValueError(
            f"model type {model.config.model_type!r} is not a supported audio encoder "
            "(expected a wav2vec2-style conv feature encoder or Whisper)"
        )
    return ConvFrontEncoder(model, feature_extractor, device, compute_dtype)


def expand_layer_groups(layers: Sequence[LayerInfo], spec: Sequence[str]) -> list[str]:
    """The names of ``extract.layers``/``extract.frames``: groups (``cnn``, ``proj``, ``layer``)
    expanded to their members, and explicit names (``layer.6``), in model order."""
    names = [info.name for info in layers]
    chosen = set()
    for item in spec:
        if item in names:
            chosen.add(item)
            continue
        group = [n for n in names if n.split(".")[0] == item]
        if not group and "." in item:
            raise ValueError(f"extract.layers: layer {item!r} does not exist ({', '.join(names)})")
        chosen.update(group)
    return [n for n in names if n in chosen]
