"""One stated subsample of a pool's rows, the same for every layer, analysis and model.

Why: the methods whose cost grows with the square of the rows (the convexity graph, t-SNE and
UMAP, RBF CKA, mutual k-NN) cannot run on the 54,000 word rows of a real corpus. They run on at
most ``max_rows`` rows, and their values compare across layers and models only when every layer
and model is measured on the same rows. :func:`rows` chooses them from the pool index alone:

1. At most ``max_rows`` rows: every row.
2. Each row gets a key, a seeded hash of its unit (``utt_id``, ``start_s``, ``end_s``, and
   which occurrence of that unit it is), and rows are visited in key order. The choice thus
   depends on the index content and the seed, never on the model, the layer or row order.
3. Stratification: with ``f = max_rows / n``, a value of a ``stratify`` column held by ``c``
   rows has the quota ``f * c``. A first pass takes a row while each of its values is below
   ``floor(quota)``, a second while below ``ceil(quota)``, a third fills up to ``max_rows``.
   With one stratify column every value gets ``floor`` or ``ceil`` of its quota; with several
   (utterance and label), the quotas hold wherever the rows allow it.

Cross-model pairs (similarity): align the two indexes first, then sample the aligned rows, so
that both models get the same units::

    ra, rb = analyses.align_rows(index_a, index_b, span="word")
    keep = subsample.rows(index_a.iloc[ra], max_rows, seed)
    X, Y = take(layers_a, ra[keep]), take(layers_b, rb[keep])

:func:`take` selects rows of every layer lazily (one layer copied at a time, only the rows
asked for), so a memory-mapped pooled folder is never read whole.

:func:`kept_classes` is the other row choice of the analyses at corpus size: a word or phone
label has thousands of classes, most with a handful of rows, and convexity and the probes keep
the rows of its ``max_classes`` most frequent classes with at least ``min_count`` rows each.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from layerwise.analyses.validation import check_int, check_layer_shapes

__all__ = ["IDENTITY", "Taken", "kept_classes", "only", "rows", "shared_rows", "take"]

#: Index columns that identify a unit (those present are hashed).
IDENTITY = ("utt_id", "start_s", "end_s")


def rows(index: pd.DataFrame, max_rows: int, seed: int = 0, *,
         stratify: Sequence[str] = ("utt_id",)) -> np.ndarray:
    """Sorted row numbers of a seeded, stratified subsample of at most ``max_rows`` rows.

    Parameters
    ----------
    index : pandas.DataFrame
        The pool index (or any frame of its rows); see the module docstring for the columns
        that identify a row.
    max_rows : int
        Most rows returned (all rows when there are no more).
    seed : int
        Seed of the row keys.
    stratify : sequence of str
        Columns whose values keep their share of the rows (missing values are one value).

    Examples
    --------
    >>> index = pd.DataFrame({"utt_id": list("aaaabbbbcc"), "start_s": range(10)})
    >>> picked = rows(index, 5, seed=0)
    >>> len(picked), sorted(index["utt_id"].iloc[picked].value_counts().tolist())
    (5, [1, 2, 2])
    """
    n = len(index)
    max_rows = check_int(max_rows, "max_rows", low=1)
    if n <= max_rows:
        return np.arange(n)
    missing = [c for c in stratify if c not in index.columns]
    if missing:
        raise ValueError(f"stratify columns {missing} are not columns of the index")
    order = np.argsort(_keys(index, seed), kind="stable")
    codes = [pd.factorize(index[c], use_na_sentinel=False)[0][order].tolist() for c in stratify]
    counts = [np.bincount(c) for c in codes]
    share = max_rows / n
    taken = np.zeros(n, dtype=bool)
    budget = max_rows
    for rounding in (np.floor, np.ceil):
        caps = [rounding(share * c).astype(int).tolist() for c in counts]
        budget = _greedy(taken, codes, caps, budget)
    fill = np.flatnonzero(~taken)[:budget]  # positions in key order
    taken[fill] = True
    return np.sort(order[taken])


def _keys(index: pd.DataFrame, seed: int) -> np.ndarray:
    """A seeded 64-bit hash per row of its unit identity and occurrence number."""
    cols = [c for c in IDENTITY if c in index.columns]
    ident = pd.DataFrame({c: _normalised(index[c]) for c in cols}, index=range(len(index)))
    occurrence = ident.groupby(cols, sort=False, dropna=False).cumcount() if cols else None
    ident["#"] = np.arange(len(index)) if occurrence is None else occurrence.to_numpy()
    key = f"{int(seed) & (2**64 - 1):016x}"
    return pd.util.hash_pandas_object(ident, index=False, hash_key=key).to_numpy()


def _normalised(column: pd.Series) -> np.ndarray:
    """Times as numbers rounded to the microsecond (a TSV's "0.100" equals 0.1), else text."""
    numbers = pd.to_numeric(column, errors="coerce")
    if column.name != "utt_id" and numbers.notna().all():
        return np.round(numbers.to_numpy(dtype=float), 6)
    return column.astype(str).to_numpy()


def _greedy(taken: np.ndarray, codes: list[list[int]], caps: list[list[int]],
            budget: int) -> int:
    """Take untaken rows in key order while every stratum of the row is under its cap."""
    counts = [[0] * len(c) for c in caps]
    for c, col in zip(counts, codes, strict=True):  # count what earlier passes took
        for pos in np.flatnonzero(taken):
            c[col[pos]] += 1
    strata = list(zip(codes, caps, counts, strict=True))
    for pos in range(len(taken)):
        if budget == 0:
            break
        if taken[pos] or any(count[col[pos]] >= cap[col[pos]] for col, cap, count in strata):
            continue
        taken[pos] = True
        budget -= 1
        for col, _, count in strata:
            count[col[pos]] += 1
    return budget


class Taken(Mapping):
    """``{layer: matrix[rows]}`` of a mapping of layers; a layer is copied when it is read."""

    def __init__(self, layers: Mapping[str, np.ndarray], rows: np.ndarray):
        self.layers, self.rows = layers, rows

    def __getitem__(self, name: str) -> np.ndarray:
        return np.asarray(self.layers[name])[self.rows]

    def __iter__(self) -> Iterator[str]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)


