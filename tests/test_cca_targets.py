"""CCA with labels / mel (Pasad et al.): known answers on data built for it."""

from __future__ import annotations

import numpy as np
from conftest import speechlike

from layerwise import cca_targets


def _labels(n, c, rng):
    return np.array([f"w{i}" for i in rng.integers(0, c, n)])


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
    assert abs(cca_targets.pwcca_projected(X, X @ Q, *fit) - 1) < 1e-6


def test_log_mel_is_on_the_frame_grid():
    wave = speechlike(16000, 0)
    mel = cca_targets.log_mel(wave, frame_rate_hz=50)
    assert mel.shape[1] == 80 and abs(mel.shape[0] - 50) <= 1 and np.isfinite(mel).all()
