"""Snakemake adapter: layer x layer heatmaps of every similarity metric for one model."""

from layerwise import logs, plots
from layerwise.io.tables import read_tsv

logs.to_file(snakemake.log[0])
w = snakemake.wildcards
plots.layer_heatmaps(read_tsv(snakemake.input[0]), snakemake.output[0],
                     corpus=snakemake.params.corpus, model=w.model, span=w.span, pooling=w.pooling)
