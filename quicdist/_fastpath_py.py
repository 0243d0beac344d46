"""Pure-Python twin of ``quicdist._fastpath``: the reference implementation.

This module is the executable specification of the fast path. The Cython
module ``_fastpath.pyx`` exposes the same names with the same signatures and
must give byte-identical results and the same exception types and messages
(``tests/test_fastpath_equivalence.py`` checks this). ``quicdist._accel``
chooses one of the two at import time.

Term codec (External Term Format)
---------------------------------
``encode(term, compressed=0) -> bytes`` and ``decode(data) -> term`` and
``decode_from(data, offset=0) -> (term, end)``. The mapping between Python
values and Erlang terms is documented in ``quicdist/etf.py`` and the README.

The decoder is iterative (an explicit stack instead of recursion) so no
input can raise RecursionError; nesting is limited to ``MAX_DEPTH``.

Framing and send scheduling
---------------------------
``pack_frame``, ``pack_frames``, ``FrameDecoder`` (with the constants
``TICK`` and ``DEFAULT_MAX_FRAME_SIZE``) live in ``quicdist._framing_py``,
``SendScheduler`` in ``quicdist._scheduler_py``; they are re-exported here so
this module stays the one pure twin of ``quicdist._fastpath``.
"""

from __future__ import annotations

import math
import operator
import struct
import zlib
from collections.abc import Mapping
from itertools import chain
from typing import Any

