"""pytest configuration for the benchmarks under bench/.

Run them from the repository root with ``python -m pytest bench/
--benchmark-only`` (the main suite's ``testpaths`` is ``tests/`` only, so
``make test`` never collects this directory). Without pytest-benchmark
installed the benchmark module is not collected at all, instead of failing
on a missing ``benchmark`` fixture.
"""

from __future__ import annotations

import importlib.util

from bench import etf


collect_ignore: list[str] = []
if importlib.util.find_spec("pytest_benchmark") is None:
    collect_ignore.extend(["test_bench_etf.py", "test_bench_carrier.py",
                           "test_bench_node.py", "test_bench_streams.py"])


def pytest_report_header(config):
    lines = []
    for impl_id in etf.IMPL_IDS:
        impl = etf.get_impl(impl_id)
        state = f"version {impl.version}" if impl.available else f"unavailable: {impl.reason}"
        lines.append(f"bench etf {impl_id}: {impl.kind}, {state}")
    return lines
