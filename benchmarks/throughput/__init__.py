"""Training throughput on this machine: `python -m benchmarks.throughput` (see __main__.py and benchmarks/README.md)."""
