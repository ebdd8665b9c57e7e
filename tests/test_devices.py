"""Which GPU a job takes: locks keyed by GPU UUID, SLURM jobs, explicit ``cuda:N``, on a CPU
machine with torch.cuda's answers monkeypatched (``test_gpu.py`` repeats the essentials on CUDA)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from layerwise.extract import devices


@pytest.fixture
def node(tmp_path, monkeypatch):
    """One node's lock folder; ``see(uuids)`` makes this process a job that sees those GPUs."""
    monkeypatch.setenv("LAYERWISE_GPU_LOCK_DIR", str(tmp_path))
    held = []
    monkeypatch.setattr(devices, "_held", held)

    def see(uuids, **env):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: bool(uuids))
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(uuids))
        monkeypatch.setattr(torch.cuda, "get_device_properties",
                            lambda i: SimpleNamespace(name="fake", uuid=uuids[i]))
        for k in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID"):
            if k in env:
                monkeypatch.setenv(k, env[k])
            else:
                monkeypatch.delenv(k, raising=False)

    yield see
    for fh in held:
        fh.close()


def test_one_gpu_slurm_jobs_on_one_node_do_not_wait_for_each_other(node):
    """Each job sees its own GPU as cuda:0; the locks are those of different physical GPUs."""
    node(["GPU-aaaa"], SLURM_JOB_ID="1", CUDA_VISIBLE_DEVICES="0")
    assert devices.resolve("auto", wait_s=0) == torch.device("cuda:0")
    node(["GPU-bbbb"], SLURM_JOB_ID="2", CUDA_VISIBLE_DEVICES="0")
    assert devices.resolve("cuda", wait_s=0) == torch.device("cuda:0")


def test_two_jobs_on_one_gpu_wait(node):
    """The control: the same physical GPU seen by two jobs is locked once."""
    node(["GPU-aaaa"])
    assert devices.resolve("auto", wait_s=0) == torch.device("cuda:0")
    with pytest.raises(TimeoutError, match="no free GPU"):
        devices.resolve("auto", wait_s=0)


def test_jobs_seeing_all_gpus_take_distinct_ones(node):
    node(["GPU-aaaa", "GPU-bbbb"])
    assert devices.resolve("auto", wait_s=0) == torch.device("cuda:0")
    assert devices.resolve("auto", wait_s=0) == torch.device("cuda:1")
    node(["GPU-bbbb", "GPU-aaaa"])  # the same GPUs in another order (CUDA_VISIBLE_DEVICES=1,0)
    with pytest.raises(TimeoutError):
        devices.resolve("auto", wait_s=0)


def test_without_uuids_slurm_jobs_do_not_lock_and_others_lock_the_visible_entry(node, tmp_path):
    node(["", ""], SLURM_JOB_ID="7", CUDA_VISIBLE_DEVICES="0,1")
    assert devices.gpu_keys(2) is None  # SLURM gave this job these GPUs
    assert devices.resolve("auto", wait_s=0) == devices.resolve("auto", wait_s=0)
    assert list(tmp_path.iterdir()) == []
    node(["", ""], CUDA_VISIBLE_DEVICES="2,3")
    assert devices.gpu_keys(2) == ["2", "3"]
    node([""])
    assert devices.gpu_keys(1) == ["0"]


def test_explicit_cuda_index_is_checked_against_the_visible_devices(node):
    node(["GPU-aaaa"], CUDA_VISIBLE_DEVICES="3")
    assert devices.resolve("cuda:0") == torch.device("cuda:0")
    with pytest.raises(RuntimeError, match=r"cuda:1, but this job sees 1 CUDA device\(s\), "
                                           r"cuda:0..cuda:0 \(CUDA_VISIBLE_DEVICES=3\)"):
        devices.resolve("cuda:1")
    node([])
    with pytest.raises(RuntimeError, match="cuda:0, but this job sees no CUDA device"):
        devices.resolve("cuda:0")
