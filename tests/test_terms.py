"""The Erlang term types: value semantics, validation, pickling, repr."""

from __future__ import annotations

import pickle

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
from quicdist.errors import (
    ConfigurationError,
    DecodeError,
    EncodeError,
    QuicDistError,
    QuicDistTimeoutError,
    TermError,
)


VALUES = [
    Atom("ok"),
    Pid("a@h", 1, 2, 3),
    Port("a@h", 2**40, 7),
    Reference("a@h", 5, (1, 2, 3)),
    BitBinary(b"\xff\xe0", 3),
    ImproperList([1, Atom("x")], Atom("tail")),
    ExportFun("lists", "map", 2),
    Map([([1], 2), (1.0, 3)]),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_value_semantics(value):
    twin = pickle.loads(pickle.dumps(value))
    assert twin == value and type(twin) is type(value)
    assert hash(twin) == hash(value)
    assert eval(repr(value), vars(quicdist)) == value
    assert quicdist.decode(quicdist.encode(value)) == value


@pytest.mark.parametrize("value", VALUES[1:-1], ids=lambda v: type(v).__name__)
def test_immutable(value):
    name = next(n for n in ("node", "data", "elements", "module") if hasattr(value, n))
    with pytest.raises(AttributeError):
        setattr(value, name, "x")


def test_distinct_types_never_equal():
    assert Pid("a@h", 1) != Port("a@h", 1)
    assert Pid("a@h", 1) != ("a@h", 1, 0, 0)
    assert Reference("a@h", 0, (1,)) != Reference("a@h", 0, (1, 0))
    assert len({Pid("a@h", 1), Pid("a@h", 1), Pid("a@h", 2)}) == 2


def test_field_access():
    pid = Pid("n@h", 10, 20, 30)
    assert (pid.node, pid.id, pid.serial, pid.creation) == ("n@h", 10, 20, 30)
    assert type(pid.node) is Atom
    ref = Reference("n@h", 4, [7, 8])
    assert ref.ids == (7, 8) and ref.creation == 4
    bits = BitBinary(b"\xff", 3)
    assert bits.data == b"\xe0" and bits.bits == 3 and bits.bit_length == 3
    improper = ImproperList([1, 2], 3)
    assert list(improper) == [1, 2] and improper[1] == 2 and len(improper) == 2
    fun = ExportFun("m", "f", 0)
    assert (fun.module, fun.function, fun.arity) == ("m", "f", 0)


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda: Pid("n@h", -1), ValueError),
        (lambda: Pid("n@h", 2**32), ValueError),
        (lambda: Pid("n@h", 1.0), TypeError),
        (lambda: Pid(5, 1), TypeError),
        (lambda: Port("n@h", 2**64), ValueError),
        (lambda: Reference("n@h", 0, range(6)), ValueError),
        (lambda: Reference("n@h", 0, ()), ValueError),
        (lambda: BitBinary(b"", 3), ValueError),
        (lambda: BitBinary(b"a", 8), ValueError),
        (lambda: BitBinary(b"a", 0), ValueError),
        (lambda: ImproperList([], 1), ValueError),
        (lambda: ImproperList([1], [2]), ValueError),
        (lambda: ExportFun("m", "f", 256), ValueError),
        (lambda: Map([(1, 1), (1, 2)]), ValueError),
        (lambda: LocalFun(b"x", Atom("m"), 0, b"", 0, 0, 0, Pid("a@h", 1), ()), ValueError),
    ],
)
def test_validation(make, error):
    with pytest.raises(error):
        make()


def test_map_lookup_uses_erlang_equality():
    m = Map([(1, "int"), (1.0, "float"), (True, "atom true"), ([104, 105], "string")])
    assert m[1] == "int" and m[1.0] == "float" and m[True] == "atom true"
    assert m[Atom("true")] == "atom true"
    assert m[[104, 105]] == "string"
    assert [1] not in m and 2 not in m and object() not in m
    with pytest.raises(KeyError):
        m[2]
    assert len(m) == 4 and list(m) == [1, 1.0, True, [104, 105]]
    assert Map({Atom("a"): 1}) == {Atom("a"): 1}
    assert Map([(1, 2), (3, 4)]) == Map([(3, 4), (1, 2)])
    assert Map([(1, 2)]) != Map([(1.0, 2)])


def test_local_fun_from_decoder_is_immutable():
    data = quicdist.encode(ExportFun("m", "f", 1))
    assert quicdist.decode(data) == ExportFun("m", "f", 1)
    body = bytes(1 + 16 + 8) + b"w\x01ma\x00a\x00" + b"Xw\x03a@h" + bytes(12)
    fun_bytes = b"\x83p" + (len(body) + 4).to_bytes(4, "big") + body
    fun = quicdist.decode(fun_bytes)
    with pytest.raises(AttributeError):
        fun.arity = 3
    assert pickle.loads(pickle.dumps(fun)) == fun


def test_error_tree():
    for cls in (ConfigurationError, DecodeError, EncodeError, QuicDistTimeoutError, TermError):
        assert issubclass(cls, QuicDistError)
    assert issubclass(QuicDistTimeoutError, TimeoutError)
    assert issubclass(ConfigurationError, ValueError)
    err = DecodeError("bad", 4)
    assert str(err) == "bad (at byte 4)" and err.offset == 4
    again = pickle.loads(pickle.dumps(err))
    assert (again.message, again.offset, str(again)) == ("bad", 4, "bad (at byte 4)")
    assert str(DecodeError("no offset")) == "no offset"
