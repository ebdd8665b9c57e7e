"""L-BFGS with a strong-Wolfe line search on one flat vector: torch.optim.LBFGS's algorithm,
without its bookkeeping.

Why: a probe job fits thousands of small logistic regressions (the demo's frame span: about
2,000 paths, 47,000 evaluations of the loss). On problems that small, ``torch.optim.LBFGS``
spends more time on itself than on the loss: every evaluation gathers, copies and restores
the parameter tensors, and every scalar of the line search is a tensor. Constructing an
optimiser also imports ``torch._dynamo`` (1-2 s per process). :func:`minimise` is the same
algorithm - the two-loop recursion over the last ``history_size`` pairs, the initial step
``min(1, 1 / |g|_1)``, the strong-Wolfe line search with cubic interpolation, the same
constants and stopping rules - on one flat vector, a NumPy array on the CPU or a torch tensor
on a GPU (only operators both support are used). Its iterates are torch's up to rounding.

Ported from PyTorch's ``torch/optim/lbfgs.py`` (BSD-3-Clause, copyright the PyTorch
contributors), itself after Mark Schmidt's minFunc.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["minimise"]

Objective = Callable[[Any], "tuple[float, Any]"]


def minimise(fun: Objective, x, *, tol: float, max_iter: int, history_size: int = 10,
             tolerance_change: float = 1e-12):
    """Minimise ``fun`` from ``x`` by L-BFGS; the last iterate.

    Parameters
    ----------
    fun : callable
        ``fun(x) -> (loss, gradient)``: the loss as a Python float and a new gradient array
        of the shape and type of ``x`` (never one it mutates later).
    x : ndarray or torch.Tensor of shape (n,)
        The start; not modified.
    tol : float
        Stop when the largest absolute gradient entry is at most ``tol``
        (``tolerance_grad`` of ``torch.optim.LBFGS``).
    max_iter : int
        Most iterations; at most ``max_iter * 5 // 4`` evaluations of ``fun`` (torch's
        ``max_eval``).
    history_size, tolerance_change : int, float
        As ``torch.optim.LBFGS``: pairs kept, and the change of step or loss below which the
        search stops.

    Returns
    -------
    ndarray or torch.Tensor of shape (n,)
    """
    max_eval = max_iter * 5 // 4
    loss, g = fun(x)
    evals = 1
    if abs(g).max() <= tol:
        return x
    steps, changes, rho = [], [], []  # torch's old_stps, old_dirs (gradient changes), ro
    h_diag = 1
    d = t = g_prev = None
    for n_iter in range(1, max_iter + 1):
        if n_iter == 1:
            d = -g
        else:
            change = g - g_prev
            step = d * t
            ys = change @ step
            if ys > 1e-10:
                if len(steps) == history_size:
                    steps.pop(0), changes.pop(0), rho.pop(0)
                steps.append(step), changes.append(change), rho.append(1.0 / ys)
                h_diag = ys / (change @ change)
            d = _two_loop(g, steps, changes, rho, h_diag)
        g_prev, loss_prev = g, loss
        t = min(1.0, 1.0 / abs(g).sum()) if n_iter == 1 else 1.0
        gtd = g @ d
        if gtd > -tolerance_change:
            break
        loss, g, t, ls_evals = _strong_wolfe(fun, x, t, d, loss, g, gtd,
                                             max_ls=max_eval - evals)
        x = x + t * d
        evals += ls_evals
        if n_iter == max_iter or evals >= max_eval or abs(g).max() <= tol:
            break
        if abs(d * t).max() <= tolerance_change or abs(loss - loss_prev) < tolerance_change:
            break
    return x


def _two_loop(g, steps, changes, rho, h_diag):
    """The L-BFGS direction ``-H g`` from the stored pairs (Nocedal and Wright, Alg. 7.4)."""
    alpha = [None] * len(steps)
    q = -g
    for i in range(len(steps) - 1, -1, -1):
        alpha[i] = (steps[i] @ q) * rho[i]
        q -= alpha[i] * changes[i]
    r = q * h_diag
    for i in range(len(steps)):
        beta = (changes[i] @ r) * rho[i]
        r += (alpha[i] - beta) * steps[i]
    return r


def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """Minimiser of the cubic through two points with their slopes, clipped to ``bounds``."""
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    if d2_square >= 0:
        d2 = d2_square**0.5
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def _strong_wolfe(fun, x, t, d, f, g, gtd, c1=1e-4, c2=0.9, tolerance_change=1e-9, max_ls=25):
    """Step ``t`` along ``d`` meeting the strong Wolfe conditions: ``(f, g, t, evaluations)``.

    Bracketing, then zoom by cubic interpolation (Nocedal and Wright, Algs. 3.5 and 3.6), as
    torch's ``_strong_wolfe``.
    """
    d_norm = abs(d).max()
    f_new, g_new = fun(x + t * d)
    evals = 1
    gtd_new = g_new @ d
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new], [gtd_prev, gtd_new]
            break
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        t_prev, t = t, _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new,
                                          bounds=(min_step, max_step))
        f_prev, g_prev, gtd_prev = f_new, g_new, gtd_new
        f_new, g_new = fun(x + t * d)
        evals += 1
        gtd_new = g_new @ d
        ls_iter += 1
    if ls_iter == max_ls:
        bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]

    insufficient_progress = False
    low, high = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0],
                               bracket[1], bracket_f[1], bracket_gtd[1])
        # a step too close to either end of the bracket is moved inside it
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insufficient_progress or t >= max(bracket) or t <= min(bracket):
                t = max(bracket) - eps if abs(t - max(bracket)) < abs(t - min(bracket)) \
                    else min(bracket) + eps
                insufficient_progress = False
            else:
                insufficient_progress = True
        else:
            insufficient_progress = False
        f_new, g_new = fun(x + t * d)
        evals += 1
        gtd_new = g_new @ d
        ls_iter += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low]:
            bracket[high], bracket_f[high], bracket_g[high] = t, f_new, g_new
            bracket_gtd[high] = gtd_new
            low, high = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high] - bracket[low]) >= 0:
                bracket[high], bracket_f[high] = bracket[low], bracket_f[low]
                bracket_g[high], bracket_gtd[high] = bracket_g[low], bracket_gtd[low]
            bracket[low], bracket_f[low], bracket_g[low] = t, f_new, g_new
            bracket_gtd[low] = gtd_new
    return bracket_f[low], bracket_g[low], bracket[low], evals
