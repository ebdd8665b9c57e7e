"""The end-of-run account: how many files were kept, how many rejected, at which stage and why."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from layerwise.io.tables import merge_rejected, read_tsv, write_tsv


def summarise(manifest: str | Path, shard_tables: Sequence[str | Path],
              records: Sequence[str | Path], rejected_out: str | Path,
              summary_out: str | Path) -> str:
    """Write ``rejected.tsv`` (all stages) and ``summary.txt``; return the summary text."""
    found = len(read_tsv(manifest, usecols=["utt_id"]))
    converted = sum(len(read_tsv(t, usecols=["utt_id"])) for t in shard_tables)
    rejected = merge_rejected(records)
    write_tsv(rejected, rejected_out)
    by_stage = rejected.groupby("stage", sort=False).size() if len(rejected) else pd.Series()
    extract_fail = int(by_stage.get("extract", 0))
    lines = [
        f"files found:    {found + int(by_stage.get('scan', 0))}",
        f"kept:           {converted} utterances",
        f"rejected:       {int(by_stage.get('scan', 0)) + int(by_stage.get('audio', 0))} files",
        f"extraction failures (utterance x model): {extract_fail}",
    ]
    lines += [f"  at {stage}: {n}" for stage, n in by_stage.items()]
    if len(rejected):
        lines.append(f"reasons: see {rejected_out}")
    text = "\n".join(lines) + "\n"
    Path(summary_out).write_text(text)
    return text
