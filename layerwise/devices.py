"""Which device an extraction job runs on, and a lock so parallel jobs take distinct GPUs.

Snakemake's ``resources: gpu=1`` only counts GPUs; it does not say *which* one a job may use.
With ``--resources gpu=4`` four jobs run at once, and each claims the first free device slot by
taking an exclusive ``flock`` on ``<lock dir>/gpu-<i>.lock``; the lock is released when the job's
process ends, even if it is killed. Under SLURM the scheduler sets ``CUDA_VISIBLE_DEVICES`` to
the job's own GPU, which then shows up as ``cuda:0`` and the lock is uncontested.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from pathlib import Path

import torch

_held = []  # open lock files stay referenced for the life of the process


def lock_dir() -> Path:
    default = Path(tempfile.gettempdir()) / f"layerwise-gpu-locks-{os.getuid()}"
    path = Path(os.environ.get("LAYERWISE_GPU_LOCK_DIR", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


def claim_slot(n_devices: int, *, directory: Path | None = None, wait_s: float = 3600) -> int:
    """Take the first free slot in ``0..n_devices-1``; wait (polling) while all are taken."""
    directory = directory or lock_dir()
    deadline = time.monotonic() + wait_s
    while True:
        for i in range(n_devices):
            fh = (directory / f"gpu-{i}.lock").open("a")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            _held.append(fh)
            return i
        if time.monotonic() > deadline:
            raise TimeoutError(f"no free GPU slot among {n_devices} after {wait_s:.0f} s")
        time.sleep(1.0)


def resolve(spec: str = "auto") -> torch.device:
    """``auto`` | ``cpu`` | ``mps`` | ``cuda`` | ``cuda:N`` → a device, claiming a free GPU."""
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda:"):
        return torch.device(spec)
    if spec in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device(f"cuda:{claim_slot(torch.cuda.device_count())}")
    if spec == "cuda":
        raise RuntimeError("extract.device = cuda, but no CUDA device is visible")
    if spec in ("auto", "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    if spec == "mps":
        raise RuntimeError("extract.device = mps, but MPS is not available")
    return torch.device("cpu")
