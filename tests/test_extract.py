"""Extraction of a shard: invariance to shards and batch size, rejection, batching plan, GPU slots."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import speechlike

from layerwise import devices, encoders, extract, store

N_UTTS = 7


@pytest.fixture(scope="module")
def wav_table(tmp_path_factory):
    d = tmp_path_factory.mktemp("wav")
    rows = []
    for i in range(N_UTTS):
        n = 4000 + 7919 * i
        p = d / f"u{i}.wav"
        sf.write(p, speechlike(n, seed=i), 16000, subtype="FLOAT")
        rows.append((f"u{i}", str(p), n, n / 16000, i % 3))
    return pd.DataFrame(rows, columns=["utt_id", "path", "n_samples", "duration_s", "group"])


def _run(table, tmp, name, model_dir, **kw):
    tsv = tmp / f"{name}.tsv"
    table.to_csv(tsv, sep="\t", index=False)
    out = tmp / f"{name}.h5"
    summary = extract.extract_shard(tsv, out, tmp / f"{name}.rejected.tsv", model_dir=str(model_dir),
                                    source="test", device="cpu", progress=False, **kw)
    return store.open(out), summary


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
    assert extract.plan_batches(costs, 20) == [[0, 1], [2, 3, 4, 5]]
    assert extract.plan_batches(costs, 1) == [[i] for i in range(6)]  # always ≥ 1 item
    assert extract.plan_batches(costs, 100, equal_key=costs) == [[0], [1], [2, 3, 4], [5]]


def test_gpu_slots_are_distinct_and_released(tmp_path):
    import subprocess
    import sys

    code = ("import sys, time; from pathlib import Path; from layerwise import devices; "
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
