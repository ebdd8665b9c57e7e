"""The fast logistic-regression probe: moments-based standardise + PCA, L-BFGS along a C path.

Why: scikit-learn's probe (``probes.InnerCVProbe``) refits a scaler, a PCA and an L-BFGS
regression in float64 for every inner fold and every C; at LibriSpeech dev-clean's 54,000
word rows that takes hours per model on 2 cores. This module fits the same model, faster:

Preprocessing from moments
    A training set's standardise-then-PCA is a function of its row count, column sums and
    Gram matrix (:class:`Moments`). Moments add over rows, so those of a training fold are
    the moments of all rows minus those of the held-out rows: one pass over each held-out
    fold instead of one over each training fold, and the scaler and PCA of every inner
    training fold are still fitted on its own rows only (:func:`standardised_pca`). The
    basis equals scikit-learn's ``StandardScaler`` -> ``PCA`` up to the sign of each
    component, which an L2-penalised linear model does not see.
Multinomial logistic regression (:func:`fit_path`)
    The model of scikit-learn's ``LogisticRegression(C=C)`` (multinomial, L2 penalty on the
    weights, intercept not penalised): minimise the mean cross-entropy plus
    ``||W||^2 / (2 C n)``, full batch, by L-BFGS with a strong-Wolfe line search
    (:mod:`layerwise.analyses.lbfgs`: torch.optim.LBFGS's algorithm without its per-step
    overhead), stopped when the largest absolute gradient entry is at most ``tol``
    (scikit-learn's ``gtol`` on the same scaled objective) or after ``max_iter`` iterations.
    The C values are fitted from small to large, each starting at the previous solution
    (warm starts along the regularisation path). float32, in torch on the job's GPU when it
    was given one (:func:`device`), else in NumPy on the CPU; no random numbers, so a fit is
    repeatable on one machine.

Cost of one layer and label with ``n`` rows of width ``d``, ``k = min(max_dims, d)``, ``K``
classes, 5 outer and 3 inner folds (20 training sets): moments ``~1.8 n d^2`` (symmetric
products over the test folds and over two of the three validation folds of each training
fold, ``11 n / 3`` rows: the rest follow by sums and differences), 20 eigendecompositions
``d^3`` (independent of ``n``), 20 projections ``~0.8 n d k``, and per L-BFGS evaluation
``4 n k K`` (about 35 evaluations per path of 4 C values on ``benchmarks/bench_scale.py``'s
data). Time is linear in rows and in layers, and in classes for the fits; memory (per worker
process) is a float32 copy of the label's rows of one layer, its training rows and their
projection, about ``(2 d + 2 k + K) n`` floats, independent of the number of layers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from layerwise.analyses import lbfgs

__all__ = ["Moments", "device", "fit_path", "predict", "project", "standardised_pca", "take"]


def device() -> torch.device:
    """The job's GPU when it was given one, else the CPU.

    Given one: ``CUDA_VISIBLE_DEVICES`` names a device (SLURM sets it for a job granted GPUs;
    a user sets it to lend one) and torch sees it. The ``analyse`` rule claims no GPU, so a GPU
    that is merely installed - perhaps an extraction job's - is never taken.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    given = visible not in ("", "-1", "none", "NoDevFiles")
    return torch.device("cuda" if given and torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class Moments:
    """Row count, column sums and Gram matrix (float64) of a set of rows."""

    count: int
    sums: torch.Tensor
    gram: torch.Tensor

    @classmethod
    def of(cls, X: torch.Tensor) -> Moments:
        """Moments of the rows of ``X`` (float32; centre it first, so the Gram loses nothing)."""
        return cls(len(X), _column_sums(X), _matmul(X.T, X).double())

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.count + other.count, self.sums + other.sums, self.gram + other.gram)

    def __sub__(self, other: Moments) -> Moments:
        return Moments(self.count - other.count, self.sums - other.sums, self.gram - other.gram)


