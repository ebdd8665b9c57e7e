"""One task per layer, side by side in worker processes when the job has the cores for it.

Why: the analyses that work layer by layer (probes, convexity, clustering, featstats, embed)
spend up to a minute per layer at corpus size on one core. A job given n cores (its rule's
threads: a SLURM job's CPUs, a workstation's ``--set-threads``) runs n layers at once. Each
task gets its layer lazily (:func:`layerwise.analyses.subsample.only`), so a worker reads its
layer itself: joblib passes a memory-mapped layer by its file name, the job's own process
never holds every layer, and only the tasks in flight are held. joblib limits each worker's
BLAS/OpenMP threads to its share of the cores. With one core the tasks run one after the
other in this process, with no worker to start.

A task's result depends on its layer and arguments only (each analysis seeds per layer, not
from a shared generator), so the table is the same for any number of workers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from joblib import Parallel, delayed

from layerwise.analyses import subsample
from layerwise.logs import progress_bar

__all__ = ["map_layers", "map_tasks"]


def map_layers(func: Callable, layers: Mapping[str, np.ndarray], names: Sequence[str], *,
               n_jobs: int | None, progress: bool, desc: str, **kwargs) -> list:
    """``[func(subsample.only(layers, name), name, **kwargs) for name in names]``, on
    ``n_jobs`` worker processes (joblib semantics: 1 = in this process, -1 = every core).

    ``func`` must be a module-level function (a worker unpickles it) that reads
    ``layers[name]`` itself. Results come back in the order of ``names``; the progress bar
    (on stderr) counts the finished layers.
    """
    return map_tasks(func, layers, [(name, kwargs) for name in names], n_jobs=n_jobs,
                     progress=progress, desc=desc)


def map_tasks(func: Callable, layers: Mapping[str, np.ndarray],
              tasks: Sequence[tuple[str, Mapping]], *, n_jobs: int | None, progress: bool,
              desc: str) -> list:
    """:func:`map_layers` with arguments of each task's own: ``[func(subsample.only(layers,
    name), name, **kwargs) for name, kwargs in tasks]``. A layer may have several tasks
    (the probes: one per layer and label), which balances the workers when a layer's work
    is large and the layers do not divide evenly among them.
    """
    tasks = list(tasks)
    calls = (delayed(func)(subsample.only(layers, name), name, **kwargs) for name, kwargs in tasks)
    results = Parallel(n_jobs=n_jobs, return_as="generator", pre_dispatch="n_jobs")(calls)
    return list(progress_bar(results, progress=progress, desc=desc, total=len(tasks)))
