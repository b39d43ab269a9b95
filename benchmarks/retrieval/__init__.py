"""Retrieval speed (encoding, search): `python -m benchmarks.retrieval` (benchmarks/README.md)."""