def standardised_pca(moments: Moments, max_dims: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(shift, A)`` such that ``(X - shift) @ A`` standardises ``X`` and projects it on the
    leading ``max_dims`` principal components of the standardised rows of ``moments``.

    As ``StandardScaler`` (population variance; a constant column is left unscaled) followed
    by ``PCA(min(max_dims, rows))`` fitted on those rows, up to column signs; no PCA when
    ``max_dims`` is None or the rows are not wider than it.
    """
    mean = moments.sums / moments.count
    cov = moments.gram / moments.count - torch.outer(mean, mean)
    variance = cov.diagonal().clamp_min(0)
    scale = variance.sqrt()
    scale[scale <= 10 * torch.finfo(torch.float64).eps * mean.abs().clamp_min(1)] = 1.0
    width = cov.shape[0]
    if max_dims is None or width <= max_dims:
        A = torch.diag(1.0 / scale)
    else:
        # float32 eigh: half the time of float64, and the leading eigenvectors of a
        # correlation matrix (entries in [-1, 1]) lose nothing a float32 layer holds
        _, vectors = torch.linalg.eigh((cov / torch.outer(scale, scale)).float())  # ascending
        A = vectors[:, -min(max_dims, moments.count):].flip(1).double() / scale[:, None]
    return mean.float(), A.float()


def project(X: torch.Tensor, shift: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """``(X - shift) @ A`` without a centred copy of ``X``."""
    Z = _matmul(X, A)
    Z -= shift @ A
    return Z


def take(X: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    """``X[rows]``; on the CPU by NumPy's fancy indexing, about twice as fast as torch's on
    one core (a probe gathers each fold's rows about 40 times per layer and label)."""
    if X.device.type != "cpu":
        return X[torch.as_tensor(rows, device=X.device)]
    return torch.from_numpy(X.numpy()[rows])


def _column_sums(X: torch.Tensor) -> torch.Tensor:
    """Column sums in float64; on the CPU by NumPy, which converts as it adds (torch's
    ``sum(dtype=float64)`` of a float32 matrix is about 9 times slower on one core)."""
    if X.device.type != "cpu":
        return X.sum(0, dtype=torch.float64)
    return torch.from_numpy(X.numpy().sum(0, dtype=np.float64))


def _matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b``; on the CPU by NumPy's BLAS, which forms ``X.T @ X`` as a symmetric rank-k
    update (half the work: 2x faster than torch on one core) and ``X @ A`` 1.3x faster."""
    if a.device.type != "cpu":
        return a @ b
    return torch.from_numpy(a.numpy() @ b.numpy())


def _objective(Z, codes, n_classes: int, penalty: float):
    """``fun(x) -> (loss, gradient)`` of the flat parameters ``x = [W.ravel(), b]``: mean
    cross-entropy + ``penalty * ||W||^2 / 2`` and its gradient, written out (no autograd).

    ``Z`` and ``codes`` are NumPy arrays on the CPU (torch's cost per operation is a few times
    NumPy's on arrays this small, and NumPy's BLAS forms the two products at least as fast),
    torch tensors on a GPU; the same code serves both."""
    xp = torch if isinstance(Z, torch.Tensor) else np
    n, width = Z.shape
    size = width * n_classes
    rows = xp.arange(n) if xp is np else torch.arange(n, device=Z.device)

    def fun(x):
        W = x[:size].reshape(width, n_classes)
        logits = Z @ W
        logits += x[size:]
        logits -= xp.amax(logits, axis=1, keepdims=True)
        residual = xp.exp(logits)
        total = residual.sum(axis=1)
        loss = -(logits[rows, codes] - xp.log(total)).mean() + 0.5 * penalty * (W * W).sum()
        residual /= total[:, None]
        residual[rows, codes] -= 1.0
        grad_W = Z.T @ residual
        grad_W /= n
        grad_W += penalty * W
        return float(loss), xp.concatenate([grad_W.reshape(-1), residual.sum(axis=0) / n])

    return fun


def fit_path(Z: torch.Tensor, y: np.ndarray, Cs: Sequence[float], *, tol: float = 1e-3,
             max_iter: int = 100) -> list[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """Multinomial L2 logistic regression of ``y`` on ``Z`` at each C, warm-started in order.

    Parameters
    ----------
    Z : torch.Tensor of shape (n, d), float32
    y : ndarray of shape (n,)
        Class codes; the classes are those present.
    Cs : sequence of float
        Inverse penalties, as scikit-learn's ``C``; fitted in the order given (pass them
        ascending: a strongly penalised solution is a good start for a weaker penalty).
    tol, max_iter : float, int
        Stop when max |gradient| <= ``tol``, or after ``max_iter`` L-BFGS iterations
        (:func:`layerwise.analyses.lbfgs.minimise`).

    Returns
    -------
    list of (classes, W, b)
        Per C: the classes (ndarray), weights (d, n_classes) and intercepts, torch tensors on
        ``Z``'s device.
    """
    classes, codes = np.unique(y, return_inverse=True)
    on_cpu = Z.device.type == "cpu"
    data = Z.numpy() if on_cpu else Z
    target = codes if on_cpu else torch.as_tensor(codes, device=Z.device)
    width, size = Z.shape[1], Z.shape[1] * len(classes)
    x = np.zeros(size + len(classes), dtype=np.float32) if on_cpu else \
        torch.zeros(size + len(classes), device=Z.device, dtype=Z.dtype)
    path = []
    for C in Cs:
        penalty = 1.0 / (C * len(codes))
        x = lbfgs.minimise(_objective(data, target, len(classes), penalty), x, tol=tol,
                           max_iter=max_iter)
        W, b = torch.as_tensor(x[:size]).reshape(width, -1), torch.as_tensor(x[size:])
        path.append((classes, W.clone(), b.clone()))
    return path


def predict(Z: torch.Tensor, classes: np.ndarray, W: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Predicted class of each row (ties to the first class, as scikit-learn)."""
    return classes[(_matmul(Z, W) + b).argmax(1).cpu().numpy()]
