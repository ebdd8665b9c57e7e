"""Figures of layerwise.plots on synthetic tables with the workflow's exact columns.

The builders below (``synthetic_*``) are also usable to preview every figure::

    python tests/test_plots.py /tmp/plots_preview
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from layerwise import plots
from layerwise.analyses import temporal
from layerwise.analyses.featstats import VAR_HIST_EDGES

SIM_COLUMNS = ["model_a", "layer_a", "model_b", "layer_b", "span", "pooling", "metric", "value",
               "ci_low", "ci_high", "n_rows"]
PROBE_COLUMNS = ["model", "layer", "span", "pooling", "label", "probe", "metric", "value", "std",
                 "ci_low", "ci_high", "chance", "folds"]
CONVEXITY_COLUMNS = ["model", "layer", "span", "pooling", "label", "class", "value", "sem",
                     "n_pairs", "n_rows", "min_count", "max_classes"]
CLUSTER_COLUMNS = ["model", "layer", "span", "pooling", "label", "metric", "value", "chance", "k",
                   "n_rows"]
CCA_COLUMNS = ["model", "layer", "span", "target", "metric", "value", "trial_min", "trial_max",
               "n_trials"]
EMBED_COLUMNS = ["model", "layer", "span", "pooling", "method", "row", "x", "y",
                 "explained_variance", "n_rows"]
METRICS = ["cka_linear", "cka_rbf", "cka_debiased", "cosine", "mutual_knn", "svcca", "pwcca"]
CORPUS, SPAN, POOLING = "demo", "utterance", "mean"
BIG, SMALL = "hubert-large", "wav2vec2-small"  # 25 and 13 transformer layers
WHISPER = "whisper-tiny"  # 5 encoder layers, no cnn / proj
LABELS = {"speaker": 40, "gender": 2, "accent": 5}


def model_layers(n_transformer: int) -> list[str]:
    return [f"cnn.{i}" for i in range(7)] + ["proj"] + [f"layer.{i}" for i in range(n_transformer)]


LAYERS = {BIG: model_layers(25), SMALL: model_layers(13),
          WHISPER: [f"layer.{i}" for i in range(5)]}


def synthetic_similarity(model_a=BIG, model_b=BIG, seed=0) -> pd.DataFrame:
    """All ordered layer pairs, every metric; SVCCA NaN for the cnn layers, PWCCA all NaN."""
    rng = np.random.default_rng(seed)
    la, lb = LAYERS[model_a], LAYERS[model_b]
    rows = []
    for m_i, metric in enumerate(METRICS):
        for i, a in enumerate(la):
            for j, b in enumerate(lb):
                ra, rb = i / (len(la) - 1), j / (len(lb) - 1)
                v = float(np.exp(-abs(ra - rb) * (3 + m_i)) * (0.9 + 0.1 * rng.random()))
                if metric == "pwcca" or (metric == "svcca" and (a.startswith("cnn")
                                                                 or b.startswith("cnn"))):
                    v = np.nan
                rows.append((model_a, a, model_b, b, SPAN, POOLING, metric, v, v - 0.05,
                             min(v + 0.05, 1.0), 500))
    return pd.DataFrame(rows, columns=SIM_COLUMNS)


def _depth_curve(i: int, n: int, peak: float) -> float:
    r = i / (n - 1)
    return float(np.exp(-((r - peak) ** 2) / 0.08))


def synthetic_probes(models=(BIG, SMALL), labels=LABELS) -> pd.DataFrame:
    rows = []
    for model in models:
        for i, layer in enumerate(LAYERS[model]):
            for k, (label, n_classes) in enumerate(labels.items()):
                chance = 1 / n_classes
                for metric in ("accuracy", "macro_f1"):
                    v = chance + (1 - chance) * 0.8 * _depth_curve(i, len(LAYERS[model]),
                                                                   0.3 + 0.2 * k)
                    lo, hi = (np.nan, np.nan) if i % 5 == 0 else (v - 0.04, v + 0.04)
                    rows.append((model, layer, SPAN, POOLING, label, "logreg", metric, v, 0.02,
                                 lo, hi, chance, 5))
    return pd.DataFrame(rows, columns=PROBE_COLUMNS)


def synthetic_convexity(models=(BIG, SMALL), labels=("speaker", "gender", "accent")):
    rows = []
    for model in models:
        for i, layer in enumerate(LAYERS[model]):
            for k, label in enumerate(labels):
                v = 30 + 60 * _depth_curve(i, len(LAYERS[model]), 0.5 + 0.1 * k)
                rows.append((model, layer, SPAN, POOLING, label, "__all__", v, 2.0, 1000, 5000,
                             np.nan, np.nan))
                rows.append((model, layer, SPAN, POOLING, label, "A", v - 5, 3.0, 300, 5000,
                             np.nan, np.nan))
    return pd.DataFrame(rows, columns=CONVEXITY_COLUMNS)


def synthetic_clustering(models=(BIG, SMALL), labels=LABELS):
    rows = []
    for model in models:
        for i, layer in enumerate(LAYERS[model]):
            for k, label in enumerate(labels):
                for metric in ("nmi", "ari", "purity"):
                    v = 0.7 * _depth_curve(i, len(LAYERS[model]), 0.4 + 0.15 * k)
                    if label == "accent" and i == 3:
                        v = np.nan
                    chance = 0.1 if metric != "ari" else 0.0
                    rows.append((model, layer, SPAN, POOLING, label, metric, v, chance, 500,
                                 2160))
    return pd.DataFrame(rows, columns=CLUSTER_COLUMNS)


def synthetic_cca(models=(BIG, SMALL), targets=("word", "phone", "mel")):
    rows = []
    for model in models:
        for i, layer in enumerate(LAYERS[model]):
            for k, target in enumerate(targets):
                v = 0.2 + 0.6 * _depth_curve(i, len(LAYERS[model]), 0.8 - 0.3 * k)
                rows.append((model, layer, SPAN, target, "mean_corr", v, v - 0.03, v + 0.03, 3))
    return pd.DataFrame(rows, columns=CCA_COLUMNS)


def synthetic_featstats(model=BIG, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    layers = LAYERS[model]
    for i, layer in enumerate(layers):
        dim = 512 if layer.startswith("cnn") else 1024
        log_var = rng.normal(-1 + 3 * i / len(layers), 1.0, size=dim)
        counts, _ = np.histogram(np.clip(10.0**log_var, 1e-5, 1e5 * 0.999), VAR_HIST_EDGES)
        stats = {"mean": 0.1 * np.sin(i / 3), "std": 0.5 + i / 10,
                 "var_top1": 0.05 + 0.5 * i / len(layers), "var_top10": 0.3 + 0.5 * i / len(layers),
                 "effective_rank": 300 * (1 - 0.6 * i / len(layers)),
                 "anisotropy": 0.1 + 0.8 * i / len(layers) if i != 2 else np.nan}
        stats.update({f"var_hist_count_{b:02d}": float(c) for b, c in enumerate(counts)})
        stats.update({f"var_hist_edge_{b:02d}": float(e) for b, e in enumerate(VAR_HIST_EDGES)})
        rows += [(model, layer, k, v) for k, v in stats.items()]
    return pd.DataFrame(rows, columns=["model", "layer", "statistic", "value"])


def synthetic_embeddings(model=BIG, layers=("cnn.6", "layer.0", "layer.8", "layer.16",
                                            "layer.24"), methods=("pca", "tsne", "umap"),
                         n=300, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    speaker = rng.integers(0, 40, size=n)
    gender = np.where(speaker % 2 == 0, "F", "M")
    spk = np.array([f"spk{s:02d}" for s in speaker], dtype=object)
    spk[:7] = None  # missing labels
    centres = rng.normal(size=(40, 2)) * 4
    rows = []
    for li, layer in enumerate(layers):
        for method in methods:
            sep = 0.2 + li / len(layers)
            xy = centres[speaker] * sep + rng.normal(size=(n, 2))
            ev = 0.1 + 0.05 * li if method == "pca" else np.nan
            rows.append(pd.DataFrame({
                "model": model, "layer": layer, "span": SPAN, "pooling": POOLING,
                "method": method, "row": np.arange(n), "x": xy[:, 0], "y": xy[:, 1],
                "explained_variance": ev, "n_rows": n, "speaker": spk, "gender": gender}))
    return pd.concat(rows, ignore_index=True)


def synthetic_frames(n_layers=25, T=120, D=64, seed=0) -> dict[str, np.ndarray]:
    """A slowly drifting trajectory whose word structure sharpens with depth."""
    rng = np.random.default_rng(seed)
    seg = np.repeat(np.arange(6), T // 6 + 1)[:T]
    word_vecs = rng.normal(size=(6, D))
    drift = np.cumsum(rng.normal(size=(T, D)), axis=0) / 10
    out = {}
    for i in range(n_layers):
        w = i / (n_layers - 1)
        out[f"layer.{i}"] = (w * word_vecs[seg] + (1 - w) * drift
                             + 0.3 * rng.normal(size=(T, D)) + 0.5)
    return out


def _times(frames, rate=50.0):
    return {k: np.arange(len(v)) / rate + 0.5 / rate for k, v in frames.items()}


def selfsim(frames) -> pd.DataFrame:
    """The temporal self-similarity table of synthetic frames (50 Hz)."""
    return temporal.selfsim_table(frames, _times(frames), model=BIG, utt_id="1001-1-0000")


def trajectory(frames) -> pd.DataFrame:
    return temporal.trajectory_table(frames, _times(frames), model=BIG, utt_id="1001-1-0000")


WORDS = [(0.0, 0.48, "the"), (0.48, 0.96, "quick"), (0.96, 1.44, "brown"),
         (1.44, 1.92, "fox"), (1.92, 2.4, "jumps")]


def all_tables() -> dict[str, pd.DataFrame]:
    return {"similarity": pd.concat([synthetic_similarity(), synthetic_similarity(SMALL, SMALL)]),
            "probes": synthetic_probes(), "convexity": synthetic_convexity(),
            "clustering": synthetic_clustering(), "cca": synthetic_cca(),
            "featstats": synthetic_featstats()}


# --------------------------------------------------------------------------- checks


def check_png(path, *, min_px=(500, 350), max_px=(4000, 3200)):
    """The PNG exists, has a sensible size (width, height) and is not blank."""
    path = Path(path)
    assert path.is_file() and path.suffix == ".png"
    img = mpimg.imread(path)
    h, w = img.shape[:2]
    assert min_px[0] <= w <= max_px[0] and min_px[1] <= h <= max_px[1], (w, h)
    assert float(np.std(img[..., :3])) > 0.01
    return w, h


def n_panels(fig) -> int:
    n = len(plots.panel_axes(fig))
    plt.close(fig)
    return n


@pytest.fixture(scope="module")
def tables():
    return all_tables()


def test_layer_heatmaps_drop_all_nan_metric(tmp_path, tables):
    path, fig = plots.layer_heatmaps(tables["similarity"], tmp_path / "sim.png", corpus=CORPUS,
                                     model=BIG, span=SPAN, pooling=POOLING, return_fig=True)
    assert n_panels(fig) == 6  # pwcca is all NaN: no panel
    assert len(fig.axes) == 7  # + one shared colour bar
    check_png(path)


def test_layer_heatmaps_subset_and_pdf(tmp_path, tables):
    sim = tables["similarity"]
    sim = sim[sim["metric"].isin(["cka_linear", "cosine"])]
    path, fig = plots.layer_heatmaps(sim, tmp_path / "sim.pdf", corpus=CORPUS, model=SMALL,
                                     span=SPAN, pooling=POOLING, return_fig=True)
    assert n_panels(fig) == 2
    assert path.is_file() and path.read_bytes()[:4] == b"%PDF"
    check_png(path.with_suffix(".png"))


def test_layer_heatmaps_without_rows_raises(tmp_path, tables):
    with pytest.raises(ValueError, match="no similarity values"):
        plots.layer_heatmaps(tables["similarity"], tmp_path / "x.png", corpus=CORPUS,
                             model="nope", span=SPAN, pooling=POOLING)


def test_cross_model_heatmaps_both_orientations(tmp_path):
    sim = synthetic_similarity(SMALL, BIG)
    sim = sim[sim["metric"].isin(["cka_linear", "cka_rbf", "mutual_knn"])]
    for a, b in ((SMALL, BIG), (BIG, SMALL)):
        path, fig = plots.cross_model_heatmaps(sim, tmp_path / f"x-{a}.png", corpus=CORPUS,
                                               model_a=a, model_b=b, span=SPAN,
                                               pooling=POOLING, return_fig=True)
        ax = plots.panel_axes(fig)[0]
        assert ax.get_images()[0].get_array().shape == (len(LAYERS[a]), len(LAYERS[b]))
        assert n_panels(fig) == 3
        check_png(path)


def test_layer_curves_panels_and_depth(tmp_path, tables):
    path, fig = plots.layer_curves(tables, tmp_path / "curves.png", corpus=CORPUS, span=SPAN,
                                   pooling=POOLING, return_fig=True)
    # 3 probe labels + 3 convexity + 3 CCA targets + 3 NMI
    axes = plots.panel_axes(fig)
    assert len(axes) == 12
    assert "relative depth" in axes[-1].get_xlabel()  # 25 vs 13 layers: relative by default
    assert axes[0].get_xlabel() == ""  # x labels only under the bottom panels
    assert max(ax.get_xlim()[1] for ax in axes) < 1.1
    titles = {ax.get_title(): ax for ax in axes}
    assert "convexity: accent · n = 5,000" in titles  # the rows behind the values
    nmi = titles["clustering NMI: accent · n = 2,160"]
    chance = [ln.get_ydata()[0] for ln in nmi.get_lines() if ln.get_linestyle() == "--"]
    assert chance == pytest.approx([0.1])  # the clustering chance level, dashed
    assert "probe accuracy: accent" in titles  # no n_rows column: no n
    plt.close(fig)
    check_png(path)


def test_layer_curves_missing_tables_give_fewer_panels(tmp_path, tables):
    sub = {"probes": tables["probes"][tables["probes"]["label"] != "accent"],
           "clustering": tables["clustering"]}
    path, fig = plots.layer_curves(sub, tmp_path / "c.png", corpus=CORPUS, span=SPAN,
                                   pooling=POOLING, models=[BIG], return_fig=True)
    axes = plots.panel_axes(fig)
    assert len(axes) == 2 + 3
    assert axes[-1].get_xlabel().startswith("transformer layer")  # one depth: absolute
    assert axes[0].get_xlim()[1] > 20
    plt.close(fig)
    check_png(path)


def test_feature_stats(tmp_path, tables):
    fs = tables["featstats"]
    path, fig = plots.feature_stats(fs, tmp_path / "fs.png", corpus=CORPUS, model=BIG,
                                    return_fig=True)
    hist = plots.panel_axes(fig)[-1]
    assert [t.get_text() for t in hist.get_legend().get_texts()] == [
        "layer.0", "layer.12", "layer.24"]
    assert n_panels(fig) == 5
    check_png(path)
    no_hist = fs[~fs["statistic"].str.startswith("var_hist") & (fs["statistic"] != "anisotropy")]
    _, fig = plots.feature_stats(no_hist, tmp_path / "fs2.png", corpus=CORPUS, model=BIG,
                                 hist_layers=["layer.3"], return_fig=True)
    assert n_panels(fig) == 3


def test_embedding_grid(tmp_path):
    emb = synthetic_embeddings()
    path, fig = plots.embedding_grid(emb, tmp_path / "emb.png", corpus=CORPUS, model=BIG,
                                     span=SPAN, pooling=POOLING, label="speaker",
                                     return_fig=True)
    legend = fig.legends[0]
    texts = [t.get_text() for t in legend.get_texts()]
    assert len(texts) == 11 and texts[-1].startswith("other")  # top 10 + other
    assert "explain" in plots.panel_axes(fig)[0].get_title()
    assert "(n = 300 rows)" in fig._suptitle.get_text()
    assert n_panels(fig) == 3 * 5
    check_png(path)
    no_umap = emb[(emb["method"] != "umap") | (emb["layer"] != "layer.8")]
    _, fig = plots.embedding_grid(no_umap, tmp_path / "emb2.png", corpus=CORPUS, model=BIG,
                                  span=SPAN, pooling=POOLING, label="gender", return_fig=True)
    assert n_panels(fig) == 3 * 5 - 1
    # a label the analysis dropped (one class: gender in an all-female corpus) gets a note
    one_gender = emb.drop(columns="gender")
    path, fig = plots.embedding_grid(one_gender, tmp_path / "e.png", corpus=CORPUS, model=BIG,
                                     span=SPAN, pooling=POOLING, label="gender", return_fig=True)
    assert "fewer than two classes" in " ".join(t.get_text() for t in fig.texts)
    assert n_panels(fig) == 0
    check_png(path)


def test_self_similarity(tmp_path):
    frames = synthetic_frames()
    frames["layer.3"][5] = 0.0  # a zero-norm frame: NaN row and column
    shown = {k: frames[k] for k in ("layer.0", "layer.3", "layer.10", "layer.14", "layer.19",
                                    "layer.24")}
    path, fig = plots.self_similarity(selfsim(shown), tmp_path / "ssm.png", corpus=CORPUS,
                                      words=WORDS, return_fig=True)
    assert [ax.get_title() for ax in plots.panel_axes(fig)] == list(shown)
    assert n_panels(fig) == 6
    assert "zero-norm" in fig.legends[0].get_texts()[0].get_text()
    check_png(path)
    _, fig = plots.self_similarity(selfsim({"layer.3": frames["layer.3"]}),
                                   tmp_path / "ssm2.png", corpus=CORPUS, return_fig=True)
    assert n_panels(fig) == 1


def test_trajectory_gif(tmp_path):
    frames = synthetic_frames(T=60)
    path = plots.trajectory_gif(trajectory(frames), tmp_path / "traj.gif", corpus=CORPUS,
                                words=WORDS[:2])
    with Image.open(path) as im:
        assert im.n_frames == 25
        assert im.size == (640, 560)
    with pytest.raises(ValueError, match="one width"):
        trajectory({"cnn.0": np.ones((300, 8)), "layer.1": frames["layer.1"]})


def test_model_summary(tmp_path, tables):
    path, fig = plots.model_summary(tables, tmp_path / "sum.png", corpus=CORPUS, model=BIG,
                                    return_fig=True)
    # CKA, probes, convexity, NMI, CCA, effective rank
    assert n_panels(fig) == 6
    check_png(path)
    sub = {k: tables[k] for k in ("probes", "featstats")}
    _, fig = plots.model_summary(sub, tmp_path / "sum2.png", corpus=CORPUS, model=SMALL,
                                 return_fig=True)
    assert n_panels(fig) == 1  # no feature statistics for the small model


def test_tables_read_back_from_tsv(tmp_path, tables):
    """Tables as the workflow reads them (numeric speaker ids, NaN written as "NaN"), a model
    without cnn/proj layers, and no figure left open."""
    from layerwise.io.tables import read_tsv, write_tsv

    emb = synthetic_embeddings(layers=("layer.0", "layer.4"), methods=("pca",), n=80)
    emb["speaker"] = emb["speaker"].str[3:]  # "07": read back as the integer 7
    write_tsv(emb, tmp_path / "emb.tsv")
    sim = synthetic_similarity(WHISPER, WHISPER)
    write_tsv(sim, tmp_path / "sim.tsv")
    write_tsv(tables["probes"], tmp_path / "probes.tsv")
    before = set(plt.get_fignums())
    p1 = plots.embedding_grid(read_tsv(tmp_path / "emb.tsv"), tmp_path / "e.png", corpus=CORPUS,
                              model=BIG, span=SPAN, pooling=POOLING, label="speaker")
    p2 = plots.layer_heatmaps(read_tsv(tmp_path / "sim.tsv"), tmp_path / "s.png", corpus=CORPUS,
                              model=WHISPER, span=SPAN, pooling=POOLING, metrics=["cka_linear"])
    p3 = plots.layer_curves({"probes": read_tsv(tmp_path / "probes.tsv")}, tmp_path / "c.png",
                            corpus=CORPUS, span=SPAN, pooling=POOLING)
    assert set(plt.get_fignums()) == before
    check_png(p1)
    check_png(p2, min_px=(300, 300))
    check_png(p3)


def test_style_helpers():
    from layerwise.plots import style

    layers = ["layer.10", "proj", "layer.2", "cnn.6", "cnn.0"]
    assert style.sort_layers(layers) == ["cnn.0", "cnn.6", "proj", "layer.2", "layer.10"]
    assert [style.short_layer(x) for x in ("layer.12", "cnn.3", "proj", "x")] == [
        "L12", "C3", "P", "x"]
    assert style.layer_index("layer.7") == 7 and style.layer_index("cnn.7") is None
    assert style.pick_evenly(list(range(25)), 3) == [0, 12, 24]
    fig, ax = plt.subplots()
    style.set_layer_ticks(ax, model_layers(25), "x")
    assert len(ax.get_xticks()) <= style.MAX_LAYER_TICKS + 1
    assert ax.get_xticklabels()[-1].get_text() == "L24"
    plt.close(fig)


def render_all(out_dir: Path) -> list[Path]:
    """Every figure from the synthetic tables (for looking at them)."""
    out_dir = Path(out_dir)
    t = all_tables()
    paths = [
        plots.layer_heatmaps(t["similarity"], out_dir / "similarity_big.png", corpus=CORPUS,
                             model=BIG, span=SPAN, pooling=POOLING),
        plots.cross_model_heatmaps(synthetic_similarity(SMALL, BIG), out_dir / "cross.png",
                                   corpus=CORPUS, model_a=SMALL, model_b=BIG, span=SPAN,
                                   pooling=POOLING),
        plots.layer_curves(t, out_dir / "curves.png", corpus=CORPUS, span=SPAN,
                           pooling=POOLING),
        plots.layer_curves(t, out_dir / "curves_abs.png", corpus=CORPUS, span=SPAN,
                           pooling=POOLING, relative_depth=False),
        plots.feature_stats(t["featstats"], out_dir / "featstats.png", corpus=CORPUS, model=BIG),
        plots.embedding_grid(synthetic_embeddings(), out_dir / "embeddings.png", corpus=CORPUS,
                             model=BIG, span=SPAN, pooling=POOLING, label="speaker"),
        plots.self_similarity(selfsim({k: v for k, v in synthetic_frames().items()
                                       if k in ("layer.0", "layer.5", "layer.10", "layer.14",
                                                "layer.19", "layer.24")}),
                              out_dir / "self_similarity.png", corpus=CORPUS, words=WORDS),
        plots.trajectory_gif(trajectory(synthetic_frames()), out_dir / "trajectory.gif",
                             corpus=CORPUS, words=WORDS),
        plots.model_summary(t, out_dir / "summary.png", corpus=CORPUS, model=BIG),
    ]
    return paths


if __name__ == "__main__":
    for p in render_all(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/plots_preview")):
        print(p)


def test_layer_heatmaps_say_the_rows_behind_each_metric(tmp_path, tables):
    """The exact metrics stand on every row and cka_rbf / mutual_knn on a sample: each panel
    says its own n."""
    sim = tables["similarity"].copy()
    sim = sim[(sim["model_a"] == SMALL) & sim["metric"].isin(["cka_linear", "cka_rbf"])]
    sim["n_rows"] = np.where(sim["metric"] == "cka_rbf", 3000, 54000)
    _, fig = plots.layer_heatmaps(sim, tmp_path / "sim.png", corpus=CORPUS, model=SMALL,
                                  span=SPAN, pooling=POOLING, return_fig=True)
    titles = sorted(ax.get_title() for ax in plots.panel_axes(fig))
    assert titles == ["RBF CKA\nn = 3,000", "linear CKA\nn = 54,000"]
