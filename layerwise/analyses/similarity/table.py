"""The similarity table: every metric for every pair of layers."""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.linalg import blas
from tqdm import tqdm

from layerwise.analyses.similarity._intervals import (
    _HALF_SAMPLED,
    _group_codes,
)
from layerwise.analyses.similarity._numerics import (
    _BLOCK_ELEMENTS,
    FloatMatrix,
    UndefinedSimilarityWarning,
    _centre,
    _cka_ratio,
    _gram_to_sq_distances,
    _matched_cosines,
    _row_sq_norms,
)
from layerwise.analyses.similarity._parallel import _for_each, _single_threaded_blas
from layerwise.analyses.similarity._registry import METRICS, TABLE_COLUMNS
from layerwise.analyses.similarity._results import _MetricResults
from layerwise.analyses.similarity._sample import _sample_rows
from layerwise.analyses.similarity.cca import _canonical, _n_kept, _projection_weights, _top_eigen
from layerwise.analyses.similarity.gram import EXACT_METRICS, _GramComputation
from layerwise.analyses.similarity.neighbours import (
    _clamped_unit_rows,
    _knn_indices,
    _knn_overlap,
)
from layerwise.analyses.validation import check_int, check_matrix, check_real
from layerwise.io.pooled import release
from layerwise.io.store import StoredRows

# --------------------------------------------------------------------------------------
# Similarity table: every layer pair, every metric, one pass of per-layer precomputation
# --------------------------------------------------------------------------------------
#
# How the table stays fast. Per layer, once: the centred matrix, its n x n Gram matrix
# packed to the lower triangle (linear CKA and debiased CKA need nothing else) and the
# packed squared distances (RBF CKA), the kNN index sets and the row norms. Per
# replicate (each bootstrap draw, then the point estimate): a draw is summarised by how
# often each row was drawn, and every kernel metric on X[draw] is evaluated exactly on
# the distinct rows with those multiplicities as weights, so no resampled matrix is
# rebuilt: the weighted HSIC of *all* layer pairs is one product of the stacked packed
# kernels plus rank-one centring corrections, and SVCCA/PWCCA need one small
# eigendecomposition per layer and a k x k SVD per pair. Cosine and mutual k-NN are
# means of per-row scores, so their replicates are weighted means of one vector per pair.

_FAMILY = {
    "cka_linear": "linear",
    "cka_debiased": "linear",
    "cka_rbf": "rbf",
    "svcca": "subspace",
    "pwcca": "subspace",
    "mutual_knn": "knn",
    "cosine": "cosine",
}

# Weighted order statistics: sort directly below this size, else bin and recurse.
_SORT_CUTOFF = 1 << 15
_N_BINS = 1 << 12


def _weighted_order_stats(values: np.ndarray, weights: np.ndarray, ranks: list) -> list[float]:
    """Entries at 0-based positions ``ranks`` of sorted ``values`` repeated ``weights`` times.

    Exact (``weights`` are integer-valued), without a full sort: histogram the values,
    find the bin holding each rank from cumulative bin weights, recurse into that bin.
    """
    if values.size <= _SORT_CUTOFF:
        order = np.argsort(values, kind="stable")
        positions = np.searchsorted(np.cumsum(weights[order]), ranks, side="right")
        return [float(values[order[i]]) for i in positions]
    low, high = float(values.min()), float(values.max())
    if low == high:
        return [low] * len(ranks)
    scale = _N_BINS / (high - low)
    if not math.isfinite(scale):  # a range too narrow to bin: sort instead
        order = np.argsort(values, kind="stable")
        positions = np.searchsorted(np.cumsum(weights[order]), ranks, side="right")
        return [float(values[order[i]]) for i in positions]
    bins = ((values - low) * scale).astype(np.intp)
    np.minimum(bins, _N_BINS - 1, out=bins)
    cumulative = np.cumsum(np.bincount(bins, weights=weights, minlength=_N_BINS))
    targets = np.searchsorted(cumulative, ranks, side="right")
    out = [0.0] * len(ranks)
    for target in np.unique(targets):
        members = [i for i, t in enumerate(targets) if t == target]
        below = cumulative[target - 1] if target > 0 else 0.0
        inside = bins == target
        found = _weighted_order_stats(
            values[inside], weights[inside], [ranks[i] - below for i in members]
        )
        for i, value in zip(members, found, strict=True):
            out[i] = value
    return out


def _weighted_median(values: np.ndarray, weights: np.ndarray, total: int) -> float:
    """``np.median`` of the expanded multiset (``weights`` sum to ``total``)."""
    half = total // 2
    ranks = [half] if total % 2 else [half - 1, half]
    return float(np.mean(_weighted_order_stats(values, weights, ranks)))


