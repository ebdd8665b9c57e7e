"""Snakemake adapter: pool one layer of one model onto the rows of its index."""

import numpy as np

from layerwise import logs, pool, store
from layerwise.tables import read_tsv

log = logs.to_file(snakemake.log[0])
index = read_tsv(snakemake.input.index, dtype={"utt_id": str})
x = pool.pool_layer(store.open(snakemake.input.features), snakemake.wildcards.layer, index,
                    snakemake.wildcards.pooling)
np.save(snakemake.output[0], x)
log.info("%s: %s", snakemake.wildcards.layer, x.shape)
