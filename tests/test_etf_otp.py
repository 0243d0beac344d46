"""Live interop with a real Erlang/OTP: ``erl`` and ``erlc`` on PATH (erlang-nox).

One ``erlc`` and one ``erl`` run for the whole module (the ``otp`` fixture),
driving ``tests/erl/quicdist_etf_helper.erl``:

* Erlang -> Python: OTP writes the named terms, random terms for a fixed
  seed and for a fresh seed (printed in failures; set QUICDIST_ERL_SEED to
  replay one), the 1 MiB binary, and terms from a distributed node with a
  real, unique node name; each must round-trip byte-exact through
  ``decode``/``encode`` (the checks of ``tests/test_etf_vectors.py``).
* Python -> Erlang: every row of the encode table in ``quicdist/etf.py``
  (``MAPPING`` below): OTP's ``binary_to_term`` of our bytes must be ``=:=``
  the expected term, written as Erlang source, and (where the mapping is
  canonical) our bytes must equal OTP's own ``term_to_binary`` of it.
* Hypothesis-generated Python terms, re-encoded by OTP: they decode to the
  normalised original, and (without multi-key maps, whose order OTP may
  change) OTP's bytes are ours.

The distributed node uses ``-start_epmd false -dist_listen false``: it has a
name and a creation but registers nowhere and opens no socket, so nothing
outlives the test.

References have 1 to 5 ids (the constructor and the decoder refuse 0):
OTP 25's binary_to_term accepts a 0-id reference only at the very end of its
input; elsewhere it raises badarg, or crashes the VM with SIGSEGV
(``[Ref | false]`` with a 0-id ``Ref``: 83 6c 00 00 00 01 5a 00 00 77 03 61
40 62 00 00 00 01 77 05 66 61 6c 73 65).
"""

from __future__ import annotations

import enum
import os
import random
import secrets
import shutil
import signal
import struct
import subprocess
import time
from array import array
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

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
    decode,
    encode,
)
from quicdist.errors import EncodeError

from .test_etf_vectors import (
    VECTORS as COMMITTED,
    Vector,
    check_compressed,
    check_other_forms,
    check_round_trip,
    first_difference,
    has_multikey_map,
    hexdiff,
    identity,
    read_vectors,
    short,
    walk,
)


ERL = shutil.which("erl")
ERLC = shutil.which("erlc")

pytestmark = [
    pytest.mark.erl,
    pytest.mark.skipif(
        ERL is None or ERLC is None,
        reason="erl not found: install erlang-nox (make test does this)",
    ),
]

HELPER = Path(__file__).parent / "erl" / "quicdist_etf_helper.erl"
FIXED_SEED = 42
RANDOM_COUNT = 150  # per seed
RANDOM_DEPTH = 4
HYPOTHESIS_EXAMPLES = 200
ERL_TIMEOUT = 120  # seconds, for the one erl run (it takes a few)


def _fresh_seed() -> int:
    env = os.environ.get("QUICDIST_ERL_SEED")
    return int(env) if env else random.SystemRandom().randrange(1 << 62)


FRESH_SEED = _fresh_seed()


# ---------------------------------------------------------------------------
# Erlang source text for Python values

def erl_quote(text: str, quote: str) -> str:
    out = []
    for ch in text:
        if ch == "\\" or ch == quote:
            out.append("\\" + ch)
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\x{{{ord(ch):X}}}")
        else:
            out.append(ch)
    return quote + "".join(out) + quote


def erl_atom(text: str) -> str:
    return erl_quote(text, "'")


def erl_utf8(text: str) -> str:
    return f"<<{erl_quote(text, chr(34))}/utf8>>"


def erl_bytes(data: bytes) -> str:
    return "<<" + ",".join(map(str, data)) + ">>"


def erl_float(x: float) -> str:
    text = repr(x)
    if "e" in text:
        mantissa, exp = text.split("e")
        if "." not in mantissa:
            mantissa += ".0"
        return f"{mantissa}e{int(exp)}"
    return text


def mk_pid(node: str, id_: int, serial: int, creation: int) -> str:
    return f"quicdist_etf_helper:mk_pid({erl_atom(node)}, {id_}, {serial}, {creation})"


def mk_ref(node: str, creation: int, ids: tuple[int, ...]) -> str:
    return f"quicdist_etf_helper:mk_ref({erl_atom(node)}, {creation}, {list(ids)})"


def mk_port(node: str, id_: int, creation: int) -> str:
    return f"quicdist_etf_helper:mk_port({erl_atom(node)}, {id_}, {creation})"


class _Kind(enum.IntEnum):
    BIG = 300


