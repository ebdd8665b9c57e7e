"""Snakemake adapter: frame self-similarity and the trajectory GIF of one utterance."""

from layerwise import logs
from layerwise.io import store
from layerwise.io.tables import read_tsv
from layerwise.plots import temporal_figures

logs.to_file(snakemake.log[0])
temporal_figures(store.open(snakemake.input.features), read_tsv(snakemake.input.alignments,
                 dtype={"utt_id": str, "label": str}), snakemake.output.selfsim,
                 snakemake.output.gif, corpus=snakemake.params.corpus,
                 model=snakemake.wildcards.model)
