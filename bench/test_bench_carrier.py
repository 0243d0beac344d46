"""``python -m bench carrier --quick`` once, under pytest(-benchmark).

    python -m pytest bench/test_bench_carrier.py
    python -m pytest bench/ --benchmark-only

One round of the quick run (servers in their own processes, tiny sizes);
the carrier's numbers go to the benchmark's ``extra_info``, the timing
table only shows how long the quick run took. A wrong answer (or a quicdist
run that cannot complete) fails the test; timings are never asserted.
``make test`` does not collect this file (``testpaths`` is ``tests/``).
"""

from __future__ import annotations

from bench import carrier


def _numbers(doc: dict) -> dict:
    out = {}
    for cid, column in doc["configurations"].items():
        for impl, row in column["results"].items():
            for scenario, cell in row.items():
                if not isinstance(cell, dict):
                    continue
                for key in ("mb_per_s", "frames_per_s", "p50_us", "p99_us", "error"):
                    if key in cell:
                        out[f"{cid}.{impl}.{scenario}.{key}"] = cell[key]
    return out


def test_carrier_quick(benchmark):
    doc = benchmark.pedantic(carrier.run, kwargs={"quick": True}, rounds=1, iterations=1)
    benchmark.group = "carrier --quick (one whole run)"
    benchmark.extra_info.update(_numbers(doc))
    benchmark.extra_info["targets_met"] = [t["met"] for t in doc["targets"]]
    assert doc["errors"] == []
    assert "mds_1452" in doc["configurations"]
    for impl in carrier.IMPL_IDS:
        row = doc["configurations"]["mds_1452"]["results"][impl]
        assert row["bulk"]["mb_per_s"] > 0
        assert row["frames"]["frames_per_s"] > 0
        assert row["rtt"]["p50_us"] > 0
