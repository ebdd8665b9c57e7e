"""Job logs: a job's threads are capped without importing torch for it."""

import subprocess
import sys

import pytest

_JOB = """
import sys
from layerwise import logs
{before}
logs.to_file(sys.argv[1], threads=1)
print("torch" in sys.modules)
import torch
print(torch.get_num_threads())
"""


@pytest.mark.parametrize("before", ["", "import torch; torch.set_num_threads(2)"])
def test_a_jobs_threads_cap_torch_whether_it_is_imported_before_or_after(tmp_path, before):
    """A job that never needs torch does not pay its import (1-1.5 s per analysis job); one
    that imports it later, or had imported it before, still runs it on the rule's threads."""
    out = subprocess.run([sys.executable, "-c", _JOB.format(before=before),
                          str(tmp_path / "job.log")], capture_output=True, text=True, check=True)
    imported, threads = out.stdout.split()
    assert imported == str(bool(before))
    assert threads == "1"
