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


def test_log_mel_windows_see_only_their_own_samples():
    wave = speechlike(16000, 0)
    wave[8000:8400] += np.sin(2 * np.pi * 3000 * np.arange(400) / 16000)  # a 3 kHz tone
    starts = np.array([-200, 7600, 8000, 15800])
    mel = cca_targets.log_mel_windows(wave, starts, starts + 400)
    assert mel.shape == (4, 80) and np.isfinite(mel).all()
    from transformers.audio_utils import hertz_to_mel, mel_to_hertz

    edges = np.linspace(hertz_to_mel(0.0, "slaney"), hertz_to_mel(8000.0, "slaney"), 82)
    centre_hz = mel_to_hertz(edges[1 + np.argmax(mel[2] - mel[1])], "slaney")  # window 2 only
    assert 2800 < centre_hz < 3200
