"""The analyses the workflow runs on pooled matrices, behind one call each.

Each analysis takes every layer of one model for one (span, pooling) — all on the same rows,
described by the pool index — and returns a tidy table (see the README for columns). The
workflow's ``analyse_*`` rules call :func:`run`; cross-model similarity first aligns the rows of
two models (:func:`align_rows`), since a file one model rejected is missing from its index.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)
NAMES = ("similarity", "probes", "convexity", "clustering", "featstats", "embed", "cca")
#: CCA needs a target: the unit label (word/phone spans) or log-mel frames (frame span).
CCA_SPANS = ("word", "phone", "frame")
UNIT_LABELS = {"word": ["word"], "phone": ["phone"], "frame": ["word", "phone"], "utterance": []}


def label_columns(index: pd.DataFrame, labels: Sequence[str], span: str) -> list[str]:
    """Corpus labels plus the unit labels of the span, keeping those with ≥ 2 classes."""
    cols = [c for c in [*labels, *UNIT_LABELS[span]] if c in index.columns]
    return [c for c in cols if index[c].replace("", np.nan).dropna().nunique() >= 2]


def run(name: str, index: pd.DataFrame, layers: dict[str, np.ndarray], *, model: str, span: str,
        pooling: str, labels: Sequence[str], params: dict, seed: int = 0,
        mel: np.ndarray | None = None, n_jobs: int = 1,
        features: Sequence[str | Path] = ()) -> pd.DataFrame:
    """Run analysis ``name`` (one of :data:`NAMES`) with its config section ``params``.

    ``features`` (the model's feature files) make similarity on the frame span exact over
    every frame of every utterance, streamed from the files; its n x n metrics, and every
    other analysis, use the pooled frame sample ``layers``.
    ``mel`` (log-mel rows of a frame-span index) is the target of CCA on the frame span.
    ``n_jobs`` processes share the probes' layers (the job's threads; the fits themselves
    are single-threaded).
    """
    ctx = {"model": model, "span": span, "pooling": pooling}
    if name == "cca":
        return _cca(index, layers, model=model, span=span, mel=mel, seed=seed, **params)
    cols = label_columns(index, labels, span)
    if name == "similarity" and span == "frame" and features:
        return _all_frame_similarity(index, layers, features, seed=seed, params=params, **ctx)
    if name == "similarity":
        from layerwise.analyses.similarity import similarity_table

        return similarity_table(layers, None, model_a=model, model_b=model, span=span,
                                pooling=pooling, seed=seed, groups=_utterances(index), **params)
    if name == "featstats":
        from layerwise.analyses.featstats import featstats_table

        return featstats_table(layers, model=model, seed=seed, **params)
    labeled = _rows_with_labels(index, cols)
    if name in ("convexity", "clustering", "embed"):
        return _scaled(name, index, layers, labeled, cols, params, seed=seed, **ctx)
    sub_layers = {k: v[labeled] for k, v in layers.items()}
    sub_index = index.iloc[labeled].reset_index(drop=True)
    if name == "probes":
        from layerwise.analyses.probes import probe_table

        group, fallback = params.get("group"), params.get("fallback_group", "utt_id")
        return probe_table(sub_layers, sub_index, label_columns=cols, seed=seed,
                           probe=params.get("probe", "logreg"), folds=params.get("folds", 5),
                           group=group if group in sub_index.columns else None,
                           fallback_group=fallback if fallback in sub_index.columns else None,
                           n_jobs=n_jobs, **ctx)
    raise ValueError(f"unknown analysis {name!r}; known: {', '.join(NAMES)}")


def _scaled(name, index, layers, labeled, cols, params, *, seed, span, **ctx):
    """Convexity, clustering and embed: rows are read lazily (only those used, one layer at a
    time), so that a memory-mapped pooled folder is never copied whole."""
    from layerwise.analyses import subsample

    if name == "embed":
        from layerwise.analyses.embed import embedding_table

        return embedding_table(layers, index, label_columns=cols or ["utt_id"],
                               layers_to_embed=params["layers"], methods=params["methods"],
                               max_rows=params["max_rows"], seed=seed, span=span, **ctx)
    sub_layers = subsample.take(layers, labeled)
    sub_index = index.iloc[labeled].reset_index(drop=True)
    if name == "convexity":
        from layerwise.analyses.convexity import convexity_table

        limited = [c for c in UNIT_LABELS[span] if c in cols]
        return convexity_table(sub_layers, sub_index, label_columns=cols, limited=limited,
                               seed=seed, span=span, **params, **ctx)
    from layerwise.analyses.clustering import clustering_table

    return clustering_table(sub_layers, sub_index, label_columns=cols, seed=seed, span=span,
                            **params, **ctx)


def _cca(index, layers, *, model, span, mel, seed, n_trials=3, min_count=6):
    from layerwise.analyses import cca_targets

    if span == "frame":
        if mel is None:
            raise ValueError("CCA on the frame span needs the log-mel matrix")
        return cca_targets.cca_table(layers, mel, target_name="mel", model=model, span=span,
                                     n_trials=n_trials, seed=seed)
    labels = index[span].fillna("").astype(str).to_numpy()
    keep = cca_targets.min_count_filter(labels, min_count) & (labels != "")
    if len(np.unique(labels[keep])) < 2:
        raise ValueError(f"CCA with {span} identity needs ≥ 2 {span} types with ≥ {min_count} "
                         "tokens (analysis.cca.min_count)")
    return cca_targets.cca_table({k: v[keep] for k, v in layers.items()},
                                 cca_targets.one_hot(labels[keep]), target_name=span, model=model,
                                 span=span, strata=labels[keep], n_trials=n_trials, seed=seed)


def _all_frame_similarity(index, layers, features, *, model, span, pooling, seed, params):
    """Within-model similarity over every frame of the feature store, read chunk by chunk
    (bootstrap clusters: utterances); ``cka_rbf`` and ``mutual_knn`` on the pooled sample."""
    from layerwise.analyses.similarity import similarity_table
    from layerwise.errors import InputError
    from layerwise.io import store

    fs = store.open([Path(p) for p in features])
    streamed = {name: store.StoredRows(fs, name) for name in layers}
    try:
        counts = {name: M.shape[0] for name, M in streamed.items()}
        first = next(iter(layers))
        differ = [name for name, k in counts.items() if k != counts[first]]
        if differ:
            raise InputError(f"{fs.paths[0]}: layers {', '.join(differ)} have other frame "
                             f"grids than {first} ({counts[first]} frames), so their frames "
                             "are not matched; keep frame-grid-equal layers in extract.frames")
        log.info("similarity over all %d frames of %d utterances, streamed from %d files",
                 counts[first], len(fs.utt_ids), len(fs.paths))
        return similarity_table(streamed, None, model_a=model, model_b=model, span=span,
                                pooling=pooling, seed=seed,
                                groups=store.stored_utterances(fs, first),
                                sample_from=layers, sample_groups=_utterances(index), **params)
    finally:
        for M in streamed.values():
            M.close()


def _utterances(index: pd.DataFrame) -> np.ndarray | None:
    """The utterance of each row: the bootstrap resamples utterances, since the words,
    phones and frames of one utterance are not independent samples.  None (rows are
    resampled) when there are fewer than two utterances to resample."""
    if "utt_id" not in index.columns or index["utt_id"].nunique() < 2:
        return None
    return index["utt_id"].astype(str).to_numpy()


def _rows_with_labels(index: pd.DataFrame, cols: Sequence[str]) -> np.ndarray:
    """Rows whose unit labels are known (frames outside any word carry an empty label)."""
    if not cols:
        return np.arange(len(index))
    known = np.ones(len(index), dtype=bool)
    for c in cols:
        known &= index[c].fillna("").astype(str).ne("").to_numpy()
    return np.flatnonzero(known)


def align_rows(index_a: pd.DataFrame, index_b: pd.DataFrame, *, span: str
               ) -> tuple[np.ndarray, np.ndarray]:
    """Row numbers of the units present in both indexes, in A's order.

    Units are the same unit in both models when their keys are equal: ``(utt_id, time_s)`` for
    the frame span (both models' rows sit at the corpus's sample instants), ``(utt_id, start_s,
    end_s)`` otherwise. Rows without a partner (an utterance one model rejected) are dropped
    and counted in the log; a row is never paired twice.
    """
    key = ["utt_id", "time_s"] if span == "frame" else ["utt_id", "start_s", "end_s"]
    for name, index in (("A", index_a), ("B", index_b)):
        if not set(key) <= set(index.columns):
            raise ValueError(f"index {name} has no {', '.join(key)} columns (a frame index "
                             "written by an older layerwise: rebuild it)")
    a, b = (_keys(index, key).assign(**{r: np.arange(len(index))})
            for index, r in ((index_a, "ra"), (index_b, "rb")))
    merged = a.merge(b, on=key, how="inner", validate="one_to_one", sort=False)
    log.info("%s span: %d rows in both models; dropped %d of A's %d rows and %d of B's %d",
             span, len(merged), len(a) - len(merged), len(a), len(b) - len(merged), len(b))
    return merged["ra"].to_numpy(), merged["rb"].to_numpy()


def _keys(index: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """Key columns with times as whole microseconds, so text and float indexes compare."""
    out = index[key].astype({"utt_id": str})
    times = [c for c in key if c != "utt_id"]
    out[times] = np.rint(out[times].astype(float).to_numpy() * 1e6).astype(np.int64)
    return out


def cross_similarity(index_a, layers_a, index_b, layers_b, *, model_a: str, model_b: str,
                     span: str, pooling: str, params: dict, seed: int = 0) -> pd.DataFrame:
    """Every layer of model A against every layer of model B on the units both have."""
    from layerwise.analyses.similarity import similarity_table

    ra, rb = align_rows(index_a, index_b, span=span)
    utterances = _utterances(index_a)
    return similarity_table({k: v[ra] for k, v in layers_a.items()},
                            {k: v[rb] for k, v in layers_b.items()}, model_a=model_a,
                            model_b=model_b, span=span, pooling=pooling, seed=seed,
                            groups=None if utterances is None else utterances[ra], **params)
