"""Chaos suite: crashes, outages and hostile input against the real pipeline (issue 9)."""
