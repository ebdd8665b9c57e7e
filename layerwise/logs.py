"""Job logs: each workflow job sends its log records and progress bars to its own log file.

Snakemake gives every job a ``log:`` path; :func:`to_file` points ``stderr`` (where ``logging``
and tqdm write) at it, so ``results/<corpus>/logs/<rule>/...log`` shows what a job did and how
fast, and a failing job's log holds its traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from pathlib import Path

from tqdm.auto import tqdm


def to_file(path: str | Path, *, threads: int | None = None) -> logging.Logger:
    """Redirect stderr to ``path`` (line-buffered), configure logging, cap torch threads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr = path.open("a", buffering=1, encoding="utf-8")
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    logging.captureWarnings(True)
    sys.excepthook = _one_line_for_input_errors
    if threads:
        _use_threads(threads)
    return logging.getLogger("layerwise")


def _use_threads(threads: int) -> None:
    """Keep the job to the cores its rule claimed: BLAS/OpenMP pools loaded now and later,
    and torch. Two one-core jobs side by side would otherwise each start a pool per core.

    torch is not imported for this: a torch imported later takes its thread count from
    ``OMP_NUM_THREADS``, and the import costs 1-1.5 s, which most analysis jobs (all but the
    probes) never otherwise pay.
    """
    import os

    from threadpoolctl import threadpool_limits

    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    _THREAD_LIMITS.append(threadpool_limits(limits=threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


_THREAD_LIMITS: list = []  # held for the life of the job


def _one_line_for_input_errors(kind, exc, tb):
    """An :class:`~layerwise.errors.InputError` ends the job with its one line; others keep
    their traceback."""
    from layerwise.errors import InputError

    if isinstance(exc, InputError):
        logging.getLogger("layerwise").error("%s", exc)
    else:
        sys.__excepthook__(kind, exc, tb)


def progress_bar(iterable: Iterable, *, progress: bool, desc: str, total: int | None = None):
    """Wrap ``iterable`` in a tqdm bar on stderr (silent when ``progress`` is False)."""
    return tqdm(iterable, desc=desc, total=total, disable=not progress, file=sys.stderr)
