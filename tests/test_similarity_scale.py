"""The exact metrics of all rows (layerwise.analyses.similarity.gram) against the n x n reference
(_TableComputation), values and intervals, and the row sample of RBF CKA and mutual k-NN."""

import numpy as np
import pytest

import layerwise.analyses.similarity as sim
from benchmarks import schema
from layerwise.analyses.similarity import similarity_table
from layerwise.analyses.similarity._sample import _sample_rows
from layerwise.analyses.similarity.gram import EXACT_METRICS, _GramComputation

#: called with the schema's defaults (benchmarks/schema.py) unless a test says otherwise
similarity_table = schema.with_defaults(similarity_table, "similarity", n_boot=0, max_rows=None)

EXACT = sorted(EXACT_METRICS)


def _layers(n, dims, seed):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, 6)) * np.geomspace(3.0, 0.3, 6)
    return [np.tanh(base @ rng.standard_normal((6, d))) + 0.2 * rng.standard_normal((n, d))
            for d in dims]


def _both(mats_a, mats_b, *, n_boot, seed, codes, svcca_components=3, cross_model=False):
    labels_a = [f"a{i}" for i in range(len(mats_a))]
    labels_b = labels_a if mats_b is None else [f"b{i}" for i in range(len(mats_b))]
    common = {"n_boot": n_boot, "seed": seed, "codes": codes,
              "svcca_components": svcca_components, "cross_model": cross_model}
    new = _GramComputation(mats_a, mats_b, labels_a, labels_b, EXACT, **common)
    ref = sim._TableComputation(mats_a, mats_b, labels_a, labels_b, EXACT, knn_k=4,
                                rbf_threshold=0.5, **common)
    new.run()
    ref.run()
    return new, ref


@pytest.mark.parametrize("n, grouped, svcca_components, two", [
    (60, False, 3, False),   # fewer rows than columns in half-samples (dual bases)
    (60, True, 3, True),
    (150, True, None, False),  # every direction of PWCCA, SVCCA by variance
    (150, True, 5, True),
    (300, True, 3, False),  # 75 clusters: resampled as blocks of consecutive clusters
    (200, False, 5, True),  # 200 rows: blocks of consecutive rows
])
@pytest.mark.parametrize("by_kernels, from_units", [(False, False), (False, True), (True, False)],
                         ids=["unit-products", "unit-products-subspace", "kernels"])
