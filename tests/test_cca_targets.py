"""CCA with labels / mel targets (Pasad et al.): known answers on data built for it, and Morcos et
al.'s PWCCA written out here, independently of the package."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
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
