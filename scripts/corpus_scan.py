"""Snakemake adapter: scan the corpus into manifest.tsv (+ alignments, rejections)."""

from layerwise import logs
from layerwise.ingest import corpus

log = logs.to_file(snakemake.log[0])
result = corpus.scan(snakemake.params.corpus, hf_audio_dir=snakemake.params.hf_audio_dir)
corpus.write_scan(result, snakemake.output.manifest, snakemake.output.alignments,
                  snakemake.output.rejected)
log.info("%d utterances, %d rejected at scan", len(result.manifest), len(result.rejected))
