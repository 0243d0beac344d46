"""Distribution message benchmark: ``quicdist.dist.encode_message`` / ``decode_message``.

Both term-codec paths side by side: ``cython`` (the compiled
``quicdist._fastpath``) and ``python`` (its pure-Python twin). ``quicdist.dist``
looks its codec functions (``encode``, ``decode_from``) up in its module
globals at each call, so the benchmark points them at one path or the other
for the duration of that path's measurements, whatever
``QUICDIST_NO_EXTENSIONS`` says.

Cases: SEND and REG_SEND of a small tuple message, and a MONITOR_P of a
registered name (what ``net_adm:ping`` and ``gen_server:call`` open with).
Each path is checked once per case before it is timed: ``encode_message``
must give exactly ``b"p" + encode(ControlTuple) + encode(Message)`` (the
reference encoding of the pure twin, the control tuple written out by hand)
and ``decode_message`` must give back the message (strict, type-aware).

Next to each time is the **codec floor**: the same work done with the bare
codec (encode the control tuple and the message and join them; decode both
terms with ``decode_from``). ``*_overhead_us`` = time - floor is what the
distribution layer adds per message (field checks, dispatch, the dataclass).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from quicdist import _fastpath_py as oracle, dist
from quicdist.dist import MonitorP, RegSend, Send
from quicdist.terms import Atom, Pid, Reference

from . import etf
from ._common import CorrectnessError, _round, base_environment
from .etf import _progress, _ratio


IMPL_IDS = ("cython", "python")
NODE = "a@127.0.0.1"
PID = Pid(NODE, 84, 0, 1700000000)
REF = Reference(NODE, 1700000000, (158_842, 3_145_728_001, 2_716_057_635))
SMALL = (Atom("ok"), 42, b"hi")


@dataclass(frozen=True)
class Case:
    id: str
    description: str
    message: Any
    control: tuple[Any, ...]
    term: Any  # the term after the control tuple, or NO_TERM


NO_TERM = object()

CASES: dict[str, Case] = {
    c.id: c
    for c in (
        Case("send_small_tuple", "SEND {2, '', Pid} + {ok, 42, <<\"hi\">>}",
             Send(PID, SMALL), (2, Atom(""), PID), SMALL),
        Case("reg_send_small_tuple", "REG_SEND {6, Pid, '', echo} + {ok, 42, <<\"hi\">>}",
             RegSend(PID, Atom("echo"), SMALL), (6, PID, Atom(""), Atom("echo")), SMALL),
        Case("monitor_p_name", "MONITOR_P {19, Pid, net_kernel, Ref} (no message term)",
             MonitorP(PID, Atom("net_kernel"), REF),
             (19, PID, Atom("net_kernel"), REF), NO_TERM),
    )
}
CASE_IDS = tuple(CASES)


@dataclass
class Impl:
    id: str
    kind: str
    available: bool
    module: Any = None
    reason: str | None = None


def get_impl(impl_id: str) -> Impl:
    if impl_id == "python":
        return Impl("python", "quicdist.dist on the pure-Python codec (quicdist._fastpath_py)",
                    True, oracle)
    kind = "quicdist.dist on the compiled codec (quicdist._fastpath)"
    try:
        module = importlib.import_module("quicdist._fastpath")
    except ImportError as exc:
        return Impl("cython", kind, False, reason=f"quicdist._fastpath is not built ({exc}); "
                    "build it with `python setup.py build_ext --inplace`")
    return Impl("cython", kind, True, module)


@contextlib.contextmanager
def using(impl: Impl) -> Iterator[None]:
    """Point ``quicdist.dist`` at ``impl``'s codec for the duration of the block."""
    saved = dist.encode, dist.decode_from
    dist.encode, dist.decode_from = impl.module.encode, impl.module.decode_from
    try:
        yield
    finally:
        dist.encode, dist.decode_from = saved


def reference_payload(case: Case) -> bytes:
    tail = b"" if case.term is NO_TERM else oracle.encode(case.term)
    return b"p" + oracle.encode(case.control) + tail


