"""Benchmarks: one program per measured path, each printing a table (`python -m bench.<name>`)."""
