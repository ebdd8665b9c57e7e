"""Snakemake adapter: similarity of every layer of model A with every layer of model B."""

from layerwise import analyses, logs
from layerwise.io import pooled
from layerwise.io.tables import write_tsv

log = logs.to_file(snakemake.log[0], threads=snakemake.threads)
w = snakemake.wildcards
index_a, layers_a = pooled.read(snakemake.input.pooled_a)
index_b, layers_b = pooled.read(snakemake.input.pooled_b)
table = analyses.cross_similarity(index_a, layers_a, index_b, layers_b, model_a=w.model_a,
                                  model_b=w.model_b, span=w.span, pooling=w.pooling,
                                  params=snakemake.params.settings, seed=snakemake.params.seed)
write_tsv(table, snakemake.output[0])
log.info("%d rows", len(table))
