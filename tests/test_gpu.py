"""On a CUDA device: float32 features equal the CPU's, bfloat16 ones are within their stated
tolerance, concurrent jobs take distinct GPUs or wait, and a batch that runs out of memory is
split without losing an utterance. Skipped without CUDA; ``make test`` includes them and
``make test-gpu`` runs only them. (``test_devices.py`` and ``test_extract.py`` test the same
logic on the CPU with torch.cuda monkeypatched or a fake out-of-memory error.)"""

from __future__ import annotations

import os
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BF16_RTOL, LENGTHS, relative_errors, run_extract, speechlike, tiny_presets

from layerwise.extract import devices, encoders, models

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = torch.device("cuda:0")
#: float32 on the GPU against the CPU, relative L2 per layer and utterance: different kernels
#: (cuDNN, cuBLAS, SDPA) round differently, so equal to float tolerance, never bitwise.
CUDA_RTOL = 1e-3
ROOT = Path(__file__).resolve().parents[1]


def _features(preset, device, compute_dtype=torch.float32):
    enc = encoders.wrap(*models.build_random(preset, seed=0), device, compute_dtype)
    names = {info.name for info in enc.layers}
    waves = [speechlike(n, seed=i) for i, n in enumerate(LENGTHS)]
    with torch.inference_mode():
        return enc.forward(waves, names, set())


@pytest.mark.parametrize("preset", tiny_presets())
def test_cuda_float32_equals_cpu_on_every_layer(preset):
    devices.use_ieee_float32()  # what extract_shard does
    errors = relative_errors(_features(preset, CUDA), _features(preset, torch.device("cpu")))
    assert max(errors.values()) < CUDA_RTOL, errors


@pytest.mark.parametrize("preset", tiny_presets())
def test_cuda_bfloat16_is_within_its_tolerance_of_cpu_float32(preset):
    low = _features(preset, CUDA, torch.bfloat16)
    assert all(bool(torch.isfinite(x).all()) for v in low.values() for x in v)
    errors = relative_errors(low, _features(preset, torch.device("cpu")))
    assert max(errors.values()) < BF16_RTOL, errors


CLAIM = """
import sys, time
from pathlib import Path
from layerwise.extract import devices
try:
    print(devices.resolve("cuda", wait_s=0), flush=True)
except TimeoutError:
    print("wait", flush=True)
for _ in range(1200):  # hold the lock until the test has read every job's answer
    if (Path(sys.argv[1]) / "stop").exists():
        break
    time.sleep(0.1)
"""


def test_concurrent_jobs_take_distinct_gpus_or_wait(tmp_path):
    n = torch.cuda.device_count()
    env = {**os.environ, "LAYERWISE_GPU_LOCK_DIR": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    jobs = [subprocess.Popen([sys.executable, "-c", CLAIM, str(tmp_path)], env=env, text=True,
                             stdout=subprocess.PIPE) for _ in range(n + 1)]
    try:
        answers = sorted(job.stdout.readline().strip() for job in jobs)
    finally:
        (tmp_path / "stop").touch()
        for job in jobs:
            job.wait(timeout=120)
    assert answers == sorted([f"cuda:{i}" for i in range(n)] + ["wait"])


def test_induced_oom_splits_the_batch_and_loses_no_utterance(wav_table, tmp_path,
                                                              tiny_model_dir, monkeypatch):
    """A real CUDA out-of-memory error after a real pass: the failed pass's device tensors are
    freed before the halves run, and every utterance is extracted as when run one at a time."""
    original = encoders.ConvFrontEncoder.forward
    failed, alive_at_retry = [], []

    def forward(self, waves, framed, pooled):
        alive_at_retry.append(sum(r() is not None for r in failed))
        out = original(self, waves, framed, pooled)
        if len(waves) > 1:
            failed.extend(weakref.ref(t) for v in out.values() for t in v)
            torch.empty(1 << 60, dtype=torch.uint8, device=self.device)  # 1 EiB: out of memory
        return out

    monkeypatch.setattr(encoders.ConvFrontEncoder, "forward", forward)
    fs, summary = run_extract(wav_table, tmp_path, "oom", tiny_model_dir, device="cuda:0",
                              batch_seconds=30, dtype="float32")
    monkeypatch.undo()
    ref, _ = run_extract(wav_table, tmp_path, "single", tiny_model_dir, device="cuda:0",
                         batch_seconds=0.1, dtype="float32")
    assert failed, "the control: no batch of more than one utterance was run"
    assert alive_at_retry == [0] * len(alive_at_retry), "a retry ran with the failed pass alive"
    assert summary["rejected"] == 0 and sorted(fs.utt_ids) == sorted(wav_table["utt_id"])
    for u in wav_table["utt_id"]:
        for layer in fs.layers:
            np.testing.assert_allclose(fs.frames(layer, u), ref.frames(layer, u), rtol=1e-5,
                                       atol=1e-5)
    assert fs.attrs["device_name"] == torch.cuda.get_device_name(0)
    assert fs.attrs["cuda_version"] == torch.version.cuda
    assert fs.attrs["float32_precision"] == "matmul=ieee,conv=ieee"
