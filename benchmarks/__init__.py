"""Benchmarks (`make bench`): each bench_*.py module has run() -> dict with its numbers and goal."""
