"""Snakemake adapter: model A layers x model B layers heatmaps."""

from layerwise import logs, plots
from layerwise.io.tables import read_tsv

logs.to_file(snakemake.log[0])
w = snakemake.wildcards
plots.cross_model_heatmaps(read_tsv(snakemake.input[0]), snakemake.output[0],
                           corpus=snakemake.params.corpus, model_a=w.model_a, model_b=w.model_b,
                           span=w.span, pooling=w.pooling)
