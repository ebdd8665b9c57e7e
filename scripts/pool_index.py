"""Snakemake adapter: the rows (units) of one (model, span, pooling)'s pooled matrices."""

from layerwise import logs, pool, store
from layerwise.tables import read_tsv, write_tsv

log = logs.to_file(snakemake.log[0])
fs = store.open(snakemake.input.features)
rate = fs.layer_info(next(n for n in fs.layers if n.startswith("layer.")))["frame_rate_hz"]
index = pool.build_index(
    fs,
    read_tsv(snakemake.input.manifest, dtype=str),
    read_tsv(snakemake.input.alignments, dtype={"utt_id": str, "label": str}),
    snakemake.wildcards.span,
    labels=snakemake.params.labels or [],
    max_frames=snakemake.params.max_frames,
    frame_rate_hz=rate,
    seed=snakemake.params.seed,
)
write_tsv(index, snakemake.output[0])
log.info("%d rows", len(index))
