"""Benchmark of the analyses at the size of a real corpus: time, peak memory and growth.

Why: the analyses must run on LibriSpeech dev-clean, not only on the demo. Its word span has
54,000 rows (8,000 Zipf-distributed word types, 40 speakers) and its utterance span 2,703
rows, for 13 layers x 768 of a base model (``--large``: 25 x 1024). Targets (issue 11): every
analysis' peak memory within 4 GiB, and all analyses of one model within 15 minutes on 2 cores.

Each analysis runs through the workflow's own entry point, ``layerwise.analyses.run``, with the
schema defaults of its ``analysis:`` section, in a freshly spawned process that reads the pooled
folder as the ``analyse`` rule does (``layerwise.io.pooled.read``, memory-mapped), so that its peak
RSS (``VmHWM`` of that process, file pages it touched included) is its own. Inputs are
synthetic pooled folders written once with ``layerwise.io.pooled.write``: each word row is a
low-rank word-type vector plus a low-rank speaker vector plus isotropic noise, through layer
maps that drift with depth (speaker weight falling, word weight rising), so clusters and class
regions are neither perfect nor absent; an utterance row is the mean of its word rows.

Figures (``bench <name> <value>``, one per line, on stdout; notes on stderr):

* ``<analysis>_<span>_s``: wall seconds at full size; ``<analysis>_<span>_peak_gib``: peak RSS
  of its process (``VmHWM``: with the pages of the memory-mapped layers it touched, which the
  kernel maps in 64 KiB runs, so reading sampled rows maps most of a layer);
  ``..._peak_anon_gib``: the largest ``RssAnon`` (sampled every 50 ms), the memory it
  allocates; ``..._peak_workers_anon_gib``: the largest sum of ``RssAnon`` over the processes
  it started (the probes' workers, 0 for an analysis in one process), sampled likewise;
  ``<analysis>_<span>_growth``: log-log slope of the time between a quarter of
  the rows and all of them (1 = linear, 2 = quadratic, 0 = bounded by a sample);
  ``total_s``: the sum of the full-size times, beside ``target_total_s`` and
  ``target_peak_gib``.
* Side by side, in one process on the same ``max_rows`` (5,000) sampled word rows of the last
  layer: ``tsne_opentsne_fft_s`` (``embed.tsne_2d``, what the analysis runs: openTSNE's FFT
  gradient on one thread), ``tsne_sklearn_s`` (scikit-learn's Barnes-Hut, the fallback, with
  OpenMP on every core) and ``tsne_sklearn_1thread_s``, and the ratios
  ``tsne_opentsne_fft_vs_sklearn`` and ``..._1thread`` (< 1: openTSNE is faster); the same
  for the k-NN graph of convexity, ``knn_sklearn_brute_s`` (``convexity.knn_graph``) against
  ``knn_pynndescent_s`` (after a first call that compiles it, ``knn_pynndescent_first_s``), its
  recall of the exact neighbours, and ``knn_pynndescent_vs_sklearn``. Arms whose package is not
  installed are reported as such and skipped. (With convexity or embed among the analyses.)
* Side by side for the probes (with probes among the analyses), in one process on the same
  ``PROBE_COMPARE_ROWS`` (6,000) sampled word rows of every layer, through ``analyses.run`` with
  the schema defaults: ``probes_sklearn_s`` (``solver: sklearn``, the implementation before
  issue 11) and ``probes_torch_s`` (``solver: torch``, the default), the ratio
  ``probes_torch_vs_sklearn`` (< 1: torch is faster), and how far their accuracies are apart
  over all layers and labels (``probes_accuracy_diff_max``, ``..._mean``).

The machine may be shared: targets are printed beside the figures, never asserted; quote the
load average printed on stderr.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from joblib.externals.loky import get_reusable_executor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the repository's layerwise and benchmarks

from benchmarks import schema  # noqa: E402
from benchmarks.bench_analysis import (  # noqa: E402
    bench,
    frame_chunks,
    layer_maps,
    note,
    schema_defaults,
)
from layerwise import analyses  # noqa: E402
from layerwise.analyses import subsample  # noqa: E402
from layerwise.io import pooled  # noqa: E402

MODEL, POOLING = "bench", "mean"
CORPUS_LABELS = ("speaker", "gender")
#: The default set, the shorter run; --all adds similarity, featstats and cca.
SCALED = ("convexity", "clustering", "embed", "probes")
SPANS = ("utterance", "word")
TARGET_TOTAL_S, TARGET_PEAK_GIB = 15 * 60, 4
COMPARE_ROWS, KNN_K, PROBE_COMPARE_ROWS = 5_000, 10, 6_000


@dataclass(frozen=True)
class Corpus:
    """Sizes of the synthetic corpus (dev-clean by default)."""

    words: int = 54_000
    utterances: int = 2_703
    types: int = 8_000
    speakers: int = 40
    layers: int = 13
    dim: int = 768

    def scaled(self, words: int) -> Corpus:
        """The same corpus with ``words`` word rows (utterances in proportion)."""
        utterances = max(self.speakers, round(self.utterances * words / self.words))
        return replace(self, words=words, utterances=min(utterances, words))


# --------------------------------------------------------------------------- synthetic data


def make_indexes(corpus: Corpus, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pool indexes of the word and utterance spans, as ``pool.pool_index`` writes them."""
    rng = np.random.default_rng([seed, 10])
    lengths = 1 + rng.multinomial(corpus.words - corpus.utterances,
                                  np.full(corpus.utterances, 1 / corpus.utterances))
    utt = np.repeat(np.arange(corpus.utterances), lengths)
    zipf = 1 / np.arange(1, corpus.types + 1)
    word = np.array([f"w{w:04d}" for w in rng.choice(corpus.types, corpus.words,
                                                     p=zipf / zipf.sum())])
    start = 0.3 * (np.arange(corpus.words) - np.repeat(np.cumsum(lengths) - lengths, lengths))
    speaker = np.arange(corpus.utterances) % corpus.speakers
    labels = pd.DataFrame({"speaker": [f"spk{s:02d}" for s in speaker],
                           "gender": np.where(speaker % 2, "M", "F")})
    utt_ids = np.array([f"utt{u:04d}" for u in range(corpus.utterances)])
    words = pd.DataFrame({"row": np.arange(corpus.words), "utt_id": utt_ids[utt],
                          "start_s": np.round(start, 3), "end_s": np.round(start + 0.25, 3),
                          "unit": word, "word": word})
    words = pd.concat([words, labels.iloc[utt].reset_index(drop=True)], axis=1)
    utterances = pd.DataFrame({"row": np.arange(corpus.utterances), "utt_id": utt_ids,
                               "start_s": 0.0, "end_s": np.round(0.3 * lengths, 3), "unit": ""})
    return words, pd.concat([utterances, labels], axis=1)


