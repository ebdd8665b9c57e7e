"""Registry of metrics and the columns of the similarity table."""

from __future__ import annotations

from collections.abc import Callable

from layerwise.analyses.similarity.cca import pwcca, svcca
from layerwise.analyses.similarity.cka import cka_debiased, cka_linear, cka_rbf
from layerwise.analyses.similarity.neighbours import cosine_matched, mutual_knn

# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------

METRICS: dict[str, Callable[..., float]] = {
    "cka_linear": cka_linear,
    "cka_rbf": cka_rbf,
    "cka_debiased": cka_debiased,
    "cosine": cosine_matched,
    "mutual_knn": mutual_knn,
    "svcca": svcca,
    "pwcca": pwcca,
}
"""Metric name -> function ``(X, Y, **options) -> float``."""

SYMMETRIC_METRICS = frozenset(METRICS) - {"pwcca"}
"""Metrics with ``f(X, Y) == f(Y, X)`` (PWCCA weights by its first argument)."""

TABLE_COLUMNS = (
    "model_a",
    "layer_a",
    "model_b",
    "layer_b",
    "span",
    "pooling",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "n_rows",
)
"""Columns of :func:`similarity_table`, in order."""


