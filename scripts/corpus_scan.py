"""Snakemake adapter: scan the corpus into manifest.tsv (+ alignments, rejections)."""

from pathlib import Path

from layerwise import logs
from layerwise.ingest import corpus

log = logs.to_file(snakemake.log[0])
# A declared output: the audio of a Hugging Face dataset, written out as files; empty otherwise.
Path(snakemake.output.hf_audio).mkdir(parents=True, exist_ok=True)
result = corpus.scan(snakemake.params.corpus, hf_audio_dir=snakemake.output.hf_audio)
corpus.write_scan(result, snakemake.output.manifest, snakemake.output.alignments,
                  snakemake.output.rejected)
log.info("%d utterances, %d rejected at scan", len(result.manifest), len(result.rejected))
