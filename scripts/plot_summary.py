"""Snakemake adapter: the one-page summary of one model."""

from layerwise import logs, plots
from layerwise.io.tables import read_tables

logs.to_file(snakemake.log[0])
span, pooling = snakemake.params.span_pooling.split("-")
plots.model_summary(read_tables(snakemake.input), snakemake.output[0],
                    corpus=snakemake.params.corpus, model=snakemake.wildcards.model, span=span,
                    pooling=pooling)
