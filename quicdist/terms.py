"""Python types for the Erlang terms that have no natural Python counterpart.

All of them are immutable and hashable (when what they contain is), compare
by value, pickle, and have a ``repr`` that evaluates back to an equal value.

===================  ==========================================================
Erlang               Python
===================  ==========================================================
atom                 :class:`Atom` (a ``str`` subclass); ``true``/``false`` are
                     ``True``/``False``
pid                  :class:`Pid`
reference            :class:`Reference`
port                 :class:`Port`
bitstring            :class:`BitBinary` (a binary whose bit length is not a
                     multiple of 8)
improper list        :class:`ImproperList` (``[a, b | Tail]``)
``fun M:F/A``        :class:`ExportFun`
``fun (...) -> end`` :class:`LocalFun` (opaque; re-encodes to identical bytes)
map                  ``dict``, or :class:`Map` when its keys cannot be the keys
                     of a ``dict`` (lists as keys, or keys that are distinct in
                     Erlang but equal in Python, such as ``1`` and ``1.0``)
===================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any


__all__ = [
    "Atom",
    "BitBinary",
    "ExportFun",
    "ImproperList",
    "LocalFun",
    "Map",
    "Pid",
    "Port",
    "Reference",
]


class Atom(str):
    """An Erlang atom.

    A ``str`` subclass, so ``Atom("ok") == "ok"``; the encoder is what tells
    them apart: an :class:`Atom` becomes an atom, a plain ``str`` becomes a
    UTF-8 binary. Erlang limits atoms to 255 characters; longer ones are
    rejected when encoded.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Atom({str.__repr__(self)})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Atom, (str(self),))


def _u32(name: str, value: object) -> int:
    if type(value) is not int and not (isinstance(value, int) and not isinstance(value, bool)):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{name} must be in 0..2**32-1, got {value}")
    return int(value)


def _u64(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= 0xFFFFFFFFFFFFFFFF:
        raise ValueError(f"{name} must be in 0..2**64-1, got {value}")
    return int(value)


def _atom(name: str, value: object) -> Atom:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str or Atom, not {type(value).__name__}")
    return value if type(value) is Atom else Atom(value)


class Pid:
    """An Erlang process identifier: ``node``, ``id``, ``serial``, ``creation``.

    ``id`` and ``serial`` are the two 32-bit halves of the process number as
    they appear in NEW_PID_EXT; ``creation`` tells incarnations of a node apart.
    """

    __slots__ = ("_key",)
    _key: tuple[Atom, int, int, int]

    def __init__(self, node: str, id: int, serial: int = 0, creation: int = 0) -> None:
        self._key = (
            _atom("node", node),
            _u32("id", id),
            _u32("serial", serial),
            _u32("creation", creation),
        )

    node = property(lambda self: self._key[0], doc="The node the process lives on (Atom).")
    id = property(lambda self: self._key[1], doc="Process number, low 32 bits.")
    serial = property(lambda self: self._key[2], doc="Process number, high 32 bits.")
    creation = property(lambda self: self._key[3], doc="Node incarnation.")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pid) and other._key == self._key

    def __hash__(self) -> int:
        return hash(("pid", self._key))

    def __repr__(self) -> str:
        node, id_, serial, creation = self._key
        return f"Pid({str(node)!r}, {id_}, {serial}, {creation})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Pid, (str(self._key[0]), *self._key[1:]))


class Port:
    """An Erlang port identifier: ``node``, ``id`` (up to 64 bits), ``creation``."""

    __slots__ = ("_key",)
    _key: tuple[Atom, int, int]

    def __init__(self, node: str, id: int, creation: int = 0) -> None:
        self._key = (_atom("node", node), _u64("id", id), _u32("creation", creation))

    node = property(lambda self: self._key[0], doc="The node the port lives on (Atom).")
    id = property(lambda self: self._key[1], doc="Port number.")
    creation = property(lambda self: self._key[2], doc="Node incarnation.")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Port) and other._key == self._key

    def __hash__(self) -> int:
        return hash(("port", self._key))

    def __repr__(self) -> str:
        node, id_, creation = self._key
        return f"Port({str(node)!r}, {id_}, {creation})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Port, (str(self._key[0]), *self._key[1:]))


