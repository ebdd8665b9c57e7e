"""CCA with labels / mel targets (Pasad et al.): known answers on data built for it, and Morcos et
al.'s PWCCA written out here, independently of the package."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn.model_selection import train_test_split

from layerwise.analyses import cca_targets
from layerwise.analyses.similarity import pwcca


def _labels(n, c, rng):
    return np.array([f"w{i}" for i in rng.integers(0, c, n)])


def _inv_sqrt(S):
    w, V = np.linalg.eigh(S)
    return (V / np.sqrt(w)) @ V.T


def morcos_pwcca(X_fit, Y_fit, X, Y, side="x"):
    """Morcos et al. (2018): plain CCA by whitening the covariances of the fitted rows,
    variates of the rows (X, Y), correlations weighted by
    ``α_i = Σ_j |<h_i / ||h_i||, x_j>|`` over the centred neurons of the weighted side."""
    mx, my = X_fit.mean(0), Y_fit.mean(0)
    Xc, Yc = X_fit - mx, Y_fit - my
    Wx, Wy = _inv_sqrt(Xc.T @ Xc), _inv_sqrt(Yc.T @ Yc)
    U, _, Vt = np.linalg.svd(Wx @ (Xc.T @ Yc) @ Wy)
    c = min(X.shape[1], Y.shape[1])
    H = (X - mx) @ Wx @ U[:, :c]
    G = (Y - my) @ Wy @ Vt[:c].T
    H, G = H - H.mean(0), G - G.mean(0)
    rho = (H * G).sum(0) / (np.linalg.norm(H, axis=0) * np.linalg.norm(G, axis=0))
    variates, neurons = (H, X) if side == "x" else (G, Y)
    variates = variates / np.linalg.norm(variates, axis=0)
    alpha = np.abs(variates.T @ (neurons - neurons.mean(0))).sum(1)
    return float(alpha @ rho / alpha.sum())


def standardised_pwcca(X, Y):
    """The weighting cca_targets used before: |correlation| of standardised neurons."""
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    Wx, Wy = _inv_sqrt(Xc.T @ Xc), _inv_sqrt(Yc.T @ Yc)
    U, rho, _ = np.linalg.svd(Wx @ (Xc.T @ Yc) @ Wy)
    c = min(X.shape[1], Y.shape[1])
    H = Xc @ Wx @ U[:, :c]
    corr = (Xc / np.linalg.norm(Xc, axis=0)).T @ (H / np.linalg.norm(H, axis=0))
    alpha = np.abs(corr).sum(0)
    return float(alpha @ rho[:c] / alpha.sum())


@pytest.fixture
def loud_layer():
    """A layer whose three large-variance neurons relate only weakly to the target: weighted
    by their projections (Morcos) PWCCA is 0.24, by correlations of standardised neurons 0.48."""
    rng = np.random.default_rng(11)
    n = 500
    Y = rng.standard_normal((n, 6))
    related = Y[:, :3] @ rng.standard_normal((3, 3)) + 0.5 * rng.standard_normal((n, 3))
    loud = 8.0 * rng.standard_normal((n, 3)) + Y[:, 3:]
    return np.hstack([related, loud]), Y


def test_pwcca_is_morcos_formula_and_cca_targets_uses_it(loud_layer):
    X, Y = loud_layer
    expected = morcos_pwcca(X, Y, X, Y)
    assert abs(expected - standardised_pwcca(X, Y)) > 0.1  # the two weightings differ here
    assert pwcca(X, Y) == pytest.approx(expected, abs=1e-10)
    fit = cca_targets.fit_cca(X, Y, 0.0)
    assert cca_targets.pwcca_projected(X, Y, fit) == pytest.approx(expected, abs=1e-10)


def test_heldout_pwcca_is_morcos_formula_on_the_test_rows(loud_layer):
    """Pasad et al.'s protocol with one ε: fit on train, Morcos' PWCCA of the test rows."""
    X, Y = loud_layer
    idx = np.arange(len(X))
    expected = []
    for trial in range(2):
        train, rest = train_test_split(idx, test_size=0.4, random_state=trial)
        _, test = train_test_split(rest, test_size=0.5, random_state=trial)
        expected.append(morcos_pwcca(X[train], Y[train], X[test], Y[test]))
    mean, low, high = cca_targets.heldout_pwcca(X, Y, n_trials=2, epsilons=(0.0,))
    assert mean == pytest.approx(np.mean(expected), abs=1e-9)
    assert (low, high) == pytest.approx((min(expected), max(expected)), abs=1e-9)


@pytest.mark.parametrize(("side", "weights"), [("layer", "x"), ("target", "y"), ("fewer", "y")])
def test_weighted_side(side, weights, loud_layer):
    """'fewer' is Pasad et al.'s choice: X if it has fewer dimensions, else Y (here a tie)."""
    X, Y = loud_layer
    fit = cca_targets.fit_cca(X, Y, 0.0)
    got = cca_targets.pwcca_projected(X, Y, fit, weighted_side=side)
    assert got == pytest.approx(morcos_pwcca(X, Y, X, Y, side=weights), abs=1e-10)
    with pytest.raises(ValueError, match="weighted_side"):
        cca_targets.heldout_pwcca(X, Y, weighted_side="both")


