"""Benchmarks: ``python -m streamer.bench`` (end to end), ``.scale``, ``.sinks``, ``.trouble``."""
