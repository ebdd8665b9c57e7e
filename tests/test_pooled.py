"""The pooled-matrix folder: round trip, and one-line errors for each kind of damage."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from layerwise.io import pooled

REBUILD = "and run snakemake again to rebuild it"


@pytest.fixture
def folder(tmp_path):
    index = pd.DataFrame({"row": [0, 1, 2], "utt_id": ["a", "a", "b"],
                          "start_s": [0.0, 0.25, 0.0], "end_s": [0.25, 0.5, 0.4],
                          "unit": ["yes", "no", ""], "word": ["yes", "no", ""],
                          "speaker": ["1", "1", "2"]})
    rng = np.random.default_rng(0)
    layers = {"cnn.0": rng.standard_normal((3, 4)), "layer.0": rng.standard_normal((3, 2))}
    out = tmp_path / "pooled" / "m" / "word-mean"
    pooled.write(out, index, iter(layers.items()), model="m", span="word", pooling="mean")
    return out, index, layers


def test_round_trip_in_model_order(folder):
    out, index, layers = folder
    got_index, got = pooled.read(out)
    assert list(got) == ["cnn.0", "layer.0"]
    for name, x in layers.items():
        assert got[name].dtype == np.float32
        np.testing.assert_array_equal(got[name], x.astype(np.float32))
    pd.testing.assert_frame_equal(got_index, index)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["encoding-version"] == "1.0.0" and meta["n_rows"] == 3
    assert meta["dims"] == {"cnn.0": 4, "layer.0": 2}


def test_empty_label_stays_a_string(folder):
    got_index, _ = pooled.read(folder[0])
    assert got_index["word"].tolist() == ["yes", "no", ""]


def _error(out) -> str:
    with pytest.raises(pooled.PooledError) as err:
        pooled.read(out)
    msg = str(err.value)
    assert "\n" not in msg and f"delete {out} {REBUILD}" in msg, msg
    return msg


def test_truncated_matrix(folder):
    out = folder[0]
    data = (out / "layer.0.npy").read_bytes()
    (out / "layer.0.npy").write_bytes(data[: len(data) - 9])
    msg = _error(out)
    assert "layer.0.npy: unreadable" in msg


def test_matrix_of_the_wrong_shape(folder):
    out = folder[0]
    np.save(out / "cnn.0.npy", np.zeros((5, 4), dtype=np.float32))
    assert "cnn.0.npy: shape (5, 4), expected (3, 4)" in _error(out)


def test_stale_index(folder):
    out, index, _ = folder
    index.iloc[:2].to_csv(out / "index.tsv", sep="\t", index=False)
    assert "index.tsv: stale or foreign index (2 rows, meta.json says 3)" in _error(out)


def test_interrupted_and_foreign_folders(folder, tmp_path):
    out = folder[0]
    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps({**meta, "encoding-version": "2.0.0"}))
    assert "encoding-version '2.0.0' is not one this layerwise reads" in _error(out)
    (out / "meta.json").unlink()
    assert "meta.json: missing (the pooling job did not finish)" in _error(out)


def test_writer_refuses_a_matrix_that_does_not_fit(tmp_path):
    index = pd.DataFrame({"row": [0, 1], "utt_id": ["a", "b"], "start_s": [0.0, 0.0],
                          "end_s": [1.0, 1.0], "unit": ["", ""]})
    with pytest.raises(ValueError, match="layer x: shape"):
        pooled.write(tmp_path / "p", index, [("x", np.zeros((3, 2)))], model="m",
                      span="utterance", pooling="mean")
    assert not (tmp_path / "p" / "meta.json").exists()


def _resident_kib(path) -> int:
    """KiB of ``path`` resident in this process's mappings of it (``/proc/self/smaps``)."""
    total, current = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and ":" not in fields[0]:  # a mapping's header line
            current = fields[-1] == str(path)
        elif current and fields[0] == "Rss:":
            total += int(fields[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads Linux's /proc")
def test_layers_are_mapped_on_lookup_and_hand_back_their_pages(tmp_path):
    """What bounds an analysis's peak resident memory: a layer's pages are resident only
    while it is held, and release() hands them back without changing what is read."""
    n, d = 4096, 1024  # 16 MiB of float32
    index = pd.DataFrame({"row": range(n), "utt_id": ["a"] * n, "start_s": 0.0, "end_s": 1.0})
    x = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
    out = tmp_path / "pooled" / "m" / "utterance-mean"
    pooled.write(out, index, iter([("layer.0", x)]), model="m", span="utterance",
                 pooling="mean")
    path = (out / "layer.0.npy").resolve()

    _, layers = pooled.read(out)
    assert _resident_kib(path) == 0  # checked, not read, and not mapped any more
    held = layers["layer.0"]
    assert float(held.sum(dtype=np.float64)) == pytest.approx(float(x.sum(dtype=np.float64)))
    assert _resident_kib(path) >= 15 * 1024
    pooled.release(held[10:20])  # any view of the layer names its mapping
    assert _resident_kib(path) < 1024
    np.testing.assert_array_equal(held, x)  # paged in again, the same values
    pooled.release(np.ones(3))  # an array in memory: nothing to do
    del held
    gc.collect()
    assert _resident_kib(path) == 0
