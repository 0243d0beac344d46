"""The term codec on known bytes: each tag, the mapping both ways, decode_from.

The expected bytes below were printed by OTP 25's term_to_binary (with
[{minor_version, 2}] where atoms are involved); tests/test_etf_vectors.py and
tests/test_etf_otp.py check many more terms against a real erl.
Every test runs on both implementations through the `fastpath` fixture.
"""

from __future__ import annotations

import math

import pytest

import quicdist
from quicdist import (
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
from quicdist.errors import ConfigurationError, DecodeError, EncodeError


NODE = b"w\rnonode@nohost"

# (python value, OTP's bytes) pairs where the mapping is exact both ways.
CANONICAL = [
    (0, b"\x83a\x00"),
    (255, b"\x83a\xff"),
    (256, b"\x83b\x00\x00\x01\x00"),
    (-1, b"\x83b\xff\xff\xff\xff"),
    (2**31 - 1, b"\x83b\x7f\xff\xff\xff"),
    (-(2**31), b"\x83b\x80\x00\x00\x00"),
    (2**31, b"\x83n\x04\x00\x00\x00\x00\x80"),
    (-(2**31) - 1, b"\x83n\x04\x01\x01\x00\x00\x80"),
    (2**64 - 1, b"\x83n\x08\x00" + b"\xff" * 8),
    (2**2040, b"\x83o\x00\x00\x01\x00\x00" + b"\x00" * 255 + b"\x01"),
    (1.5, b"\x83F?\xf8\x00\x00\x00\x00\x00\x00"),
    (-0.0, b"\x83F\x80\x00\x00\x00\x00\x00\x00\x00"),
    (True, b"\x83w\x04true"),
    (False, b"\x83w\x05false"),
    (Atom("ok"), b"\x83w\x02ok"),
    (Atom(""), b"\x83w\x00"),
    (Atom("ä"), b"\x83w\x02\xc3\xa4"),
    (Atom("ä" * 200), b"\x83v\x01\x90" + "ä".encode() * 200),
    ((), b"\x83h\x00"),
    ((1, Atom("a")), b"\x83h\x02a\x01w\x01a"),
    (tuple(range(256)), b"\x83i\x00\x00\x01\x00" + b"".join(
        b"a" + bytes([i]) for i in range(256))),
    ([], b"\x83j"),
    ([97, 98, 99], b"\x83k\x00\x03abc"),
    ([1000], b"\x83l\x00\x00\x00\x01b\x00\x00\x03\xe8j"),
    ([Atom("a"), []], b"\x83l\x00\x00\x00\x02w\x01ajj"),
    (ImproperList([1, 2], 3), b"\x83l\x00\x00\x00\x02a\x01a\x02a\x03"),
    (b"", b"\x83m\x00\x00\x00\x00"),
    (b"abc", b"\x83m\x00\x00\x00\x03abc"),
    (BitBinary(b" ", 3), b"\x83M\x00\x00\x00\x01\x03 "),
    ({}, b"\x83t\x00\x00\x00\x00"),
    ({Atom("a"): 1}, b"\x83t\x00\x00\x00\x01w\x01aa\x01"),
    (Pid("nonode@nohost", 9, 0, 0), b"\x83X" + NODE + bytes(12)[:3] + b"\x09" + bytes(8)),
    (Port("nonode@nohost", 0, 0), b"\x83Y" + NODE + bytes(8)),
    (Port("nonode@nohost", 2**40, 1), b"\x83x" + NODE + (2**40).to_bytes(8, "big")
     + b"\x00\x00\x00\x01"),
    (Reference("nonode@nohost", 0, (0xABA0DFBC, 0x1227A, 0x7FD6)),
     b"\x83Z\x00\x03" + NODE + bytes(4) + bytes.fromhex("aba0dfbc0001227a00007fd6")),
    (ExportFun("lists", "map", 2), b"\x83qw\x05listsw\x03mapa\x02"),
]


@pytest.mark.parametrize("value, data", CANONICAL, ids=[repr(v)[:40] for v, _ in CANONICAL])
def test_canonical_both_ways(fastpath, value, data):
    assert fastpath.encode(value) == data
    decoded = fastpath.decode(data)
    assert decoded == value
    assert type(decoded) is type(value)
    assert fastpath.encode(decoded) == data


# Python values whose term decodes to a different (documented) Python value.
ONE_WAY = [
    (None, b"\x83w\x09undefined", Atom("undefined")),
    ("abc", b"\x83m\x00\x00\x00\x03abc", b"abc"),
    ("ä", b"\x83m\x00\x00\x00\x02\xc3\xa4", "ä".encode()),
    (bytearray(b"xy"), b"\x83m\x00\x00\x00\x02xy", b"xy"),
    (memoryview(b"xyz")[1:], b"\x83m\x00\x00\x00\x02yz", b"yz"),
    (Atom("true"), b"\x83w\x04true", True),
    ([True, 1], b"\x83l\x00\x00\x00\x02w\x04truea\x01j", [True, 1]),
]


@pytest.mark.parametrize("value, data, back", ONE_WAY, ids=[repr(v)[:40] for v, _, _ in ONE_WAY])
def test_documented_mapping(fastpath, value, data, back):
    assert fastpath.encode(value) == data
    decoded = fastpath.decode(data)
    assert decoded == back
    assert type(decoded) is type(back)


def test_subclasses_encode_as_their_base(fastpath):
    import enum
    from collections import OrderedDict, namedtuple

    class Color(enum.IntEnum):
        RED = 1

    Point = namedtuple("Point", "x y")

    class Text(str):
        pass

    assert fastpath.encode(Color.RED) == fastpath.encode(1)
    assert fastpath.encode([Color.RED, 2]) == b"\x83k\x00\x02\x01\x02"
    assert fastpath.encode(Point(1, 2)) == fastpath.encode((1, 2))
    assert fastpath.encode(Text("a")) == fastpath.encode("a")
    assert fastpath.encode(OrderedDict(a=1)) == fastpath.encode({"a": 1})


def test_string_ext_boundaries(fastpath):
    assert fastpath.encode([0] * 65535)[:4] == b"\x83k\xff\xff"
    long = fastpath.encode([0] * 65536)
    assert long[:6] == b"\x83l\x00\x01\x00\x00"
    assert fastpath.decode(long) == [0] * 65536
    assert fastpath.encode([256])[:2] == b"\x83l"
    assert fastpath.encode([-1])[:2] == b"\x83l"
    assert fastpath.encode([False])[:2] == b"\x83l"


def test_older_forms_decode(fastpath):
    # Latin-1 atoms (OTP 25 default minor_version 1), FLOAT_EXT (minor 0),
    # PID_EXT / NEW_REFERENCE_EXT / REFERENCE_EXT / PORT_EXT (pre OTP 23).
    assert fastpath.decode(b"\x83d\x00\x01\xe4") == Atom("ä")
    assert fastpath.decode(b"\x83s\x02ok") == Atom("ok")
    assert fastpath.decode(b"\x83d\x00\x04true") is True
    flt = b"\x83c" + b"1.50000000000000000000e+00".ljust(31, b"\x00")
    assert fastpath.decode(flt) == 1.5
    node = b"d\x00\x01n"
    assert fastpath.decode(b"\x83g" + node + b"\x00\x00\x00\x05\x00\x00\x00\x01\x02") == Pid(
        "n", 5, 1, 2)
    assert fastpath.decode(b"\x83r\x00\x01" + node + b"\x03\x00\x00\x00\x07") == Reference(
        "n", 3, (7,))
    assert fastpath.decode(b"\x83e" + node + b"\x00\x00\x00\x07\x03") == Reference("n", 3, (7,))
    assert fastpath.decode(b"\x83f" + node + b"\x00\x00\x00\x07\x03") == Port("n", 7, 3)
    # Non-minimal bignum and a LIST_EXT with no elements (just its tail).
    assert fastpath.decode(b"\x83n\x03\x00\x05\x00\x00") == 5
    assert fastpath.decode(b"\x83l\x00\x00\x00\x00a\x01") == 1
    # A list whose tail is another list is one list.
    assert fastpath.decode(b"\x83l\x00\x00\x00\x01a\x01k\x00\x01\x02") == [1, 2]


def test_bit_binary_edge_cases(fastpath):
    assert fastpath.decode(b"\x83M\x00\x00\x00\x00\x00") == b""
    assert fastpath.decode(b"\x83M\x00\x00\x00\x01\x08\xff") == b"\xff"
    # Unused low bits are cleared, as OTP does.
    assert fastpath.decode(b"\x83M\x00\x00\x00\x01\x03\xff") == BitBinary(b"\xe0", 3)
    for bad in (b"\x83M\x00\x00\x00\x00\x01", b"\x83M\x00\x00\x00\x01\x00\xff",
                b"\x83M\x00\x00\x00\x01\x09\xff"):
        with pytest.raises(DecodeError, match="invalid bit binary"):
            fastpath.decode(bad)


def test_maps_keep_wire_order_and_fall_back_to_map(fastpath):
    data = fastpath.encode({Atom("b"): 1, Atom("a"): 2})
    assert list(fastpath.decode(data)) == [Atom("b"), Atom("a")]
    assert fastpath.encode(fastpath.decode(data)) == data

    # 1 and 1.0 (and 1 and true) are different Erlang keys but equal Python ones.
    for pairs in ([(1, Atom("x")), (1.0, Atom("y"))], [(True, 0), (1, 1)]):
        data = fastpath.encode(Map(pairs))
        decoded = fastpath.decode(data)
        assert type(decoded) is Map
        assert list(decoded.items()) == pairs
        assert fastpath.encode(decoded) == data

    # Unhashable keys (an Erlang string is a list).
    data = fastpath.encode(Map([([104, 105], 1), ({Atom("k"): 1}, 2)]))
    decoded = fastpath.decode(data)
    assert decoded[[104, 105]] == 1
    assert decoded[{Atom("k"): 1}] == 2
    assert fastpath.encode(decoded) == data


def test_duplicate_map_keys_are_rejected(fastpath):
    with pytest.raises(DecodeError, match="duplicate key in map"):
        fastpath.decode(b"\x83t\x00\x00\x00\x02a\x01a\x01a\x01a\x02")
    with pytest.raises(DecodeError, match="duplicate key in map"):
        fastpath.decode(b"\x83t\x00\x00\x00\x02k\x00\x01\x01a\x01k\x00\x01\x01a\x02")


def test_local_fun_is_opaque_and_reencodes_exactly(fastpath):
    # fun(X) -> X end, from erl (no free variables), and one with two.
    data = bytes([131, 112, 0, 0, 0, 69, 1, 78, 61, 96, 79, 237, 236, 254, 86, 210, 135, 89, 186,
                  28, 22, 57, 39, 0, 0, 0, 7, 0, 0, 0, 0, 100, 0, 1, 116, 97, 7, 98, 2, 113, 235,
                  2, 88, 100, 0, 13]) + b"nonode@nohost" + bytes([0, 0, 0, 9] + [0] * 8)
    fun = fastpath.decode(data)
    assert isinstance(fun, LocalFun)
    assert (fun.module, fun.arity, fun.index, fun.free_vars) == (Atom("t"), 1, 7, ())
    assert fun.pid == Pid("nonode@nohost", 9)
    assert fastpath.encode(fun) == data
    assert fastpath.encode((fun, [fun])) == b"\x83h\x02" + data[1:] + b"l\x00\x00\x00\x01" + (
        data[1:]) + b"j"

    free = (Atom("a"), [1, 2])
    with_env = bytearray(data)
    with_env[27:31] = (2).to_bytes(4, "big")
    with_env += fastpath.encode(free[0])[1:] + fastpath.encode(free[1])[1:]
    with_env[2:6] = (len(with_env) - 2).to_bytes(4, "big")
    fun2 = fastpath.decode(bytes(with_env))
    assert fun2.free_vars == free
    assert fastpath.encode(fun2) == bytes(with_env)
    with pytest.raises(DecodeError, match="malformed fun"):
        # Size one byte too large: the free variables do not fill the fun.
        bad = bytearray(with_env)
        bad[2:6] = (len(with_env) - 1).to_bytes(4, "big")
        fastpath.decode(bytes(bad) + b"\x00")


def test_decode_from_reads_concatenated_terms(fastpath):
    a, b = fastpath.encode((1, Atom("x"))), fastpath.encode(b"payload")
    data = b"p" + a + b
    term, pos = fastpath.decode_from(data, 1)
    assert (term, pos) == ((1, Atom("x")), 1 + len(a))
    term, pos = fastpath.decode_from(data, pos)
    assert (term, pos) == (b"payload", len(data))
    with pytest.raises(DecodeError, match="empty input"):
        fastpath.decode_from(data, len(data))
    with pytest.raises(ValueError, match="outside the data"):
        fastpath.decode_from(data, len(data) + 1)
    with pytest.raises(ValueError, match="outside the data"):
        fastpath.decode_from(data, -1)
    view_term, _ = fastpath.decode_from(memoryview(bytearray(data)), 1)
    assert view_term == (1, Atom("x"))


def test_decode_rejects_trailing_bytes(fastpath):
    with pytest.raises(DecodeError) as info:
        fastpath.decode(b"\x83a\x01\x00")
    assert info.value.offset == 3
    assert "unexpected bytes after the term" in str(info.value)


def test_decode_accepts_any_buffer(fastpath):
    data = fastpath.encode([1, (2, b"three")])
    for buf in (bytearray(data), memoryview(data), memoryview(bytearray(data))):
        assert fastpath.decode(buf) == [1, (2, b"three")]
    with pytest.raises(TypeError):
        fastpath.decode("not bytes")
    with pytest.raises(TypeError):
        fastpath.decode(12)


def test_compressed(fastpath):
    term = (Atom("x"),) * 200
    plain = fastpath.encode(term)
    packed = fastpath.encode(term, 6)
    assert packed[:2] == b"\x83P" and len(packed) < len(plain)
    assert int.from_bytes(packed[2:6], "big") == len(plain) - 1
    assert fastpath.decode(packed) == term
    # Not worth compressing: the plain form, as term_to_binary does.
    assert fastpath.encode(1, 9) == fastpath.encode(1)
    for bad in (-1, 10, 1.5, "6"):
        with pytest.raises(ConfigurationError):
            fastpath.encode(1, bad)


UNENCODABLE = [
    (object(), "cannot encode object"),
    ({1, 2}, "cannot encode set"),
    (float("nan"), "NaN or infinity"),
    (math.inf, "NaN or infinity"),
    (Atom("a" * 256), "atom longer than 255"),
    ("\ud800", "lone surrogate"),
    (Atom("\ud800"), "lone surrogate"),
    (2 ** (8 * 4194296), "integer larger than Erlang allows"),
    ((1, [2, {3: object()}]), "cannot encode object"),
]


@pytest.mark.parametrize("value, message", UNENCODABLE, ids=[m for _, m in UNENCODABLE])
def test_unencodable_values(fastpath, value, message):
    with pytest.raises(EncodeError, match=message):
        fastpath.encode(value)


def test_encode_error_is_type_and_value_error():
    assert issubclass(EncodeError, TypeError) and issubclass(EncodeError, ValueError)
    assert issubclass(DecodeError, ValueError)


def test_deep_and_cyclic_values_raise_encode_error(fastpath):
    cyclic: list = []
    cyclic.append(cyclic)
    with pytest.raises(EncodeError, match="nested deeper than"):
        fastpath.encode(cyclic)
    deep: object = 1
    for _ in range(quicdist.etf.MAX_DEPTH + 1):
        deep = (deep,)
    with pytest.raises(EncodeError, match="nested deeper than"):
        fastpath.encode(deep)
    ok: object = 1
    for _ in range(quicdist.etf.MAX_DEPTH):
        ok = [ok]
    assert fastpath.encode(ok)[:6] == b"\x83l\x00\x00\x00\x01"


def test_largest_bignum_round_trips(fastpath):
    big = -(2 ** (8 * 4194296) - 1)
    data = fastpath.encode(big)
    assert data[:7] == b"\x83o" + (4194296).to_bytes(4, "big") + b"\x01"
    assert fastpath.decode(data) == big


def test_atoms_are_strs_but_encode_differently():
    assert Atom("ok") == "ok"
    assert quicdist.encode(Atom("ok")) != quicdist.encode("ok")
    assert repr(Atom("ok")) == "Atom('ok')"
