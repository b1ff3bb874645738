"""Benchmarks: each figure is reported with a raw baseline measured in the same run."""
