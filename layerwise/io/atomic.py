"""Atomic writes: every output is written under a temporary name and renamed when complete.

So a killed job (``kill -9``, an out-of-memory kill, a full disk) never leaves a file that looks
finished. The temporary name, ``.<name>.tmp-<host>-<pid>`` next to the output, says who wrote
it: before a process writes an output, it removes that output's temporary files left by dead
processes of *this host* (``os.kill(pid, 0)`` finds no such process). Files of live processes
and of other hosts (on a cluster's shared file system a pid of another node is not visible
here) are never touched, so two jobs can never delete each other's work.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


def _host() -> str:
    """This host's name, safe in a file name (no '/' or '-' confusion with the pid)."""
    return socket.gethostname().replace("/", "_") or "localhost"


def temp_path(path: str | Path) -> Path:
    """A fresh temporary name for ``path``, after removing dead processes' leftovers of it."""
    path = Path(path)
    remove_stale(path)
    return path.with_name(f".{path.name}.tmp-{_host()}-{os.getpid()}")


def remove_stale(path: str | Path) -> list[Path]:
    """Remove the temporary files of ``path`` left by dead processes of this host."""
    path = Path(path)
    prefix = f".{path.name}.tmp-{_host()}-"
    removed = []
    if not path.parent.is_dir():
        return removed
    for tmp in path.parent.iterdir():
        pid = tmp.name.removeprefix(prefix)
        if tmp.name.startswith(prefix) and pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            log.warning("removed %s, left by process %s of this host, which is gone", tmp, pid)
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``path`` on success, remove it on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
