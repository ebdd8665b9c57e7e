#!/usr/bin/env python3
"""Generate the bundled layerwise demo speech corpus with espeak-ng.

Why this exists
---------------
The workflow's tests and demo need *some* speech with transcripts, word
alignments, speaker/accent/gender labels and a keyword-spotting style set,
but real corpora (LibriSpeech, Speech Commands) cannot be downloaded
everywhere and are far too large to commit.  This script synthesises a tiny
stand-in with espeak-ng, written in the layouts of the real corpora so that
the same loaders are exercised:

* ``LibriSpeech/`` -- ``dev-clean/<spk>/<chap>/<spk>-<chap>-<utt>.flac``
  (16 kHz mono 16-bit), ``<spk>-<chap>.trans.txt`` and ``SPEAKERS.TXT``;
* ``alignments/<utt_id>.TextGrid`` -- Praat TextGrids with a ``words`` tier
  and a ``phones`` tier;
* ``commands/<word>/<speaker>_<word>.wav`` -- Speech-Commands style words at
  espeak-ng's native 22050 Hz, listed in ``commands/manifest.tsv``.

Alignments: every word is synthesised on its own, trimmed of silence and the
pieces are joined with fixed pauses, so word boundaries are exact by
construction.  Phone boundaries are espeak-ng's own phoneme events
(``espeakEVENT_PHONEME``, read through libespeak-ng with ctypes), which give
the sample at which the synthesiser starts each phoneme.  Each word is also
synthesised through the library (in a fresh process) and its audio is checked
against the ``espeak-ng`` command's output sample by sample, so the events
belong to exactly the waveform that is written.

The output is fully deterministic (no randomness anywhere; sentence
assignment and speaking rates are arithmetic).  Regenerate with::

    python resources/demo/make_demo.py
"""

import argparse
import ctypes
import multiprocessing as mp
import shutil
import subprocess
import tempfile
from collections import Counter
from itertools import pairwise
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

NATIVE_SR = 22050  # espeak-ng's output rate
SR = 16000  # LibriSpeech rate
EDGE_S, GAP_S = 0.150, 0.060  # silence at utterance start/end, between words
FADE_S = 0.003  # fade-in/out at the edges of each word piece
SUBSET = "dev-clean"

# speaker id, espeak-ng voice (+fN = female variant), accent, sex, words/min.
# Four accents, each read by one male and one female voice (speaker-disjoint accent probes
# need two speakers per accent); accents and sexes alternate along the speaking rates.
VOICES = [
    (1001, "en-us", "us", "M", 150),
    (1002, "en-gb-scotland+f2", "scotland", "F", 154),
    (1003, "en-gb-x-rp", "gb-rp", "M", 158),
    (1004, "en-029+f1", "caribbean", "F", 162),
    (1005, "en-us+f3", "us", "F", 166),
    (1006, "en-gb-scotland", "scotland", "M", 170),
    (1007, "en-gb-x-rp+f4", "gb-rp", "F", 174),
    (1008, "en-029", "caribbean", "M", 178),
]
CHAPTERS_PER_SPEAKER, UTTS_PER_CHAPTER = 2, 4

# A small vocabulary reused across sentences, so that word-level analyses see
# many tokens per word type.  Speaker i reads sentences 4i .. 4i+7 (mod 32),
# hence every sentence is read by exactly two speakers.
SENTENCES = [
    "the old man walked to the river in the morning",
    "a little dog sat by the green door",
    "the children saw a red boat on the water",
    "every morning the woman opened the window",
    "the cold water of the river was very bright",
    "a little house stood near the old garden",
    "the woman and the children walked in the garden",
    "the red light was bright in the evening",
    "the dog ran to the river after the boat",
    "the old woman saw the light in the window",
    "children played in the green garden every evening",
    "the man painted the door of the little house red",
    "a cold wind came over the water in the morning",
    "the little boat was green and very old",
    "the dog slept by the window of the house",
    "every evening the old man sat near the door",
    "the river was cold and the light was green",
    "the woman walked the little dog to the garden",
    "the children opened the door of the old house",
    "a bright red boat came down the river",
    "in the morning the garden was cold and green",
    "the man saw the dog near the water",
    "the light from the window fell on the little door",
    "the children in the house wanted a little dog",
    "the old boat lay still on the cold river",
    "the woman saw children by the river in the evening",
    "a green light was on near the garden door",
    "the man and the woman walked home in the morning",
    "the little window of the boat was bright",
    "the dog and the children ran to the water",
    "every house near the river had a red door",
    "the evening light was cold over the old garden",
]
COMMANDS = ["yes", "no", "up", "down", "left", "right", "stop", "go"]


# --------------------------------------------------------------------------
# espeak-ng: audio from the command line, phoneme events from the library
# --------------------------------------------------------------------------
class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):  # espeak_EVENT from speak_lib.h
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)
EVENT_PHONEME, AUDIO_OUTPUT_SYNCHRONOUS, INIT_PHONEME_EVENTS = 7, 2, 1
PARAM_RATE, POS_CHARACTER, CHARS_UTF8 = 1, 1, 1


