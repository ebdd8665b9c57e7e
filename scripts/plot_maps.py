"""Snakemake adapter: PCA / t-SNE / UMAP grids of one model coloured by one label."""

from layerwise import logs, plots
from layerwise.io.tables import read_tsv

logs.to_file(snakemake.log[0])
w = snakemake.wildcards
plots.embedding_grid(read_tsv(snakemake.input[0], dtype={w.label: str}), snakemake.output[0],
                     corpus=snakemake.params.corpus, model=w.model, span=w.span,
                     pooling=w.pooling, label=w.label)
