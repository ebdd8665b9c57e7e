"""Snakemake adapter: log-mel frames for the rows of a frame-span index (CCA-mel target)."""

import numpy as np
import pandas as pd

from layerwise import logs
from layerwise.io import pooled
from layerwise.io.tables import read_tsv
from layerwise.pool import mel as log_mel

log = logs.to_file(snakemake.log[0])
index = pooled.read_index(snakemake.input.pooled)
paths = pd.concat([read_tsv(t, dtype=str) for t in snakemake.input.shard_tables])
mel = log_mel.mel_matrix(index, dict(zip(paths["utt_id"], paths["path"], strict=True)),
                         sample_rate=snakemake.params.sample_rate)
np.save(snakemake.output[0], mel)
log.info("%s log-mel rows, each over its frame's receptive field", mel.shape)
