"""Benchmarks: idle CPU, all-reduce per backend, training against DDP, and a labelled scaling model."""
