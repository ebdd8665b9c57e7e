"""Benchmark of ``layerwise.extract.features.extract_shard``: what does the pipeline cost beyond the model?

Why: extraction is the one expensive step of the workflow, so its plumbing (audio decoding,
batching, hooks, float16 conversion, HDF5 writes) must cost little next to the model itself,
and the result must beat what people otherwise write: a notebook loop that runs the plain
Hugging Face model one file at a time and keeps every hidden state in ``.npz`` files.

All arms run in this one process, on the same audio, interleaved, and the script prints
ratios (``bench <name> <value>``, one figure per line). It never asserts a time: the machine
may be shared, so ratios of arms measured side by side are the figures to quote. The arms:

* ``load``: ``models.load`` + ``encoders.wrap`` of the prepared model folder;
* ``pure_forward``: ``enc.forward`` over the batches ``extract_shard`` plans, with the
  waveforms already decoded in memory (no file I/O, no conversion, no HDF5);
* ``extract``: one end-to-end ``extract_shard`` call (its model load included);
* ``npz_loop``: soundfile read, HF feature extractor, ``model(..., output_hidden_states=True)``
  one file at a time, every hidden state as float32 into ``np.savez_compressed``;
* ``extract_pooled``: ``extract_shard`` with ``extract.store: pooled`` (the demo's word and
  phone alignments, ``--span-poolings``): the file holds pooled rows, not frames.

Figures: ``overhead_ratio`` = (extract - load) / pure_forward; ``speedup_vs_npz_loop`` =
npz_loop / extract; ``bytes_ratio_vs_npz_loop`` = HDF5 bytes / npz bytes; with CUDA also
``realtime_factor_gpu`` and ``batching_speedup_gpu``; ``bytes_per_audio_s_frames`` and
``bytes_per_audio_s_pooled`` (the feature file per audio second in each ``extract.store``) and
their ratio. benchmarks/README.md explains each.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import soundfile as sf
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: this repository

from benchmarks import schema  # noqa: E402
from layerwise.extract import devices, encoders, features, models  # noqa: E402
from layerwise.ingest import audio, corpus, shards  # noqa: E402
from layerwise.io.tables import read_tsv  # noqa: E402
from layerwise.pool.in_extraction import ShardPooler  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "resources/demo/LibriSpeech/dev-clean"
DEMO_ALIGNMENTS = ROOT / "resources/demo/alignments"
MODEL = "random:wav2vec2-base"
SAMPLE_RATE = 16000
QUICK_MINUTES = 1.0


@dataclass
class Corpus:
    """The benchmark's audio: one shard table of 16 kHz WAVs and their decoded waveforms."""

    table_path: Path
    table: pd.DataFrame
    waves: dict[str, np.ndarray]
    manifest: pd.DataFrame
    alignments: pd.DataFrame

    @property
    def audio_seconds(self) -> float:
        return float(self.table["n_samples"].sum()) / SAMPLE_RATE


@dataclass
class Settings:
    """What every arm shares: model folder, device, layer selection, batch budget."""

    model_dir: Path
    device: torch.device
    layers: tuple[str, ...] = ("cnn", "proj", "layer")
    frames: tuple[str, ...] = ("layer",)
    batch_seconds: float = 60.0
    compression: str | None = None
    span_poolings: tuple[str, ...] = ("utterance-mean", "word-mean", "phone-mean")
    max_frames: int = 3000


@dataclass(frozen=True)
class Timing:
    """Wall seconds, and CPU seconds of this process (all its threads) over the same span."""

    wall: float
    cpu: float


