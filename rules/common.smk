# Config validation (schema, then checks that need the file system), paths and input functions.
import os
import re

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from layerwise import config as layerwise_config
from layerwise import vocabulary
from layerwise.analyses.registry import REGISTRY
from layerwise.config import config_hash
from layerwise.extract.models import needs_preparation

validate(config, "../schemas/config.schema.yaml")
try:
    layerwise_config.check(config)
except layerwise_config.ConfigError as exc:
    raise WorkflowError(f"Invalid config: {exc}")


# Scripts import the layerwise package of this repository, also inside --sdm conda envs.
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        [workflow.basedir, *filter(None, [os.getenv("PYTHONPATH")])]
    )
)

R = config["results"]
C = config["corpus"]["name"]
OUT = f"{R}/{C}"
LOGS = f"{OUT}/logs"
SHARDS = [f"{i:03d}" for i in range(config["corpus"]["shards"])]
MODELS = {m["name"]: m for m in config["models"]}


SPAN_POOLINGS = [
    f"{span}-{pooling}"
    for span in config["pool"]["spans"]
    for pooling in vocabulary.span_poolings(span, config["pool"]["poolings"])
]
ANALYSES = list(REGISTRY)
# cores of the jobs that spread work over threads (parallel analyses, extraction); a
# `--set-threads rule=N` on the command line overrides it
PARALLEL_THREADS = 2


wildcard_constraints:
    shard=r"\d{3}",
    model="|".join(re.escape(m) for m in MODELS),
    model_a="|".join(re.escape(m) for m in MODELS),
    model_b="|".join(re.escape(m) for m in MODELS),
    span="|".join(vocabulary.SPANS),
    pooling="|".join(vocabulary.POOLINGS),
    layer=vocabulary.LAYER_NAME,
    analysis="|".join(ANALYSES),
    label=r"[A-Za-z0-9_]+",


def model_dir(model):
    """The folder or hub id an extraction job loads for `model`."""
    source = MODELS[model]["source"]
    return f"{R}/models/{model}" if needs_preparation(source) else source


def prepared_model(wildcards):
    """Input function: the prepared model folder, if this model needs one."""
    if wildcards.model not in MODELS:
        raise WorkflowError(
            f"unknown model {wildcards.model!r}; config models: {list(MODELS)}"
        )
    source = MODELS[wildcards.model]["source"]
    return [f"{R}/models/{wildcards.model}"] if needs_preparation(source) else []


POOLED_STORE = config["extract"]["store"] == "pooled"


def extract_params(model):
    """Everything that changes a model's features; hashed into the HDF5 attributes.

    With extract.store: pooled, the extraction job pools: the pooling settings are its too.
    """
    m = MODELS[model]
    out = {
        "source": m["source"],
        "revision": m.get("revision"),
        "sample_rate": config["audio"]["sample_rate"],
        **config["extract"],
    }
    if POOLED_STORE:
        out["pool"] = {
            "span_poolings": SPAN_POOLINGS,
            "max_frames": config["pool"]["max_frames"],
            "seed": config["seed"],
        }
    return out


def extract_units(wildcards):
    """Input function: what pooling inside extraction reads (extract.store: pooled only)."""
    if not POOLED_STORE:
        return {}
    return {"manifest": f"{OUT}/manifest.tsv", "alignments": f"{OUT}/alignments.tsv"}


def features(model):
    return expand(f"{OUT}/features/{model}/shard-{{shard}}.h5", shard=SHARDS)


def rejection_records():
    """Every job's rejected-input record, in stage order."""
    return (
        [f"{OUT}/scan.rejected.tsv"]
        + expand(f"{OUT}/wav/shard-{{shard}}.rejected.tsv", shard=SHARDS)
        + expand(
            f"{OUT}/features/{{model}}/shard-{{shard}}.rejected.tsv",
            model=MODELS,
            shard=SHARDS,
        )
    )


def analysis_params(name):
    """The config section of one analysis (what changes its numbers)."""
    return dict(config["analysis"][REGISTRY[name].section])


# Scheduling order where jobs share cores (a local run; SLURM submissions follow it too):
# extraction and pooling first, since every analysis of a model waits for them, then the
# analyses longest first (frames, then words and phones, then utterances; within a span the
# analyses that spread over threads), so that no long job starts last and runs alone.
# Snakemake fills free cores with the ready jobs of the largest total priority: an extraction
# job (all the cores of a CPU-only machine) outranks any set of one-core jobs, else it waits
# behind them until every core happens to be free at once.
EXTRACT_PRIORITY = 1000
UPSTREAM_PRIORITY = 100
SPAN_PRIORITY = {"frame": 20, "word": 10, "phone": 10, "utterance": 0}


