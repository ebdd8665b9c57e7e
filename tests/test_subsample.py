"""The shared row subsample: seeded by the index alone, capped, stratified, and lazy to apply."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from layerwise import analyses
from layerwise.analyses import subsample


def word_index(n_utts=300, seed=0) -> pd.DataFrame:
    """Utterances of 5-25 words, Zipf-distributed words, one of 12 speakers each."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(5, 26, n_utts)
    utt = np.repeat(np.arange(n_utts), sizes)
    start = np.concatenate([0.3 * np.arange(s) for s in sizes])
    p = 1 / np.arange(1, 201)
    word = rng.choice(200, len(utt), p=p / p.sum())
    return pd.DataFrame({"row": np.arange(len(utt)), "utt_id": [f"u{u:04d}" for u in utt],
                         "start_s": np.round(start, 3), "end_s": np.round(start + 0.25, 3),
                         "word": [f"w{w}" for w in word],
                         "speaker": [f"s{u % 12}" for u in utt]})


def within_quota(index, picked, column, max_rows) -> bool:
    """Every value of ``column`` holds floor or ceil of its proportional share of the sample."""
    share = max_rows / len(index)
    full = index[column].value_counts()
    got = index[column].iloc[picked].value_counts().reindex(full.index, fill_value=0)
    return bool(((got >= np.floor(share * full)) & (got <= np.ceil(share * full))).all())


def test_respects_max_rows_and_is_sorted_unique():
    index = word_index()
    picked = subsample.rows(index, 500, seed=0)
    assert len(picked) == 500 == len(np.unique(picked))
    assert (np.diff(picked) > 0).all() and picked.min() >= 0 and picked.max() < len(index)
    np.testing.assert_array_equal(subsample.rows(index, len(index), seed=0), np.arange(len(index)))
    with pytest.raises(ValueError, match="max_rows"):
        subsample.rows(index, 0)


def test_same_units_for_every_model_and_any_row_order():
    index = word_index()
    picked = subsample.rows(index, 700, seed=3, stratify=("utt_id", "word"))
    # another model's index of the same units: read back from a TSV (times as text)
    other = index.astype(str).assign(start_s=index["start_s"].map("{:.3f}".format))
    np.testing.assert_array_equal(subsample.rows(other, 700, seed=3, stratify=("utt_id", "word")),
                                  picked)
    shuffled = index.sample(frac=1.0, random_state=1).reset_index(drop=True)
    again = subsample.rows(shuffled, 700, seed=3, stratify=("utt_id", "word"))
    assert sorted(shuffled["row"].iloc[again]) == sorted(index["row"].iloc[picked])
    assert not np.array_equal(subsample.rows(index, 700, seed=4), subsample.rows(index, 700))


def test_one_stratum_gets_floor_or_ceil_of_its_share_unlike_a_plain_sample():
    index = word_index()
    for max_rows in (300, 1000, 2500):
        for column in ("utt_id", "speaker", "word"):
            picked = subsample.rows(index, max_rows, seed=1, stratify=(column,))
            assert within_quota(index, picked, column, max_rows), (column, max_rows)
    # control: a uniform sample of the same size misses the utterance quotas
    plain = np.sort(np.random.default_rng(1).choice(len(index), 1000, replace=False))
    assert not within_quota(index, plain, "utt_id", 1000)


def test_utterance_and_label_quotas_hold_together_where_the_rows_allow():
    # crossed design: 40 utterances x 5 labels, 4 rows per cell; a 25 % sample can give
    # every utterance 5 rows and every label 40
    utt = np.repeat([f"u{i:02d}" for i in range(40)], 20)
    label = np.tile(np.repeat(list("abcde"), 4), 40)
    index = pd.DataFrame({"utt_id": utt, "start_s": np.tile(np.arange(20) * 0.5, 40),
                          "label": label})
    picked = subsample.rows(index, 200, seed=0, stratify=("utt_id", "label"))
    assert len(picked) == 200
    assert within_quota(index, picked, "utt_id", 200)
    assert within_quota(index, picked, "label", 200)
    # on Zipf words every class stays within its ceiling; a few fall below their floor
    words = word_index()
    picked = subsample.rows(words, 800, seed=0, stratify=("utt_id", "word"))
    for column in ("utt_id", "word"):
        share = 800 / len(words)
        full = words[column].value_counts()
        got = words[column].iloc[picked].value_counts().reindex(full.index, fill_value=0)
        assert (got <= np.ceil(share * full)).all()
        assert (got >= np.floor(share * full)).mean() > 0.9


def test_missing_values_are_one_stratum_and_unknown_columns_raise():
    index = word_index().assign(word=lambda d: d["word"].where(d.index % 3 > 0))
    picked = subsample.rows(index, 600, seed=0, stratify=("word",))
    share = 600 / len(index)
    n_missing = index["word"].isna().sum()
    assert np.floor(share * n_missing) <= index["word"].iloc[picked].isna().sum()
    with pytest.raises(ValueError, match="not columns"):
        subsample.rows(index, 10, stratify=("accent",))


def test_cross_model_pair_gets_the_same_units():
    """The documented recipe: align both indexes, then sample the aligned rows."""
    index_a = word_index()
    index_b = index_a[index_a["utt_id"] != "u0007"].iloc[::-1].reset_index(drop=True)
    ra, rb = analyses.align_rows(index_a, index_b, span="word")
    keep = subsample.rows(index_a.iloc[ra], 400, seed=0, stratify=("utt_id", "word"))
    units = ["utt_id", "start_s", "end_s"]
    pd.testing.assert_frame_equal(index_a[units].iloc[ra[keep]].reset_index(drop=True),
                                  index_b[units].iloc[rb[keep]].reset_index(drop=True))


def test_take_is_lazy_composes_and_checks_shapes():
    class Counting(dict):
        reads: list = []

        def __getitem__(self, key):
            self.reads.append(key)
            return dict.__getitem__(self, key)

    layers = Counting({f"layer.{i}": np.arange(20.0).reshape(10, 2) + i for i in range(3)})
    taken = subsample.take(layers, np.arange(2, 10))
    assert layers.reads == [] and subsample.shared_rows(taken) == 8
    inner = subsample.take(taken, np.array([0, 5]))
    np.testing.assert_array_equal(inner["layer.1"], layers["layer.1"][[2, 7]])
    assert layers.reads == ["layer.1", "layer.1"]  # only the layer asked for
    assert subsample.take(layers, np.arange(10)) is layers
    with pytest.raises(ValueError, match="same rows"):
        subsample.shared_rows({"a": np.zeros((3, 2)), "b": np.zeros((4, 2))})
    with pytest.raises(ValueError, match="2-D"):
        subsample.shared_rows({"a": np.zeros(3)})
