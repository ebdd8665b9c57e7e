"""Snakemake adapter: list a model's layers (name, kind, rate, dim, storage) from its config."""

from layerwise import encoders, logs

log = logs.to_file(snakemake.log[0])
table = encoders.layer_table(snakemake.params.model_dir, revision=snakemake.params.revision,
                             layers=snakemake.params.layers, frames=snakemake.params.frames)
table.to_csv(snakemake.output[0], sep="\t", index=False)
log.info("%d layers", len(table))
