"""Snakemake adapter: every layer of one model over one audio shard into one HDF5 file."""

from layerwise import logs
from layerwise.extract import features

log = logs.to_file(snakemake.log[0], threads=snakemake.threads)
p = dict(snakemake.params.extract)
summary = features.extract_shard(
    snakemake.input.table,
    snakemake.output.h5,
    snakemake.output.rejected,
    model_dir=snakemake.params.model_dir,
    source=p.pop("source"),
    params_hash=snakemake.params.params_hash,
    **p,
)
log.info("done: %s", summary)
