"""Data pipeline throughput: `python -m benchmarks.data` (benchmarks/README.md)."""