def make_layers(words: pd.DataFrame, corpus: Corpus, seed: int) -> Iterator[np.ndarray]:
    """Word-span layers, one at a time (float32): low-rank word + speaker vectors + noise."""
    rng = np.random.default_rng([seed, 11])
    word_code = np.unique(words["word"], return_inverse=True)[1]
    speaker_code = np.unique(words["speaker"], return_inverse=True)[1]
    word_maps, offsets = layer_maps(corpus.layers, corpus.dim, seed)
    speaker_maps, _ = layer_maps(corpus.layers, corpus.dim, seed + 1)
    word_latent = rng.standard_normal((word_code.max() + 1, word_maps.shape[1]), dtype=np.float32)
    speaker_latent = rng.standard_normal((speaker_code.max() + 1, speaker_maps.shape[1]),
                                         dtype=np.float32)
    for i in range(corpus.layers):
        depth = i / max(1, corpus.layers - 1)
        X = rng.standard_normal((len(words), corpus.dim), dtype=np.float32)
        X += (0.1 + 0.3 * depth) * (word_latent @ word_maps[i])[word_code]
        X += (0.35 - 0.25 * depth) * (speaker_latent @ speaker_maps[i])[speaker_code]
        X += offsets[i]
        yield X


def write_corpus(folder: Path, corpus: Corpus, seed: int) -> dict[str, Path]:
    """Pooled folders ``{span: folder}`` of both spans (utterance rows: means of word rows)."""
    words, utterances = make_indexes(corpus, seed)
    codes = np.unique(words["utt_id"], return_inverse=True)[1]
    counts = np.bincount(codes)
    mean = sp.csr_matrix((1 / counts[codes], (codes, np.arange(len(codes)))))
    names = [f"layer.{i}" for i in range(corpus.layers)]
    pooled_utterances = []

    def word_layers():
        for name, X in zip(names, make_layers(words, corpus, seed), strict=True):
            pooled_utterances.append(np.asarray(mean @ X, dtype=np.float32))
            yield name, X

    out = {"word": folder / "word-mean", "utterance": folder / "utterance-mean"}
    pooled.write(out["word"], words, word_layers(), model=MODEL, span="word", pooling=POOLING)
    pooled.write(out["utterance"], utterances, zip(names, pooled_utterances, strict=True),
                 model=MODEL, span="utterance", pooling=POOLING)
    return out


