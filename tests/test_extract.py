"""Extraction of a shard: invariance to shards and batch size, rejection, OOM splitting, batching
plan, GPU slots, float32 precision and provenance, non-finite counts."""

from __future__ import annotations

import logging
import weakref

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import N_UTTS
from conftest import run_extract as _run

from layerwise.extract import devices, encoders, features


def test_shard_count_does_not_change_features(wav_table, tmp_path, tiny_model_dir):
    """Shards hold whole hash groups: 1 shard and 3 shards give bitwise equal features."""
    one, _ = _run(wav_table, tmp_path, "one", tiny_model_dir, batch_seconds=8)
    parts = [_run(wav_table[wav_table["group"] == g], tmp_path, f"part{g}", tiny_model_dir,
                  batch_seconds=8)[0] for g in (0, 1, 2)]
    assert one.layers == parts[0].layers and len(one.layers) == 3 + 1 + 3
    for u, g in zip(wav_table["utt_id"], wav_table["group"], strict=True):
        for layer in one.layers:
            a, b = one.frames(layer, u), parts[g].frames(layer, u)
            np.testing.assert_array_equal(a, b, err_msg=f"{u} {layer}")  # bitwise


def test_batch_size_changes_features_only_by_float_rounding(wav_table, tmp_path, tiny_model_dir):
    big, _ = _run(wav_table, tmp_path, "big", tiny_model_dir, batch_seconds=30, dtype="float32")
    small, _ = _run(wav_table, tmp_path, "small", tiny_model_dir, batch_seconds=0.1,
                    dtype="float32")
    for u in wav_table["utt_id"]:
        for layer in big.layers:
            np.testing.assert_allclose(big.frames(layer, u), small.frames(layer, u), atol=1e-4)


def test_attrs_record_provenance(wav_table, tmp_path, tiny_model_dir):
    fs, summary = _run(wav_table, tmp_path, "a", tiny_model_dir, params_hash="abc123")
    assert fs.attrs["config_hash"] == "abc123"
    assert fs.attrs["model_source"] == "test"
    assert fs.attrs["batching"] == "masked"
    assert "torch" in fs.attrs["versions"]
    assert fs.layer_info("layer.1")["storage"] == "frames"
    assert fs.layer_info("cnn.0")["storage"] == "mean"
    assert fs.layer_info("layer.1")["frame_rate_hz"] == 16000 / 20
    # convs (10, 3, 3) / (5, 2, 2): frame k covers samples [20k, 20k + 40)
    assert fs.layer_info("layer.1")["first_centre_s"] * 16000 == pytest.approx(20)
    assert fs.layer_info("cnn.0")["receptive_field_s"] * 16000 == pytest.approx(10)
    assert summary["utterances"] == N_UTTS


def test_failing_utterance_is_rejected_and_shard_completes(wav_table, tmp_path, tiny_model_dir,
                                                           monkeypatch):
    original = encoders.ConvFrontEncoder.forward

    def forward(self, waves, framed, pooled):
        if any(len(w) == wav_table["n_samples"].max() for w in waves):
            raise RuntimeError("CUDA out of memory. Tried to allocate 20 GiB")
        return original(self, waves, framed, pooled)

    monkeypatch.setattr(encoders.ConvFrontEncoder, "forward", forward)
    fs, summary = _run(wav_table, tmp_path, "oom", tiny_model_dir, batch_seconds=30)
    assert summary["rejected"] == 1 and len(fs.utt_ids) == N_UTTS - 1
    rej = pd.read_csv(tmp_path / "oom.rejected.tsv", sep="\t")
    assert rej["stage"].tolist() == ["extract"]
    assert rej["reason"].str.contains("out of memory").all()


def test_plan_batches():
    costs = [10, 9, 5, 5, 5, 1]
    assert features.plan_batches(costs, 20) == [[0, 1], [2, 3, 4, 5]]
    assert features.plan_batches(costs, 1) == [[i] for i in range(6)]  # always ≥ 1 item
    assert features.plan_batches(costs, 100, equal_key=costs) == [[0], [1], [2, 3, 4], [5]]


