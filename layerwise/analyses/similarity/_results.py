"""What both similarity engines fill in: per-metric values, replicates, intervals, problems.

The n × n engine (:class:`~.table._TableComputation`) and the cross-product engine
(:class:`~.gram._GramComputation`) compute different metrics the same way round: replicates
drawn with the same weights or half-samples, stored in the same arrays, turned into intervals
by the same rule. This base class holds that bookkeeping once.
"""

from __future__ import annotations

import numpy as np

from layerwise.analyses.similarity._intervals import (
    _BOUNDS,
    _HALF_SAMPLED,
    _UNBIASED_REPLICATES,
    _basic_interval,
    _bootstrap_counts,
    _HalfSamples,
    _percentile_interval,
    _resampling_units,
)
from layerwise.analyses.similarity._registry import SYMMETRIC_METRICS


class _MetricResults:
    """``values[metric]`` (L_a, L_b) are the point estimates; ``centres[metric]`` the
    statistic whose replicates are drawn (for the CKAs, CKA from the unbiased HSIC; else
    the value); ``replicates[metric]`` (n_boot, L_a, L_b) its bootstrap replicates, or
    for the metrics of :data:`_HALF_SAMPLED` its half-sample values.
    ``problems[metric]`` collects why point estimates are nan.  ``units`` is the
    resampling unit of each row, ``counts`` (n_boot, K) how often each unit was drawn in
    each replicate, and ``weights[r] = counts[r, units]`` the row weights.
    """

    def _init_results(self, labels_a, labels_b, metrics, *, same: bool, n: int, n_boot: int,
                      seed: int, codes) -> None:
        self.same = same
        self.labels_a, self.labels_b = labels_a, labels_b
        self.metrics = metrics
        self.n = n
        bootstrapped = set(metrics) - _HALF_SAMPLED
        self.units = _resampling_units(codes, n)
        self.counts = _bootstrap_counts(self.units, n_boot if bootstrapped else 0, seed)
        self.weights = list(self.counts[:, self.units])
        self.halves = _HalfSamples(n, codes, n_boot if set(metrics) & _HALF_SAMPLED else 0, seed)
        shape = (len(labels_a), len(labels_b))
        self.values = {m: np.full(shape, np.nan) for m in metrics}
        self.centres = {m: np.full(shape, np.nan) for m in metrics}
        self.replicates = {m: np.full((n_boot, *shape), np.nan) for m in metrics}
        self.problems: dict[str, set[str]] = {m: set() for m in metrics}

    def _mirror(self) -> None:
        """One set of layers: each unordered pair was computed once; fill both orders."""
        if self.same:
            upper = np.triu_indices(len(self.labels_a), 1)
            for metric in SYMMETRIC_METRICS & set(self.metrics):
                for V in (self.values[metric], self.centres[metric], *self.replicates[metric]):
                    V.T[upper] = V[upper]

    def interval(self, metric: str, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """``(low, high)`` of shape (L_a, L_b); nan without replicates (see bootstrap_ci)."""
        if not len(self.replicates[metric]):
            nan = np.full(self.values[metric].shape, np.nan)
            return nan, nan.copy()
        if metric in _HALF_SAMPLED:
            # mutual k-NN estimates its mean at n rows: no bias to remove
            return self.halves.interval(self.values[metric], self.replicates[metric], level,
                                        bias=metric != "mutual_knn", bounds=_BOUNDS[metric])
        if metric in _UNBIASED_REPLICATES:
            return _percentile_interval(self.replicates[metric], level, _BOUNDS[metric])
        return _basic_interval(self.centres[metric], self.replicates[metric], level,
                               _BOUNDS[metric])

    def _store(self, r, metric: str, V: np.ndarray, centre: np.ndarray | None = None) -> None:
        """Write a replicate (``r``) or the point estimate (``r`` None) of ``metric``."""
        if metric not in self.values:
            return
        if r is not None:
            self.replicates[metric][r] = V
            return
        self.values[metric] = V
        self.centres[metric] = V if centre is None else centre

    def _note(self, r, metric: str, bad_a, bad_b, reason: str) -> None:
        """Record, for the point estimate, which layers make ``metric`` undefined."""
        bad = [self.labels_a[i] for i in np.flatnonzero(bad_a)]
        if not self.same:
            bad += [self.labels_b[i] for i in np.flatnonzero(bad_b)]
        if r is None and bad and metric in self.problems:
            self.problems[metric].add(f"{reason} ({', '.join(bad)})")
