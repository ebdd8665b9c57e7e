"""CCA family: canonical correlations, mean squared CCA, SVCCA, PWCCA, CCA directions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import linalg, sparse

from layerwise.analyses.similarity._numerics import (
    FloatMatrix,
    _centre,
    _column_means,
    _undefined,
)
from layerwise.analyses.similarity.cka import _which_constant
from layerwise.analyses.validation import check_int, check_pair, check_real

# --------------------------------------------------------------------------------------
# CCA family
# --------------------------------------------------------------------------------------


def _principal_basis(Xc: FloatMatrix) -> tuple[FloatMatrix, np.ndarray, FloatMatrix]:
    """Thin SVD ``Xc = U diag(s) Vt`` truncated to the numerical rank.

    The rank tolerance is numpy.linalg.matrix_rank's, ``s_max * max(n, p) * eps``.
    """
    U, s, Vt = np.linalg.svd(Xc, full_matrices=False)
    rank = 0
    if s.size and s[0] > 0.0:
        rank = int(np.count_nonzero(s > s[0] * max(Xc.shape) * np.finfo(np.float64).eps))
    return U[:, :rank], s[:rank], Vt[:rank]


def _n_kept(s: np.ndarray, n_components: int | None, variance: float) -> int:
    """How many leading singular directions SVCCA keeps.

    ``n_components`` if given, else the fewest that explain ``variance`` of the total
    variance ``Σ s²``; never more than the numerical rank ``len(s)`` (which is at most
    ``min(n_samples - 1, n_features)`` for centred data).
    """
    if n_components is not None:
        return min(s.size, n_components)
    if s.size == 0:
        return 0
    explained = np.cumsum(s**2) / np.sum(s**2)
    return min(s.size, int(np.searchsorted(explained, variance)) + 1)


def _shrinkage(s: np.ndarray, epsilon: float, n: int) -> np.ndarray | None:
    """Per-direction factor ``s / sqrt(s² + (n - 1) ε)`` from ridge-regularised CCA.

    Adding ``ε`` to the diagonal of the covariance ``XᵀX / (n - 1)`` shrinks each
    whitened principal direction by this factor; ``None`` means no shrinkage (ε = 0).
    """
    if epsilon == 0.0:
        return None
    return s / np.sqrt(s**2 + (n - 1) * epsilon)


def _canonical(
    Ux: FloatMatrix,
    Uy: FloatMatrix,
    fx: np.ndarray | None = None,
    fy: np.ndarray | None = None,
) -> tuple[np.ndarray, FloatMatrix, FloatMatrix]:
    """CCA between the column spans of orthonormal bases ``Ux`` (n, r) and ``Uy`` (n, t).

    Returns the ``min(r, t)`` canonical correlations (descending, in [0, 1]) and the
    canonical directions in each basis (``A``: r x c, ``B``: t x c), i.e. the SVD of
    ``Uxᵀ Uy`` (Björck and Golub, 1973), optionally shrunk by ``fx``, ``fy``.
    """
    return _canonical_of(Ux.T @ Uy, fx, fy)


def _canonical_of(
    M: FloatMatrix, fx: np.ndarray | None = None, fy: np.ndarray | None = None
) -> tuple[np.ndarray, FloatMatrix, FloatMatrix]:
    """:func:`_canonical` from ``M = UxᵀUy``, which does not depend on the shrinkage."""
    if fx is not None and fy is not None:
        M = fx[:, None] * M * fy[None, :]
    A, rho, Bt = np.linalg.svd(M, full_matrices=False)
    return np.clip(rho, 0.0, 1.0), A, Bt.T


def _morcos_weights(projections: np.ndarray) -> np.ndarray:
    """PWCCA weights from ``projections[i, j] = <h_i, x_j>`` (unit-norm canonical variate
    ``h_i``, centred neuron ``x_j``): ``α_i ∝ Σ_j |<h_i, x_j>|``, summing to 1 (Morcos,
    Raghu and Bengio, 2018).  The one formula behind every PWCCA of the package."""
    alpha = np.abs(projections).sum(axis=1)
    return alpha / alpha.sum()


def _projection_weights(
    A: FloatMatrix, s: np.ndarray, Vt: FloatMatrix, f: np.ndarray | None = None
) -> np.ndarray:
    """:func:`_morcos_weights` of X's in-sample canonical variates, from its SVD.

    ``h_i`` is X's i-th canonical variate as a unit vector over samples,
    ``h_i = U a_i / ||a_i||`` with ``a_i`` the i-th column of ``A`` (times the
    shrinkage ``f``), and ``x_j`` is X's j-th centred neuron, ``U diag(s) Vt e_j``.
    Hence ``<h_i, x_j> = (a_i ∘ s)ᵀ Vt e_j / ||a_i||`` without touching the samples.
    """
    coef = A if f is None else A * f[:, None]
    projections = (coef * s[:, None]).T @ Vt
    return _morcos_weights(projections / np.linalg.norm(coef, axis=0)[:, None])


def cca_correlations(X: ArrayLike, Y: ArrayLike, *, epsilon: float = 0.0) -> np.ndarray:
    """Canonical correlations between the centred columns of ``X`` and ``Y``.

    Computed stably from orthonormal bases of the two column spaces: thin SVDs of the
    centred matrices, then the singular values of ``UxᵀUy`` (Björck and Golub, 1973),
    never by inverting covariance matrices.  Directions without variance (numerical
    rank deficiency) are dropped.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    epsilon : float, default=0.0
        Ridge regulariser added to the diagonals of both covariance matrices
        ``XᵀX / (n - 1)`` and ``YᵀY / (n - 1)``; 0 gives plain CCA.

    Returns
    -------
    ndarray of shape (min(rank X, rank Y),)
        Correlations in ``[0, 1]``, in decreasing order; empty when either input
        has no variance.

    References
    ----------
    Hotelling, H. (1936). Relations Between Two Sets of Variates. Biometrika 28.

    Björck, Å. and Golub, G. H. (1973). Numerical Methods for Computing Angles
    Between Linear Subspaces. Mathematics of Computation 27(123), 579-594.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).standard_normal((100, 3))
    >>> np.round(cca_correlations(X, X @ np.diag([1.0, 2.0, 3.0])), 6)
    array([1., 1., 1.])
    """
    X, Y = check_pair(X, Y)
    epsilon = check_real(epsilon, "epsilon", low=0.0)
    return _cca(X, Y, epsilon)[0]


def _cca(X: FloatMatrix, Y: FloatMatrix, epsilon: float, n_components: int | None = None):
    """Canonical correlations and both sides' decompositions ``(A, s, Vt, f)`` (the
    canonical directions ``A`` in the principal basis ``U diag(s) Vt`` of the centred
    input, and the shrinkage ``f``), for validated input; sides are None without
    variance."""
    n = X.shape[0]
    Ux, sx, Vtx = _principal_basis(_centre(X))
    Uy, sy, Vty = _principal_basis(_centre(Y))
    if n_components is not None:
        Ux, sx, Vtx = Ux[:, :n_components], sx[:n_components], Vtx[:n_components]
        Uy, sy, Vty = Uy[:, :n_components], sy[:n_components], Vty[:n_components]
    # Edge case: an input without variance has an empty basis and no correlations.
    if sx.size == 0 or sy.size == 0:
        return np.empty(0), None, None
    fx, fy = _shrinkage(sx, epsilon, n), _shrinkage(sy, epsilon, n)
    rho, A, B = _canonical(Ux, Uy, fx, fy)
    return rho, (A, sx, Vtx, fx), (B, sy, Vty, fy)


def _no_variance(metric: str, X: FloatMatrix, Y: FloatMatrix) -> float:
    return _undefined(
        f"{metric} is undefined: all rows of {_which_constant(X, Y)} are identical, "
        "so it has no directions to correlate"
    )


def mean_squared_cca(X: ArrayLike, Y: ArrayLike, *, epsilon: float = 0.0) -> float:
    """Mean squared canonical correlation, ``R²_CCA = mean(ρ_i²)``.

    With centred columns this is ``||Q_Yᵀ Q_X||²_F / min(rank)`` of Kornblith et al.
    (2019), Table 1, i.e. linear-regression fit averaged over canonical directions.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    epsilon : float, default=0.0
        Covariance ridge, see :func:`cca_correlations`.

    Returns
    -------
    float
        In ``[0, 1]``; ``nan`` (with :class:`UndefinedSimilarityWarning`) when all
        rows of ``X`` or ``Y`` are identical.

    References
    ----------
    Kornblith, S., Norouzi, M., Lee, H. and Hinton, G. (2019). Similarity of Neural
    Network Representations Revisited. ICML. arXiv:1905.00414.

    Examples
    --------
    >>> import numpy as np
    >>> np.random.seed(1337)
    >>> X = np.random.randn(100, 10)
    >>> Y = np.random.randn(100, 10) + X
    >>> round(mean_squared_cca(X, Y), 5)
    0.5454
    """
    X, Y = check_pair(X, Y)
    epsilon = check_real(epsilon, "epsilon", low=0.0)
    rho = _cca(X, Y, epsilon)[0]
    if rho.size == 0:
        return _no_variance("mean_squared_cca", X, Y)
    return float(np.mean(rho**2))


def svcca(
    X: ArrayLike, Y: ArrayLike, *, n_components: int | None = 20, variance: float = 0.99
) -> float:
    """Singular vector CCA (SVCCA): mean canonical correlation of the leading subspaces.

    Both matrices are centred and reduced to their top-``k`` singular directions
    (``k = n_components`` if given, else the fewest directions explaining
    ``variance`` of the variance; ``k`` never exceeds the numerical rank, hence
    ``min(n_samples - 1, n_features)``), then CCA is run between the two reduced
    views and the ``min(k_x, k_y)`` canonical correlations are averaged.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    n_components : int or None, default=20
        Directions kept per input (the reference tutorials keep 20; for wide layers
        usually far fewer than the 99% of the variance of Raghu et al.).  ``None``
        selects by ``variance`` instead, as the paper does.
    variance : float, default=0.99
        Fraction of variance to keep when ``n_components`` is None, in ``(0, 1]``.

    Returns
    -------
    float
        In ``[0, 1]``; 1 when the two leading subspaces coincide.  ``nan`` (with
        :class:`UndefinedSimilarityWarning`) when all rows of an input are identical.

    References
    ----------
    Raghu, M., Gilmer, J., Yosinski, J. and Sohl-Dickstein, J. (2017). SVCCA:
    Singular Vector Canonical Correlation Analysis for Deep Learning Dynamics and
    Interpretability. NeurIPS. arXiv:1706.05806.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 30)) * np.linspace(3.0, 0.1, 30)
    >>> Q, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    >>> round(svcca(X, X @ Q, n_components=10), 6)
    1.0
    """
    X, Y = check_pair(X, Y)
    if n_components is not None:
        n_components = check_int(n_components, "n_components", low=1)
    variance = check_real(variance, "variance", low=0.0, high=1.0, low_open=True)
    bases = []
    for M in (X, Y):
        U, s, _ = _principal_basis(_centre(M))
        bases.append(U[:, : _n_kept(s, n_components, variance)])
    if bases[0].shape[1] == 0 or bases[1].shape[1] == 0:
        return _no_variance("svcca", X, Y)
    return float(_canonical(*bases)[0].mean())


def pwcca(
    X: ArrayLike, Y: ArrayLike, *, n_components: int | None = None, epsilon: float = 0.0
) -> float:
    """Projection-weighted CCA (PWCCA) of Morcos et al. (2018).

    CCA between the centred inputs gives correlations ``ρ_i`` and X's canonical
    variates ``h_i``; each is weighted by how much of X it accounts for,
    ``α_i ∝ Σ_j |<h_i, x_j>|`` over X's centred neurons ``x_j``, and
    ``PWCCA = Σ_i α_i ρ_i`` with ``Σ α_i = 1``.  Not symmetric: ``pwcca(X, Y)``
    weights by X.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
        The representation whose neurons define the weights.
    Y : array-like of shape (n_samples, n_features_y)
    n_components : int or None, default=None
        ``None`` runs CCA on the full centred inputs (the paper's method).  An int
        first restricts both inputs to their top ``n_components`` singular directions
        as SVCCA does; the weights still project X's original neurons.
    epsilon : float, default=0.0
        Covariance ridge, see :func:`cca_correlations`.

    Returns
    -------
    float
        In ``[0, 1]``; 1 when the column spaces coincide.  ``nan`` (with
        :class:`UndefinedSimilarityWarning`) when all rows of an input are identical.

    Notes
    -----
    The reference implementation (google/svcca, ``pwcca.compute_pwcca``) weights on
    the side with fewer neurons and, when that is Y, projects X's activations with
    Y's index mask and coefficients - wrong whenever the widths differ.  Here the
    weights are always X's, from X's own canonical variates.

    References
    ----------
    Morcos, A. S., Raghu, M. and Bengio, S. (2018). Insights on Representational
    Similarity in Neural Networks with Canonical Correlation. NeurIPS.
    arXiv:1806.05759.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((100, 5))
    >>> round(pwcca(X, X @ rng.standard_normal((5, 8))), 6)
    1.0
    """
    X, Y = check_pair(X, Y)
    if n_components is not None:
        n_components = check_int(n_components, "n_components", low=1)
    epsilon = check_real(epsilon, "epsilon", low=0.0)
    rho, x_side, _ = _cca(X, Y, epsilon, n_components)
    if rho.size == 0:
        return _no_variance("pwcca", X, Y)
    # Weights on X's side, with X's own canonical variates (see Notes for why not the
    # narrower side as in google/svcca).
    return float(_projection_weights(*x_side) @ rho)


@dataclass(frozen=True)
class CCADirections:
    """Canonical directions fitted on one sample, to project other rows (held-out CCA).

    The i-th canonical variates of rows ``X`` and ``Y`` are ``(X - mean_x) @ x[:, i]``
    and ``(Y - mean_y) @ y[:, i]``; ``correlations`` are those of the fitted sample
    (shrunk by its ``epsilon``), in decreasing order.  Made by :func:`cca_directions`.
    """

    mean_x: np.ndarray
    mean_y: np.ndarray
    x: FloatMatrix
    y: FloatMatrix
    correlations: np.ndarray


def _feature_directions(side) -> FloatMatrix:
    """Canonical directions in feature space from a side ``(A, s, Vt, f)`` of :func:`_cca`:
    ``Xc Vtᵀ diag(f / s) A = U diag(f) A``, the (regularised) canonical variates."""
    A, s, Vt, f = side
    scale = 1.0 / s if f is None else f / s
    return Vt.T @ (A * scale[:, None])


def cca_directions(X: ArrayLike, Y: ArrayLike, *, epsilon: float = 0.0) -> CCADirections:
    """Fit (regularised) CCA on ``X``, ``Y`` and return the canonical directions.

    The same decomposition as :func:`cca_correlations` and :func:`pwcca` (thin SVDs of
    the centred inputs, then the SVD of ``UxᵀUy``), expressed in feature coordinates so
    that held-out rows can be projected (Pasad et al.'s protocol, see
    :mod:`layerwise.analyses.cca_targets`).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    epsilon : float, default=0.0
        Covariance ridge, see :func:`cca_correlations`.

    Returns
    -------
    CCADirections
        With ``min(rank X, rank Y)`` directions per side (none without variance).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((100, 4))
    >>> fit = cca_directions(X, X @ rng.standard_normal((4, 4)))
    >>> np.round(fit.correlations, 6)
    array([1., 1., 1., 1.])
    >>> fit.x.shape
    (4, 4)
    """
    X, Y = check_pair(X, Y)
    epsilon = check_real(epsilon, "epsilon", low=0.0)
    return cca_directions_path(PrincipalBasis.of(X), PrincipalBasis.of(Y), [epsilon])[0]


@dataclass(frozen=True)
class PrincipalBasis:
    """One side of a CCA, whatever the ridge ε: the column means of its rows, the centred rows
    ``Xc`` and their principal basis ``Xc = U diag(s) Vt`` (``s``, ``Vt`` from the eigenvalues of
    ``XcᵀXc``, truncated to the numerical rank as :func:`_top_eigen` does; ``U`` is not formed).

    Why: held-out CCA fits every ε of a grid on the same training rows, and one target (word
    identity) against every layer; the decompositions are shared by all those fits
    (:func:`cca_directions_path`), and a d × d eigendecomposition costs a fraction of the
    n × d SVD at n ≫ d.
    """

    mean: np.ndarray
    #: ``Xc``; of a sparse input (a one-hot target), its rows uncentred: centring would fill
    #: them in, and a cross-product with centred rows needs only those centred (:func:`_cross`)
    centred: FloatMatrix | sparse.sparray
    s: np.ndarray
    Vt: FloatMatrix

    @classmethod
    def of(cls, X: FloatMatrix | sparse.sparray) -> PrincipalBasis:
        """The basis of validated float64 rows ``X`` (dense, or sparse: see ``centred``)."""
        mean, centred, gram = _centred_rows(X)
        top = _top_eigen(gram, None)
        if top is None:  # no variance
            return cls(mean, centred, np.empty(0), np.empty((0, X.shape[1])))
        return cls(mean, centred, top[0], top[1].T)


def _centred_rows(X: FloatMatrix | sparse.sparray):
    """``(mean, Xc, XcᵀXc)`` of validated float64 rows ``X``. Of sparse rows (a one-hot
    target), ``Xc`` is ``X`` itself, uncentred: centring would fill it in, and :func:`_cross`
    needs only the other side centred; ``XcᵀXc = XᵀX - n·μμᵀ`` is formed without the dense
    ``Xc`` (for a one-hot ``X``, ``XᵀX`` is the diagonal of class counts)."""
    if sparse.issparse(X):
        mean = np.asarray(X.mean(axis=0)).ravel()
        gram = (X.T @ X).toarray()
        gram -= X.shape[0] * np.outer(mean, mean)
        return mean, X, gram
    mean = _column_means(X)
    centred = X - mean
    return mean, centred, centred.T @ centred


def _cross(Xc: FloatMatrix, Y: FloatMatrix | sparse.sparray) -> FloatMatrix:
    """``XcᵀYc`` of centred rows ``Xc`` and matching rows ``Y``: centred, or sparse and
    uncentred, since ``XcᵀY = XcᵀYc`` when the columns of ``Xc`` sum to zero. Why: for a
    one-hot target of ``c`` classes the product costs ``n·d`` (class sums), not ``n·d·c``."""
    if sparse.issparse(Y):
        return np.asarray((Y.T @ Xc).T)
    return Xc.T @ Y


def cca_directions_path(
    x: PrincipalBasis, y: PrincipalBasis, epsilons: Sequence[float]
) -> list[CCADirections]:
    """:func:`cca_directions` of the rows behind ``x`` and ``y`` at each ε of ``epsilons``
    (validated, ≥ 0), from their bases: ``UxᵀUy = diag(1/sx) Vx XcᵀYc Vyᵀ diag(1/sy)`` is formed
    once, and each ε costs one SVD of it."""
    if x.s.size == 0 or y.s.size == 0:  # an input without variance: no directions
        empty = CCADirections(x.mean, y.mean, np.empty((x.Vt.shape[1], 0)),
                              np.empty((y.Vt.shape[1], 0)), np.empty(0))
        return [empty for _ in epsilons]
    n = x.centred.shape[0]
    M = (x.Vt @ _cross(x.centred, y.centred) @ y.Vt.T) / np.outer(x.s, y.s)
    path = []
    for epsilon in epsilons:
        fx, fy = _shrinkage(x.s, epsilon, n), _shrinkage(y.s, epsilon, n)
        rho, A, B = _canonical_of(M, fx, fy)
        path.append(CCADirections(x.mean, y.mean, _feature_directions((A, x.s, x.Vt, fx)),
                                  _feature_directions((B, y.s, y.Vt, fy)), rho))
    return path


@dataclass(frozen=True)
class HeldOutRows:
    """New rows (X, Y) as held-out PWCCA scores fitted directions on them: their centred
    cross-products ``XcᵀXc``, ``XcᵀYc``, ``YcᵀYc``, formed once for every fit scored on the
    same rows (the dev rows score one fit per ε). A variate's variance, the covariance of a
    pair and Morcos' projections are then quadratic forms in them: d × d work per fit instead
    of n × d."""

    xx: FloatMatrix
    xy: FloatMatrix
    yy: FloatMatrix

    @classmethod
    def of(cls, X: FloatMatrix, target: tuple[FloatMatrix, FloatMatrix]) -> HeldOutRows:
        """Of validated float64 rows ``X`` and :meth:`target` of the matching rows of ``Y``."""
        Xc = _centre(X)
        Yc, yy = target
        return cls(Xc.T @ Xc, _cross(Xc, Yc), yy)

    @staticmethod
    def target(Y: FloatMatrix | sparse.sparray) -> tuple[FloatMatrix, FloatMatrix]:
        """``(Yc, YcᵀYc)`` of validated float64 rows ``Y``: what :meth:`of` needs of them,
        formed once where one target is scored against many layers (sparse ``Y``: itself,
        uncentred, as :attr:`PrincipalBasis.centred`)."""
        _, Yc, yy = _centred_rows(Y)
        return Yc, yy

    def pwcca(self, directions: CCADirections, weights: str = "x") -> float:
        """:func:`projected_pwcca` of these rows."""
        xx_x, yy_y = self.xx @ directions.x, self.yy @ directions.y
        var_u = np.einsum("ij,ij->j", directions.x, xx_x)
        var_v = np.einsum("ij,ij->j", directions.y, yy_y)
        cov = np.einsum("ij,ij->j", directions.x, self.xy @ directions.y)
        # Edge case: a variate can be constant on new rows (e.g. a one-hot class absent from
        # them); it has no correlation and no direction, so it is left out. A quadratic form
        # leaves ~1e-16 of the largest variance where there is none: the bound is above that.
        tiny = _HELD_OUT_TINY * max(var_u.max(initial=0.0), var_v.max(initial=0.0))
        keep = (var_u > tiny) & (var_v > tiny)
        if not keep.any():
            return _undefined(
                "projected_pwcca is undefined: no canonical variate varies on these rows")
        norm_u, norm_v = np.sqrt(var_u[keep]), np.sqrt(var_v[keep])
        rho = cov[keep] / (norm_u * norm_v)
        # <h_j, x_i> of the unit-norm variate h_j = Xc a_j / ||Xc a_j|| and the centred neuron
        # x_i: (XcᵀXc a_j)_i / ||Xc a_j||
        projections = (xx_x[:, keep] / norm_u) if weights == "x" else (yy_y[:, keep] / norm_v)
        return float(_morcos_weights(projections.T) @ rho)


#: Variance (relative to the largest variate's) below which a held-out variate counts as
#: constant: a standard deviation of 1e-6 of the largest.
_HELD_OUT_TINY = 1e-12


def projected_pwcca(
    directions: CCADirections, X: ArrayLike, Y: ArrayLike, *, weights: str = "x"
) -> float:
    """PWCCA of rows projected on fitted canonical directions (held-out PWCCA).

    Each pair of canonical variates of these rows is correlated (signed: a direction
    whose relation flips on new rows scores below 0), and the correlations are weighted
    by Morcos et al.'s projection weights ``α_i ∝ Σ_j |<h_i, x_j>|`` of these rows'
    centred neurons on the unit-norm variates of the ``weights`` side.  On the fitted
    rows with ``epsilon = 0`` this equals :func:`pwcca` (``weights="x"``).

    Parameters
    ----------
    directions : CCADirections
        From :func:`cca_directions`.
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    weights : {"x", "y"}, default="x"
        Whose neurons weight the correlations.

    Returns
    -------
    float
        ``nan`` (with :class:`UndefinedSimilarityWarning`) when no pair of variates
        varies on these rows.

    References
    ----------
    Morcos, A. S., Raghu, M. and Bengio, S. (2018). Insights on Representational
    Similarity in Neural Networks with Canonical Correlation. NeurIPS.

    Pasad, A., Chou, J.-C. and Livescu, K. (2021). Layer-wise Analysis of a
    Self-supervised Speech Representation Model. ASRU.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((100, 5))
    >>> Y = X @ rng.standard_normal((5, 3)) + rng.standard_normal((100, 3))
    >>> bool(np.isclose(projected_pwcca(cca_directions(X, Y), X, Y), pwcca(X, Y)))
    True
    """
    if not isinstance(directions, CCADirections):
        raise ValueError(f"directions must come from cca_directions, got {directions!r}")
    X, Y = check_pair(X, Y)
    for name, M, D in (("X", X, directions.x), ("Y", Y, directions.y)):
        if M.shape[1] != D.shape[0]:
            raise ValueError(f"{name} has {M.shape[1]} features, the directions {D.shape[0]}")
    if weights not in ("x", "y"):
        raise ValueError(f"weights must be 'x' or 'y', got {weights!r}")
    return HeldOutRows.of(X, HeldOutRows.target(Y)).pwcca(directions, weights)


def _top_eigen(C: FloatMatrix, n_components: int | None):
    """``(s, V)``: square roots of the top ``n_components`` (None: all) eigenvalues of the
    PSD matrix ``C`` (overwritten) and their eigenvectors, numerically null ones dropped;
    None when ``C`` has no positive eigenvalue."""
    size = C.shape[0]
    k = size if n_components is None else min(n_components, size)
    lam, V = linalg.eigh(C, subset_by_index=[size - k, size - 1], overwrite_a=True,
                         check_finite=False)
    lam, V = lam[::-1], V[:, ::-1]
    if lam[0] <= 0.0:
        return None
    keep = lam > lam[0] * size * np.finfo(np.float64).eps
    return np.sqrt(lam[keep]), V[:, keep]