@dataclass
class Results:
    """Best (minimum) wall and CPU seconds per arm over the repeats, and bytes written."""

    wall: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    batches: int = 0

    def keep_min(self, arm: str, t: Timing) -> None:
        self.wall[arm] = min(t.wall, self.wall.get(arm, float("inf")))
        self.cpu[arm] = min(t.cpu, self.cpu.get(arm, float("inf")))
        print(f"# {arm}: {t.wall:.3f} s wall, {t.cpu:.3f} s cpu, load average "
              f"{os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- set-up


def prepare_audio(work: Path, *, minutes: float | None = None, groups: int = 1,
                  source: Path = DEMO) -> Corpus:
    """Decode the demo FLACs to 16 kHz WAV with the workflow's own scan and shard steps.

    ``minutes`` keeps the first utterances (in id order) up to that much audio; ``groups`` is
    ``corpus.batch_groups`` (batches never mix groups; the README says why 1 is the default).
    """
    scan = corpus.scan({"source": "librispeech", "path": str(source), "shards": 1,
                        "batch_groups": groups, "alignments": str(DEMO_ALIGNMENTS)},
                       progress=False)
    manifest = scan.manifest
    if minutes is not None:
        before = manifest["duration_s"].cumsum() - manifest["duration_s"]
        manifest = manifest[before < minutes * 60]
    table_path = work / "shard-0.tsv"
    shards.build_shard(manifest, 0, work / "wav", table_path, work / "shard-0.rejected.tsv",
                       sample_rate=SAMPLE_RATE, progress=False)
    table = read_tsv(table_path, dtype={"utt_id": str, "path": str})
    waves = {u: audio.load(p, sample_rate=SAMPLE_RATE, min_seconds=0)
             for u, p in zip(table["utt_id"], table["path"], strict=True)}
    return Corpus(table_path, table, waves, manifest, scan.alignments)


def prepare_model(work: Path) -> Path:
    """The random-weight wav2vec2-base, saved once as the workflow's ``model_prepare`` does."""
    return models.prepare(MODEL, work / "model")


def load_encoder(settings: Settings) -> encoders.SpeechEncoder:
    loaded = models.load(str(settings.model_dir))
    return encoders.wrap(loaded.model, loaded.feature_extractor, settings.device)


def plan(enc: encoders.SpeechEncoder, table: pd.DataFrame, batch_seconds: float
         ) -> tuple[list[str], list[list[int]]]:
    """Utterance order and batches exactly as ``extract_shard`` makes them."""
    table, batches = features.batch_order(enc, table, batch_seconds)
    return list(table["utt_id"]), batches


def layer_sets(enc: encoders.SpeechEncoder, settings: Settings) -> tuple[set[str], set[str]]:
    """(framed, pooled) layer names, resolved as ``extract_shard`` resolves them."""
    names = encoders.expand_layer_groups(enc.layers, settings.layers)
    framed = set(encoders.expand_layer_groups(enc.layers, settings.frames)) & set(names)
    return framed, set(names) - framed


def timed(device: torch.device, fn: Callable, /, *args, **kwargs) -> tuple[Timing, object]:
    """Timing of ``fn(*args, **kwargs)``, queued work on ``device`` included, and its result."""
    sync = {"cuda": lambda: torch.cuda.synchronize(device),
            "mps": lambda: torch.mps.synchronize()}.get(device.type, lambda: None)
    sync()
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    sync()
    return Timing(time.perf_counter() - wall, time.process_time() - cpu), result


def warm_up(enc: encoders.SpeechEncoder, data: Corpus, settings: Settings) -> None:
    """One untimed batched forward, so no arm pays for first-call allocations and kernels."""
    arm_pure_forward(enc, data, settings, max_batches=1)


# --------------------------------------------------------------------------- arms


def arm_load(settings: Settings) -> Timing:
    """Seconds to load the prepared model and wrap it (the first thing ``extract_shard`` does)."""
    return timed(settings.device, load_encoder, settings)[0]


def arm_pure_forward(enc: encoders.SpeechEncoder, data: Corpus, settings: Settings, *,
                     batch_seconds: float | None = None, max_batches: int | None = None
                     ) -> Timing:
    """Seconds of ``enc.forward`` alone over the planned batches (waveforms in memory)."""
    budget = settings.batch_seconds if batch_seconds is None else batch_seconds
    order, batches = plan(enc, data.table, budget)
    framed, pooled = layer_sets(enc, settings)
    batch_waves = [[data.waves[order[i]] for i in b] for b in batches[:max_batches]]

    def run() -> None:
        with torch.inference_mode():
            for waves in batch_waves:
                enc.forward(waves, framed, pooled)

    return timed(settings.device, run)[0]


def arm_extract(data: Corpus, settings: Settings, out: Path, *,
                batch_seconds: float | None = None, pooled: bool = False) -> tuple[Timing, int]:
    """Timing of one end-to-end ``extract_shard`` call, and the bytes of the file it wrote.

    ``pooled``: ``extract.store: pooled`` over ``settings.span_poolings`` (the pooler's set-up,
    which samples the frame span's instants, is timed too).
    """
    out.unlink(missing_ok=True)

    def pooler() -> ShardPooler | None:
        if not pooled:
            return None
        return ShardPooler(settings.span_poolings, data.manifest, data.alignments,
                           max_frames=settings.max_frames)

    t, _ = timed(
        settings.device, lambda: features.extract_shard(
            data.table_path, out, out.with_suffix(".rejected.tsv"),
            model_dir=str(settings.model_dir), source=MODEL, progress=False, pooler=pooler(),
            **{**schema.defaults("extract"), "revision": None,
               "sample_rate": schema.defaults("audio")["sample_rate"], "layers": settings.layers,
               "frames": settings.frames, "dtype": "float16", "device": str(settings.device),
               "compression": settings.compression, "store": "pooled" if pooled else "frames",
               "batch_seconds": settings.batch_seconds if batch_seconds is None
               else batch_seconds}),
    )
    return t, out.stat().st_size


def arm_npz_loop(model: torch.nn.Module, feature_extractor, data: Corpus, out_dir: Path,
                 device: torch.device) -> tuple[Timing, int]:
    """The notebook baseline: one file at a time, plain HF model, float32 ``savez_compressed``.

    Returns its timing and the total bytes of the ``.npz`` files.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.npz"):
        old.unlink()

    def run() -> None:
        for utt, path in zip(data.table["utt_id"], data.table["path"], strict=True):
            wave, sr = sf.read(path, dtype="float32")
            inputs = feature_extractor(wave, sampling_rate=sr, return_tensors="pt")
            with torch.inference_mode():
                result = model(inputs.input_values.to(device), output_hidden_states=True)
            arrays = {f"layer_{i}": h[0].float().cpu().numpy()
                      for i, h in enumerate(result.hidden_states)}
            np.savez_compressed(out_dir / f"{utt}.npz", **arrays)

    t, _ = timed(device, run)
    return t, sum(p.stat().st_size for p in out_dir.glob("*.npz"))


def profile_extract(data: Corpus, settings: Settings, out: Path, *, top: int = 15) -> str:
    """cProfile of one ``extract_shard`` call (main thread only), top ``top`` by cumulative."""
    prof = cProfile.Profile()
    prof.runcall(arm_extract, data, settings, out)
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(top)
    return buf.getvalue()


def layer_frame_bytes(h5: Path) -> int:
    """Bytes allocated to the ``layer.*`` frame datasets only (no pooled layers, no index)."""
    with h5py.File(h5, "r") as f:
        return sum(f[f"layers/{n}/frames"].id.get_storage_size()
                   for n in f["layers"] if n.startswith("layer.")
                   and f[f"layers/{n}"].attrs["storage"] == "frames")


# --------------------------------------------------------------------------- driver


def run_all(data: Corpus, settings: Settings, work: Path, *, repeat: int = 1) -> Results:
    """Every arm ``repeat`` times, interleaved (so background load hits all arms alike)."""
    res = Results()
    loaded = models.load(str(settings.model_dir))
    enc = encoders.wrap(loaded.model, loaded.feature_extractor, settings.device)
    warm_up(enc, data, settings)
    res.batches = len(plan(enc, data.table, settings.batch_seconds)[1])
    cuda = settings.device.type == "cuda"
    h5 = work / "out" / "shard-0.h5"
    for r in range(repeat):
        print(f"# round {r + 1}/{repeat}", file=sys.stderr, flush=True)
        res.keep_min("load", arm_load(settings))
        res.keep_min("pure_forward", arm_pure_forward(enc, data, settings))
        t, res.bytes["h5"] = arm_extract(data, settings, h5)
        res.keep_min("extract", t)
        t, res.bytes["npz"] = arm_npz_loop(loaded.model, loaded.feature_extractor, data,
                                           work / "npz", settings.device)
        res.keep_min("npz_loop", t)
        t, res.bytes["h5_pooled"] = arm_extract(data, settings, work / "out" / "pooled.h5",
                                                pooled=True)
        res.keep_min("extract_pooled", t)
        if cuda:
            res.keep_min("pure_forward_batch1", arm_pure_forward(enc, data, settings,
                                                                 batch_seconds=0.0))
            res.keep_min("extract_batch1", arm_extract(data, settings, h5, batch_seconds=0.0)[0])
            arm_extract(data, settings, h5)  # leave the batched run's file for the byte counts
    res.bytes["h5_layer_frames"] = layer_frame_bytes(h5)
    res.rows = pooled_rows(work / "out" / "pooled.h5")
    return res


def pooled_rows(h5: Path) -> dict[str, int]:
    """Rows per span in a pooled-mode feature file."""
    with h5py.File(h5, "r") as f:
        return {span: len(f[f"pooled/{span}/index/utt_id"]) for span in f["pooled"]}


def time_ratios(t: dict[str, float]) -> dict[str, float]:
    """The time figures from one clock's per-arm seconds (wall or CPU)."""
    steady = t["extract"] - t["load"]
    out = {
        "overhead_ratio": steady / t["pure_forward"],
        "overhead_ratio_incl_load": t["extract"] / (t["pure_forward"] + t["load"]),
        "speedup_vs_npz_loop": t["npz_loop"] / t["extract"],
    }
    if "pure_forward_batch1" in t:
        out["batching_speedup_gpu"] = t["pure_forward_batch1"] / t["pure_forward"]
        out["batching_speedup_gpu_extract"] = t["extract_batch1"] / t["extract"]
    return out


def report(data: Corpus, settings: Settings, res: Results, *, threads: int) -> list[str]:
    """The ``bench <name> <value>`` lines: context first, then the figures.

    Headline figures use wall time; ``*_cpu`` lines repeat them with this process's CPU time,
    which a busy machine disturbs less, though not entirely (OpenMP spin counts as CPU time);
    printed on CPU devices only, since a GPU's work is not in it.
    """
    b, secs = res.bytes, data.audio_seconds
    lines: dict[str, object] = {
        "model": MODEL,
        "device": str(settings.device),
        "threads": threads,
        "load_average_1min": f"{os.getloadavg()[0]:.2f}",
        "audio_seconds": f"{secs:.2f}",
        "utterances": len(data.table),
        "batch_seconds": f"{settings.batch_seconds:g}",
        "batches": res.batches,
        "layers": ",".join(settings.layers),
        "frames": ",".join(settings.frames),
        "compression": settings.compression or "none",
        **{f"{arm}_s": f"{v:.3f}" for arm, v in res.wall.items()},
        "bytes_h5": b["h5"],
        "bytes_h5_layer_frames": b["h5_layer_frames"],
        "bytes_npz": b["npz"],
        "bytes_per_audio_second": f"{b['h5'] / secs:.0f}",
        "bytes_per_audio_second_npz_loop": f"{b['npz'] / secs:.0f}",
        "bytes_ratio_layer_frames_vs_npz_loop": f"{b['h5_layer_frames'] / b['npz']:.3f}",
        "span_poolings": ",".join(settings.span_poolings),
        **{f"pooled_rows_per_audio_s_{span}": f"{n / secs:.2f}" for span, n in res.rows.items()},
        "bytes_h5_pooled": b["h5_pooled"],
        "bytes_per_audio_s_frames": f"{b['h5'] / secs:.0f}",
        "bytes_per_audio_s_pooled": f"{b['h5_pooled'] / secs:.0f}",
        "bytes_ratio_frames_vs_pooled": f"{b['h5'] / b['h5_pooled']:.2f}",
    }
    if settings.device.type == "cpu":
        lines.update({f"{arm}_cpu_s": f"{v:.3f}" for arm, v in res.cpu.items()})
        lines.update({f"{k}_cpu": f"{v:.3f}" for k, v in time_ratios(res.cpu).items()
                      if k != "overhead_ratio_incl_load"})
    wall = time_ratios(res.wall)
    lines["overhead_ratio_incl_load"] = f"{wall.pop('overhead_ratio_incl_load'):.3f}"
    lines.update({k: f"{v:.3f}" for k, v in wall.items()})
    lines["bytes_ratio_vs_npz_loop"] = f"{b['h5'] / b['npz']:.3f}"
    lines["time_ratio_extract_pooled_vs_frames"] = (
        f"{res.wall['extract_pooled'] / res.wall['extract']:.3f}")
    if settings.device.type == "cuda":
        lines["realtime_factor_gpu"] = f"{secs / (res.wall['extract'] - res.wall['load']):.1f}"
    return [f"bench {k} {v}" for k, v in lines.items()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=None,
                   help="use the first N minutes of the demo audio (default: all, 4.3 min)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: --minutes {QUICK_MINUTES:g}")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--batch-seconds", type=float, default=60.0,
                   help="extract.batch_seconds: padded audio seconds per batch (default 60)")
    p.add_argument("--repeat", type=int, default=1, help="runs per arm; the minimum is kept")
    p.add_argument("--layers", default="cnn,proj,layer",
                   help="extract.layers groups or names, comma-separated (default cnn,proj,layer;"
                        " layer.* are stored as frames, the others as means)")
    p.add_argument("--compression", choices=["none", "lzf", "gzip"], default="none",
                   help="extract.compression of the HDF5 file (default none, as the workflow)")
    p.add_argument("--profile", action="store_true",
                   help="after the arms, profile one more extract_shard call (stderr)")
    p.add_argument("--span-poolings", default="utterance-mean,word-mean,phone-mean",
                   help="the extract_pooled arm's span-pooling pairs, comma-separated (default "
                        "utterance-mean,word-mean,phone-mean)")
    p.add_argument("--max-frames", type=int, default=3000,
                   help="pool.max_frames, for a frame-* pair in --span-poolings (default 3000)")
    p.add_argument("--groups", type=int, default=1,
                   help="corpus.batch_groups for the benchmark shard (default 1, see README)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: the cores this process may use)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where to put audio, model and outputs (default: a temporary folder)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[str]:
    args = parse_args(argv)
    transformers.utils.logging.disable_progress_bar()  # keep stderr for the arms' timings
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    minutes = QUICK_MINUTES if args.quick else args.minutes
    with tempfile.TemporaryDirectory(prefix="bench-extract-", dir=args.workdir) as tmp:
        work = Path(tmp)
        data = prepare_audio(work, minutes=minutes, groups=args.groups)
        settings = Settings(model_dir=prepare_model(work), device=devices.resolve(args.device),
                            layers=tuple(args.layers.split(",")),
                            batch_seconds=args.batch_seconds,
                            span_poolings=tuple(args.span_poolings.split(",")),
                            max_frames=args.max_frames,
                            compression=None if args.compression == "none" else args.compression)
        res = run_all(data, settings, work, repeat=args.repeat)
        if args.profile:
            print(profile_extract(data, settings, work / "out" / "profiled.h5"), file=sys.stderr)
        lines = report(data, settings, res, threads=threads)
    print("\n".join(lines), flush=True)
    return lines


if __name__ == "__main__":
    main()
