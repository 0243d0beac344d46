"""Distribution framing and send scheduler benchmark.

quicdist's two paths (the compiled ``quicdist._fastpath`` and its pure-Python
twin ``quicdist._fastpath_py``) are timed side by side on what the carrier
does on its I/O thread:

* ``pack_frame`` of a 40-byte and a 64 KiB payload, ``pack_frames`` of 100
  40-byte payloads (µs per call);
* ``FrameDecoder.feed``: 200 000 40-byte frames fed in 64 KiB chunks
  (frames/s), and one 16 MiB frame fed in 1200-byte pieces (MB/s, and the
  time of the second half's feeds over the first half's: about 1 when the
  cost is linear, about 3 when each feed copies what is already held);
* ``SendScheduler.next()`` with 1, 16 and 1000 unblocked streams of one
  urgency and 1000 of mixed urgencies, and a serve cycle
  (``next``/``block``/``unblock``) over mixed urgencies (ns per call).

Every path's answer is checked before it is timed (the exact bytes, every
decoded frame, the scheduler's order), and the decode runs count their
frames while timed, so a fast wrong result cannot look like a win.
``run()`` returns one JSON-serialisable document; ``python -m bench
framing`` prints it.
"""

from __future__ import annotations

import importlib
import struct
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from quicdist import _fastpath_py as oracle

from . import etf
from ._common import CorrectnessError, _round, base_environment
from .etf import _progress, _ratio


IMPL_IDS = ("cython", "python")
KiB = 1 << 10
MiB = 1 << 20


@dataclass
class Impl:
    id: str
    kind: str
    available: bool
    module: Any = None
    reason: str | None = None


def get_impl(impl_id: str) -> Impl:
    if impl_id == "python":
        return Impl("python", "quicdist, pure-Python twin (quicdist._fastpath_py)", True, oracle)
    kind = "quicdist, compiled Cython (quicdist._fastpath)"
    try:
        module = importlib.import_module("quicdist._fastpath")
        module.FrameDecoder  # noqa: B018 - an old build without the framing counts as missing
    except (ImportError, AttributeError) as exc:
        return Impl("cython", kind, False, reason=f"quicdist._fastpath is not built, or built "
                    f"before the framing was added ({exc}); build it with "
                    "`python setup.py build_ext --inplace`")
    return Impl("cython", kind, True, module)


# ---------------------------------------------------------------------------
# Timing (the calibration of bench.etf.time_per_op, for a statement)


def time_stmt(stmt: str, namespace: dict[str, Any], settings: etf.Settings,
              per_stmt: int = 1) -> tuple[float, int]:
    """Min over repeats, in seconds per operation, and the statement runs per repeat.

    ``stmt`` performs ``per_stmt`` operations (short calls are unrolled so
    the timeit loop costs little next to them).
    """
    timer = timeit.Timer(stmt, globals=namespace)
    timer.timeit(1)  # warm-up
    number, elapsed = 1, timer.timeit(1)
    while elapsed < settings.target / 10 and number < 10**9:
        number *= 10
        elapsed = timer.timeit(number)
    if elapsed > 0:
        scaled = max(1, round(number * settings.target / elapsed))
        if scaled != number:
            number, elapsed = scaled, timer.timeit(scaled)
            if elapsed > 0 and not 0.5 <= elapsed / settings.target <= 2:
                number = max(1, round(number * settings.target / elapsed))
    best = min(timer.repeat(repeat=settings.repeats, number=number))
    return best / number / per_stmt, number


def _unrolled(call: str, times: int = 10) -> str:
    return "; ".join([call] * times)


# ---------------------------------------------------------------------------
# Cases


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


PAYLOAD_40 = bytes(range(40))
PAYLOAD_64K = bytes(range(256)) * 256
DECODE_FRAMES = 200_000
LARGE = 16 * MiB


