"""Throughput benchmarks of kerasvit against native PyTorch (see bench/README.md).

Run as scripts (`python bench/throughput.py ...`); the package form exists so that the
worker processes and tests/benchmarks/test_bench.py can import the pieces."""
