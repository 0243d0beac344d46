"""Golden vectors from a real OTP 25, checked without Erlang.

``tests/vectors/otp25.qdv.gz`` holds, for every term of a wide named set, a
seeded random set and a set made on a distributed node, the bytes OTP's
``term_to_binary`` gave in seven forms (see ``FORMS``). It is written by
``tests/erl/quicdist_etf_helper.erl``; ``tests/vectors/README.md`` has the
command that regenerates it. For each vector:

* ``encode(decode(v2)) == v2``, byte for byte (the canonical form);
* every other form decodes to the same term (compared strictly: types,
  float bits, map keys by their Erlang identity) and re-encodes to ``v2``;
* ``encode(decode(v2), compressed=6 / 9)`` gives OTP's compressed bytes.

The helpers here (reader, strict comparison, byte diffs) are shared with
``tests/test_etf_otp.py``, which runs the same checks on vectors made live.
"""

from __future__ import annotations

import gzip
import reprlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from quicdist import (
    Atom,
    ImproperList,
    LocalFun,
    decode,
    encode,
)


VECTOR_FILE = Path(__file__).parent / "vectors" / "otp25.qdv.gz"

#: Form label -> the term_to_binary options OTP used for it.
FORMS = {
    "v2": "[{minor_version, 2}]",
    "v1": "[] (OTP 25 default, minor_version 1: latin-1 atoms where possible)",
    "v0": "[{minor_version, 0}] (FLOAT_EXT floats)",
    "z6": "[compressed] (level 6, minor_version 1)",
    "z9": "[{compressed, 9}] (minor_version 1)",
    "z6v2": "[compressed, {minor_version, 2}]",
    "z9v2": "[{compressed, 9}, {minor_version, 2}]",
}

#: encode(term, compressed=level) must give OTP's bytes for these forms.
COMPRESSED_FORMS = {"z6v2": 6, "z9v2": 9}


@dataclass(frozen=True)
class Vector:
    name: str
    text: str  # OTP's own rendering of the term (io_lib:write, depth-limited)
    forms: dict[str, bytes]


