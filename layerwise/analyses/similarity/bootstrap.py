"""Confidence intervals of one similarity: :func:`bootstrap_ci`."""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

from layerwise.analyses.similarity._intervals import (
    _basic_interval,
    _bootstrap_weights,
    _group_codes,
)
from layerwise.analyses.similarity._numerics import UndefinedSimilarityWarning
from layerwise.analyses.similarity._registry import METRICS
from layerwise.analyses.similarity.table import _TableComputation
from layerwise.analyses.validation import check_int, check_pair, check_real

# Keyword options of each metric that the table's computation supports, as table options.
_TABLE_OPTIONS = {
    "cka_rbf": {"threshold": "rbf_threshold"},
    "mutual_knn": {"k": "knn_k"},
    "svcca": {"n_components": "svcca_components"},
    "pwcca": {"n_components": "svcca_components"},
}
# Options the table fixes: another value cannot be bootstrapped as the table does.
_FIXED_OPTIONS = {
    "mutual_knn": {"clamp_quantile": 0.95},
    "svcca": {"variance": 0.99},
    "pwcca": {"epsilon": 0.0},
}


def _resolve_metric(metric) -> tuple[str, dict] | None:
    """``(name, table options)`` when ``metric`` is a metric of :data:`METRICS` (by name,
    function or ``functools.partial`` with keyword options), else None."""
    if isinstance(metric, str):
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; known: {sorted(METRICS)}")
        func, options = METRICS[metric], {}
    elif isinstance(metric, functools.partial) and not metric.args:
        func, options = metric.func, dict(metric.keywords)
    else:
        func, options = metric, {}
    name = next((key for key, f in METRICS.items() if f is func), None)
    if name is None:
        return None
    defaults = {p.name: p.default for p in inspect.signature(func).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY}
    options = {**defaults, **options}
    for option, value in options.items():
        fixed = _FIXED_OPTIONS.get(name, {})
        if option in fixed and value != fixed[option]:
            raise ValueError(
                f"bootstrap_ci of {name} supports {option}={fixed[option]} only, got {value!r}"
            )
    table = _TABLE_OPTIONS.get(name, {})
    return name, {table[o]: v for o, v in options.items() if o in table}


