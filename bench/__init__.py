"""Benchmarks for quicdist (not part of the installed package).

Run from the repository root:

    python -m bench etf                 # ETF codec, JSON on stdout
    python -m bench carrier             # QUIC carrier vs plain aioquic, JSON on stdout
    python -m pytest bench/ --benchmark-only

Benchmarks measure; they never pass or fail on timing. See bench/README.md.
"""