def read_vectors(data: bytes) -> list[Vector]:
    """Parse the helper's gen output (gzip-compressed or not)."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if data[:4] != b"QDV1":
        raise ValueError(f"not a quicdist vector file (starts with {data[:4]!r})")
    (count,) = struct.unpack_from(">I", data, 4)
    pos = 8
    vectors = []
    for _ in range(count):
        (n,) = struct.unpack_from(">H", data, pos)
        name = data[pos + 2:pos + 2 + n].decode()
        pos += 2 + n
        (n,) = struct.unpack_from(">I", data, pos)
        text = data[pos + 4:pos + 4 + n].decode()
        pos += 4 + n
        nforms = data[pos]
        pos += 1
        forms = {}
        for _ in range(nforms):
            n = data[pos]
            label = data[pos + 1:pos + 1 + n].decode()
            pos += 1 + n
            (n,) = struct.unpack_from(">I", data, pos)
            forms[label] = data[pos + 4:pos + 4 + n]
            pos += 4 + n
        vectors.append(Vector(name, text, forms))
    if data[pos:] != b"QEND":
        raise ValueError(f"vector file does not end after {count} records (at byte {pos})")
    return vectors


# ---------------------------------------------------------------------------
# Strict comparison and diagnostics

_short = reprlib.Repr()
_short.maxlevel = 3
_short.maxstring = 80
_short.maxother = 80
_short.maxlist = _short.maxtuple = _short.maxdict = 8
_pack_d = struct.Struct(">d").pack


def short(value: Any) -> str:
    return _short.repr(value)


def identity(term: Any) -> Any:
    """A hashable value that is equal for two terms exactly when they are the
    same Erlang term (map order, ``True``/``Atom('true')``, ``str``/``bytes``
    and ``1``/``1.0`` all handled as Erlang does)."""
    t = type(term)
    if term is True or term is False or term is None:
        return ("atom", "undefined" if term is None else str(term).lower())
    if isinstance(term, str):
        return ("atom", str(term)) if isinstance(term, Atom) else ("bin", term.encode())
    if isinstance(term, int):
        return ("int", int(term))
    if isinstance(term, float):
        return ("float", _pack_d(term))
    if isinstance(term, (bytes, bytearray, memoryview)):
        return ("bin", memoryview(term).cast("B").tobytes())
    if isinstance(term, tuple):
        return ("tuple", tuple(map(identity, term)))
    if isinstance(term, list):
        return ("list", tuple(map(identity, term)))
    if isinstance(term, Mapping):
        return ("map", frozenset((identity(k), identity(v)) for k, v in term.items()))
    if t is ImproperList:
        return ("improper", tuple(map(identity, term.elements)), identity(term.tail))
    if t is LocalFun:
        return ("fun", term.module, term.arity, term.uniq, term.index, term.old_index,
                term.old_uniq, identity(term.pid), identity(term.free_vars))
    return (t.__name__, term._key)  # Pid, Port, Reference, BitBinary, ExportFun


def first_difference(a: Any, b: Any) -> str | None:
    """Where ``a`` and ``b`` differ as Erlang terms, or None if they are the same.

    Stricter than ``==``: types must match (``True`` is not ``1``, ``1`` is
    not ``1.0``, ``dict`` is not ``Map``), floats compare by their bits
    (``-0.0`` is not ``0.0``), map keys compare by their Erlang identity
    (:func:`identity`), and local funs compare by their decoded fields, not their raw
    bytes (which legitimately differ between minor versions). Iterative, so
    deep terms are fine.
    """
    stack = [(a, b, "term")]
    while stack:
        x, y, path = stack.pop()
        tx = type(x)
        if tx is not type(y):
            return f"{path}: {tx.__name__} {short(x)} vs {type(y).__name__} {short(y)}"
        if tx is float:
            if _pack_d(x) != _pack_d(y):
                return f"{path}: float {x!r} vs {y!r}"
        elif tx is tuple or tx is list:
            if len(x) != len(y):
                return f"{path}: {tx.__name__} of {len(x)} vs {len(y)} elements"
            stack.extend((x[i], y[i], f"{path}[{i}]") for i in range(len(x) - 1, -1, -1))
        elif isinstance(x, Mapping):
            kx = {identity(k): (k, v) for k, v in x.items()}
            ky = {identity(k): (k, v) for k, v in y.items()}
            if kx.keys() != ky.keys():
                only_x = [short(kx[k][0]) for k in kx.keys() - ky.keys()][:3]
                only_y = [short(ky[k][0]) for k in ky.keys() - kx.keys()][:3]
                return f"{path}: map keys differ: only left {only_x}, only right {only_y}"
            for k, (key_x, val_x) in kx.items():
                key_y, val_y = ky[k]
                stack.append((val_x, val_y, f"{path}[{short(key_x)}]"))
                stack.append((key_x, key_y, f"{path}.key({short(key_x)})"))
        elif tx is ImproperList:
            stack.append((x.tail, y.tail, f"{path}.tail"))
            stack.append((x.elements, y.elements, f"{path}.elements"))
        elif tx is LocalFun:
            for field in ("module", "arity", "uniq", "index", "old_index", "old_uniq"):
                if getattr(x, field) != getattr(y, field):
                    return f"{path}.{field}: {getattr(x, field)!r} vs {getattr(y, field)!r}"
            stack.append((x.free_vars, y.free_vars, f"{path}.free_vars"))
            stack.append((x.pid, y.pid, f"{path}.pid"))
        elif x != y:
            return f"{path}: {short(x)} vs {short(y)}"
    return None


def walk(term: Any):
    """Every subterm of ``term`` (iteratively, including map keys and fun envs)."""
    stack = [term]
    while stack:
        t = stack.pop()
        yield t
        if type(t) is tuple or type(t) is list:
            stack.extend(t)
        elif isinstance(t, Mapping):
            for k, v in t.items():
                stack.append(k)
                stack.append(v)
        elif type(t) is ImproperList:
            stack.extend(t.elements)
            stack.append(t.tail)
        elif type(t) is LocalFun:
            stack.extend(t.free_vars)


def has_local_fun(term: Any) -> bool:
    return any(type(t) is LocalFun for t in walk(term))


def has_multikey_map(term: Any) -> bool:
    return any(isinstance(t, Mapping) and len(t) > 1 for t in walk(term))


def hexdiff(expected: bytes, actual: bytes, context: int = 24) -> str:
    """A readable account of how two byte strings differ."""
    if expected == actual:
        return "identical"
    n = min(len(expected), len(actual))
    at = next((i for i in range(n) if expected[i] != actual[i]), n)
    lo = max(0, at - context)
    return (f"lengths {len(expected)} (expected) / {len(actual)} (actual); first difference "
            f"at byte {at}:\n  expected[{lo}:] {expected[lo:at + context].hex(' ')}\n"
            f"  actual  [{lo}:] {actual[lo:at + context].hex(' ')}")


def check_round_trip(v: Vector) -> list[str]:
    """Problems with ``encode(decode(v2)) == v2`` (empty list: none)."""
    b2 = v.forms["v2"]
    try:
        again = encode(decode(b2))
    except Exception as exc:
        return [f"{v.name}: v2 does not round-trip: {type(exc).__name__}: {exc}"]
    if again != b2:
        return [f"{v.name}: encode(decode(v2)) != v2: {hexdiff(b2, again)}"]
    return []


def check_other_forms(v: Vector) -> list[str]:
    """Problems with the non-canonical forms: each must decode to decode(v2)
    and (unless the term holds a local fun, kept as its raw bytes) re-encode
    to v2."""
    problems = []
    canonical = decode(v.forms["v2"])
    funs = has_local_fun(canonical)
    for label, data in v.forms.items():
        if label == "v2":
            continue
        try:
            term = decode(data)
        except Exception as exc:
            problems.append(f"{v.name}/{label}: decode failed: {type(exc).__name__}: {exc}")
            continue
        diff = first_difference(term, canonical)
        if diff is not None:
            problems.append(f"{v.name}/{label}: decodes to a different term: {diff}")
        elif not funs and encode(term) != v.forms["v2"]:
            problems.append(f"{v.name}/{label}: does not re-encode to v2: "
                            f"{hexdiff(v.forms['v2'], encode(term))}")
    return problems


def check_compressed(v: Vector) -> list[str]:
    """Problems with reproducing OTP's compressed (minor_version 2) bytes."""
    problems = []
    term = decode(v.forms["v2"])
    for label, level in COMPRESSED_FORMS.items():
        ours = encode(term, compressed=level)
        if ours != v.forms[label]:
            problems.append(f"{v.name}/{label}: encode(term, compressed={level}) differs from "
                            f"OTP: {hexdiff(v.forms[label], ours)}")
    return problems


