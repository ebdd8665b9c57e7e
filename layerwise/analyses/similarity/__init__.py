"""Similarity between two layer representations with matched rows.

Every metric compares ``X`` of shape ``(n_samples, n_features_x)`` with ``Y`` of
shape ``(n_samples, n_features_y)`` where row ``i`` of both matrices describes the
same frame or utterance, and returns a plain ``float``.  Inputs are validated once,
at the public boundary (2-D, same number of rows, finite values, else ``ValueError``
naming the argument), converted to float64, and never modified.  When a value is
undefined for the given input (e.g. a layer with no variance) the metric returns
``nan`` and emits an :class:`UndefinedSimilarityWarning` that says why; it never
raises for that.

Contents
--------
CKA family
    :func:`cka_linear`, :func:`cka_rbf`, :func:`cka_debiased`
Row-wise and neighbourhood
    :func:`cosine_matched`, :func:`mutual_knn`
CCA family
    :func:`cca_correlations`, :func:`mean_squared_cca`, :func:`svcca`, :func:`pwcca`,
    :func:`cca_directions`, :func:`cca_directions_path` (on shared :class:`PrincipalBasis`)
    and :func:`projected_pwcca` (held-out PWCCA; :class:`HeldOutRows` scores many fits)
Streaming (frame-level data that does not fit in memory)
    :class:`StreamingGram`, :class:`LinearCKAAccumulator`
Uncertainty and tables
    :func:`bootstrap_ci`, :data:`METRICS`, :func:`similarity_table`

Modules
-------
``cka``, ``neighbours`` (cosine, mutual k-NN), ``cca``, ``streaming``, ``bootstrap``,
``table``; private: ``_numerics`` (shared numerics, the undefined-value warning), ``_intervals``
(resampling weights, half-samples, interval formulas), ``_registry`` (:data:`METRICS`),
``_parallel`` (per-layer threads).  Every public name is importable from
``layerwise.analyses.similarity``.
"""

from layerwise.analyses.similarity import (  # noqa: F401  (submodules, for tests and doctests)
    _intervals,
    bootstrap,
    cca,
    cka,
    neighbours,
    streaming,
    table,
)
from layerwise.analyses.similarity._numerics import UndefinedSimilarityWarning
from layerwise.analyses.similarity._registry import METRICS, SYMMETRIC_METRICS, TABLE_COLUMNS
from layerwise.analyses.similarity.bootstrap import bootstrap_ci
from layerwise.analyses.similarity.cca import (
    CCADirections,
    HeldOutRows,
    PrincipalBasis,
    cca_correlations,
    cca_directions,
    cca_directions_path,
    mean_squared_cca,
    projected_pwcca,
    pwcca,
    svcca,
)
from layerwise.analyses.similarity.cka import cka_debiased, cka_linear, cka_rbf
from layerwise.analyses.similarity.neighbours import cosine_matched, mutual_knn
from layerwise.analyses.similarity.streaming import LinearCKAAccumulator, StreamingGram
from layerwise.analyses.similarity.table import similarity_table

# Private names the tests reach through the package.
_group_codes = _intervals._group_codes
_HalfSamples = _intervals._HalfSamples
_resampling_units = _intervals._resampling_units
MAX_UNITS = _intervals.MAX_UNITS
_TableComputation = table._TableComputation

__all__ = [
    "METRICS",
    "SYMMETRIC_METRICS",
    "TABLE_COLUMNS",
    "CCADirections",
    "HeldOutRows",
    "PrincipalBasis",
    "LinearCKAAccumulator",
    "StreamingGram",
    "UndefinedSimilarityWarning",
    "bootstrap_ci",
    "cca_correlations",
    "cca_directions",
    "cca_directions_path",
    "cka_debiased",
    "cka_linear",
    "cka_rbf",
    "cosine_matched",
    "mean_squared_cca",
    "mutual_knn",
    "projected_pwcca",
    "pwcca",
    "similarity_table",
    "svcca",
]

