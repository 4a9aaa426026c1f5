"""Benchmarks: ``python -m bench.<name>`` prints a header and one line per figure."""
