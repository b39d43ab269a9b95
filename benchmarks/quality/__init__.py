"""Retrieval quality of the distillation methods on SciFact: `python -m benchmarks.quality` (benchmarks/README.md)."""
