"""Temporal-dynamics figures straight from the feature store (one utterance, several layers)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from layerwise.plots import style
from layerwise.plots.temporal import self_similarity, trajectory_gif


def temporal_figures(fs, alignments: pd.DataFrame, out_png: str | Path, out_gif: str | Path, *,
                     corpus: str, model: str, utt_id: str | None = None, max_layers: int = 6):
    """Self-similarity matrices and the PCA trajectory GIF of one utterance.

    The utterance is ``utt_id`` or else the first (sorted id) that has word alignments; layers
    are up to ``max_layers`` transformer layers stored frame by frame, evenly spread.
    """
    framed = [n for n in fs.layers if fs.layer_info(n).get("storage") == "frames"]
    if not framed:
        raise ValueError("no layer is stored frame by frame (extract.frames)")
    words_tier = alignments[alignments["tier"] == "word"]
    if utt_id is None:
        aligned = sorted(set(words_tier["utt_id"]) & set(fs.utt_ids))
        utt_id = aligned[0] if aligned else sorted(fs.utt_ids)[0]
    chosen = style.pick_evenly(framed, max_layers)
    frames = {n: fs.frames(n, utt_id) for n in chosen}
    rates = {n: float(fs.layer_info(n)["frame_rate_hz"]) for n in chosen}
    g = words_tier[words_tier["utt_id"] == utt_id]
    words = list(zip(g["start_s"], g["end_s"], g["label"], strict=True)) or None
    kw = {"corpus": corpus, "model": model, "utt_id": utt_id, "frame_rate_hz": rates,
          "words": words}
    self_similarity(frames, out_png, **kw)
    trajectory_gif(frames, out_gif, **kw)
