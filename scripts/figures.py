"""Snakemake adapter: assemble figures/<corpus>/ (copies of every plot) and its index page."""

from layerwise import logs
from layerwise.plots import figure_index

logs.to_file(snakemake.log[0])
figure_index.assemble(snakemake.input.plots, snakemake.params.plots_dir, snakemake.output[0],
                      corpus=snakemake.params.corpus)
