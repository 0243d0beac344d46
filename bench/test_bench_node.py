"""``python -m bench node --quick`` once, under pytest(-benchmark).

    python -m pytest bench/test_bench_node.py
    python -m pytest bench/ --benchmark-only

One round of the quick run (the peer node in its own process, small
counts); the node benchmark's numbers go to the benchmark's ``extra_info``,
the timing table only shows how long the quick run took. A wrong answer (a
lost, reordered or damaged message, a wrong rpc result) or a run that cannot
complete fails the test; timings are never asserted. ``make test`` does not
collect this file (``testpaths`` is ``tests/``).
"""

from __future__ import annotations

from bench import node


def _numbers(doc: dict) -> dict:
    out = {}
    for direction, cases in doc["throughput"].items():
        for case, cell in cases.items():
            for key in ("msgs_per_s", "mb_per_s", "error"):
                if key in cell:
                    out[f"{direction}.{case}.{key}"] = cell[key]
    for kind, cell in doc["latency"].items():
        for key in ("p50_us", "p90_us", "p99_us", "error"):
            if key in cell:
                out[f"latency.{kind}.{key}"] = cell[key]
    for key in ("median_ms", "first_connect_ms", "error"):
        if key in doc["connection_setup"]:
            out[f"connection_setup.{key}"] = doc["connection_setup"][key]
    return out


def test_node_quick(benchmark):
    doc = benchmark.pedantic(node.run, kwargs={"quick": True}, rounds=1, iterations=1)
    benchmark.group = "node --quick (one whole run)"
    benchmark.extra_info.update(_numbers(doc))
    assert doc["errors"] == []
    for direction in ("local_to_peer", "peer_to_local"):
        for case in ("small", "binary_1kib"):
            cell = doc["throughput"][direction][case]
            assert cell["msgs_per_s"] > 0 and cell["mb_per_s"] > 0
    for kind in ("mailbox_roundtrip", "ping", "rpc"):
        assert doc["latency"][kind]["p50_us"] > 0
    assert doc["connection_setup"]["median_ms"] > 0
