"""A run killed with SIGKILL mid-extraction, unlocked and rerun, ends as if never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import h5py
import yaml
from corpora import librispeech_tree
from test_workflow import command, snakemake

TARGET = "out/t/features/w2v/shard-000.h5"


def _workdir(root: Path) -> Path:
    root.mkdir()
    librispeech_tree(root / "corpus", bad=False, utts_per_chapter=3)
    config = {
        "results": "out",
        "corpus": {"name": "t", "source": "librispeech", "path": "corpus/dev-clean",
                   "batch_groups": 4},
        "models": [{"name": "w2v", "source": "random:tiny-wav2vec2"}],
        "extract": {"batch_seconds": 1},  # one utterance per batch: a long write
        "pool": {"spans": ["utterance"]},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return root


def _run(wd: Path, *extra: str) -> subprocess.CompletedProcess:
    proc = snakemake(wd, TARGET, extra=extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _kill_during_extraction(wd: Path) -> list[Path]:
    """Start the run, SIGKILL its process group once a feature file is half written."""
    proc = subprocess.Popen(command(wd, TARGET), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    features = wd / "out" / "t" / "features"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if features.is_dir() and any(features.rglob(".*.tmp-*")):
                time.sleep(0.2)  # let it write a few batches
                break
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return sorted(features.rglob(".*.tmp-*"))


def _datasets(path: Path) -> dict:
    """Every dataset's bytes (strings as a list): what "bitwise equal" compares."""
    out = {}

    def take(name, obj):
        if isinstance(obj, h5py.Dataset):
            v = obj[()]
            out[name] = list(v) if v.dtype.kind == "O" else (v.dtype.str, v.shape, v.tobytes())

    with h5py.File(path) as f:
        f.visititems(take)
    return out


def test_killed_run_reruns_bitwise_equal_and_leaves_no_temporary_file(tmp_path):
    reference = _workdir(tmp_path / "uninterrupted")
    _run(reference)

    wd = _workdir(tmp_path / "killed")
    leftovers = _kill_during_extraction(wd)
    assert leftovers, "the kill came too late: no half-written feature file"
    assert not (wd / TARGET).exists()
    _run(wd, "--unlock")
    proc = _run(wd)  # the same command again

    assert list(wd.rglob("*.tmp-*")) == []  # pathlib globs match hidden files too
    log = (wd / "out" / "t" / "logs" / "extract_features" / "w2v-000.log").read_text()
    assert f"{leftovers[0].name}, left by process" in log and "which is gone" in log
    got, want = _datasets(wd / TARGET), _datasets(reference / TARGET)
    assert got.keys() == want.keys() and len(got) > 2
    for name in want:
        assert got[name] == want[name], name
    assert "extract_features" in proc.stdout + proc.stderr
