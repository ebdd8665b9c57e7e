"""CCA of each layer with a known target: word / phone identity, or log-mel features.

Pasad et al. (2021, "Layer-wise analysis of a self-supervised speech representation model";
2023, "Comparative layer-wise analysis of self-supervised speech models") measure how much of a
layer is linearly related to word identity, phone identity or the log-mel spectrum with
projection-weighted CCA (Morcos et al. 2018) under a held-out protocol:

1. split the rows into train / dev / test (stratified by the label when there is one);
2. fit regularised CCA on train for each ε in a grid (ε added to both covariance diagonals,
   relative to their mean variance), keep the ε whose PWCCA is best on dev;
3. report PWCCA of the held-out test rows, projected with the train directions;
4. average over ``n_trials`` random splits (mean, and a percentile band as ``ci_low/ci_high``).

PWCCA weights each canonical direction by how much of layer X's neurons it accounts for
(sum of |correlation| of the neurons with the canonical variate), normalised to sum to one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

EPSILONS = (1e-4, 1e-3, 1e-2, 1e-1)


def one_hot(labels: np.ndarray) -> np.ndarray:
    """(n, C) indicator matrix of string labels."""
    classes, idx = np.unique(np.asarray(labels).astype(str), return_inverse=True)
    out = np.zeros((len(idx), len(classes)))
    out[np.arange(len(idx)), idx] = 1.0
    return out


def _inv_sqrt(S: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh(S)
    return (V / np.sqrt(np.clip(w, 1e-12, None))) @ V.T


def fit_cca(X: np.ndarray, Y: np.ndarray, epsilon: float):
    """Canonical directions (A for X, B for Y) and the train means, regularised by ε."""
    mx, my = X.mean(0), Y.mean(0)
    Xc, Yc = X - mx, Y - my
    n = len(X)
    Sxx, Syy, Sxy = Xc.T @ Xc / n, Yc.T @ Yc / n, Xc.T @ Yc / n
    Sxx += epsilon * np.trace(Sxx) / len(Sxx) * np.eye(len(Sxx)) + 1e-10 * np.eye(len(Sxx))
    Syy += epsilon * np.trace(Syy) / len(Syy) * np.eye(len(Syy)) + 1e-10 * np.eye(len(Syy))
    Wx, Wy = _inv_sqrt(Sxx), _inv_sqrt(Syy)
    U, _, Vt = np.linalg.svd(Wx @ Sxy @ Wy, full_matrices=False)
    k = min(np.linalg.matrix_rank(Xc), np.linalg.matrix_rank(Yc), U.shape[1])
    return Wx @ U[:, :k], Wy @ Vt[:k].T, mx, my


def pwcca_projected(X: np.ndarray, Y: np.ndarray, A, B, mx, my) -> float:
    """PWCCA of (X, Y) projected on given directions (correlations and weights on X)."""
    Xc, Yc = X - mx, Y - my
    U, V = Xc @ A, Yc @ B
    U, V = U - U.mean(0), V - V.mean(0)
    nu, nv = np.linalg.norm(U, axis=0), np.linalg.norm(V, axis=0)
    ok = (nu > 1e-12) & (nv > 1e-12)
    if not ok.any():
        return float("nan")
    rho = np.abs((U[:, ok] * V[:, ok]).sum(0) / (nu[ok] * nv[ok]))
    Xn = Xc - Xc.mean(0)
    xnorm = np.linalg.norm(Xn, axis=0)
    keep = xnorm > 1e-12
    corr = (Xn[:, keep] / xnorm[keep]).T @ (U[:, ok] / nu[ok])  # neurons × directions
    alpha = np.abs(corr).sum(0)
    return float((alpha * rho).sum() / alpha.sum())


def heldout_pwcca(X: np.ndarray, Y: np.ndarray, *, strata: np.ndarray | None = None,
                  n_trials: int = 3, seed: int = 0, epsilons=EPSILONS) -> tuple[float, float, float]:
    """Mean held-out PWCCA over trials and its 2.5–97.5 % band: ``(mean, low, high)``."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    scores = []
    for t in range(n_trials):
        rs = seed + t
        idx = np.arange(len(X))
        train, rest = train_test_split(idx, test_size=0.4, random_state=rs,
                                       stratify=_safe_strata(strata, idx))
        dev, test = train_test_split(rest, test_size=0.5, random_state=rs,
                                     stratify=_safe_strata(strata, rest))
        best, best_dev = None, -np.inf
        for eps in epsilons:
            fit = fit_cca(X[train], Y[train], eps)
            score = pwcca_projected(X[dev], Y[dev], *fit)
            if score > best_dev:
                best, best_dev = fit, score
        scores.append(pwcca_projected(X[test], Y[test], *best))
    s = np.array(scores)
    return float(s.mean()), float(np.percentile(s, 2.5)), float(np.percentile(s, 97.5))


