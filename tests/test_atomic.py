"""Atomic writes: temporary names say host and pid; only dead processes' leftovers are removed."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from layerwise.io import atomic


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temp_name_holds_host_and_pid(tmp_path):
    tmp = atomic.temp_path(tmp_path / "shard-000.h5")
    assert tmp.parent == tmp_path
    assert tmp.name == f".shard-000.h5.tmp-{atomic._host()}-{os.getpid()}"


def test_only_dead_processes_of_this_host_lose_their_files(tmp_path, caplog):
    out = tmp_path / "shard-000.h5"
    host = atomic._host()
    dead = tmp_path / f".shard-000.h5.tmp-{host}-{_dead_pid()}"
    live = tmp_path / f".shard-000.h5.tmp-{host}-{os.getppid()}"
    other_host = tmp_path / f".shard-000.h5.tmp-{host}-2-{_dead_pid()}"  # host "<ours>-2"
    other_output = tmp_path / f".shard-001.h5.tmp-{host}-{_dead_pid()}"
    for p in (dead, live, other_host, other_output):
        p.write_bytes(b"partial")
    with caplog.at_level(logging.WARNING, logger="layerwise.io.atomic"):
        tmp = atomic.temp_path(out)
    assert not dead.exists()
    assert live.exists() and other_host.exists() and other_output.exists()
    assert f"removed {dead}" in caplog.text and "which is gone" in caplog.text
    assert tmp.name.endswith(f"-{os.getpid()}")


def test_writing_renames_on_success_and_removes_on_error(tmp_path):
    out = tmp_path / "sub" / "t.tsv"
    with atomic.writing(out) as tmp:
        tmp.write_text("done\n")
    assert out.read_text() == "done\n"
    with pytest.raises(RuntimeError), atomic.writing(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert out.read_text() == "done\n"
    assert [p.name for p in out.parent.iterdir()] == ["t.tsv"]
