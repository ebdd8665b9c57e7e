"""Benchmarks of layerwise (see benchmarks/README.md); importable from the repository root."""