def _safe_strata(strata, idx):
    """Stratify when every class has ≥ 2 rows in this subset; otherwise split at random."""
    if strata is None:
        return None
    sub = np.asarray(strata)[idx]
    _, counts = np.unique(sub, return_counts=True)
    return sub if counts.min() >= 2 else None


def min_count_filter(labels: np.ndarray, min_count: int) -> np.ndarray:
    """Rows whose label occurs at least ``min_count`` times (rare words cannot be held out)."""
    labels = np.asarray(labels).astype(str)
    classes, counts = np.unique(labels, return_counts=True)
    keep = set(classes[counts >= min_count])
    return np.array([lab in keep for lab in labels])


def cca_table(layers: dict[str, np.ndarray], target: np.ndarray, *, target_name: str, model: str,
              span: str, strata: np.ndarray | None = None, n_trials: int = 3, seed: int = 0,
              progress: bool = True) -> pd.DataFrame:
    """Held-out PWCCA of every layer with ``target`` (one-hot labels or mel features).

    Columns: ``model, layer, span, target, metric, value, ci_low, ci_high`` (metric ``pwcca``).
    """
    from tqdm.auto import tqdm

    rows = []
    for name, X in tqdm(layers.items(), desc=f"cca-{target_name}", disable=not progress):
        mean, low, high = heldout_pwcca(X, target, strata=strata, n_trials=n_trials, seed=seed)
        rows.append((model, name, span, target_name, "pwcca", mean, low, high))
    return pd.DataFrame(rows, columns=["model", "layer", "span", "target", "metric", "value",
                                       "ci_low", "ci_high"])


def log_mel(wave: np.ndarray, *, sample_rate: int = 16000, frame_rate_hz: float = 50.0,
            n_mels: int = 80) -> np.ndarray:
    """80-bin log-mel frames (25 ms windows) on the model's frame grid: (T, n_mels)."""
    from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

    hop = int(round(sample_rate / frame_rate_hz))
    win = int(0.025 * sample_rate)
    mel = mel_filter_bank(num_frequency_bins=win // 2 + 1 if win % 2 == 0 else (win + 1) // 2,
                          num_mel_filters=n_mels, min_frequency=0.0,
                          max_frequency=sample_rate / 2, sampling_rate=sample_rate,
                          norm="slaney", mel_scale="slaney")
    spec = spectrogram(wave.astype(np.float64), window_function(win, "hann"), frame_length=win,
                       hop_length=hop, power=2.0, mel_filters=mel, log_mel="log10",
                       mel_floor=1e-10, center=True)
    return spec.T.astype(np.float32)


def mel_matrix(index: pd.DataFrame, wav_paths: dict[str, str], *, frame_rate_hz: float,
               sample_rate: int = 16000) -> np.ndarray:
    """Log-mel frames for the rows of a frame-span index (one utterance decoded at a time)."""
    from layerwise import audio

    out = np.zeros((len(index), 80), dtype=np.float32)
    for utt, rows in index.groupby("utt_id", sort=False).indices.items():
        mel = log_mel(audio.load(wav_paths[utt], sample_rate=sample_rate, min_seconds=0),
                      sample_rate=sample_rate, frame_rate_hz=frame_rate_hz)
        k = (index["start_s"].to_numpy(dtype=float)[rows] * frame_rate_hz + 1e-6).astype(int)
        out[rows] = mel[np.clip(k, 0, len(mel) - 1)]
    return out