def test_layer_that_encodes_the_labels_scores_near_one():
    rng = np.random.default_rng(0)
    labels = _labels(600, 8, rng)
    Y = cca_targets.one_hot(labels)
    X = Y @ rng.standard_normal((8, 40)) + 0.01 * rng.standard_normal((600, 40))
    mean, low, high = cca_targets.heldout_pwcca(X, Y, strata=labels, seed=0)
    assert mean > 0.95 and low <= mean <= high


def test_independent_layer_scores_low():
    rng = np.random.default_rng(1)
    labels = _labels(600, 8, rng)
    X = rng.standard_normal((600, 40))
    mean, *_ = cca_targets.heldout_pwcca(X, cca_targets.one_hot(labels), strata=labels, seed=0)
    assert mean < 0.3


def test_fit_cca_recovers_correlations_of_a_rotation():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((500, 6))
    Q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    fit = cca_targets.fit_cca(X, X @ Q, 0.0)
    np.testing.assert_allclose(fit.correlations, 1.0, atol=1e-10)
    assert abs(cca_targets.pwcca_projected(X, X @ Q, fit) - 1) < 1e-6


def test_table_reports_a_range_over_trials_not_an_interval():
    rng = np.random.default_rng(3)
    labels = _labels(300, 4, rng)
    Y = cca_targets.one_hot(labels)
    layers = {"layer.0": Y @ rng.standard_normal((4, 10)) + rng.standard_normal((300, 10))}
    table = cca_targets.cca_table(layers, Y, target_name="word", model="m", span="word",
                                  strata=labels, n_trials=3, progress=False)
    assert list(table.columns) == list(cca_targets.CCA_COLUMNS)
    row = table.iloc[0]
    assert row.trial_min <= row.value <= row.trial_max and row.n_trials == 3
    assert "ci_low" not in table.columns
    assert isinstance(table, pd.DataFrame)


def ridge_heldout_pwcca(X, Y, *, n_trials, seed, epsilons):
    """Pasad et al.'s protocol written out: per trial a 60/20/20 split, ridge CCA by whitening
    ``cov / mean variance + ε I`` of the training rows for each ε, the ε of best dev PWCCA,
    its PWCCA on the test rows (:func:`morcos_pwcca`'s weights, on the layer's neurons)."""
    scores = []
    for t in range(n_trials):
        idx = np.arange(len(X))
        train, rest = train_test_split(idx, test_size=0.4, random_state=seed + t)
        dev, test = train_test_split(rest, test_size=0.5, random_state=seed + t)
        Xt, Yt = X[train] - X[train].mean(0), Y[train] - Y[train].mean(0)
        n = len(train)
        Sxx, Syy = Xt.T @ Xt / (n - 1), Yt.T @ Yt / (n - 1)
        fits = []
        for eps in epsilons:
            Wx = _inv_sqrt(Sxx / np.trace(Sxx) * len(Sxx) + eps * np.eye(len(Sxx)))
            Wy = _inv_sqrt(Syy / np.trace(Syy) * len(Syy) + eps * np.eye(len(Syy)))
            sx, sy = np.sqrt(np.trace(Sxx) / len(Sxx)), np.sqrt(np.trace(Syy) / len(Syy))
            U, _, Vt = np.linalg.svd(Wx @ (Xt.T @ Yt / (n - 1) / (sx * sy)) @ Wy)
            c = min(X.shape[1], Y.shape[1])
            fits.append((Wx @ U[:, :c] / sx, Wy @ Vt[:c].T / sy))

        def score(rows, fit, train=train):
            H = (X[rows] - X[train].mean(0)) @ fit[0]
            G = (Y[rows] - Y[train].mean(0)) @ fit[1]
            H, G = H - H.mean(0), G - G.mean(0)
            rho = (H * G).sum(0) / (np.linalg.norm(H, axis=0) * np.linalg.norm(G, axis=0))
            H = H / np.linalg.norm(H, axis=0)
            alpha = np.abs(H.T @ (X[rows] - X[rows].mean(0))).sum(1)
            return float(alpha @ rho / alpha.sum())

        best = max(fits, key=lambda fit: score(dev, fit))
        scores.append(score(test, best))
    return np.array(scores)