def strict_message_equal(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    return all(etf.strict_equal(getattr(a, f.name), getattr(b, f.name))
               for f in dataclasses.fields(a))


def check(impl: Impl, case: Case) -> bytes:
    """Raise CorrectnessError unless ``impl`` encodes and decodes ``case`` exactly."""
    expected = reference_payload(case)
    with using(impl):
        if dist.encode is not impl.module.encode:
            raise CorrectnessError(f"{impl.id}: could not switch quicdist.dist to this codec")
        try:
            payload = dist.encode_message(case.message)
            back = dist.decode_message(expected)
        except Exception as exc:
            raise CorrectnessError(f"{impl.id}: {type(exc).__name__}: {exc}") from exc
    if payload != expected:
        raise CorrectnessError(f"{impl.id}: encode_message differs from the reference "
                               f"encoding ({payload!r} vs {expected!r})")
    if not strict_message_equal(back, case.message):
        raise CorrectnessError(f"{impl.id}: decode_message gives {back!r}, "
                               f"expected {case.message!r}")
    return expected


def _floors(impl: Impl, case: Case, payload: bytes) -> tuple[Callable[[Any], Any], Any,
                                                              Callable[[Any], Any], Any]:
    """Bare-codec equivalents of encode_message and decode_message for ``case``."""
    enc, dec_from = impl.module.encode, impl.module.decode_from
    control = case.control
    if case.term is NO_TERM:
        def enc_floor(term: Any) -> bytes:
            return b"p" + enc(control)

        def dec_floor(data: bytes) -> Any:
            return dec_from(data, 1)
    else:
        def enc_floor(term: Any) -> bytes:
            return b"p" + enc(control) + enc(term)

        def dec_floor(data: bytes) -> Any:
            ctl, pos = dec_from(data, 1)
            return ctl, dec_from(data, pos)
    return enc_floor, case.term, dec_floor, payload


def run(impl_ids: tuple[str, ...] = IMPL_IDS, quick: bool = False,
        settings: etf.Settings | None = None, progress: bool = False) -> dict[str, Any]:
    """Run the benchmark and return the JSON document."""
    settings = settings or (etf.QUICK if quick else etf.DEFAULT)
    impls = [get_impl(i) for i in impl_ids]
    errors: list[str] = []
    cases: dict[str, Any] = {}

    for case_id, case in CASES.items():
        results: dict[str, Any] = {}
        for impl in impls:
            if not impl.available:
                results[impl.id] = None
                continue
            try:
                payload = check(impl, case)
            except CorrectnessError as exc:
                errors.append(f"{case_id}: {exc}")
                results[impl.id] = {"error": f"correctness check failed: {exc}"}
                continue
            _progress(progress, f"dist {case_id} {impl.id}")
            enc_floor, term, dec_floor, data = _floors(impl, case, payload)
            row: dict[str, Any] = {}
            with using(impl):
                for key, fn, arg in (("encode", dist.encode_message, case.message),
                                     ("decode", dist.decode_message, payload),
                                     ("encode_codec_floor", enc_floor, term),
                                     ("decode_codec_floor", dec_floor, data)):
                    us, number = etf.time_per_op(fn, arg, settings)
                    row[f"{key}_us"] = _round(us)
                    row[f"{key}_number"] = number
            for op in ("encode", "decode"):
                row[f"{op}_overhead_us"] = _round(row[f"{op}_us"] - row[f"{op}_codec_floor_us"])
            results[impl.id] = row
        py, cy = results.get("python") or {}, results.get("cython") or {}
        cases[case_id] = {
            "description": case.description,
            "payload_size": len(reference_payload(case)),
            "results": results,
            "encode_cython_speedup_vs_python": _ratio(py.get("encode_us"), cy.get("encode_us")),
            "decode_cython_speedup_vs_python": _ratio(py.get("decode_us"), cy.get("decode_us")),
        }

    return {
        "benchmark": "dist",
        "units": "microseconds per call (min over repeats); *_codec_floor_us: the same work "
                 "with the bare term codec; *_overhead_us: the difference",
        "environment": base_environment(),
        "settings": {
            "quick": quick,
            "repeats": settings.repeats,
            "target_seconds_per_repeat": settings.target,
            "implementations": {
                impl.id: {"kind": impl.kind, "available": impl.available,
                          **({"reason": impl.reason} if not impl.available else {})}
                for impl in impls
            },
        },
        "cases": cases,
        "targets": _targets(cases),
        "errors": errors,
    }


def _targets(cases: dict[str, Any]) -> list[dict[str, Any]]:
    """The brief's target, for reading only: benchmarks never gate anything."""
    values: dict[str, float | None] = {}
    for case_id in ("send_small_tuple", "reg_send_small_tuple"):
        row = cases[case_id]["results"].get("cython") or {}
        for op in ("encode", "decode"):
            values[f"{case_id}_{op}"] = row.get(f"{op}_us")
    met = (None if any(v is None for v in values.values())
           else all(v is not None and v < 3.0 for v in values.values()))
    return [{"target": "SEND and REG_SEND of a small tuple encode and decode in a few us on "
                       "the compiled codec (< 3 us each)",
             "values_us": values, "met": met}]
