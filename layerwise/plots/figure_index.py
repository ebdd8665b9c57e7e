"""The `figures/` folder: every plot of a run copied under figures/<corpus>/, with an index page.

Figure rules draw under the results folder (a rule may not write inside another rule's
``directory()`` output); this one cheap step gathers them so ``snakemake figures/`` builds all
figures and nothing else.
"""

from __future__ import annotations

import html
import shutil
from collections.abc import Sequence
from pathlib import Path


def assemble(plots: Sequence[str | Path], plots_dir: str | Path, out_dir: str | Path, *,
             corpus: str) -> Path:
    """Copy ``plots`` (under ``plots_dir``) to ``out_dir/corpus/`` and write ``index.html``."""
    plots_dir, out_dir = Path(plots_dir), Path(out_dir)
    dest = out_dir / corpus
    dest.mkdir(parents=True, exist_ok=True)
    sections: dict[str, list[str]] = {}
    for p in map(Path, plots):
        rel = p.relative_to(plots_dir)
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, target)
        sections.setdefault(str(rel.parent) if str(rel.parent) != "." else "all models",
                            []).append(rel.as_posix())
    body = [f"<h1>layerwise figures: {html.escape(corpus)}</h1>"]
    for title, files in sections.items():
        body.append(f"<h2>{html.escape(title)}</h2>")
        body += [f'<figure><img src="{html.escape(f)}" loading="lazy" style="max-width:100%">'
                 f"<figcaption>{html.escape(f)}</figcaption></figure>" for f in files]
    (dest / "index.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>layerwise figures</title>"
        "<body style='font-family:sans-serif;max-width:1400px;margin:auto'>"
        + "\n".join(body) + "</body>"
    )
    return dest
