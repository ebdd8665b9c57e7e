"""Exact similarity metrics of all rows from d x d cross-products, never an n x n matrix.

Linear CKA, debiased linear CKA, cosine, SVCCA and PWCCA of every layer pair are computed
from sums over rows: cross-products ``X_aᵀ D X_b`` of the centred layers, column sums,
squared row norms, and per-row cosines, accumulated over chunks of rows.  Each chunk is read
once per pass with all layers' centred columns side by side, so the layers may be in memory,
memory-mapped, or streamed from the feature store (:class:`~layerwise.io.store.StoredRows`).
Memory is the accumulated blocks (at most ``_BLOCK_ELEMENTS`` float64 per pass over the
rows) plus one chunk; time O(n · (Σd)²): linear in the number of rows.

Bootstrap replicates are weighted sums over rows with the replicate's weights ``c`` (how
often each row's resampling unit was drawn: a cluster, or a block of consecutive clusters,
:func:`~._intervals._resampling_units`), exactly as :class:`~.table._TableComputation`
evaluates them on its n x n kernels; the same draws (``_bootstrap_counts``, ``_HalfSamples``)
give the same intervals.  A weight is constant over a unit, so with ``A_k = X_kᵀ Y_k`` the
product of unit ``k``'s rows, ``Xᵀ diag(c) Y = Σ_k c_k A_k`` and ``Xᵀ diag(c²) Y =
Σ_k c_k² A_k``, and the norms the CKAs need are quadratic forms in the units' Gram matrix
``G_kl = ⟨A_k, A_l⟩``: one pass over the rows computes each ``A_k`` once, and the sample and
any number of replicates cost ``K²`` products of (Σd)²/2 values more (K ≤ 64 units), where a
pass per replicate cost ``(1 + 0.63 · n_boot)`` passes.  The ``A_k`` of a group of layer pairs
(``K · d_a · d_b`` values each) are held at once within ``_BLOCK_ELEMENTS``; the rows are read
once per group.

The unbiased HSIC of :func:`~.table._u_hsic` with linear kernels ``K = X Xᵀ`` (rows
centred by any fixed vector: the U-statistic does not depend on it):

    Σ_{i≠j} s_ij K_ij L_ij = (W² - P)(‖M1‖² - S2) - 2W(⟨M1, M2⟩ - S3) + 2(‖M2‖² - S4)

with ``M1 = Xᵀ diag(c) Y``, ``M2 = Xᵀ diag(c²) Y``, ``S_k = Σ_i c_i^k ‖x_i‖² ‖y_i‖²``,
``W = Σc``, ``P = Σc²``, and ``a = K̃c = X(Xᵀc) - c ∘ ‖x‖²``,
``a2 = K̃c² = X(Xᵀc²) - c² ∘ ‖x‖²`` for the remaining terms (O(n d) per layer and
replicate). Those terms are sums over rows of products of the kernel vectors, accumulated
chunk by chunk for the sample and every replicate at once (:meth:`_GramComputation._kernel_sums`):
two more passes over the rows whatever ``n_boot`` (one for ``Xᵀc``, one for the vectors).

SVCCA and PWCCA of the sample and of each half-sample (a union of whole units) need its
top singular vectors, from the units' moments ``Σ x̃``, ``Σ x̃ x̃ᵀ`` (one read of each layer
for all samples, :meth:`_GramComputation._sample_bases`), and the cross-products of its
scores: sums of the units' ``A_k`` that the CKAs' pass forms anyway (:class:`_SampleProducts`:
many rows, the frame span), or a pass over the sample's rows (without the CKAs, with the
kernels, or where scoring the rows costs less: few rows of wide layers).
"""

from __future__ import annotations

import os
import threading

import numpy as np
from tqdm import tqdm

from layerwise.analyses.similarity._numerics import _cka_ratio
from layerwise.analyses.similarity._parallel import _for_each
from layerwise.analyses.similarity._results import _MetricResults
from layerwise.analyses.similarity.cca import _n_kept, _projection_weights, _top_eigen
from layerwise.io.pooled import release

#: Metrics computed exactly over all rows by this module.
EXACT_METRICS = frozenset({"cka_linear", "cka_debiased", "cosine", "svcca", "pwcca"})
_LINEAR_METRICS = frozenset({"cka_linear", "cka_debiased"})
_SUBSPACE_METRICS = frozenset({"svcca", "pwcca"})

# Per-unit cross-products held at once by ``_block_norms`` (1 GiB of float64).
_BLOCK_ELEMENTS = 1 << 27
# Rows per chunk are sized so that one chunk of all layers' columns, in float64, holds
# about this many values (128 MiB).
_CHUNK_ELEMENTS = 1 << 24
# Resident memory (allocations and the pages of the mapped layers read) above which those
# pages are handed back to the kernel, checked once per _CHECK_BYTES read.
_RESIDENT_LIMIT = 3.5 * 2**30
_CHECK_BYTES = 1 << 26


