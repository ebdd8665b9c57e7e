"""The HDF5 feature store: layout, round trip, chunked reading, atomic writes."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from layerwise.extract.encoders import LayerInfo
from layerwise.io import store

LAYERS = [LayerInfo("cnn.0", "cnn", 3200.0, 4), LayerInfo("layer.0", "transformer", 50.0, 3),
          LayerInfo("layer.1", "transformer", 50.0, 3)]


def _write(path, n_utts=5, rng=None):
    rng = rng or np.random.default_rng(0)
    truth = {}
    with store.ShardWriter(path, LAYERS, {"layer.0", "layer.1"}, dtype="float32",
                           attrs={"model_source": "x", "model_revision": None}) as w:
        for start in range(0, n_utts, 2):
            ids = [f"u{i}" for i in range(start, min(start + 2, n_utts))]
            data = {"cnn.0": [rng.standard_normal(4) for _ in ids]}
            for name in ("layer.0", "layer.1"):
                data[name] = [rng.standard_normal((3 + int(i[1:]), 3)) for i in ids]
            for k, u in enumerate(ids):
                truth[u] = {n: data[n][k] for n in data}
            w.append(ids, [1000 * (k + 1) for k in range(len(ids))], data)
    return truth


def test_round_trip_and_layout(tmp_path):
    path = tmp_path / "shard-000.h5"
    truth = _write(path)
    with h5py.File(path) as f:
        assert f.attrs["encoding-type"] == "layerwise-features"
        assert f.attrs["encoding-version"] == "1.1.0" and f.attrs["store"] == "frames"
        assert f["layers/layer.1/offsets"][:].tolist() == [0, 3, 7, 12, 18, 25]
        assert f["layers/cnn.0/frames"].shape == (5, 4)
        assert f["layers/cnn.0"].attrs["storage"] == "mean"
        assert f["layers/layer.0"].attrs["frame_rate_hz"] == 50.0
    fs = store.open(path)
    assert fs.layers == ["cnn.0", "layer.0", "layer.1"]
    assert fs.utt_ids == [f"u{i}" for i in range(5)]
    for u, layers in truth.items():
        for name, arr in layers.items():
            np.testing.assert_allclose(fs.frames(name, u), np.reshape(arr, (-1, arr.shape[-1])),
                                       rtol=1e-6)


def test_iter_chunks_bounded_and_complete(tmp_path):
    truth = _write(tmp_path / "shard-000.h5", n_utts=9)
    _write(tmp_path / "shard-001.h5", n_utts=0)
    fs = store.open(tmp_path)
    seen = {}
    for ids, rows, offsets in fs.iter_chunks("layer.1", max_rows=20):
        assert rows.shape[0] <= 20 or len(ids) == 1
        for j, u in enumerate(ids):
            seen[u] = rows[offsets[j] : offsets[j + 1]]
    assert set(seen) == set(truth)
    for u in truth:
        np.testing.assert_allclose(seen[u], truth[u]["layer.1"], rtol=1e-6)


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "shard-000.h5"
    with pytest.raises(RuntimeError):
        with store.ShardWriter(path, LAYERS, set()) as w:
            w.append(["a"], [10], {n.name: [np.zeros(n.dim)] for n in LAYERS})
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_errors_name_the_key(tmp_path):
    _write(tmp_path / "shard-000.h5")
    fs = store.open(tmp_path / "shard-000.h5")
    with pytest.raises(store.StoreError, match="layers/layer.9"):
        fs.frames("layer.9", "u0")
    (tmp_path / "other.h5").write_bytes(b"nope")
    with pytest.raises(store.StoreError, match="other.h5"):
        store.open(tmp_path / "other.h5")


REBUILD = "delete it and run snakemake again to rebuild it"


def test_truncated_shard_names_file_and_fix(tmp_path):
    path = tmp_path / "shard-000.h5"
    _write(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a job killed mid-copy, a full disk
    with pytest.raises(store.StoreError) as err:
        store.open(tmp_path)
    msg = str(err.value)
    assert str(path) in msg and "not a readable HDF5 file" in msg and REBUILD in msg
    assert "\n" not in msg


def test_version_1_0_files_are_read_as_frames(tmp_path):
    """Files written before extract.store (1.0.0, no ``store`` attribute) hold frames."""
    path = tmp_path / "shard-000.h5"
    truth = _write(path)
    with h5py.File(path, "a") as f:
        f.attrs["encoding-version"] = "1.0.0"
        del f.attrs["store"], f.attrs["pooled"]
    fs = store.open(path)
    assert fs.mode == "frames"
    np.testing.assert_allclose(fs.frames("layer.1", "u2"), truth["u2"]["layer.1"], rtol=1e-6)


def test_foreign_hdf5_and_unknown_version_are_refused(tmp_path):
    foreign = tmp_path / "foreign" / "shard-000.h5"
    foreign.parent.mkdir()
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(store.StoreError, match=f"encoding-type None is not .* — {REBUILD}"):
        store.open(foreign.parent)
    newer = tmp_path / "shard-000.h5"
    _write(newer)
    with h5py.File(newer, "a") as f:
        f.attrs["encoding-version"] = "9.0.0"
    with pytest.raises(store.StoreError, match="encoding-version '9.0.0' is not one this"):
        store.open(newer)


def test_shard_of_another_run_is_refused(tmp_path):
    _write(tmp_path / "shard-000.h5")
    _write(tmp_path / "shard-001.h5")
    with h5py.File(tmp_path / "shard-001.h5", "a") as f:
        f.attrs["config_hash"] = "other"
    with pytest.raises(store.StoreError, match="shard-001.h5: its layers or extraction"):
        store.open(tmp_path)


@pytest.mark.parametrize("dtype, expected", [("float16", 2), ("float32", 1)])
def test_nonfinite_values_are_counted_per_layer_as_stored(tmp_path, dtype, expected):
    """float16 turns 1e5 into inf; NaN stays NaN in both dtypes."""
    data = {"cnn.0": [np.zeros(4)], "layer.0": [np.array([[1e5, 0, 0], [np.nan, 0, 0]])],
            "layer.1": [np.ones((2, 3))]}
    with store.ShardWriter(tmp_path / "s.h5", LAYERS, {"layer.0", "layer.1"}, dtype=dtype) as w:
        w.append(["u0"], [100], data)
        w.append(["u1"], [100], data)
    with h5py.File(tmp_path / "s.h5") as f:
        counts = {n: int(f[f"layers/{n}"].attrs["nonfinite"]) for n in f["layers"]}
    assert counts == {"cnn.0": 0, "layer.0": 2 * expected, "layer.1": 0}