def test_exact_metrics_equal_the_reference(n, grouped, svcca_components, two, by_kernels,
                                           from_units, monkeypatch):
    """Both ways to the units' Gram matrices (d x d products per unit, or n x n kernels), and
    both ways to SVCCA/PWCCA's products (the samples' rows, or the units' products)."""
    monkeypatch.setattr(_GramComputation, "_by_kernels", lambda *args: by_kernels)
    monkeypatch.setattr(_GramComputation, "_subspace_from_units", lambda self: from_units)
    mats_a = _layers(n, [5, 8, 8, 40], seed=1)
    mats_b = _layers(n, [8, 7, 40], seed=2) if two else None
    codes = sim._group_codes(np.arange(n) // 4, n) if grouped else None
    new, ref = _both(mats_a, mats_b, n_boot=6, seed=3, codes=codes,
                     svcca_components=svcca_components)
    worst = 0.0
    for metric in EXACT:
        for got, want in [(new.values[metric], ref.values[metric]),
                          (new.replicates[metric], ref.replicates[metric]),
                          *zip(new.interval(metric), ref.interval(metric), strict=True)]:
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
            worst = max(worst, float(np.nanmax(np.abs(got - want), initial=0.0)))
    assert worst < 1e-9


@pytest.mark.parametrize("two", [False, True])
def test_units_read_in_several_chunks_equal_the_reference(two, monkeypatch):
    """Utterances longer than a chunk of rows: their later chunks add into the first's; and
    the kernel vectors' sums, in blocks of one replicate."""
    from layerwise.analyses.similarity import gram

    monkeypatch.setattr(gram, "_CHUNK_ELEMENTS", 1)  # chunks of 16 rows (the least)
    monkeypatch.setattr(_GramComputation, "_by_kernels", lambda *args: False)
    mats_a = _layers(300, [5, 8, 40], seed=1)
    mats_b = _layers(300, [7, 30], seed=2) if two else None
    codes = sim._group_codes(np.arange(300) // 30, 300)  # 10 units of 30 rows
    new, ref = _both(mats_a, mats_b, n_boot=4, seed=3, codes=codes)
    assert new.chunk == 16
    for metric in EXACT:
        np.testing.assert_allclose(new.values[metric], ref.values[metric], atol=1e-9,
                                   equal_nan=True)
        np.testing.assert_allclose(new.replicates[metric], ref.replicates[metric], atol=1e-9,
                                   equal_nan=True)


@pytest.mark.parametrize("two", [False, True])
def test_kernel_sums_read_every_row_twice_whatever_the_replicates(two, monkeypatch):
    """The debiased CKA's kernel vectors of the sample and every replicate come from two
    passes over the rows (a pass per batch of replicates took 22 passes over a 1,000,000-frame
    store); their sums equal the vectors' formed whole."""
    from layerwise.analyses.similarity import gram

    monkeypatch.setattr(gram, "_CHUNK_ELEMENTS", 1)  # chunks of 16 rows, one replicate a block
    mats_a = _layers(100, [5, 8], seed=1)
    mats_b = _layers(100, [7, 3, 6], seed=2) if two else None
    labels_a = ["a0", "a1"]
    labels_b = labels_a if mats_b is None else ["b0", "b1", "b2"]
    computation = _GramComputation(mats_a, mats_b, labels_a, labels_b, EXACT, n_boot=0, seed=0,
                                   codes=None, svcca_components=3)
    sides = {id(computation.side_a): computation.side_a, id(computation.side_b): computation.side_b}
    read = []
    for side in sides.values():
        stack = side.stack
        monkeypatch.setattr(side, "stack", lambda layers, index, stack=stack:
                            read.append(len(layers)) or stack(layers, index))
    rng = np.random.default_rng(0)
    for R in (1, 7):
        C = rng.integers(0, 3, size=(R, 100)).astype(float)
        read.clear()
        sums = computation._kernel_sums(C)
        # every row of every layer of each side, twice (16 rows a read)
        assert sum(read) == 2 * 7 * sum(len(side.mats) for side in sides.values())
        for r, c in enumerate(C):
            vectors = []
            for side in (computation.side_a, computation.side_b):
                X = [M - M.mean(axis=0) for M in side.mats]
                vectors.append((
                    np.array([Xa @ (Xa.T @ c) - c * (Xa * Xa).sum(axis=1) for Xa in X]),
                    np.array([Xa @ (Xa.T @ c**2) - c**2 * (Xa * Xa).sum(axis=1) for Xa in X])))
            (a1A, a2A), (a1B, a2B) = vectors
            lin = c.sum() * c + c * c
            np.testing.assert_allclose(sums["lin"][r], (a1A * lin) @ a1B.T, rtol=1e-10)
            np.testing.assert_allclose(sums["a2_a1"][r], (a2A * c) @ a1B.T, rtol=1e-10)
            np.testing.assert_allclose(sums["a1_a2"][r], (a1A * c) @ a2B.T, rtol=1e-10)
            for key, (a1, a2) in (("a", vectors[0]), ("b", vectors[1])):
                np.testing.assert_allclose(sums[f"tot_{key}"][r], a1 @ c, rtol=1e-10)
                np.testing.assert_allclose(sums[f"sq_{key}"][r], (a1 * a1) @ lin, rtol=1e-10)
                np.testing.assert_allclose(sums[f"mix_{key}"][r], (a1 * a2) @ c, rtol=1e-10)


@pytest.mark.parametrize("two", [False, True])
def test_half_samples_read_no_rows_of_their_own(two, monkeypatch):
    """With the CKAs, SVCCA/PWCCA of the sample and every half-sample come from the units'
    cross-products the CKAs form: beyond them, every row of every layer is read once (for the
    samples' bases) whatever the half-samples. Before, each half-sample read its rows again."""
    from layerwise.analyses.similarity import gram

    monkeypatch.setattr(_GramComputation, "_subspace_from_units", lambda self: True)
    read = []
    was_read = gram._Layers._was_read
    monkeypatch.setattr(gram._Layers, "_was_read",
                        lambda self, a, n_rows: read.append(n_rows) or was_read(self, a, n_rows))
    mats_a = _layers(300, [5, 8, 12], seed=1)
    mats_b = _layers(300, [7, 6], seed=2) if two else None
    labels_a = ["a0", "a1", "a2"]
    labels_b = labels_a if mats_b is None else ["b0", "b1"]
    codes = sim._group_codes(np.arange(300) // 10, 300)

    def rows_read(metrics, n_boot):
        read.clear()
        computation = _GramComputation(mats_a, mats_b, labels_a, labels_b, metrics,
                                       n_boot=n_boot, seed=0, codes=codes, svcca_components=3)
        computation.run()
        return sum(read), computation

    layers = len(mats_a) + (len(mats_b) if two else 0)
    for n_boot in (2, 8):
        alone, _ = rows_read(["cka_linear"], n_boot)
        both, computation = rows_read(["cka_linear", "svcca", "pwcca"], n_boot)
        assert both - alone == 300 * layers
        # and the values are those of the half-samples' own rows
        _, own = rows_read(["svcca", "pwcca"], n_boot)
        for metric in ("svcca", "pwcca"):
            np.testing.assert_allclose(computation.values[metric], own.values[metric],
                                       rtol=1e-10)
            np.testing.assert_allclose(computation.replicates[metric], own.replicates[metric],
                                       rtol=1e-10)


def test_subspace_products_come_from_the_units_for_many_rows():
    """Many rows of narrow layers: the units' products (the frame span); fewer rows of wider
    layers: the rows; few rows of wide layers: the rows, since the kernels form no products."""
    def chooses(n, d, layers=4):
        labels = [f"a{i}" for i in range(layers)]
        computation = _GramComputation(_layers(n, [d] * layers, seed=0), None, labels, labels,
                                       ["cka_linear", "svcca"], n_boot=10, seed=0,
                                       codes=sim._group_codes(np.arange(n) // 10, n),
                                       svcca_components=20)
        return computation._subspace_from_units()

    assert chooses(4000, 64)
    assert not chooses(3000, 300)
    assert not chooses(300, 200)


def test_kernels_are_chosen_for_few_rows_of_wide_layers():
    """One row per utterance (2,703 rows of 768 dims) takes the kernels, many rows of the
    same layers the per-unit products; too many rows for the kernels' memory never do."""
    def chooses(n, d, layers=4):
        labels = [f"a{i}" for i in range(layers)]
        computation = _GramComputation(_layers(n, [d] * layers, seed=0), None,
                                       labels, labels, ["cka_linear"],
                                       n_boot=0, seed=0, codes=None, svcca_components=3)
        side = computation.side_a
        pairs = [(a, b) for a in range(layers) for b in range(a, layers)]
        return computation._by_kernels(side, side, pairs)

    assert chooses(100, 200)
    assert not chooses(2000, 20)


def test_exact_metrics_of_float32_and_flat_layers():
    mats = _layers(80, [6, 6], seed=4)
    mats.append(np.tile([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], (80, 1)))  # no variance
    mats32 = [M.astype(np.float32) for M in mats]
    codes = sim._group_codes(np.arange(80) // 5, 80)
    new = _GramComputation(mats32, None, ["x", "y", "flat"], ["x", "y", "flat"], EXACT,
                           n_boot=4, seed=0, codes=codes, svcca_components=3)
    new.run()
    ref = sim._TableComputation([M.astype(np.float64) for M in mats32], None,
                                ["x", "y", "flat"], ["x", "y", "flat"], EXACT, n_boot=4,
                                seed=0, codes=codes, knn_k=4, rbf_threshold=0.5,
                                svcca_components=3)
    ref.run()
    for metric in EXACT:
        np.testing.assert_allclose(new.values[metric], ref.values[metric], atol=1e-9,
                                   equal_nan=True)
        if metric != "cosine":  # a constant layer has cosines, not the rest
            assert np.isnan(new.values[metric][2]).all() and np.isnan(new.values[metric][:, 2]).all()
        assert new.problems[metric] == ref.problems[metric]


def test_sample_rows_is_seeded_stratified_and_exact_in_size():
    groups = np.repeat(np.arange(50), np.arange(1, 51))  # groups of 1..50 rows
    n = groups.size
    rows = _sample_rows(n, 300, groups, 7)
    assert rows.size == 300 and np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(rows, _sample_rows(n, 300, groups, 7))
    assert not np.array_equal(rows, _sample_rows(n, 300, groups, 8))
    per_group = np.bincount(groups[rows], minlength=50)
    expected = np.arange(1, 51) * 300 / n
    assert np.all(np.abs(per_group - expected) < 1)
    assert _sample_rows(n, n, groups, 0) is None and _sample_rows(n, None, groups, 0) is None
    assert _sample_rows(n, 10, None, 0).size == 10


def test_table_n_rows_says_the_rows_behind_each_value():
    mats = _layers(120, [5, 6, 6], seed=5)
    layers = {f"l{i}": M for i, M in enumerate(mats)}
    groups = np.arange(120) // 6
    kwargs = {"model_a": "m", "model_b": "m", "span": "s", "pooling": "p", "progress": False,
              "knn_k": 4, "n_boot": 3, "groups": groups}
    t = similarity_table(layers, metrics=["cka_linear", "cka_rbf", "mutual_knn", "svcca"],
                         max_rows=50, **kwargs)
    n_rows = t.groupby("metric").n_rows.unique().to_dict()
    assert {m: list(v) for m, v in n_rows.items()} == {
        "cka_linear": [120], "svcca": [120], "cka_rbf": [50], "mutual_knn": [50]}
    rows = _sample_rows(120, 50, groups, 0)
    sub = similarity_table({k: v[rows] for k, v in layers.items()},
                           metrics=["cka_rbf", "mutual_knn"], **dict(kwargs, groups=groups[rows]))
    got = t[t.metric.isin(["cka_rbf", "mutual_knn"])].reset_index(drop=True)
    np.testing.assert_allclose(got[["value", "ci_low", "ci_high"]].to_numpy(),
                               sub[["value", "ci_low", "ci_high"]].to_numpy(), atol=1e-12)
    full = similarity_table(layers, metrics=["cka_rbf"], max_rows=120, **kwargs)
    assert (full.n_rows == 120).all()


def test_resampling_units_are_blocks_of_whole_consecutive_clusters():
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 40, size=500)
    codes = np.repeat(rng.permutation(500), sizes)  # cluster numbers not in row order
    units = sim._resampling_units(codes, codes.size)
    assert units.max() + 1 <= sim.MAX_UNITS
    for cluster in np.unique(codes):  # a cluster is never split
        assert np.unique(units[codes == cluster]).size == 1
    assert np.all(np.diff(units) >= 0)  # consecutive clusters, in row order
    rows = np.bincount(units)
    assert rows.max() <= codes.size / sim.MAX_UNITS + sizes.max()
    few = np.arange(100) // 10
    np.testing.assert_array_equal(sim._resampling_units(few, 100), few)  # 10 clusters: as is
    np.testing.assert_array_equal(sim._resampling_units(None, 30), np.arange(30))
    assert sim._resampling_units(None, 1000).max() + 1 == sim.MAX_UNITS


def test_table_is_the_same_whatever_the_jobs_threads(monkeypatch):
    """A job with one core and one with two write the same table, to the last bit: every
    factorisation runs with single-threaded BLAS (a threaded eigendecomposition sums in
    another order), layers and pairs side by side. Half-samples of 200 rows of 256 columns
    take the dual (n x n) bases, where the difference was found."""
    from threadpoolctl import threadpool_limits

    from layerwise.analyses.similarity import _parallel

    rng = np.random.default_rng(0)
    base = rng.standard_normal((400, 8))
    layers = {f"layer.{i}": np.tanh(base @ rng.standard_normal((8, 256)))
              + 0.3 * rng.standard_normal((400, 256)) for i in range(4)}
    tables = []
    for cpus in (1, 2):
        monkeypatch.setattr(_parallel, "_n_cpus", lambda cpus=cpus: cpus)
        with threadpool_limits(cpus):
            tables.append(similarity_table(layers, None, model_a="m", model_b="m", span="word",
                                           pooling="mean", seed=0, n_boot=3, max_rows=300,
                                           groups=np.repeat(np.arange(80), 5)))
    cols = ["value", "ci_low", "ci_high"]
    np.testing.assert_array_equal(tables[0][cols].to_numpy(), tables[1][cols].to_numpy())


def test_mapped_layers_are_handed_back_past_the_resident_limit(monkeypatch):
    """Every pass reads all rows again: when the process's resident memory passes
    ``_RESIDENT_LIMIT``, the layers' pages go back to the kernel (what bounds VmHWM at
    25 x 1024), below it they stay mapped (re-reading evicted pages costs); the values do not
    change."""
    from layerwise.analyses.similarity import gram

    assert 0 < gram._resident_bytes() < gram._RESIDENT_LIMIT
    layers = {f"layer.{i}": M.astype(np.float32)
              for i, M in enumerate(_layers(200, [16, 16, 16], seed=4))}
    released = []
    monkeypatch.setattr(gram, "release", lambda M: released.append(M.shape))
    monkeypatch.setattr(gram, "_CHECK_BYTES", 10_000)  # less than the layers (38 kB)
    kwargs = dict(model_a="m", model_b="m", span="word", pooling="mean", seed=0, n_boot=2,
                  metrics=EXACT, groups=np.arange(200) // 5)
    within = similarity_table(layers, None, **kwargs)
    assert released == []
    monkeypatch.setattr(gram, "_RESIDENT_LIMIT", 0)
    past = similarity_table(layers, None, **kwargs)
    assert len(released) >= 3 and len(released) % 3 == 0  # all layers at once
    cols = ["value", "ci_low", "ci_high"]
    np.testing.assert_array_equal(within[cols].to_numpy(), past[cols].to_numpy())


@pytest.mark.parametrize("metrics", [sorted(EXACT_METRICS), ["cka_rbf", "mutual_knn"],
                                     ["cka_linear", "cka_rbf"], ["svcca", "mutual_knn"],
                                     ["cosine"], None])
@pytest.mark.parametrize("two", [False, True])
@pytest.mark.filterwarnings("ignore:cosine is undefined")  # two models: unrelated bases
def test_progress_bar_ends_at_its_total(metrics, two, monkeypatch):
    """The job log's bar says how far the table is: it ends at its total (a bar that passes
    its total shows a bare count, with no total and no time left)."""
    from tqdm import tqdm

    from layerwise.analyses.similarity import table

    bars = {}

    class Recorded(tqdm):
        def close(self):  # called again when the bar is collected
            bars[id(self)] = (self.n, self.total)
            super().close()

    monkeypatch.setattr(table, "tqdm", Recorded)
    layers = {f"layer.{i}": M for i, M in enumerate(_layers(60, [6, 6, 6], seed=5))}
    other = {f"layer.{i}": M for i, M in enumerate(_layers(60, [6, 6], seed=6))} if two else None
    kwargs = {} if metrics is None else {"metrics": metrics}
    similarity_table(layers, other, model_a="m", model_b="n" if two else "m", span="word",
                     pooling="mean", seed=0, n_boot=3, groups=np.arange(60) // 3, progress=True,
                     **kwargs)
    [(n, total)] = bars.values()
    assert n == total > 0
