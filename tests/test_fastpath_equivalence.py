"""Differential tests: the Cython fast path against its pure-Python twin.

``quicdist._fastpath_py`` is the specification; ``quicdist._fastpath`` must
give byte-identical encodings, equal decoded terms (same types, down to the
leaves), and on bad input the same exception class, message and offset.

Hypothesis drives both implementations with the same inputs: generated terms,
valid encodings mutated byte by byte, random bytes, concatenated terms read at
random offsets, and values that cannot be encoded. The default run is kept
short; QUICDIST_FUZZ_EXAMPLES=N runs N examples per property instead (for
long runs add ``--timeout=0 -o faulthandler_timeout=0``).

The differential tests need the compiled module and skip without it; they
compare the modules directly, so they run the same whichever one
quicdist._accel picked.
"""

from __future__ import annotations

import array
import collections
import enum
import os
import struct
import sys
import types
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import quicdist
from quicdist import _accel, _constants
from quicdist.errors import ConfigurationError, EncodeError
from quicdist.terms import (
    Atom,
    BitBinary,
    ExportFun,
    ImproperList,
    LocalFun,
    Map,
    Pid,
    Port,
    Reference,
)
from tests.conftest import COMPILED, PURE


needs_compiled = pytest.mark.skipif(COMPILED is None, reason="extension not built")

# The recursive term strategy has a long repr, which Hypothesis warns about
# (once: it is cached) when it notes a retried draw.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning"
)

EXAMPLES = int(os.environ.get("QUICDIST_FUZZ_EXAMPLES", "0") or 0)


