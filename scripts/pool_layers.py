"""Snakemake adapter: the rows of one (model, span, pooling) and every layer pooled onto them."""

from tqdm.auto import tqdm

from layerwise import logs, pool
from layerwise.io import pooled, store
from layerwise.io.tables import read_tsv

log = logs.to_file(snakemake.log[0])
w = snakemake.wildcards
fs = store.open(snakemake.input.features)
index, names, layers = pool.pool_store(
    fs,
    read_tsv(snakemake.input.manifest, dtype=str),
    read_tsv(snakemake.input.alignments, dtype={"utt_id": str, "label": str}),
    w.span,
    w.pooling,
    labels=snakemake.params.labels or [],
    max_frames=snakemake.params.max_frames,
    seed=snakemake.params.seed,
)
log.info("%d rows, %d layers (%s store)", len(index), len(names), fs.mode)
bar = tqdm(layers, total=len(names), desc=f"pool {w.model} {w.span}-{w.pooling}", unit="layer",
           mininterval=2.0)
pooled.write(snakemake.output[0], index, bar, model=w.model, span=w.span, pooling=w.pooling)
log.info("done")
