"""Benchmarks: all-reduce bandwidth per backend, and a labelled model of scaling."""
