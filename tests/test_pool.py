"""Pooling rows: the frame span's instants, the frames each layer takes, cross-model pairing and
the log-mel target, checked on synthetic stores whose frames hold their own centre time."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import speechlike
from transformers import Wav2Vec2Config, WhisperConfig, WhisperFeatureExtractor

from layerwise import analyses, pool
from layerwise.extract import encoders
from layerwise.ingest.alignments import COLUMNS as ALIGNMENT_COLUMNS
from layerwise.io import store
from layerwise.io.tables import read_tsv, write_tsv
from layerwise.pool import mel as log_mel

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
    mel = log_mel.mel_matrix(index, {"u": str(tmp_path / "u.wav")})
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


def test_log_mel_windows_see_only_their_own_samples():
    wave = speechlike(16000, 0)
    wave[8000:8400] += np.sin(2 * np.pi * 3000 * np.arange(400) / 16000)  # a 3 kHz tone
    starts = np.array([-200, 7600, 8000, 15800])
    mel = log_mel.log_mel_windows(wave, starts, starts + 400)
    assert mel.shape == (4, 80) and np.isfinite(mel).all()
    from transformers.audio_utils import hertz_to_mel, mel_to_hertz

    edges = np.linspace(hertz_to_mel(0.0, "slaney"), hertz_to_mel(8000.0, "slaney"), 82)
    centre_hz = mel_to_hertz(edges[1 + np.argmax(mel[2] - mel[1])], "slaney")  # window 2 only
    assert 2800 < centre_hz < 3200


# --- build_index per span, and pool_layer / pool_frames against numpy written here ----------

RANDOM_LENGTHS = {"u0": 16000, "u1": 12000, "u2": 20000}


def _random_store(path, *, mean_layers=("cnn.0",)):
    """wav2vec2-base's grids (50 Hz transformer) with random frames; ``mean_layers`` stored as
    one mean row per utterance. Returns the store and ``{layer: {utt: frames}}``."""
    infos = encoders.conv_front_layers(BASE, SR)
    rng = np.random.default_rng(7)
    kept = {}
    with store.ShardWriter(path, infos, {i.name for i in infos} - set(mean_layers),
                           dtype="float32", attrs={"model_type": "wav2vec2",
                                                   "sample_rate": SR}) as w:
        for utt, n in RANDOM_LENGTHS.items():
            _, n_frames, _ = _conv_model(BASE)
            data = {}
            for i in infos:
                x = rng.standard_normal((n_frames(i.name, n), i.dim)).astype(np.float32)
                kept.setdefault(i.name, {})[utt] = x
                data[i.name] = [x.mean(axis=0) if i.name in mean_layers else x]
            w.append([utt], [n], data)
    return store.open(path), kept


def _expected_pooling(x, pooling):
    """Each pooling of a (T, D) block, spelled out."""
    t = len(x)
    return {
        "mean": lambda: x.mean(0),
        "meanstd": lambda: np.r_[x.mean(0), np.sqrt(((x - x.mean(0)) ** 2).mean(0))],
        "max": lambda: x.max(0),
        "center": lambda: x[t // 2],
        "first": lambda: x[0],
        "last": lambda: x[t - 1],
        "middle": lambda: x[t // 3 : t - t // 3].mean(0) if t >= 3 else x.mean(0),
    }[pooling]()


WORDS = pd.DataFrame(
    [("u1", "word", 0.30, 0.52, "b"), ("u1", "word", 0.05, 0.21, "a"),  # out of order
     ("u0", "word", 0.10, 0.50, "c"), ("u0", "word", 0.600, 0.603, "d"),  # no frame centred inside
     ("u0", "phone", 0.10, 0.20, "k"), ("gone", "word", 0.0, 0.3, "x")],
    columns=ALIGNMENT_COLUMNS)


def test_build_index_for_utterances_words_and_phones(tmp_path):
    fs, _ = _random_store(tmp_path / "s.h5")
    manifest = _manifest(RANDOM_LENGTHS)
    utt = pool.build_index(fs, manifest, WORDS, "utterance", labels=["speaker", "absent"],
                           max_frames=300)
    assert list(utt.columns) == [*pool.INDEX_COLUMNS, "speaker"]
    assert utt["utt_id"].tolist() == fs.utt_ids and utt["row"].tolist() == [0, 1, 2]
    assert (utt["start_s"] == 0).all() and (utt["unit"] == "").all()
    np.testing.assert_allclose(utt["end_s"], [RANDOM_LENGTHS[u] / SR for u in fs.utt_ids])
    speaker = manifest.set_index("utt_id")["speaker"]
    assert utt["speaker"].tolist() == [speaker[u] for u in fs.utt_ids]
    word = pool.build_index(fs, manifest, WORDS, "word", labels=["speaker"], max_frames=300)
    order = {u: i for i, u in enumerate(fs.utt_ids)}  # the store's order, then time
    want = WORDS[(WORDS.tier == "word") & WORDS.utt_id.isin(order)]
    want = want.assign(o=want.utt_id.map(order)).sort_values(["o", "start_s"])
    assert word["unit"].tolist() == want["label"].tolist() == word["word"].tolist()
    assert word["start_s"].tolist() == want["start_s"].tolist()
    assert word["row"].tolist() == list(range(len(want)))
    assert word["speaker"].tolist() == [speaker[u] for u in word["utt_id"]]
    phone = pool.build_index(fs, manifest, WORDS, "phone", max_frames=300)
    assert phone[["utt_id", "unit", "phone"]].values.tolist() == [["u0", "k", "k"]]


def test_build_index_refuses_unknown_spans_and_missing_alignments(tmp_path):
    fs, _ = _random_store(tmp_path / "s.h5")
    with pytest.raises(ValueError, match="span must be one of"):
        pool.build_index(fs, _manifest(RANDOM_LENGTHS), WORDS, "syllable", max_frames=300)
    with pytest.raises(ValueError, match="needs phone alignments"):
        pool.build_index(fs, _manifest(RANDOM_LENGTHS), WORDS[WORDS.tier == "word"], "phone",
                         max_frames=300)


@pytest.mark.parametrize("pooling", pool.POOLINGS)
def test_pool_layer_pools_the_frames_centred_in_each_word(tmp_path, pooling):
    fs, frames = _random_store(tmp_path / "s.h5")
    index = pool.build_index(fs, _manifest(RANDOM_LENGTHS), WORDS, "word", max_frames=300)
    for layer in ("cnn.3", "layer.0"):
        info = fs.layer_info(layer)
        got = pool.pool_layer(fs, layer, index, pooling)
        assert got.dtype == np.float32
        assert got.shape == (len(index), info["dim"] * (2 if pooling == "meanstd" else 1))
        for r, row in index.iterrows():
            x = frames[layer][row.utt_id]
            centre = info["first_centre_s"] + np.arange(len(x)) / info["frame_rate_hz"]
            inside = (centre >= row.start_s) & (centre < row.end_s)
            if not inside.any():  # shorter than a frame: the frame nearest its midpoint
                inside = np.arange(len(x)) == np.argmin(np.abs(centre - (row.start_s + row.end_s) / 2))
                assert row.unit == "d"
            np.testing.assert_allclose(got[r], _expected_pooling(x[inside], pooling),
                                       rtol=1e-5, atol=1e-6, err_msg=f"{layer} row {r}")


@pytest.mark.parametrize("pooling", pool.POOLINGS)
@pytest.mark.parametrize("t", [1, 2, 3, 4, 7])
def test_pool_frames_of_every_length(pooling, t):
    x = np.random.default_rng(t).standard_normal((t, 3))
    np.testing.assert_allclose(pool.pool_frames(x, pooling), _expected_pooling(x, pooling))


def test_layers_stored_as_means_pool_only_to_utterance_means(tmp_path):
    fs, frames = _random_store(tmp_path / "s.h5")
    manifest = _manifest(RANDOM_LENGTHS)
    utt = pool.build_index(fs, manifest, WORDS, "utterance", max_frames=300)
    assert "cnn.0" in pool.poolable_layers(fs, "utterance", "mean")
    assert "cnn.0" not in pool.poolable_layers(fs, "utterance", "max")
    np.testing.assert_allclose(pool.pool_layer(fs, "cnn.0", utt, "mean"),
                               [frames["cnn.0"][u].mean(0) for u in utt["utt_id"]], rtol=1e-5)
    np.testing.assert_allclose(pool.pool_layer(fs, "layer.0", utt, "mean"),
                               [frames["layer.0"][u].mean(0) for u in utt["utt_id"]], rtol=1e-5)
    for span, pooling in (("utterance", "max"), ("word", "mean")):
        index = pool.build_index(fs, manifest, WORDS, span, max_frames=300)
        with pytest.raises(ValueError, match="cnn.0 is stored only as an utterance mean"):
            pool.pool_layer(fs, "cnn.0", index, pooling)
    with pytest.raises(ValueError, match="pooling must be one of"):
        pool.pool_layer(fs, "layer.0", utt, "median")
