"""External Term Format codec benchmark.

quicdist's two codec paths (the compiled ``quicdist._fastpath`` and its
pure-Python twin ``quicdist._fastpath_py``) are timed side by side with three
other Python ETF codecs (erlpack, erlang_py, erlastic) on the same Erlang
terms. ``run()`` returns one JSON-serialisable document; ``python -m bench
etf`` prints it. ``bench/test_bench_etf.py`` times the same cases with
pytest-benchmark.

Every implementation is checked once per case before it is timed, so a fast
wrong answer cannot look like a win:

* quicdist paths: ``encode(x)`` equals the reference encoding byte for byte,
  and ``decode`` of it gives back the term (strict, type-aware comparison).
* alternatives: what the library encodes must decode, with the reference
  decoder, to the Erlang term it was given (after any substitution listed in
  its notes); what the library decodes must be the same Erlang term the
  reference decoder reads from the same bytes.

The reference ("oracle") is the pure-Python twin, the project's executable
specification.
"""

from __future__ import annotations

import gc
import importlib
import importlib.metadata
import math
import os
import platform
import re
import subprocess
import sys
import timeit
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import quicdist
from quicdist import _accel, _fastpath_py as oracle
from quicdist.terms import Atom, Pid, Reference


ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20
NODE = "a@127.0.0.1"

QUICDIST_IMPLS = ("cython", "python")
ALTERNATIVES = ("erlpack", "erlang_py", "erlastic")
IMPL_IDS = QUICDIST_IMPLS + ALTERNATIVES
OPS = ("encode", "decode")


class CorrectnessError(AssertionError):
    """A quicdist path produced a wrong result: a bug, never a benchmark outcome."""


class Unsupported(Exception):
    """The library cannot represent (or cannot read) the case at all."""


# ---------------------------------------------------------------------------
# Cases


def control_term() -> Any:
    """(a) The control message of a plain send: ``{6, Pid, '', echo}``."""
    return (6, Pid(NODE, 84, 0, 1700000000), Atom(""), Atom("echo"))


def mixed_term() -> Any:
    """(b) About 1 KiB of everything a typical message carries."""
    pid = Pid(NODE, 84, 0, 1700000000)
    ref = Reference(NODE, 1700000000, (158_842, 3_145_728_001, 2_716_057_635))
    return (
        Atom("$gen_call"),
        (pid, ref),
        {
            Atom("id"): 123_456_789,
            Atom("neg"): -42,
            Atom("small"): 7,
            Atom("big"): 2**100 + 12_345,
            Atom("ratio"): 1 / 3,
            Atom("temperature"): -273.15,
            Atom("enabled"): True,
            Atom("name"): b"quicdist",
            Atom("payload"): bytes(range(48)),
            Atom("title"): "h\u00e9llo w\u00f6rld",
            Atom("flags"): [Atom("active"), Atom("linked"), Atom("trap_exit"), False],
            Atom("path"): list(b"/var/lib/quicdist/node.cookie"),
            Atom("history"): [(i, i / 4, Atom("ok"), b"evt") for i in range(16)],
            Atom("nested"): {
                Atom("depth"): 2,
                Atom("owner"): pid,
                Atom("pairs"): [(Atom("key"), b"value-%d" % i) for i in range(8)],
            },
        },
        [1, 2, 3, 255, 256, 65_536, -1, 2**40],
    )


