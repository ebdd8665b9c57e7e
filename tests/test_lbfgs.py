"""layerwise.analyses.lbfgs against torch.optim.LBFGS (the algorithm it ports), a closed-form
minimum, and its limits; linear_probe's objective against autograd."""

import numpy as np
import pytest
import torch

from layerwise.analyses import lbfgs, linear_probe


def rosenbrock(x):
    """Loss and gradient of the n-dimensional Rosenbrock function (curved valley: the line
    search brackets and zooms)."""
    a, b = x[:-1], x[1:]
    loss = (100 * (b - a**2) ** 2 + (1 - a) ** 2).sum()
    grad = x * 0
    grad[:-1] += -400 * a * (b - a**2) - 2 * (1 - a)
    grad[1:] += 200 * (b - a**2)
    return float(loss), grad


def torch_optim(fun, x0: torch.Tensor, *, tol, max_iter):
    """torch.optim.LBFGS from ``x0`` with the settings linear_probe uses: (x, evaluations)."""
    x = x0.clone().requires_grad_(True)
    optimiser = torch.optim.LBFGS([x], lr=1, max_iter=max_iter, tolerance_grad=tol,
                                  tolerance_change=1e-12, history_size=10,
                                  line_search_fn="strong_wolfe")
    evaluations = []

    def closure():
        loss, x.grad = fun(x.detach())
        evaluations.append(loss)
        return torch.tensor(loss, dtype=torch.float64)

    optimiser.step(closure)
    return x.detach(), len(evaluations)


def counted(fun):
    calls = []

    def wrapped(x):
        calls.append(1)
        return fun(x)

    return wrapped, calls


