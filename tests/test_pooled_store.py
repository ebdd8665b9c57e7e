"""``extract.store: pooled``: pooling inside the extraction job gives the pooled folders of the
frames mode, bit for bit, from shard files that hold no frames."""

from __future__ import annotations

import filecmp

import h5py
import numpy as np
import pandas as pd
import pytest
from conftest import run_extract

from layerwise import pool
from layerwise.errors import InputError
from layerwise.io import pooled, store
from layerwise.pool.in_extraction import ShardPooler

SPAN_POOLINGS = ["utterance-mean", "utterance-meanstd", "utterance-max", "word-mean",
                 "word-middle", "word-center", "phone-first", "phone-last", "frame-mean"]


def _alignments(table: pd.DataFrame) -> pd.DataFrame:
    """Words every 0.25 s and phones every 0.07 s of each utterance but the last, plus one phone
    shorter than a frame (it takes the frame nearest its midpoint)."""
    rows = []
    for u, dur in zip(table["utt_id"].iloc[:-1], table["duration_s"].iloc[:-1], strict=True):
        for tier, step in (("word", 0.25), ("phone", 0.07)):
            for k, start in enumerate(np.arange(0.0, dur - step, step)):
                rows.append((u, tier, round(start, 3), round(start + step, 3), f"{tier[0]}{k % 4}"))
        rows.append((u, "phone", 0.1003, 0.1006, "tiny"))
    return pd.DataFrame(rows, columns=["utt_id", "tier", "start_s", "end_s", "label"])


@pytest.fixture(scope="module")
def both_modes(wav_table, tmp_path_factory, tiny_model_dir):
    """Two shards (hash groups {0, 1} and {2}), extracted in both modes with small batches."""
    tmp = tmp_path_factory.mktemp("modes")
    manifest = wav_table.assign(speaker=[f"s{i % 2}" for i in range(len(wav_table))])
    aligned = _alignments(wav_table)
    pooler = ShardPooler(SPAN_POOLINGS, manifest, aligned, max_frames=60, seed=3)
    shards = [wav_table[wav_table["group"] != 2], wav_table[wav_table["group"] == 2]]
    out = {}
    for mode in ("frames", "pooled"):
        paths = [run_extract(t, tmp, f"{mode}-{i}", tiny_model_dir, batch_seconds=1.5,
                             pooler=pooler if mode == "pooled" else None)[0].paths[0]
                 for i, t in enumerate(shards)]
        out[mode] = store.open(paths)
    return out, manifest, aligned, tmp


def test_pooled_folders_are_equal_in_both_modes(both_modes):
    """Both modes pool the frames rounded to float16, with the same code: every file of every
    pooled folder (index, matrices, meta) is byte for byte the same."""
    stores, manifest, aligned, tmp = both_modes
    assert stores["frames"].mode == "frames" and stores["pooled"].mode == "pooled"
    for sp in SPAN_POOLINGS:
        span, pooling = sp.split("-")
        folders = {}
        for mode, fs in stores.items():
            index, names, layers = pool.pool_store(fs, manifest, aligned, span, pooling,
                                                   labels=["speaker"], max_frames=60, seed=3)
            folders[mode] = tmp / mode / sp
            meta = pooled.write(folders[mode], index, layers, model="m", span=span,
                                pooling=pooling)
            assert meta["n_rows"] > 0 and meta["layers"] == names
        files = sorted(p.name for p in folders["frames"].iterdir())
        assert files == sorted(p.name for p in folders["pooled"].iterdir())
        match, mismatch, errors = filecmp.cmpfiles(folders["frames"], folders["pooled"], files,
                                                   shallow=False)
        assert (mismatch, errors) == ([], []), sp


def test_frame_rows_follow_the_manifest_across_shards(both_modes):
    """Frame rows of shard 2 (group 2) interleave with shard 1's in manifest order."""
    stores, manifest, aligned, _ = both_modes
    index, _, _ = pool.pool_store(stores["pooled"], manifest, aligned, "frame", "mean",
                                  max_frames=60, seed=3)
    raw = stores["pooled"].pooled_index("frame", "mean")
    assert sorted(raw["utt_id"]) == sorted(index["utt_id"])
    assert list(raw["utt_id"]) != list(index["utt_id"])  # the shards' order was not the manifest's
    expected = pool.sample_instants(manifest, max_frames=60, seed=3)
    pd.testing.assert_frame_equal(index[["utt_id", "time_s"]], expected)


def test_pooled_shard_holds_no_frames_and_is_smaller(both_modes):
    stores, *_ = both_modes
    for f_path, p_path in zip(stores["frames"].paths, stores["pooled"].paths, strict=True):
        with h5py.File(p_path, "r") as f:
            assert f.attrs["store"] == "pooled"
            found = []
            f.visit(found.append)
            assert not [n for n in found if n.startswith("layers/") and n.count("/") > 1]
            assert {f"pooled/{s.split('-')[0]}" for s in SPAN_POOLINGS} <= set(found)
        assert p_path.stat().st_size < f_path.stat().st_size


def test_frames_read_from_a_pooled_store_stop_with_one_line_naming_the_file(both_modes):
    stores, *_ = both_modes
    fs = stores["pooled"]
    for read in (lambda: fs.frames("layer.1", "u0"), lambda: fs.n_frames("layer.1"),
                 lambda: next(fs.iter_utterances("layer.1"))):
        with pytest.raises(InputError) as err:
            read()
        msg = str(err.value)
        assert "\n" not in msg and str(fs.paths[0]) in msg and "extract.store: frames" in msg
    with pytest.raises(InputError, match="no rows pooled for word-max"):
        fs.pooled_index("word", "max")
    with pytest.raises(InputError, match="holds frames"):
        stores["frames"].pooled_index("word", "mean")


def test_a_pooled_span_needs_its_alignment_tier(wav_table):
    no_phones = _alignments(wav_table).query("tier == 'word'")
    with pytest.raises(ValueError, match="span 'phone' needs phone alignments"):
        ShardPooler(["phone-mean"], wav_table, no_phones, max_frames=10)


def test_stores_of_both_modes_do_not_mix(both_modes):
    stores, *_ = both_modes
    with pytest.raises(InputError, match="extraction settings differ"):
        store.open([stores["frames"].paths[0], stores["pooled"].paths[1]])


def test_batches_without_rows_of_a_span(both_modes, wav_table, tmp_path, tiny_model_dir):
    """3 instants for 7 utterances: most batches have no frame row (and u6 has no word); the
    one-shard pooled store still gives the two-shard frames store's folder."""
    stores, manifest, aligned, _ = both_modes
    pooler = ShardPooler(["frame-mean", "word-max"], manifest, aligned, max_frames=3, seed=1)
    fs, _ = run_extract(wav_table, tmp_path, "sparse", tiny_model_dir, batch_seconds=1.5,
                        pooler=pooler)
    for span, pooling in (("frame", "mean"), ("word", "max")):
        got, names, layers = pool.pool_store(fs, manifest, aligned, span, pooling,
                                             max_frames=3, seed=1)
        want, want_names, want_layers = pool.pool_store(stores["frames"], manifest, aligned,
                                                        span, pooling, max_frames=3, seed=1)
        pd.testing.assert_frame_equal(got, want)
        assert names == want_names and (span != "frame" or len(got) == 3)
        for (a, x), (b, y) in zip(layers, want_layers, strict=True):
            assert a == b
            np.testing.assert_array_equal(x, y)
