"""Time alignments (words, phones) from Praat TextGrids or CTM files, as one tidy table.

The pooling stage needs, per utterance, the start and end of every word and phone. Corpora ship
these as TextGrids (Montreal Forced Aligner, the demo corpus) or as a CTM file (Kaldi); both are
read into the same columns: ``utt_id, tier, start_s, end_s, label``. Empty intervals (pauses)
and silence markers are dropped; segments past the end of their audio are cut or dropped, with
a line in the scan log (:func:`clip_to_audio`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

COLUMNS = ["utt_id", "tier", "start_s", "end_s", "label"]
#: alignment ends this far past the audio are rounding, cut without a log line
ROUNDING_S = 0.01
SILENCE = {"", "sil", "sp", "spn", "<sil>", "<eps>", "silence"}
#: tier names accepted for each unit (MFA writes "words"/"phones"; others use singulars)
TIER_ALIASES = {"words": "word", "word": "word", "phones": "phone", "phone": "phone"}


_TOKEN = re.compile(r'"(?P<str>(?:[^"]|"")*)"|\[\d*\]|(?P<num>-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)')


class AlignmentError(ValueError):
    """A malformed alignment file; the message names the file and what is wrong."""


def read_textgrid(path: str | Path) -> dict[str, list[tuple[float, float, str]]]:
    """Parse a TextGrid (long or short text format) into ``{tier name: [(start, end, label)]}``.

    Only interval tiers are returned; point tiers are skipped.
    """
    path = Path(path)
    raw = path.read_bytes()
    for enc in ("utf-8-sig", "utf-16"):
        try:
            text = raw.decode(enc)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise AlignmentError(f"{path}: not UTF-8 or UTF-16 text")
    # Both formats are a stream of numbers and quoted strings once the keys are dropped.
    # (Bracketed indices such as "item [1]:" are not values, and "<exists>" is not quoted.)
    values: list[str | float] = []
    for m in _TOKEN.finditer(text):
        if m["str"] is not None:
            values.append(m["str"].replace('""', '"'))
        elif m["num"] is not None:
            values.append(float(m["num"]))
    try:
        return _parse_tokens(values)
    except (IndexError, TypeError, ValueError) as exc:
        raise AlignmentError(f"{path}: not a valid TextGrid ({exc})") from exc


def _parse_tokens(values: list) -> dict[str, list[tuple[float, float, str]]]:
    # values: "ooTextFile", "TextGrid", xmin, xmax, <exists>?, n_tiers, then tiers
    i = 2 + 2
    n_tiers = int(values[i])
    i += 1
    tiers: dict[str, list[tuple[float, float, str]]] = {}
    for _ in range(n_tiers):
        kind, name = values[i], values[i + 1]
        n = int(values[i + 4])
        i += 5
        if kind == "IntervalTier":
            tiers[name] = [
                (float(values[i + 3 * k]), float(values[i + 3 * k + 1]), str(values[i + 3 * k + 2]))
                for k in range(n)
            ]
            i += 3 * n
        elif kind == "TextTier":
            i += 2 * n
        else:
            raise ValueError(f"unknown tier class {kind!r}")
    return tiers


def from_textgrids(folder: str | Path, utt_ids: dict[str, str]) -> pd.DataFrame:
    """Read every ``*.TextGrid`` under ``folder`` whose stem names an utterance.

    ``utt_ids`` maps a file stem (the utterance id or the audio file's stem) to the utt_id.
    Tiers whose names are not word/phone tiers are ignored.
    """
    rows = []
    for tg in sorted(Path(folder).rglob("*.TextGrid")):
        utt = utt_ids.get(tg.stem)
        if utt is None:
            continue
        for name, intervals in read_textgrid(tg).items():
            tier = TIER_ALIASES.get(name.lower())
            if tier is None:
                continue
            rows += [(utt, tier, s, e, lab.strip()) for s, e, lab in intervals]
    return _tidy(rows)


def from_ctm(path: str | Path, utt_ids: dict[str, str], *, tier: str = "word") -> pd.DataFrame:
    """Read a CTM file (``utt channel start duration label [conf]``) as one tier."""
    rows = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.startswith(";;"):
            continue
        parts = line.split()
        if len(parts) < 5:
            raise AlignmentError(f"{path}:{lineno}: expected 5+ fields, got {len(parts)}")
        utt = utt_ids.get(parts[0])
        if utt is None:
            continue
        start, dur = float(parts[2]), float(parts[3])
        rows.append((utt, tier, start, start + dur, parts[4]))
    return _tidy(rows)


def _tidy(rows: list[tuple]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=COLUMNS)
    df = df[~df["label"].str.lower().isin(SILENCE)]
    df = df[df["end_s"] > df["start_s"]]
    return df.sort_values(["utt_id", "tier", "start_s"], kind="stable").reset_index(drop=True)


def clip_to_audio(aligned: pd.DataFrame, durations: Mapping[str, float]
                  ) -> tuple[pd.DataFrame, str | None]:
    """Fit segments into their audio: cut those that end after it, drop those that start after.

    Alignments made for another version of a file (or with a wrong time unit) can run past its
    end; pooling would then average frames that do not exist. Ends up to ``ROUNDING_S`` past
    the audio are rounding (CTM times have two decimals) and are cut without comment. Returns
    the table and a one-line account of the other changes (None when there were none).
    """
    audio_end = aligned["utt_id"].map(durations).to_numpy(dtype=float)
    past = aligned["end_s"].to_numpy() > audio_end  # NaN (no duration) compares False
    dropped = aligned["start_s"].to_numpy() >= audio_end
    cut = past & ~dropped
    over = aligned["end_s"].to_numpy() - audio_end
    reported = (cut & (over > ROUNDING_S)) | dropped
    out = aligned.assign(end_s=aligned["end_s"].where(~cut, audio_end))[~dropped]
    if not reported.any():
        return out.reset_index(drop=True), None
    k = int(reported.argmax())
    first = aligned.iloc[k]
    note = (
        f"alignments: {int(reported.sum())} segments of "
        f"{aligned.loc[reported, 'utt_id'].nunique()} utterances end after the audio by up to "
        f"{over[reported].max():.2f} s (first: {first['utt_id']} {first['tier']} "
        f"{first['label']!r} {first['start_s']:.2f}-{first['end_s']:.2f} s, audio "
        f"{audio_end[k]:.2f} s): {int((cut & reported).sum())} cut at the audio's end, "
        f"{int(dropped.sum())} that start after it dropped"
    )
    return out.reset_index(drop=True), note


def load(path: str | Path, utt_ids: dict[str, str]) -> pd.DataFrame:
    """Alignments from a folder of TextGrids or a ``.ctm`` file."""
    path = Path(path)
    if path.is_dir():
        return from_textgrids(path, utt_ids)
    if path.suffix.lower() == ".ctm":
        return from_ctm(path, utt_ids)
    raise AlignmentError(f"{path}: expected a folder of TextGrid files or a .ctm file")
