"""Benchmarks: write path, large spaces (and later the merge runner)."""