class Reference:
    """An Erlang reference: ``node``, ``creation`` and one to five 32-bit ``ids``."""

    __slots__ = ("_key",)
    _key: tuple[Atom, int, tuple[int, ...]]

    def __init__(self, node: str, creation: int, ids: Iterable[int]) -> None:
        ids = tuple(_u32("reference id", i) for i in ids)
        if not 1 <= len(ids) <= 5:
            # OTP 25 crashes on a reference with no ids inside a term.
            raise ValueError(f"a reference has 1 to 5 ids, got {len(ids)}")
        self._key = (_atom("node", node), _u32("creation", creation), ids)

    node = property(lambda self: self._key[0], doc="The node that made the reference (Atom).")
    creation = property(lambda self: self._key[1], doc="Node incarnation.")
    ids = property(lambda self: self._key[2], doc="The reference's 32-bit words (tuple).")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reference) and other._key == self._key

    def __hash__(self) -> int:
        return hash(("ref", self._key))

    def __repr__(self) -> str:
        node, creation, ids = self._key
        return f"Reference({str(node)!r}, {creation}, {ids!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Reference, (str(self._key[0]), *self._key[1:]))


class BitBinary:
    """A bitstring whose length is not a whole number of bytes.

    ``data`` holds the bytes; only the ``bits`` most significant bits of the
    last byte belong to the value (1..7). The unused low bits are cleared, as
    Erlang does. Whole-byte binaries are ``bytes``, never ``BitBinary``.
    """

    __slots__ = ("_key",)
    _key: tuple[bytes, int]

    def __init__(self, data: bytes | bytearray | memoryview, bits: int) -> None:
        data = bytes(data)
        if not isinstance(bits, int) or isinstance(bits, bool):
            raise TypeError("bits must be an int")
        if not data:
            raise ValueError("a BitBinary needs at least one byte")
        if not 1 <= bits <= 7:
            raise ValueError(f"bits must be in 1..7 (a whole byte is bytes), got {bits}")
        last = data[-1] & (0xFF << (8 - bits)) & 0xFF
        if last != data[-1]:
            data = data[:-1] + bytes((last,))
        self._key = (data, bits)

    data = property(lambda self: self._key[0], doc="The bytes, last one partly used.")
    bits = property(lambda self: self._key[1], doc="Bits of the last byte in use (1..7).")

    @property
    def bit_length(self) -> int:
        """Length of the bitstring in bits."""
        return (len(self._key[0]) - 1) * 8 + self._key[1]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BitBinary) and other._key == self._key

    def __hash__(self) -> int:
        return hash(("bits", self._key))

    def __repr__(self) -> str:
        return f"BitBinary({self._key[0]!r}, {self._key[1]})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (BitBinary, self._key)


class ImproperList:
    """A list whose tail is not ``[]``: ``[e1, e2, ... | tail]``.

    ``elements`` is a non-empty tuple and ``tail`` any term that is not a
    list. The ``[alias | Ref]`` tags of OTP's ``gen_server:call`` are of this
    kind and must round-trip exactly.
    """

    __slots__ = ("_key",)
    _key: tuple[tuple[Any, ...], Any]

    def __init__(self, elements: Iterable[Any], tail: Any) -> None:
        elements = tuple(elements)
        if not elements:
            raise ValueError("an improper list needs at least one element")
        if isinstance(tail, (list, ImproperList)):
            raise ValueError("the tail of an ImproperList cannot be a list")
        self._key = (elements, tail)

    elements = property(lambda self: self._key[0], doc="The elements before the tail (tuple).")
    tail = property(lambda self: self._key[1], doc="The final tail (not a list).")

    def __len__(self) -> int:
        return len(self._key[0])

    def __iter__(self) -> Iterator[Any]:
        return iter(self._key[0])

    def __getitem__(self, index: int) -> Any:
        return self._key[0][index]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ImproperList) and other._key == self._key

    def __hash__(self) -> int:
        return hash(("improper", self._key))

    def __repr__(self) -> str:
        return f"ImproperList({list(self._key[0])!r}, {self._key[1]!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (ImproperList, self._key)


class ExportFun:
    """An external fun, ``fun Module:Function/Arity``."""

    __slots__ = ("_key",)
    _key: tuple[Atom, Atom, int]

    def __init__(self, module: str, function: str, arity: int) -> None:
        if not isinstance(arity, int) or isinstance(arity, bool):
            raise TypeError("arity must be an int")
        if not 0 <= arity <= 255:
            raise ValueError(f"arity must be in 0..255, got {arity}")
        self._key = (_atom("module", module), _atom("function", function), arity)

    module = property(lambda self: self._key[0], doc="Module (Atom).")
    function = property(lambda self: self._key[1], doc="Function name (Atom).")
    arity = property(lambda self: self._key[2], doc="Arity (0..255).")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExportFun) and other._key == self._key

    def __hash__(self) -> int:
        return hash(("export", self._key))

    def __repr__(self) -> str:
        m, f, a = self._key
        return f"ExportFun({str(m)!r}, {str(f)!r}, {a})"

    def __reduce__(self) -> tuple[Any, ...]:
        m, f, a = self._key
        return (ExportFun, (str(m), str(f), a))


