"""Snakemake adapter: one analysis over every layer of one model, one (span, pooling)."""

import numpy as np

from layerwise import analyses, logs
from layerwise.io import pooled
from layerwise.io.tables import write_tsv

log = logs.to_file(snakemake.log[0], threads=snakemake.threads)
w = snakemake.wildcards
index, layers = pooled.read(snakemake.input.pooled)
mel = np.load(snakemake.input.mel[0]) if snakemake.input.mel else None
table = analyses.run(w.analysis, index, layers, model=w.model, span=w.span, pooling=w.pooling,
                     labels=snakemake.params.labels or [], params=snakemake.params.settings,
                     seed=snakemake.params.seed, mel=mel, n_jobs=snakemake.threads,
                     features=list(snakemake.input.features))
write_tsv(table, snakemake.output[0])
log.info("%s: %d rows", w.analysis, len(table))
