"""Snakemake adapter: decode one shard's files to 16 kHz mono WAV."""

from layerwise import logs
from layerwise.ingest import shards
from layerwise.io.tables import read_tsv

log = logs.to_file(snakemake.log[0])
a = snakemake.params.audio
kept, bad = shards.build_shard(
    read_tsv(snakemake.input.manifest, dtype={"utt_id": str, "path": str}),
    int(snakemake.wildcards.shard),
    snakemake.output.wav,
    snakemake.output.table,
    snakemake.output.rejected,
    sample_rate=a["sample_rate"],
    convert=a["convert"],
    min_seconds=a["min_seconds"],
    max_seconds=a["max_seconds"],
    subtype=a["wav_subtype"],
)
log.info("shard %s: %d kept, %d rejected", snakemake.wildcards.shard, kept, bad)
