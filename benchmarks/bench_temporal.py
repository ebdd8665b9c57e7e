"""Benchmark of the temporal tables at real size: time, rows and bytes against the utterance length.

Why: temporal dynamics became an analysis writing a table (``analyse_temporal``) that the plot
rule reads; the self-similarity table grows with the square of the frames, so its cost is
printed for several ``analysis.temporal.max_seconds``, beside the baseline of the in-memory
computation alone (what the plot used to do before drawing), in one process run.

The store is wav2vec2-base-shaped: 13 transformer layers of 768 dims at 50 Hz, float16, one
35 s utterance (LibriSpeech's longest); the analysis takes the schema's ``max_layers`` (6).
Each arm runs ``--repeat`` times and keeps its minimum. Nothing is asserted.

    python benchmarks/bench_temporal.py [--seconds 4,8,16,35] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: this repository

from benchmarks import schema  # noqa: E402
from benchmarks.bench_analysis import bench, note  # noqa: E402
from layerwise.analyses import temporal  # noqa: E402
from layerwise.extract.encoders import LayerInfo  # noqa: E402
from layerwise.io import store  # noqa: E402
from layerwise.io.tables import read_tsv, write_tsv  # noqa: E402

RATE, DIM, LAYERS, UTTERANCE_S, SR = 50.0, 768, 13, 35.0, 16000


def make_store(path: Path) -> store.FeatureStore:
    infos = [LayerInfo(f"layer.{i}", "transformer", RATE, DIM, 0.0125, 0.025)
             for i in range(LAYERS)]
    rng = np.random.default_rng(0)
    T = int(UTTERANCE_S * RATE)
    with store.ShardWriter(path, infos, {i.name for i in infos}, dtype="float16",
                           attrs={"model_type": "wav2vec2", "sample_rate": SR}) as w:
        w.append(["u"], [int(UTTERANCE_S * SR)],
                 {i.name: [rng.standard_normal((T, DIM)).astype(np.float32)] for i in infos})
    return store.open(path)


def best(fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", default="4,8,16,35", help="max_seconds values")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    params = schema.defaults("analysis", "temporal")
    no_words = pd.DataFrame(columns=["utt_id", "tier", "start_s", "end_s", "label"])
    with tempfile.TemporaryDirectory() as tmp:
        fs = make_store(Path(tmp) / "s.h5")
        for seconds in (float(s) for s in args.seconds.split(",")):
            tag = f"{seconds:g}s"
            note(f"max_seconds {seconds:g}, {params['max_layers']} of {LAYERS} layers")
            kw = {**params, "max_seconds": seconds}
            t_tables, (selfsim, traj) = best(
                lambda kw=kw: temporal.temporal_tables(fs, no_words, model="m", **kw), args.repeat)
            frames = {x: fs.frames(x, "u")[: int(seconds * RATE)] for x in selfsim.layer.unique()}
            t_base, _ = best(lambda frames=frames: [temporal.cosine_self_similarity(X)
                                                    for X in frames.values()], args.repeat)
            out = Path(tmp) / f"selfsim-{tag}.tsv"
            t_write, _ = best(lambda out=out, selfsim=selfsim: write_tsv(selfsim, out), args.repeat)
            t_read, _ = best(lambda out=out: read_tsv(out), args.repeat)
            bench(f"temporal_selfsim_rows_{tag}", len(selfsim))
            bench(f"temporal_selfsim_mib_{tag}", out.stat().st_size / 2**20)
            bench(f"seconds_temporal_tables_{tag}", t_tables)
            bench(f"seconds_selfsim_in_memory_{tag}", t_base)
            bench(f"temporal_tables_over_in_memory_{tag}", t_tables / t_base)
            bench(f"seconds_selfsim_write_{tag}", t_write)
            bench(f"seconds_selfsim_read_{tag}", t_read)
            bench(f"temporal_trajectory_rows_{tag}", len(traj))


if __name__ == "__main__":
    main()