def test_gpu_slots_are_distinct_and_released(tmp_path):
    import subprocess
    import sys

    code = ("import sys, time; from pathlib import Path; from layerwise.extract import devices; "
            "print(devices.claim_slot(2, directory=Path(sys.argv[1]), wait_s=0), flush=True); "
            "time.sleep(3)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]
    slots = sorted(int(p.stdout.readline()) for p in procs)
    assert slots == [0, 1]
    with pytest.raises(TimeoutError):
        devices.claim_slot(2, directory=tmp_path, wait_s=0)
    for p in procs:
        p.wait()
    assert devices.claim_slot(2, directory=tmp_path, wait_s=0) == 0  # freed when a job ends


def test_oom_splits_after_freeing_the_failed_pass_and_loses_no_utterance(
        wav_table, tmp_path, tiny_model_dir, monkeypatch):
    """Batches > 1 run out of memory: every utterance is still extracted, one at a time, exactly
    as a one-at-a-time run; and the failed pass's tensors are freed before each retry."""
    original = encoders.ConvFrontEncoder.forward
    failed, alive_at_retry = [], []

    def forward(self, waves, framed, pooled):
        alive_at_retry.append(sum(r() is not None for r in failed))
        if len(waves) > 1:
            activations = torch.ones(len(waves), 4096)  # what the failed pass holds on the device
            failed.append(weakref.ref(activations))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original(self, waves, framed, pooled)

    monkeypatch.setattr(encoders.ConvFrontEncoder, "forward", forward)
    fs, summary = _run(wav_table, tmp_path, "oom", tiny_model_dir, batch_seconds=30)
    monkeypatch.undo()
    ref, _ = _run(wav_table, tmp_path, "single", tiny_model_dir, batch_seconds=0.1)
    assert failed, "the control: no batch of more than one utterance was run"
    assert alive_at_retry == [0] * len(alive_at_retry), "a retry ran with the failed pass alive"
    assert summary["rejected"] == 0 and sorted(fs.utt_ids) == sorted(wav_table["utt_id"])
    for u in wav_table["utt_id"]:
        for layer in fs.layers:
            np.testing.assert_array_equal(fs.frames(layer, u), ref.frames(layer, u))


@pytest.fixture
def tf32_allowed():
    """torch's defaults on a GPU (cuDNN convolutions in TF32), and matmuls in TF32 too; restored
    afterwards. (These backends are not plain objects: monkeypatch cannot undo them.)"""
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    saved = conv.fp32_precision, matmul.fp32_precision
    conv.fp32_precision = matmul.fp32_precision = "tf32"
    yield
    conv.fp32_precision, matmul.fp32_precision = saved


def test_float32_is_ieee_and_the_hardware_is_recorded(wav_table, tmp_path, tiny_model_dir,
                                                      tf32_allowed):
    """torch's default lets cuDNN convolve float32 in TF32; extraction turns that off."""
    fs, _ = _run(wav_table.head(2), tmp_path, "ieee", tiny_model_dir)
    assert torch.backends.cudnn.conv.fp32_precision == "ieee"
    assert torch.backends.cuda.matmul.fp32_precision == "ieee"
    assert fs.attrs["float32_precision"] == "matmul=ieee,conv=ieee"
    assert fs.attrs["device_name"]  # the CPU's model name here
    assert fs.attrs["cuda_version"] == (torch.version.cuda or "")
    assert "cudnn_version" in fs.attrs


def test_nonfinite_values_are_counted_and_logged(wav_table, tmp_path, tiny_model_dir, monkeypatch,
                                                 caplog):
    """A layer beyond float16's range becomes inf when stored: counted per layer and warned."""
    original = encoders.ConvFrontEncoder.forward
    calls = []

    def forward(self, waves, framed, pooled):
        out = original(self, waves, framed, pooled)
        out["layer.2"][0][0, :3] = 1e5  # overflows float16 (max 65504)
        calls.append(len(waves))
        return out

    monkeypatch.setattr(encoders.ConvFrontEncoder, "forward", forward)
    with caplog.at_level(logging.WARNING, logger="layerwise.extract.features"):
        fs, summary = _run(wav_table, tmp_path, "inf", tiny_model_dir, batch_seconds=8)
    with h5py.File(tmp_path / "inf.h5") as f:
        counts = {n: int(f[f"layers/{n}"].attrs["nonfinite"]) for n in fs.layers}
    assert counts.pop("layer.2") == summary["nonfinite"] == 3 * len(calls)
    assert set(counts.values()) == {0}  # the control: the other layers are finite
    assert f"layer.2: {3 * len(calls)} non-finite" in caplog.text
