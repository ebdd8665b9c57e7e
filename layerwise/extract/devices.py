"""Which device an extraction job runs on, a lock so parallel jobs take distinct GPUs, and how
that device computes float32.

Snakemake's ``resources: gpu=1`` only counts GPUs; it does not say *which* one a job may use.
With ``--resources gpu=4`` four jobs run at once, and each claims the first free GPU by taking an
exclusive ``flock`` on ``<lock dir>/gpu-<key>.lock``; the lock is released when the job's process
ends, even if it is killed. The key is the GPU's UUID, so one physical GPU has one lock whatever
index a process sees it at: under SLURM each one-GPU job sees its own GPU as ``cuda:0``, and locks
keyed by index would make every such job on a node wait for the first. Where torch gives no UUID,
a SLURM job with ``CUDA_VISIBLE_DEVICES`` set does not lock (SLURM gave it its own GPUs), and
elsewhere the key is the ``CUDA_VISIBLE_DEVICES`` entry, else the index.

float32 is full IEEE float32 (:func:`use_ieee_float32`): torch lets cuDNN run float32
convolutions in TF32 by default on Ampere and newer GPUs, which changes features in the third
decimal. :func:`provenance` names the hardware and libraries a file's features came from.
"""

from __future__ import annotations

import fcntl
import logging
import os
import platform
import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

log = logging.getLogger(__name__)
_held = []  # open lock files stay referenced for the life of the process


def lock_dir() -> Path:
    default = Path(tempfile.gettempdir()) / f"layerwise-gpu-locks-{os.getuid()}"
    path = Path(os.environ.get("LAYERWISE_GPU_LOCK_DIR", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


def claim_slot(keys: int | Sequence[str], *, directory: Path | None = None,
               wait_s: float = 3600) -> int:
    """Lock the first free GPU of ``keys`` (node-wide names, or a count: ``0..n-1``) and return
    its index; wait (polling) while all are taken."""
    keys = [str(i) for i in range(keys)] if isinstance(keys, int) else list(keys)
    directory = directory or lock_dir()
    deadline = time.monotonic() + wait_s
    waiting = False
    while True:
        for i, key in enumerate(keys):
            fh = (directory / f"gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', key)}.lock").open("a")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            _held.append(fh)
            return i
        if time.monotonic() > deadline:
            raise TimeoutError(f"no free GPU slot among {len(keys)} after {wait_s:.0f} s "
                               f"(locks in {directory})")
        if not waiting:
            log.info("all %d GPUs are taken by other jobs (locks in %s); waiting", len(keys),
                     directory)
            waiting = True
        time.sleep(1.0)


def gpu_keys(n_devices: int) -> list[str] | None:
    """A node-wide name for each visible GPU, or None where the job's GPUs are its own."""
    uuids = [str(getattr(torch.cuda.get_device_properties(i), "uuid", "") or "")
             for i in range(n_devices)]
    if all(uuids):
        return [f"uuid-{u}" for u in uuids]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if visible and "SLURM_JOB_ID" in os.environ:
        return None
    entries = [v.strip() for v in visible.split(",") if v.strip()]
    return entries[:n_devices] if len(entries) >= n_devices else [str(i) for i in range(n_devices)]


def claim_gpu(*, directory: Path | None = None, wait_s: float = 3600) -> int:
    """The index of a visible GPU that no other job of this user on this node holds."""
    keys = gpu_keys(torch.cuda.device_count())
    if keys is None:
        log.info("SLURM gave this job its GPUs (CUDA_VISIBLE_DEVICES=%s): no lock, cuda:0",
                 os.environ["CUDA_VISIBLE_DEVICES"])
        return 0
    i = claim_slot(keys, directory=directory, wait_s=wait_s)
    log.info("claimed cuda:%d (lock gpu-%s)", i, keys[i])
    return i


def resolve(spec: str = "auto", *, wait_s: float = 3600) -> torch.device:
    """``auto`` | ``cpu`` | ``mps`` | ``cuda`` | ``cuda:N`` → a device, claiming a free GPU."""
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda:"):
        return _visible(torch.device(spec))
    if spec in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device(f"cuda:{claim_gpu(wait_s=wait_s)}")
    if spec == "cuda":
        raise RuntimeError("extract.device = cuda, but no CUDA device is visible")
    if spec in ("auto", "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    if spec == "mps":
        raise RuntimeError("extract.device = mps, but MPS is not available")
    return torch.device("cpu")


def _visible(dev: torch.device) -> torch.device:
    """An explicit ``cuda:N``, checked against the devices this process sees."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if dev.index is not None and dev.index < n:
        return dev
    seen = f"sees {n} CUDA device(s), cuda:0..cuda:{n - 1}" if n else "sees no CUDA device"
    raise RuntimeError(f"extract.device = {dev}, but this job {seen} "
                       f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")


def use_ieee_float32() -> None:
    """float32 matmuls and cuDNN convolutions in full float32 (no TF32) for this process."""
    if hasattr(torch.backends.cudnn, "conv"):  # torch >= 2.9: the fp32_precision API
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        torch.backends.cudnn.conv.fp32_precision = "ieee"
    else:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def provenance(dev: torch.device) -> dict[str, str]:
    """Device name, CUDA/cuDNN versions and float32 precision, for the file's attributes."""
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
    else:
        name = _cpu_name()
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    if hasattr(torch.backends.cudnn, "conv"):
        precision = (f"matmul={torch.backends.cuda.matmul.fp32_precision},"
                     f"conv={torch.backends.cudnn.conv.fp32_precision}")
    else:
        precision = (f"matmul_tf32={torch.backends.cuda.matmul.allow_tf32},"
                     f"conv_tf32={torch.backends.cudnn.allow_tf32}")
    return {"device_name": name, "cuda_version": torch.version.cuda or "",
            "cudnn_version": str(cudnn or ""), "float32_precision": precision}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
