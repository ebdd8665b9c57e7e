"""Snakemake adapter: probe / convexity / CCA / NMI curves, one line per model."""

from layerwise import logs, plots
from layerwise.io.tables import read_tables

logs.to_file(snakemake.log[0])
w = snakemake.wildcards
plots.layer_curves(read_tables(snakemake.input), snakemake.output[0],
                   corpus=snakemake.params.corpus, span=w.span, pooling=w.pooling)