class PhonemeEvents:
    """Synthesise through libespeak-ng, collecting audio and phoneme events."""

    def __init__(self):
        self.lib = ctypes.CDLL("libespeak-ng.so.1")
        rate = self.lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, None, INIT_PHONEME_EVENTS)
        assert rate == NATIVE_SR, rate
        self._callback = _CALLBACK(self._collect)  # keep a reference alive
        self.lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, n, events):
        if n > 0:
            self.audio.append(np.ctypeslib.as_array(wav, (n,)).copy())
        i = 0
        while events[i].type != 0:  # espeakEVENT_LIST_TERMINATED
            if events[i].type == EVENT_PHONEME:
                self.events.append((events[i].sample, events[i].id.string.decode("ascii")))
            i += 1
        return 0

    def __call__(self, text, voice, rate):
        """Return (int16 audio, [(start sample, phoneme mnemonic), ...])."""
        self.audio, self.events = [], []
        assert self.lib.espeak_SetVoiceByName(voice.encode()) == 0, voice
        self.lib.espeak_SetParameter(PARAM_RATE, rate, 0)
        data = text.encode()
        self.lib.espeak_Synth(data, len(data) + 1, 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        return np.concatenate(self.audio), self.events


def espeak_cli(text, voice, rate):
    """Run ``espeak-ng -v VOICE -s RATE -w out.wav TEXT``; return int16 audio."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(rate), "-w", str(wav), text], check=True
        )
        audio, sr = sf.read(wav, dtype="int16")
    assert sr == NATIVE_SR and audio.ndim == 1, (sr, audio.shape)
    return audio


# --------------------------------------------------------------------------
# utterances: one word at a time, then concatenated
# --------------------------------------------------------------------------
def synth_word(word, voice, rate):
    """Return 16 kHz float audio of one word and its phones.

    The word is cut from its first phoneme event to the pause event after its
    last phoneme, with short fades.  (A plain amplitude threshold does not
    work: the female ``+fN`` variants add breath noise that rings on for
    ~150 ms after the word.)  Phones are (start, end, label) in 16 kHz
    samples within the word.
    """
    audio = espeak_cli(word, voice, rate)
    lib_audio, events = PhonemeEvents()(word, voice, rate)
    # the command only appends an end pause to exactly the same samples
    assert np.array_equal(audio[: len(lib_audio)], lib_audio), (word, voice)

    # "_" labels are pauses; phonemes the synthesiser gives no duration (such
    # as the Scottish voice's "r" in "morning") are not in the audio: drop them
    phones = [
        (s, label.strip("',"))
        for (s, label), (nxt, _) in pairwise(events)
        if not label.startswith("_") and nxt > s
    ]
    lo = phones[0][0]
    hi = min(s for s, label in events if label.startswith("_") and s > phones[-1][0])
    ramp = np.arange(hi - lo)
    fade = np.minimum(1, np.minimum(ramp, ramp[::-1]) / (FADE_S * NATIVE_SR))
    y = soxr.resample(audio[lo:hi] / 32768 * fade, NATIVE_SR, SR)
    bounds = [round((s - lo) * SR / NATIVE_SR) for s, _ in phones] + [len(y)]
    assert all(a < b for a, b in pairwise(bounds)), (word, voice, bounds)
    return y, [(a, b, label) for (a, b), (_, label) in zip(pairwise(bounds), phones, strict=True)]


def synthesise_words(keys):
    """Map each distinct (word, voice, rate) to synth_word's result.

    libespeak-ng carries synthesis state from one call to the next, so only
    the first synthesis in a process is sample-identical to the (fresh)
    espeak-ng command: every word therefore gets its own forked process.
    """
    keys = sorted(set(keys))
    with mp.get_context("fork").Pool(maxtasksperchild=1) as pool:
        return dict(zip(keys, pool.starmap(synth_word, keys, chunksize=1), strict=True))


def assemble(words, voice, rate, synthesised):
    """Return 16 kHz audio, word tier and phone tier of one sentence.

    Tiers are lists of (start, end, label) in samples covering the whole
    file; pauses are intervals with an empty label.
    """
    edge, gap = round(EDGE_S * SR), round(GAP_S * SR)
    pauses = [edge] + [gap] * (len(words) - 1) + [edge]
    pieces, word_tier, phone_tier, t = [], [], [], 0
    for i, pause in enumerate(pauses):
        pieces.append(np.zeros(pause))
        word_tier.append((t, t + pause, ""))
        phone_tier.append((t, t + pause, ""))
        t += pause
        if i < len(words):
            y, phones = synthesised[words[i], voice, rate]
            pieces.append(y)
            word_tier.append((t, t + len(y), words[i]))
            phone_tier += [(t + a, t + b, label) for a, b, label in phones]
            t += len(y)
    return np.concatenate(pieces), word_tier, phone_tier


# --------------------------------------------------------------------------
# writers
# --------------------------------------------------------------------------
def sec(n):
    """Samples -> seconds as text; exact, as n / 16000 has at most 7 decimals."""
    return repr(n / SR) if n else "0"


def write_textgrid(path, n_samples, tiers):
    """Write a long-format Praat TextGrid; tiers maps name -> intervals."""
    lines = [
        'File type = "ooTextFile"',
        'Object class = "TextGrid"',
        "",
        "xmin = 0 ",
        f"xmax = {sec(n_samples)} ",
        "tiers? <exists> ",
        f"size = {len(tiers)} ",
        "item []: ",
    ]
    for k, (name, intervals) in enumerate(tiers.items(), 1):
        lines += [
            f"    item [{k}]:",
            '        class = "IntervalTier" ',
            f'        name = "{name}" ',
            "        xmin = 0 ",
            f"        xmax = {sec(n_samples)} ",
            f"        intervals: size = {len(intervals)} ",
        ]
        for j, (a, b, label) in enumerate(intervals, 1):
            lines += [
                f"        intervals [{j}]:",
                f"            xmin = {sec(a)} ",
                f"            xmax = {sec(b)} ",
                f'            text = "{label}" ',
            ]
    path.write_text("\n".join(lines) + "\n")


def utterances():
    """Yield (speaker, voice, rate, chapter, utt_id, text) of the LibriSpeech part."""
    for i, (spk, voice, _, _, rate) in enumerate(VOICES):
        for c in range(CHAPTERS_PER_SPEAKER):
            for u in range(UTTS_PER_CHAPTER):
                chap = spk * 10 + c
                k = len(SENTENCES) // len(VOICES) * i + UTTS_PER_CHAPTER * c + u
                text = SENTENCES[k % len(SENTENCES)]
                yield spk, voice, rate, chap, f"{spk}-{chap}-{u:04d}", text


def write_librispeech(out):
    """Write the FLAC tree, transcripts and TextGrids; return seconds per speaker."""
    utts = list(utterances())
    synthesised = synthesise_words(
        (w, voice, rate) for _, voice, rate, _, _, text in utts for w in text.split()
    )
    seconds, transcripts = Counter(), {}
    for spk, voice, rate, chap, utt_id, text in utts:
        folder = out / "LibriSpeech" / SUBSET / str(spk) / str(chap)
        folder.mkdir(parents=True, exist_ok=True)
        audio, words, phones = assemble(text.split(), voice, rate, synthesised)
        sf.write(folder / f"{utt_id}.flac", audio, SR, subtype="PCM_16")
        write_textgrid(
            out / "alignments" / f"{utt_id}.TextGrid",
            len(audio),
            {"words": words, "phones": phones},
        )
        transcripts.setdefault(folder / f"{spk}-{chap}.trans.txt", []).append(
            f"{utt_id} {text.upper()}"
        )
        seconds[spk] += len(audio) / SR
    for path, lines in transcripts.items():
        path.write_text("\n".join(lines) + "\n")
    return seconds


def write_speakers(out, seconds):
    """Write SPEAKERS.TXT in LibriSpeech's format."""
    lines = [
        "; Synthetic speakers of the layerwise demo corpus: espeak-ng voices,",
        "; generated by resources/demo/make_demo.py (NAME is the espeak-ng voice).",
        ";ID  |SEX| SUBSET           |MINUTES| NAME",
    ]
    lines += [
        f"{spk:<5}| {sex} | {SUBSET:<17}| {seconds[spk] / 60:5.2f} | espeak-ng {voice}"
        for spk, voice, _, sex, _ in VOICES
    ]
    (out / "LibriSpeech" / "SPEAKERS.TXT").write_text("\n".join(lines) + "\n")
    # LibriSpeech has no accent column; the workflow joins this side table on `speaker`.
    rows = ["speaker\taccent\tvoice"] + [f"{s}\t{a}\t{v}" for s, v, a, _, _ in VOICES]
    (out / "speakers.tsv").write_text("\n".join(rows) + "\n")


def write_commands(out):
    """Write Speech-Commands style WAVs at espeak-ng's native rate + manifest."""
    rows = ["path\tword\tspeaker\taccent\tgender"]
    for word in COMMANDS:
        (out / "commands" / word).mkdir(parents=True)
        for spk, voice, accent, sex, rate in VOICES:
            rel = f"{word}/{spk}_{word}.wav"
            sf.write(
                out / "commands" / rel, espeak_cli(word, voice, rate), NATIVE_SR, subtype="PCM_16"
            )
            rows.append(f"{rel}\t{word}\t{spk}\t{accent}\t{sex}")
    (out / "commands" / "manifest.tsv").write_text("\n".join(rows) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="output folder (default: this script's folder)",
    )
    out = parser.parse_args().out
    for sub in ("LibriSpeech", "alignments", "commands"):  # only what we generate
        shutil.rmtree(out / sub, ignore_errors=True)
    (out / "alignments").mkdir(parents=True)
    seconds = write_librispeech(out)
    write_speakers(out, seconds)
    write_commands(out)
    print(f"wrote {out}: {sum(seconds.values()):.1f} s of LibriSpeech-style audio")


if __name__ == "__main__":
    main()
