"""Snakemake adapter: merge every job's rejections into rejected.tsv and write summary.txt."""

from layerwise import logs
from layerwise.ingest import summary

log = logs.to_file(snakemake.log[0])
text = summary.summarise(
    snakemake.input.manifest,
    snakemake.input.shard_tables,
    snakemake.input.records,
    snakemake.output.rejected,
    snakemake.output.summary,
)
log.info("\n%s", text)
print(text)