class _Float(float):
    pass


class _Str(str):
    pass


# ---------------------------------------------------------------------------
# The encode mapping of quicdist/etf.py, row by row

@dataclass(frozen=True)
class Case:
    id: str
    value: Any
    erl: str  # the expected term, as an Erlang expression
    exact: bool = True  # our bytes must equal term_to_binary(Expected, Opts)
    compressed: int = 0

    @property
    def opts(self) -> str:
        if self.compressed:
            return f"[{{minor_version, 2}}, {{compressed, {self.compressed}}}]"
        return "[{minor_version, 2}]"


R = "remote@host"
U = "n\u00f6de@h\u00f6st"
_mv_words = memoryview(array("H", [1, 2, 0xFFFF]))

MAPPING = [
    # int (and int subclasses but bool): integer, bignum beyond 64 bits
    Case("int_0", 0, "0"),
    Case("int_255", 255, "255"),
    Case("int_256", 256, "256"),
    Case("int_m1", -1, "-1"),
    Case("int_i32_max", 2**31 - 1, "2147483647"),
    Case("int_i32_min", -(2**31), "-2147483648"),
    Case("int_2_31", 2**31, "2147483648"),
    Case("int_u64_max", 2**64 - 1, "18446744073709551615"),
    Case("int_m2_64", -(2**64), "-(1 bsl 64)"),
    Case("big_255_bytes", 2**2040 - 1, "(1 bsl 2040) - 1"),
    Case("big_256_bytes", 2**2040, "1 bsl 2040"),
    Case("big_m5000_bits", -(2**5000 + 12345), "-((1 bsl 5000) + 12345)"),
    Case("int_subclass", _Kind.BIG, "300"),
    # float
    Case("float_0", 0.0, "0.0"),
    Case("float_neg_0", -0.0, "-0.0"),
    Case("float_1_5", 1.5, "1.5"),
    Case("float_0_1", 0.1, erl_float(0.1)),
    Case("float_third", 1 / 3, erl_float(1 / 3)),
    Case("float_1e16", 1e16, erl_float(1e16)),
    Case("float_min_subnormal", 5e-324, erl_float(5e-324)),
    Case("float_max", 1.7976931348623157e308, erl_float(1.7976931348623157e308)),
    Case("float_m_min_normal", -2.2250738585072014e-308, erl_float(-2.2250738585072014e-308)),
    Case("float_subclass", _Float(2.5), "2.5"),
    # True / False / None
    Case("true", True, "true"),
    Case("false", False, "false"),
    Case("none", None, "undefined"),
    # Atom
    Case("atom_ok", Atom("ok"), "ok"),
    Case("atom_empty", Atom(""), "''"),
    Case("atom_undefined", Atom("undefined"), "undefined"),
    Case("atom_true", Atom("true"), "true"),
    Case("atom_quote", Atom("it's \"q\" \\"), erl_atom("it's \"q\" \\")),
    Case("atom_space", Atom("hello world"), "'hello world'"),
    Case("atom_latin1", Atom("h\u00e9llo"), erl_atom("h\u00e9llo")),
    Case("atom_utf8", Atom("\u65e5\u672c"), erl_atom("\u65e5\u672c")),
    Case("atom_utf8_4byte", Atom("\U0001f600"), erl_atom("\U0001f600")),
    Case("atom_ascii_255", Atom("x" * 255), "list_to_atom(lists:duplicate(255, $x))"),
    Case("atom_latin1_255", Atom("\u00e9" * 255), "list_to_atom(lists:duplicate(255, 16#E9))"),
    Case("atom_utf8_255", Atom("\U0001f600" * 255),
         "list_to_atom(lists:duplicate(255, 16#1F600))"),
    # str -> UTF-8 binary
    Case("str_empty", "", "<<>>"),
    Case("str_abc", "abc", erl_utf8("abc")),
    Case("str_unicode", "h\u00e9llo \u2603 \U0001f600", erl_utf8("h\u00e9llo \u2603 \U0001f600")),
    Case("str_escapes", 'q " b \\ nl \n nul \x00', erl_utf8('q " b \\ nl \n nul \x00')),
    Case("str_subclass", _Str("sub"), erl_utf8("sub")),
    Case("str_100k", "ab" * 50000, 'binary:copy(<<"ab">>, 50000)'),
    # bytes, bytearray, memoryview -> binary
    Case("bytes_empty", b"", "<<>>"),
    Case("bytes_00_ff", b"\x00\xff", "<<0,255>>"),
    Case("bytes_all", bytes(range(256)), "list_to_binary(lists:seq(0, 255))"),
    Case("bytes_100k", b"\x00\x01" * 50000, "binary:copy(<<0,1>>, 50000)"),
    Case("bytearray", bytearray(b"xy"), '<<"xy">>'),
    Case("bytearray_empty", bytearray(), "<<>>"),
    Case("memoryview", memoryview(b"mv"), '<<"mv">>'),
    Case("memoryview_slice", memoryview(b"abcdef")[1:4], '<<"bcd">>'),
    Case("memoryview_words", _mv_words, erl_bytes(_mv_words.tobytes())),
    # tuple
    Case("tuple_empty", (), "{}"),
    Case("tuple_1", (1,), "{1}"),
    Case("tuple_mixed", (Atom("ok"), "x", None), '{ok, <<"x"/utf8>>, undefined}'),
    Case("tuple_255", tuple(range(255)), "list_to_tuple(lists:seq(0, 254))"),
    Case("tuple_256", tuple(range(256)), "list_to_tuple(lists:seq(0, 255))"),
    # list (STRING_EXT when every element is an int 0..255)
    Case("list_empty", [], "[]"),
    Case("list_bytes", [1, 2, 3], "[1,2,3]"),
    Case("list_string", list(b"hello"), '"hello"'),
    Case("list_all_bytes", list(range(256)), "lists:seq(0, 255)"),
    Case("list_256", [256], "[256]"),
    Case("list_m1", [-1], "[-1]"),
    Case("list_bools", [True, False], "[true, false]"),
    Case("list_none", [None], "[undefined]"),
    Case("list_int_float", [1, 2.0], "[1, 2.0]"),
    Case("list_nil", [[]], "[[]]"),
    Case("list_str_bytes", ["a", b"b"], '[<<"a"/utf8>>, <<"b">>]'),
    Case("list_65535_bytes", [1] * 65535, "lists:duplicate(65535, 1)"),
    Case("list_65536_bytes", [1] * 65536, "lists:duplicate(65536, 1)"),
    Case("list_int_subclass", [_Kind.BIG, 1], "[300, 1]"),
    # dict / Mapping -> map, keys in iteration order
    Case("dict_empty", {}, "#{}"),
    Case("dict_atom", {Atom("a"): 1}, "#{a => 1}"),
    Case("dict_str_bytes", {"k": b"v"}, '#{<<"k"/utf8>> => <<"v">>}'),
    Case("dict_tuple_key", {(1, 2): [3]}, "#{{1,2} => [3]}"),
    Case("dict_none_true", {None: True}, "#{undefined => true}"),
    Case("dict_nested", {Atom("a"): {Atom("b"): {}}}, "#{a => #{b => #{}}}"),
    Case("dict_multi", {Atom("z"): 1, Atom("a"): 2, 3: "c"}, '#{z => 1, a => 2, 3 => <<"c"/utf8>>}',
         exact=False),
    Case("dict_40", {i: i * i for i in range(40)},
         "maps:from_list([{I, I * I} || I <- lists:seq(0, 39)])", exact=False),
    Case("mapping_proxy", MappingProxyType({Atom("m"): 1}), "#{m => 1}"),
    Case("ordered_dict", OrderedDict([(1, 2)]), "#{1 => 2}"),
    # Map: keys a dict cannot hold
    Case("map_list_key", Map([([1, 2], Atom("x"))]), "#{[1,2] => x}"),
    Case("map_int_float", Map([(1, "i"), (1.0, "f")]), '#{1 => <<"i"/utf8>>, 1.0 => <<"f"/utf8>>}',
         exact=False),
    Case("map_true_1", Map([(True, 1), (1, 2)]), "#{true => 1, 1 => 2}", exact=False),
    Case("map_map_key", Map([({Atom("a"): 1}, 2)]), "#{#{a => 1} => 2}"),
    # ImproperList
    Case("improper_int", ImproperList([1, 2], 3), "[1,2|3]"),
    Case("improper_bytes_atom", ImproperList([97, 98], Atom("c")), "[97,98|c]"),
    Case("improper_str_bytes", ImproperList(["x"], b"y"), '[<<"x"/utf8>>|<<"y">>]'),
    Case("improper_tuple", ImproperList([1], ()), "[1|{}]"),
    Case("improper_none", ImproperList([None], None), "[undefined|undefined]"),
    Case("improper_alias", ImproperList([Atom("alias")], Reference(R, 1, (1, 2, 3))),
         f"[alias|{mk_ref(R, 1, (1, 2, 3))}]"),
    # Pid / Reference / Port built in Python
    Case("pid_local", Pid("nonode@nohost", 5, 6, 0), 'list_to_pid("<0.5.6>")'),
    Case("pid_remote", Pid(R, 1, 2, 3), mk_pid(R, 1, 2, 3)),
    Case("pid_remote_max", Pid(R, 2**32 - 1, 2**32 - 1, 2**32 - 1),
         mk_pid(R, 2**32 - 1, 2**32 - 1, 2**32 - 1)),
    Case("pid_unicode_node", Pid(U, 1, 0, 7), mk_pid(U, 1, 0, 7)),
    Case("ref_local", Reference("nonode@nohost", 0, (3, 2, 1)), 'list_to_ref("#Ref<0.1.2.3>")'),
    Case("ref_remote_1", Reference(R, 1, (7,)), mk_ref(R, 1, (7,))),
    Case("ref_remote_3", Reference(R, 0xDEADBEEF, (1, 2, 3)), mk_ref(R, 0xDEADBEEF, (1, 2, 3))),
    Case("ref_remote_5_max", Reference(R, 2**32 - 1, (2**32 - 1,) * 5),
         mk_ref(R, 2**32 - 1, (2**32 - 1,) * 5)),
    Case("port_local", Port("nonode@nohost", 7, 0), 'list_to_port("#Port<0.7>")'),
    Case("port_remote", Port(R, 42, 9), mk_port(R, 42, 9)),
    Case("port_v3_max", Port(R, 2**28 - 1, 9), mk_port(R, 2**28 - 1, 9)),
    Case("port_v4_min", Port(R, 2**28, 9), mk_port(R, 2**28, 9)),
    Case("port_u32_max", Port(R, 2**32 - 1, 9), mk_port(R, 2**32 - 1, 9)),
    Case("port_2_32", Port(R, 2**32, 9), mk_port(R, 2**32, 9)),
    Case("port_u64_max", Port(R, 2**64 - 1, 2**32 - 1), mk_port(R, 2**64 - 1, 2**32 - 1)),
    # BitBinary
    Case("bits_3", BitBinary(b"\xa0", 3), "<<5:3>>"),
    Case("bits_9", BitBinary(b"\xff\x80", 1), "<<255, 1:1>>"),
    Case("bits_7", BitBinary(b"\xfe", 7), "<<127:7>>"),
    Case("bits_20", BitBinary(b"\xab\xcd\xe0", 4), "<<16#ab, 16#cd, 16#e:4>>"),
    Case("bits_dirty_low_bits", BitBinary(b"\xff", 3), "<<7:3>>"),
    # ExportFun
    Case("fun_lists_map", ExportFun("lists", "map", 2), "fun lists:map/2"),
    Case("fun_erlang_plus", ExportFun("erlang", "+", 2), "fun erlang:'+'/2"),
    Case("fun_unicode_255", ExportFun("m\u00f6", "\u2603", 255),
         f"erlang:make_fun({erl_atom('m' + chr(0xF6))}, {erl_atom(chr(0x2603))}, 255)"),
    # nesting
    Case("nested_reply", {Atom("reply"): [(1, "x", None, [b"y", {Atom("k"): 2.5}])]},
         '#{reply => [{1, <<"x"/utf8>>, undefined, [<<"y">>, #{k => 2.5}]}]}'),
    Case("nested_deep", [[[[[[[[(Atom("deep"),)]]]]]]]], "[[[[[[[[{deep}]]]]]]]]"),
    # compressed=N: what term_to_binary(T, [{compressed, N}, {minor_version, 2}]) gives
    Case("z6_list", [1] * 1000, "lists:duplicate(1000, 1)", compressed=6),
    Case("z9_str", "x" * 1000, 'binary:copy(<<"x">>, 1000)', compressed=9),
    Case("z1_bytes", bytes(range(256)) * 4, "binary:copy(list_to_binary(lists:seq(0, 255)), 4)",
         compressed=1),
    Case("z6_small_stays_plain", b"abc", '<<"abc">>', compressed=6),
    Case("z6_tie_compresses", b"a" * 15, "binary:copy(<<$a>>, 15)", compressed=6),
    Case("z6_tuple", (Atom("ok"), [Atom("ok")] * 100), "{ok, lists:duplicate(100, ok)}",
         compressed=6),
]

