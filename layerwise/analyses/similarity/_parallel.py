"""Independent pieces of work (layers, layer pairs, samples) on one thread per CPU, BLAS
single-threaded."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from threadpoolctl import ThreadpoolController

_THREADPOOLS: ThreadpoolController | None = None


def _n_cpus() -> int:
    """CPUs this process may use: its affinity (taskset / SLURM), capped by OMP_NUM_THREADS
    where the job set it (``layerwise.logs.to_file``: the cores its rule claimed)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    claimed = os.environ.get("OMP_NUM_THREADS", "")
    return min(cpus, int(claimed)) if claimed.isdigit() and int(claimed) > 0 else cpus


def _single_threaded_blas():
    """Context limiting BLAS to one thread.

    Small factorisations (768 x 768 eigh, k x k SVDs) gain nothing from OpenBLAS
    threads, and threads competing for busy cores made them 20x slower on a shared
    node; per-layer work is parallelised over layers instead.
    """
    global _THREADPOOLS
    if _THREADPOOLS is None:
        _THREADPOOLS = ThreadpoolController()
    return _THREADPOOLS.limit(limits=1, user_api="blas")


def _for_each(func: Callable[[int], None], n_items: int, bar=None) -> None:
    """Run ``func(i)`` for every item ``i < n_items`` (layers, layer pairs, samples), on one
    thread per CPU, BLAS single-threaded.

    numpy's large operations (matmul, take, exp, SVD) release the GIL, so independent items
    run in parallel; one single-threaded GEMM per core is as fast as threaded GEMMs.
    """
    workers = min(_n_cpus(), n_items)
    if workers <= 1:  # one item (e.g. bootstrap_ci): a thread pool would only add overhead
        # BLAS single-threaded here too: what func computes then rounds alike whatever the
        # job's thread count (a threaded eigendecomposition sums in another order)
        with _single_threaded_blas():
            for i in range(n_items):
                func(i)
                if bar is not None:
                    bar.update(1)
        return
    with _single_threaded_blas(), ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(func, range(n_items)):
            if bar is not None:
                bar.update(1)

