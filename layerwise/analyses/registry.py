"""The analyses of pooled matrices, registered once: name → function, spans, config section.

The rules take the analysis names and the spans each applies to from here, and
:func:`layerwise.analyses.run` calls the registered function with the config section exactly as
the schema filled it in. Each function's keyword-only parameters without a default *are* the
keys of its section, so the defaults live only in the schema: a section missing a key stops
with the key's name (:func:`check_params`), never with a default of the library's own.

Modules are imported inside the functions, so that reading the registry (the rules do, when
Snakemake starts) imports no scikit-learn.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from layerwise.vocabulary import SPANS

log = logging.getLogger(__name__)

#: The unit labels each span's rows carry (frames: the word and phone at the instant).
UNIT_LABELS = {"word": ["word"], "phone": ["phone"], "frame": ["word", "phone"], "utterance": []}


@dataclass(frozen=True)
class Rows:
    """What every analysis gets: all layers of one model on the rows of one (span, pooling)."""

    index: pd.DataFrame
    layers: Mapping[str, np.ndarray]  # a pooled folder's are mapped on lookup (pooled.Layers)
    model: str
    span: str
    pooling: str
    labels: list[str]  # label columns with ≥ 2 classes (label_columns)
    seed: int
    mel: np.ndarray | None = None  # log-mel rows: the CCA target of the frame span
    n_jobs: int = 1
    features: tuple[str, ...] = ()  # the model's feature files: similarity over every frame

    @property
    def context(self) -> dict:
        return {"model": self.model, "span": self.span, "pooling": self.pooling}


@dataclass(frozen=True)
class Analysis:
    name: str
    compute: Callable[..., pd.DataFrame]
    spans: tuple[str, ...]
    section: str  # the config section analysis.<section>
    #: spreads its work over the job's threads (similarity and CCA by threads, the per-layer
    #: analyses by worker processes, ``layer_tasks``); one that does not gets a one-core job
    parallel: bool = False

    @property
    def keys(self) -> list[str]:
        """The config keys the function needs: its keyword-only parameters without default."""
        return [p.name for p in inspect.signature(self.compute).parameters.values()
                if p.kind is p.KEYWORD_ONLY and p.default is p.empty]


REGISTRY: dict[str, Analysis] = {}


def register(name: str, *, spans: Sequence[str] = SPANS, section: str | None = None,
             parallel: bool = False):
    """Register ``fn(rows: Rows, **section)`` as analysis ``name``."""
    def deco(fn):
        REGISTRY[name] = Analysis(name, fn, tuple(spans), section or name, parallel)
        return fn
    return deco


def get(name: str) -> Analysis:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown analysis {name!r}; known: {', '.join(REGISTRY)}") from None


def check_params(analysis: Analysis, params: dict) -> None:
    """Stop naming the keys of ``analysis.<section>`` that ``params`` lacks."""
    missing = [k for k in analysis.keys if k not in params]
    if missing:
        raise ValueError(f"analysis.{analysis.section} lacks {', '.join(missing)}: pass the "
                         "config section as the schema fills it in (schemas/config.schema.yaml)")


# --------------------------------------------------------------------------- rows and labels


def label_columns(index: pd.DataFrame, labels: Sequence[str], span: str) -> list[str]:
    """Corpus labels plus the unit labels of the span, keeping those with ≥ 2 classes."""
    cols = [c for c in [*labels, *UNIT_LABELS[span]] if c in index.columns]
    return [c for c in cols if index[c].replace("", np.nan).dropna().nunique() >= 2]


def utterances(index: pd.DataFrame) -> np.ndarray | None:
    """The utterance of each row: the bootstrap resamples utterances, since the words,
    phones and frames of one utterance are not independent samples.  None (rows are
    resampled) when there are fewer than two utterances to resample."""
    if "utt_id" not in index.columns or index["utt_id"].nunique() < 2:
        return None
    return index["utt_id"].astype(str).to_numpy()


def rows_with_labels(index: pd.DataFrame, cols: Sequence[str]) -> np.ndarray:
    """Rows whose unit labels are known (frames outside any word carry an empty label)."""
    if not cols:
        return np.arange(len(index))
    known = np.ones(len(index), dtype=bool)
    for c in cols:
        known &= index[c].fillna("").astype(str).ne("").to_numpy()
    return np.flatnonzero(known)


def _labeled(rows: Rows):
    """Layers and index restricted to the rows with known labels, lazily: rows are read only
    when used, one layer at a time, so a memory-mapped pooled folder is never copied whole."""
    from layerwise.analyses import subsample

    keep = rows_with_labels(rows.index, rows.labels)
    return subsample.take(rows.layers, keep), rows.index.iloc[keep].reset_index(drop=True)


# --------------------------------------------------------------------------- the analyses


@register("similarity", parallel=True)
def similarity(rows: Rows, *, metrics, n_boot, knn_k, rbf_threshold, svcca_components,
               max_rows, progress: bool = True) -> pd.DataFrame:
    from layerwise.analyses.similarity import similarity_table

    settings = dict(metrics=metrics, n_boot=n_boot, knn_k=knn_k, rbf_threshold=rbf_threshold,
                    svcca_components=svcca_components, max_rows=max_rows, progress=progress)
    if rows.span == "frame" and rows.features:
        return _all_frame_similarity(rows, settings)
    return similarity_table(rows.layers, None, model_a=rows.model, model_b=rows.model,
                            span=rows.span, pooling=rows.pooling, seed=rows.seed,
                            groups=utterances(rows.index), **settings)


def _all_frame_similarity(rows: Rows, settings: dict) -> pd.DataFrame:
    """Within-model similarity over every frame of the feature store, read chunk by chunk
    (bootstrap clusters: utterances); ``cka_rbf`` and ``mutual_knn`` on the pooled sample."""
    from layerwise.analyses.similarity import similarity_table
    from layerwise.errors import InputError
    from layerwise.io import store

    fs = store.open(list(rows.features))
    streamed = {name: store.StoredRows(fs, name) for name in rows.layers}
    try:
        counts = {name: M.shape[0] for name, M in streamed.items()}
        first = next(iter(rows.layers))
        differ = [name for name, k in counts.items() if k != counts[first]]
        if differ:
            raise InputError(f"{fs.paths[0]}: layers {', '.join(differ)} have other frame "
                             f"grids than {first} ({counts[first]} frames), so their frames "
                             "are not matched; keep frame-grid-equal layers in extract.frames")
        log.info("similarity over all %d frames of %d utterances, streamed from %d files",
                 counts[first], len(fs.utt_ids), len(fs.paths))
        return similarity_table(streamed, None, model_a=rows.model, model_b=rows.model,
                                span=rows.span, pooling=rows.pooling, seed=rows.seed,
                                groups=store.stored_utterances(fs, first),
                                sample_from=rows.layers, sample_groups=utterances(rows.index),
                                **settings)
    finally:
        for M in streamed.values():
            M.close()


@register("probes", parallel=True)
def probes(rows: Rows, *, probe, solver, folds, group, fallback_group, min_count, max_classes,
           progress: bool = True) -> pd.DataFrame:
    """Word/phone labels (the span's unit labels) keep their ``min_count``/``max_classes``
    classes; corpus labels (speaker, gender) keep every class."""
    from layerwise.analyses.probes import probe_table

    layers, index = _labeled(rows)
    return probe_table(layers, index, label_columns=rows.labels, seed=rows.seed, probe=probe,
                       solver=solver, folds=folds, min_count=min_count, max_classes=max_classes,
                       limited=[c for c in UNIT_LABELS[rows.span] if c in rows.labels],
                       group=group if group in index.columns else None,
                       fallback_group=fallback_group if fallback_group in index.columns
                       else None, n_jobs=rows.n_jobs, progress=progress, **rows.context)


@register("convexity", parallel=True)
def convexity(rows: Rows, *, k, max_pairs, max_rows, min_count, max_classes,
              progress: bool = True) -> pd.DataFrame:
    from layerwise.analyses.convexity import convexity_table

    layers, index = _labeled(rows)
    limited = [c for c in UNIT_LABELS[rows.span] if c in rows.labels]
    return convexity_table(layers, index, label_columns=rows.labels, limited=limited,
                           seed=rows.seed, k=k, max_pairs=max_pairs, max_rows=max_rows,
                           min_count=min_count, max_classes=max_classes, n_jobs=rows.n_jobs,
                           progress=progress, **rows.context)


@register("clustering", parallel=True)
def clustering(rows: Rows, *, n_clusters, held_out, group,
               progress: bool = True) -> pd.DataFrame:
    from layerwise.analyses.clustering import clustering_table

    layers, index = _labeled(rows)
    return clustering_table(layers, index, label_columns=rows.labels, seed=rows.seed,
                            n_clusters=n_clusters, held_out=held_out, group=group,
                            n_jobs=rows.n_jobs, progress=progress, **rows.context)


@register("featstats", parallel=True)
def featstats(rows: Rows, *, n_pairs, progress: bool = True) -> pd.DataFrame:
    from layerwise.analyses.featstats import featstats_table

    return featstats_table(rows.layers, model=rows.model, seed=rows.seed, n_pairs=n_pairs,
                           n_jobs=rows.n_jobs, progress=progress)


@register("embed", parallel=True)
def embed(rows: Rows, *, layers, methods, max_rows, progress: bool = True) -> pd.DataFrame:
    """Every row is embedded (subsampled lazily); unlabeled rows are coloured by utterance."""
    from layerwise.analyses.embed import embedding_table

    return embedding_table(rows.layers, rows.index, label_columns=rows.labels or ["utt_id"],
                           layers_to_embed=layers, methods=methods, max_rows=max_rows,
                           seed=rows.seed, n_jobs=rows.n_jobs, progress=progress,
                           **rows.context)


#: CCA needs a target: the unit label (word/phone spans) or log-mel frames (frame span).
@register("cca", spans=("word", "phone", "frame"), parallel=True)
def cca(rows: Rows, *, n_trials, min_count, progress: bool = True) -> pd.DataFrame:
    from layerwise.analyses import cca_targets

    span = rows.span
    if span == "frame":
        if rows.mel is None:
            raise ValueError("CCA on the frame span needs the log-mel matrix")
        return cca_targets.cca_table(rows.layers, rows.mel, target_name="mel", model=rows.model,
                                     span=span, n_trials=n_trials, seed=rows.seed,
                                     progress=progress)
    labels = rows.index[span].fillna("").astype(str).to_numpy()
    keep = cca_targets.min_count_filter(labels, min_count) & (labels != "")
    if len(np.unique(labels[keep])) < 2:
        raise ValueError(f"CCA with {span} identity needs ≥ 2 {span} types with ≥ {min_count} "
                         "tokens (analysis.cca.min_count)")
    return cca_targets.cca_table(rows.layers, cca_targets.one_hot(labels[keep]),
                                 target_name=span, model=rows.model, span=span,
                                 strata=labels[keep], n_trials=n_trials, seed=rows.seed,
                                 rows=np.flatnonzero(keep), progress=progress)
