"""The plumbing every benchmark shares, written once (the map is in benchmarks/README.md, "The harness")."""
