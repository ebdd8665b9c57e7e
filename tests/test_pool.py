"""Pooling rows: the frame span's instants, the frames each layer takes, cross-model pairing and
the log-mel target, checked on synthetic stores whose frames hold their own centre time."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from transformers import Wav2Vec2Config, WhisperConfig, WhisperFeatureExtractor

from layerwise import analyses, pool
from layerwise.analyses import cca_targets
from layerwise.extract import encoders
from layerwise.ingest.alignments import COLUMNS as ALIGNMENT_COLUMNS
from layerwise.io import store
from layerwise.io.tables import read_tsv, write_tsv

SR = 16000
NO_ALIGNMENTS = pd.DataFrame(columns=ALIGNMENT_COLUMNS)
#: An 800 Hz model (the tiny-wav2vec2 preset's convs), wav2vec2-base (50 Hz) and Whisper (50 Hz).
TINY = Wav2Vec2Config(conv_dim=[2] * 3, conv_kernel=[10, 3, 3], conv_stride=[5, 2, 2],
                      hidden_size=2, num_hidden_layers=1)
BASE = Wav2Vec2Config(conv_dim=[2] * 7, hidden_size=2, num_hidden_layers=1)


def _conv_model(cfg):
    def n_frames(name, n):
        blocks = int(name.split(".")[1]) + 1 if name.startswith("cnn") else len(cfg.conv_kernel)
        for k, s in list(zip(cfg.conv_kernel, cfg.conv_stride, strict=True))[:blocks]:
            n = (n - k) // s + 1
        return n

    return encoders.conv_front_layers(cfg, SR), n_frames, cfg.model_type


def _whisper_model():
    infos = encoders.whisper_layers(WhisperConfig(d_model=2, encoder_layers=1),
                                    WhisperFeatureExtractor())

    def n_frames(name, n):  # as encoders.WhisperEncoder cuts them
        mel = math.ceil(n / 160)
        return mel if name == "cnn.0" else math.ceil(mel / 2)

    return infos, n_frames, "whisper"


def _store(path, model, lengths: dict[str, int]):
    """A feature store whose frame n of every layer is (its centre in s, n)."""
    infos, n_frames, model_type = model
    with store.ShardWriter(path, infos, {i.name for i in infos}, dtype="float32",
                           attrs={"model_type": model_type, "sample_rate": SR}) as w:
        for utt, n in lengths.items():
            data = {}
            for i in infos:
                k = np.arange(n_frames(i.name, n))
                data[i.name] = [np.stack([i.first_centre_s + k / i.frame_rate_hz, k], axis=1)]
            w.append([utt], [n], data)
    return store.open(path)


def _manifest(lengths):
    return pd.DataFrame({"utt_id": list(lengths), "duration_s": [n / SR for n in lengths.values()],
                         "speaker": [f"s{i % 2}" for i in range(len(lengths))]})


LENGTHS = {f"u{i}": 9000 + 3371 * i for i in range(6)}


def _through_tsv(index, tmp_path, name):
    """The index as the analyse jobs read it (text columns)."""
    write_tsv(index, tmp_path / f"{name}.tsv")
    return read_tsv(tmp_path / f"{name}.tsv", dtype=str, keep_default_na=False)


def test_cross_model_rows_are_the_same_instants(tmp_path):
    """800 Hz vs 50 Hz, one utterance missing in B: every row of A whose utterance B has is
    paired with B's row at the same instant, each layer's frame is centred within half a hop
    of it, and the missing utterance drops its own rows only."""
    a = _store(tmp_path / "a.h5", _conv_model(TINY), LENGTHS)
    b = _store(tmp_path / "b.h5", _whisper_model(), {u: n for u, n in LENGTHS.items() if u != "u3"})
    manifest = _manifest(LENGTHS)
    ia = pool.build_index(a, manifest, NO_ALIGNMENTS, "frame", labels=["speaker"],
                          max_frames=400, seed=1)
    ib = pool.build_index(b, manifest, NO_ALIGNMENTS, "frame", labels=["speaker"],
                          max_frames=400, seed=1)
    ra, rb = analyses.align_rows(_through_tsv(ia, tmp_path, "a"), _through_tsv(ib, tmp_path, "b"),
                                 span="frame")
    assert (ia["utt_id"] == "u3").sum() > 0 and (ib["utt_id"] == "u3").sum() == 0
    assert ra.tolist() == np.flatnonzero(ia["utt_id"] != "u3").tolist()
    assert sorted(rb.tolist()) == list(range(len(ib)))  # every row of B, once
    np.testing.assert_array_equal(ia["utt_id"].to_numpy()[ra], ib["utt_id"].to_numpy()[rb])
    t = ia["time_s"].to_numpy()[ra]
    np.testing.assert_array_equal(t, ib["time_s"].to_numpy()[rb])
    for fs, index, rows in ((a, ia, ra), (b, ib, rb)):
        for layer in fs.layers:
            x = pool.pool_layer(fs, layer, index, "mean")
            half_hop = 0.5 / fs.layer_info(layer)["frame_rate_hz"]
            assert np.abs(x[rows, 0] - t).max() <= half_hop + 1e-6, layer


def test_instants_depend_on_the_corpus_and_seed_only(tmp_path):
    a = _store(tmp_path / "a.h5", _conv_model(BASE), LENGTHS)
    b = _store(tmp_path / "b.h5", _whisper_model(), LENGTHS)
    manifest = _manifest(LENGTHS)
    ia, ib = (pool.build_index(fs, manifest, NO_ALIGNMENTS, "frame", max_frames=300, seed=4)
              for fs in (a, b))
    pd.testing.assert_frame_equal(ia[["utt_id", "time_s"]], ib[["utt_id", "time_s"]])
    assert len(ia) == 300 and not ia.duplicated(["utt_id", "time_s"]).any()
    steps = ia["time_s"] / pool.GRID_S
    np.testing.assert_allclose(steps, steps.round(), atol=1e-6)
    end = ia["utt_id"].map(manifest.set_index("utt_id")["duration_s"])
    assert (ia["time_s"] >= pool.EDGE_S - 1e-9).all() and (ia["time_s"] <= end - pool.EDGE_S).all()
    # the row's window is the receptive field of the model's frame at the instant
    np.testing.assert_allclose(ia["end_s"] - ia["start_s"], 0.025)
    np.testing.assert_allclose(ib["end_s"] - ib["start_s"], 0.065)
    other = pool.build_index(a, manifest, NO_ALIGNMENTS, "frame", max_frames=300, seed=5)
    assert not other[["utt_id", "time_s"]].equals(ia[["utt_id", "time_s"]])


def test_word_rows_missing_in_one_model_are_dropped_alone(tmp_path):
    aligned = pd.DataFrame([(u, "word", 0.1 * j, 0.1 * j + 0.08, f"w{j}")
                            for u in LENGTHS for j in range(4)], columns=ALIGNMENT_COLUMNS)
    a = _store(tmp_path / "a.h5", _conv_model(BASE), LENGTHS)
    b = _store(tmp_path / "b.h5", _whisper_model(), {u: n for u, n in LENGTHS.items() if u != "u0"})
    ia, ib = (pool.build_index(fs, _manifest(LENGTHS), aligned, "word", max_frames=10)
              for fs in (a, b))
    ra, rb = analyses.align_rows(ia, ib, span="word")
    assert ra.tolist() == np.flatnonzero(ia["utt_id"] != "u0").tolist()
    assert rb.tolist() == list(range(len(ib)))


@pytest.mark.parametrize(("model", "segments_ms", "frames"), [
    # Whisper frame i is centred at 20i ms: [20i - 8, 20i + 8) holds centre i only
    (_whisper_model(), [(12, 28), (32, 48), (52, 68)], [1, 2, 3]),
    # wav2vec2 frame k is centred at 20k + 12.5 ms; a segment with no centre takes the nearest
    (_conv_model(BASE), [(25, 35), (51, 71), (60.5, 62), (80, 120)], [1, 2, 2, [4, 5]]),
])
def test_span_pools_the_frames_centred_inside(tmp_path, model, segments_ms, frames):
    fs = _store(tmp_path / "s.h5", model, {"u": 16000})
    index = pd.DataFrame({"row": range(len(segments_ms)), "utt_id": "u",
                          "start_s": [s / 1000 for s, _ in segments_ms],
                          "end_s": [e / 1000 for _, e in segments_ms], "unit": "w"})
    first = pool.pool_layer(fs, "layer.1", index, "first")[:, 1]
    last = pool.pool_layer(fs, "layer.1", index, "last")[:, 1]
    got = [list(range(int(f), int(la) + 1)) for f, la in zip(first, last, strict=True)]
    want = [f if isinstance(f, list) else [f] for f in frames]
    assert got == want


@pytest.mark.parametrize(("model", "click"), [
    (_conv_model(BASE), 320 * 10 + 300),  # only frame 10's field [3200, 3600) holds it
    (_whisper_model(), 16 * (20 * 9 + 6)),  # 6 ms after frame 9's centre
])
def test_mel_target_of_a_click_peaks_in_the_frame_that_holds_it(tmp_path, model, click):
    n = 8000
    wave = 1e-4 * np.random.default_rng(0).standard_normal(n)
    wave[click] = 0.9
    sf.write(tmp_path / "u.wav", wave, SR, subtype="FLOAT")
    fs = _store(tmp_path / "s.h5", model, {"u": n})
    index = pool.build_index(fs, _manifest({"u": n}), NO_ALIGNMENTS, "frame", max_frames=10**6)
    mel = cca_targets.mel_matrix(index, {"u": str(tmp_path / "u.wav")})
    frame = pool.pool_layer(fs, "layer.1", index, "mean")[:, 1].astype(int)
    loudest = frame[np.argmax(mel.mean(axis=1))]
    grid = fs.grid("layer.1")
    start, end = grid.field(np.array([loudest]))
    assert start[0] * SR <= click < end[0] * SR
    assert loudest == grid.nearest(click / SR, 10**6)
    # every row of that frame has the same target; other frames' targets are quieter
    peak = mel[frame == loudest]
    np.testing.assert_allclose(peak, peak[0:1].repeat(len(peak), 0), rtol=1e-6)
    assert mel[frame != loudest].mean(axis=1).max() < peak.mean() - 0.1
