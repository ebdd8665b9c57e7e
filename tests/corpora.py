"""Small corpora the tests write themselves: LibriSpeech layout with good and bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
from conftest import speechlike

SPEAKERS = {"101": "F", "202": "M", "303": "F"}


def librispeech_tree(root: Path, *, utts_per_chapter: int = 2, bad: bool = True) -> dict:
    """Write ``root/dev-clean/<spk>/<chap>/*.flac`` + transcripts + SPEAKERS.TXT.

    Returns ``{"good": [utt ids], "bad": {file name: expected reason fragment}}``.
    """
    split = root / "dev-clean"
    good, k = [], 0
    for spk in SPEAKERS:
        for chap in ("10", "20"):
            folder = split / spk / chap
            folder.mkdir(parents=True)
            lines = []
            for u in range(utts_per_chapter):
                utt = f"{spk}-{chap}-{u:04d}"
                n = 16000 + 3000 * k
                sf.write(folder / f"{utt}.flac", speechlike(n, seed=k), 16000)
                lines.append(f"{utt} HELLO WORLD NUMBER {u}")
                good.append(utt)
                k += 1
            (folder / f"{spk}-{chap}.trans.txt").write_text("\n".join(lines) + "\n")
    (root / "SPEAKERS.TXT").write_text(
        "; ID  |SEX| SUBSET    |MINUTES| NAME\n"
        + "".join(f"{s:<5}| {g} | dev-clean | 1.00 | Someone\n" for s, g in SPEAKERS.items())
    )
    bad_files = {}
    if bad:
        folder = split / "101" / "10"
        (folder / "101-10-9000.flac").write_bytes(b"")
        bad_files["101-10-9000.flac"] = "empty file"
        (folder / "101-10-9001.flac").write_bytes(b"this is not audio at all" * 10)
        bad_files["101-10-9001.flac"] = "not readable"
        sf.write(folder / "101-10-9002.flac", np.zeros(16000, dtype=np.float32), 16000)
        bad_files["101-10-9002.flac"] = "silence"
        good_bytes = (folder / "101-10-0000.flac").read_bytes()
        (folder / "101-10-9003.flac").write_bytes(good_bytes[: len(good_bytes) // 3])
        bad_files["101-10-9003.flac"] = ""  # truncated FLAC: rejected at scan or decode
        sf.write(folder / "101-10-9004.flac", speechlike(100, seed=9), 16000)
        bad_files["101-10-9004.flac"] = "too short"
    return {"good": good, "bad": bad_files}
