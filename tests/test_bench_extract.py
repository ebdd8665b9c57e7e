"""The extraction benchmark times the device it runs on."""

from __future__ import annotations

import torch

from benchmarks import bench_extract


def test_timed_synchronises_the_device_it_times(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    bench_extract.timed(torch.device("cuda:1"), lambda: None)
    assert calls == [torch.device("cuda:1")] * 2  # before and after, not the current cuda:0
    calls.clear()
    bench_extract.timed(torch.device("cpu"), lambda: None)
    assert calls == []