#: Python types the encode table of quicdist/etf.py names; MAPPING covers each.
DOCUMENTED_TYPES = {
    int, _Kind, float, _Float, bool, type(None), Atom, str, _Str, bytes, bytearray, memoryview,
    tuple, list, dict, MappingProxyType, OrderedDict, Map, ImproperList, Pid, Reference, Port,
    BitBinary, ExportFun,
}

#: Pairs of keys that differ in Python but are the same Erlang term.
DUPLICATE_KEYS = {
    "str_and_bytes": ("a", b"a"),
    "none_and_undefined": (None, Atom("undefined")),
    "true_and_atom_true": (True, Atom("true")),
    "map_keys_in_two_orders": ({Atom("a"): 1, Atom("b"): 2}, {Atom("b"): 2, Atom("a"): 1}),
}


def _raw_duplicate_map(keys) -> bytes:
    """The MAP_EXT a naive encoder would write for {k1 => 1, k2 => 2}."""
    return b"\x83t\x00\x00\x00\x02" + b"".join(
        encode(key)[1:] + encode(value)[1:] for key, value in zip(keys, (1, 2), strict=True))


# ---------------------------------------------------------------------------
# Hypothesis terms, and what they look like after a trip through Erlang

_text = st.text(st.characters(codec="utf-8"), max_size=12)
# (Strategies are built so that their reprs stay short: Hypothesis renders
# them, and a huge repr is a warning, which this suite turns into an error.)
_atoms = st.one_of(
    _text.map(Atom),
    st.sampled_from(["ok", "undefined", "true", "false"]).map(Atom),
    st.sampled_from(["x", "\u00e9", "\U0001f600"]).map(lambda c: Atom(c * 255)),
)
_ints = st.one_of(
    st.integers(-300, 300),
    st.integers(-(2**70), 2**70),
    st.builds(lambda bits, low, neg: -((1 << bits) + low) if neg else (1 << bits) + low,
              st.integers(64, 3000), st.integers(0, 2**64), st.booleans()),
    st.sampled_from([2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**64 - 1, 2**64]),
    st.sampled_from([2039, 2040, 2047, 2048]).map(lambda bits: 1 << bits),
)
_u32 = st.integers(0, 2**32 - 1)
_nodes = st.sampled_from(["a@b", R, U, "x@127.0.0.1", "\U0001f600@h"])
_floats = st.floats(allow_nan=False, allow_infinity=False)
_leaves = st.one_of(
    _ints, _floats, st.booleans(), st.none(), _atoms, _text,
    st.binary(max_size=24), st.binary(max_size=24).map(bytearray),
    st.binary(max_size=24).map(memoryview),
    st.builds(Pid, _nodes, _u32, _u32, _u32),
    # At least one id: see the module docstring.
    st.builds(Reference, _nodes, _u32, st.lists(_u32, min_size=1, max_size=5)),
    st.builds(Port, _nodes, st.one_of(st.integers(0, 2**64 - 1),
                                      st.sampled_from([2**28 - 1, 2**28, 2**32 - 1, 2**32])),
              _u32),
    st.builds(BitBinary, st.binary(min_size=1, max_size=8), st.integers(1, 7)),
    st.builds(ExportFun, _atoms, _atoms, st.integers(0, 255)),
)
_keys = st.one_of(_ints, _atoms, st.binary(max_size=8), _text, _floats, st.booleans(),
                  st.none(), st.tuples(_ints | _atoms, _text))


