"""CKA family: linear, RBF and debiased (unbiased HSIC) CKA."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from layerwise.analyses.similarity._numerics import (
    FloatMatrix,
    _centre,
    _double_centre,
    _gram_to_sq_distances,
    _row_sq_norms,
    _sq_norm,
    _undefined,
)
from layerwise.analyses.validation import check_pair, check_real

# --------------------------------------------------------------------------------------
# CKA family
# --------------------------------------------------------------------------------------


def _linear_hsic_terms(Xc: FloatMatrix, Yc: FloatMatrix) -> tuple[float, float, float]:
    """``(<K, L>, <K, K>, <L, L>)`` for linear Gram matrices ``K = Xc Xcᵀ``, ``L = Yc Ycᵀ``.

    ``<XXᵀ, YYᵀ> = ||YᵀX||²_F``: the feature route costs ``n(p² + pq + q²)``
    multiply-adds and the n x n route ``n²(p + q)``; the cheaper one is used.
    """
    n, p = Xc.shape
    q = Yc.shape[1]
    if n * (p + q) < p * p + p * q + q * q:
        K = Xc @ Xc.T
        L = Yc @ Yc.T
        return float(np.vdot(K, L)), _sq_norm(K), _sq_norm(L)
    return _sq_norm(Xc.T @ Yc), _sq_norm(Xc.T @ Xc), _sq_norm(Yc.T @ Yc)


def _unbiased_hsic(dot_kl, diag_dot, trace_k, trace_l, n: int):
    """Unbiased HSIC estimator times ``n(n - 3)``, from centred linear-kernel terms.

    ``dot_kl = <K, L>``, ``diag_dot = Σ_i K_ii L_ii``, ``trace_k = tr K``, with ``K``
    and ``L`` the Gram matrices of the *centred* features.  This is Song et al.
    (2012, Eq. 5) rearranged as in ``_debiased_dot_product_similarity_helper`` of
    Kornblith et al.'s notebook; it equals the U-statistic computed on Gram matrices
    with zeroed diagonal.  Works elementwise on arrays (used by the table).
    """
    return dot_kl - n / (n - 2.0) * diag_dot + trace_k * trace_l / ((n - 1.0) * (n - 2.0))


def _unbiased_hsic_floor(biased, diag_dot, trace_k, trace_l, n: int):
    """Rounding floor of :func:`_unbiased_hsic`: values at or below it count as <= 0.

    The unbiased self-HSIC of a linear kernel is a squared norm of U-centred Gram
    matrices (Székely and Rizzo, 2014), so it is never negative; it is exactly 0 for
    degenerate inputs such as mutually orthogonal rows, where cancellation leaves
    +-1e-15 noise of the size of its terms, which would otherwise give a finite CKA.
    """
    terms = abs(biased) + n / (n - 2.0) * abs(diag_dot)
    return 1e-10 * (terms + abs(trace_k * trace_l) / ((n - 1.0) * (n - 2.0)))


def _which_constant(X: FloatMatrix, Y: FloatMatrix) -> str:
    return "X" if (X == X[0]).all() else "Y"


def cka_linear(X: ArrayLike, Y: ArrayLike) -> float:
    """Linear centered kernel alignment (CKA).

    ``CKA(X, Y) = ||YᵀX||²_F / (||XᵀX||_F ||YᵀY||_F)`` after centring the columns of
    both matrices; equal to the kernel form ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``
    with ``K = XXᵀ``, ``L = YYᵀ``.  Invariant to orthogonal transformations and
    isotropic scaling of either input, not to arbitrary invertible linear maps.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
        Rows of ``X`` and ``Y`` are matched samples.

    Returns
    -------
    float
        In ``[0, 1]``; 1 when ``Y`` is an orthogonal transform of ``X`` up to scale.
        ``nan`` (with :class:`UndefinedSimilarityWarning`) when all rows of ``X`` or
        of ``Y`` are identical.

    References
    ----------
    Kornblith, S., Norouzi, M., Lee, H. and Hinton, G. (2019). Similarity of Neural
    Network Representations Revisited. ICML. arXiv:1905.00414.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((100, 8))
    >>> Q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    >>> round(cka_linear(X, 3.0 * X @ Q), 6)
    1.0
    """
    X, Y = check_pair(X, Y)
    xy, xx, yy = _linear_hsic_terms(_centre(X), _centre(Y))
    # Edge case: identical rows give a zero centred Gram matrix and CKA = 0/0.
    if xx == 0.0 or yy == 0.0:
        which = _which_constant(X, Y)
        return _undefined(f"cka_linear is undefined: all rows of {which} are identical")
    return float(xy / (math.sqrt(xx) * math.sqrt(yy)))


def _rbf_kernel(X: FloatMatrix, threshold: float) -> FloatMatrix | None:
    """RBF Gram matrix with the median heuristic of Kornblith et al., or None if undefined.

    ``K_ij = exp(-d²_ij / (2 t² median(d²)))`` where the median runs over the whole
    n x n squared-distance matrix, zero diagonal included (as the reference notebook
    does).
    """
    Xc = _centre(X)
    D2 = _gram_to_sq_distances(Xc @ Xc.T)
    median = float(np.median(D2))
    # Edge case: when at least half of all row pairs coincide, median(d²) = 0 and the
    # bandwidth heuristic gives sigma = 0; the kernel is undefined.
    if median <= 0.0:
        return None
    D2 *= -1.0 / (2.0 * threshold**2 * median)
    return np.exp(D2, out=D2)


def cka_rbf(X: ArrayLike, Y: ArrayLike, *, threshold: float = 0.5) -> float:
    """CKA with Gaussian (RBF) kernels and the median-distance bandwidth.

    ``K_ij = exp(-||x_i - x_j||² / (2 t² m))`` with ``t = threshold`` and ``m`` the
    median of the n x n squared-distance matrix (zero diagonal included), likewise
    ``L`` for ``Y``; then ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with
    ``HSIC(K, L) = tr(K H L H)`` and ``H = I - 11ᵀ/n``.  Costs O(n²) memory.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    threshold : float, default=0.5
        Bandwidth as a fraction of the median distance (``sigma = t * sqrt(m)``).

    Returns
    -------
    float
        In ``[0, 1]``.  ``nan`` (with :class:`UndefinedSimilarityWarning`) when at
        least half of the row pairs of ``X`` or ``Y`` coincide (median distance 0).

    References
    ----------
    Kornblith, S., Norouzi, M., Lee, H. and Hinton, G. (2019). Similarity of Neural
    Network Representations Revisited. ICML. arXiv:1905.00414.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((50, 4))
    >>> round(cka_rbf(X, X), 6)
    1.0
    """
    X, Y = check_pair(X, Y)
    threshold = check_real(threshold, "threshold", low=0.0, low_open=True)
    K = _rbf_kernel(X, threshold)
    L = _rbf_kernel(Y, threshold)
    if K is None or L is None:
        which = "X" if K is None else "Y"
        return _undefined(
            f"cka_rbf is undefined: the median squared distance between rows of {which} is 0 "
            "(at least half of the row pairs coincide), so the RBF bandwidth is 0"
        )
    Kc = _double_centre(K)
    Lc = _double_centre(L)
    return float(np.vdot(Kc, Lc) / (math.sqrt(_sq_norm(Kc)) * math.sqrt(_sq_norm(Lc))))


def cka_debiased(X: ArrayLike, Y: ArrayLike) -> float:
    """Linear CKA from the unbiased HSIC estimator ("debiased CKA").

    Replaces each biased HSIC in linear CKA by the U-statistic of Song et al. (2012),
    computed from feature-space terms as in Kornblith et al.'s reference notebook
    (equivalent to U-centring the Gram matrices with zeroed diagonal).  The
    estimator of CKA is still biased, much less so for small ``n`` or wide layers;
    it is close to 0 for independent inputs and may be negative.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
        ``n_samples >= 4``.

    Returns
    -------
    float
        Usually in ``[-1, 1]``, 1 for ``X`` vs an orthogonal transform of ``X``.
        ``nan`` (with :class:`UndefinedSimilarityWarning`) when the unbiased
        self-HSIC of ``X`` or ``Y`` is ``<= 0`` up to rounding (its square root is
        the denominator); for linear kernels it is never negative, but it is 0 for
        degenerate inputs such as mutually orthogonal rows or identical rows.

    References
    ----------
    Song, L., Smola, A., Gretton, A., Bedo, J. and Borgwardt, K. (2012). Feature
    Selection via Dependence Maximization. JMLR 13, 1393-1434.

    Nguyen, T., Raghu, M. and Kornblith, S. (2021). Do Wide and Deep Networks Learn
    the Same Things? ICLR. arXiv:2010.15327.

    Székely, G. J. and Rizzo, M. L. (2014). Partial Distance Correlation with Methods
    for Dissimilarities. Annals of Statistics 42(6), 2382-2412.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X, Y = rng.standard_normal((500, 10)), rng.standard_normal((500, 10))
    >>> abs(cka_debiased(X, Y)) < 0.05
    True
    """
    X, Y = check_pair(X, Y, min_samples=4)
    Xc, Yc = _centre(X), _centre(Y)
    n = X.shape[0]
    xy, xx, yy = _linear_hsic_terms(Xc, Yc)
    dx, dy = _row_sq_norms(Xc), _row_sq_norms(Yc)
    hsic_xy = _unbiased_hsic(xy, dx @ dy, dx.sum(), dy.sum(), n)
    self_terms = {"X": (xx, dx @ dx, dx.sum()), "Y": (yy, dy @ dy, dy.sum())}
    hsic_self = {}
    for which, (biased, diag_dot, trace) in self_terms.items():
        hsic_self[which] = _unbiased_hsic(biased, diag_dot, trace, trace, n)
        # Edge case: the unbiased self-HSIC is 0 (up to rounding) for degenerate
        # input, e.g. rows that are mutually orthogonal after centring or all
        # identical; CKA's denominator sqrt(HSIC_xx HSIC_yy) is then 0.
        if hsic_self[which] <= _unbiased_hsic_floor(biased, diag_dot, trace, trace, n):
            return _undefined(
                f"cka_debiased is undefined: the unbiased self-HSIC of {which} is <= 0 "
                f"(up to rounding; n_samples={n}), so CKA's denominator is 0"
            )
    return float(hsic_xy / (math.sqrt(hsic_self["X"]) * math.sqrt(hsic_self["Y"])))


