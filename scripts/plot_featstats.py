"""Snakemake adapter: per-layer feature statistics of one model."""

from layerwise import logs, plots
from layerwise.io.tables import read_tsv

logs.to_file(snakemake.log[0])
plots.feature_stats(read_tsv(snakemake.input[0]), snakemake.output[0],
                    corpus=snakemake.params.corpus, model=snakemake.wildcards.model)
