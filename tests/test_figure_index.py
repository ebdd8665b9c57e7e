"""layerwise.plots.figure_index: the figures/ folder holds every plot, and its page shows each."""

from __future__ import annotations

import re

from layerwise.plots.figure_index import assemble


def test_assemble_copies_every_plot_and_lists_it_once(tmp_path):
    plots = tmp_path / "plots"
    files = ["curves-utterance-mean.png", "m1/similarity-utterance-mean.png",
             "m1/maps-word-mean-speaker.png", "cross/m1--m2/similarity-frame-mean.png",
             "m<2>/temporal-trajectory.gif"]
    for i, rel in enumerate(files):
        (plots / rel).parent.mkdir(parents=True, exist_ok=True)
        (plots / rel).write_bytes(bytes([i]) * (i + 1))
    dest = assemble([plots / f for f in files], plots, tmp_path / "figures", corpus="demo")
    assert dest == tmp_path / "figures" / "demo"
    copied = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert copied == sorted([*files, "index.html"])
    for i, rel in enumerate(files):
        assert (dest / rel).read_bytes() == bytes([i]) * (i + 1)
    page = (dest / "index.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert sources == ["curves-utterance-mean.png", "m1/similarity-utterance-mean.png",
                       "m1/maps-word-mean-speaker.png", "cross/m1--m2/similarity-frame-mean.png",
                       "m&lt;2&gt;/temporal-trajectory.gif"]  # escaped, in the order given
    headings = re.findall(r"<h2>([^<]+)</h2>", page)
    assert headings == ["all models", "m1", "cross/m1--m2", "m&lt;2&gt;"]
    assert "<h1>layerwise figures: demo</h1>" in page
