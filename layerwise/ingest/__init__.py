"""Ingest: the corpus manifest, word/phone alignments and labels, audio checks, and the shards."""
