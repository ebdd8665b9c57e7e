"""Snakemake adapter: every layer of one model over one audio shard into one HDF5 file."""

from layerwise import logs
from layerwise.extract import features
from layerwise.io.tables import read_tsv
from layerwise.pool.in_extraction import ShardPooler

log = logs.to_file(snakemake.log[0], threads=snakemake.threads)
p = dict(snakemake.params.extract)
pooler = None
if p["store"] == "pooled":  # extract.store: pooled — the units' rows, not the frames
    units = p.pop("pool")
    pooler = ShardPooler(
        units["span_poolings"],
        read_tsv(snakemake.input.manifest, dtype=str),
        read_tsv(snakemake.input.alignments, dtype={"utt_id": str, "label": str}),
        max_frames=units["max_frames"],
        seed=units["seed"],
    )
summary = features.extract_shard(
    snakemake.input.table,
    snakemake.output.h5,
    snakemake.output.rejected,
    model_dir=snakemake.params.model_dir,
    source=p.pop("source"),
    params_hash=snakemake.params.params_hash,
    pooler=pooler,
    **p,
)
log.info("done: %s", summary)