class LocalFun:
    """A local fun (closure) received from Erlang, kept as opaque bytes.

    Python cannot run it, but it can hold it and send it back: it re-encodes
    to exactly the bytes it was decoded from. The decoded header fields are
    available as attributes for inspection. Instances come from the decoder.

    Attributes:
        raw: the encoded fun, from its NEW_FUN_EXT tag (112) to its end.
        module: the module that defines it (Atom).
        arity: how many arguments it takes.
        uniq, index, old_index, old_uniq: code identity, as in the encoding.
        pid: the process that created it.
        free_vars: the captured environment (tuple of terms).
    """

    __slots__ = ("raw", "module", "arity", "uniq", "index", "old_index", "old_uniq", "pid",
                 "free_vars")

    raw: bytes
    module: Atom
    arity: int
    uniq: bytes
    index: int
    old_index: int
    old_uniq: int
    pid: Pid
    free_vars: tuple[Any, ...]

    def __init__(
        self,
        raw: bytes,
        module: Atom,
        arity: int,
        uniq: bytes,
        index: int,
        old_index: int,
        old_uniq: int,
        pid: Pid,
        free_vars: tuple[Any, ...],
    ) -> None:
        if not isinstance(raw, bytes) or not raw or raw[0] != 112:
            raise ValueError("raw must be the bytes of a NEW_FUN_EXT term, starting with tag 112")
        set_ = object.__setattr__
        set_(self, "raw", raw)
        set_(self, "module", module)
        set_(self, "arity", arity)
        set_(self, "uniq", uniq)
        set_(self, "index", index)
        set_(self, "old_index", old_index)
        set_(self, "old_uniq", old_uniq)
        set_(self, "pid", pid)
        set_(self, "free_vars", tuple(free_vars))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("LocalFun is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LocalFun) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(("fun", self.raw))

    def __repr__(self) -> str:
        return (f"<LocalFun {self.module}:-fun-{self.index}-/{self.arity} "
                f"free_vars={len(self.free_vars)}>")

    def __reduce__(self) -> tuple[Any, ...]:
        return (LocalFun, (self.raw, self.module, self.arity, self.uniq, self.index,
                           self.old_index, self.old_uniq, self.pid, self.free_vars))


def _exact_key(term: Any) -> bytes:
    # Two terms are the same Erlang map key exactly when their canonical
    # encodings (maps sorted) are equal: 1 and 1.0 differ, True and
    # Atom('true') do not. Imported late: the codec imports this module.
    from ._fastpath_py import exact_key

    return exact_key(term)


class Map(Mapping[Any, Any]):
    """An Erlang map that a ``dict`` cannot hold.

    The decoder returns a ``dict`` for a map whenever it can; it returns a
    ``Map`` when some key is unhashable in Python (a list, a dict) or when two
    keys that differ in Erlang are equal in Python (``1`` and ``1.0``, ``1``
    and ``true``). A ``Map`` keeps the pairs in their original order, looks
    keys up with Erlang's exact equality, and encodes back to the same bytes.

    Build one from an iterable of ``(key, value)`` pairs or from a mapping.
    Duplicate keys (in the Erlang sense) raise ``ValueError``.
    """

    __slots__ = ("_pairs", "_index")

    def __init__(self, pairs: Iterable[tuple[Any, Any]] | Mapping[Any, Any] = ()) -> None:
        items = tuple(pairs.items() if isinstance(pairs, Mapping) else pairs)
        index: dict[bytes, int] = {}
        for i, (key, _value) in enumerate(items):
            k = _exact_key(key)
            if k in index:
                raise ValueError(f"duplicate map key {key!r}")
            index[k] = i
        self._pairs: tuple[tuple[Any, Any], ...] = tuple((k, v) for k, v in items)
        self._index = index

    def __getitem__(self, key: Any) -> Any:
        try:
            return self._pairs[self._index[_exact_key(key)]][1]
        except (KeyError, TypeError, ValueError):
            raise KeyError(key) from None

    def __contains__(self, key: object) -> bool:
        try:
            return _exact_key(key) in self._index
        except (TypeError, ValueError):
            return False

    def __iter__(self) -> Iterator[Any]:
        return (k for k, _ in self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def items(self) -> Any:
        """The ``(key, value)`` pairs, in order (a tuple)."""
        return self._pairs

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Map):
            if len(other) != len(self) or other._index.keys() != self._index.keys():
                return False
            return all(
                self._pairs[i][1] == other._pairs[other._index[k]][1]
                for k, i in self._index.items()
            )
        if isinstance(other, Mapping):
            try:
                return self == Map(other)
            except (TypeError, ValueError):
                return False
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("map", frozenset(self._index)))

    def __repr__(self) -> str:
        return f"Map({list(self._pairs)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Map, (self._pairs,))
