"""Snakemake adapter: frame self-similarity and the trajectory GIF of one utterance."""

from layerwise import logs, store
from layerwise.plots import temporal_figures
from layerwise.tables import read_tsv

logs.to_file(snakemake.log[0])
temporal_figures(store.open(snakemake.input.features), read_tsv(snakemake.input.alignments,
                 dtype={"utt_id": str, "label": str}), snakemake.output.selfsim,
                 snakemake.output.gif, corpus=snakemake.params.corpus,
                 model=snakemake.wildcards.model)
