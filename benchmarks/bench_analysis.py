"""Benchmark of the analysis step: can every analysis of one model run in about a minute?

Why: after extraction, the workflow runs each analysis of ``layerwise.analyses.NAMES`` once per
(model, span, pooling), on every layer at once. With many models, spans and poolings this
step runs tens of times, so each call must stay cheap on a small machine (target: the whole
set within 60 s on 2 cores for 13 layers x 2,700 word rows x 768 dims). Frame-level linear
CKA is the one analysis whose rows do not fit in memory; ``StreamingGram`` must keep its
memory bounded (target: peak RSS within 4 GiB for 200,000 frames x 13 layers x 768) and give
the same value as the in-memory ``cka_linear``.

Two arms, one figure per line (``bench <name> <value>``) on stdout; notes on stderr:

* ``analyses``: synthetic pooled word-span layers (float32, as the workflow stores them; weak
  speaker / accent / word structure on top of noise, so probes and clusters have something to
  find) and a pool index with string columns ``row, utt_id, start_s, end_s, unit, speaker,
  accent, word``. Each analysis runs once through ``layerwise.analyses.run`` exactly as
  ``scripts/analyse.py`` calls it, with the schema defaults of its ``analysis:`` section
  (read from ``schemas/config.schema.yaml``) and ``n_jobs`` = ``--jobs`` (default 2, the
  ``analyse`` rule's threads). Figures: ``seconds_<analysis>`` and ``seconds_analysis_total``;
  ``cpu_seconds_*`` count this process only, not joblib's worker processes (the probes with
  ``--jobs`` > 1). With ``--jobs`` > 1 the probes run once more with one job, in the same
  process, and ``probes_speedup_jobs`` is the ratio.
* ``stream``: all L x L linear CKA values through ``StreamingGram`` over frames generated chunk
  by chunk from seeded generators (each layer a drifting random linear map of a shared latent,
  plus an offset and noise), never holding all frames. It runs in a fresh (spawned) process so
  that ``ru_maxrss`` is its own peak. Figures: wall seconds (``stream_seconds``, of which
  ``stream_seconds_update`` inside ``StreamingGram.update``), throughput, peak RSS and the
  largest difference from ``cka_linear`` on a subset held in memory.

The machine may be shared: targets are printed beside the figures (``target_*``), never
asserted; quote medians of repeated runs and the load average printed on stderr.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import os
import pstats
import resource
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: this repository

from benchmarks import schema  # noqa: E402
from layerwise import analyses  # noqa: E402
from layerwise.analyses.similarity import StreamingGram, cka_linear  # noqa: E402

MODEL = "bench"
SPAN, POOLING = "word", "mean"
#: Corpus labels (``corpus.labels``) and their class counts; ``word`` is the span's unit label.
CORPUS_LABELS = ("speaker", "accent")
N_SPEAKERS, N_ACCENTS, N_WORDS = 40, 8, 30
WORDS_PER_UTTERANCE = 10
VERIFY_FRAMES, VERIFY_LAYERS = 5_000, 3
TARGET_TOTAL_S, TARGET_PEAK_GIB = 60, 4


@dataclass(frozen=True)
class Shape:
    """Sizes of both arms."""

    layers: int
    rows: int
    dim: int
    frames: int
    chunk: int


FULL = Shape(layers=13, rows=2_700, dim=768, frames=200_000, chunk=4_096)
QUICK = Shape(layers=4, rows=500, dim=128, frames=20_000, chunk=4_096)


def bench(name: str, value: float | int) -> str:
    """One figure line; floats with 4 significant decimals."""
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    line = f"bench {name} {text}"
    print(line, flush=True)
    return line


def note(text: str) -> None:
    print(f"# {text} (load average {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Timing:
    """Wall seconds, and CPU seconds of this process (all its threads) over the same span."""

    wall: float
    cpu: float


def timed(fn: Callable, /, *args, **kwargs) -> tuple[Timing, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return Timing(time.perf_counter() - wall, time.process_time() - cpu), out


# --------------------------------------------------------------------------- arm 1: analyses


def schema_defaults() -> dict[str, dict]:
    """``{analysis: {key: default}}`` of the schema's ``analysis:`` section (what Snakemake's
    ``validate`` fills in for an empty config)."""
    return {name: schema.defaults("analysis", name) for name in analyses.NAMES}


def make_index(n_rows: int, seed: int) -> pd.DataFrame:
    """Word-span pool index: utterances of 10 words, one speaker each, one accent per speaker."""
    rng = np.random.default_rng([seed, 0])
    utt = np.arange(n_rows) // WORDS_PER_UTTERANCE
    speaker = utt % N_SPEAKERS
    position = np.arange(n_rows) % WORDS_PER_UTTERANCE
    start = 0.1 + 0.4 * position
    word = np.array([f"w{i:02d}" for i in rng.integers(0, N_WORDS, n_rows)])
    return pd.DataFrame({
        "row": np.arange(n_rows).astype(str),
        "utt_id": [f"utt{u:04d}" for u in utt],
        "start_s": [f"{s:.3f}" for s in start],
        "end_s": [f"{s + 0.35:.3f}" for s in start],
        "unit": word,
        "speaker": [f"spk{s:02d}" for s in speaker],
        "accent": [f"acc{s % N_ACCENTS}" for s in speaker],
        "word": word,
    })


def make_layers(index: pd.DataFrame, n_layers: int, dim: int, seed: int) -> dict[str, np.ndarray]:
    """``{"layer.<i>": float32 (rows, dim)}``: noise plus weak class means per label.

    Speaker and accent weigh most in early layers, the word in late ones, so that the
    analyses see differences between layers as they would on a real model.
    """
    rng = np.random.default_rng([seed, 1])
    codes = {c: np.unique(index[c], return_inverse=True)[1] for c in (*CORPUS_LABELS, "word")}
    means = {c: rng.standard_normal((code.max() + 1, dim)) for c, code in codes.items()}
    offset = rng.standard_normal(dim)
    layers = {}
    for i in range(n_layers):
        depth = i / max(1, n_layers - 1)
        weight = {"speaker": 0.4 * (1 - depth), "accent": 0.2 * (1 - depth), "word": 0.4 * depth}
        X = rng.standard_normal((len(index), dim)) + offset
        for c, code in codes.items():
            X += weight[c] * means[c][code]
        layers[f"layer.{i}"] = X.astype(np.float32)
    return layers


def run_analysis(name: str, index: pd.DataFrame, layers: dict, params: dict,
                 n_jobs: int = 1) -> pd.DataFrame:
    """One analysis, called as ``scripts/analyse.py`` calls it (``n_jobs``: the job's threads)."""
    return analyses.run(name, index, layers, model=MODEL, span=SPAN, pooling=POOLING,
                        labels=list(CORPUS_LABELS), params=params, seed=0, n_jobs=n_jobs)


def profile_analysis(name: str, index: pd.DataFrame, layers: dict, params: dict,
                     *, top: int = 15) -> str:
    """cProfile of one more run of ``name`` (one process): the ``top`` functions by cumulative
    time."""
    profiler = cProfile.Profile()
    profiler.runcall(run_analysis, name, index, layers, params)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    return f"# profile of {name}\n{out.getvalue()}"


def arm_analyses(shape: Shape, names: Sequence[str], *, seed: int, jobs: int = 1,
                 profile: Sequence[str] = ()) -> list[str]:
    index = make_index(shape.rows, seed)
    layers = make_layers(index, shape.layers, shape.dim, seed)
    defaults = schema_defaults()
    times = {}
    for name in names:
        note(f"analysis {name} with {defaults[name]}, {jobs} job(s)")
        times[name], table = timed(run_analysis, name, index, layers, defaults[name], jobs)
        note(f"{name}: {times[name].wall:.2f} s wall, {times[name].cpu:.2f} s cpu, "
             f"{len(table)} table rows")
    lines = []
    if "probes" in names and jobs > 1:  # the baseline: the same probes in this process only
        note("probes again with 1 job (baseline of probes_speedup_jobs)")
        one, _ = timed(run_analysis, "probes", index, layers, defaults["probes"], 1)
        lines.append(bench("seconds_probes_1job", one.wall))
        lines.append(bench("probes_speedup_jobs", one.wall / times["probes"].wall))
    if names:  # --analyses "" --profile NAME profiles without timing first
        lines += [bench(f"seconds_{name}", times[name].wall) for name in names]
        lines.append(bench("seconds_analysis_total", sum(t.wall for t in times.values())))
        lines.append(bench("target_analysis_total_s", TARGET_TOTAL_S))
        lines += [bench(f"cpu_seconds_{name}", times[name].cpu) for name in names]
        lines.append(bench("cpu_seconds_analysis_total", sum(t.cpu for t in times.values())))
    for name in profile:
        print(profile_analysis(name, index, layers, defaults[name]), file=sys.stderr, flush=True)
    return lines


# --------------------------------------------------------------------------- arm 2: streaming


LATENT_RANK = 64
DRIFT = 0.35  # radians of rotation of a layer's map away from the previous layer's


def layer_maps(n_layers: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer latent maps (L, rank, dim), each a drift of the previous, and offsets (L, dim)."""
    rng = np.random.default_rng([seed, 2])
    maps = np.empty((n_layers, LATENT_RANK, dim), dtype=np.float32)
    maps[0] = rng.standard_normal((LATENT_RANK, dim)) / math.sqrt(LATENT_RANK)
    for i in range(1, n_layers):
        fresh = rng.standard_normal((LATENT_RANK, dim)) / math.sqrt(LATENT_RANK)
        maps[i] = math.cos(DRIFT) * maps[i - 1] + math.sin(DRIFT) * fresh
    offsets = 3.0 * rng.standard_normal((n_layers, dim)).astype(np.float32)
    return maps, offsets


def frame_chunks(n_frames: int, n_layers: int, dim: int, chunk: int, seed: int,
                 layers: Sequence[int] | None = None) -> Iterator[list[np.ndarray]]:
    """float32 chunks ``[layer (rows, dim) for layer in layers]`` of a seeded frame stream.

    Chunk ``c`` of layer ``i`` depends only on ``(seed, c, i)``, so a subset of layers or
    the first chunks give exactly the frames of the full stream.
    """
    maps, offsets = layer_maps(n_layers, dim, seed)
    layers = range(n_layers) if layers is None else layers
    for c, start in enumerate(range(0, n_frames, chunk)):
        rows = min(chunk, n_frames - start)
        latent = np.random.default_rng([seed, 3, c]).standard_normal(
            (rows, LATENT_RANK), dtype=np.float32)
        out = []
        for i in layers:
            X = np.random.default_rng([seed, 4, c, i]).standard_normal((rows, dim),
                                                                       dtype=np.float32)
            X *= 0.5
            X += latent @ maps[i]
            X += offsets[i]
            out.append(X)
        yield out


def stream_cka(shape: Shape, seed: int) -> dict[str, float]:
    """All L x L linear CKA values over the whole stream (run in a fresh process)."""
    gram = StreamingGram()
    update = 0.0
    start = time.perf_counter()
    for chunks in frame_chunks(shape.frames, shape.layers, shape.dim, shape.chunk, seed):
        t0 = time.perf_counter()
        gram.update(chunks)
        update += time.perf_counter() - t0
    cka = gram.cka_matrix()
    wall = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"wall": wall, "update": update, "peak_gib": peak_kib / 2**20,
            "state_gib": StreamingGram.state_bytes([shape.dim] * shape.layers) / 2**30,
            "cka_min": float(np.nanmin(cka)), "cka_adjacent": float(np.mean(np.diag(cka, 1)))}


def verify_stream(shape: Shape, seed: int) -> float:
    """Largest |streamed - cka_linear| on the first frames of the first layers, in memory."""
    n_layers = min(VERIFY_LAYERS, shape.layers)
    n_frames = min(VERIFY_FRAMES, shape.frames)
    # the same frames as the start of the full stream: with chunks of 4,096, two chunks
    chunks = list(frame_chunks(n_frames, shape.layers, shape.dim, shape.chunk, seed,
                               layers=range(n_layers)))
    gram = StreamingGram()
    for part in chunks:
        gram.update(part)
    full = [np.concatenate([part[i] for part in chunks]) for i in range(n_layers)]
    streamed = gram.cka_matrix()
    return max(abs(streamed[i, j] - cka_linear(full[i], full[j]))
               for i in range(n_layers) for j in range(n_layers))


def arm_stream(shape: Shape, *, seed: int) -> list[str]:
    note(f"streaming {shape.frames} frames x {shape.layers} layers x {shape.dim} in chunks of "
         f"{shape.chunk}, in a spawned process")
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        res = pool.submit(stream_cka, shape, seed).result()
    note(f"stream: state {res['state_gib']:.3f} GiB, CKA min {res['cka_min']:.3f}, "
         f"adjacent layers {res['cka_adjacent']:.3f}")
    flops = 2.0 * shape.frames * shape.dim**2 * shape.layers * (shape.layers + 1) / 2
    return [
        bench("stream_seconds", res["wall"]),
        bench("stream_seconds_update", res["update"]),
        bench("stream_frames_per_s", shape.frames / res["wall"]),
        bench("stream_update_gflops", flops / res["update"] / 1e9),
        bench("stream_peak_gib", res["peak_gib"]),
        bench("target_stream_peak_gib", TARGET_PEAK_GIB),
        bench("stream_vs_inmemory_max_abs_diff", verify_stream(shape, seed)),
    ]


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {QUICK.layers} layers x {QUICK.rows} rows x {QUICK.dim} "
                        f"dims, {QUICK.frames} frames")
    p.add_argument("--layers", type=int, help="layers of both arms (default 13)")
    p.add_argument("--frames", type=int, help="frames of the streaming arm (default 200,000)")
    p.add_argument("--chunk", type=int, help="frames per StreamingGram.update (default 4,096)")
    p.add_argument("--analyses", default=",".join(analyses.NAMES),
                   help="comma-separated subset of the analyses (default: all; \"\" with "
                        "--profile: profile only)")
    p.add_argument("--skip-stream", action="store_true", help="run the analyses arm only")
    p.add_argument("--skip-analyses", action="store_true", help="run the streaming arm only")
    p.add_argument("--profile", default="",
                   help="comma-separated analyses to profile after timing (top 15 cumulative, "
                        "stderr)")
    p.add_argument("--jobs", type=int, default=2,
                   help="n_jobs of the analyses, as the workflow passes the analyse rule's "
                        "threads (default 2); with > 1 the probes run once more with 1 job")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def shape_of(args: argparse.Namespace) -> Shape:
    base = QUICK if args.quick else FULL
    return Shape(layers=args.layers or base.layers, rows=base.rows, dim=base.dim,
                 frames=args.frames or base.frames, chunk=args.chunk or base.chunk)


def split(text: str) -> list[str]:
    names = [name for name in text.split(",") if name]
    unknown = sorted(set(names) - set(analyses.NAMES))
    if unknown:
        raise SystemExit(f"unknown analyses {unknown}; known: {', '.join(analyses.NAMES)}")
    return names


def main(argv: Sequence[str] | None = None) -> list[str]:
    args = parse_args(argv)
    shape = shape_of(args)
    note(f"{shape}, {len(os.sched_getaffinity(0))} cores")
    lines = []
    if not args.skip_analyses:
        lines += arm_analyses(shape, split(args.analyses), seed=args.seed, jobs=args.jobs,
                              profile=split(args.profile))
    if not args.skip_stream:
        lines += arm_stream(shape, seed=args.seed)
    return lines


if __name__ == "__main__":
    main()
