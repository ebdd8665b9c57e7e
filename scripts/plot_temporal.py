"""Snakemake adapter: frame self-similarity and the trajectory GIF from the temporal tables."""

from layerwise import logs
from layerwise.io.tables import read_tsv
from layerwise.plots import temporal_figures

logs.to_file(snakemake.log[0])
temporal_figures(read_tsv(snakemake.input.selfsim, dtype={"utt_id": str}),
                 read_tsv(snakemake.input.trajectory, dtype={"utt_id": str}),
                 read_tsv(snakemake.input.alignments, dtype={"utt_id": str, "label": str}),
                 snakemake.output.selfsim, snakemake.output.gif, corpus=snakemake.params.corpus)
