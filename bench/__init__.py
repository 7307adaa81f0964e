"""Benchmarks that print figures (never assertions on time). Run ``python3 -m bench <name>``."""