def bootstrap_ci(
    metric: str | Callable[[np.ndarray, np.ndarray], float],
    X: ArrayLike,
    Y: ArrayLike,
    *,
    n_boot: int,
    seed: int,
    level: float = 0.95,
    groups: ArrayLike | None = None,
) -> tuple[float, float]:
    """Confidence interval of the population value of a similarity between X and Y.

    Resamples clusters of rows (``groups``, e.g. the utterance of each word or frame)
    or, without groups, rows, with replacement; beyond ``MAX_UNITS`` (64) of them, blocks
    of consecutive clusters (or rows) with about equal rows.  A replicate is the original
    rows weighted by how often their unit was drawn.  Per metric:

    * ``cka_linear``, ``cka_debiased``, ``cka_rbf``: the replicates are CKA from the
      unbiased HSIC with that kernel (for RBF, the median bandwidth of the replicate),
      as a U-statistic that leaves out pairs of copies of a row just as it leaves out
      the diagonal; percentile interval.  The biased HSIC is off by many standard errors
      at realistic ``n`` (RBF), too much to correct; the unbiased one needs no
      correction, and the percentile interval keeps the skew near 1 the right way
      round.  Linear and debiased CKA estimate the same population value and get the
      same interval (but for clipping at 0).
    * ``cosine`` (a mean of per-row scores): basic interval ``(2θ̂ - q_hi, 2θ̂ - q_lo)``.
    * ``svcca``, ``pwcca``: their O(p/n) bias is large and a resample underestimates it
      (its canonical correlations are already inflated), so they are recomputed on
      ``n_boot`` half-samples without replacement (half the clusters, whole): a
      half-sample is a true sample of half the size, whose mean shows the bias at
      ``n/2``; the interval is ``θ̂ - b ± z sqrt(v)`` with the bias ``b`` extrapolated
      to ``n`` (``b = mean(θ_half) - θ̂`` for halves of ``n/2`` rows) and the delete-d
      jackknife variance ``v`` of the half-sample values.
    * ``mutual_knn``: its value depends on ``n`` and its per-row overlaps are dependent;
      it is half-sampled likewise, without the bias term (the estimand is its mean at
      ``n`` rows): ``θ̂ ± z sqrt(v)``.
    * any other callable: basic interval of ``metric(X[draw], Y[draw])``; valid for
      plug-in statistics (smooth functions of the empirical distribution), not for
      U-statistics, on which copies of a row act as dependent samples.

    Intervals of the package's metrics are clipped to the range of the population value,
    ``[0, 1]`` (``[-1, 1]`` for cosine, and for debiased CKA, whose estimate may be
    negative).

    Parameters
    ----------
    metric : str or callable ``(X, Y) -> float``
        A name in :data:`METRICS`, its function, or a ``functools.partial`` of it with
        keyword options (e.g. ``partial(cka_rbf, threshold=0.7)``); or any callable.
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    n_boot : int
        Number of replicates (or half-samples), ``>= 1``.  Percentile and basic
        intervals end at tail quantiles: use a few hundred for a 95% interval.
    seed : int
        Seed of the draws; equal seeds give equal intervals.
    level : float, default=0.95
        Nominal coverage, in ``(0, 1)``.
    groups : array-like of shape (n_samples,), optional
        Cluster of each row; clusters are resampled whole, so that dependent rows (the
        words or frames of one utterance) are not counted as independent samples.

    Returns
    -------
    (low, high) : tuple of float
        ``(nan, nan)`` when every replicate is undefined.

    Notes
    -----
    The interval is for the population value, not for the estimate: a biased estimate
    may lie outside it.  RBF CKA is biased upwards by several standard errors at a few
    hundred rows, and linear CKA of unrelated layers is positive by bias alone, so their
    intervals can lie below their values.  SVCCA and PWCCA of unrelated layers are biased
    by far more
    than the half-sample correction removes (the bias is not O(1/n) there): their
    intervals then exclude 0.  Coverage was measured by simulation (docs/metrics.md).
    Under independence the interval of the CKAs is conservative: the bootstrap of a
    degenerate U-statistic overstates its spread (Arcones and Giné, 1992).

    References
    ----------
    Davison, A. C. and Hinkley, D. V. (1997). Bootstrap Methods and their Application.
    Cambridge University Press, sections 3.8 (clustered data) and 5.2 (basic interval).

    Field, C. A. and Welsh, A. H. (2007). Bootstrapping clustered data. Journal of the
    Royal Statistical Society B 69(3), 369-390.

    Arcones, M. A. and Giné, E. (1992). On the bootstrap of U and V statistics. Annals
    of Statistics 20(2), 655-674.

    Shao, J. and Wu, C. F. J. (1989). A general theory for jackknife variance
    estimation. Annals of Statistics 17(3), 1176-1197.

    Politis, D. N., Romano, J. P. and Wolf, M. (1999). Subsampling. Springer.

    Examples
    --------
    >>> import numpy as np
    >>> from layerwise.analyses.similarity import cka_debiased
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 5))
    >>> Y = X + rng.standard_normal((200, 5))
    >>> low, high = bootstrap_ci("cka_debiased", X, Y, n_boot=50, seed=0)
    >>> bool(low < cka_debiased(X, Y) < high)
    True
    >>> utterance = np.repeat(np.arange(40), 5)  # 5 words per utterance
    >>> bootstrap_ci("cka_linear", X, Y, n_boot=50, seed=0, groups=utterance) != (low, high)
    True
    """
    resolved = _resolve_metric(metric)
    if resolved is None and not callable(metric):
        raise ValueError(f"metric must be a metric name or callable, got {metric!r}")
    min_rows = 4 if resolved is not None and resolved[0] == "cka_debiased" else 2
    X, Y = check_pair(X, Y, min_samples=min_rows)
    n_boot = check_int(n_boot, "n_boot", low=1)
    seed = check_int(seed, "seed", low=0)
    level = check_real(level, "level", low=0.0, high=1.0, low_open=True, high_open=True)
    codes = _group_codes(groups, X.shape[0])
    if resolved is not None:
        name, options = resolved
        if name == "mutual_knn":
            check_int(options["knn_k"], "k", low=1, high=X.shape[0] - 1)
        computation = _TableComputation(
            [X], [Y], ["X"], ["Y"], [name], n_boot=n_boot, seed=seed, codes=codes,
            **{"knn_k": 10, "rbf_threshold": 0.5, "svcca_components": 20, **options},
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedSimilarityWarning)
            computation.run()
        low, high = computation.interval(name, level)
        return float(low[0, 0]), float(high[0, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedSimilarityWarning)
        value = metric(X, Y)
        rows = np.arange(X.shape[0])
        values = []
        for weights in _bootstrap_weights(X.shape[0], codes, n_boot, seed):
            draw = np.repeat(rows, weights.astype(np.intp))
            values.append(metric(X[draw], Y[draw]))
    low, high = _basic_interval(value, np.array(values, dtype=np.float64), level)
    return float(low), float(high)