class _Packing:
    """Lower triangle (diagonal included) of an n x n symmetric matrix, packed by rows.

    Entry ``(r, c)``, ``r >= c``, sits at ``r (r + 1) / 2 + c``, which is BLAS's
    upper-packed column-major layout, so ``dspmv`` applies directly.  An inner product
    of two symmetric matrices is the packed inner product with off-diagonal entries
    counted twice, hence ``sqrt_mult``.
    """

    def __init__(self, n: int) -> None:
        self.rows, self.cols = np.tril_indices(n)
        self.flat = self.rows * n + self.cols
        self.offdiag = self.rows != self.cols
        self.sqrt_mult = np.where(self.offdiag, math.sqrt(2.0), 1.0)


class _Replicate:
    """The rows one evaluation uses, as weights: all rows once, or a bootstrap replicate.

    ``weights[i]`` is how often row ``i`` (its cluster) was drawn; ``rows`` (None = all)
    are the rows with weight > 0, ``counts`` their weights and ``total`` their sum.  A
    plug-in metric of the resample equals the weighted metric over ``X[rows]``.  For
    packed kernels over the rows: ``pairs`` indexes their entries in the full packing
    (None = all), ``sqrt_mult`` is sqrt(2) off the diagonal (so that packed inner
    products count both triangles), ``median_weights`` how often each entry counts in
    the bandwidth's median (``2 c_i c_j`` for a pair of distinct rows; pairs of copies
    of a row are left out, and the diagonal counts one zero per resampled row, as in
    the point estimate), and ``u_weights`` the U-statistic weights of :func:`_u_hsic`.
    """

    def __init__(self, n: int, weights: np.ndarray | None, packing: _Packing | None) -> None:
        if weights is None:
            self.weights, self.rows, self.counts = np.ones(n), None, np.ones(n)
        else:
            self.weights = weights
            self.rows = np.flatnonzero(weights)
            self.counts = weights[self.rows]
        self.total = float(self.counts.sum())
        self.pairs = self.sqrt_mult = self.median_weights = self.u_weights = None
        self.median_total = 0
        if packing is None:
            return
        if self.rows is None:
            r, c, offdiag = packing.rows, packing.cols, packing.offdiag
            self.sqrt_mult = packing.sqrt_mult
        else:
            r, c = np.tril_indices(self.rows.size)
            self.pairs = (self.rows * (self.rows + 1) // 2)[r] + self.rows[c]
            offdiag = r != c
            self.sqrt_mult = np.where(offdiag, math.sqrt(2.0), 1.0)
        cr, cc = self.counts[r], self.counts[c]
        products = cr * cc
        self.median_weights = np.where(offdiag, 2.0 * products, cr)
        sum_sq = float(self.counts @ self.counts)
        self.median_total = int(round(self.total + self.total**2 - sum_sq))
        self.u_weights = products * ((self.total**2 - sum_sq) - self.total * (cr + cc)
                                     + 2.0 * products)
        self.u_weights[~offdiag] = 0.0

    def take(self, A: np.ndarray) -> np.ndarray:
        return A if self.rows is None else A[self.rows]

    def release(self) -> None:
        """Drop the per-pair arrays (memory) once the replicate has been evaluated."""
        self.pairs = self.sqrt_mult = self.median_weights = self.u_weights = None


class _KernelTerms:
    """One layer set's kernels on a replicate's rows, as :func:`_u_hsic` needs them.

    ``S`` (L, pairs): packed kernels times ``sqrt_mult``; ``a1``, ``a2`` (L, rows):
    ``K̃ c`` and ``K̃ c²`` with ``K̃`` the kernel with zeroed diagonal and ``c`` the row
    weights; ``total`` (L,): ``cᵀ K̃ c``; ``diag`` (L, rows): the kernel's diagonal.
    """

    def __init__(self, S, a1, a2, diag, counts) -> None:
        self.S, self.a1, self.a2, self.diag = S, a1, a2, diag
        self.total = a1 @ counts


def _packed_products(SA, SB, weights, same: bool):
    """``Σ_k SA[:, k] weights[k] SB[:, k]`` for all rows of SA and SB, and the self-terms,
    in column blocks so that the weighted copy stays small."""
    cross = np.zeros((SA.shape[0], SB.shape[0]))
    self_a, self_b = np.zeros(SA.shape[0]), np.zeros(SB.shape[0])
    block = max(1, _BLOCK_ELEMENTS // max(SA.shape[0], SB.shape[0]))
    for start in range(0, SA.shape[1], block):
        part = slice(start, start + block)
        weighted = SA[:, part] * weights[part]
        cross += weighted @ SB[:, part].T
        if not same:
            self_a += np.einsum("ij,ij->i", weighted, SA[:, part])
            self_b += np.einsum("ij,ij->i", SB[:, part] * weights[part], SB[:, part])
    if same:
        self_a = self_b = np.diag(cross).copy()
    return cross, self_a, self_b


def _u_hsic(A: _KernelTerms, B: _KernelTerms, rep: _Replicate, same: bool):
    """Weighted unbiased HSIC (times a common positive factor) for all pairs of layers.

    With weights ``c`` (``W = Σc``, ``P = Σc²``) and zero-diagonal kernels ``K̃, L̃``,
    the U-statistic of Song et al. (2012) over distinct *rows*, each 4-tuple weighted
    by the product of its rows' weights, is (times ``Σ_distinct c_i c_j c_q c_r``)

        Σ_ij s_ij K̃_ij L̃_ij + (cᵀa)(cᵀb) - 2 Σ_i (W c_i + c_i²) a_i b_i
            + 2 Σ_i c_i (a2_i b_i + a_i b2_i),
        s_ij = c_i c_j (W² - P - W (c_i + c_j) + 2 c_i c_j),

    with ``a = K̃c``, ``a2 = K̃c²`` (likewise ``b``, ``b2``).  With integer weights this is
    the U-statistic of the resample with pairs of copies left out like the diagonal; it
    is invariant to the centring of the features; with all weights 1 it is Song et al.'s
    Eq. 5 times ``n(n - 1)(n - 2)(n - 3)``.  Checked against the sum over 4-tuples in the
    tests.  For linear kernels every term is a weighted cross-product of the features
    (``Xᵀ diag(c) Y``, ``Xᵀ diag(c²) Y``), i.e. accumulable per chunk of rows.

    Returns ``(cross, self_a, self_b)``; a self-term at or below its rounding floor is 0.
    """
    c = rep.counts
    W = rep.total
    cross, m_a, m_b = _packed_products(A.S, B.S, rep.u_weights, same)
    linear = W * c + c * c
    cross += np.outer(A.total, B.total)
    cross -= 2.0 * ((A.a1 * linear) @ B.a1.T)
    cross += 2.0 * ((A.a2 * c) @ B.a1.T + (A.a1 * c) @ B.a2.T)

    def self_term(T: _KernelTerms, mpart):
        square = (T.a1 * T.a1) @ linear
        mixed = (T.a1 * T.a2) @ c
        value = mpart + T.total**2 - 2.0 * square + 4.0 * mixed
        # Edge case: the self-term is a non-negative combination of squared norms, 0 for
        # degenerate input (identical or mutually orthogonal rows) up to rounding noise.
        floor = 1e-10 * (np.abs(mpart) + T.total**2 + 2.0 * square + 4.0 * np.abs(mixed))
        return np.where(value <= floor, 0.0, value)

    self_a = self_term(A, m_a)
    self_b = self_a if same else self_term(B, m_b)
    if same:
        np.fill_diagonal(cross, self_a)
    return cross, self_a, self_b




class _Side:
    """Per-layer quantities of one set of layers, computed once per table."""

    def __init__(self, mats, families, packing, knn_k, bar) -> None:
        L, n = len(mats), mats[0].shape[0]
        self.centred = [None] * L
        self.gram = self.sq_dist = self.row_sq = None
        if families & {"linear", "rbf"}:
            m = packing.rows.size
            self.row_sq = np.empty((L, n))
            self.gram = np.empty((L, m)) if "linear" in families else None
            self.sq_dist = np.empty((L, m)) if "rbf" in families else None
        self.mats = mats
        self.knn = [None] * L
        self.row_norms = [None] * L

        def prepare(a: int) -> None:
            X = mats[a]
            Xc = self.centred[a] = _centre(X)
            if self.row_sq is not None:
                G = Xc @ Xc.T
                self.row_sq[a] = np.diag(G)
                if self.gram is not None:
                    np.take(G, packing.flat, out=self.gram[a])
                    self.gram[a] *= packing.sqrt_mult
                if self.sq_dist is not None:
                    np.take(_gram_to_sq_distances(G), packing.flat, out=self.sq_dist[a])
            if "knn" in families:
                self.knn[a] = _knn_of(X, knn_k)
            if "cosine" in families:
                self.row_norms[a] = np.linalg.norm(X, axis=1)

        _for_each(prepare, L, bar)

    def linear_terms(self, rep: _Replicate) -> _KernelTerms:
        """Linear kernels of the centred layers on the replicate's rows."""
        L = len(self.centred)
        S = self.gram if rep.pairs is None else np.empty((L, rep.pairs.size))
        a1, a2 = np.empty((L, rep.counts.size)), np.empty((L, rep.counts.size))
        diag = self.row_sq if rep.rows is None else self.row_sq[:, rep.rows]
        c, c2 = rep.counts, rep.counts**2

        def build(a: int) -> None:
            if rep.pairs is not None:
                np.take(self.gram[a], rep.pairs, out=S[a])
            Xc = rep.take(self.centred[a])
            a1[a] = Xc @ (Xc.T @ c) - diag[a] * c
            a2[a] = Xc @ (Xc.T @ c2) - diag[a] * c2

        _for_each(build, L)
        return _KernelTerms(S, a1, a2, diag, c)

    def rbf_terms(self, rep: _Replicate, threshold: float) -> tuple[_KernelTerms, np.ndarray]:
        """RBF kernels on the replicate's rows, with the bandwidth from the median over
        its pairs of distinct rows and one zero per resampled row, and which layers have
        median 0.  The point estimate (all rows) overwrites the stored distances, so it
        must come last."""
        L = len(self.centred)
        S = self.sq_dist if rep.pairs is None else np.empty((L, rep.pairs.size))
        a1, a2 = np.zeros((L, rep.counts.size)), np.zeros((L, rep.counts.size))
        diag = np.ones((L, rep.counts.size))
        undefined = np.zeros(L, dtype=bool)
        c, c2 = rep.counts, rep.counts**2

        def build(a: int) -> None:
            row = S[a]
            if rep.pairs is not None:
                np.take(self.sq_dist[a], rep.pairs, out=row)
            median = _weighted_median(row, rep.median_weights, rep.median_total)
            if median <= 0.0:  # same edge case as cka_rbf
                row[:] = 0.0
                diag[a] = 0.0
                undefined[a] = True
                return
            row *= -1.0 / (2.0 * threshold**2 * median)
            np.exp(row, out=row)
            a1[a] = blas.dspmv(c.size, 1.0, row, c) - c  # the diagonal exp(0) = 1 left out
            a2[a] = blas.dspmv(c.size, 1.0, row, c2) - c2
            row *= rep.sqrt_mult

        _for_each(build, L)
        return _KernelTerms(S, a1, a2, diag, c), undefined

    def subspaces(self, rep: _Replicate, n_components: int | None):
        """Leading singular triplets of each layer's resampled centred rows (None: no variance)."""
        out = [None] * len(self.centred)
        root_counts = np.sqrt(rep.counts)[:, None]

        def build(a: int) -> None:
            Xu = rep.take(self.centred[a])
            B = Xu - (rep.counts @ Xu) / rep.total
            B *= root_counts
            out[a] = _top_singular(B, n_components)

        _for_each(build, len(out))
        return out


def _knn_of(X: FloatMatrix, k: int):
    """kNN index sets of :func:`mutual_knn` (clamp 0.95), or None if the clamp zeroes X."""
    Z = _clamped_unit_rows(X, 0.95)
    return None if Z is None else _knn_indices(Z, k)


def _top_singular(B: FloatMatrix, n_components: int | None):
    """Top ``n_components`` (None: all) singular triplets ``(U, s, Vt)`` of ``B``.

    Fast path of the table: eigendecomposition of the smaller of ``BᵀB`` and ``BBᵀ``
    (like scikit-learn's ``covariance_eigh`` PCA solver), only the leading part.
    Accurate for directions with ``s`` above about ``sqrt(size * eps) * s_max``;
    smaller ones are dropped as numerically null.  None when ``B`` has no variance.
    """
    dual = B.shape[0] < B.shape[1]
    top = _top_eigen(B @ B.T if dual else B.T @ B, n_components)
    if top is None:
        return None
    s, V = top
    if dual:
        return V, s, (B.T @ V / s).T
    return B @ V / s, s, V.T


def _biased_hsic(SA, MA, SB, MB, n, same):
    """``n²·HSIC`` (biased) between every layer of A and of B, and the self-terms.

    The centred kernel is ``K - m1ᵀ - 1mᵀ + μ`` with ``m = K1/n`` and ``μ = 1ᵀm/n``, and
    ``Σ_ij K̃_ij L̃_ij = Σ_ij K_ij L_ij - 2n Σ_i m_i l_i + n² μ ν``; the first sum is
    ``SA SBᵀ`` for the packed kernels scaled by sqrt(2) off the diagonal.
    """
    cross = SA @ SA.T if same else SA @ SB.T
    cross -= 2.0 * n * (MA @ MB.T)
    mu_a = MA.sum(axis=1) / n
    mu_b = mu_a if same else MB.sum(axis=1) / n
    cross += n * n * np.outer(mu_a, mu_b)
    if same:
        diagonal = np.diag(cross).copy()
        return cross, diagonal, diagonal

    def self_terms(S, M, mu):
        return _row_sq_norms(S) - 2.0 * n * _row_sq_norms(M) + n * n * mu**2

    return cross, self_terms(SA, MA, mu_a), self_terms(SB, MB, mu_b)


class _TableComputation(_MetricResults):
    """Values and interval statistics of every requested metric for every layer pair (the
    arrays of :class:`~._results._MetricResults`), from n × n kernels and neighbour lists."""

    def __init__(self, mats_a, mats_b, labels_a, labels_b, metrics, *, n_boot, seed, codes,
                 knn_k, rbf_threshold, svcca_components, cross_model=False, bar=None) -> None:
        self._init_results(labels_a, labels_b, metrics, same=mats_b is None,
                           n=mats_a[0].shape[0], n_boot=n_boot, seed=seed, codes=codes)
        self.cross_model = cross_model
        self.families = {_FAMILY[m] for m in metrics}
        self.knn_k = knn_k
        self.rbf_threshold = rbf_threshold
        self.svcca_components = svcca_components
        self.bar = bar if bar is not None else tqdm(disable=True)
        self.packing = _Packing(self.n) if self.families & {"linear", "rbf"} else None
        self.side_a = _Side(mats_a, self.families, self.packing, knn_k, self.bar)
        self.side_b = (self.side_a if self.same
                       else _Side(mats_b, self.families, self.packing, knn_k, self.bar))

    @staticmethod
    def progress_steps(metrics, n_boot: int, n_layers: int) -> int:
        """How often construction and :meth:`run` advance the progress bar: once per layer
        of each side, per replicate and for the sample, once for the per-row metrics, once per
        half-sample."""
        metrics = set(metrics)
        return (n_layers + n_boot * bool(metrics - _HALF_SAMPLED) + 1
                + bool({_FAMILY[m] for m in metrics} & {"knn", "cosine"})
                + n_boot * bool(metrics & _HALF_SAMPLED))

    def run(self) -> None:
        # Bootstrap replicates first: the point estimate can then turn the stored squared
        # distances into its RBF kernels in place, without a copy.
        for r in [*range(len(self.weights)), None]:
            rep = _Replicate(self.n, None if r is None else self.weights[r], self.packing)
            if "linear" in self.families:
                self._linear(r, rep)
            if "rbf" in self.families:
                self._rbf(r, rep)
            if "subspace" in self.families and r is None:
                self._subspace(r, rep)
            rep.release()
            self.bar.update(1)
        if self.families & {"knn", "cosine"}:
            with _single_threaded_blas():
                self._per_row()
            self.bar.update(1)
        for h, rows in enumerate(self.halves.rows):
            if "subspace" in self.families:
                weights = np.zeros(self.n)
                weights[rows] = 1.0
                self._subspace(h, _Replicate(self.n, weights, None))
            if "mutual_knn" in self.metrics:
                self._knn_half(h, rows)
            self.bar.update(1)
        self._mirror()

    def _pairs(self):
        """Layer pairs to compute: unordered (a <= b) for one set of layers, all for two."""
        for a in range(len(self.labels_a)):
            for b in range(a if self.same else 0, len(self.labels_b)):
                yield a, b

    def _cka(self, r, rep: _Replicate, A: _KernelTerms, B: _KernelTerms, biased: str,
             unbiased: str | None, reason: str) -> None:
        """CKA from the unbiased HSIC (the interval statistic; the value of ``unbiased``)
        and, for the point estimate, from the biased HSIC (the value of ``biased``)."""
        cross, self_a, self_b = _u_hsic(A, B, rep, self.same)
        u = _cka_ratio(cross, self_a, self_b)
        if r is not None:
            self._store(r, biased, u)
            if unbiased:
                self._store(r, unbiased, u)
            return
        if unbiased:
            self._store(r, unbiased, u)
            self._note(r, unbiased, self_a <= 0, self_b <= 0, "unbiased self-HSIC <= 0")
        if biased in self.values:
            # Point estimate from the biased HSIC: Kornblith et al.'s value, same kernels.
            M_a = (A.a1 + A.diag) / self.n
            M_b = M_a if self.same else (B.a1 + B.diag) / self.n
            cross, self_a, self_b = _biased_hsic(A.S, M_a, B.S, M_b, self.n, self.same)
            self._store(r, biased, _cka_ratio(cross, self_a, self_b), centre=u)
            self._note(r, biased, self_a <= 0, self_b <= 0, reason)

    def _linear(self, r, rep: _Replicate) -> None:
        A = self.side_a.linear_terms(rep)
        B = A if self.same else self.side_b.linear_terms(rep)
        unbiased = "cka_debiased" if "cka_debiased" in self.values else None
        self._cka(r, rep, A, B, "cka_linear", unbiased, "all rows are identical")

    def _rbf(self, r, rep: _Replicate) -> None:
        t = self.rbf_threshold
        A, bad_a = self.side_a.rbf_terms(rep, t)
        B, bad_b = (A, bad_a) if self.same else self.side_b.rbf_terms(rep, t)
        self._cka(r, rep, A, B, "cka_rbf", None, "median squared distance 0, RBF bandwidth 0")

    def _subspace(self, r, rep: _Replicate) -> None:
        k = self.svcca_components
        bases_a = self.side_a.subspaces(rep, k)
        bases_b = bases_a if self.same else self.side_b.subspaces(rep, k)
        shape = (len(self.labels_a), len(self.labels_b))
        out = {m: np.full(shape, np.nan) for m in ("svcca", "pwcca") if m in self.values}
        with _single_threaded_blas():
            self._subspace_pairs(out, bases_a, bases_b)
        for metric, V in out.items():
            self._store(r, metric, V)
            self._note(r, metric, [x is None for x in bases_a], [x is None for x in bases_b],
                       "all rows are identical")

    def _subspace_pairs(self, out, bases_a, bases_b) -> None:
        k = self.svcca_components
        for a, b in self._pairs():
            if bases_a[a] is None or bases_b[b] is None:
                continue
            (Ua, sa, Vta), (Ub, sb, Vtb) = bases_a[a], bases_b[b]
            rho, A, B = _canonical(Ua, Ub)
            if "svcca" in out:
                # With svcca_components=None SVCCA keeps 99% of the variance (svcca's
                # default) while PWCCA uses every direction (pwcca's default).
                ka, kb = _n_kept(sa, k, 0.99), _n_kept(sb, k, 0.99)
                if (ka, kb) != (sa.size, sb.size):
                    rho_sv = _canonical(Ua[:, :ka], Ub[:, :kb])[0]
                else:
                    rho_sv = rho
                out["svcca"][a, b] = rho_sv.mean()
            if "pwcca" in out:
                out["pwcca"][a, b] = _projection_weights(A, sa, Vta) @ rho
                if self.same and a != b:  # asymmetric: the reverse order weights by b
                    out["pwcca"][b, a] = _projection_weights(B, sb, Vtb) @ rho

    def _per_row(self) -> None:
        """Cosine and mutual k-NN point estimates; cosine's replicates are weighted means
        of its per-row scores."""
        W = np.vstack(self.weights) if self.weights else np.empty((0, self.n))
        W /= np.maximum(W.sum(axis=1, keepdims=True), 1.0)
        A, B = self.side_a, self.side_b
        if "cosine" in self.values and self.cross_model:
            # Edge case: two models' coordinates are unrelated (each has its own basis), so
            # the angle between their vectors means nothing.
            self.problems["cosine"].add("the two models have unrelated coordinates (bases)")
        for a, b in self._pairs():
            if "cosine" in self.values and not self.cross_model:
                Xa, Xb = A.mats[a], B.mats[b]
                if Xa.shape[1] == Xb.shape[1]:
                    scores = _matched_cosines(Xa, Xb, A.row_norms[a], B.row_norms[b])
                    self.values["cosine"][a, b] = self.centres["cosine"][a, b] = scores.mean()
                    self.replicates["cosine"][:, a, b] = W @ scores
                else:  # same edge case as cosine_matched
                    self.problems["cosine"].add(
                        f"widths differ ({self.labels_a[a]}: {Xa.shape[1]}, "
                        f"{self.labels_b[b]}: {Xb.shape[1]})"
                    )
            if "mutual_knn" in self.values and A.knn[a] is not None and B.knn[b] is not None:
                overlap = _knn_overlap(A.knn[a], B.knn[b]).mean() / self.knn_k
                self.values["mutual_knn"][a, b] = self.centres["mutual_knn"][a, b] = overlap
        if "mutual_knn" in self.values:
            self._note(None, "mutual_knn", [x is None for x in A.knn],
                       [x is None for x in B.knn],
                       "clamping at the 0.95 quantile of |x| zeroes the layer")

    def _knn_half(self, h: int, rows: np.ndarray) -> None:
        """Mutual k-NN on half-sample ``h``, with the neighbourhoods of its rows."""
        k = self.knn_k
        if rows.size <= k:  # too few rows for k neighbours: no value, no interval
            return
        knn_a = self._half_knn(self.side_a, rows)
        knn_b = knn_a if self.same else self._half_knn(self.side_b, rows)
        for a, b in self._pairs():
            if knn_a[a] is not None and knn_b[b] is not None:
                self.replicates["mutual_knn"][h, a, b] = _knn_overlap(knn_a[a], knn_b[b]).mean() / k

    def _half_knn(self, side: _Side, rows: np.ndarray) -> list:
        """kNN index sets of every layer of ``side`` on the given rows."""
        found = [None] * len(side.mats)

        def build(a: int) -> None:
            found[a] = _knn_of(side.mats[a][rows], self.knn_k)

        _for_each(build, len(found))
        return found


def _check_layers(layers: object, name: str) -> tuple[list[str], list[FloatMatrix]]:
    if not isinstance(layers, Mapping) or not layers:
        raise ValueError(f"{name} must be a non-empty dict of layer name -> 2-D array")
    names, mats = [], []
    for key, value in layers.items():
        if not isinstance(key, str):
            raise ValueError(f"{name} keys must be layer names (str), got {key!r}")
        names.append(key)
        if isinstance(value, StoredRows):  # read chunk by chunk, never whole
            mats.append(value)
            continue
        # float32 stays float32: the exact metrics read float64 chunks of rows
        mats.append(check_matrix(value, f"{name}[{key!r}]", min_rows=0))
        release(mats[-1])  # the check read every row; a mapped layer's pages go back
    return names, mats


def similarity_table(
    layers_a: Mapping[str, ArrayLike],
    layers_b: Mapping[str, ArrayLike] | None = None,
    *,
    metrics: Sequence[str],
    model_a: str,
    model_b: str,
    span: str,
    pooling: str,
    n_boot: int,
    seed: int = 0,
    knn_k: int,
    rbf_threshold: float,
    svcca_components: int | None,
    groups: ArrayLike | None = None,
    max_rows: int | None,
    sample_from: Mapping[str, ArrayLike] | None = None,
    sample_groups: ArrayLike | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Every requested metric for every pair of layers, as a long table.

    Parameters
    ----------
    layers_a : dict of str -> array-like of shape (n_samples, n_features_i)
        Layers of ``model_a`` by name (e.g. ``"cnn.0"``, ``"proj"``, ``"layer.3"``),
        rows matched across layers (and with ``layers_b``).
    layers_b : dict of str -> array-like, optional
        Layers of ``model_b``.  None compares ``layers_a`` with itself: each unordered
        pair is computed once and written in both orders (except PWCCA, which is
        asymmetric and computed per order).
    metrics : list of str
        Names from :data:`METRICS`.
    model_a, model_b, span, pooling : str
        Copied into the identifying columns.  When ``layers_b`` is given and
        ``model_b != model_a``, ``cosine`` is nan: the two models' coordinates are
        unrelated.
    n_boot : int, default=0
        Bootstrap replicates for the 95% intervals of the population values (see
        :func:`bootstrap_ci`); 0 leaves ``ci_low`` and ``ci_high`` nan.  All pairs and
        metrics share the same draws, so each interval equals
        ``bootstrap_ci(metric, X, Y, n_boot=n_boot, seed=seed, groups=groups)`` with the
        metric's options.
    seed : int, default=0
    knn_k : int, default=10
        ``k`` of :func:`mutual_knn` (clamp quantile 0.95).
    rbf_threshold : float, default=0.5
        ``threshold`` of :func:`cka_rbf`.
    svcca_components : int or None, default=20
        ``n_components`` of :func:`svcca` and, to keep PWCCA at O(k³) per pair, also of
        :func:`pwcca`.  None: SVCCA keeps 99% of the variance and PWCCA every direction.
        PWCCA weights by ``layer_a``'s neurons (``pwcca(X_a, X_b)``).
    groups : array-like of shape (n_samples,), optional
        Cluster of each row (e.g. its utterance), resampled whole by the bootstrap.
    max_rows : int, optional
        At most this many rows for the metrics that need n x n matrices (``cka_rbf``,
        ``mutual_knn``): a seeded sample stratified by ``groups``, the same rows for
        every layer (and both models).  None: all rows.  The other metrics always use
        every row.  ``n_rows`` says the rows behind each value.
    sample_from : dict of str -> array-like, optional
        Same layers as ``layers_a`` (one model only) with other rows, from which
        ``cka_rbf`` and ``mutual_knn`` draw their ``max_rows`` instead: the frame span
        streams every frame of the feature store (:class:`~layerwise.io.store.StoredRows`)
        for the exact metrics and takes the n x n ones from the pooled frame sample.
    sample_groups : array-like, optional
        Cluster of each row of ``sample_from`` (its ``groups``).
    progress : bool, default=True
        Show a tqdm progress bar on stderr.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TABLE_COLUMNS` = ``model_a, layer_a, model_b, layer_b, span,
        pooling, metric, value, ci_low, ci_high, n_rows``, one row per metric and
        ordered layer pair.  Undefined values are nan, with one
        :class:`UndefinedSimilarityWarning` per metric saying why.

    Notes
    -----
    Values equal the metric functions' (up to rounding).  ``cka_linear``,
    ``cka_debiased``, ``cosine``, ``svcca`` and ``pwcca`` use every row and never an
    n x n matrix (:mod:`layerwise.analyses.similarity.gram`): d x d cross-products of the layers
    accumulated over chunks of rows (float32 layers are read as float64 chunks, not
    copied), bootstrap replicates as the same sums weighted by how often each row's
    cluster was drawn; time grows linearly in ``n`` and memory does not depend on it
    beyond the inputs.  ``cka_rbf`` and ``mutual_knn`` run on the rows of ``max_rows``:
    per layer its packed n x n squared distances and kNN index sets, the RBF kernels of
    all layer pairs from one product of stacked packed kernels, replicates reweighting
    the distinct drawn rows; memory about ``L (4 n² + 16 n p)`` bytes for ``n`` sampled
    rows, plus one packed triangle per layer per replicate.  Per-layer work of the
    sampled metrics runs on one thread per available CPU.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> layers = {f"layer.{i}": rng.standard_normal((100, 8)) for i in range(3)}
    >>> table = similarity_table(layers, metrics=["cka_linear"], model_a="m", model_b="m",
    ...                          span="utterance", pooling="mean", n_boot=0, knn_k=10,
    ...                          rbf_threshold=0.5, svcca_components=20, max_rows=None,
    ...                          progress=False)
    >>> table.shape
    (9, 11)
    >>> round(float(table.query("layer_a == layer_b").value.min()), 12)
    1.0
    """
    if isinstance(metrics, str) or not isinstance(metrics, Sequence) or not metrics:
        raise ValueError(f"metrics must be a non-empty list of metric names, got {metrics!r}")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {sorted(METRICS)}")
    if len(set(metrics)) != len(metrics):
        raise ValueError(f"metrics contains duplicates: {list(metrics)}")
    for label, text in (("model_a", model_a), ("model_b", model_b), ("span", span),
                        ("pooling", pooling)):
        if not isinstance(text, str):
            raise ValueError(f"{label} must be a str, got {text!r}")
    names_a, mats_a = _check_layers(layers_a, "layers_a")
    sample_mats = None
    if sample_from is not None:
        if layers_b is not None:
            raise ValueError("sample_from is for one model's layers (layers_b None)")
        names_s, sample_mats = _check_layers(sample_from, "sample_from")
        if names_s != names_a:
            raise ValueError(f"sample_from must hold the layers of layers_a ({names_a}), "
                             f"got {names_s}")
    names_b, mats_b = (names_a, None) if layers_b is None else _check_layers(layers_b, "layers_b")
    n = mats_a[0].shape[0]
    for name, mats, names in (("layers_a", mats_a, names_a), ("layers_b", mats_b or [], names_b)):
        for key, M in zip(names, mats, strict=False):
            if M.shape[0] != n:
                raise ValueError(
                    f"{name}[{key!r}] has {M.shape[0]} rows but {names_a[0]!r} of layers_a "
                    f"has {n}; rows must be matched samples"
                )
    min_rows = 4 if "cka_debiased" in metrics else 2
    if n < min_rows:
        raise ValueError(f"the layers need at least {min_rows} rows, got {n}")
    n_boot = check_int(n_boot, "n_boot", low=0)
    seed = check_int(seed, "seed", low=0)
    rbf_threshold = check_real(rbf_threshold, "rbf_threshold", low=0.0, low_open=True)
    if svcca_components is not None:
        svcca_components = check_int(svcca_components, "svcca_components", low=1)
    codes = _group_codes(groups, n)

    if max_rows is not None:
        max_rows = check_int(max_rows, "max_rows", low=2)

    cross_model = layers_b is not None and model_a != model_b
    labels_a = [f"{model_a}:{name}" for name in names_a]
    labels_b = [f"{model_b}:{name}" for name in names_b]
    exact = [m for m in metrics if m in EXACT_METRICS]
    sampled = [m for m in metrics if m not in EXACT_METRICS]
    n_source = n if sample_mats is None else sample_mats[0].shape[0]
    source_groups = groups if sample_mats is None else sample_groups
    sample = _sample_rows(n_source, max_rows, source_groups, seed) if sampled else None
    n_sample = n_source if sample is None else sample.size
    if "mutual_knn" in sampled:
        knn_k = check_int(knn_k, "knn_k", low=1, high=n_sample - 1)
    steps = (_GramComputation.progress_steps(exact, n_boot) if exact else 0) + (
        _TableComputation.progress_steps(sampled, n_boot, len(mats_a) + len(mats_b or []))
        if sampled else 0)
    computations = []
    with tqdm(total=steps, desc=f"similarity {model_a} vs {model_b}", file=sys.stderr,
              disable=not progress, leave=False) as bar:
        if exact:
            computation = _GramComputation(
                mats_a, mats_b, labels_a, labels_b, exact, n_boot=n_boot, seed=seed,
                codes=codes, svcca_components=svcca_components, cross_model=cross_model,
                bar=bar,
            )
            computation.run()
            computations.append((computation, n))
        if sampled:
            def take(mats):
                if mats is None:
                    return None
                rows = slice(None) if sample is None else sample
                copies = []
                for M in mats:
                    copies.append(np.asarray(M[rows], dtype=np.float64))
                    release(M)  # copied: a mapped layer's pages go back
                return copies

            sub_groups = (source_groups if source_groups is None or sample is None
                          else np.asarray(source_groups)[sample])
            source = mats_a if sample_mats is None else sample_mats
            computation = _TableComputation(
                take(source), take(mats_b), labels_a, labels_b, sampled, n_boot=n_boot,
                seed=seed, codes=_group_codes(sub_groups, n_sample),
                knn_k=knn_k, rbf_threshold=rbf_threshold, svcca_components=svcca_components,
                cross_model=cross_model, bar=bar,
            )
            computation.run()
            computations.append((computation, n_sample))
    owner = {m: c for c, _ in computations for m in c.metrics}
    rows_of = {m: k for c, k in computations for m in c.metrics}

    La, Lb = len(names_a), len(names_b)
    frames = []
    for metric in metrics:
        computation = owner[metric]
        V = computation.values[metric]
        low, high = computation.interval(metric)
        undefined = int(np.isnan(V).sum())
        if undefined:
            reasons = "; ".join(sorted(computation.problems[metric])) or "see its docstring"
            warnings.warn(
                f"{metric} is undefined (nan) for {undefined} of {La * Lb} layer pairs: "
                f"{reasons}",
                UndefinedSimilarityWarning,
                stacklevel=2,
            )
        frames.append(
            pd.DataFrame(
                {
                    "model_a": model_a,
                    "layer_a": np.repeat(names_a, Lb),
                    "model_b": model_b,
                    "layer_b": np.tile(names_b, La),
                    "span": span,
                    "pooling": pooling,
                    "metric": metric,
                    "value": V.ravel(),
                    "ci_low": low.ravel(),
                    "ci_high": high.ravel(),
                    "n_rows": np.full(La * Lb, rows_of[metric], dtype=np.int64),
                },
                columns=list(TABLE_COLUMNS),
            )
        )
    return pd.concat(frames, ignore_index=True)