def _check_pack(mod: Any) -> None:
    for payload in (PAYLOAD_40, PAYLOAD_64K):
        if mod.pack_frame(payload) != _frame(payload):
            raise CorrectnessError(f"pack_frame of {len(payload)} bytes gives wrong bytes")
    if mod.pack_frames([PAYLOAD_40] * 100) != _frame(PAYLOAD_40) * 100:
        raise CorrectnessError("pack_frames of 100 x 40 bytes gives wrong bytes")


def _small_stream() -> list[bytes]:
    data = _frame(PAYLOAD_40) * DECODE_FRAMES
    return [data[i:i + 64 * KiB] for i in range(0, len(data), 64 * KiB)]


def _large_stream(size: int) -> tuple[bytes, list[bytes]]:
    payload = bytes(range(251)) * (size // 251) + bytes(size % 251)
    data = _frame(payload)
    return payload, [data[i:i + 1200] for i in range(0, len(data), 1200)]


def _decode_counting(mod: Any, chunks: list[bytes], expected: int) -> None:
    decoder = mod.FrameDecoder()
    feed = decoder.feed
    count = 0
    for chunk in chunks:
        count += len(feed(chunk))
    if count != expected or decoder.buffered:
        raise CorrectnessError(f"decoded {count} frames, expected {expected}")


def _check_decode(mod: Any, chunks: list[bytes]) -> None:
    decoder = mod.FrameDecoder()
    frames: list[bytes] = []
    for chunk in chunks:
        frames += decoder.feed(chunk)
    if len(frames) != DECODE_FRAMES or any(f != PAYLOAD_40 for f in frames):
        raise CorrectnessError("decoding 200k 40-byte frames gives wrong frames")


def _halves(mod: Any, pieces: list[bytes], repeats: int) -> tuple[float, float]:
    """Seconds spent feeding the first and the second half of the pieces (min of each)."""
    half = len(pieces) // 2
    best = [float("inf"), float("inf")]
    for _ in range(max(3, repeats)):
        decoder = mod.FrameDecoder()
        feed = decoder.feed
        for i, part in enumerate((pieces[:half], pieces[half:-1])):
            start = time.perf_counter()
            for piece in part:
                feed(piece)
            best[i] = min(best[i], time.perf_counter() - start)
        if feed(pieces[-1]) == []:
            raise CorrectnessError("the large frame was not completed by its last piece")
    return best[0], best[1]


def _check_large(mod: Any, payload: bytes, pieces: list[bytes]) -> None:
    decoder = mod.FrameDecoder()
    frames: list[bytes] = []
    for piece in pieces:
        frames += decoder.feed(piece)
    if frames != [payload] or decoder.buffered:
        raise CorrectnessError(f"a {len(payload)}-byte frame in 1200-byte pieces decodes wrong")


def _scheduler(mod: Any, urgencies: list[int]) -> Any:
    sched = mod.SendScheduler()
    for i, urgency in enumerate(urgencies):
        sched.add(4 * i + 4, urgency)
        sched.unblock(4 * i + 4)
    return sched


SCHEDULER_CASES: dict[str, tuple[str, list[int]]] = {
    "next_1": ("next() with 1 unblocked stream", [128]),
    "next_16": ("next() with 16 unblocked streams of one urgency", [128] * 16),
    "next_1000": ("next() with 1000 unblocked streams of one urgency", [128] * 1000),
    "next_1000_mixed": ("next() with 1000 unblocked streams over urgencies 200..255 "
                        "(the lowest non-empty level is in the last bitmap word)",
                        [200 + i % 56 for i in range(1000)]),
}


def _check_scheduler(mod: Any, urgencies: list[int]) -> None:
    sched = _scheduler(mod, urgencies)
    lowest = min(urgencies)
    expected = [4 * i + 4 for i, u in enumerate(urgencies) if u == lowest]
    got = [sched.next() for _ in range(2 * len(expected))]
    if got != expected * 2:
        raise CorrectnessError(f"SendScheduler order is wrong for {len(urgencies)} streams")


def _check_cycle(mod: Any, urgencies: list[int]) -> None:
    sched = _scheduler(mod, urgencies)
    ref = _scheduler(oracle, urgencies)
    for _ in range(3 * len(urgencies)):
        a, b = sched.next(), ref.next()
        if a != b:
            raise CorrectnessError("SendScheduler serve cycle differs from the reference")
        sched.block(a)
        sched.unblock(a)
        ref.block(b)
        ref.unblock(b)


CYCLE_URGENCIES = [1 + i % 255 for i in range(1000)]


# ---------------------------------------------------------------------------
# The whole run


def environment() -> dict[str, Any]:
    env = base_environment()
    cython = get_impl("cython")
    env["compiled_module_available"] = cython.available
    env["compiled_module"] = (getattr(cython.module, "__file__", None) if cython.available
                              else cython.reason)
    return env


def run(impl_ids: tuple[str, ...] = IMPL_IDS, quick: bool = False,
        settings: etf.Settings | None = None, progress: bool = False) -> dict[str, Any]:
    """Run the benchmark and return the JSON document (see bench/README.md)."""
    settings = settings or (etf.QUICK if quick else etf.DEFAULT)
    impls = [get_impl(i) for i in impl_ids]
    errors: list[str] = []
    cases: dict[str, Any] = {}

    small_chunks = _small_stream()
    large = _large_stream(LARGE)

    def case(case_id: str, description: str, unit: str,
             measure: Callable[[Impl], dict[str, Any]], key: str) -> None:
        results: dict[str, Any] = {}
        for impl in impls:
            if not impl.available:
                results[impl.id] = None
                continue
            _progress(progress, f"framing {case_id} {impl.id}")
            try:
                results[impl.id] = measure(impl)
            except CorrectnessError as exc:
                errors.append(f"{case_id} {impl.id}: {exc}")
                results[impl.id] = {"error": f"correctness check failed: {exc}"}
        py = (results.get("python") or {}).get(key)
        cy = (results.get("cython") or {}).get(key)
        cases[case_id] = {"description": description, "unit": unit, "results": results,
                          "cython_speedup_vs_python": _ratio(py, cy)}

    def pack(fn_name: str, arg: Any) -> Callable[[Impl], dict[str, Any]]:
        def measure(impl: Impl) -> dict[str, Any]:
            _check_pack(impl.module)
            seconds, number = time_stmt(_unrolled("f(x)", 10),
                                        {"f": getattr(impl.module, fn_name), "x": arg},
                                        settings, 10)
            return {"us": _round(seconds * 1e6), "number": number}
        return measure

    case("pack_frame_40b", "pack_frame() of a 40-byte payload", "us per call",
         pack("pack_frame", PAYLOAD_40), "us")
    case("pack_frame_64kib", "pack_frame() of a 64 KiB payload", "us per call",
         pack("pack_frame", PAYLOAD_64K), "us")
    case("pack_frames_100x40b", "pack_frames() of 100 payloads of 40 bytes (one bytes object)",
         "us per call", pack("pack_frames", [PAYLOAD_40] * 100), "us")

    def decode_small(impl: Impl) -> dict[str, Any]:
        _check_decode(impl.module, small_chunks)
        seconds, number = time_stmt("d(m, c, n)", {"d": _decode_counting, "m": impl.module,
                                                   "c": small_chunks, "n": DECODE_FRAMES},
                                    settings)
        return {"ms_per_run": _round(seconds * 1e3),
                "us_per_frame": _round(seconds / DECODE_FRAMES * 1e6),
                "frames_per_s": round(DECODE_FRAMES / seconds), "number": number}

    case("decode_200k_40b_64kib_chunks",
         f"FrameDecoder.feed(): {DECODE_FRAMES} frames of 40 bytes in 64 KiB chunks "
         f"({len(small_chunks)} feeds; a new decoder per run)",
         "us per frame (also frames/s)", decode_small, "us_per_frame")

    def decode_large(impl: Impl) -> dict[str, Any]:
        payload, pieces = large
        _check_large(impl.module, payload, pieces)
        seconds, number = time_stmt("d(m, p, 1)", {"d": _decode_counting, "m": impl.module,
                                                   "p": pieces}, settings)
        first, second = _halves(impl.module, pieces, settings.repeats)
        return {"ms_per_run": _round(seconds * 1e3),
                "mb_per_s": _round(LARGE / seconds / 1e6), "number": number,
                "second_half_over_first_half": round(second / first, 2)}

    case("decode_16mib_1200b_pieces",
         f"FrameDecoder.feed(): one 16 MiB frame in {len(large[1])} pieces of 1200 bytes "
         "(second_half_over_first_half: time of the feeds of the second half of the frame over "
         "the first half's, min over repeats; ~1 when linear, ~3 when each feed copies what is "
         "held)", "ms per frame (also MB/s)", decode_large, "ms_per_run")

    def next_case(urgencies: list[int]) -> Callable[[Impl], dict[str, Any]]:
        def measure(impl: Impl) -> dict[str, Any]:
            _check_scheduler(impl.module, urgencies)
            sched = _scheduler(impl.module, urgencies)
            seconds, number = time_stmt(_unrolled("n()", 20), {"n": sched.next}, settings, 20)
            return {"ns": _round(seconds * 1e9), "number": number}
        return measure

    for case_id, (description, urgencies) in SCHEDULER_CASES.items():
        case(f"scheduler_{case_id}", description, "ns per call", next_case(urgencies), "ns")

    def cycle(impl: Impl) -> dict[str, Any]:
        _check_cycle(impl.module, CYCLE_URGENCIES)
        sched = _scheduler(impl.module, CYCLE_URGENCIES)
        seconds, number = time_stmt(_unrolled("i = n(); b(i); u(i)", 10),
                                    {"n": sched.next, "b": sched.block, "u": sched.unblock},
                                    settings, 10)
        return {"ns": _round(seconds * 1e9), "number": number}

    case("scheduler_serve_cycle_1000_mixed",
         "one serve cycle i = next(); block(i); unblock(i) with 1000 unblocked streams over "
         "urgencies 1..255 (the carrier drains and refills a stream)", "ns per cycle", cycle, "ns")

    return {
        "benchmark": "framing",
        "units": "see each case's unit: time per call or per frame, min over repeats",
        "environment": environment(),
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


def _get(cases: dict[str, Any], case_id: str, impl: str, key: str) -> float | None:
    row = cases[case_id]["results"].get(impl) or {}
    value: float | None = row.get(key)
    return value


def _targets(cases: dict[str, Any]) -> list[dict[str, Any]]:
    """The brief's targets, for reading only: benchmarks never gate anything."""
    per_frame = _get(cases, "decode_200k_40b_64kib_chunks", "cython", "us_per_frame")
    linear = {impl: _get(cases, "decode_16mib_1200b_pieces", impl, "second_half_over_first_half")
              for impl in IMPL_IDS}
    nexts = {k: _get(cases, f"scheduler_{k}", "cython", "ns") for k in SCHEDULER_CASES}
    one, many = nexts["next_1"], nexts["next_1000"]
    return [
        {"target": "compiled decode of 200k 40-byte frames (64 KiB chunks) well under 1 us "
                   "per frame (aim 0.1-0.2 us)",
         "value_us_per_frame": per_frame,
         "met": None if per_frame is None else per_frame < 1.0},
        {"target": "a 16 MiB frame in 1200-byte pieces decodes in linear time: the second "
                   "half's feeds cost about what the first half's do (quadratic: ~3x)",
         "second_half_over_first_half": linear,
         "met": None if linear["cython"] is None else linear["cython"] < 1.5},
        {"target": "compiled SendScheduler.next() cost does not grow with the number of "
                   "streams (1000 streams within 2x of 1 stream)",
         "values_ns": nexts,
         "met": None if one is None or many is None else many < 2 * one},
    ]