FRAME_RATE_HZ, UTTERANCE_FRAMES, SHARD_FRAMES = 50.0, 250, 250_000


def write_frame_store(folder: Path, corpus: Corpus, n_frames: int, seed: int) -> list[Path]:
    """A feature store of ``n_frames`` frames (float16, as extracted): utterances of 250
    frames (5 s at 50 Hz), shards of 250,000 frames, every layer framed; the frames of
    ``bench_analysis.frame_chunks``. Written with the store's own writer."""
    from layerwise.extract.encoders import LayerInfo
    from layerwise.io import store

    infos = [LayerInfo(f"layer.{i}", "transformer", FRAME_RATE_HZ, corpus.dim)
             for i in range(corpus.layers)]
    names = {info.name for info in infos}
    folder.mkdir(parents=True, exist_ok=True)
    paths, writer, in_shard, utt = [], None, 0, 0
    for chunks in frame_chunks(n_frames, corpus.layers, corpus.dim, 100 * UTTERANCE_FRAMES,
                               seed):
        if writer is None or in_shard >= SHARD_FRAMES:
            if writer is not None:
                writer.close()
            paths.append(folder / f"shard-{len(paths):03d}.h5")
            writer, in_shard = store.ShardWriter(paths[-1], infos, names), 0
        rows = len(chunks[0])
        cuts = [*range(0, rows, UTTERANCE_FRAMES), rows]
        spans = list(zip(cuts[:-1], cuts[1:], strict=True))
        ids = [f"utt{utt + k:06d}" for k in range(len(spans))]
        writer.append(ids, [int((b - a) / FRAME_RATE_HZ * 16000) for a, b in spans],
                      {info.name: [X[a:b] for a, b in spans]
                       for info, X in zip(infos, chunks, strict=True)})
        utt += len(ids)
        in_shard += rows
    writer.close()
    return paths