from ._constants import (
    ATOM_CACHE_REF,
    ATOM_CACHE_SIZE,
    ATOM_EXT,
    ATOM_UTF8_EXT,
    BINARY_EXT,
    BIT_BINARY_EXT,
    COMPRESSED,
    EXPORT_EXT,
    FLOAT_EXT,
    FUN_EXT,
    INTEGER_EXT,
    LARGE_BIG_EXT,
    LARGE_TUPLE_EXT,
    LIST_EXT,
    LOCAL_EXT,
    MAP_EXT,
    MAX_ATOM_CHARS,
    MAX_BIG_BYTES,
    MAX_DEPTH,
    MAX_REF_IDS,
    NEW_FLOAT_EXT,
    NEW_FUN_EXT,
    NEW_PID_EXT,
    NEW_PORT_EXT,
    NEW_REFERENCE_EXT,
    NEWER_REFERENCE_EXT,
    NIL_EXT,
    PID_EXT,
    PORT_EXT,
    REFERENCE_EXT,
    SMALL_ATOM_EXT,
    SMALL_ATOM_UTF8_EXT,
    SMALL_BIG_EXT,
    SMALL_INTEGER_EXT,
    SMALL_TUPLE_EXT,
    STRING_EXT,
    V4_PORT_EXT,
    VERSION,
)
from ._framing_py import (
    DEFAULT_MAX_FRAME_SIZE as DEFAULT_MAX_FRAME_SIZE,
    TICK as TICK,
    FrameDecoder,
    pack_frame,
    pack_frames,
)
from ._scheduler_py import SendScheduler
from .errors import ConfigurationError, DecodeError, EncodeError
from .terms import (
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


# The callables the compiled module must also have (tests/test_exports.py);
# the constants TICK and DEFAULT_MAX_FRAME_SIZE are re-exported too, by name.
__all__ = [
    "FrameDecoder",
    "SendScheduler",
    "decode",
    "decode_from",
    "encode",
    "pack_frame",
    "pack_frames",
]

# ---------------------------------------------------------------------------
# Messages shared with the Cython module (kept identical there).

MSG_TRUNCATED = "truncated term"
MSG_TRAILING = "unexpected bytes after the term"
MSG_EMPTY = "empty input"
MSG_DEPTH = f"term nested deeper than {MAX_DEPTH} levels"
MSG_ATOM_LONG = f"atom longer than {MAX_ATOM_CHARS} characters"
MSG_ATOM_UTF8 = "atom is not valid UTF-8"
MSG_EXPECTED_ATOM = "expected an atom"
MSG_EXPECTED_PID = "expected a pid"
MSG_EXPECTED_INT = "expected an integer"
MSG_BIG = "integer larger than Erlang allows"
MSG_SIGN = "invalid sign byte in integer"
MSG_FLOAT = "invalid float"
MSG_BITS = "invalid bit binary"
MSG_REF_LEN = f"reference must have 1 to {MAX_REF_IDS} ids"
MSG_EXPORT_ARITY = "export fun arity must be a small integer"
MSG_FUN = "malformed fun"
MSG_DUP_KEY = "duplicate key in map"
MSG_CACHE_REF = "atom cache references are only valid inside a distribution header"
MSG_NESTED_COMPRESSED = "compressed term inside a term"
MSG_OLD_FUN = "FUN_EXT (pre-OTP 23 funs) is not supported"
MSG_LOCAL = "LOCAL_EXT terms are not supported"
MSG_COMPRESSED_CORRUPT = "corrupt compressed term"
MSG_COMPRESSED_SIZE = "compressed term does not match its declared size"

_unpack_d = struct.Struct(">d").unpack_from
_pack_d = struct.Struct(">d").pack
_FROM = int.from_bytes

_atom_cache: dict[bytes, Atom] = {}


def _bad_version(byte: int) -> str:
    return f"unsupported version byte {byte} (expected 131)"


def _unknown_tag(tag: int) -> str:
    return f"unknown term tag {tag}"


def _too_long(what: str, n: int, left: int) -> str:
    return f"{what} length {n} exceeds the {left} bytes left"


# ---------------------------------------------------------------------------
# Decoding


def _as_buffer(data: Any) -> Any:
    if type(data) is bytes:
        return data
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(
            f"a bytes-like object is required, not {type(data).__name__!r}"
        ) from None
    return _flat(view)


def _flat(view: memoryview) -> memoryview:
    """``view`` as a C-contiguous 1-D view of unsigned bytes.

    Casts when the layout allows it and copies only a strided view, so the
    bytes are always read as 0..255 whatever the exporter's item format.
    """
    if not view.c_contiguous:
        return memoryview(view.tobytes())
    if view.ndim != 1 or view.format != "B":
        return view.cast("B")
    return view


def decode(data: Any) -> Any:
    """Decode one External Term Format term that fills ``data`` exactly.

    Raises:
        DecodeError: the bytes are not exactly one valid term.
        TypeError: ``data`` is not a bytes-like object.
    """
    buf = _as_buffer(data)
    end = len(buf)
    term, pos = _decode_top(buf, 0, end)
    if pos != end:
        raise DecodeError(MSG_TRAILING, pos)
    return term


def decode_from(data: Any, offset: int = 0) -> tuple[Any, int]:
    """Decode the term that starts at ``data[offset]`` (with its 131 byte).

    Returns:
        ``(term, end)`` where ``end`` is the offset just past the term, so
        several concatenated terms can be read one after another.

    Raises:
        DecodeError: no valid term starts at ``offset``.
        ValueError: ``offset`` is outside ``data``.
    """
    buf = _as_buffer(data)
    end = len(buf)
    offset = operator.index(offset)
    if not 0 <= offset <= end:
        raise ValueError(f"offset {offset} is outside the data (length {end})")
    return _decode_top(buf, offset, end)


def _decode_top(buf: Any, pos: int, end: int) -> tuple[Any, int]:
    if pos >= end:
        raise DecodeError(MSG_EMPTY, pos)
    if buf[pos] != VERSION:
        raise DecodeError(_bad_version(buf[pos]), pos)
    pos += 1
    if pos < end and buf[pos] == COMPRESSED:
        return _decode_compressed(buf, pos + 1, end)
    return _decode_body(buf, pos, end)


def _decode_compressed(buf: Any, pos: int, end: int) -> tuple[Any, int]:
    if end - pos < 4:
        raise DecodeError(MSG_TRUNCATED, end)
    size = _FROM(buf[pos:pos + 4], "big")
    pos += 4
    inflater = zlib.decompressobj()
    try:
        # Inflate at most one byte more than declared: the declared size
        # bounds the memory a hostile header can make us allocate.
        body = inflater.decompress(buf[pos:end], size + 1)
    except zlib.error:
        raise DecodeError(MSG_COMPRESSED_CORRUPT, pos) from None
    if len(body) > size:
        raise DecodeError(MSG_COMPRESSED_SIZE, pos)
    if not inflater.eof:
        raise DecodeError(MSG_TRUNCATED, end)
    if len(body) != size:
        raise DecodeError(MSG_COMPRESSED_SIZE, pos)
    consumed = (end - pos) - len(inflater.unused_data)
    try:
        term, inner = _decode_body(body, 0, size)
    except DecodeError as exc:
        raise DecodeError("in compressed term: " + exc.message, exc.offset) from None
    if inner != size:
        raise DecodeError("in compressed term: " + MSG_TRAILING, inner)
    return term, pos + consumed


def _read_atom(buf: Any, pos: int, end: int) -> tuple[Atom, int]:
    """Read an atom term that must be an atom (pid nodes, fun modules)."""
    if pos >= end:
        raise DecodeError(MSG_TRUNCATED, end)
    tag = buf[pos]
    if tag == SMALL_ATOM_UTF8_EXT or tag == SMALL_ATOM_EXT:
        if end - pos < 2:
            raise DecodeError(MSG_TRUNCATED, end)
        n = buf[pos + 1]
        pos += 2
    elif tag == ATOM_UTF8_EXT or tag == ATOM_EXT:
        if end - pos < 3:
            raise DecodeError(MSG_TRUNCATED, end)
        n = (buf[pos + 1] << 8) | buf[pos + 2]
        pos += 3
    elif tag == ATOM_CACHE_REF:
        raise DecodeError(MSG_CACHE_REF, pos)
    else:
        raise DecodeError(MSG_EXPECTED_ATOM, pos)
    if end - pos < n:
        raise DecodeError(MSG_TRUNCATED, end)
    raw = bytes(buf[pos:pos + n])
    return _make_atom(raw, tag == SMALL_ATOM_UTF8_EXT or tag == ATOM_UTF8_EXT, pos), pos + n


def _make_atom(raw: bytes, utf8: bool, pos: int) -> Atom:
    if utf8 or raw.isascii():
        atom = _atom_cache.get(raw)
        if atom is not None:
            return atom
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError(MSG_ATOM_UTF8, pos) from None
        if len(text) > MAX_ATOM_CHARS:
            raise DecodeError(MSG_ATOM_LONG, pos)
        atom = Atom(text)
        if len(_atom_cache) < ATOM_CACHE_SIZE:
            _atom_cache[raw] = atom
        return atom
    if len(raw) > MAX_ATOM_CHARS:
        raise DecodeError(MSG_ATOM_LONG, pos)
    return Atom(raw.decode("latin-1"))


def _read_pid(buf: Any, pos: int, end: int) -> tuple[Pid, int]:
    if pos >= end:
        raise DecodeError(MSG_TRUNCATED, end)
    tag = buf[pos]
    if tag != NEW_PID_EXT and tag != PID_EXT:
        raise DecodeError(MSG_EXPECTED_PID, pos)
    node, pos = _read_atom(buf, pos + 1, end)
    width = 12 if tag == NEW_PID_EXT else 9
    if end - pos < width:
        raise DecodeError(MSG_TRUNCATED, end)
    pid = Pid.__new__(Pid)
    pid._key = (
        node,
        _FROM(buf[pos:pos + 4], "big"),
        _FROM(buf[pos + 4:pos + 8], "big"),
        _FROM(buf[pos + 8:pos + width], "big"),
    )
    return pid, pos + width


def _read_small_int_term(buf: Any, pos: int, end: int) -> tuple[int, int]:
    """An integer that must be SMALL_INTEGER_EXT or INTEGER_EXT (fun fields)."""
    if pos >= end:
        raise DecodeError(MSG_TRUNCATED, end)
    tag = buf[pos]
    if tag == SMALL_INTEGER_EXT:
        if end - pos < 2:
            raise DecodeError(MSG_TRUNCATED, end)
        return buf[pos + 1], pos + 2
    if tag == INTEGER_EXT:
        if end - pos < 5:
            raise DecodeError(MSG_TRUNCATED, end)
        return _FROM(buf[pos + 1:pos + 5], "big", signed=True), pos + 5
    raise DecodeError(MSG_EXPECTED_INT, pos)


# Frame kinds of the explicit decoding stack. A frame is
# [kind, items, wanted, extra]: the container is complete once
# len(items) == wanted.
_TUPLE = 0
_LIST = 1
_MAP = 2
_FUN = 3


def _decode_body(buf: Any, pos: int, end: int) -> tuple[Any, int]:
    stack: list[list[Any]] = []
    while True:
        if pos >= end:
            raise DecodeError(MSG_TRUNCATED, end)
        tag = buf[pos]
        start = pos
        pos += 1
        frame: list[Any] | None = None

        if tag == SMALL_INTEGER_EXT:
            if pos >= end:
                raise DecodeError(MSG_TRUNCATED, end)
            value: Any = buf[pos]
            pos += 1
        elif tag == INTEGER_EXT:
            if end - pos < 4:
                raise DecodeError(MSG_TRUNCATED, end)
            value = _FROM(buf[pos:pos + 4], "big", signed=True)
            pos += 4
        elif tag in (SMALL_ATOM_UTF8_EXT, ATOM_UTF8_EXT, SMALL_ATOM_EXT, ATOM_EXT):
            value, pos = _read_atom(buf, start, end)
            if value == "true":
                value = True
            elif value == "false":
                value = False
        elif tag == SMALL_TUPLE_EXT or tag == LARGE_TUPLE_EXT:
            width = 1 if tag == SMALL_TUPLE_EXT else 4
            if end - pos < width:
                raise DecodeError(MSG_TRUNCATED, end)
            n = _FROM(buf[pos:pos + width], "big")
            pos += width
            if n == 0:
                value = ()
            else:
                if n > end - pos:
                    raise DecodeError(_too_long("tuple", n, end - pos), start)
                frame = [_TUPLE, [], n, None]
        elif tag == NIL_EXT:
            value = []
        elif tag == BINARY_EXT:
            if end - pos < 4:
                raise DecodeError(MSG_TRUNCATED, end)
            n = _FROM(buf[pos:pos + 4], "big")
            pos += 4
            if n > end - pos:
                raise DecodeError(_too_long("binary", n, end - pos), start)
            value = bytes(buf[pos:pos + n])
            pos += n
        elif tag == LIST_EXT:
            if end - pos < 4:
                raise DecodeError(MSG_TRUNCATED, end)
            n = _FROM(buf[pos:pos + 4], "big")
            pos += 4
            if n >= end - pos:
                raise DecodeError(_too_long("list", n, end - pos), start)
            frame = [_LIST, [], n + 1, None]
        elif tag == STRING_EXT:
            if end - pos < 2:
                raise DecodeError(MSG_TRUNCATED, end)
            n = (buf[pos] << 8) | buf[pos + 1]
            pos += 2
            if n > end - pos:
                raise DecodeError(_too_long("string", n, end - pos), start)
            value = list(buf[pos:pos + n])
            pos += n
        elif tag == NEW_FLOAT_EXT:
            if end - pos < 8:
                raise DecodeError(MSG_TRUNCATED, end)
            value = _unpack_d(buf, pos)[0]
            if not math.isfinite(value):
                raise DecodeError(MSG_FLOAT, start)
            pos += 8
        elif tag == MAP_EXT:
            if end - pos < 4:
                raise DecodeError(MSG_TRUNCATED, end)
            n = _FROM(buf[pos:pos + 4], "big")
            pos += 4
            if n == 0:
                value = {}
            else:
                if 2 * n > end - pos:
                    raise DecodeError(_too_long("map", n, end - pos), start)
                frame = [_MAP, [], 2 * n, None]
        elif tag == NEW_PID_EXT or tag == PID_EXT:
            value, pos = _read_pid(buf, start, end)
        elif tag == NEWER_REFERENCE_EXT or tag == NEW_REFERENCE_EXT:
            if end - pos < 2:
                raise DecodeError(MSG_TRUNCATED, end)
            n = (buf[pos] << 8) | buf[pos + 1]
            if n == 0 or n > MAX_REF_IDS:
                raise DecodeError(MSG_REF_LEN, start)
            node, pos = _read_atom(buf, pos + 2, end)
            cwidth = 4 if tag == NEWER_REFERENCE_EXT else 1
            if end - pos < cwidth + 4 * n:
                raise DecodeError(MSG_TRUNCATED, end)
            creation = _FROM(buf[pos:pos + cwidth], "big")
            pos += cwidth
            ids = tuple(_FROM(buf[p:p + 4], "big") for p in range(pos, pos + 4 * n, 4))
            pos += 4 * n
            value = Reference.__new__(Reference)
            value._key = (node, creation, ids)
        elif tag == SMALL_BIG_EXT or tag == LARGE_BIG_EXT:
            width = 1 if tag == SMALL_BIG_EXT else 4
            if end - pos < width:
                raise DecodeError(MSG_TRUNCATED, end)
            n = _FROM(buf[pos:pos + width], "big")
            pos += width
            if n > MAX_BIG_BYTES:
                raise DecodeError(MSG_BIG, start)
            if end - pos < n + 1:
                raise DecodeError(MSG_TRUNCATED, end)
            sign = buf[pos]
            if sign > 1:
                raise DecodeError(MSG_SIGN, pos)
            value = _FROM(buf[pos + 1:pos + 1 + n], "little")
            if sign:
                value = -value
            pos += n + 1
        elif tag == NEW_PORT_EXT or tag == V4_PORT_EXT or tag == PORT_EXT:
            node, pos = _read_atom(buf, pos, end)
            iwidth = 8 if tag == V4_PORT_EXT else 4
            cwidth = 1 if tag == PORT_EXT else 4
            if end - pos < iwidth + cwidth:
                raise DecodeError(MSG_TRUNCATED, end)
            value = Port.__new__(Port)
            value._key = (
                node,
                _FROM(buf[pos:pos + iwidth], "big"),
                _FROM(buf[pos + iwidth:pos + iwidth + cwidth], "big"),
            )
            pos += iwidth + cwidth
        elif tag == BIT_BINARY_EXT:
            if end - pos < 5:
                raise DecodeError(MSG_TRUNCATED, end)
            n = _FROM(buf[pos:pos + 4], "big")
            bits = buf[pos + 4]
            pos += 5
            if n > end - pos:
                raise DecodeError(_too_long("binary", n, end - pos), start)
            if (n == 0) != (bits == 0) or bits > 8:
                raise DecodeError(MSG_BITS, start)
            if bits == 8 or n == 0:
                value = bytes(buf[pos:pos + n])
            else:
                data = bytearray(buf[pos:pos + n])
                data[-1] &= (0xFF << (8 - bits)) & 0xFF
                value = BitBinary.__new__(BitBinary)
                value._key = (bytes(data), bits)
            pos += n
        elif tag == EXPORT_EXT:
            module, pos = _read_atom(buf, pos, end)
            function, pos = _read_atom(buf, pos, end)
            if pos >= end:
                raise DecodeError(MSG_TRUNCATED, end)
            if buf[pos] != SMALL_INTEGER_EXT:
                raise DecodeError(MSG_EXPORT_ARITY, pos)
            if end - pos < 2:
                raise DecodeError(MSG_TRUNCATED, end)
            value = ExportFun.__new__(ExportFun)
            value._key = (module, function, buf[pos + 1])
            pos += 2
        elif tag == NEW_FUN_EXT:
            value, frame, pos = _fun_header(buf, start, end)
        elif tag == FLOAT_EXT:
            if end - pos < 31:
                raise DecodeError(MSG_TRUNCATED, end)
            text = bytes(buf[pos:pos + 31]).rstrip(b"\x00")
            try:
                value = float(text.decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                raise DecodeError(MSG_FLOAT, start) from None
            if not math.isfinite(value):
                raise DecodeError(MSG_FLOAT, start)
            pos += 31
        elif tag == REFERENCE_EXT:
            node, pos = _read_atom(buf, pos, end)
            if end - pos < 5:
                raise DecodeError(MSG_TRUNCATED, end)
            value = Reference.__new__(Reference)
            value._key = (node, buf[pos + 4], (_FROM(buf[pos:pos + 4], "big"),))
            pos += 5
        elif tag == ATOM_CACHE_REF:
            raise DecodeError(MSG_CACHE_REF, start)
        elif tag == COMPRESSED:
            raise DecodeError(MSG_NESTED_COMPRESSED, start)
        elif tag == FUN_EXT:
            raise DecodeError(MSG_OLD_FUN, start)
        elif tag == LOCAL_EXT:
            raise DecodeError(MSG_LOCAL, start)
        else:
            raise DecodeError(_unknown_tag(tag), start)

        if frame is not None:
            if len(stack) >= MAX_DEPTH:
                raise DecodeError(MSG_DEPTH, start)
            stack.append(frame)
            continue

        # Hand the finished value to the enclosing containers, closing every
        # container it completes.
        while stack:
            top = stack[-1]
            items = top[1]
            items.append(value)
            if len(items) < top[2]:
                break
            stack.pop()
            value = _finish(top, pos)
        else:
            return value, pos


def _fun_header(buf: Any, start: int, end: int) -> tuple[Any, list[Any] | None, int]:
    """Parse NEW_FUN_EXT up to its free variables.

    Returns ``(fun, None, pos)`` for a fun without free variables, else
    ``(None, frame, pos)`` with a frame that collects the free variables.
    """
    pos = start + 1
    if end - pos < 4:
        raise DecodeError(MSG_TRUNCATED, end)
    size = _FROM(buf[pos:pos + 4], "big")
    if size < 29:
        raise DecodeError(MSG_FUN, start)
    if size > end - pos:
        raise DecodeError(_too_long("fun", size, end - pos), start)
    fun_end = pos + size
    arity = buf[pos + 4]
    uniq = bytes(buf[pos + 5:pos + 21])
    index = _FROM(buf[pos + 21:pos + 25], "big")
    num_free = _FROM(buf[pos + 25:pos + 29], "big")
    pos += 29
    module, pos = _read_atom(buf, pos, fun_end)
    old_index, pos = _read_small_int_term(buf, pos, fun_end)
    old_uniq, pos = _read_small_int_term(buf, pos, fun_end)
    pid, pos = _read_pid(buf, pos, fun_end)
    extra = (buf, start, fun_end, module, arity, uniq, index, old_index, old_uniq, pid)
    if num_free == 0:
        return _make_fun(extra, [], pos), None, pos
    if num_free > fun_end - pos:
        raise DecodeError(_too_long("fun environment", num_free, fun_end - pos), start)
    return None, [_FUN, [], num_free, extra], pos


def _make_fun(extra: tuple[Any, ...], free: list[Any], pos: int) -> LocalFun:
    buf, start, fun_end, module, arity, uniq, index, old_index, old_uniq, pid = extra
    if pos != fun_end:
        raise DecodeError(MSG_FUN, start)
    return LocalFun(bytes(buf[start:fun_end]), module, arity, uniq, index, old_index,
                    old_uniq, pid, tuple(free))


def _finish(frame: list[Any], pos: int) -> Any:
    kind, items, _wanted, extra = frame
    if kind == _TUPLE:
        return tuple(items)
    if kind == _LIST:
        tail = items.pop()
        if type(tail) is list:
            if items:
                items.extend(tail)
                return items
            return tail
        if type(tail) is ImproperList:
            if not items:
                return tail
            items.extend(tail.elements)
            tail = tail.tail
        elif not items:
            return tail
        value = ImproperList.__new__(ImproperList)
        value._key = (tuple(items), tail)
        return value
    if kind == _MAP:
        n = len(items) // 2
        try:
            result = {items[i]: items[i + 1] for i in range(0, 2 * n, 2)}
            if len(result) == n:
                return result
        except TypeError:
            pass
        try:
            return Map([(items[i], items[i + 1]) for i in range(0, 2 * n, 2)])
        except ValueError:
            raise DecodeError(MSG_DUP_KEY, pos) from None
    return _make_fun(extra, items, pos)


# ---------------------------------------------------------------------------
# Encoding

_NIL = b"j"
_TRUE = b"w\x04true"
_FALSE = b"w\x05false"
_UNDEFINED = b"w\x09undefined"
_pack_u32 = struct.Struct(">I").pack
_pack_i32 = struct.Struct(">i").pack
_pack_u16 = struct.Struct(">H").pack
_atom_bytes_cache: dict[str, bytes] = {}


# Sentinels of the encoder's iterator stack: an exhausted iterator, and the
# end of a proper list's elements (where NIL is written).
_EXHAUSTED = object()
_NIL_ITEM = object()


def _atom_bytes(text: str) -> bytes:
    cached = _atom_bytes_cache.get(text)
    if cached is not None:
        return cached
    if len(text) > MAX_ATOM_CHARS:
        raise EncodeError(f"cannot encode atom: {MSG_ATOM_LONG} ({len(text)})")
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raise EncodeError("cannot encode atom: not valid Unicode (lone surrogate)") from None
    n = len(raw)
    out = (bytes((SMALL_ATOM_UTF8_EXT, n)) if n < 256 else b"v" + _pack_u16(n)) + raw
    if len(_atom_bytes_cache) < ATOM_CACHE_SIZE:
        _atom_bytes_cache[str(text)] = out
    return out


def _int_bytes(value: int) -> bytes:
    if 0 <= value <= 255:
        return bytes((SMALL_INTEGER_EXT, value))
    if -0x80000000 <= value <= 0x7FFFFFFF:
        return b"b" + _pack_i32(value)
    mag = -value if value < 0 else value
    n = (mag.bit_length() + 7) // 8
    if n > MAX_BIG_BYTES:
        raise EncodeError(f"cannot encode integer: {MSG_BIG}")
    head = bytes((SMALL_BIG_EXT, n)) if n < 256 else b"o" + _pack_u32(n)
    return head + (b"\x01" if value < 0 else b"\x00") + mag.to_bytes(n, "little")


def _is_byte(x: Any) -> bool:
    return (type(x) is int or (isinstance(x, int) and not isinstance(x, bool))) and 0 <= x <= 255


def _binary_head(n: int) -> bytes:
    if n > 0xFFFFFFFF:
        raise EncodeError("cannot encode binary: larger than 4 GiB")
    return b"m" + _pack_u32(n)


def encode(term: Any, compressed: int = 0) -> bytes:
    """Encode ``term`` in the External Term Format (with the 131 version byte).

    Args:
        term: the Python value; see ``quicdist.etf`` for the mapping.
        compressed: 0 (default) for plain output, or a zlib level 1..9 to
            compress the term the way ``term_to_binary(T, [{compressed, N}])``
            does (used unless it would make the result longer: a tie
            compresses, as in OTP).

    Raises:
        EncodeError: the value has no Erlang term (wrong type, NaN, an atom
            longer than 255 characters, nesting beyond MAX_DEPTH, ...).
    """
    if type(compressed) is not int or not 0 <= compressed <= 9:
        raise ConfigurationError("compressed must be an int in 0..9")
    data = _encode(term, False)
    if compressed:
        return _compress(data, compressed)
    return data


def exact_key(term: Any) -> bytes:
    """Bytes that are equal exactly when two values are the same Erlang term.

    The encoding with every map's pairs sorted by key, so two maps with the
    same pairs give the same bytes whatever their order; ``1`` and ``1.0``
    stay apart, ``"a"`` and ``b"a"`` (both the binary <<"a">>) come together,
    as in Erlang. Used to find duplicate map keys, and by
    :class:`quicdist.terms.Map` for lookups.
    """
    return _encode(term, True)


# Key types within which Python equality is Erlang equality: a dict whose
# keys all have one of these exact types cannot hold two keys that are the
# same Erlang term.
_SAFE_KEY_TYPES = frozenset(
    {Atom, int, float, str, bytes, bool, Pid, Reference, Port, ExportFun, BitBinary, LocalFun}
)


def _check_map_keys(mapping: Any) -> None:
    """Refuse a mapping whose distinct Python keys are one Erlang term.

    ``{"a": 1, b"a": 2}`` (both are the binary <<"a">>), ``{None: 1,
    Atom("undefined"): 2}`` or ``{True: 1, Atom("true"): 2}`` would make a map
    with a duplicate key, which OTP's binary_to_term rejects.
    """
    keys = iter(mapping)
    first = type(next(keys))
    if first in _SAFE_KEY_TYPES and all(type(k) is first for k in keys):
        return
    seen: dict[bytes, Any] = {}
    for key in mapping:
        other = seen.setdefault(exact_key(key), key)
        if other is not key:
            raise EncodeError(
                f"cannot encode map: keys {other!r} and {key!r} are the same Erlang term"
            )


def _map_items(obj: Any, canonical: bool) -> Any:
    """The pairs of a map to encode, as one flat iterator (None if empty)."""
    if len(obj) >= 2:
        if canonical:
            pairs = sorted(obj.items(), key=lambda kv: exact_key(kv[0]))
            return chain.from_iterable(pairs)
        if type(obj) is not Map:  # a Map's constructor already refused duplicates
            _check_map_keys(obj)
    return chain.from_iterable(obj.items()) if len(obj) else None


def _encode(term: Any, canonical: bool) -> bytes:
    out: list[Any] = [b"\x83"]
    append = out.append
    stack: list[Any] = []
    obj = term
    while True:
        t = type(obj)
        pushed: Any = None
        if t is tuple:
            n = len(obj)
            append(bytes((SMALL_TUPLE_EXT, n)) if n < 256 else b"i" + _pack_u32(n))
            if n:
                pushed = iter(obj)
        elif t is Atom:
            append(_atom_bytes(obj))
        elif t is int:
            append(_int_bytes(obj))
        elif t is bytes:
            append(_binary_head(len(obj)))
            append(obj)
        elif t is list:
            pushed = _encode_list(obj, append)
        elif t is str:
            try:
                raw = obj.encode("utf-8")
            except UnicodeEncodeError:
                raise EncodeError("cannot encode str: not valid Unicode (lone surrogate)") from None
            append(_binary_head(len(raw)))
            append(raw)
        elif t is float:
            append(_float_bytes(obj))
        elif t is dict:
            append(b"t" + _pack_u32(len(obj)))
            pushed = _map_items(obj, canonical)
        elif obj is True:
            append(_TRUE)
        elif obj is False:
            append(_FALSE)
        elif obj is None:
            append(_UNDEFINED)
        elif t is Pid:
            node, id_, serial, creation = obj._key
            append(b"X")
            append(_atom_bytes(node))
            append(_pack_u32(id_) + _pack_u32(serial) + _pack_u32(creation))
        elif t is Reference:
            node, creation, ids = obj._key
            append(b"Z" + _pack_u16(len(ids)))
            append(_atom_bytes(node))
            append(_pack_u32(creation) + b"".join(_pack_u32(i) for i in ids))
        else:
            pushed = _encode_other(obj, append, canonical)

        if pushed is not None:
            if len(stack) >= MAX_DEPTH:
                raise EncodeError(f"cannot encode term: {MSG_DEPTH}")
            stack.append(pushed)

        # Next value: the next item of the innermost unfinished container.
        while stack:
            obj = next(stack[-1], _EXHAUSTED)
            if obj is _EXHAUSTED:
                stack.pop()
            elif obj is _NIL_ITEM:
                append(_NIL)
            else:
                break
        else:
            break
    return b"".join(out)


def _encode_list(obj: list[Any], append: Any) -> Any:
    n = len(obj)
    if n == 0:
        append(_NIL)
        return None
    if n <= 0xFFFF and all(map(_is_byte, obj)):
        append(b"k" + _pack_u16(n))
        append(bytes(obj))
        return None
    if n > 0xFFFFFFFF:
        raise EncodeError("cannot encode list: longer than 2**32-1 elements")
    append(b"l" + _pack_u32(n))
    return chain(obj, (_NIL_ITEM,))


def _float_bytes(value: float) -> bytes:
    if not math.isfinite(value):
        raise EncodeError("cannot encode float: Erlang has no NaN or infinity")
    return b"F" + _pack_d(value)


def _encode_other(obj: Any, append: Any, canonical: bool) -> Any:
    """Everything but the exact built-in types handled inline in encode()."""
    if isinstance(obj, Atom):
        append(_atom_bytes(str(obj)))
    elif isinstance(obj, bool):  # pragma: no cover - bool cannot be subclassed
        append(_TRUE if obj else _FALSE)
    elif isinstance(obj, int):
        append(_int_bytes(int(obj)))
    elif isinstance(obj, float):
        append(_float_bytes(float(obj)))
    elif isinstance(obj, str):
        return _encode_str_subclass(obj, append)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        view = _flat(memoryview(obj))
        append(_binary_head(view.nbytes))
        append(view)
    elif isinstance(obj, tuple):
        n = len(obj)
        append(bytes((SMALL_TUPLE_EXT, n)) if n < 256 else b"i" + _pack_u32(n))
        return iter(obj) if n else None
    elif isinstance(obj, list):
        return _encode_list(obj, append)
    elif isinstance(obj, Mapping):
        append(b"t" + _pack_u32(len(obj)))
        return _map_items(obj, canonical)
    elif isinstance(obj, ImproperList):
        elements, tail = obj._key
        append(b"l" + _pack_u32(len(elements)))
        return chain(elements, (tail,))
    elif isinstance(obj, Pid):
        node, id_, serial, creation = obj._key
        append(b"X")
        append(_atom_bytes(node))
        append(_pack_u32(id_) + _pack_u32(serial) + _pack_u32(creation))
    elif isinstance(obj, Reference):
        node, creation, ids = obj._key
        append(b"Z" + _pack_u16(len(ids)))
        append(_atom_bytes(node))
        append(_pack_u32(creation) + b"".join(_pack_u32(i) for i in ids))
    elif isinstance(obj, Port):
        node, id_, creation = obj._key
        # OTP writes NEW_PORT_EXT only for port numbers of up to 28 bits
        # (ERTS_MAX_V3_PORT_NUMBER) and V4_PORT_EXT above that.
        if id_ <= 0x0FFFFFFF:
            append(b"Y")
            append(_atom_bytes(node))
            append(_pack_u32(id_) + _pack_u32(creation))
        else:
            append(b"x")
            append(_atom_bytes(node))
            append(id_.to_bytes(8, "big") + _pack_u32(creation))
    elif isinstance(obj, BitBinary):
        data, bits = obj._key
        append(b"M" + _pack_u32(len(data)) + bytes((bits,)))
        append(data)
    elif isinstance(obj, ExportFun):
        module, function, arity = obj._key
        append(b"q")
        append(_atom_bytes(module))
        append(_atom_bytes(function))
        append(bytes((SMALL_INTEGER_EXT, arity)))
    elif isinstance(obj, LocalFun):
        append(obj.raw)
    else:
        raise EncodeError(f"cannot encode {type(obj).__qualname__} as an Erlang term")
    return None


def _encode_str_subclass(obj: str, append: Any) -> None:
    try:
        raw = str(obj).encode("utf-8")
    except UnicodeEncodeError:
        raise EncodeError("cannot encode str: not valid Unicode (lone surrogate)") from None
    append(_binary_head(len(raw)))
    append(raw)


def _compress(data: bytes, level: int) -> bytes:
    body = data[1:]
    packed = zlib.compress(body, level)
    # OTP keeps the compressed form when it is no longer than the plain one
    # (131, 80, Size:32, Zlib) vs (131, Body): a tie compresses.
    if len(packed) + 5 > len(body):
        return data
    return b"\x83P" + _pack_u32(len(body)) + packed
