"""Snakemake adapter: the temporal tables (self-similarity, trajectory) of one model."""

from layerwise import logs
from layerwise.analyses.temporal import temporal_tables
from layerwise.io import store
from layerwise.io.tables import read_tsv, write_tsv

log = logs.to_file(snakemake.log[0])
alignments = read_tsv(snakemake.input.alignments, dtype={"utt_id": str, "label": str})
selfsim, trajectory = temporal_tables(store.open(snakemake.input.features), alignments,
                                      model=snakemake.wildcards.model,
                                      **snakemake.params.settings)
write_tsv(selfsim, snakemake.output.selfsim)
write_tsv(trajectory, snakemake.output.trajectory)
log.info("selfsim: %d rows, trajectory: %d rows", len(selfsim), len(trajectory))
