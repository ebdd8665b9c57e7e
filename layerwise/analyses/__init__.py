"""The analyses the workflow runs on pooled matrices, behind one call each.

Each analysis takes every layer of one model for one (span, pooling) — all on the same rows,
described by the pool index — and returns a tidy table (see the README for columns). The
workflow's ``analyse_*`` rules call :func:`run`; cross-model similarity first aligns the rows of
two models (:func:`align_rows`), since a file one model rejected is missing from its index.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from layerwise.analyses.registry import REGISTRY, Rows, check_params, get, label_columns, utterances

log = logging.getLogger(__name__)
#: The analyses of the ``analyse`` rule, in registration order (layerwise.analyses.registry).
NAMES = tuple(REGISTRY)
#: CCA needs a target: the unit label (word/phone spans) or log-mel frames (frame span).
CCA_SPANS = REGISTRY["cca"].spans
__all__ = ["CCA_SPANS", "NAMES", "align_rows", "cross_similarity", "label_columns", "run"]


def run(name: str, index: pd.DataFrame, layers: dict[str, np.ndarray], *, model: str, span: str,
        pooling: str, labels: Sequence[str], params: dict, seed: int,
        mel: np.ndarray | None = None, n_jobs: int = 1,
        features: Sequence[str] = ()) -> pd.DataFrame:
    """Run analysis ``name`` (one of :data:`NAMES`) with its config section ``params``.

    ``params`` is the section as the schema filled it in, passed on unchanged; a missing key
    stops naming it. ``mel`` (log-mel rows of a frame-span index) is the target of CCA on the
    frame span. ``features`` (the model's feature files) make similarity on the frame span
    exact over every frame of every utterance, streamed from the files; its n x n metrics, and
    every other analysis, use the pooled frame sample ``layers``. ``n_jobs`` processes share the probes' layers (the job's threads; the fits
    themselves are single-threaded).
    """
    analysis = get(name)
    if span not in analysis.spans:
        raise ValueError(f"analysis {name} applies to spans {', '.join(analysis.spans)}, "
                         f"not {span!r}")
    check_params(analysis, params)
    rows = Rows(index=index, layers=layers, model=model, span=span, pooling=pooling,
                labels=label_columns(index, labels, span), seed=seed, mel=mel, n_jobs=n_jobs,
                features=tuple(features))
    return analysis.compute(rows, **params)


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
                     span: str, pooling: str, params: dict, seed: int) -> pd.DataFrame:
    """Every layer of model A against every layer of model B on the units both have, with
    the ``analysis.similarity`` section ``params`` as the schema filled it in."""
    from layerwise.analyses.similarity import similarity_table

    check_params(get("similarity"), params)
    ra, rb = align_rows(index_a, index_b, span=span)
    groups = utterances(index_a)
    return similarity_table({k: v[ra] for k, v in layers_a.items()},
                            {k: v[rb] for k, v in layers_b.items()}, model_a=model_a,
                            model_b=model_b, span=span, pooling=pooling, seed=seed,
                            groups=None if groups is None else groups[ra], **params)