def _dict_of(d: dict) -> dict:
    """Drop keys that repeat an earlier key as Erlang terms ('a' and b'a', ...)."""
    seen: dict[Any, tuple] = {}
    for k, v in d.items():
        seen.setdefault(identity(k), (k, v))
    return dict(seen.values())


def _map_of(pairs: list) -> Map:
    seen: dict[Any, tuple] = {}
    for k, v in pairs:
        seen.setdefault(identity(k), (k, v))
    return Map(seen.values())


def _containers(children):
    # No .filter(): when a filter gives up, Hypothesis renders the (large)
    # strategy in a note. Values are mapped into shape instead.
    return st.one_of(
        st.lists(children, max_size=5),
        st.lists(children, max_size=5).map(tuple),
        st.lists(st.integers(0, 255), max_size=12),
        st.dictionaries(_keys, children, max_size=4).map(_dict_of),
        st.tuples(st.lists(children, min_size=1, max_size=3),
                  _leaves | st.lists(children, max_size=3).map(tuple))
        .map(lambda t: ImproperList(*t)),
        st.lists(st.tuples(st.lists(children, max_size=2) | _keys, children),
                 max_size=3).map(_map_of),
    )


terms = st.recursive(_leaves, _containers, max_leaves=25)


def normalise(t: Any) -> Any:
    """What decode() gives back for ``t`` after a trip through Erlang."""
    if t is True or t is False:
        return t
    if t is None:
        return Atom("undefined")
    if isinstance(t, Atom):
        return True if t == "true" else False if t == "false" else Atom(str(t))
    if isinstance(t, int):
        return int(t)
    if isinstance(t, float):
        return float(t)
    if isinstance(t, str):
        return t.encode("utf-8")
    if isinstance(t, (bytes, bytearray, memoryview)):
        return memoryview(t).cast("B").tobytes()
    if isinstance(t, tuple):
        return tuple(normalise(x) for x in t)
    if isinstance(t, list):
        return [normalise(x) for x in t]
    if isinstance(t, ImproperList):
        return ImproperList([normalise(x) for x in t.elements], normalise(t.tail))
    if isinstance(t, Mapping):
        pairs = [(normalise(k), normalise(v)) for k, v in t.items()]
        try:
            d = dict(pairs)
            if len(d) == len(pairs):
                return d
        except TypeError:
            pass
        return Map(pairs)
    return t


