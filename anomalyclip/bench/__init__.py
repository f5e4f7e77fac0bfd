"""Benchmarks: each module has a ``run(...) -> dict`` and an ``anomaly bench`` command."""