def _resident_bytes() -> int:
    """This process's resident memory (Linux; 0 elsewhere, where nothing is handed back)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def _canonical_from(M: np.ndarray):
    """:func:`~.cca._canonical` given ``Uxᵀ Uy`` instead of the bases."""
    A, rho, Bt = np.linalg.svd(M, full_matrices=False)
    return np.clip(rho, 0.0, 1.0), A, Bt.T


class _Layers:
    """One side's layers (float32 or float64, never copied whole): exact column means,
    squared norms of the centred rows, and centred float64 chunks of rows on demand."""

    def __init__(self, mats, chunk: int) -> None:
        self.mats = mats
        self.n = mats[0].shape[0]
        self.dims = [M.shape[1] for M in mats]
        self._lock = threading.Lock()
        self._unreleased = 0
        self.means = []
        self.row_sq = np.empty((len(mats), self.n))
        for a, M in enumerate(mats):
            total = np.zeros(M.shape[1])
            constant = np.ones(M.shape[1], dtype=bool)
            for start in range(0, self.n, chunk):
                part = M[start:start + chunk]
                total += part.sum(axis=0, dtype=np.float64)
                constant &= (part == M[0]).all(axis=0)
            means = total / self.n
            # as _column_means: a constant column is centred to exact zeros
            means[constant] = M[0, constant]
            self.means.append(means)
            self._was_read(a, self.n)
            for start in range(0, self.n, chunk):
                part = self.rows(a, slice(start, start + chunk))
                self.row_sq[a, start:start + chunk] = np.einsum("ij,ij->i", part, part)

    def read(self, a: int, index) -> np.ndarray:
        """Rows ``index`` of layer ``a`` as float64, uncentred."""
        out = self.mats[a][index].astype(np.float64)
        self._was_read(a, out.shape[0])
        return out

    def _was_read(self, a: int, n_rows: int) -> None:
        """Count the bytes read; once per ``_CHECK_BYTES``, if the process's resident memory
        passes ``_RESIDENT_LIMIT``, hand back the pages of every memory-mapped layer
        (:func:`release`). Every pass reads all rows again, so without it the process would
        keep every layer it has read resident (5.5 GB at 25 x 1024 and 54,000 rows). Below the
        limit they stay: a released page that the kernel then evicts is read from disk again
        on the next pass (on the development machine, which pages out cold memory, releasing
        after every chunk cost 25 x 1024 layers at 3,375 rows 10 %)."""
        with self._lock:
            self._unreleased += n_rows * self.dims[a] * self.mats[a].dtype.itemsize
            if self._unreleased <= _CHECK_BYTES:
                return
            self._unreleased = 0
        if _resident_bytes() > _RESIDENT_LIMIT:
            for M in self.mats:
                release(M)

    def rows(self, a: int, index) -> np.ndarray:
        """Centred float64 rows ``index`` of layer ``a``."""
        out = self.read(a, index)
        out -= self.means[a]
        return out

    def stack(self, layers, index) -> np.ndarray:
        """Centred float64 rows ``index`` of ``layers`` side by side, one copy."""
        first = self.mats[layers[0]][index]
        out = np.empty((first.shape[0], sum(self.dims[a] for a in layers)))
        start = 0
        for a in layers:
            part = out[:, start:start + self.dims[a]]
            part[...] = first if a == layers[0] else self.mats[a][index]
            part -= self.means[a]
            self._was_read(a, out.shape[0])
            start += self.dims[a]
        return out


def _offsets(side: _Layers, layers) -> dict[int, int]:
    """First column of each of ``layers`` in ``side.stack(layers, rows)``."""
    starts = np.cumsum([0] + [side.dims[a] for a in layers])
    return {a: int(start) for a, start in zip(layers, starts, strict=False)}


def _pair_groups(pairs, dims_first, dims_second, n_units: int) -> list[list[tuple[int, int]]]:
    """Consecutive layer pairs in groups whose per-unit products (``n_units`` blocks of
    ``dims_first[a] x dims_second[b]`` each) fit ``_BLOCK_ELEMENTS`` (a larger pair: alone)."""
    groups, group, size = [], [], 0
    for a, b in pairs:
        cost = n_units * dims_first[a] * dims_second[b]
        if group and size + cost > _BLOCK_ELEMENTS:
            groups.append(group)
            group, size = [], 0
        group.append((a, b))
        size += cost
    if group:
        groups.append(group)
    return groups


def _length(rows) -> int:
    return rows.stop - rows.start if isinstance(rows, slice) else rows.size


def _part(rows, start: int, stop: int):
    """Rows ``start:stop`` of a slice or an index array, of the same kind."""
    if isinstance(rows, slice):
        return slice(rows.start + start, rows.start + stop)
    return rows[start:stop]


class _SampleProducts:
    """SVCCA/PWCCA's score products ``S_aᵀ S_b`` of the sample and of every half-sample,
    from the units' cross-products that the CKAs' pass forms (``on_products`` of
    :meth:`_GramComputation._block_norms`), with no read of the rows of their own.

    Sample ``h``'s scores are ``(X - μ_h) V_h / s_h`` over its rows (its basis,
    :meth:`_GramComputation._sample_bases`). A sample is a union of whole units, so with
    ``A_k = X_kᵀ Y_k`` over unit ``k``'s centred rows,
    ``(X - μ_h)ᵀ (Y - ν_h) = Σ_{k∈h} A_k - n_h μ_h ν_hᵀ``, and
    ``S_aᵀ S_b = V_aᵀ (Σ_{k∈h} A_k - n_h μ_h ν_hᵀ) V_b / (s_a s_bᵀ)``. Reading each
    half-sample's rows instead cost 1 + ``n_boot``/2 passes over the rows (7 of the 46 minutes
    at 1,000,000 frames). Costs ``H · K · d_a · d_b`` per pair for H samples of K units.
    """

    def __init__(self, samples, bases_a, bases_b) -> None:
        self.masks = np.array([chosen for _, chosen in samples], dtype=np.float64)
        self.sizes = [rows.size for rows, _ in samples]
        self.bases_a, self.bases_b = bases_a, bases_b
        self.products = [{} for _ in samples]
        # the samples' sums, one buffer for every pair: a fresh array per pair costs a page
        # fault per 4 KiB written (88 MB per pair at 11 samples of 1024 x 1024)
        self._sums = np.empty(0)

    def __call__(self, pair: tuple[int, int], P: np.ndarray) -> None:
        a, b = pair
        wanted = [h for h, (first, second) in enumerate(zip(self.bases_a, self.bases_b,
                                                             strict=True))
                  if first[a] is not None and second[b] is not None]
        if not wanted:
            return
        if self._sums.size < len(wanted) * P.shape[1]:
            self._sums = np.empty(len(self.masks) * P.shape[1])
        sums = self._sums[:len(wanted) * P.shape[1]].reshape(len(wanted), P.shape[1])
        np.matmul(self.masks[wanted], P, out=sums)  # each sample's Σ_{k∈h} A_k, flattened
        for h, flat in zip(wanted, sums, strict=True):
            mean_a, Va, sa, _ = self.bases_a[h][a]
            mean_b, Vb, sb, _ = self.bases_b[h][b]
            product = (Va.T @ flat.reshape(mean_a.size, mean_b.size)) @ Vb
            product -= self.sizes[h] * np.outer(mean_a @ Va, mean_b @ Vb)
            self.products[h][a, b] = product / np.outer(sa, sb)


class _GramComputation(_MetricResults):
    """Values and interval statistics of :data:`EXACT_METRICS`, same interface as
    :class:`~.table._TableComputation` (``values``, ``centres``, ``replicates``,
    ``problems``, ``interval``)."""

    def __init__(self, mats_a, mats_b, labels_a, labels_b, metrics, *, n_boot, seed, codes,
                 svcca_components, cross_model=False, bar=None) -> None:
        self.cross_model = cross_model
        self.svcca_components = svcca_components
        self.bar = bar if bar is not None else tqdm(disable=True)
        width = sum(M.shape[1] for M in mats_a) + sum(M.shape[1] for M in mats_b or [])
        self.chunk = max(16, _CHUNK_ELEMENTS // width)
        self.side_a = _Layers(mats_a, self.chunk)
        self.side_b = self.side_a if mats_b is None else _Layers(mats_b, self.chunk)
        self._init_results(labels_a, labels_b, metrics, same=mats_b is None, n=self.side_a.n,
                           n_boot=n_boot, seed=seed, codes=codes)
        self.unit_rows = self._unit_rows()

    # -- driver ------------------------------------------------------------------------

    @staticmethod
    def progress_steps(metrics, n_boot: int) -> int:
        """How often :meth:`run` advances the progress bar: once per replicate of the CKAs,
        once per half-sample of SVCCA/PWCCA, once at the end."""
        return (1 + n_boot * bool(_LINEAR_METRICS & set(metrics))
                + n_boot * bool(_SUBSPACE_METRICS & set(metrics)))

    def run(self) -> None:
        linear = _LINEAR_METRICS & set(self.metrics)
        subspace = _SUBSPACE_METRICS & set(self.metrics)
        from_units = None
        if subspace:
            samples = [(np.arange(self.n), np.ones(int(self.units.max()) + 1, dtype=bool))]
            samples += zip(self.halves.rows, self.halves.chosen, strict=True)
            bases_a = self._sample_bases(self.side_a, samples)
            bases_b = bases_a if self.same else self._sample_bases(self.side_b, samples)
            if linear and self._subspace_from_units():
                from_units = _SampleProducts(samples, bases_a, bases_b)
        if linear:
            self._linear(from_units)
        if subspace:
            for h, (rows, _) in enumerate(samples):
                products = (from_units.products[h] if from_units is not None
                            else self._score_products(rows, bases_a[h], bases_b[h]))
                self._subspace(None if h == 0 else h - 1, products, bases_a[h], bases_b[h])
                if h:
                    self.bar.update(1)
        if "cosine" in self.metrics:
            self._cosine()
        self.bar.update(1)
        self._mirror()

    def _subspace_from_units(self) -> bool:
        """Whether SVCCA/PWCCA's score products of the sample and the half-samples come from
        the units' cross-products (:class:`_SampleProducts`): where they are formed (not from
        the kernels) and that costs fewer multiply-adds, ``H · K · d_a · d_b`` per pair for H
        samples of K units, than scoring each sample's rows, ``n_h · (Σd · k + pairs · k²)``
        (:meth:`_score_products`). So for many rows, which are then not read again (the
        frame span), and for few rows of wide layers the rows (the utterance span)."""
        A, B = self.side_a, self.side_b
        pairs = self._pairs()
        if self._by_kernels(A, B, pairs):
            return False
        k = self.svcca_components or max(A.dims + B.dims)
        widths = sum(A.dims) + (0 if self.same else sum(B.dims))
        samples = 1 + len(self.halves.rows)
        by_units = samples * len(self.unit_rows) * sum(A.dims[a] * B.dims[b] for a, b in pairs)
        rows = self.n + sum(half.size for half in self.halves.rows)
        by_rows = rows * (widths * k + len(pairs) * k * k)
        return by_units < by_rows

    def _pairs(self) -> list[tuple[int, int]]:
        """The layer pairs computed: ``a`` of side A, ``b`` of side B; ``a <= b`` for one
        model (the rest is its mirror image)."""
        La, Lb = len(self.side_a.mats), len(self.side_b.mats)
        return [(a, b) for a in range(La) for b in range(a if self.same else 0, Lb)]

    # -- linear CKA ----------------------------------------------------------------------

    def _unit_rows(self) -> list:
        """Rows of each resampling unit, a slice where they are consecutive (as the
        utterances of a feature file are), so that a unit is read as one run."""
        order = np.argsort(self.units, kind="stable")
        bounds = np.searchsorted(self.units[order], np.arange(int(self.units.max()) + 2))
        out = []
        for k in range(bounds.size - 1):
            rows = order[bounds[k]:bounds[k + 1]]
            contiguous = rows.size and rows[-1] - rows[0] + 1 == rows.size
            out.append(slice(int(rows[0]), int(rows[-1]) + 1) if contiguous else rows)
        return out

    def _block_norms(self, first: _Layers, second: _Layers, pairs, counts: np.ndarray,
                     on_products=None):
        """For each replicate ``r`` (a row of ``counts``: how often each unit was drawn; a
        row of ones is the sample itself) and each layer pair ``(a, b)`` of ``pairs`` (``a``
        of ``first``, ``b`` of ``second``): ``‖M1‖², ⟨M1, M2⟩, ‖M2‖²`` with
        ``M1 = Σ_k c_rk A_k``, ``M2 = Σ_k c_rk² A_k`` and ``A_k = X_aᵀ Y_b`` over the
        centred rows of unit ``k``, as (R, L_first, L_second) arrays (nan where not
        computed).

        The three are quadratic forms in the units' Gram matrix ``G_kl = ⟨A_k, A_l⟩``
        (K x K): ``‖M1‖² = cᵀ G c``, ``⟨M1, M2⟩ = cᵀ G c²``, ``‖M2‖² = c²ᵀ G c²``.  So each
        ``A_k`` is computed once, in one pass over the rows (read with the group's layers'
        centred columns side by side, ``_Layers.stack``), and any number of replicates
        costs K x K products per pair.  The ``A_k`` of a group of pairs are held at once (at
        most ``_BLOCK_ELEMENTS`` values); the rows are read once per group.
        ``on_products((a, b), P)``, if given, is called with each pair's products ``P``
        (K x d_a·d_b, ``P[k]`` the flattened ``A_k``) while they are held; not when the Gram
        matrices come from the rows' kernels.
        """
        R = counts.shape[0]
        shape = (R, len(first.mats), len(second.mats))
        n11, n12, n22 = (np.full(shape, np.nan) for _ in range(3))
        units = self.unit_rows
        squared = counts * counts
        groups = _pair_groups(pairs, first.dims, second.dims, len(units))
        bar = tqdm(total=len(groups) * len(units), desc="cross-products by unit",
                   leave=False, mininterval=10.0, file=getattr(self.bar, "fp", None),
                   disable=self.bar.disable)
        if self._by_kernels(first, second, pairs):
            grams = self._kernel_unit_grams(first, second, pairs)
        else:
            # one buffer for every group's products, its pages faulted in once: fresh arrays
            # per group cost a page fault per 4 KiB written, for each group again
            sizes = [len(units) * sum(first.dims[a] * second.dims[b] for a, b in group)
                     for group in groups]
            buffer = np.empty(max(sizes, default=0))

            def unit_grams():
                for group in groups:
                    products = self._unit_products(first, second, group, units, bar, buffer)
                    for pair, P in products.items():
                        if on_products is not None:
                            on_products(pair, P)
                        yield pair, P @ P.T

            grams = unit_grams()
        for (a, b), G in grams:
            GC, GC2 = counts @ G, squared @ G
            n11[:, a, b] = np.einsum("rk,rk->r", GC, counts)
            n12[:, a, b] = np.einsum("rk,rk->r", GC, squared)
            n22[:, a, b] = np.einsum("rk,rk->r", GC2, squared)
        bar.close()
        return n11, n12, n22

    def _by_kernels(self, first: _Layers, second: _Layers, pairs) -> bool:
        """Whether the units' Gram matrices are cheaper from the rows' n x n kernels (few
        rows, as the utterance span's: one row per utterance) than from the per-unit d x d
        cross-products, and the kernels of the pairs' layers fit ``_BLOCK_ELEMENTS``."""
        layers = {("a", a) for a, _ in pairs} | {("b" if second is not first else "a", b)
                                                 for _, b in pairs}
        n = self.n
        if len(layers) * n * n > _BLOCK_ELEMENTS:
            return False
        width = np.mean(first.dims + second.dims)
        by_kernels = len(layers) * n * n * width / 2 + 3 * len(pairs) * n * n
        by_products = len(pairs) * n * width * width
        return by_kernels < by_products

    def _kernel_unit_grams(self, first: _Layers, second: _Layers, pairs):
        """``((a, b), G)`` for each pair, ``G_kl = ⟨A_k, A_l⟩ = Σ_{i∈k, j∈l} (x_i·x_j)(y_i·y_j)``
        over the centred rows: the Hadamard product of the two layers' kernels ``X Xᵀ``, summed
        over the rows of each pair of units. Each layer's kernel is formed once (n² d / 2)."""
        order = np.argsort(self.units, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(self.units[order]) != 0])

        def kernels(side: _Layers, layers) -> dict:
            out = {}
            for a in layers:
                X = side.rows(a, order)
                out[a] = X @ X.T
            return out

        if second is first:
            K1 = K2 = kernels(first, sorted({a for pair in pairs for a in pair}))
        else:
            K1 = kernels(first, sorted({a for a, _ in pairs}))
            K2 = kernels(second, sorted({b for _, b in pairs}))
        for a, b in pairs:
            H = K1[a] * K2[b]
            yield (a, b), np.add.reduceat(np.add.reduceat(H, starts, axis=0), starts, axis=1)

    def _unit_products(self, first, second, group, units, bar, buffer: np.ndarray) -> dict:
        """``{(a, b): P}`` with ``P[k]`` the flattened ``X_aᵀ Y_b`` of unit ``k``'s centred
        rows, for the pairs of ``group``; the ``P`` are views of ``buffer``, overwritten by the
        next call."""
        wanted_first = sorted({a for a, _ in group})
        wanted_second = sorted({b for _, b in group})
        if second is first:
            wanted_first = wanted_second = sorted(set(wanted_first) | set(wanted_second))
        at_first = _offsets(first, wanted_first)
        at_second = _offsets(second, wanted_second)
        products, used = {}, 0
        for a, b in group:
            size = len(units) * first.dims[a] * second.dims[b]
            products[a, b] = buffer[used:used + size].reshape(len(units), -1)
            used += size
        # a unit of more rows than a chunk adds its later chunks' products through one buffer:
        # a fresh temporary per product costs its page faults, and the add, as much as the GEMM
        scratch = np.empty(max(P.shape[1] for P in products.values()))
        for k, rows_k in enumerate(units):
            n_k = _length(rows_k)
            if n_k == 0:  # a unit without rows: its products are zero
                for P in products.values():
                    P[k] = 0.0
            for start in range(0, n_k, self.chunk):
                rows = _part(rows_k, start, min(start + self.chunk, n_k))
                X = first.stack(wanted_first, rows)
                Y = X if second is first else second.stack(wanted_second, rows)
                for (a, b), P in products.items():
                    block = P[k].reshape(first.dims[a], second.dims[b])
                    Xa = X[:, at_first[a]:at_first[a] + first.dims[a]]
                    Yb = Y[:, at_second[b]:at_second[b] + second.dims[b]]
                    if start == 0:  # written in place: the unit's first chunk
                        np.matmul(Xa.T, Yb, out=block)
                    else:
                        part = scratch[:block.size].reshape(block.shape)
                        block += np.matmul(Xa.T, Yb, out=part)
            bar.update(1)
        return products

    def _kernel_sums(self, C: np.ndarray) -> dict:
        """For each row ``c`` of ``C`` (R, n: the sample's row weights, then each
        replicate's), the sums over rows that the CKAs take from the kernel vectors
        ``a1 = K̃c`` and ``a2 = K̃c²`` of every layer, as arrays of R rows:

        - ``tot_a``, ``tot_b`` (R, L): ``Σ_i a1_i c_i``;
        - ``lin`` (R, La, Lb): ``Σ_i a1A_i (W c_i + c_i²) a1B_i``;
        - ``a2_a1``, ``a1_a2`` (R, La, Lb): ``Σ_i a2A_i c_i a1B_i``, ``Σ_i a1A_i c_i a2B_i``;
        - ``sq_a``, ``sq_b`` (R, L): ``Σ_i a1_i² (W c_i + c_i²)``; ``mix_a``, ``mix_b``:
          ``Σ_i a1_i a2_i c_i``.

        ``a1 = X(Xᵀc) - c ∘ ‖x‖²`` needs ``Xᵀc`` over all rows first, so the rows are read
        twice, whatever R: once for ``Xᵀc`` and ``Xᵀc²`` of every replicate, once for the
        kernel vectors, formed chunk by chunk and summed at once. Memory: R · Σd values and
        the chunk's kernel vectors, at most ``_CHUNK_ELEMENTS`` per block of replicates."""
        A, B = self.side_a, self.side_b
        sides = [A] if self.same else [A, B]
        R, n = C.shape
        W = C.sum(axis=1)
        layers = [range(len(side.mats)) for side in sides]
        offsets = [_offsets(side, every) for side, every in zip(sides, layers, strict=True)]
        projections = [[np.zeros((d, 2 * R)) for d in side.dims] for side in sides]
        for start in range(0, n, self.chunk):
            part = slice(start, start + self.chunk)
            weights = np.vstack([C[:, part], C[:, part] ** 2]).T
            for side, every, at, u in zip(sides, layers, offsets, projections, strict=True):
                X = side.stack(every, part)
                for a, d in enumerate(side.dims):
                    u[a] += X[:, at[a]:at[a] + d].T @ weights
        La, Lb = len(A.mats), len(B.mats)
        sums = {name: np.zeros((R, La)) for name in ("tot_a", "sq_a", "mix_a")}
        sums |= {name: np.zeros((R, Lb)) for name in ("tot_b", "sq_b", "mix_b")}
        sums |= {name: np.zeros((R, La, Lb)) for name in ("lin", "a2_a1", "a1_a2")}
        per_block = max(1, _CHUNK_ELEMENTS // (4 * (La + Lb) * self.chunk))
        for start in range(0, n, self.chunk):
            part = slice(start, start + self.chunk)
            stacks = [side.stack(every, part) for side, every in zip(sides, layers, strict=True)]
            for first in range(0, R, per_block):
                stop = min(first + per_block, R)
                block, columns = slice(first, stop), np.r_[first:stop, R + first:R + stop]
                c = C[block, part]
                c2 = c * c
                lin = W[block, None] * c + c2
                vectors = []
                for side, at, u, X in zip(sides, offsets, projections, stacks, strict=True):
                    a1 = np.empty((c.shape[0], len(side.mats), c.shape[1]))
                    a2 = np.empty_like(a1)
                    for a, d in enumerate(side.dims):
                        V = X[:, at[a]:at[a] + d] @ u[a][:, columns]
                        a1[:, a] = V[:, :stop - first].T - c * side.row_sq[a, part]
                        a2[:, a] = V[:, stop - first:].T - c2 * side.row_sq[a, part]
                    vectors.append((a1, a2))
                (a1A, a2A), (a1B, a2B) = vectors[0], vectors[-1]
                a1B_t, a2B_t = a1B.transpose(0, 2, 1), a2B.transpose(0, 2, 1)
                sums["lin"][block] += np.matmul(a1A * lin[:, None], a1B_t)
                sums["a2_a1"][block] += np.matmul(a2A * c[:, None], a1B_t)
                sums["a1_a2"][block] += np.matmul(a1A * c[:, None], a2B_t)
                for key, (a1, a2) in (("a", vectors[0]), ("b", vectors[-1])):
                    sums[f"tot_{key}"][block] += np.matmul(a1, c[:, :, None])[..., 0]
                    sums[f"sq_{key}"][block] += np.matmul(a1 * a1, lin[:, :, None])[..., 0]
                    sums[f"mix_{key}"][block] += np.matmul(a1 * a2, c[:, :, None])[..., 0]
        return sums

    def _linear(self, on_products=None) -> None:
        """Linear and debiased CKA of the sample and of every replicate; ``on_products`` is
        handed the units' cross-products of each layer pair (:meth:`_block_norms`)."""
        A, B = self.side_a, self.side_b
        La = len(A.mats)
        # row 0: the sample itself (every unit once); then the replicates
        counts = np.vstack([np.ones((1, self.counts.shape[1])), self.counts])
        if self.same:
            n11, n12, n22 = self._block_norms(A, A, self._pairs(), counts, on_products)
            iu = np.triu_indices(La, 1)
            for M in (n11, n12, n22):
                for Mr in M:
                    Mr.T[iu] = Mr[iu]
            diagonal = [np.diagonal(M, axis1=1, axis2=2) for M in (n11, n12, n22)]
            self_norms = [diagonal, diagonal]
        else:
            n11, n12, n22 = self._block_norms(A, B, self._pairs(), counts, on_products)
            self_norms = []
            for side in (A, B):
                diagonal = [(a, a) for a in range(len(side.mats))]
                norms = self._block_norms(side, side, diagonal, counts)
                self_norms.append([np.diagonal(M, axis1=1, axis2=2) for M in norms])
        C = np.vstack([np.ones(self.n), *self.weights])
        sums = self._kernel_sums(C)
        for i in range(C.shape[0]):
            self._linear_values(
                None if i == 0 else i - 1, C[i], (n11[i], n12[i], n22[i]),
                [tuple(d[i] for d in side) for side in self_norms],
                {name: value[i] for name, value in sums.items()})
            if i:
                self.bar.update(1)

    def _linear_values(self, r, c, norms, self_norms, sums) -> None:
        """Store the CKAs of replicate ``r`` (None: the sample) from its sums (its row of
        :meth:`_kernel_sums`)."""
        A, B = self.side_a, self.side_b
        n11, n12, n22 = norms
        W, P = float(c.sum()), float(c @ c)

        def quartic(kx, ky, k11, k12, k22):
            S2 = (kx * c**2) @ ky.T
            S3 = (kx * c**3) @ ky.T
            S4 = (kx * c**4) @ ky.T
            return (W * W - P) * (k11 - S2) - 2.0 * W * (k12 - S3) + 2.0 * (k22 - S4)

        cross = quartic(A.row_sq, B.row_sq, n11, n12, n22)
        cross += np.outer(sums["tot_a"], sums["tot_b"])
        cross -= 2.0 * sums["lin"]
        cross += 2.0 * (sums["a2_a1"] + sums["a1_a2"])

        def self_term(side, key, norms):
            k11, k12, k22 = norms
            kx = side.row_sq
            mpart = ((W * W - P) * (k11 - np.einsum("ij,ij->i", kx * c**2, kx))
                     - 2.0 * W * (k12 - np.einsum("ij,ij->i", kx * c**3, kx))
                     + 2.0 * (k22 - np.einsum("ij,ij->i", kx * c**4, kx)))
            tot, square, mixed = sums[f"tot_{key}"], sums[f"sq_{key}"], sums[f"mix_{key}"]
            value = mpart + tot**2 - 2.0 * square + 4.0 * mixed
            floor = 1e-10 * (np.abs(mpart) + tot**2 + 2.0 * square + 4.0 * np.abs(mixed))
            return np.where(value <= floor, 0.0, value)

        self_a = self_term(A, "a", self_norms[0])
        self_b = self_a if self.same else self_term(B, "b", self_norms[1])
        if self.same:
            np.fill_diagonal(cross, self_a)
        u = _cka_ratio(cross, self_a, self_b)
        if r is not None:
            self._store(r, "cka_linear", u)
            self._store(r, "cka_debiased", u)
            return
        self._store(r, "cka_debiased", u)
        self._note(r, "cka_debiased", self_a <= 0, self_b <= 0, "unbiased self-HSIC <= 0")
        if "cka_linear" in self.values:
            # with all weights 1, n11 = ‖X_aᵀ Y_b‖² of the centred layers: biased HSIC · n²
            biased_a = self_norms[0][0]
            biased_b = self_norms[1][0]
            self._store(r, "cka_linear", _cka_ratio(n11.copy(), biased_a, biased_b), centre=u)
            self._note(r, "cka_linear", biased_a <= 0, biased_b <= 0, "all rows are identical")

    # -- SVCCA, PWCCA ----------------------------------------------------------------------

    def _sample_bases(self, side: _Layers, samples) -> list[list]:
        """Per sample (``(rows, units)``: the rows and a mask of the units they are) and
        layer, ``(mean, V, s, U)`` of the sample's centred rows: the top
        ``svcca_components`` right singular vectors ``V`` and values ``s`` (as
        :func:`~.table._top_singular`), with ``U`` (rows x k) only when it was cheaper to
        form (fewer rows than columns); None for a layer with no variance.

        A sample is a union of units, so its covariance is a sum of the units' moments
        (``Σ x̃``, ``Σ x̃ x̃ᵀ`` of rows centred by the layer's mean): each layer is read once
        for the sample and all half-samples, held as K · d² values."""
        units = self.unit_rows
        sizes = np.array([_length(rows) for rows in units])
        out = [[None] * len(side.mats) for _ in samples]
        for a, d in enumerate(side.dims):
            from_moments = [i for i, (rows, _) in enumerate(samples) if rows.size >= d]
            if from_moments:
                sums, moments = np.zeros((len(units), d)), np.zeros((len(units), d, d))
                for k, rows_k in enumerate(units):
                    for start in range(0, sizes[k], self.chunk):
                        X = side.rows(a, _part(rows_k, start, min(start + self.chunk, sizes[k])))
                        sums[k] += X.sum(axis=0)
                        moments[k] += X.T @ X

                def from_sums(j, a=a, sums=sums, moments=moments, chosen=from_moments):
                    i = chosen[j]
                    mask = samples[i][1].astype(np.float64)
                    n_rows = float(mask @ sizes)
                    mean = (mask @ sums) / n_rows
                    C = np.tensordot(mask, moments, axes=1) - n_rows * np.outer(mean, mean)
                    out[i][a] = self._basis(C, mean, None)

                # the samples' eigendecompositions side by side, one thread per core
                _for_each(from_sums, len(from_moments))
            dual = [i for i in range(len(samples)) if i not in from_moments]

            def from_rows(j, a=a, dual=dual):
                """The dual, exactly as _top_singular: n x n is small."""
                i = dual[j]
                Bm = side.rows(a, samples[i][0])
                mean = Bm.mean(axis=0)
                Bm -= mean
                out[i][a] = self._basis(Bm @ Bm.T, mean, Bm)

            # side by side too: and with single-threaded BLAS, the eigendecompositions round
            # alike whatever the job's thread count
            _for_each(from_rows, len(dual))
        return out

    def _basis(self, C: np.ndarray, mean: np.ndarray, dual):
        """``(mean, V, s, U)`` from the covariance ``C`` (d x d), or with ``dual`` (the
        centred rows) from their Gram matrix ``C`` (n x n)."""
        top = _top_eigen(C, self.svcca_components)
        if top is None:
            return None
        s, V = top
        if dual is not None:  # V holds U
            return mean, dual.T @ V / s, s, V
        return mean, V, s, None

    def _score_products(self, rows: np.ndarray, bases_a, bases_b) -> dict:
        """``{(a, b): S_aᵀ S_b}`` of the scores ``S = (X - mean) V / s`` of the sample
        ``rows`` (its bases), accumulated over chunks of its rows: a pass over them, where
        the units' products are not used (:meth:`_subspace_from_units`)."""
        A, B = self.side_a, self.side_b
        products = {}
        pairs = [(a, b) for a, b in self._pairs()
                 if bases_a[a] is not None and bases_b[b] is not None]
        small = rows.size < max(A.dims + B.dims)
        step = rows.size if small else self.chunk
        for start in range(0, rows.size, step):
            part = rows[start:start + step]
            whole = slice(start, start + step)

            def scores(side, bases, a, part=part, whole=whole):
                mean, V, s, U = bases[a]
                if U is not None:
                    return U[whole]
                return (side.rows(a, part) - mean) @ V / s

            Sa = {a: scores(A, bases_a, a) for a in {p[0] for p in pairs}}
            Sb = Sa if self.same else {b: scores(B, bases_b, b) for b in {p[1] for p in pairs}}
            for a, b in pairs:
                product = Sa[a].T @ Sb[b]
                products[a, b] = products[a, b] + product if (a, b) in products else product
        return products

    def _subspace(self, r, products: dict, bases_a, bases_b) -> None:
        """SVCCA and PWCCA of the sample (``r`` None) or half-sample ``r`` from the products
        of its scores, ``{(a, b): S_aᵀ S_b}``."""
        La, Lb = len(bases_a), len(bases_b)
        shape = (La, Lb)
        out = {m: np.full(shape, np.nan) for m in ("svcca", "pwcca") if m in self.values}
        k = self.svcca_components
        items = list(products.items())

        def canonical(j: int) -> None:
            (a, b), M = items[j]
            (_, Va, sa, _), (_, Vb, sb, _) = bases_a[a], bases_b[b]
            rho, Ca, Cb = _canonical_from(M)
            if "svcca" in out:
                ka, kb = _n_kept(sa, k, 0.99), _n_kept(sb, k, 0.99)
                if (ka, kb) != (sa.size, sb.size):
                    rho_sv = _canonical_from(M[:ka, :kb])[0]
                else:
                    rho_sv = rho
                out["svcca"][a, b] = rho_sv.mean()
            if "pwcca" in out:
                out["pwcca"][a, b] = _projection_weights(Ca, sa, Va.T) @ rho
                if self.same and a != b:
                    out["pwcca"][b, a] = _projection_weights(Cb, sb, Vb.T) @ rho

        # one SVD of a k x k product per pair (L² of them per sample, d³ each: the largest
        # cost at 25 x 1024), side by side on the job's cores
        _for_each(canonical, len(items))
        for metric, V in out.items():
            self._store(r, metric, V)
            self._note(r, metric, [x is None for x in bases_a], [x is None for x in bases_b],
                       "all rows are identical")

    # -- cosine ------------------------------------------------------------------------

    def _cosine(self) -> None:
        A, B = self.side_a, self.side_b
        if self.cross_model:
            self.problems["cosine"].add("the two models have unrelated coordinates (bases)")
            return
        W = np.vstack(self.weights) if self.weights else np.empty((0, self.n))
        W /= np.maximum(W.sum(axis=1, keepdims=True), 1.0)
        pairs = []
        for a in range(len(A.mats)):
            for b in range(a if self.same else 0, len(B.mats)):
                if A.dims[a] == B.dims[b]:
                    pairs.append((a, b))
                else:  # same edge case as cosine_matched
                    self.problems["cosine"].add(
                        f"widths differ ({self.labels_a[a]}: {A.dims[a]}, "
                        f"{self.labels_b[b]}: {B.dims[b]})"
                    )
        sums = {p: 0.0 for p in pairs}
        reps = {p: np.zeros(W.shape[0]) for p in pairs}
        for start in range(0, self.n, self.chunk):
            part = slice(start, start + self.chunk)
            Xa = {a: A.read(a, part) for a in {p[0] for p in pairs}}
            Xb = Xa if self.same else {b: B.read(b, part) for b in {p[1] for p in pairs}}
            na = {a: np.linalg.norm(X, axis=1) for a, X in Xa.items()}
            nb = na if self.same else {b: np.linalg.norm(X, axis=1) for b, X in Xb.items()}
            for a, b in pairs:
                dots = np.einsum("ij,ij->i", Xa[a], Xb[b])
                norms = na[a] * nb[b]
                scores = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0.0)
                sums[a, b] += scores.sum()
                reps[a, b] += W[:, part] @ scores
        for a, b in pairs:
            self.values["cosine"][a, b] = self.centres["cosine"][a, b] = sums[a, b] / self.n
            self.replicates["cosine"][:, a, b] = reps[a, b]