def binary_term() -> Any:
    """(c) A 1 MiB binary."""
    return bytes(range(256)) * (MiB // 256)


def int_list_term() -> Any:
    """(d) ``list(range(10000))``: SMALL_INTEGER_EXT and INTEGER_EXT elements."""
    return list(range(10_000))


def byte_list_term() -> Any:
    """(d2) 10k ints in 0..255, which OTP (and quicdist) encode as STRING_EXT."""
    return [(i * 7) & 0xFF for i in range(10_000)]


@dataclass(frozen=True)
class Case:
    id: str
    label: str
    description: str
    make: Callable[[], Any]


CASES: dict[str, Case] = {
    c.id: c
    for c in (
        Case("a_control", "(a)", "control tuple {6, Pid, '', echo} of a send", control_term),
        Case("b_mixed", "(b)", "~1 KiB mixed term: nested tuple/list/map of atoms, ints "
             "(incl. a bignum), floats, short binaries, a pid, a reference, a string",
             mixed_term),
        Case("c_binary_1mib", "(c)", "a 1 MiB binary (bytes)", binary_term),
        Case("d_int_list", "(d)", "list(range(10000))", int_list_term),
        Case("d2_byte_list", "(d2)", "list of 10k ints in 0..255 (STRING_EXT)", byte_list_term),
    )
}
CASE_IDS = tuple(CASES)


# ---------------------------------------------------------------------------
# Strict comparison of quicdist-typed terms (True is not 1, Atom is not str)


def strict_equal(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            strict_equal(ka, kb) and strict_equal(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# ---------------------------------------------------------------------------
# Implementations


@dataclass
class Impl:
    id: str
    kind: str
    available: bool
    reason: str | None = None
    version: str | None = None
    module: str | None = None
    encode: Callable[[Any], bytes] | None = None
    decode: Callable[[bytes], Any] | None = None
    # quicdist term -> (the library's nearest representation, the Erlang term
    # that representation stands for, as quicdist types); appends notes.
    convert: Callable[[Any, list[str]], tuple[Any, Any]] | None = None
    # (library-decoded value, reference-decoded term, notes) -> same Erlang term?
    same: Callable[[Any, Any, list[str]], bool] | None = None


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _load_cython() -> Impl:
    kind = "quicdist, compiled Cython (quicdist._fastpath)"
    try:
        mod = importlib.import_module("quicdist._fastpath")
    except ImportError as exc:
        return Impl("cython", kind, False,
                    reason=f"quicdist._fastpath is not built or does not import ({exc}); "
                    "build it with `python setup.py build_ext --inplace`")
    return Impl("cython", kind, True, version=quicdist.__version__,
                module=getattr(mod, "__file__", None), encode=mod.encode, decode=mod.decode)


def _load_python() -> Impl:
    return Impl("python", "quicdist, pure-Python twin (quicdist._fastpath_py)", True,
                version=quicdist.__version__, module=oracle.__file__,
                encode=oracle.encode, decode=oracle.decode)


def _is_small_list(value: Any) -> bool:
    return all(type(x) is int and 0 <= x <= 255 for x in value)


def _load_erlpack() -> Impl:
    kind = "erlpack (Discord; C++/Cython)"
    try:
        import erlpack
    except ImportError as exc:
        return Impl("erlpack", kind, False, reason=f"not installed ({exc})")

    def convert(term: Any, notes: list[str]) -> tuple[Any, Any]:
        if type(term) is Atom:
            return erlpack.Atom(str(term)), term
        if isinstance(term, bool) or isinstance(term, float):
            return term, term
        if isinstance(term, int):
            if -(2**63) <= term < 2**64:
                return term, term
            sub = 2**64 - 1 if term > 0 else -(2**63)
            _note(notes, f"erlpack cannot encode integers beyond 64 bits (OverflowError): "
                  f"{term} was replaced by {sub}, still an Erlang bignum")
            return sub, sub
        if isinstance(term, str):
            return term, term.encode("utf-8")
        if isinstance(term, bytes):
            return term, term
        if isinstance(term, (list, tuple)):
            pairs = [convert(x, notes) for x in term]
            lib = [p[0] for p in pairs]
            ref = [p[1] for p in pairs]
            return (lib, ref) if isinstance(term, list) else (tuple(lib), tuple(ref))
        if isinstance(term, dict):
            lib_d, ref_d = {}, {}
            for k, v in term.items():
                lk, rk = convert(k, notes)
                lv, rv = convert(v, notes)
                lib_d[lk], ref_d[rk] = lv, rv
            return lib_d, ref_d
        if isinstance(term, Pid):
            _note(notes, "erlpack cannot encode pids (NotImplementedError) nor decode "
                  "NEW_PID_EXT: each pid was replaced by the tuple "
                  "{Node, Id, Serial, Creation}")
            sub = (Atom(term.node), term.id, term.serial, term.creation)
            return convert(sub, notes)
        if isinstance(term, Reference):
            _note(notes, "erlpack cannot encode references nor decode NEWER_REFERENCE_EXT: "
                  "each reference was replaced by the tuple {Node, Creation, Id1, Id2, Id3}")
            sub = (Atom(term.node), term.creation, *term.ids)
            return convert(sub, notes)
        raise Unsupported(f"erlpack has no representation for {type(term).__name__}")

    def same(value: Any, ref: Any, notes: list[str]) -> bool:
        return _same_term("erlpack", value, ref, notes, atom_types=(erlpack.Atom,),
                          pid_types=(), ref_types=())

    return Impl("erlpack", kind, True, version=_dist_version("erlpack"),
                module=erlpack.__file__, encode=erlpack.pack, decode=erlpack.unpack,
                convert=convert, same=same)


def _load_erlang_py() -> Impl:
    kind = "erlang_py (pure Python)"
    try:
        import erlang
    except ImportError as exc:
        return Impl("erlang_py", kind, False, reason=f"not installed ({exc})")

    def u32(n: int) -> bytes:
        return n.to_bytes(4, "big")

    def convert(term: Any, notes: list[str]) -> tuple[Any, Any]:
        if type(term) is Atom:
            return erlang.OtpErlangAtom(str(term)), term
        if isinstance(term, (bool, int, float)):
            return term, term
        if isinstance(term, str):
            _note(notes, "erlang_py turns a Python str into a charlist: str values were "
                  "passed as OtpErlangBinary(utf-8 bytes), the same binary")
            return erlang.OtpErlangBinary(term.encode("utf-8")), term.encode("utf-8")
        if isinstance(term, bytes):
            _note(notes, "erlang_py turns Python bytes into a charlist (STRING_EXT): "
                  "binaries were passed as OtpErlangBinary(bytes)")
            return erlang.OtpErlangBinary(term), term
        if isinstance(term, list):
            if term and _is_small_list(term):
                _note(notes, "erlang_py writes a list of small ints as LIST_EXT, not "
                      "STRING_EXT (the same Erlang term, 2 bytes more per element)")
            pairs = [convert(x, notes) for x in term]
            return [p[0] for p in pairs], [p[1] for p in pairs]
        if isinstance(term, tuple):
            pairs = [convert(x, notes) for x in term]
            return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)
        if isinstance(term, dict):
            lib_d, ref_d = {}, {}
            for k, v in term.items():
                lk, rk = convert(k, notes)
                lv, rv = convert(v, notes)
                lib_d[lk], ref_d[rk] = lv, rv
            return lib_d, ref_d
        if isinstance(term, Pid):
            lib = erlang.OtpErlangPid(erlang.OtpErlangAtom(str(term.node)), u32(term.id),
                                      u32(term.serial), u32(term.creation))
            return lib, term
        if isinstance(term, Reference):
            lib = erlang.OtpErlangReference(erlang.OtpErlangAtom(str(term.node)),
                                            b"".join(u32(i) for i in term.ids),
                                            u32(term.creation))
            return lib, term
        raise Unsupported(f"erlang_py has no representation for {type(term).__name__}")

    def same(value: Any, ref: Any, notes: list[str]) -> bool:
        return _same_term("erlang_py", value, ref, notes,
                          atom_types=(erlang.OtpErlangAtom,),
                          pid_types=(erlang.OtpErlangPid,),
                          ref_types=(erlang.OtpErlangReference,),
                          binary_type=erlang.OtpErlangBinary, none_is_undefined=True)

    return Impl("erlang_py", kind, True, version=_dist_version("erlang_py"),
                module=erlang.__file__, encode=erlang.term_to_binary,
                decode=erlang.binary_to_term, convert=convert, same=same)


def _load_erlastic() -> Impl:
    kind = "erlastic (pure Python)"
    try:
        import erlastic
    except ImportError as exc:
        return Impl("erlastic", kind, False, reason=f"not installed ({exc})")

    def convert(term: Any, notes: list[str]) -> tuple[Any, Any]:
        if type(term) is Atom:
            try:
                str(term).encode("latin-1")
            except UnicodeEncodeError:
                raise Unsupported("erlastic writes atoms as latin-1 ATOM_EXT and cannot "
                                  f"represent {term!r}") from None
            return erlastic.Atom(str(term)), term
        if isinstance(term, (bool, int)):
            return term, term
        if isinstance(term, float):
            _note(notes, "erlastic writes floats as the old 31-byte FLOAT_EXT")
            return term, term
        if isinstance(term, str):
            return term, term.encode("utf-8")
        if isinstance(term, bytes):
            return term, term
        if isinstance(term, (list, tuple)):
            pairs = [convert(x, notes) for x in term]
            lib = [p[0] for p in pairs]
            ref = [p[1] for p in pairs]
            return (lib, ref) if isinstance(term, list) else (tuple(lib), tuple(ref))
        if isinstance(term, dict):
            _note(notes, "erlastic has no maps (neither MAP_EXT encode nor decode): each "
                  "map was replaced by the proplist [{Key, Value}] of its pairs")
            return convert([(k, v) for k, v in term.items()], notes)
        if isinstance(term, Pid):
            creation = term.creation & 0xFF
            if creation != term.creation:
                _note(notes, f"erlastic only writes PID_EXT (8-bit creation): pid creation "
                      f"{term.creation} became {creation} (its low byte)")
            lib = erlastic.PID(erlastic.Atom(str(term.node)), term.id, term.serial, creation)
            return lib, Pid(term.node, term.id, term.serial, creation)
        if isinstance(term, Reference):
            creation = term.creation & 0xFF
            if creation != term.creation:
                _note(notes, f"erlastic only writes NEW_REFERENCE_EXT (8-bit creation): "
                      f"reference creation {term.creation} became {creation}")
            lib = erlastic.Reference(erlastic.Atom(str(term.node)), term.ids, creation)
            return lib, Reference(term.node, creation, term.ids)
        raise Unsupported(f"erlastic has no representation for {type(term).__name__}")

    def same(value: Any, ref: Any, notes: list[str]) -> bool:
        return _same_term("erlastic", value, ref, notes, atom_types=(erlastic.Atom,),
                          pid_types=(erlastic.PID,), ref_types=(erlastic.Reference,))

    return Impl("erlastic", kind, True, version=_dist_version("erlastic"),
                module=erlastic.__file__, encode=erlastic.encode, decode=erlastic.decode,
                convert=convert, same=same)


_LOADERS: dict[str, Callable[[], Impl]] = {
    "cython": _load_cython,
    "python": _load_python,
    "erlpack": _load_erlpack,
    "erlang_py": _load_erlang_py,
    "erlastic": _load_erlastic,
}
_impl_cache: dict[str, Impl] = {}


def get_impl(impl_id: str) -> Impl:
    """The implementation ``impl_id`` (imported on first use; may be unavailable)."""
    if impl_id not in _impl_cache:
        _impl_cache[impl_id] = _LOADERS[impl_id]()
    return _impl_cache[impl_id]


def _note(notes: list[str], text: str) -> None:
    if text not in notes:
        notes.append(text)


def _atom_name(value: Any) -> str:
    name = getattr(value, "value", value)  # OtpErlangAtom keeps it in .value
    if isinstance(name, bytes):
        name = name.decode("latin-1")
    return str(name)


def _u(value: Any) -> int:
    return int.from_bytes(value, "big") if isinstance(value, bytes) else int(value)


def _same_term(lib: str, value: Any, ref: Any, notes: list[str], *,
               atom_types: tuple[type, ...], pid_types: tuple[type, ...],
               ref_types: tuple[type, ...],
               binary_type: type | None = None, none_is_undefined: bool = False) -> bool:
    """Does a library's decoded ``value`` stand for the Erlang term ``ref``?

    ``ref`` is what the reference decoder read from the same bytes. The
    libraries' documented mappings are accepted (a STRING_EXT read as
    ``bytes``, ``undefined`` read as ``None``, a pid as the library's pid
    class), nothing looser: ``True`` is not ``1`` and an atom is not a binary.
    Each looser mapping it relied on is added to ``notes``.
    """
    def same(v: Any, r: Any) -> bool:
        if isinstance(r, bool):
            return v is r
        if type(r) is Atom:
            if none_is_undefined and v is None and r == "undefined":
                _note(notes, f"{lib} reads the atom undefined as None")
                return True
            return isinstance(v, atom_types) and _atom_name(v) == r
        if isinstance(r, int):
            return type(v) is int and v == r
        if isinstance(r, float):
            return type(v) is float and v == r
        if isinstance(r, bytes):
            if binary_type is not None and isinstance(v, binary_type):
                return getattr(v, "bits", 8) == 8 and bytes(v.value) == r
            return isinstance(v, (bytes, bytearray, memoryview)) and bytes(v) == r
        if isinstance(r, list):
            if isinstance(v, (bytes, bytearray)) and list(v) == r:
                _note(notes, f"{lib} reads STRING_EXT as bytes, not as a list of ints")
                return True
            return (type(v) is list and len(v) == len(r)
                    and all(same(x, y) for x, y in zip(v, r, strict=True)))
        if isinstance(r, tuple):
            return (type(v) is tuple and len(v) == len(r)
                    and all(same(x, y) for x, y in zip(v, r, strict=True)))
        if isinstance(r, dict):
            if not isinstance(v, dict) or len(v) != len(r):
                return False
            for rk, rv in r.items():
                match = [lk for lk in v if same(lk, rk)]
                if len(match) != 1 or not same(v[match[0]], rv):
                    return False
            return True
        if isinstance(r, Pid):
            if not isinstance(v, pid_types):
                return False
            pid_id = getattr(v, "pid_id", None)
            pid_id = v.id if pid_id is None else pid_id
            return (_atom_name(v.node) == r.node and _u(pid_id) == r.id
                    and _u(v.serial) == r.serial and _u(v.creation) == r.creation)
        if isinstance(r, Reference):
            if not isinstance(v, ref_types):
                return False
            ids = getattr(v, "ref_id", None)
            if ids is None:
                raw = v.id
                ids = tuple(_u(raw[i:i + 4]) for i in range(0, len(raw), 4))
            return (_atom_name(v.node) == r.node and tuple(ids) == r.ids
                    and _u(v.creation) == r.creation)
        return False

    return same(value, ref)


# ---------------------------------------------------------------------------
# Preparing one (implementation, case): inputs, checks, notes


@dataclass
class Prepared:
    impl_id: str
    case_id: str
    encode_input: Any = None
    decode_input: bytes | None = None
    encoded_size: int | None = None      # size of what this implementation encodes
    encode_error: str | None = None      # why encode is not measured (null)
    decode_error: str | None = None      # why decode is not measured (null)
    notes: list[str] = field(default_factory=list)


_case_cache: dict[str, tuple[Any, bytes, Any]] = {}


def case_data(case_id: str) -> tuple[Any, bytes, Any]:
    """``(term, canonical encoding, canonical decoded form)`` of a case."""
    if case_id not in _case_cache:
        term = CASES[case_id].make()
        canonical = oracle.encode(term)
        _case_cache[case_id] = (term, canonical, oracle.decode(canonical))
    return _case_cache[case_id]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def prepare(impl: Impl, case_id: str) -> Prepared:
    """Build the inputs for ``impl`` on ``case_id`` and check its answers once.

    Raises CorrectnessError when a quicdist path is wrong. An alternative
    that cannot represent the case, or answers wrongly, gets a reason in
    ``encode_error`` / ``decode_error`` and is not timed.
    """
    term, canonical, expected = case_data(case_id)
    prep = Prepared(impl.id, case_id)
    if not impl.available:
        prep.encode_error = prep.decode_error = f"unavailable: {impl.reason}"
        return prep
    assert impl.encode is not None and impl.decode is not None
    if impl.id in QUICDIST_IMPLS:
        _check_quicdist(impl, term, canonical, expected)
        prep.encode_input, prep.decode_input = term, canonical
        prep.encoded_size = len(canonical)
        return prep

    assert impl.convert is not None and impl.same is not None
    try:
        lib_term, represented = impl.convert(term, prep.notes)
    except Unsupported as exc:
        prep.encode_error = prep.decode_error = f"cannot represent the case: {exc}"
        return prep

    # Encode: what the library writes must read back as the term it was given.
    own: bytes | None = None
    try:
        own = impl.encode(lib_term)
        got = oracle.decode(own)
    except Exception as exc:
        prep.encode_error = f"encode failed: {_describe(exc)}"
    else:
        if strict_equal(got, represented):
            prep.encode_input, prep.encoded_size = lib_term, len(own)
        else:
            prep.encode_error = (f"output check failed: its encoding reads back as "
                                 f"{_short(got)}, not {_short(represented)}")

    # Decode: prefer the canonical OTP encoding of the case itself, then of
    # the substituted term, then the library's own dialect.
    candidates: list[tuple[str, bytes]] = [("the canonical OTP encoding of the case", canonical)]
    sub_canonical = oracle.encode(represented)
    if sub_canonical != canonical:
        candidates.append(("the canonical OTP encoding of the substituted term",
                           sub_canonical))
    if own is not None and own not in (canonical, sub_canonical):
        candidates.append(("the library's own encoding of the substituted term", own))
    failures: list[str] = []
    for label, data in candidates:
        try:
            value = impl.decode(data)
        except Exception as exc:
            failures.append(f"{label}: {_describe(exc)}")
            continue
        mapping_notes: list[str] = []
        if impl.same(value, oracle.decode(data), mapping_notes):
            prep.decode_input = data
            for text in mapping_notes:
                _note(prep.notes, text)
            if failures:
                _note(prep.notes, f"decode input: {label} ({len(data)} bytes); it cannot "
                      "read " + "; nor ".join(failures))
            break
        failures.append(f"{label}: read as {_short(value)}")
    else:
        prep.decode_error = "no input it decodes correctly: " + "; ".join(failures)
    return prep


def _check_quicdist(impl: Impl, term: Any, canonical: bytes, expected: Any) -> None:
    assert impl.encode is not None and impl.decode is not None
    try:
        data = impl.encode(term)
    except Exception as exc:
        raise CorrectnessError(f"{impl.id}: encode raised {_describe(exc)}") from exc
    if data != canonical:
        raise CorrectnessError(f"{impl.id}: encode differs from the reference encoding "
                               f"({len(data)} vs {len(canonical)} bytes)")
    try:
        back = impl.decode(data)
    except Exception as exc:
        raise CorrectnessError(f"{impl.id}: decode raised {_describe(exc)}") from exc
    if not strict_equal(back, expected):
        raise CorrectnessError(f"{impl.id}: decode(encode(x)) is {_short(back)}, "
                               f"expected {_short(expected)}")


# ---------------------------------------------------------------------------
# Timing


@dataclass(frozen=True)
class Settings:
    repeats: int
    target: float  # seconds per repeat


DEFAULT = Settings(repeats=5, target=0.15)
QUICK = Settings(repeats=2, target=0.01)


def time_per_op(fn: Callable[[Any], Any], arg: Any, settings: Settings) -> tuple[float, int]:
    """Min over repeats of timeit, in µs per call, and the number of calls per repeat.

    ``number`` is chosen so one repeat takes about ``settings.target`` seconds
    (one call per repeat when a single call is already longer).
    """
    timer = timeit.Timer("f(x)", globals={"f": fn, "x": arg})
    timer.timeit(1)  # warm-up: first-touch page faults, caches
    number, elapsed = 1, timer.timeit(1)
    while elapsed < settings.target / 10 and number < 10**9:
        number *= 10
        elapsed = timer.timeit(number)
    if elapsed > 0:  # scale to the target, check once at full size, rescale if far off
        scaled = max(1, round(number * settings.target / elapsed))
        if scaled != number:
            number, elapsed = scaled, timer.timeit(scaled)
            if elapsed > 0 and not 0.5 <= elapsed / settings.target <= 2:
                number = max(1, round(number * settings.target / elapsed))
    best = min(timer.repeat(repeat=settings.repeats, number=number))
    return best / number * 1e6, number


# ---------------------------------------------------------------------------
# Copies of a 1 MiB binary (tracemalloc)


def measure_copies(impl: Impl) -> dict[str, Any]:
    """Peak traced allocation while encoding 1 MiB of bytes, and decoding it."""
    assert impl.encode is not None and impl.decode is not None
    data = binary_term()
    encoded = impl.encode(data)
    if impl.decode(encoded) != data:  # also warms up any caches
        raise CorrectnessError(f"{impl.id}: the 1 MiB binary does not round-trip")
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        out = impl.encode(data)
        enc_peak = tracemalloc.get_traced_memory()[1] - base
        del out
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        term = impl.decode(encoded)
        dec_peak = tracemalloc.get_traced_memory()[1] - base
        del term
    finally:
        tracemalloc.stop()
    return {
        "encode_peak_bytes": enc_peak,
        "encode_copies": round(enc_peak / MiB),
        "decode_peak_bytes": dec_peak,
        "decode_copies": round(dec_peak / MiB),
    }


def _untraced_alloc_warning() -> str | None:
    pyx = ROOT / "quicdist" / "_fastpath.pyx"
    try:
        text = pyx.read_text(encoding="utf-8")
    except OSError:
        return None
    if re.search(r"(?<![\w.])(malloc|calloc|realloc)\s*\(", text):
        return ("quicdist/_fastpath.pyx calls libc malloc/calloc/realloc: those "
                "allocations are invisible to tracemalloc, so its copy counts may be low")
    return None


# ---------------------------------------------------------------------------
# Environment


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def environment() -> dict[str, Any]:
    cython = get_impl("cython")
    status = _git("status", "--porcelain", "--untracked-files=no")
    try:
        usable_cpus: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable_cpus = None
    return {
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "python_build": sys.version,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_count_usable": usable_cpus,
        "git_head": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "quicdist_version": quicdist.__version__,
        "compiled_module_available": cython.available,
        "compiled_module": cython.module if cython.available else cython.reason,
        "quicdist_default_path": "cython" if _accel.USING_EXTENSION else "python",
        "env": {k: os.environ.get(k) for k in ("QUICDIST_NO_EXTENSIONS",
                                               "QUICDIST_REQUIRE_EXTENSIONS")},
        "alternatives": {name: _dist_version(name) for name in ALTERNATIVES},
    }


# ---------------------------------------------------------------------------
# The whole run


def _ratio(slow: float | None, fast: float | None) -> float | None:
    if slow is None or fast is None or fast <= 0:
        return None
    return round(slow / fast, 2)


def _round_us(us: float) -> float:
    return float(f"{us:.4g}")


def _progress(enabled: bool, text: str) -> None:
    if enabled:
        print(text, file=sys.stderr, flush=True)


def run(impl_ids: tuple[str, ...] = IMPL_IDS, quick: bool = False,
        settings: Settings | None = None, progress: bool = False) -> dict[str, Any]:
    """Run the benchmark and return the JSON document (see bench/README.md)."""
    settings = settings or (QUICK if quick else DEFAULT)
    impls = [get_impl(i) for i in impl_ids]
    errors: list[str] = []
    cases_out: dict[str, Any] = {}

    for case_id, case in CASES.items():
        _, canonical, _ = case_data(case_id)
        results: dict[str, Any] = {}
        for impl in impls:
            row: dict[str, Any] = {"encode_us": None, "decode_us": None}
            try:
                prep = prepare(impl, case_id)
            except CorrectnessError as exc:
                errors.append(f"{case_id}: {exc}")
                row["error"] = f"correctness check failed: {exc}"
                results[impl.id] = row
                continue
            row["encoded_size"] = prep.encoded_size
            for op in OPS:
                reason = prep.encode_error if op == "encode" else prep.decode_error
                if reason is not None:
                    row[f"{op}_null_reason"] = reason
                    continue
                fn = impl.encode if op == "encode" else impl.decode
                arg = prep.encode_input if op == "encode" else prep.decode_input
                assert fn is not None
                _progress(progress, f"etf {case_id} {impl.id} {op}")
                us, number = time_per_op(fn, arg, settings)
                row[f"{op}_us"] = _round_us(us)
                row[f"{op}_number"] = number
            if prep.notes:
                row["notes"] = prep.notes
            results[impl.id] = row
        cases_out[case_id] = {
            "label": case.label,
            "description": case.description,
            "encoded_size": len(canonical),
            "results": results,
            "ratios": _ratios(results),
        }

    copies: dict[str, Any] = {"binary_size": MiB}
    for impl in impls:
        if impl.id not in QUICDIST_IMPLS:
            continue
        if not impl.available:
            copies[impl.id] = {"available": False, "reason": impl.reason}
            continue
        _progress(progress, f"etf copies {impl.id}")
        try:
            copies[impl.id] = measure_copies(impl)
        except CorrectnessError as exc:
            errors.append(f"copies: {exc}")
            copies[impl.id] = {"error": str(exc)}
    copies["method"] = ("tracemalloc peak of traced allocations during one call, minus what "
                        "was allocated before it; copies = round(peak / 1 MiB). The returned "
                        "bytes object is one copy of the binary.")
    warning = _untraced_alloc_warning()
    if warning:
        copies["warning"] = warning

    doc: dict[str, Any] = {
        "benchmark": "etf",
        "units": "microseconds per call (min over repeats)",
        "environment": environment(),
        "settings": {
            "quick": quick,
            "repeats": settings.repeats,
            "target_seconds_per_repeat": settings.target,
            "implementations": {
                impl.id: {
                    "kind": impl.kind,
                    "available": impl.available,
                    "version": impl.version,
                    **({"reason": impl.reason} if not impl.available else {}),
                }
                for impl in impls
            },
        },
        "cases": cases_out,
        "copies": copies,
        "targets": _targets(cases_out, copies),
        "errors": errors,
    }
    return doc


def _ratios(results: dict[str, Any]) -> dict[str, Any]:
    """cython vs pure (speedup) and cython vs the fastest alternative, per op."""
    out: dict[str, Any] = {}
    cy = results.get("cython", {})
    py = results.get("python", {})
    for op in OPS:
        key = f"{op}_us"
        out[f"{op}_cython_speedup_vs_python"] = _ratio(py.get(key), cy.get(key))
        alts = [(results[a][key], a) for a in ALTERNATIVES
                if a in results and results[a].get(key) is not None]
        best_us, best = min(alts) if alts else (None, None)
        out[f"{op}_best_alternative"] = best
        out[f"{op}_cython_speedup_vs_best_alternative"] = _ratio(best_us, cy.get(key))
    return out


def _targets(cases: dict[str, Any], copies: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, for reading only: benchmarks never gate anything."""
    def us(case: str, impl: str, op: str) -> float | None:
        v: float | None = cases[case]["results"].get(impl, {}).get(f"{op}_us")
        return v

    def all_met(values: list[Any], ok: Callable[[Any], bool]) -> bool | None:
        return None if any(v is None for v in values) else all(ok(v) for v in values)

    a = {op: us("a_control", "cython", op) for op in OPS}
    speed = {f"{c}_{op}": cases[c]["ratios"][f"{op}_cython_speedup_vs_python"]
             for c in ("a_control", "b_mixed") for op in OPS}
    vs_alt = {f"{c}_{op}": cases[c]["ratios"][f"{op}_cython_speedup_vs_best_alternative"]
              for c in ("a_control", "b_mixed", "d_int_list") for op in OPS}
    cy_copies = copies.get("cython", {})
    c = {"encode_copies": cy_copies.get("encode_copies"),
         "decode_copies": cy_copies.get("decode_copies")}
    return [
        {"target": "fast path encodes and decodes (a) in under 1 us",
         "values_us": a, "met": all_met(list(a.values()), lambda v: v < 1.0)},
        {"target": "fast path is >= 10x its pure twin on (a) and (b)",
         "speedups": speed, "met": all_met(list(speed.values()), lambda v: v >= 10)},
        {"target": "fast path is faster than every alternative on (a), (b) and (d)",
         "speedups_vs_best_alternative": vs_alt,
         "met": all_met(list(vs_alt.values()), lambda v: v > 1)},
        {"target": "(c) fast path copies the binary at most once (encode and decode)",
         "copies": c, "met": all_met(list(c.values()), lambda v: v <= 1)},
    ]