def describe(v: Vector) -> str:
    return f"{v.name} = {v.text}"


# ---------------------------------------------------------------------------
# The committed vectors

VECTORS = read_vectors(VECTOR_FILE.read_bytes())
_ids = [v.name for v in VECTORS]


def test_vector_file_is_complete():
    names = [v.name for v in VECTORS]
    assert len(names) == len(set(names)), "duplicate vector names"
    for v in VECTORS:
        assert set(v.forms) == set(FORMS), f"{v.name}: forms {sorted(v.forms)}"
    random = [n for n in names if n.startswith("random:")]
    dist = [n for n in names if n.startswith("dist_")]
    named = len(names) - len(random) - len(dist)
    # What tests/vectors/README.md promises.
    assert named >= 180 and len(random) >= 100 and len(dist) >= 5, (named, len(random), len(dist))
    # The committed set leaves the 1 MiB binary to the live test.
    assert max(len(v.forms["v2"]) for v in VECTORS) < 1 << 20


def test_dist_vectors_carry_a_real_node_name():
    node = decode(next(v for v in VECTORS if v.name == "dist_node").forms["v2"])
    assert node != "nonode@nohost" and "@" in node
    pid = decode(next(v for v in VECTORS if v.name == "dist_pid_self").forms["v2"])
    assert pid.node == node and pid.creation != 0


@pytest.mark.parametrize("vector", VECTORS, ids=_ids)
def test_v2_round_trips_byte_exact(vector):
    problems = check_round_trip(vector)
    assert not problems, f"{describe(vector)}\n" + "\n".join(problems)


@pytest.mark.parametrize("vector", VECTORS, ids=_ids)
def test_older_and_compressed_forms_decode_to_the_same_term(vector):
    problems = check_other_forms(vector)
    assert not problems, f"{describe(vector)}\n" + "\n".join(problems)


@pytest.mark.parametrize("vector", VECTORS, ids=_ids)
def test_compressed_encoding_reproduces_otp(vector):
    # Debian's OTP 25 and Python's zlib module both use the system zlib
    # (1.2.13), so the deflate streams are identical too.
    problems = check_compressed(vector)
    assert not problems, f"{describe(vector)}\n" + "\n".join(problems)
