"""The GPU check and benchmark, run from the repository root by `bash benchmarks/gpu/run.sh` (see run.sh)."""