def test_table_equals_the_protocol_written_out_layer_by_layer():
    """The table shares the target's and each layer's training SVDs across layers and ε: its
    values are those of the protocol fitted from scratch for every (layer, trial, ε), on the
    selected rows of each layer."""
    rng = np.random.default_rng(7)
    n, keep = 400, rng.random(400) < 0.8
    Y = rng.standard_normal((keep.sum(), 6))
    layers = {f"layer.{i}": rng.standard_normal((n, 9)) * rng.uniform(0.2, 5, 9) for i in range(3)}
    for i, X in enumerate(layers.values()):
        X[keep, :6] += (1 + i) * Y @ rng.standard_normal((6, 6))
    table = cca_targets.cca_table(layers, Y, target_name="mel", model="m", span="frame",
                                  n_trials=3, seed=5, rows=np.flatnonzero(keep), progress=False)
    for row in table.itertuples():
        expected = ridge_heldout_pwcca(layers[row.layer][keep], Y, n_trials=3, seed=5,
                                       epsilons=cca_targets.EPSILONS)
        assert (row.value, row.trial_min, row.trial_max) == pytest.approx(
            (expected.mean(), expected.min(), expected.max()), abs=1e-9)
    with pytest.raises(ValueError, match="target has 10 rows"):
        cca_targets.cca_table(layers, Y[:10], target_name="mel", model="m", span="frame",
                              n_trials=1, rows=np.flatnonzero(keep), progress=False)


def test_sparse_one_hot_target_equals_its_dense_matrix():
    """A one-hot target stays sparse (its cross-products are class sums, not n x d x c
    products, and its centred rows are never formed); the values are those of the dense
    indicator matrix, whose path the test above checks against the protocol written out."""
    rng = np.random.default_rng(8)
    labels = _labels(500, 7, rng)
    Y = cca_targets.one_hot(labels)
    assert sparse.issparse(Y) and Y.shape == (500, 7)
    dense = Y.toarray()
    np.testing.assert_array_equal(dense[np.arange(500), np.unique(labels, return_inverse=True)[1]],
                                  1.0)
    np.testing.assert_array_equal(dense.sum(1), 1.0)
    layers = {f"layer.{i}": rng.standard_normal((500, 9)) * rng.uniform(0.2, 5, 9)
              for i in range(2)}
    for i, X in enumerate(layers.values()):
        X[:, :7] += (1 + i) * dense @ rng.standard_normal((7, 7))
    kwargs = dict(target_name="word", model="m", span="word", strata=labels, n_trials=2,
                  seed=3, progress=False)
    got = cca_targets.cca_table(layers, Y, **kwargs)
    want = cca_targets.cca_table(layers, dense, **kwargs)
    cols = ["value", "trial_min", "trial_max"]
    np.testing.assert_allclose(got[cols].to_numpy(), want[cols].to_numpy(), rtol=0, atol=1e-12)
    # the centred indicators have rank 6: the dense fit may keep a 7th variate of rounding
    rho = cca_targets.fit_cca(layers["layer.0"], Y, 0.01).correlations
    rho_dense = cca_targets.fit_cca(layers["layer.0"], dense, 0.01).correlations
    assert rho[:6] == pytest.approx(rho_dense[:6], abs=1e-12)
    assert np.all(rho[6:] < 1e-10) and np.all(rho_dense[6:] < 1e-10)


def test_directions_path_equals_one_fit_per_epsilon():
    from layerwise.analyses.similarity import PrincipalBasis, cca_directions, cca_directions_path

    rng = np.random.default_rng(8)
    X = rng.standard_normal((120, 7))
    Y = X[:, :4] @ rng.standard_normal((4, 5)) + rng.standard_normal((120, 5))
    path = cca_directions_path(PrincipalBasis.of(X), PrincipalBasis.of(Y), [0.0, 0.01, 1.0])
    for fit, eps in zip(path, [0.0, 0.01, 1.0], strict=True):
        one = cca_directions(X, Y, epsilon=eps)
        for a, b in zip(fit.__dict__.values(), one.__dict__.values(), strict=True):
            np.testing.assert_array_equal(a, b)
    flat = cca_directions_path(PrincipalBasis.of(np.ones((5, 2))), PrincipalBasis.of(Y[:5]), [0.1])
    assert flat[0].x.shape == (2, 0) and flat[0].correlations.size == 0


def test_held_out_variate_constant_on_new_rows_is_left_out():
    """A variate that does not vary on the scored rows (here: x's third neuron is constant on
    them) has no correlation and no direction; Morcos' PWCCA over the others, written out."""
    from layerwise.analyses.similarity import CCADirections, UndefinedSimilarityWarning

    rng = np.random.default_rng(9)
    X, Y = rng.standard_normal((60, 3)), rng.standard_normal((60, 3))
    X[:, 2] = 4.0
    Y[:, :2] += X[:, :2]
    fit = CCADirections(np.zeros(3), np.zeros(3), np.eye(3), np.eye(3), np.ones(3))
    H, G = X[:, :2] - X[:, :2].mean(0), Y[:, :2] - Y[:, :2].mean(0)
    rho = (H * G).sum(0) / (np.linalg.norm(H, axis=0) * np.linalg.norm(G, axis=0))
    alpha = np.abs((H / np.linalg.norm(H, axis=0)).T @ (X - X.mean(0))).sum(1)
    got = cca_targets.pwcca_projected(X, Y, fit)
    assert got == pytest.approx(float(alpha @ rho / alpha.sum()), abs=1e-12)
    with pytest.warns(UndefinedSimilarityWarning, match="no canonical variate varies"):
        assert np.isnan(cca_targets.pwcca_projected(np.ones((60, 3)), Y, fit))