def analysis_priority(wildcards):
    """Priority of an analyse or analyse_cross job: longest first (see SPAN_PRIORITY)."""
    analysis = getattr(wildcards, "analysis", "similarity")
    return SPAN_PRIORITY[wildcards.span] + (1 if REGISTRY[analysis].parallel else 0)


def analysis_threads(wildcards):
    """Cores an analyse job claims: PARALLEL_THREADS for the analyses that use them, else 1."""
    return PARALLEL_THREADS if REGISTRY[wildcards.analysis].parallel else 1


def similarity_features(wildcards):
    """Input function: the model's feature files, for similarity on the frame span only
    (its exact metrics stream every frame of every utterance from them)."""
    # a pooled store holds no frames: the sample in the pooled folder is all there is
    if POOLED_STORE or wildcards.span != "frame":
        return []
    if wildcards.analysis == "similarity":
        return features(wildcards.model)
    return []


def mel_input(wildcards):
    """Input function: the log-mel target, for CCA on the frame span only."""
    if wildcards.analysis == "cca" and wildcards.span == "frame":
        return [f"{OUT}/pooled/{wildcards.model}/frame-mean.logmel.npy"]
    return []


def model_pairs():
    names = list(MODELS)
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]


def tables():
    """Every analysis table of the run."""
    out = [
        f"{OUT}/tables/{model}/{analysis}-{sp}.tsv"
        for model in MODELS
        for analysis in ANALYSES
        for sp in SPAN_POOLINGS
        if sp.split("-")[0] in REGISTRY[analysis].spans
    ]
    out += [
        f"{OUT}/tables/{model}/temporal-{part}.tsv"
        for model in MODELS
        for part in ("selfsim", "trajectory")
    ]
    if config["analysis"]["cross_model"]:
        out += [
            f"{OUT}/tables/cross/{a}--{b}/similarity-{sp}.tsv"
            for a, b in model_pairs()
            for sp in SPAN_POOLINGS
        ]
    return out


def span_labels(span):
    """Labels a span's maps are coloured by: the corpus labels, then the unit label."""
    labels = list(config["corpus"]["labels"] or [])
    return labels + {"word": ["word"], "phone": ["phone"], "frame": ["word"]}.get(
        span, []
    )


def curve_tables(wildcards):
    """Input function: the per-layer curve tables of every model for one (span, pooling)."""
    sp = f"{wildcards.span}-{wildcards.pooling}"
    out = {
        name: [f"{OUT}/tables/{m}/{name}-{sp}.tsv" for m in MODELS]
        for name in ("probes", "convexity", "clustering")
    }
    if wildcards.span in REGISTRY["cca"].spans:
        out["cca"] = [f"{OUT}/tables/{m}/cca-{sp}.tsv" for m in MODELS]
    return out


def summary_tables(wildcards):
    """Input function: the tables of one model's summary page (first span-pooling)."""
    sp = SPAN_POOLINGS[0]
    names = ("similarity", "probes", "convexity", "clustering", "featstats")
    return {n: f"{OUT}/tables/{wildcards.model}/{n}-{sp}.tsv" for n in names}


def plot_files():
    """Every figure of the run (what `snakemake figures/` assembles)."""
    out = []
    for sp in SPAN_POOLINGS:
        span = sp.split("-")[0]
        out.append(f"{OUT}/plots/curves-{sp}.png")
        for m in MODELS:
            out += [
                f"{OUT}/plots/{m}/similarity-{sp}.png",
                f"{OUT}/plots/{m}/featstats-{sp}.png",
            ]
            out += [f"{OUT}/plots/{m}/maps-{sp}-{lab}.png" for lab in span_labels(span)]
        if config["analysis"]["cross_model"]:
            out += [
                f"{OUT}/plots/cross/{a}--{b}/similarity-{sp}.png"
                for a, b in model_pairs()
            ]
    for m in MODELS:
        out.append(f"{OUT}/plots/{m}/summary.png")
        # the temporal figures read frames, which a pooled store lacks
        if not POOLED_STORE:
            out += [
                f"{OUT}/plots/{m}/temporal-selfsim.png",
                f"{OUT}/plots/{m}/temporal-trajectory.gif",
            ]
    return out


def all_outputs():
    return [f"{OUT}/summary.txt", f"{OUT}/rejected.tsv", "figures"] + tables()