def take(layers: Mapping[str, np.ndarray], rows: np.ndarray) -> Mapping[str, np.ndarray]:
    """The ``rows`` of every layer, lazily; a selection of a selection composes its rows, and
    a selection of every row in order is the layers themselves.

    Examples
    --------
    >>> layers = {"layer.0": np.arange(10.0)[:, None]}
    >>> take(take(layers, np.arange(2, 10)), np.array([0, 3]))["layer.0"].ravel().tolist()
    [2.0, 5.0]
    """
    rows = np.asarray(rows, dtype=np.intp)
    if isinstance(layers, Taken):
        return Taken(layers.layers, layers.rows[rows])
    if np.array_equal(rows, np.arange(shared_rows(layers))):
        return layers  # every row in order: nothing to select
    return Taken(layers, rows)


def only(layers: Mapping[str, np.ndarray], key: str) -> Mapping[str, np.ndarray]:
    """``{key: layer}``, as lazy as ``layers`` (of a :class:`Taken`: still unread), for a worker
    process that reads its layer itself: joblib passes a memory-mapped layer by file name."""
    if isinstance(layers, Taken):
        return Taken({key: layers.layers[key]}, layers.rows)
    return {key: layers[key]}


def shared_rows(layers: Mapping[str, np.ndarray], *, name: str = "layers",
                min_rows: int = 1) -> int:
    """The row count every layer shares, from shapes only (a :class:`Taken` is not read); the
    rule is :func:`layerwise.analyses.validation.check_layer_shapes`."""
    shapes = ({key: (len(layers.rows), *np.shape(X)[1:]) for key, X in layers.layers.items()}
              if isinstance(layers, Taken) else None)
    return check_layer_shapes(layers, name, min_rows=min_rows, shapes=shapes)


def kept_classes(labels, *, min_count: int, max_classes: int) -> np.ndarray:
    """Mask of the rows whose class has ``min_count`` rows or more and is among the
    ``max_classes`` most frequent (ties by class name).

    Examples
    --------
    >>> kept_classes(list("aaabbc"), min_count=2, max_classes=5).tolist()
    [True, True, True, True, True, False]
    >>> kept_classes(list("aaabbc"), min_count=1, max_classes=1).tolist()
    [True, True, True, False, False, False]
    """
    classes, codes, counts = np.unique(np.asarray(labels), return_inverse=True, return_counts=True)
    order = sorted(range(len(classes)), key=lambda c: (-counts[c], classes[c]))
    keep = np.zeros(len(classes), dtype=bool)
    keep[[c for c in order[:max_classes] if counts[c] >= min_count]] = True
    return keep[codes]
