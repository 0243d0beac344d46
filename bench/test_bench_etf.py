"""pytest-benchmark versions of ``python -m bench etf``.

One benchmark per (implementation, operation, case)::

    python -m pytest bench/ --benchmark-only
    python -m pytest bench/ --benchmark-only -k "cython and a_control"
    python -m pytest bench/ --benchmark-only --benchmark-group-by=group

Each implementation's answer is checked once before it is timed (see
``bench.etf.prepare``): a wrong answer from a quicdist path fails the test;
an alternative that cannot represent or read the case is skipped with the
reason. Timings are reported, never asserted.
"""

from __future__ import annotations

import pytest

from bench import etf


_prepared: dict[tuple[str, str], etf.Prepared] = {}


def _prepare(impl_id: str, case_id: str) -> tuple[etf.Impl, etf.Prepared]:
    impl = etf.get_impl(impl_id)
    if not impl.available:
        pytest.skip(f"{impl_id} unavailable: {impl.reason}")
    key = (impl_id, case_id)
    if key not in _prepared:
        _prepared[key] = etf.prepare(impl, case_id)  # raises CorrectnessError on a bug
    return impl, _prepared[key]


@pytest.mark.parametrize("case_id", etf.CASE_IDS)
@pytest.mark.parametrize("op", etf.OPS)
@pytest.mark.parametrize("impl_id", etf.IMPL_IDS)
def test_etf(benchmark, impl_id, op, case_id):
    impl, prep = _prepare(impl_id, case_id)
    reason = prep.encode_error if op == "encode" else prep.decode_error
    if reason is not None:
        pytest.skip(f"{impl_id} {op} {case_id}: {reason}")
    fn = impl.encode if op == "encode" else impl.decode
    arg = prep.encode_input if op == "encode" else prep.decode_input
    benchmark.group = f"etf {etf.CASES[case_id].label} {case_id} {op}"
    benchmark.extra_info["encoded_size"] = prep.encoded_size
    if prep.notes:
        benchmark.extra_info["notes"] = prep.notes
    result = benchmark(fn, arg)
    if op == "decode" and impl_id in etf.QUICDIST_IMPLS:
        assert etf.strict_equal(result, etf.case_data(case_id)[2])
