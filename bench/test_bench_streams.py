"""``python -m bench streams --quick`` once, under pytest(-benchmark).

    python -m pytest bench/test_bench_streams.py
    python -m pytest bench/ --benchmark-only

One round of the quick run (the peer node in its own process, small sizes);
the numbers go to the benchmark's ``extra_info``, the timing table only shows
how long the quick run took. Damaged stream bytes or a run that cannot
complete fail the test; timings are never asserted. ``make test`` does not
collect this file (``testpaths`` is ``tests/``).
"""

from __future__ import annotations

from bench import streams


def _numbers(doc: dict) -> dict:
    out = {}
    for case, cell in doc["bulk"].items():
        for key in ("mb_per_s", "error"):
            if key in cell:
                out[f"bulk.{case}.{key}"] = cell[key]
    for kind, cell in doc["latency"].items():
        for key in ("p50_us", "p99_us", "error"):
            if key in cell:
                out[f"latency.{kind}.{key}"] = cell[key]
    return out


def test_streams_quick(benchmark):
    doc = benchmark.pedantic(streams.run, kwargs={"quick": True}, rounds=1, iterations=1)
    benchmark.group = "streams --quick (one whole run)"
    benchmark.extra_info.update(_numbers(doc))
    assert doc["errors"] == []
    for cell in doc["bulk"].values():
        assert cell["mb_per_s"] > 0
    for cell in doc["latency"].values():
        assert cell["p50_us"] > 0
