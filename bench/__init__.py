"""Benchmarks: every speed claim measured against its anchor in the same run (see bench/run.py)."""