def logistic_loss(seed=5):
    """Loss and gradient of a two-class logistic regression with a small L2 penalty (float64;
    convex, so rounding differences are not amplified along the path)."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((200, 6))
    y = (Z @ rng.standard_normal(6) + rng.standard_normal(200) > 0).astype(float)

    def fun(w):
        xp = torch if isinstance(w, torch.Tensor) else np
        data, target = (torch.as_tensor(Z), torch.as_tensor(y)) if xp is torch else (Z, y)
        p = 1 / (1 + xp.exp(-(data @ w)))
        loss = -(target * xp.log(p) + (1 - target) * xp.log(1 - p)).mean() + 0.005 * (w @ w)
        return float(loss), data.T @ (p - target) / len(target) + 0.01 * w

    return fun


@pytest.mark.parametrize("max_iter", [1, 2, 5, 12, 100])
def test_iterates_equal_torch_optim_lbfgs(max_iter):
    """Same start, same stopping rules: the same point after the same number of evaluations,
    on torch tensors and on NumPy arrays (float64), up to rounding (torch adds ``t d`` in one
    fused operation, NumPy in two)."""
    for fun, start in ((logistic_loss(), np.zeros(6)),
                       (rosenbrock, np.array([-1.2, 1.0, -0.5, 0.8, 1.5, -1.0]))):
        expected, expected_evaluations = torch_optim(fun, torch.as_tensor(start), tol=1e-7,
                                                     max_iter=max_iter)
        if fun is rosenbrock and max_iter > 12:
            # a curved valley amplifies rounding along the path: compare where both end
            np.testing.assert_allclose(expected.numpy(), 1.0, atol=1e-6)
            np.testing.assert_allclose(lbfgs.minimise(fun, start, tol=1e-7, max_iter=max_iter),
                                       1.0, atol=1e-6)
            continue
        for x0 in (torch.as_tensor(start), start):
            counted_fun, calls = counted(fun)
            ours = lbfgs.minimise(counted_fun, x0, tol=1e-7, max_iter=max_iter)
            assert type(ours) is type(x0)
            assert len(calls) == expected_evaluations
            np.testing.assert_allclose(np.asarray(ours), expected.numpy(), rtol=1e-6, atol=1e-9)


def wiggly(x):
    """Several minima along a line: the line search brackets, zooms and swaps ends."""
    xp = torch if isinstance(x, torch.Tensor) else np
    return float((0.1 * x**2 + xp.sin(3 * x)).sum()), 0.2 * x + 3 * xp.cos(3 * x)


def quartic(x):
    return float(((x - 0.5) ** 4).sum() + 0.01 * (x**2).sum()), 4 * (x - 0.5) ** 3 + 0.02 * x


def test_line_search_equals_torch_strong_wolfe():
    """420 line searches (three functions, steepest and random descent directions, first
    steps from 1e-4 to 1000: too short, extrapolated, too long, zoomed) against torch's own
    ``_strong_wolfe`` (torch is pinned in the Makefile): the same step after the same number
    of evaluations."""
    import torch.optim.lbfgs as reference

    rng = np.random.default_rng(4)
    for fun in (rosenbrock, quartic, wiggly):
        for case in range(20):
            x = torch.as_tensor(rng.uniform(-2, 2, 4))
            f, g = fun(x)
            r = torch.as_tensor(rng.standard_normal(4))
            d = -g if case % 2 else (r if r @ g < 0 else -r)
            for t in (1e-4, 1e-2, 0.3, 1.0, 3.0, 30.0, 1000.0):
                expected = reference._strong_wolfe(lambda x, t, d: fun(x + t * d),  # noqa: B023
                                                   x, t, d, f, g, g @ d)
                ours = lbfgs._strong_wolfe(fun, x, t, d, f, g, g @ d)
                assert ours[3] == expected[3]
                assert float(ours[2]) == pytest.approx(float(expected[2]), rel=1e-9, abs=1e-15)
                assert ours[0] == pytest.approx(expected[0], rel=1e-12)


def test_reaches_the_minimum_of_a_quadratic():
    """An independent answer: the minimiser of x'Ax/2 - b'x solves Ax = b."""
    rng = np.random.default_rng(0)
    M = rng.standard_normal((30, 30))
    A, b = M @ M.T / 30 + np.eye(30), rng.standard_normal(30)
    x = lbfgs.minimise(lambda x: (float(x @ A @ x / 2 - b @ x), A @ x - b), np.zeros(30),
                       tol=1e-6, max_iter=1_000, tolerance_change=0)
    assert np.abs(A @ x - b).max() <= 1e-6  # stopped by the gradient, not by a limit
    np.testing.assert_allclose(x, np.linalg.solve(A, b), atol=1e-5)  # |dx| <= |g|_2 / min eig


def test_evaluations_are_bounded_and_an_optimal_start_is_kept():
    fun, calls = counted(rosenbrock)
    lbfgs.minimise(fun, np.array([-1.2, 1.0, 0.3]), tol=1e-12, max_iter=8)
    assert len(calls) <= 8 * 5 // 4
    fun, calls = counted(rosenbrock)
    start = np.ones(4)
    assert lbfgs.minimise(fun, start, tol=1e-6, max_iter=50) is start and len(calls) == 1


def logistic_problem(seed=0, n=300, width=7, n_classes=4):
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, width)).astype(np.float32)
    codes = rng.integers(0, n_classes, n)
    x = rng.standard_normal(width * n_classes + n_classes).astype(np.float32)
    return Z, codes, x


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_probe_objective_equals_autograd(backend):
    """The written-out loss and gradient (NumPy on the CPU, torch on a GPU: here torch on the
    CPU) against torch's own cross-entropy and autograd in float64."""
    Z, codes, x = logistic_problem()
    penalty = 0.01
    if backend == "torch":
        Z, codes, x = torch.as_tensor(Z), torch.as_tensor(codes), torch.as_tensor(x)
    loss, grad = linear_probe._objective(Z, codes, 4, penalty)(x)
    params = torch.tensor(np.asarray(x), dtype=torch.float64, requires_grad=True)
    W, b = params[:28].reshape(7, 4), params[28:]
    data = torch.as_tensor(np.asarray(Z), dtype=torch.float64)
    reference = torch.nn.functional.cross_entropy(data @ W + b, torch.as_tensor(np.asarray(codes)))
    reference = reference + 0.5 * penalty * (W * W).sum()
    reference.backward()
    assert type(grad) is type(x)
    assert loss == pytest.approx(reference.item(), rel=1e-6)
    np.testing.assert_allclose(np.asarray(grad), params.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_torch_tensors_take_the_same_path_as_numpy():
    """The GPU's code path (torch tensors throughout), run on the CPU: the fit NumPy gives."""
    Z, codes, _ = logistic_problem(seed=1)
    x0 = np.zeros(32, dtype=np.float32)
    on_numpy = lbfgs.minimise(linear_probe._objective(Z, codes, 4, 0.01), x0, tol=1e-5,
                              max_iter=200)
    on_torch = lbfgs.minimise(
        linear_probe._objective(torch.as_tensor(Z), torch.as_tensor(codes), 4, 0.01),
        torch.as_tensor(x0), tol=1e-5, max_iter=200)
    assert isinstance(on_torch, torch.Tensor)
    np.testing.assert_allclose(on_torch.numpy(), on_numpy, atol=1e-4)
