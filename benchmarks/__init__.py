"""Benchmarks of lead_dist: run each as `python -m benchmarks.<name>` from the repository root; results land in
benchmarks/results/ (JSON + PNG, machine recorded by benchmarks.harness.machine)."""
