"""Benchmarks against real peers; each script is run on its own (see README, "Benchmarks")."""