def run_frame_similarity(paths: list[Path], params: dict, max_frames: int, seed: int) -> dict:
    """Similarity on the frame span as the ``analyse`` rule runs it: every frame streamed from
    the store, the n x n metrics on a pooled sample of ``max_frames`` frames."""
    from layerwise.io import store

    sys.stderr = open(os.devnull, "w")
    fs = store.open(paths)
    utterance = store.stored_utterances(fs, fs.layers[0])
    rows = np.sort(np.random.default_rng(seed).choice(utterance.size, max_frames, replace=False))
    layers = {}
    for name in fs.layers:
        stored = store.StoredRows(fs, name)
        layers[name] = np.concatenate([stored[part] for part in np.array_split(
            rows, max(1, rows.size // 256))])  # compact runs: a read spans its rows
        stored.close()
    index = pd.DataFrame({"row": np.arange(rows.size),
                          "utt_id": [fs.utt_ids[u] for u in utterance[rows]]})
    anon = AnonPeak()
    start = time.perf_counter()
    with anon:
        table = analyses.run("similarity", index, layers, model=MODEL, span="frame",
                             pooling=POOLING, labels=[], params=params, seed=seed,
                             features=paths)
    return {"wall": time.perf_counter() - start, "peak_gib": status_gib("VmHWM"),
            "anon_gib": anon.peak, "summary": summarise("similarity", table)}


def arm_frames(folder: Path, corpus: Corpus, n_frames: int, params: dict, seed: int,
               baseline: str | None = None) -> list[str]:
    """Frame-span similarity over ``n_frames`` and a quarter of them: time, peak, growth;
    with ``baseline`` (a git revision), its exact metrics side by side with today's over the
    ``n_frames`` store."""
    max_frames = schema.defaults("pool")["max_frames"]
    runs = {}
    for label, frames in (("quarter", n_frames // 4), ("full", n_frames)):
        start = time.perf_counter()
        paths = write_frame_store(folder / f"frames-{label}", corpus, frames, seed)
        note(f"wrote {frames} frames x {corpus.layers} x {corpus.dim} (float16) in "
             f"{len(paths)} shards, {time.perf_counter() - start:.0f} s")
        runs[label] = in_fresh_process(run_frame_similarity, paths, params,
                                       min(max_frames, frames), seed)
    full = runs["full"]
    note(f"similarity frame: {full['wall']:.1f} s, peak {full['peak_gib']:.2f} GiB "
         f"(quarter: {runs['quarter']['wall']:.1f} s); {full['summary']}")
    compared = []
    if baseline:
        res = in_fresh_process(compare_gram_frames, paths, baseline, params["n_boot"])
        note(f"exact similarity metrics of {n_frames} frames streamed from the store, n_boot "
             f"{params['n_boot']}: today's engine against {baseline}'s, one process")
        compared = [bench(key, value) for key, value in res.items()]
    return compared + [bench("similarity_frame_rows", n_frames),
            bench("similarity_frame_s", full["wall"]),
            bench("similarity_frame_peak_gib", full["peak_gib"]),
            bench("similarity_frame_peak_anon_gib", full["anon_gib"]),
            bench("similarity_frame_growth",
                  math.log(full["wall"] / runs["quarter"]["wall"]) / math.log(4))]


# --------------------------------------------------------------------------- one analysis


def run_analysis(folder: Path, name: str, jobs: int, overrides: dict) -> dict:
    """One analysis on one pooled folder, as the ``analyse`` rule runs it (in a fresh process)."""
    sys.stderr = open(os.devnull, "w")  # the analyses' progress bars
    index, layers = pooled.read(folder)
    span = folder.name.split("-")[0]
    anon = AnonPeak()
    start = time.perf_counter()
    with anon:
        table = analyses.run(name, index, layers, model=MODEL, span=span, pooling=POOLING,
                             labels=list(CORPUS_LABELS),
                             params={**schema_defaults()[name], **overrides.get(name, {})},
                             seed=0, n_jobs=jobs)
    wall = time.perf_counter() - start
    # joblib's workers (the probes') idle on for minutes, and this process' exit waits for them
    get_reusable_executor().shutdown(wait=True)
    return {"wall": wall, "peak_gib": status_gib("VmHWM"), "anon_gib": anon.peak,
            "workers_anon_gib": anon.workers,
            "summary": summarise(name, table)}


def status_gib(field: str, pid: int | str = "self") -> float:
    """A memory field of ``/proc/<pid>/status`` in GiB (``VmHWM``: peak RSS since exec); 0 for
    a process that has ended.

    ``ru_maxrss`` would not do for the peak: Linux carries the parent's peak over a spawn's
    fork and exec.
    """
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0.0 if pid != "self" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    for line in lines:
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 2**20  # kB
    return 0.0


def descendants() -> list[str]:
    """Process ids of this process' children, their children, and so on (Linux)."""
    found, todo = [], [str(os.getpid())]
    while todo:
        for children in Path(f"/proc/{todo.pop()}/task").glob("*/children"):
            try:
                pids = children.read_text().split()
            except OSError:  # ended meanwhile
                continue
            found += pids
            todo += pids
    return found


class AnonPeak:
    """Largest ``RssAnon`` seen every 50 ms while the block runs: the memory the analysis
    allocates, without the pages of the memory-mapped layers that ``VmHWM`` also counts
    (clean file pages, which the kernel drops under pressure); ``workers``: the largest sum of
    ``RssAnon`` over the processes it started (the probes' joblib workers), which its own
    figures do not hold."""

    def __init__(self, every_s: float = 0.05):
        self.every_s, self.peak, self.workers = every_s, 0.0, 0.0
        self._stop = threading.Event()

    def _sample(self):
        self.peak = max(self.peak, status_gib("RssAnon"))
        self.workers = max(self.workers, sum(status_gib("RssAnon", pid) for pid in descendants()))

    def _watch(self):
        while not self._stop.wait(self.every_s):
            self._sample()

    def __enter__(self):
        self._sample()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()


def summarise(name: str, table: pd.DataFrame) -> str:
    """A few values of the table (first and last layer), to show that they are not trivial."""
    if name == "similarity":
        d = table[(table["layer_a"] == table["layer_a"].iloc[0])
                  & (table["layer_b"] == table["layer_b"].iloc[-1])]
        return ", ".join(f"{r.metric} {r.layer_a}~{r.layer_b} {r.value:.3f} "
                         f"[{r.ci_low:.3f}, {r.ci_high:.3f}] (n={r.n_rows})"
                         for r in d.itertuples())
    layers = sorted(table["layer"].unique(), key=lambda x: int(x.split(".")[1]))
    ends = [layers[0], layers[-1]] if layers else []
    if name == "convexity":
        d = table[(table["class"] == "__all__") & table["layer"].isin(ends)]
        return ", ".join(f"{r.label}@{r.layer} {r.value:.1f} (n={r.n_rows})"
                         for r in d.itertuples())
    if name == "clustering":
        d = table[(table["metric"] == "nmi") & table["layer"].isin(ends)]
        return ", ".join(f"NMI {r.label}@{r.layer} {r.value:.3f} (chance {r.chance:.3f}, "
                         f"n={r.n_rows}, k={r.k})" for r in d.itertuples())
    if "n_rows" in table.columns and len(table):
        return f"{len(table)} table rows, n_rows {table['n_rows'].max()}"
    return f"{len(table)} table rows"


def in_fresh_process(fn, *args):
    """``fn(*args)`` in a newly spawned process (its own peak RSS, nothing inherited)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def fastest(folder: Path, name: str, jobs: int, repeat: int, overrides: dict) -> dict:
    """The run of least wall time among ``repeat`` fresh processes (a shared machine)."""
    return min((in_fresh_process(run_analysis, folder, name, jobs, overrides) for _ in range(repeat)),
               key=lambda res: res["wall"])


def arm_analyses(folders: dict, quarter: dict, names: Sequence[str], spans: Sequence[str],
                 jobs: int, repeat: int, overrides: dict) -> list[str]:
    lines, total = [], 0.0
    for span in spans:
        for name in names:
            if name == "cca" and span not in analyses.CCA_SPANS:
                continue
            small = fastest(quarter[span], name, jobs, repeat, overrides)
            full = fastest(folders[span], name, jobs, repeat, overrides)
            note(f"{name} {span}: {full['wall']:.1f} s, peak {full['peak_gib']:.2f} GiB "
                 f"(quarter: {small['wall']:.1f} s); {full['summary']}")
            total += full["wall"]
            lines += [bench(f"{name}_{span}_s", full["wall"]),
                      bench(f"{name}_{span}_peak_gib", full["peak_gib"]),
                      bench(f"{name}_{span}_peak_anon_gib", full["anon_gib"]),
                      bench(f"{name}_{span}_peak_workers_anon_gib", full["workers_anon_gib"]),
                      bench(f"{name}_{span}_growth",
                            math.log(full["wall"] / small["wall"]) / math.log(4))]
    return lines + [bench("total_s", total), bench("target_total_s", TARGET_TOTAL_S),
                    bench("target_peak_gib", TARGET_PEAK_GIB)]


# --------------------------------------------------------------------------- side by side


def timed_s(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def compare_backends(folder: Path, seed: int) -> dict[str, float | str]:
    """t-SNE and k-NN implementations on the same sampled rows, in one process."""
    from sklearn.neighbors import NearestNeighbors
    from threadpoolctl import threadpool_limits

    from layerwise.analyses import embed
    from layerwise.analyses.convexity import knn_graph

    index, layers = pooled.read(folder)
    rows = subsample.rows(index, COMPARE_ROWS, seed, stratify=("utt_id", "word"))
    X = np.ascontiguousarray(layers[list(layers)[-1]][rows])
    out: dict[str, float | str] = {"compare_rows": len(X), "compare_dim": X.shape[1]}
    out["knn_sklearn_brute_s"], _ = timed_s(knn_graph, X, k=KNN_K)
    try:
        import pynndescent
    except ImportError:
        out["pynndescent"] = "not installed (pip install pynndescent)"
    else:
        def nndescent():
            return pynndescent.NNDescent(X, n_neighbors=KNN_K + 1, random_state=seed,
                                         n_jobs=1).neighbor_graph[0][:, 1:]
        out["knn_pynndescent_first_s"], _ = timed_s(nndescent)
        out["knn_pynndescent_s"], approx = timed_s(nndescent)
        exact = NearestNeighbors(n_neighbors=KNN_K, algorithm="brute").fit(X).kneighbors(
            return_distance=False)
        out["knn_pynndescent_recall"] = float(np.mean(
            [len(set(a) & set(b)) / KNN_K for a, b in zip(approx, exact, strict=True)]))
    out["tsne_sklearn_s"], _ = timed_s(embed.tsne_2d, X, seed=seed, backend="sklearn")
    with threadpool_limits(limits=1):
        out["tsne_sklearn_1thread_s"], _ = timed_s(embed.tsne_2d, X, seed=seed,
                                                   backend="sklearn")
    if embed.opentsne_available():
        out["tsne_opentsne_fft_s"], _ = timed_s(embed.tsne_2d, X, seed=seed, backend="opentsne")
    else:
        out["opentsne"] = "not installed (pip install openTSNE)"
    return out


def arm_compare(folder: Path, seed: int) -> list[str]:
    res = in_fresh_process(compare_backends, folder, seed)
    note(f"side by side on {res['compare_rows']} sampled word rows of the last layer, one "
         "process")
    lines = []
    for key, value in res.items():
        if isinstance(value, str):
            note(f"{key}: {value}")
        else:
            lines.append(bench(key, value))
    if "knn_pynndescent_s" in res:
        lines.append(bench("knn_pynndescent_vs_sklearn",
                           res["knn_pynndescent_s"] / res["knn_sklearn_brute_s"]))
    if "tsne_opentsne_fft_s" in res:
        lines.append(bench("tsne_opentsne_fft_vs_sklearn",
                           res["tsne_opentsne_fft_s"] / res["tsne_sklearn_s"]))
        lines.append(bench("tsne_opentsne_fft_vs_sklearn_1thread",
                           res["tsne_opentsne_fft_s"] / res["tsne_sklearn_1thread_s"]))
    return lines


def compare_probe_solvers(folder: Path, seed: int, jobs: int) -> dict[str, float]:
    """The probes by both logreg solvers on the same sampled word rows, in one process."""
    sys.stderr = open(os.devnull, "w")  # the progress bars
    index, layers = pooled.read(folder)
    rows = subsample.rows(index, PROBE_COMPARE_ROWS, seed, stratify=("utt_id", "word"))
    sub_index = index.iloc[rows].reset_index(drop=True)
    sub_layers = {name: np.ascontiguousarray(X[rows]) for name, X in layers.items()}
    out: dict[str, float] = {"probe_compare_rows": len(rows)}
    tables = {}
    for solver in ("sklearn", "torch"):
        params = {**schema_defaults()["probes"], "solver": solver}
        out[f"probes_{solver}_s"], tables[solver] = timed_s(
            analyses.run, "probes", sub_index, sub_layers, model=MODEL, span="word",
            pooling=POOLING, labels=list(CORPUS_LABELS), params=params, seed=seed, n_jobs=jobs)
    accuracy = [tables[s].query("metric == 'accuracy'")["value"].to_numpy()
                for s in ("sklearn", "torch")]
    diff = np.abs(accuracy[0] - accuracy[1])
    out["probes_accuracy_diff_max"], out["probes_accuracy_diff_mean"] = diff.max(), diff.mean()
    return out


def arm_compare_probes(folder: Path, seed: int, jobs: int) -> list[str]:
    res = in_fresh_process(compare_probe_solvers, folder, seed, jobs)
    note(f"probes side by side on {res['probe_compare_rows']} sampled word rows, every layer, "
         "one process")
    return [bench(key, value) for key, value in res.items()] + [
        bench("probes_torch_vs_sklearn", res["probes_torch_s"] / res["probes_sklearn_s"])]


def module_at(rev: str, path: str):
    """The module of file ``path`` as it was at git revision ``rev`` (the baseline of a
    side-by-side arm), loaded from ``git show`` beside today's, under a name of its own."""
    import importlib.util
    import subprocess

    text = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], check=True,
                          capture_output=True, text=True).stdout
    name = path.removesuffix(".py").replace("/", ".")
    spec = importlib.util.spec_from_loader(f"{name}_{rev}", loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    exec(compile(text, f"{rev}:{path}", "exec"), module.__dict__)
    return module


def compare_probes(folders: dict[str, Path], rev: str, seed: int) -> dict[str, float]:
    """The probe table of each span's every row with today's ``linear_probe`` and with
    ``rev``'s (the solver, its L-BFGS and preprocessing), in one process and one job (joblib's
    workers would import today's): seconds, ratio and the largest absolute difference of any
    value, named ``probes_<span>_...``."""
    from layerwise.analyses import probes

    sys.stderr = open(os.devnull, "w")  # the progress bars
    params = schema_defaults()["probes"]
    arms = (("baseline", module_at(rev, "layerwise/analyses/linear_probe.py")),
            ("new", probes.linear_probe))
    out: dict[str, float] = {}
    for span, folder in folders.items():
        index, layers = pooled.read(folder)
        tables = {}
        for arm, module in arms:
            probes.linear_probe = module
            try:
                out[f"probes_{span}_{arm}_s"], tables[arm] = timed_s(
                    analyses.run, "probes", index, layers, model=MODEL, span=span,
                    pooling=POOLING, labels=list(CORPUS_LABELS), params=params, seed=seed,
                    n_jobs=1)
            finally:
                probes.linear_probe = arms[1][1]
        out[f"probes_{span}_new_vs_baseline"] = (out[f"probes_{span}_new_s"]
                                                 / out[f"probes_{span}_baseline_s"])
        values = [tables[arm]["value"].to_numpy() for arm, _ in arms]
        out[f"probes_{span}_max_abs_difference"] = float(np.nanmax(np.abs(values[0] - values[1])))
        out[f"probes_{span}_rows"] = len(index)
    return out


def arm_compare_probe_baseline(folders: dict[str, Path], spans: Sequence[str], rev: str,
                               seed: int) -> list[str]:
    res = in_fresh_process(compare_probes, {s: folders[s] for s in spans}, rev, seed)
    note(f"probes of every row of {', '.join(spans)}: today's linear_probe against {rev}'s, "
         "one process, one job")
    return [bench(key, value) for key, value in res.items()]


def gram_side_by_side(mats, labels, groups, rev: str, n_boot: int, prefix: str
                      ) -> dict[str, float]:
    """The exact similarity metrics of every row of ``mats``, today's engine against
    ``rev``'s, on the same layers in one process (bootstrap clusters ``groups``); the ratio and
    the largest absolute difference of values and replicates, named ``<prefix>_...``."""
    from layerwise.analyses.similarity import _group_codes
    from layerwise.analyses.similarity import gram as today

    codes = _group_codes(groups, mats[0].shape[0])
    out, results = {}, {}
    baseline = module_at(rev, "layerwise/analyses/similarity/gram.py")
    for arm, module in (("baseline", baseline), ("new", today)):
        computation = module._GramComputation(
            mats, None, labels, labels, sorted(today.EXACT_METRICS), n_boot=n_boot, seed=0,
            codes=codes, svcca_components=schema_defaults()["similarity"]["svcca_components"])
        out[f"{prefix}_{arm}_s"], _ = timed_s(computation.run)
        results[arm] = computation
    out[f"{prefix}_new_vs_baseline"] = out[f"{prefix}_new_s"] / out[f"{prefix}_baseline_s"]
    out[f"{prefix}_max_abs_difference"] = max(
        float(np.nanmax(np.abs(np.asarray(getattr(results["new"], kind)[m])
                               - np.asarray(getattr(results["baseline"], kind)[m]))))
        for m in today.EXACT_METRICS for kind in ("values", "replicates"))
    out[f"{prefix}_rows"] = mats[0].shape[0]
    return out


def compare_gram(folder: Path, rev: str, n_boot: int) -> dict[str, float]:
    """:func:`gram_side_by_side` on every word row (memory-mapped), clusters utterances."""
    index, layers = pooled.read(folder)
    return gram_side_by_side(list(layers.values()), list(layers), index["utt_id"].to_numpy(),
                             rev, n_boot, "gram")


def compare_gram_frames(paths: list[Path], rev: str, n_boot: int) -> dict[str, float]:
    """:func:`gram_side_by_side` on every frame streamed from the store, as the frame span's
    similarity reads them (``StoredRows``), clusters utterances."""
    from layerwise.io import store

    fs = store.open(paths)
    mats = [store.StoredRows(fs, name) for name in fs.layers]
    try:
        return gram_side_by_side(mats, list(fs.layers), store.stored_utterances(fs, fs.layers[0]),
                                 rev, n_boot, "gram_frame")
    finally:
        for M in mats:
            M.close()


def arm_compare_gram(folder: Path, rev: str, n_boot: int) -> list[str]:
    res = in_fresh_process(compare_gram, folder, rev, n_boot)
    note(f"exact similarity metrics of {res['gram_rows']} word rows, n_boot {n_boot}: "
         f"today's engine against {rev}'s, one process")
    return [bench(key, value) for key, value in res.items()]


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--large", action="store_true", help="25 layers x 1024 (default 13 x 768)")
    p.add_argument("--rows", type=int, default=Corpus.words,
                   help="word rows (default 54,000; utterances in proportion): a quick check")
    p.add_argument("--analyses", default=",".join(SCALED),
                   help=f"comma-separated analyses (default: {','.join(SCALED)})")
    p.add_argument("--all", action="store_true",
                   help="every analysis: also similarity, featstats and cca (about 35 minutes "
                        "on 2 cores with the quarter sizes)")
    p.add_argument("--spans", default=",".join(SPANS), help="comma-separated spans")
    p.add_argument("--skip-compare", action="store_true", help="no side-by-side comparisons")
    p.add_argument("--jobs", type=int, default=2, help="n_jobs of the analyses (rule threads)")
    p.add_argument("--repeat", type=int, default=1,
                   help="runs per analysis and size, the fastest kept (default 1)")
    p.add_argument("--workdir", type=Path,
                   help="folder for the pooled inputs (default: a temporary one, removed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--similarity-metrics", metavar="M,M",
                   help="only these similarity metrics (e.g. cka_rbf,mutual_knn: the sampled "
                        "n x n ones), the other settings the schema's")
    p.add_argument("--frames", type=int, default=0, metavar="N",
                   help="also similarity on the frame span over N frames (e.g. 1000000) "
                        "written as HDF5 shards, streamed from them, and over N/4 for growth")
    p.add_argument("--similarity-n-boot", type=int, metavar="B",
                   help="analysis.similarity.n_boot for every similarity run (default: the "
                        "schema's)")
    p.add_argument("--gram-baseline", metavar="REV",
                   help="also time the exact similarity metrics of the word span (and with "
                        "--frames, of the N frames streamed from the store) side by side with "
                        "gram.py of git revision REV (e.g. b72b2b0, before the one-pass "
                        "stacking), in one process")
    p.add_argument("--probe-baseline", metavar="REV",
                   help="also time the probes of every row of each span in --spans side by "
                        "side with linear_probe.py of git revision REV (e.g. 4646eec, before "
                        "the L-BFGS port), in one process and one job")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[str]:
    args = parse_args(argv)
    names = list(analyses.NAMES) if args.all else [n for n in args.analyses.split(",") if n]
    unknown = sorted(set(names) - set(analyses.NAMES))
    if unknown:
        raise SystemExit(f"unknown analyses {unknown}; known: {', '.join(analyses.NAMES)}")
    spans = [s for s in args.spans.split(",") if s]
    base = Corpus(layers=25, dim=1024) if args.large else Corpus()
    corpus = base.scaled(args.rows)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        note(f"{corpus}, {len(os.sched_getaffinity(0))} cores; writing pooled inputs to {tmp}")
        folders = write_corpus(Path(tmp) / "full", corpus, args.seed)
        quarter = write_corpus(Path(tmp) / "quarter", corpus.scaled(corpus.words // 4), args.seed)
        similarity = {}
        if args.similarity_metrics:
            similarity["metrics"] = args.similarity_metrics.split(",")
        if args.similarity_n_boot is not None:
            similarity["n_boot"] = args.similarity_n_boot
        overrides = {"similarity": similarity}
        lines = arm_analyses(folders, quarter, names, spans, args.jobs, args.repeat, overrides)
        if not args.skip_compare and {"convexity", "embed"} & set(names):
            lines += arm_compare(folders["word"], args.seed)
        if not args.skip_compare and "probes" in names:
            lines += arm_compare_probes(folders["word"], args.seed, args.jobs)
        settings = {**schema_defaults()["similarity"], **similarity}
        if args.gram_baseline:
            lines += arm_compare_gram(folders["word"], args.gram_baseline, settings["n_boot"])
        if args.probe_baseline:
            lines += arm_compare_probe_baseline(folders, spans, args.probe_baseline, args.seed)
        if args.frames:
            lines += arm_frames(Path(tmp), corpus, args.frames, settings, args.seed,
                                args.gram_baseline)
    return lines


if __name__ == "__main__":
    main()