# ---------------------------------------------------------------------------
# Running the helper

def _run(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, ERL_CRASH_DUMP_SECONDS="0", ERL_CRASH_DUMP=os.devnull)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{cmd[0]} did not finish within {timeout} s and was killed\n"
                    f"command: {cmd}\nstdout:\n{out.decode(errors='replace')[-3000:]}\n"
                    f"stderr:\n{err.decode(errors='replace')[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _u16(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


def _u32(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


@dataclass
class CheckResult:
    status: int  # 0 ok (=:=), 1 mismatch, 2 binary_to_term failed, 3 bad expression
    bytes_equal: bool
    detail: str
    otp: bytes


def _read_check(data: bytes) -> dict[str, CheckResult]:
    assert data[:4] == b"QDR1", data[:8]
    (count,) = struct.unpack_from(">I", data, 4)
    pos, out = 8, {}
    for _ in range(count):
        (n,) = struct.unpack_from(">H", data, pos)
        name = data[pos + 2:pos + 2 + n].decode()
        pos += 2 + n
        status, equal = data[pos], data[pos + 1]
        (n,) = struct.unpack_from(">I", data, pos + 2)
        detail = data[pos + 6:pos + 6 + n].decode()
        pos += 6 + n
        (n,) = struct.unpack_from(">I", data, pos)
        out[name] = CheckResult(status, bool(equal), detail, data[pos + 4:pos + 4 + n])
        pos += 4 + n
    assert pos == len(data)
    return out


def _read_reencode(data: bytes) -> list[tuple[int, bytes]]:
    assert data[:4] == b"QDR2", data[:8]
    (count,) = struct.unpack_from(">I", data, 4)
    pos, out = 8, []
    for _ in range(count):
        status = data[pos]
        (n,) = struct.unpack_from(">I", data, pos + 1)
        out.append((status, data[pos + 5:pos + 5 + n]))
        pos += 5 + n
    assert pos == len(data)
    return out


def _hypothesis_batch() -> list[Any]:
    batch: list[Any] = []

    @settings(max_examples=HYPOTHESIS_EXAMPLES, database=None, deadline=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(terms)
    def collect(term):
        batch.append(term)

    collect()
    return batch


@dataclass
class OtpRun:
    node: str
    check: dict[str, CheckResult]
    sent: list[tuple[Any, bytes | None, str]]  # (term, our bytes or None, encode error)
    reencoded: list[tuple[int, bytes]]
    duplicate_key_results: dict[str, tuple[int, bytes]]
    vectors: list[Vector]
    seconds: float


@pytest.fixture(scope="module")
def otp(tmp_path_factory) -> OtpRun:
    started = time.monotonic()
    work = tmp_path_factory.mktemp("otp")
    compiled = _run([ERLC, "-o", str(work), str(HELPER)], work, 120)
    if compiled.returncode != 0:
        pytest.fail(f"erlc failed ({compiled.returncode}):\n"
                    f"{compiled.stdout.decode(errors='replace')}"
                    f"{compiled.stderr.decode(errors='replace')}")

    cases = [_u16(c.id.encode()) + _u32(c.erl.encode()) + _u32(c.opts.encode())
             + _u32(encode(c.value, compressed=c.compressed)) for c in MAPPING]
    (work / "check.in").write_bytes(b"QDC1" + struct.pack(">I", len(cases)) + b"".join(cases))

    sent = []
    for term in _hypothesis_batch():
        try:
            sent.append((term, encode(term), ""))
        except Exception as exc:  # reported by the test, not here
            sent.append((term, None, f"{type(exc).__name__}: {exc}"))
    blobs = [data for _, data, _ in sent if data is not None]
    blobs += [_raw_duplicate_map(keys) for keys in DUPLICATE_KEYS.values()]
    (work / "reencode.in").write_bytes(
        b"QDB1" + struct.pack(">I", len(blobs)) + b"".join(_u32(b) for b in blobs))

    node = f"quicdist_t{os.getpid()}_{secrets.token_hex(4)}@127.0.0.1"
    jobs = ["check", str(work / "check.in"), str(work / "check.out"), ",",
            "reencode", str(work / "reencode.in"), str(work / "reencode.out"), ",",
            "gen", str(work / "gen.out"), "named=1", f"seeds={FIXED_SEED}:{FRESH_SEED}",
            f"count={RANDOM_COUNT}", f"depth={RANDOM_DEPTH}", "big=1", f"dist={node}"]
    cmd = [ERL, "-noinput", "-pa", str(work), "-setcookie", "quicdist_test",
           "-start_epmd", "false", "-dist_listen", "false",
           "-eval", "quicdist_etf_helper:main(init:get_plain_arguments())", "-extra", *jobs]
    ran = _run(cmd, work, ERL_TIMEOUT)
    if ran.returncode != 0:
        how = (f"killed by {signal.Signals(-ran.returncode).name}" if ran.returncode < 0
               else f"exit {ran.returncode}")
        unfinished = [f for f in ("check.out", "reencode.out", "gen.out")
                      if not (work / f).exists()]
        pytest.fail(f"erl helper failed ({how}) with {unfinished} not written; inputs kept in "
                    f"{work}; fresh seed {FRESH_SEED}\n"
                    f"command: {cmd}\nstdout:\n{ran.stdout.decode(errors='replace')[-3000:]}\n"
                    f"stderr:\n{ran.stderr.decode(errors='replace')[-5000:]}")

    reencoded = _read_reencode((work / "reencode.out").read_bytes())
    n_dup = len(DUPLICATE_KEYS)
    return OtpRun(
        node=node,
        check=_read_check((work / "check.out").read_bytes()),
        sent=sent,
        reencoded=reencoded[:-n_dup],
        duplicate_key_results=dict(zip(DUPLICATE_KEYS, reencoded[-n_dup:], strict=True)),
        vectors=read_vectors((work / "gen.out").read_bytes()),
        seconds=time.monotonic() - started,
    )


# ---------------------------------------------------------------------------
# Erlang -> Python

def _vectors(otp: OtpRun, kind: str) -> list[Vector]:
    def kind_of(v: Vector) -> str:
        if v.name.startswith("random:"):
            return f"random:{v.name.split(':')[1]}"
        if v.name.startswith("dist_"):
            return "dist"
        return "big" if v.name == "bin_1mib" else "named"

    found = [v for v in otp.vectors if kind_of(v) == kind]
    assert found, f"the helper wrote no {kind} vectors"
    return found


def _assert_vectors(vectors: list[Vector], context: str) -> None:
    problems = []
    for v in vectors:
        found = check_round_trip(v) + check_other_forms(v) + check_compressed(v)
        if found:
            problems.append(f"{v.name} = {v.text}\n  " + "\n  ".join(found))
    assert not problems, (f"{context}: {len(problems)} of {len(vectors)} terms fail\n"
                          + "\n".join(problems[:10]))


def test_named_terms_round_trip(otp):
    _assert_vectors(_vectors(otp, "named"), "named terms")


def test_random_terms_round_trip_fixed_seed(otp):
    _assert_vectors(_vectors(otp, f"random:{FIXED_SEED}"), f"random terms, seed {FIXED_SEED}")


def test_random_terms_round_trip_fresh_seed(otp):
    _assert_vectors(_vectors(otp, f"random:{FRESH_SEED}"),
                    f"random terms, fresh seed {FRESH_SEED} "
                    f"(replay with QUICDIST_ERL_SEED={FRESH_SEED})")


def test_one_mib_binary_round_trips(otp):
    (big,) = _vectors(otp, "big")
    assert len(big.forms["v2"]) == 6 + (1 << 20)
    _assert_vectors([big], "1 MiB binary")


def test_distributed_node_terms_round_trip(otp):
    dist = _vectors(otp, "dist")
    _assert_vectors(dist, f"terms of the distributed node {otp.node}")
    by_name = {v.name: decode(v.forms["v2"]) for v in dist}
    assert by_name["dist_node"] == otp.node
    pid = by_name["dist_pid_self"]
    assert pid.node == otp.node and pid.creation != 0, pid
    assert by_name["dist_ref_make"].node == otp.node
    assert by_name["dist_port"].node == otp.node


def _changes_between_runs(term: Any) -> bool:
    """Local pids, refs and ports (and local funs, which hold a pid) differ per
    run, and so does the order of maps with more than 32 keys (hash order)."""
    return any(type(t) is LocalFun
               or (type(t) in (Pid, Reference, Port) and t.node == "nonode@nohost")
               or (isinstance(t, Mapping) and len(t) > 32)
               for t in walk(term))


def test_committed_vectors_match_this_otp(otp):
    """The committed v2 bytes are what this OTP writes, for every named term
    that does not change between runs: tests/vectors is not stale."""
    live = {v.name: v for v in _vectors(otp, "named")}
    committed = {v.name: v for v in COMMITTED}
    release = decode(live["otp_release"].forms["v2"])
    if decode(committed["otp_release"].forms["v2"])[0] != release[0]:
        pytest.skip(f"committed vectors come from another OTP release than {release}")
    compared, stale = 0, []
    for name, v in committed.items():
        if name not in live or name == "otp_release":
            continue
        if _changes_between_runs(decode(v.forms["v2"])):
            continue
        compared += 1
        if v.forms["v2"] != live[name].forms["v2"]:
            stale.append(name)
    missing = [n for n in live if n not in committed and n != "bin_1mib"]
    assert compared > 100
    assert not stale and not missing, (
        f"regenerate tests/vectors (see its README): changed {stale}, missing {missing}")


# ---------------------------------------------------------------------------
# Python -> Erlang

def test_mapping_table_covers_every_documented_row():
    assert {type(c.value) for c in MAPPING} == DOCUMENTED_TYPES
    assert len({c.id for c in MAPPING}) == len(MAPPING)


@pytest.mark.parametrize("case", MAPPING, ids=[c.id for c in MAPPING])
def test_python_to_erlang(otp, case):
    r = otp.check[case.id]
    ours = encode(case.value, compressed=case.compressed)
    what = f"{short(case.value)} should be {case.erl}"
    assert r.status != 3, f"bad expected expression: {r.detail}"
    assert r.status != 2, f"OTP rejected our bytes for {what}: {r.detail}\nours: {ours.hex(' ')}"
    assert r.status == 0, f"OTP decoded {what} to something else: {r.detail}"
    if case.exact:
        assert r.bytes_equal, (f"our bytes for {what} are not OTP's term_to_binary(_, {case.opts}):"
                               f" {hexdiff(r.otp, ours)}")


def test_hypothesis_terms_reencoded_by_otp(otp):
    problems = []
    results = iter(otp.reencoded)
    for term, ours, error in otp.sent:
        if ours is None:
            problems.append(f"encode failed for {short(term)}: {error}")
            continue
        status, payload = next(results)
        if status != 0:
            problems.append(f"OTP rejected {short(term)}: {payload.decode(errors='replace')}\n"
                            f"  ours: {ours[:200].hex(' ')}")
            continue
        expected = normalise(term)
        try:
            back = decode(payload)
        except Exception as exc:
            problems.append(f"cannot decode OTP's bytes for {short(term)}: {exc}")
            continue
        diff = first_difference(back, expected)
        if diff is not None:
            problems.append(f"{short(term)} came back different: {diff}")
        elif not has_multikey_map(expected) and payload != ours:
            problems.append(f"{short(term)}: OTP's bytes differ: {hexdiff(payload, ours)}")
    assert len(otp.sent) >= HYPOTHESIS_EXAMPLES // 2
    assert not problems, (f"{len(problems)} of {len(otp.sent)} hypothesis terms fail:\n"
                          + "\n".join(problems[:10]))


def test_otp_rejects_maps_with_duplicate_keys(otp):
    """Why the encoder refuses such maps: OTP rejects a map whose keys repeat."""
    for name, (status, payload) in otp.duplicate_key_results.items():
        raw = _raw_duplicate_map(DUPLICATE_KEYS[name])
        assert status == 1, f"{name}: OTP accepted {raw.hex(' ')}"
        assert "badarg" in payload.decode()


@pytest.mark.parametrize("name", sorted(DUPLICATE_KEYS))
def test_encoder_refuses_maps_whose_keys_collide_in_erlang(name):
    first, second = DUPLICATE_KEYS[name]
    try:
        value = {first: 1, second: 2}
    except TypeError:  # unhashable keys: only a Map can hold them, and refuses
        with pytest.raises(ValueError, match="duplicate map key"):
            Map([(first, 1), (second, 2)])
        return
    with pytest.raises(EncodeError, match="are the same Erlang term"):
        encode(value)
    with pytest.raises(EncodeError, match="are the same Erlang term"):
        encode(OrderedDict(value))
