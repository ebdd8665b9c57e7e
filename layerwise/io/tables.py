"""Reading and writing the workflow's tidy TSV tables, and the ``rejected.tsv`` record.

Every table is tab-separated with a header so ``pandas.read_csv(path, sep="\\t")`` loads it.
Writes go to a temporary name first and are renamed, so a killed job never leaves half a table.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from layerwise.io import atomic

REJECTED_COLUMNS = ["path", "stage", "reason"]


def write_tsv(df: pd.DataFrame, path: str | Path) -> None:
    """Write ``df`` as TSV atomically (temporary file, then rename)."""
    with atomic.writing(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, na_rep="NaN")


def read_tsv(path: str | Path, **kwargs) -> pd.DataFrame:
    """Read a table written by :func:`write_tsv` (label columns stay strings)."""
    kwargs.setdefault("keep_default_na", True)
    return pd.read_csv(path, sep="\t", **kwargs)


def rejected_frame(rows: Iterable[tuple[str, str, str]] = ()) -> pd.DataFrame:
    """A ``rejected.tsv`` table from ``(path, stage, reason)`` rows."""
    return pd.DataFrame(list(rows), columns=REJECTED_COLUMNS)


def merge_rejected(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate per-job rejection records into one table, in stage order."""
    frames = [read_tsv(p, dtype=str) for p in paths]
    frames = [f for f in frames if len(f)]
    if not frames:
        return rejected_frame()
    return pd.concat(frames, ignore_index=True)[REJECTED_COLUMNS]


def read_tables(named) -> dict[str, pd.DataFrame]:
    """``{name: one table}`` from Snakemake-style named inputs (a path or a list of paths each)."""
    out = {}
    for name, paths in named.items():
        paths = [paths] if isinstance(paths, str | Path) else list(paths)
        frames = [read_tsv(p) for p in paths]
        out[name] = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return out