def examples(default: int) -> settings:
    """Hypothesis settings: ``default`` examples, or QUICDIST_FUZZ_EXAMPLES."""
    return settings(
        max_examples=EXAMPLES or default,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# ---------------------------------------------------------------------------
# Which implementation is active


def test_required_extension_is_active():
    if os.environ.get("QUICDIST_REQUIRE_EXTENSIONS", "") in ("", "0"):
        pytest.skip("QUICDIST_REQUIRE_EXTENSIONS is not set")
    from quicdist import _fastpath

    assert _accel.USING_EXTENSION is True
    assert quicdist.encode is _fastpath.encode
    assert quicdist.decode is _fastpath.decode
    assert quicdist.decode_from is _fastpath.decode_from


def test_no_extensions_forces_the_twin():
    if os.environ.get("QUICDIST_NO_EXTENSIONS", "") in ("", "0"):
        pytest.skip("QUICDIST_NO_EXTENSIONS is not set")
    assert _accel.USING_EXTENSION is False
    assert quicdist.encode is PURE.encode


@needs_compiled
def test_same_public_names():
    assert COMPILED.__all__ == PURE.__all__
    for name in PURE.__all__:
        assert callable(getattr(COMPILED, name))


@needs_compiled
def test_c_constants_match_python_constants():
    expected = {
        name: value
        for name, value in vars(_constants).items()
        if name.isupper() and isinstance(value, int)
    }
    assert COMPILED._c_constants() == expected


# ---------------------------------------------------------------------------
# Comparing outcomes


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (floats by bits).

    Iterative: decoded terms nest up to MAX_DEPTH levels.
    """
    pending = [(a, b)]
    while pending:
        x, y = pending.pop()
        if type(x) is not type(y):
            return False
        t = type(x)
        if t is float:
            if struct.pack(">d", x) != struct.pack(">d", y):
                return False
        elif t in (tuple, list):
            if len(x) != len(y):
                return False
            pending.extend(zip(x, y, strict=True))
        elif t in (dict, Map):
            if len(x) != len(y):
                return False
            pending.extend(zip(list(x.items()), list(y.items()), strict=True))
        elif t in (Pid, Port, Reference, BitBinary, ExportFun, ImproperList):
            pending.append((x._key, y._key))
        elif t is LocalFun:
            if x.raw != y.raw:
                return False
            pending.append(((x.module, x.pid, x.free_vars), (y.module, y.pid, y.free_vars)))
        elif x != y:
            return False
    return True


def outcome(fn: Any, *args: Any) -> tuple[Any, ...]:
    try:
        return ("ok", fn(*args))
    except Exception as exc:  # the exception is the outcome compared
        return ("error", type(exc), str(exc), getattr(exc, "offset", None))


def assert_same_outcome(fn_name: str, *args: Any) -> tuple[Any, ...]:
    got = outcome(getattr(COMPILED, fn_name), *args)
    want = outcome(getattr(PURE, fn_name), *args)
    if want[0] == "ok" and got[0] == "ok":
        assert same(got[1], want[1]), (args, got[1], want[1])
    else:
        assert got == want, args
    return want


# ---------------------------------------------------------------------------
# Term strategies

u32 = st.integers(0, 2**32 - 1)
atom_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=255)
short_atom_text = st.one_of(
    st.sampled_from(["", "ok", "error", "a@127.0.0.1", "nonode@nohost", "true", "false",
                     "undefined", "h\u00e9", "\u65e5\u672c"]),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=12),
)
atoms = st.one_of(short_atom_text, atom_text).map(Atom)
big_ints = st.builds(
    lambda magnitude, negative: -magnitude if negative else magnitude,
    st.binary(min_size=1, max_size=300).map(lambda b: int.from_bytes(b, "little")),
    st.booleans(),
)
ints = st.one_of(
    st.integers(0, 255),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**64), 2**64),
    big_ints,
)
floats = st.floats(allow_nan=False, allow_infinity=False)
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
binaries = st.binary(max_size=40)
pids = st.builds(Pid, short_atom_text, u32, u32, u32)
ports = st.builds(Port, short_atom_text, st.integers(0, 2**64 - 1), u32)
refs = st.builds(Reference, short_atom_text, u32, st.lists(u32, min_size=1, max_size=5))
bit_binaries = st.builds(BitBinary, st.binary(min_size=1, max_size=8), st.integers(1, 7))
exports = st.builds(ExportFun, short_atom_text, short_atom_text, st.integers(0, 255))
byte_lists = st.lists(st.integers(0, 255), min_size=1, max_size=30)


def local_fun_bytes(free: list[Any], module: str = "erl_eval", arity: int = 1,
                    old_uniq: int = 2**30) -> bytes:
    """A NEW_FUN_EXT term (with its 131 byte) built by hand."""
    pid = PURE.encode(Pid("a@host", 7, 0, 3))[1:]
    tail = (
        PURE.encode(Atom(module))[1:]
        + b"a\x05"  # OldIndex
        + b"b" + struct.pack(">i", old_uniq)  # OldUniq
        + pid
        + b"".join(PURE.encode(x)[1:] for x in free)
    )
    size = 4 + 1 + 16 + 4 + 4 + len(tail)
    body = struct.pack(">IB", size, arity) + bytes(range(16)) + struct.pack(">II", 9, len(free))
    return b"\x83p" + body + tail


local_funs = st.lists(st.integers(0, 300), max_size=3).map(
    lambda free: PURE.decode(local_fun_bytes(free))
)

hashable_leaves = st.one_of(ints, atoms, texts, binaries, floats, st.none(), st.booleans(),
                            pids, refs, ports)
leaves = st.deferred(lambda: _leaves)
_leaves = st.one_of(
    ints, floats, atoms, texts, binaries, binaries.map(bytearray), st.none(), st.booleans(),
    pids, ports, refs, bit_binaries, exports, byte_lists, local_funs,
)


def _erlang_unique(d: dict) -> dict:
    """Drop keys that repeat an earlier one as an Erlang term ('a' and b'a', ...)."""
    seen: dict[bytes, tuple] = {}
    for key, value in d.items():
        seen.setdefault(PURE.exact_key(key), (key, value))
    return dict(seen.values())


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    children = st.deferred(lambda: inner)  # a short repr in Hypothesis' messages
    return st.one_of(
        st.lists(children, max_size=6).map(tuple),
        st.lists(children, max_size=6),
        st.dictionaries(st.one_of(hashable_leaves, st.lists(hashable_leaves, max_size=3)
                                  .map(tuple)), children, max_size=5).map(_erlang_unique),
        st.lists(
            st.tuples(st.lists(st.integers(0, 1000), min_size=1, max_size=3), children),
            max_size=4, unique_by=lambda kv: tuple(kv[0]),
        ).map(Map),
        st.builds(
            ImproperList,
            st.lists(children, min_size=1, max_size=4),
            children.map(lambda t: (t,) if isinstance(t, (list, ImproperList)) else t),
        ),
    )


# Deferred, so that Hypothesis' messages name it briefly.
terms = st.deferred(lambda: _terms)
_terms = st.recursive(leaves, _containers, max_leaves=25)


# ---------------------------------------------------------------------------
# Round trips


@needs_compiled
@examples(300)
@given(terms, st.sampled_from([0, 0, 0, 1, 6, 9]))
def test_encode_identical_and_round_trips(term, level):
    want = PURE.encode(term, level)
    got = COMPILED.encode(term, level)
    assert got == want
    # Not every dict survives: None and Atom("undefined") are the same key.
    decoded = assert_same_outcome("decode", want)
    if decoded[0] == "ok":
        assert COMPILED.encode(decoded[1]) == PURE.encode(decoded[1])


@needs_compiled
@examples(100)
@given(terms, st.sampled_from([bytes, bytearray, memoryview]))
def test_decode_buffer_types(term, kind):
    data = kind(PURE.encode(term))
    assert_same_outcome("decode", data)


# ---------------------------------------------------------------------------
# Hostile bytes

TAGS = sorted(
    value for name, value in vars(_constants).items()
    if name.endswith("_EXT") or name in ("COMPRESSED", "ATOM_CACHE_REF")
)
interesting_bytes = st.one_of(
    st.sampled_from(TAGS), st.integers(0, 255), st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, 131]),
)


@st.composite
def mutated(draw: Any) -> bytes:
    data = bytearray(PURE.encode(draw(terms), draw(st.sampled_from([0, 0, 0, 6]))))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "flip", "truncate", "insert", "delete", "length"]))
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and pos < len(data):
            data[pos] = draw(interesting_bytes)
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = bytes(draw(st.lists(interesting_bytes, min_size=1, max_size=6)))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 8))]
        elif op == "length":
            # A hostile length field: huge, or off by a little.
            data[pos:pos + 4] = draw(st.sampled_from(
                [b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x00\x00\x02", b"\x00\x01"]))
    return bytes(data)


random_bytes = st.binary(max_size=64).map(lambda b: b"\x83" + b)


@needs_compiled
@examples(1500)
@given(st.one_of(mutated(), random_bytes))
def test_hostile_bytes_same_outcome(data):
    assert_same_outcome("decode", data)


@needs_compiled
@examples(200)
@given(st.one_of(mutated(), random_bytes), st.sampled_from([bytearray, memoryview]))
def test_hostile_buffers_same_outcome(data, kind):
    assert_same_outcome("decode", kind(data))


@needs_compiled
@examples(400)
@given(st.lists(st.one_of(terms.map(PURE.encode), mutated(), random_bytes), max_size=4),
       st.data())
def test_decode_from_same_outcome(chunks, data):
    blob = b"".join(chunks)
    offset = data.draw(st.one_of(st.integers(0, len(blob) + 2), st.integers(-3, -1)))
    assert_same_outcome("decode_from", blob, offset)
    if blob:
        assert_same_outcome("decode_from", memoryview(blob), offset)


@needs_compiled
@examples(200)
@given(st.lists(terms, min_size=1, max_size=4))
def test_decode_from_walks_concatenated_terms(items):
    blob = b"".join(PURE.encode(t) for t in items)
    offset = 0
    while offset < len(blob):
        want = assert_same_outcome("decode_from", blob, offset)
        if want[0] != "ok":  # e.g. {None: 1, Atom("undefined"): 2}: a repeated key
            break
        offset = want[1][1]


HOSTILE = [
    b"",
    b"\x83",
    b"\x82a\x01",
    b"\x83m\xff\xff\xff\xff" + b"x" * 4,  # a 4 GiB binary in 10 bytes
    b"\x83l\xff\xff\xff\xffj",
    b"\x83i\xff\xff\xff\xff",
    b"\x83t\xff\xff\xff\xff",
    b"\x83k\xff\xff",
    b"\x83o\xff\xff\xff\xff\x00",
    b"\x83o\x00\x40\x00\x00\x00",
    b"\x83n\x02\x02\x01\x01",  # bad sign byte
    b"\x83M\x00\x00\x00\x01\x00\xff",  # bits 0 with data
    b"\x83M\x00\x00\x00\x01\x09\xff",
    b"\x83M\x00\x00\x00\x01\x03\xff",
    b"\x83F\x7f\xf0\x00\x00\x00\x00\x00\x00",  # inf
    b"\x83F\x7f\xf8\x00\x00\x00\x00\x00\x00",  # nan
    b"\x83c" + b"1.5e+00".ljust(31, b"\x00"),
    b"\x83c" + b"inf".ljust(31, b"\x00"),
    b"\x83c" + b"1_0".ljust(31, b"\x00"),
    b"\x83c" + b" 2.5 ".ljust(31, b"\x00"),
    b"\x83c" + b"\xff".ljust(31, b"\x00"),
    b"\x83c" + b"1\x002".ljust(31, b"\x00"),
    b"\x83w\x02\xc3\x28",  # invalid UTF-8
    b"\x83w\x02\xed\xa0",  # surrogate
    b"\x83v\x01\x00" + "\u00e9".encode() * 128,  # 256 characters
    b"\x83d\x01\x00" + b"\xe9" * 256,  # latin-1, 256 characters
    b"\x83d\x00\x04true",
    b"\x83s\x05false",
    b"\x83d\x00\x02\xe9t",
    b"\x83R\x01",
    b"\x83P\x00\x00\x00\x05xx",
    b"\x83P\x00\x00\x00\x05",
    b"\x83Pabcdefgh",
    b"\x83u",
    b"\x83y",
    b"\x83\x00",
    b"\x83h\x01P",
    b"\x83Z\x00\x06w\x01a",
    b"\x83Z\x00\x05w\x01a\x00\x00\x00\x01",
    b"\x83r\x00\x01s\x01a\x01\x00\x00\x00\x01",
    b"\x83e" + b"s\x01a" + b"\x00\x00\x00\x01\x02",
    b"\x83f" + b"s\x01a" + b"\x00\x00\x00\x01\x02",
    b"\x83x" + b"s\x01a" + b"\x00" * 12,
    b"\x83g" + b"s\x01a" + b"\x00\x00\x00\x01\x00\x00\x00\x02\x03",
    b"\x83X" + b"a\x01",
    b"\x83X" + b"R\x01",
    b"\x83q" + b"s\x01aw\x01ba\x01",
    b"\x83q" + b"s\x01aw\x01bb\x00\x00\x00\x01",
    b"\x83q" + b"s\x01aw\x01ba",
    b"\x83t\x00\x00\x00\x02a\x01a\x01a\x02a\x02",  # duplicate key
    b"\x83t\x00\x00\x00\x02a\x01a\x01F?\xf0\x00\x00\x00\x00\x00\x00a\x02",  # 1 and 1.0
    b"\x83t\x00\x00\x00\x02a\x01a\x01w\x04truea\x02",  # 1 and true
    b"\x83t\x00\x00\x00\x01k\x00\x01\x01a\x02",  # a list key
    b"\x83t\x00\x00\x00\x02k\x00\x01\x01a\x02k\x00\x01\x01a\x03",  # duplicate list keys
    b"\x83l\x00\x00\x00\x00j",
    b"\x83l\x00\x00\x00\x00a\x01",
    b"\x83l\x00\x00\x00\x01a\x01k\x00\x02\x02\x03",
    b"\x83l\x00\x00\x00\x01a\x01l\x00\x00\x00\x01a\x02a\x03",
    b"\x83l\x00\x00\x00\x00l\x00\x00\x00\x01a\x02a\x03",
    b"\x83l\x00\x00\x00\x01a\x01",
    b"\x83p\x00\x00\x00\x10",
    b"\x83p\x00\x00\x00\x1c" + b"\x00" * 30,
    b"\x83p\xff\xff\xff\xff",
]


@needs_compiled
@pytest.mark.parametrize("data", HOSTILE)
def test_hostile_examples_same_outcome(data):
    assert_same_outcome("decode", data)
    assert_same_outcome("decode", bytearray(data))


@needs_compiled
@pytest.mark.parametrize("free", [[], [1], [1, [2, 3]], [(1,)] * 3])
@pytest.mark.parametrize("cut", [None, 1, 5, 20, 30, 40, 50, -1])
def test_local_funs_same_outcome(free, cut):
    data = local_fun_bytes(free)
    if cut is not None:
        data = data[:cut]
    assert_same_outcome("decode", data)
    # The size field claims one byte more or less than the fun takes.
    whole = local_fun_bytes(free)
    size = struct.unpack(">I", whole[2:6])[0]
    for delta in (-1, 1):
        bad = whole[:2] + struct.pack(">I", size + delta) + whole[6:] + b"j"
        assert_same_outcome("decode", bad)


@needs_compiled
@pytest.mark.parametrize("offset", [0, 1, 5, 6, 7, True, False, -1, 2**70, 1.0, "1", None])
def test_decode_from_odd_offsets(offset):
    blob = PURE.encode(1) + PURE.encode((Atom("x"), 2))
    assert_same_outcome("decode_from", blob, offset)


@needs_compiled
@pytest.mark.parametrize("data", [
    None, 1, "text", [1, 2], object(),
    array.array("b", PURE.encode(-3)),
    array.array("i", [0]),
    memoryview(b"\x00" + PURE.encode((1, 2.5)))[1:],
    memoryview(PURE.encode((1, b"ab"))).cast("c"),
    memoryview(bytes(x for c in PURE.encode([1, 2]) for x in (c, 0)))[::2],
    memoryview(bytearray(PURE.encode(300))).cast("B", (2, 3)),
])
def test_decode_odd_inputs(data):
    assert_same_outcome("decode", data)
    assert_same_outcome("decode_from", data, 0)


# ---------------------------------------------------------------------------
# Nesting limits


def nested(kind: str, depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        if kind == "list":
            value = [value]
        elif kind == "tuple":
            value = (value,)
        elif kind == "dict":
            value = {Atom("k"): value}
        elif kind == "improper":
            value = ImproperList([value], 2)
        elif kind == "map":
            value = Map([([1], value)])
        else:
            value = [value, 2]
    return value


@needs_compiled
@pytest.mark.parametrize("kind", ["list", "tuple", "dict", "improper", "map", "pair"])
@pytest.mark.parametrize("depth", [_constants.MAX_DEPTH - 1, _constants.MAX_DEPTH,
                                   _constants.MAX_DEPTH + 1, _constants.MAX_DEPTH + 5])
def test_depth_limit_identical(kind, depth):
    term = nested(kind, depth)
    want = assert_same_outcome("encode", term)
    if want[0] == "ok":
        assert_same_outcome("decode", want[1])
    else:
        assert want[1] is EncodeError
    # The same nesting written by hand, for the decoder's own limit.
    data = b"\x83" + b"l\x00\x00\x00\x01" * depth + b"a\x01" + b"j" * depth
    assert_same_outcome("decode", data)
    data = b"\x83" + b"h\x01" * depth + b"a\x01"
    assert_same_outcome("decode", data)
    data = b"\x83" + b"t\x00\x00\x00\x01a\x01" * depth + b"a\x01"
    assert_same_outcome("decode", data)


@needs_compiled
@pytest.mark.parametrize("depth", [_constants.MAX_DEPTH - 2, _constants.MAX_DEPTH - 1,
                                   _constants.MAX_DEPTH])
def test_depth_limit_in_fun_environment(depth):
    data = local_fun_bytes([nested("tuple", depth)])
    assert_same_outcome("decode", data)
    assert_same_outcome("decode", b"\x83h\x01" + data[1:])


# ---------------------------------------------------------------------------
# Values that cannot be encoded, and odd Python types


class IntSub(int):
    pass


class FloatSub(float):
    pass


class StrSub(str):
    pass


class AtomSub(Atom):
    __slots__ = ()


class TupleSub(tuple):
    pass


class ListSub(list):
    pass


class BytesSub(bytes):
    pass


class Color(enum.IntEnum):
    RED = 1
    BIG = 300


class Name(enum.StrEnum):
    ALICE = "alice"


class Shouty(str):
    def __str__(self):
        return self.upper()


class ShoutyAtom(Atom):
    __slots__ = ()

    def __str__(self):
        return self.upper()


class StrReturningSub(str):
    def __str__(self):
        return StrSub(self + "!")


class PidSub(Pid):
    __slots__ = ()


class Weird:
    pass


class MyMapping(Mapping):
    def __init__(self, pairs):
        self._pairs = list(pairs)

    def __getitem__(self, key):
        for k, v in self._pairs:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self):
        return (k for k, _ in self._pairs)

    def __len__(self):
        return len(self._pairs)


def self_referencing_list() -> list[Any]:
    value: list[Any] = [1]
    value.append(value)
    return value


def self_referencing_dict() -> dict[Any, Any]:
    value: dict[Any, Any] = {}
    value[Atom("me")] = value
    return value


Point = collections.namedtuple("Point", "x y")

ODD_VALUES = [
    object(), {1, 2}, frozenset(), Weird(), type, len, 1j, Ellipsis,
    float("nan"), float("inf"), -float("inf"), FloatSub("nan"),
    Atom("a" * 256), Atom("\u00e9" * 256), Atom("\ud800"), "\ud800", StrSub("\udfff"),
    AtomSub("x" * 300), AtomSub("\ud800"), Atom("a" * 255), Atom("\u00e9" * 255),
    2**(8 * _constants.MAX_BIG_BYTES), -(2**(8 * _constants.MAX_BIG_BYTES)),
    2**(8 * _constants.MAX_BIG_BYTES) - 1, 2**64, -(2**63), 2**63, -(2**63) - 1, 2**2040,
    IntSub(5), IntSub(300), IntSub(2**40), Color.RED, Color.BIG, True, False, None,
    FloatSub(1.5), StrSub("h\u00e9"), Name.ALICE, AtomSub("sub"), Shouty("abc"),
    ShoutyAtom("abc"), StrReturningSub("x"), [Shouty("a")],
    TupleSub((1, 2)), Point(1, Atom("y")), ListSub([1, 2]), ListSub([1, 300]), ListSub([]),
    [IntSub(1), 2], [Color.RED, 7], [True, 1], [1, 2.0], [256], [-1], list(range(256)) * 256,
    list(range(65536)), BytesSub(b"ab"), bytearray(b"xy"), memoryview(b"abc"),
    memoryview(b"abcdef")[::2], memoryview(array.array("i", [1, 2])),
    memoryview(array.array("b", [1, -2])), memoryview(bytearray(b"abcd")).cast("B", (2, 2)),
    collections.OrderedDict([(1, 2)]), collections.defaultdict(int, {1: 2}),
    types.MappingProxyType({Atom("a"): 1}), MyMapping([([1], 2), ((3,), 4)]),
    Map([([1], 2)]), Map([]), {}, {1: {2: {3: [4]}}},
    PidSub("n", 1, 2, 3), Pid("a" * 300, 1), Port("n", 2**32), Port("n", 2**64 - 1),
    Reference("n", 1, (1,)), ExportFun("m", "f", 0), BitBinary(b"\xff", 1),
    [1, Weird()], (1, {2: object()}), {Atom("k"): float("nan")},
    self_referencing_list(), self_referencing_dict(),
    [1] * 70000, (1,) * 300,
]


@needs_compiled
@pytest.mark.parametrize("value", ODD_VALUES, ids=lambda v: type(v).__name__)
@pytest.mark.parametrize("level", [0, 3])
def test_odd_values_same_outcome(value, level):
    want = assert_same_outcome("encode", value, level)
    if want[0] == "ok":
        assert_same_outcome("decode", want[1])


def _corrupt(cls: type, key: Any) -> Any:
    obj = cls.__new__(cls)
    if key is not None:
        obj._key = key
    return obj


CORRUPT = [
    _corrupt(Pid, None),
    _corrupt(Pid, (Atom("n"), 1, 2)),
    _corrupt(Pid, [Atom("n"), 1, 2, 3]),
    _corrupt(Pid, (Atom("n"), -1, 2, 3)),
    _corrupt(Pid, (Atom("n"), 2**32, 2, 3)),
    _corrupt(Pid, (Atom("n"), 1.0, 2, 3)),
    _corrupt(Pid, ("n" * 300, 2**32, 2, 3)),
    _corrupt(Pid, (StrSub("n"), 1, 2, 3)),
    _corrupt(Pid, (5, 1, 2, 3)),
    _corrupt(Reference, (Atom("n"), 1, [1, 2])),
    _corrupt(Reference, (Atom("n"), 1, (2**32,))),
    _corrupt(Reference, (Atom("n"), 1, (1,) * 70000)),
    _corrupt(Reference, (Atom("n"), 1)),
    _corrupt(Port, (Atom("n"), -1, 1)),
    _corrupt(Port, (Atom("n"), 2**64, 1)),
    _corrupt(Port, (Atom("n"), True, 1)),
    _corrupt(BitBinary, (b"ab", 256)),
    _corrupt(BitBinary, (bytearray(b"ab"), 3)),
    _corrupt(BitBinary, (b"ab",)),
    _corrupt(ExportFun, (Atom("m"), Atom("f"), 256)),
    _corrupt(ExportFun, (Atom("m"), "f", IntSub(3))),
    _corrupt(ImproperList, ((1, 2), 3, 4)),
    _corrupt(ImproperList, ((1, 2),)),
    _corrupt(ImproperList, [[1, 2], 3]),
    _corrupt(ImproperList, 7),
    _corrupt(ImproperList, (5, 3)),
    _corrupt(ImproperList, ((), Atom("t"))),
]


@needs_compiled
@pytest.mark.parametrize("value", CORRUPT, ids=lambda v: type(v).__name__)
def test_corrupted_term_objects_same_outcome(value):
    assert_same_outcome("encode", value)
    assert_same_outcome("encode", [value])


@needs_compiled
@pytest.mark.parametrize("level", [-1, 10, True, 1.0, "1", None, 2**70, IntSub(1)])
def test_bad_compression_level(level):
    want = assert_same_outcome("encode", 1, level)
    assert want[1] is ConfigurationError


@needs_compiled
@examples(150)
@given(st.recursive(
    st.one_of(leaves, st.sampled_from(ODD_VALUES[:12])),
    _containers, max_leaves=12,
))
def test_terms_with_unencodable_parts(term):
    assert_same_outcome("encode", term)


@needs_compiled
@examples(150)
@given(st.dictionaries(st.one_of(hashable_leaves, st.lists(hashable_leaves, max_size=3).map(tuple)),
                       leaves, min_size=2, max_size=6))
def test_maps_whose_keys_may_collide_in_erlang(d):
    # Raw dicts, not deduplicated: 'a' and b'a', None and Atom('undefined'),
    # True and Atom('true') (also inside tuple keys) must be refused alike.
    assert_same_outcome("encode", d)
    assert_same_outcome("encode", [d, MappingProxyType(d)])


@needs_compiled
@pytest.mark.parametrize("d, encodable", [
    ({"a": 1, b"a": 2}, False),
    ({(None,): 1, (Atom("undefined"),): 2}, False),
    ({True: 1, Atom("true"): 2}, False),
    ({1: 1, 2.0: 2, Atom("x"): 3, "x": 4}, True),
])
def test_colliding_map_keys_examples(d, encodable):
    outcome = assert_same_outcome("encode", d)
    assert (outcome[0] == "ok") is encodable


@needs_compiled
def test_mutation_during_encoding_is_safe():
    # A Mapping whose items() empties the enclosing list: no crash, same result.
    holder: list[Any] = []

    class Shrinking(Mapping):
        def __getitem__(self, key):
            raise KeyError(key)

        def __iter__(self):
            return iter(())

        def __len__(self):
            return 1

        def items(self):
            del holder[1:]
            return [(1, 2)]

    def fresh():
        holder[:] = [Shrinking(), Atom("gone"), Atom("gone too")]
        return holder

    want = outcome(PURE.encode, fresh())
    got = outcome(COMPILED.encode, fresh())
    assert got == want


# ---------------------------------------------------------------------------
# Large values


@needs_compiled
def test_large_binary_round_trip():
    payload = bytes(range(256)) * 4096
    data = COMPILED.encode(payload)
    assert data == PURE.encode(payload)
    assert COMPILED.decode(data) == payload
    assert COMPILED.decode(memoryview(data)) == payload


@needs_compiled
def test_large_int_lists():
    value = list(range(10000)) + [-5, 2**40, -(2**70)]
    data = COMPILED.encode(value)
    assert data == PURE.encode(value)
    assert same(COMPILED.decode(data), PURE.decode(data))


@needs_compiled
def test_atom_cache_survives_many_atoms():
    value = [Atom(f"atom_{i}") for i in range(2 * _constants.ATOM_CACHE_SIZE)]
    data = PURE.encode(value)
    for _ in range(2):
        assert same(COMPILED.decode(data), value)


@needs_compiled
def test_decode_does_not_keep_input_alive():
    data = bytearray(PURE.encode([b"x" * 100, Atom("a")]))
    COMPILED.decode(data)
    data.extend(b"more")  # the buffer export was released
    assert sys.getrefcount(data) == 2


@needs_compiled
def test_bit_binary_decode_leaves_shared_bytes_alone():
    # CPython shares one-byte bytes objects; the decoder clears the unused
    # bits of a bitstring's last byte in a copy of its own.
    for impl in (COMPILED, PURE):
        value = impl.decode(b"\x83M\x00\x00\x00\x01\x03\xff")
        assert value == BitBinary(b"\xe0", 3)
        assert bytes([255]) == b"\xff"
        assert PURE.encode([255]) == COMPILED.encode([255]) == b"\x83k\x00\x01\xff"


@needs_compiled
def test_no_reference_leaks():
    # Every path that owns objects on the way: containers, Map fallbacks,
    # funs, and errors in the middle of containers. A leak of one small
    # object per call shows up as hundreds of KiB here.
    import gc
    import tracemalloc

    good = [
        PURE.encode(Map([([1], 2), ([2], 3)])),
        b"\x83t\x00\x00\x00\x02a\x01a\x01F?\xf0\x00\x00\x00\x00\x00\x00a\x02",  # 1, 1.0
        PURE.encode((1, [2, {3: (4, b"x")}], ImproperList([1, 2], Atom("t")))),
        local_fun_bytes([1, [2]]),
    ]
    bad = [
        b"\x83" + b"h\x01" * (_constants.MAX_DEPTH + 1) + b"j",
        b"\x83t\x00\x00\x00\x02k\x00\x01\x01a\x02k\x00\x01\x01a\x03",
        b"\x83" + b"t\x00\x00\x00\x01a\x01" * 30 + b"x",
    ]
    unencodable = [self_referencing_list(), {1: [Weird()]}, MyMapping([(1, object())])]

    def cycle():
        for data in good:
            COMPILED.decode(data)
        for data in bad:
            with pytest.raises(ValueError):
                COMPILED.decode(data)
        for value in unencodable:
            with pytest.raises(EncodeError):
                COMPILED.encode(value)

    for _ in range(50):
        cycle()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(1000):
            cycle()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 32 * 1024, f"{grown} bytes kept after 1000 rounds"
