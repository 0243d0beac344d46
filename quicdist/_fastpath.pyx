# cython: language_level=3, embedsignature=True
"""Cython fast path of the term codec (External Term Format).

``encode(term, compressed=0) -> bytes``, ``decode(data) -> term`` and
``decode_from(data, offset=0) -> (term, end)``: the same API as the
pure-Python twin ``quicdist._fastpath_py``, which is the specification. For
every input both give byte-identical output, equal terms, and the same
exception type, message and offset; ``tests/test_fastpath_equivalence.py``
checks this differentially.

Like the twin, the encoder and the decoder keep an explicit stack of open
containers (C structs) instead of recursing: no term needs C stack in
proportion to its depth, and an error deep down is as cheap as one near the
top. A container with items is refused when ``MAX_DEPTH`` containers are
already open around it, exactly as in the twin.

Every read is checked against the end of the input before it happens, and
nothing is allocated from a declared length before the bytes it promises
are known to be there. The output of encode() is written straight into the
bytes object that is returned (grown by doubling, shrunk at the end).

Rare shapes that only a hand-corrupted term object can have (a ``Pid``
whose ``_key`` slot was overwritten with something else, subclasses of the
opaque term types) are handed to the twin, so they behave identically by
construction.

The distribution framing (``pack_frame``, ``pack_frames``, ``FrameDecoder``,
``TICK``, ``DEFAULT_MAX_FRAME_SIZE``) and the send scheduler
(``SendScheduler``) are compiled into this module too, from the include files
``_fastpath_framing.pxi`` and ``_fastpath_scheduler.pxi`` at the end; their
pure twins are ``quicdist._framing_py`` and ``quicdist._scheduler_py``.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE, _PyBytes_Resize
from cpython.dict cimport PyDict_Next, PyDict_SetDefault
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_FromDouble
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE, PyList_New, PyList_SET_ITEM
from cpython.long cimport (
    PyLong_AsLongLongAndOverflow,
    PyLong_FromLong,
    PyLong_FromLongLong,
    PyLong_FromUnsignedLong,
    PyLong_FromUnsignedLongLong,
)
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.number cimport PyNumber_Float, PyNumber_Index, PyNumber_Long
from cpython.object cimport PyObject, PyObject_IsInstance, PyObject_Str, PyTypeObject, Py_TYPE
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE, PyTuple_New, PyTuple_SET_ITEM
from cpython.unicode cimport (
    PyUnicode_1BYTE_DATA,
    PyUnicode_AsUTF8AndSize,
    PyUnicode_AsUTF8String,
    PyUnicode_DecodeLatin1,
    PyUnicode_DecodeUTF8,
    PyUnicode_GET_LENGTH,
)
from libc.math cimport isfinite
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy


cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)
    bint PyBytes_Check(object o)
    bint PyByteArray_Check(object o)
    bint PyMemoryView_Check(object o)
    Py_ssize_t PyDict_GET_SIZE(object o)
    # Raw-pointer variants: no reference counting added by Cython.
    PyObject* _new_bytes "PyBytes_FromStringAndSize"(const char* v, Py_ssize_t n) except NULL
    char* _bytes_data "PyBytes_AS_STRING"(PyObject* o)
    PyObject* _new_long "PyLong_FromLong"(long v)
    void _list_set "PyList_SET_ITEM"(object lst, Py_ssize_t i, PyObject* item)  # steals item
    void _list_set_raw "PyList_SET_ITEM"(PyObject* lst, Py_ssize_t i, PyObject* item)
    void _tuple_set_raw "PyTuple_SET_ITEM"(PyObject* tup, Py_ssize_t i, PyObject* item)
    void PyErr_Clear()
    PyTypeObject* _type_of "Py_TYPE"(PyObject* o)
    # Cannot fail on an exact int.
    long long _as_llong "PyLong_AsLongLongAndOverflow"(PyObject* o, int* overflow)
    PyTypeObject PyLong_Type
    PyTypeObject PyFloat_Type
    PyTypeObject PyBytes_Type


import builtins as _builtins
import itertools as _itertools
import zlib as _zlib
from collections.abc import Mapping

from quicdist import _fastpath_py as _py
from quicdist.errors import ConfigurationError, DecodeError, EncodeError
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
# Constants: the values of quicdist._constants, repeated as C constants
# (tests check that the two agree through _c_constants()).

cdef enum:
    VERSION = 131
    NEW_FLOAT_EXT = 70
    BIT_BINARY_EXT = 77
    COMPRESSED = 80
    ATOM_CACHE_REF = 82
    NEW_PID_EXT = 88
    NEW_PORT_EXT = 89
    NEWER_REFERENCE_EXT = 90
    SMALL_INTEGER_EXT = 97
    INTEGER_EXT = 98
    FLOAT_EXT = 99
    ATOM_EXT = 100
    REFERENCE_EXT = 101
    PORT_EXT = 102
    PID_EXT = 103
    SMALL_TUPLE_EXT = 104
    LARGE_TUPLE_EXT = 105
    NIL_EXT = 106
    STRING_EXT = 107
    LIST_EXT = 108
    BINARY_EXT = 109
    SMALL_BIG_EXT = 110
    LARGE_BIG_EXT = 111
    NEW_FUN_EXT = 112
    EXPORT_EXT = 113
    NEW_REFERENCE_EXT = 114
    SMALL_ATOM_EXT = 115
    MAP_EXT = 116
    FUN_EXT = 117
    ATOM_UTF8_EXT = 118
    SMALL_ATOM_UTF8_EXT = 119
    V4_PORT_EXT = 120
    LOCAL_EXT = 121
    MAX_DEPTH = 1000
    MAX_BIG_BYTES = 4194296
    MAX_ATOM_CHARS = 255
    MAX_REF_IDS = 5
    ATOM_CACHE_SIZE = 4096


def _c_constants():
    """The C constants this module was compiled with (name -> value)."""
    return {
        "VERSION": VERSION,
        "NEW_FLOAT_EXT": NEW_FLOAT_EXT,
        "BIT_BINARY_EXT": BIT_BINARY_EXT,
        "COMPRESSED": COMPRESSED,
        "ATOM_CACHE_REF": ATOM_CACHE_REF,
        "NEW_PID_EXT": NEW_PID_EXT,
        "NEW_PORT_EXT": NEW_PORT_EXT,
        "NEWER_REFERENCE_EXT": NEWER_REFERENCE_EXT,
        "SMALL_INTEGER_EXT": SMALL_INTEGER_EXT,
        "INTEGER_EXT": INTEGER_EXT,
        "FLOAT_EXT": FLOAT_EXT,
        "ATOM_EXT": ATOM_EXT,
        "REFERENCE_EXT": REFERENCE_EXT,
        "PORT_EXT": PORT_EXT,
        "PID_EXT": PID_EXT,
        "SMALL_TUPLE_EXT": SMALL_TUPLE_EXT,
        "LARGE_TUPLE_EXT": LARGE_TUPLE_EXT,
        "NIL_EXT": NIL_EXT,
        "STRING_EXT": STRING_EXT,
        "LIST_EXT": LIST_EXT,
        "BINARY_EXT": BINARY_EXT,
        "SMALL_BIG_EXT": SMALL_BIG_EXT,
        "LARGE_BIG_EXT": LARGE_BIG_EXT,
        "NEW_FUN_EXT": NEW_FUN_EXT,
        "EXPORT_EXT": EXPORT_EXT,
        "NEW_REFERENCE_EXT": NEW_REFERENCE_EXT,
        "SMALL_ATOM_EXT": SMALL_ATOM_EXT,
        "MAP_EXT": MAP_EXT,
        "FUN_EXT": FUN_EXT,
        "ATOM_UTF8_EXT": ATOM_UTF8_EXT,
        "SMALL_ATOM_UTF8_EXT": SMALL_ATOM_UTF8_EXT,
        "V4_PORT_EXT": V4_PORT_EXT,
        "LOCAL_EXT": LOCAL_EXT,
        "MAX_DEPTH": MAX_DEPTH,
        "MAX_BIG_BYTES": MAX_BIG_BYTES,
        "MAX_ATOM_CHARS": MAX_ATOM_CHARS,
        "MAX_REF_IDS": MAX_REF_IDS,
        "ATOM_CACHE_SIZE": ATOM_CACHE_SIZE,
    }


# Messages: the twin's, so the two can never drift apart.
cdef object MSG_TRUNCATED = _py.MSG_TRUNCATED
cdef object MSG_TRAILING = _py.MSG_TRAILING
cdef object MSG_EMPTY = _py.MSG_EMPTY
cdef object MSG_DEPTH = _py.MSG_DEPTH
cdef object MSG_ATOM_LONG = _py.MSG_ATOM_LONG
cdef object MSG_ATOM_UTF8 = _py.MSG_ATOM_UTF8
cdef object MSG_EXPECTED_ATOM = _py.MSG_EXPECTED_ATOM
cdef object MSG_EXPECTED_PID = _py.MSG_EXPECTED_PID
cdef object MSG_EXPECTED_INT = _py.MSG_EXPECTED_INT
cdef object MSG_BIG = _py.MSG_BIG
cdef object MSG_SIGN = _py.MSG_SIGN
cdef object MSG_FLOAT = _py.MSG_FLOAT
cdef object MSG_BITS = _py.MSG_BITS
cdef object MSG_REF_LEN = _py.MSG_REF_LEN
cdef object MSG_EXPORT_ARITY = _py.MSG_EXPORT_ARITY
cdef object MSG_FUN = _py.MSG_FUN
cdef object MSG_DUP_KEY = _py.MSG_DUP_KEY
cdef object MSG_CACHE_REF = _py.MSG_CACHE_REF
cdef object MSG_NESTED_COMPRESSED = _py.MSG_NESTED_COMPRESSED
cdef object MSG_OLD_FUN = _py.MSG_OLD_FUN
cdef object MSG_LOCAL = _py.MSG_LOCAL
cdef object MSG_COMPRESSED_CORRUPT = _py.MSG_COMPRESSED_CORRUPT
cdef object MSG_COMPRESSED_SIZE = _py.MSG_COMPRESSED_SIZE
cdef object MSG_ENC_DEPTH = "cannot encode term: " + _py.MSG_DEPTH
cdef object MSG_ENC_FLOAT = "cannot encode float: Erlang has no NaN or infinity"
cdef object MSG_ENC_STR = "cannot encode str: not valid Unicode (lone surrogate)"
cdef object MSG_ENC_ATOM = "cannot encode atom: not valid Unicode (lone surrogate)"
cdef object MSG_ENC_BIG = "cannot encode integer: " + _py.MSG_BIG
cdef object MSG_ENC_BINARY = "cannot encode binary: larger than 4 GiB"
cdef object MSG_ENC_LIST = "cannot encode list: longer than 2**32-1 elements"
cdef object MSG_ENC_COMPRESSED = "compressed must be an int in 0..9"

# Types and callables looked up once.
cdef type _AtomT = Atom
cdef type _PidT = Pid
cdef type _RefT = Reference
cdef type _PortT = Port
cdef type _BitsT = BitBinary
cdef type _ImproperT = ImproperList
cdef type _ExportT = ExportFun
cdef type _LocalFunT = LocalFun
cdef object _MapT = Map
cdef object _Map = Map
cdef object _Mapping = Mapping
cdef object _DecodeError = DecodeError
cdef object _EncodeError = EncodeError
cdef type _MemoryViewT = _builtins.memoryview
cdef object _BYTES_LIKE = (bytes, bytearray, _builtins.memoryview)
cdef tuple _EMPTY_TUPLE = ()
cdef object _TRUE_ATOM_BYTES = b"w\x04true"
cdef object _FALSE_ATOM_BYTES = b"w\x05false"
cdef object _UNDEFINED_ATOM_BYTES = b"w\x09undefined"

# Python builtins called through a variable so that their exact Python
# semantics are kept (Cython would otherwise specialise some of them).
cdef object _py_float = _builtins.float
cdef object _py_bytes = _builtins.bytes
cdef object _py_all = _builtins.all
cdef object _py_map = _builtins.map
cdef object _zlib_decompressobj = _zlib.decompressobj
cdef object _zlib_error = _zlib.error
cdef object _int_from_bytes = int.from_bytes

# The twin's helpers, for exact behaviour on rare shapes.
cdef object _py_encode = _py.encode
cdef object _py_is_byte = _py._is_byte
cdef object _py_as_buffer = _py._as_buffer
cdef object _py_flat = _py._flat
cdef object _py_atom_bytes = _py._atom_bytes
cdef object _py_compress = _py._compress

# ``a, b = k`` with CPython's own error messages (Cython words them
# differently), for ImproperList objects whose slot was overwritten.
_helpers = {}
exec(compile("def unpack2(k):\n    a, b = k\n    return a, b\n",
             "<quicdist._fastpath>", "exec"), _helpers)
cdef object _unpack2 = _helpers.pop("unpack2")
del _helpers

# The ``_key`` slot descriptors of the term classes: read and written
# through the descriptor slots directly, as ``obj._key`` would.
cdef object _PID_KEY = Pid.__dict__["_key"]
cdef object _REF_KEY = Reference.__dict__["_key"]
cdef object _PORT_KEY = Port.__dict__["_key"]
cdef object _BITS_KEY = BitBinary.__dict__["_key"]
cdef object _IMPROPER_KEY = ImproperList.__dict__["_key"]
cdef object _EXPORT_KEY = ExportFun.__dict__["_key"]


cdef inline object _new_keyed(type cls, object descr, object key):
    """``obj = cls.__new__(cls); obj._key = key`` (no attribute lookups)."""
    cdef object obj = (<PyTypeObject*>cls).tp_new(cls, <PyObject*>_EMPTY_TUPLE, NULL)
    Py_TYPE(descr).tp_descr_set(descr, obj, key)
    return obj


cdef inline object _get_key(object descr, object obj):
    """``obj._key`` for an object of the exact class that owns ``descr``."""
    return Py_TYPE(descr).tp_descr_get(descr, obj, <object>Py_TYPE(obj))


# ---------------------------------------------------------------------------
# Decoding

# The ints 0..255 (one reference each, kept for the module's lifetime).
cdef PyObject* _BYTE_INTS[256]
cdef list _byte_ints_owner = list(range(256))
for _i in range(256):
    _BYTE_INTS[_i] = <PyObject*>_byte_ints_owner[_i]
del _i

cdef inline uint32_t _u16(const unsigned char* p) noexcept nogil:
    return (<uint32_t>p[0] << 8) | p[1]


cdef inline uint32_t _u32(const unsigned char* p) noexcept nogil:
    return ((<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16)
            | (<uint32_t>p[2] << 8) | p[3])


cdef inline uint64_t _u64(const unsigned char* p) noexcept nogil:
    return (<uint64_t>_u32(p) << 32) | _u32(p + 4)


cdef int _fail(object message, Py_ssize_t offset) except -1:
    raise _DecodeError(message, offset)


cdef int _fail_too_long(str what, uint64_t n, Py_ssize_t left, Py_ssize_t start) except -1:
    raise _DecodeError(f"{what} length {n} exceeds the {left} bytes left", start)


# Atom cache: from the raw UTF-8 bytes of an atom to the Atom, holding at
# most ATOM_CACHE_SIZE atoms, the first ones seen (the twin keeps a dict
# with the same bound). An open-addressing table with linear probing, twice
# as many slots as entries; a slot holds a reference to its Atom and the
# bytes compared against are the Atom's own (its ASCII data, or the UTF-8
# copy CPython keeps in the str).
cdef enum:
    _AC_SLOTS = 2 * ATOM_CACHE_SIZE

cdef PyObject* _ac_atom[_AC_SLOTS]
cdef const char* _ac_utf8[_AC_SLOTS]
cdef Py_ssize_t _ac_len[_AC_SLOTS]
cdef Py_ssize_t _ac_count = 0


cdef inline uint32_t _atom_hash(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    cdef uint32_t h = 2166136261u ^ <uint32_t>n
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ p[i]) * 16777619u
    h ^= h >> 15
    h *= 0x2C1B3C6Du
    h ^= h >> 12
    return h & (_AC_SLOTS - 1)


cdef inline bint _is_ascii(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if p[i] & 0x80:
            return False
    return True


cdef object _make_atom(const unsigned char* p, Py_ssize_t n, bint utf8, Py_ssize_t pos):
    """The Atom spelled by ``p[:n]`` (twin: ``_make_atom``)."""
    global _ac_count
    cdef uint32_t slot
    cdef object text
    cdef object atom
    cdef const char* data
    cdef Py_ssize_t size
    if utf8 or _is_ascii(p, n):
        slot = _atom_hash(p, n)
        while _ac_atom[slot] != NULL:
            if _ac_len[slot] == n and memcmp(_ac_utf8[slot], p, n) == 0:
                return <object>_ac_atom[slot]
            slot = (slot + 1) & (_AC_SLOTS - 1)
        try:
            text = PyUnicode_DecodeUTF8(<const char*>p, n, NULL)
        except UnicodeDecodeError:
            text = None
        if text is None:
            _fail(MSG_ATOM_UTF8, pos)
        if PyUnicode_GET_LENGTH(text) > MAX_ATOM_CHARS:
            _fail(MSG_ATOM_LONG, pos)
        atom = _AtomT(text)
        if _ac_count < ATOM_CACHE_SIZE:
            # slot is the free slot the probe above stopped at.
            if PyUnicode_IS_ASCII(atom):
                data = <const char*>PyUnicode_1BYTE_DATA(atom)
                size = PyUnicode_GET_LENGTH(atom)
            else:
                data = PyUnicode_AsUTF8AndSize(atom, &size)
            Py_INCREF(atom)
            _ac_atom[slot] = <PyObject*>atom
            _ac_utf8[slot] = data
            _ac_len[slot] = size
            _ac_count += 1
        return atom
    if n > MAX_ATOM_CHARS:
        _fail(MSG_ATOM_LONG, pos)
    return _AtomT(PyUnicode_DecodeLatin1(<const char*>p, n, NULL))


cdef object _read_atom(const unsigned char* buf, Py_ssize_t pos, Py_ssize_t end,
                       Py_ssize_t* out, bint term):
    """An atom that must be an atom (twin: ``_read_atom``).

    With ``term`` set, ``true`` and ``false`` become True and False (the
    atom in term position).
    """
    cdef unsigned char tag
    cdef Py_ssize_t n = 0
    if pos >= end:
        _fail(MSG_TRUNCATED, end)
    tag = buf[pos]
    if tag == SMALL_ATOM_UTF8_EXT or tag == SMALL_ATOM_EXT:
        if end - pos < 2:
            _fail(MSG_TRUNCATED, end)
        n = buf[pos + 1]
        pos += 2
    elif tag == ATOM_UTF8_EXT or tag == ATOM_EXT:
        if end - pos < 3:
            _fail(MSG_TRUNCATED, end)
        n = _u16(buf + pos + 1)
        pos += 3
    elif tag == ATOM_CACHE_REF:
        _fail(MSG_CACHE_REF, pos)
    else:
        _fail(MSG_EXPECTED_ATOM, pos)
    if end - pos < n:
        _fail(MSG_TRUNCATED, end)
    out[0] = pos + n
    if term:
        if n == 4 and memcmp(buf + pos, b"true", 4) == 0:
            return True
        if n == 5 and memcmp(buf + pos, b"false", 5) == 0:
            return False
    return _make_atom(buf + pos, n, tag == SMALL_ATOM_UTF8_EXT or tag == ATOM_UTF8_EXT, pos)


cdef object _read_pid(const unsigned char* buf, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t* out):
    cdef unsigned char tag
    cdef Py_ssize_t width
    if pos >= end:
        _fail(MSG_TRUNCATED, end)
    tag = buf[pos]
    if tag != NEW_PID_EXT and tag != PID_EXT:
        _fail(MSG_EXPECTED_PID, pos)
    node = _read_atom(buf, pos + 1, end, &pos, False)
    width = 12 if tag == NEW_PID_EXT else 9
    if end - pos < width:
        _fail(MSG_TRUNCATED, end)
    key = (
        node,
        PyLong_FromUnsignedLong(_u32(buf + pos)),
        PyLong_FromUnsignedLong(_u32(buf + pos + 4)),
        PyLong_FromUnsignedLong(_u32(buf + pos + 8) if width == 12 else buf[pos + 8]),
    )
    out[0] = pos + width
    return _new_keyed(_PidT, _PID_KEY, key)


cdef object _read_small_int_term(const unsigned char* buf, Py_ssize_t pos, Py_ssize_t end,
                                 Py_ssize_t* out):
    cdef unsigned char tag
    if pos >= end:
        _fail(MSG_TRUNCATED, end)
    tag = buf[pos]
    if tag == SMALL_INTEGER_EXT:
        if end - pos < 2:
            _fail(MSG_TRUNCATED, end)
        out[0] = pos + 2
        return PyLong_FromLong(buf[pos + 1])
    if tag == INTEGER_EXT:
        if end - pos < 5:
            _fail(MSG_TRUNCATED, end)
        out[0] = pos + 5
        return PyLong_FromLong(<int32_t>_u32(buf + pos + 1))
    _fail(MSG_EXPECTED_INT, pos)


# The decoder's explicit stack (twin: the frames of ``_decode_body``): a
# container whose items follow is a frame until its last item arrives. The
# first frames live on the C stack, then all of them in one heap block of
# MAX_DEPTH + 1 frames. No recursion: deep nesting needs no C stack, and an
# error deep down costs no more than one near the top.
cdef enum:
    _F_TUPLE = 0
    _F_LIST = 1
    _F_MAP = 2
    _F_FUN = 3
    _INLINE_FRAMES = 24


cdef struct _Frame:
    int kind
    Py_ssize_t n        # items wanted (a list's elements, its tail apart; a map's keys and values)
    Py_ssize_t i        # items received
    PyObject* obj       # the tuple, list, dict or free-variable tuple being filled (owned)
    PyObject* aux       # list: its tail; map: the key awaiting its value; fun: its header (owned)
    PyObject* pairs     # map: the pairs, once a dict cannot hold them (owned)


cdef inline void _open(_Frame* f, int kind, Py_ssize_t n, object obj) noexcept:
    f.kind = kind
    f.n = n
    f.i = 0
    Py_INCREF(obj)
    f.obj = <PyObject*>obj
    f.aux = NULL
    f.pairs = NULL


cdef inline void _frame_clear(_Frame* f) noexcept:
    Py_XDECREF(f.obj)
    Py_XDECREF(f.aux)
    Py_XDECREF(f.pairs)
    f.obj = NULL
    f.aux = NULL
    f.pairs = NULL


cdef inline void _own(PyObject** slot, object value) noexcept:
    Py_INCREF(value)
    slot[0] = <PyObject*>value


cdef inline object _take(PyObject** slot):
    """The object in ``slot`` (not NULL), which gives up its reference."""
    cdef object value = <object>slot[0]
    Py_DECREF(value)
    slot[0] = NULL
    return value


cdef int _frame_add(_Frame* f, object value, const unsigned char* buf, Py_ssize_t* ppos,
                    Py_ssize_t end) except -1:
    """Give ``value`` to the frame; 1 when that completes it."""
    cdef Py_ssize_t size
    cdef Py_ssize_t pos
    if f.kind == _F_TUPLE or f.kind == _F_FUN:
        Py_INCREF(value)
        PyTuple_SET_ITEM(<object>f.obj, f.i, value)
        f.i += 1
        return f.i == f.n
    if f.kind == _F_LIST:
        if f.i == f.n:
            _own(&f.aux, value)  # the tail
            return 1
        Py_INCREF(value)
        PyList_SET_ITEM(<object>f.obj, f.i, value)
        f.i += 1
        if f.i == f.n:
            # The usual tail, [], needs no list object of its own.
            pos = ppos[0]
            if pos < end and buf[pos] == NIL_EXT:
                ppos[0] = pos + 1
                return 1
        return 0
    # A map: built as a dict; the first unhashable or repeated key switches
    # to collecting the pairs for a Map, taking the pairs so far back from
    # the dict (insertion order, the original key and value objects).
    f.i += 1
    if f.i & 1:
        _own(&f.aux, value)
        return 0
    key = _take(&f.aux)
    if f.pairs == NULL:
        d = <dict>f.obj
        size = PyDict_GET_SIZE(d)
        try:
            PyDict_SetDefault(d, key, value)
        except TypeError:
            size = -1
        if size < 0 or PyDict_GET_SIZE(d) == size:
            pairs = list(d.items())
            pairs.append((key, value))
            _own(&f.pairs, pairs)
    else:
        (<list>f.pairs).append((key, value))
    return f.i == f.n


cdef object _finish_list(list items, Py_ssize_t n, object tail):
    """The list LIST_EXT spells with ``items`` and ``tail`` (twin: ``_finish``)."""
    cdef tuple key
    if type(tail) is list:
        if n:
            if PyList_GET_SIZE(tail):
                items.extend(<list>tail)
            return items
        return tail
    if type(tail) is _ImproperT:
        if not n:
            return tail
        key = _get_key(_IMPROPER_KEY, tail)
        items.extend(<tuple>key[0])
        tail = key[1]
    elif not n:
        return tail
    return _new_keyed(_ImproperT, _IMPROPER_KEY, (tuple(items), tail))


cdef object _frame_finish(_Frame* f, const unsigned char* buf, Py_ssize_t pos):
    """The term of a completed frame (twin: ``_finish``); ``pos`` is just past it."""
    cdef tuple header
    cdef Py_ssize_t start, fun_end
    if f.kind == _F_TUPLE:
        return _take(&f.obj)
    if f.kind == _F_LIST:
        items = _take(&f.obj)
        if f.aux == NULL:  # the tail was []
            return items
        return _finish_list(items, f.n, _take(&f.aux))
    if f.kind == _F_MAP:
        if f.pairs == NULL:
            return _take(&f.obj)
        try:
            return _Map(_take(&f.pairs))
        except ValueError:
            pass
        _fail(MSG_DUP_KEY, pos)
    header = _take(&f.aux)
    start = header[0]
    fun_end = header[1]
    if pos != fun_end:
        _fail(MSG_FUN, start)
    return _LocalFunT(PyBytes_FromStringAndSize(<const char*>buf + start, fun_end - start),
                      *header[2:], _take(&f.obj))


cdef object _dec_fun(const unsigned char* buf, Py_ssize_t start, Py_ssize_t end,
                     Py_ssize_t* ppos, Py_ssize_t depth, _Frame* push):
    """NEW_FUN_EXT up to its free variables (twin: ``_fun_header``).

    A fun without free variables is returned; otherwise ``push`` is opened
    to collect them.
    """
    cdef Py_ssize_t pos = start + 1
    cdef Py_ssize_t fun_end
    cdef uint64_t size, num_free
    if end - pos < 4:
        _fail(MSG_TRUNCATED, end)
    size = _u32(buf + pos)
    if size < 29:
        _fail(MSG_FUN, start)
    if size > <uint64_t>(end - pos):
        _fail_too_long("fun", size, end - pos, start)
    fun_end = pos + <Py_ssize_t>size
    arity = PyLong_FromLong(buf[pos + 4])
    uniq = PyBytes_FromStringAndSize(<const char*>buf + pos + 5, 16)
    index = PyLong_FromUnsignedLong(_u32(buf + pos + 21))
    num_free = _u32(buf + pos + 25)
    pos += 29
    module = _read_atom(buf, pos, fun_end, &pos, False)
    old_index = _read_small_int_term(buf, pos, fun_end, &pos)
    old_uniq = _read_small_int_term(buf, pos, fun_end, &pos)
    pid = _read_pid(buf, pos, fun_end, &pos)
    if num_free == 0:
        if pos != fun_end:
            _fail(MSG_FUN, start)
        ppos[0] = pos
        return _LocalFunT(PyBytes_FromStringAndSize(<const char*>buf + start, fun_end - start),
                          module, arity, uniq, index, old_index, old_uniq, pid, ())
    if num_free > <uint64_t>(fun_end - pos):
        _fail_too_long("fun environment", num_free, fun_end - pos, start)
    if depth >= MAX_DEPTH:
        _fail(MSG_DEPTH, start)
    _open(push, _F_FUN, <Py_ssize_t>num_free, PyTuple_New(<Py_ssize_t>num_free))
    _own(&push.aux, (start, fun_end, module, arity, uniq, index, old_index, old_uniq, pid))
    ppos[0] = pos
    return None


cdef object _dec_big(const unsigned char* buf, Py_ssize_t start, Py_ssize_t end,
                     Py_ssize_t* ppos, bint small):
    cdef Py_ssize_t pos = start + 1
    cdef uint64_t n, u = 0
    cdef Py_ssize_t i
    cdef unsigned char sign
    cdef const unsigned char* p
    if small:
        if end - pos < 1:
            _fail(MSG_TRUNCATED, end)
        n = buf[pos]
        pos += 1
    else:
        if end - pos < 4:
            _fail(MSG_TRUNCATED, end)
        n = _u32(buf + pos)
        pos += 4
    if n > MAX_BIG_BYTES:
        _fail(MSG_BIG, start)
    if <uint64_t>(end - pos) < n + 1:
        _fail(MSG_TRUNCATED, end)
    sign = buf[pos]
    if sign > 1:
        _fail(MSG_SIGN, pos)
    p = buf + pos + 1
    ppos[0] = pos + 1 + <Py_ssize_t>n
    if n <= 8:
        i = <Py_ssize_t>n
        while i > 0:
            i -= 1
            u = (u << 8) | p[i]
        if not sign:
            return PyLong_FromUnsignedLongLong(u)
        if u <= 0x8000000000000000u:
            if u == 0:
                return PyLong_FromLong(0)
            return PyLong_FromLongLong(-<int64_t>(u - 1) - 1)
    value = _int_from_bytes(PyBytes_FromStringAndSize(<const char*>p, <Py_ssize_t>n), "little")
    if sign:
        value = -value
    return value


cdef object _dec_float_ext(const unsigned char* buf, Py_ssize_t start, Py_ssize_t end,
                           Py_ssize_t* ppos):
    cdef Py_ssize_t pos = start + 1
    cdef double d
    if end - pos < 31:
        _fail(MSG_TRUNCATED, end)
    text = PyBytes_FromStringAndSize(<const char*>buf + pos, 31).rstrip(b"\x00")
    value = None
    try:
        value = _py_float(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        pass
    if value is None:
        _fail(MSG_FLOAT, start)
    d = value
    if not isfinite(d):
        _fail(MSG_FLOAT, start)
    ppos[0] = pos + 31
    return value


cdef object _dec_rare(const unsigned char* buf, Py_ssize_t start, Py_ssize_t end,
                      Py_ssize_t* ppos, unsigned char tag):
    """Tags seldom seen on the wire, out of the main switch."""
    cdef Py_ssize_t pos = start + 1
    cdef Py_ssize_t iwidth, cwidth
    cdef uint64_t n
    cdef unsigned char bits
    cdef bytes data
    if tag == NEW_PORT_EXT or tag == V4_PORT_EXT or tag == PORT_EXT:
        node = _read_atom(buf, pos, end, &pos, False)
        iwidth = 8 if tag == V4_PORT_EXT else 4
        cwidth = 1 if tag == PORT_EXT else 4
        if end - pos < iwidth + cwidth:
            _fail(MSG_TRUNCATED, end)
        key = (
            node,
            PyLong_FromUnsignedLongLong(_u64(buf + pos) if iwidth == 8 else _u32(buf + pos)),
            PyLong_FromUnsignedLong(buf[pos + iwidth] if cwidth == 1 else _u32(buf + pos + iwidth)),
        )
        ppos[0] = pos + iwidth + cwidth
        return _new_keyed(_PortT, _PORT_KEY, key)
    if tag == BIT_BINARY_EXT:
        if end - pos < 5:
            _fail(MSG_TRUNCATED, end)
        n = _u32(buf + pos)
        bits = buf[pos + 4]
        pos += 5
        if n > <uint64_t>(end - pos):
            _fail_too_long("binary", n, end - pos, start)
        if (n == 0) != (bits == 0) or bits > 8:
            _fail(MSG_BITS, start)
        ppos[0] = pos + <Py_ssize_t>n
        if bits == 8 or n == 0:
            return PyBytes_FromStringAndSize(<const char*>buf + pos, <Py_ssize_t>n)
        # A new, uninitialised bytes object (never a shared one-byte bytes):
        # filled here, with the unused low bits of the last byte cleared.
        data = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>n)
        memcpy(PyBytes_AS_STRING(data), buf + pos, n)
        (<unsigned char*>PyBytes_AS_STRING(data))[n - 1] &= <unsigned char>(0xFF << (8 - bits))
        return _new_keyed(_BitsT, _BITS_KEY, (data, PyLong_FromLong(bits)))
    if tag == EXPORT_EXT:
        module = _read_atom(buf, pos, end, &pos, False)
        function = _read_atom(buf, pos, end, &pos, False)
        if pos >= end:
            _fail(MSG_TRUNCATED, end)
        if buf[pos] != SMALL_INTEGER_EXT:
            _fail(MSG_EXPORT_ARITY, pos)
        if end - pos < 2:
            _fail(MSG_TRUNCATED, end)
        ppos[0] = pos + 2
        return _new_keyed(_ExportT, _EXPORT_KEY, (module, function, PyLong_FromLong(buf[pos + 1])))
    if tag == FLOAT_EXT:
        return _dec_float_ext(buf, start, end, ppos)
    if tag == REFERENCE_EXT:
        node = _read_atom(buf, pos, end, &pos, False)
        if end - pos < 5:
            _fail(MSG_TRUNCATED, end)
        ppos[0] = pos + 5
        return _new_keyed(_RefT, _REF_KEY, (
            node, PyLong_FromLong(buf[pos + 4]), (PyLong_FromUnsignedLong(_u32(buf + pos)),)))
    if tag == ATOM_CACHE_REF:
        _fail(MSG_CACHE_REF, start)
    if tag == COMPRESSED:
        _fail(MSG_NESTED_COMPRESSED, start)
    if tag == FUN_EXT:
        _fail(MSG_OLD_FUN, start)
    if tag == LOCAL_EXT:
        _fail(MSG_LOCAL, start)
    _fail(f"unknown term tag {tag}", start)


cdef object _dec_ref(const unsigned char* buf, Py_ssize_t start, Py_ssize_t end,
                     Py_ssize_t* ppos, unsigned char tag):
    cdef Py_ssize_t pos = start + 1
    cdef Py_ssize_t n, cwidth, i
    cdef tuple ids
    if end - pos < 2:
        _fail(MSG_TRUNCATED, end)
    n = _u16(buf + pos)
    if n == 0 or n > MAX_REF_IDS:
        _fail(MSG_REF_LEN, start)
    node = _read_atom(buf, pos + 2, end, &pos, False)
    cwidth = 4 if tag == NEWER_REFERENCE_EXT else 1
    if end - pos < cwidth + 4 * n:
        _fail(MSG_TRUNCATED, end)
    creation = PyLong_FromUnsignedLong(_u32(buf + pos) if cwidth == 4 else buf[pos])
    pos += cwidth
    ids = PyTuple_New(n)
    for i in range(n):
        item = PyLong_FromUnsignedLong(_u32(buf + pos + 4 * i))
        Py_INCREF(item)
        PyTuple_SET_ITEM(ids, i, item)
    ppos[0] = pos + 4 * n
    return _new_keyed(_RefT, _REF_KEY, (node, creation, ids))


cdef object _dec_item(const unsigned char* buf, Py_ssize_t* ppos, Py_ssize_t end,
                      Py_ssize_t depth, _Frame* push):
    """The term at ``ppos[0]``, with ``depth`` containers open around it.

    Returns the term, or opens ``push`` (its kind set) for a container whose
    items follow. Either way ``ppos[0]`` moves past what was read.
    """
    cdef Py_ssize_t pos = ppos[0]
    cdef Py_ssize_t start = pos
    cdef Py_ssize_t i
    cdef uint64_t n
    cdef unsigned char tag
    cdef uint64_t bits
    cdef double d
    cdef list lst
    cdef PyObject* item
    if pos >= end:
        _fail(MSG_TRUNCATED, end)
    tag = buf[pos]
    pos += 1

    if tag == SMALL_INTEGER_EXT:
        if pos >= end:
            _fail(MSG_TRUNCATED, end)
        ppos[0] = pos + 1
        return PyLong_FromLong(buf[pos])

    if tag == INTEGER_EXT:
        if end - pos < 4:
            _fail(MSG_TRUNCATED, end)
        ppos[0] = pos + 4
        return PyLong_FromLong(<int32_t>_u32(buf + pos))

    if (tag == SMALL_ATOM_UTF8_EXT or tag == ATOM_UTF8_EXT or tag == SMALL_ATOM_EXT
            or tag == ATOM_EXT):
        return _read_atom(buf, start, end, ppos, True)

    if tag == SMALL_TUPLE_EXT or tag == LARGE_TUPLE_EXT:
        if tag == SMALL_TUPLE_EXT:
            if end - pos < 1:
                _fail(MSG_TRUNCATED, end)
            n = buf[pos]
            pos += 1
        else:
            if end - pos < 4:
                _fail(MSG_TRUNCATED, end)
            n = _u32(buf + pos)
            pos += 4
        if n == 0:
            ppos[0] = pos
            return ()
        if n > <uint64_t>(end - pos):
            _fail_too_long("tuple", n, end - pos, start)
        if depth >= MAX_DEPTH:
            _fail(MSG_DEPTH, start)
        _open(push, _F_TUPLE, <Py_ssize_t>n, PyTuple_New(<Py_ssize_t>n))
        ppos[0] = pos
        return None

    if tag == NIL_EXT:
        ppos[0] = pos
        return []

    if tag == BINARY_EXT:
        if end - pos < 4:
            _fail(MSG_TRUNCATED, end)
        n = _u32(buf + pos)
        pos += 4
        if n > <uint64_t>(end - pos):
            _fail_too_long("binary", n, end - pos, start)
        ppos[0] = pos + <Py_ssize_t>n
        return PyBytes_FromStringAndSize(<const char*>buf + pos, <Py_ssize_t>n)

    if tag == LIST_EXT:
        if end - pos < 4:
            _fail(MSG_TRUNCATED, end)
        n = _u32(buf + pos)
        pos += 4
        if n >= <uint64_t>(end - pos):
            _fail_too_long("list", n, end - pos, start)
        if depth >= MAX_DEPTH:
            _fail(MSG_DEPTH, start)
        lst = PyList_New(<Py_ssize_t>n)
        if n == 0 and pos < end and buf[pos] == NIL_EXT:  # [] as LIST_EXT: just []
            ppos[0] = pos + 1
            return lst
        _open(push, _F_LIST, <Py_ssize_t>n, lst)
        ppos[0] = pos
        return None

    if tag == STRING_EXT:
        if end - pos < 2:
            _fail(MSG_TRUNCATED, end)
        n = _u16(buf + pos)
        pos += 2
        if n > <uint64_t>(end - pos):
            _fail_too_long("string", n, end - pos, start)
        lst = PyList_New(<Py_ssize_t>n)
        for i in range(<Py_ssize_t>n):
            item = _BYTE_INTS[buf[pos + i]]
            Py_INCREF(<object>item)
            _list_set(lst, i, item)
        ppos[0] = pos + <Py_ssize_t>n
        return lst

    if tag == NEW_FLOAT_EXT:
        if end - pos < 8:
            _fail(MSG_TRUNCATED, end)
        bits = _u64(buf + pos)
        memcpy(&d, &bits, 8)
        if not isfinite(d):
            _fail(MSG_FLOAT, start)
        ppos[0] = pos + 8
        return PyFloat_FromDouble(d)

    if tag == MAP_EXT:
        if end - pos < 4:
            _fail(MSG_TRUNCATED, end)
        n = _u32(buf + pos)
        pos += 4
        if n == 0:
            ppos[0] = pos
            return {}
        if 2 * n > <uint64_t>(end - pos):
            _fail_too_long("map", n, end - pos, start)
        if depth >= MAX_DEPTH:
            _fail(MSG_DEPTH, start)
        _open(push, _F_MAP, 2 * <Py_ssize_t>n, {})
        ppos[0] = pos
        return None

    if tag == NEW_PID_EXT or tag == PID_EXT:
        return _read_pid(buf, start, end, ppos)

    if tag == NEWER_REFERENCE_EXT or tag == NEW_REFERENCE_EXT:
        return _dec_ref(buf, start, end, ppos, tag)

    if tag == SMALL_BIG_EXT or tag == LARGE_BIG_EXT:
        return _dec_big(buf, start, end, ppos, tag == SMALL_BIG_EXT)

    if tag == NEW_FUN_EXT:
        return _dec_fun(buf, start, end, ppos, depth, push)

    return _dec_rare(buf, start, end, ppos, tag)


cdef inline void _fill_ints(_Frame* f, const unsigned char* buf, Py_ssize_t* ppos,
                            Py_ssize_t end) noexcept:
    """Fast path for runs of integers in a list or tuple.

    Stops before the container's last item (which _frame_add completes) and
    at anything else, including a truncated integer: the general path then
    reads it and reports it exactly as usual.
    """
    cdef Py_ssize_t pos = ppos[0]
    cdef unsigned char tag
    cdef PyObject* item
    while f.i + 1 < f.n and pos < end:
        tag = buf[pos]
        if tag == SMALL_INTEGER_EXT and end - pos >= 2:
            item = _BYTE_INTS[buf[pos + 1]]
            Py_INCREF(<object>item)
            pos += 2
        elif tag == INTEGER_EXT and end - pos >= 5:
            item = _new_long(<int32_t>_u32(buf + pos + 1))
            if item == NULL:  # out of memory: the general path reports it
                PyErr_Clear()
                break
            pos += 5
        else:
            break
        if f.kind == _F_LIST:
            _list_set_raw(f.obj, f.i, item)
        else:
            _tuple_set_raw(f.obj, f.i, item)
        f.i += 1
    ppos[0] = pos


cdef object _dec(const unsigned char* buf, Py_ssize_t* ppos, Py_ssize_t end):
    """Decode the term at ``ppos[0]`` (twin: ``_decode_body``); move past it."""
    cdef _Frame inline_frames[_INLINE_FRAMES]
    cdef _Frame* stack = inline_frames
    cdef Py_ssize_t depth = 0
    cdef _Frame* slot
    cdef _Frame* top
    try:
        while True:
            if depth:
                top = &stack[depth - 1]
                if top.kind == _F_LIST or top.kind == _F_TUPLE:
                    _fill_ints(top, buf, ppos, end)
            # The slot above the open containers takes the item's own frame,
            # if it opens one: the first frames on the C stack, then all of
            # them in one heap block.
            if depth == _INLINE_FRAMES and stack == inline_frames:
                stack = <_Frame*>PyMem_Malloc((MAX_DEPTH + 1) * sizeof(_Frame))
                if stack == NULL:
                    stack = inline_frames
                    raise MemoryError()
                memcpy(stack, inline_frames, depth * sizeof(_Frame))
            slot = &stack[depth]
            slot.kind = -1
            value = _dec_item(buf, ppos, end, depth, slot)
            if slot.kind >= 0:
                depth += 1  # _dec_item refuses to open one beyond MAX_DEPTH
                continue
            # Hand the finished value to the enclosing containers, closing
            # every container it completes.
            while depth:
                top = &stack[depth - 1]
                if not _frame_add(top, value, buf, ppos, end):
                    break
                value = _frame_finish(top, buf, ppos[0])
                _frame_clear(top)  # whatever the finished term did not take
                depth -= 1
            else:
                return value
    finally:
        while depth:
            depth -= 1
            _frame_clear(&stack[depth])
        if stack != inline_frames:
            PyMem_Free(stack)


cdef object _decode_compressed(const unsigned char* buf, Py_ssize_t pos, Py_ssize_t end,
                               Py_ssize_t* out):
    cdef uint32_t size
    cdef Py_ssize_t inner = 0
    if end - pos < 4:
        _fail(MSG_TRUNCATED, end)
    size = _u32(buf + pos)
    pos += 4
    inflater = _zlib_decompressobj()
    body = None
    try:
        # At most one byte more than declared: the declared size bounds the
        # memory a hostile header can make us allocate.
        body = inflater.decompress(
            PyBytes_FromStringAndSize(<const char*>buf + pos, end - pos), <uint64_t>size + 1)
    except _zlib_error:
        pass
    if body is None:
        _fail(MSG_COMPRESSED_CORRUPT, pos)
    if PyBytes_GET_SIZE(body) > size:
        _fail(MSG_COMPRESSED_SIZE, pos)
    if not inflater.eof:
        _fail(MSG_TRUNCATED, end)
    if PyBytes_GET_SIZE(body) != size:
        _fail(MSG_COMPRESSED_SIZE, pos)
    consumed = (end - pos) - len(inflater.unused_data)
    error = None
    try:
        term = _dec(<const unsigned char*>PyBytes_AS_STRING(body), &inner, size)
    except DecodeError as exc:
        error = exc
    if error is not None:
        raise _DecodeError("in compressed term: " + error.message, error.offset)
    if inner != size:
        raise _DecodeError("in compressed term: " + MSG_TRAILING, inner)
    out[0] = pos + consumed
    return term


cdef object _decode_top(const unsigned char* buf, Py_ssize_t* ppos, Py_ssize_t end):
    cdef Py_ssize_t pos = ppos[0]
    if pos >= end:
        _fail(MSG_EMPTY, pos)
    if buf[pos] != VERSION:
        _fail(f"unsupported version byte {buf[pos]} (expected 131)", pos)
    pos += 1
    if pos < end and buf[pos] == COMPRESSED:
        return _decode_compressed(buf, pos + 1, end, ppos)
    ppos[0] = pos
    return _dec(buf, ppos, end)


cdef int _get_view(object data, Py_buffer* view) except -1:
    """A PyBUF_SIMPLE view of ``data`` (twin: ``_as_buffer``); release it."""
    if PyByteArray_Check(data) or PyMemoryView_Check(data) or PyBytes_Check(data):
        try:
            PyObject_GetBuffer(data, view, PyBUF_SIMPLE)
            return 0
        except BufferError:
            pass  # a strided memoryview: flattened (copied) below
    PyObject_GetBuffer(_py_as_buffer(data), view, PyBUF_SIMPLE)
    return 0


def decode(data):
    """Decode one External Term Format term that fills ``data`` exactly.

    Raises:
        DecodeError: the bytes are not exactly one valid term.
        TypeError: ``data`` is not a bytes-like object.
    """
    cdef Py_buffer view
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t end
    if type(data) is bytes:
        end = PyBytes_GET_SIZE(data)
        term = _decode_top(<const unsigned char*>PyBytes_AS_STRING(data), &pos, end)
    else:
        _get_view(data, &view)
        try:
            end = view.len
            term = _decode_top(<const unsigned char*>view.buf, &pos, end)
        finally:
            PyBuffer_Release(&view)
    if pos != end:
        _fail(MSG_TRAILING, pos)
    return term


def decode_from(data, offset=0):
    """Decode the term that starts at ``data[offset]`` (with its 131 byte).

    Returns:
        ``(term, end)`` where ``end`` is the offset just past the term, so
        several concatenated terms can be read one after another.

    Raises:
        DecodeError: no valid term starts at ``offset``.
        ValueError: ``offset`` is outside ``data``.
    """
    cdef Py_buffer view
    cdef Py_ssize_t pos
    cdef Py_ssize_t end
    if type(data) is bytes:
        end = PyBytes_GET_SIZE(data)
        offset = PyNumber_Index(offset)
        if not 0 <= offset <= end:
            raise ValueError(f"offset {offset} is outside the data (length {end})")
        pos = offset
        term = _decode_top(<const unsigned char*>PyBytes_AS_STRING(data), &pos, end)
        return term, pos
    _get_view(data, &view)
    try:
        end = view.len
        offset = PyNumber_Index(offset)
        if not 0 <= offset <= end:
            raise ValueError(f"offset {offset} is outside the data (length {end})")
        pos = offset
        term = _decode_top(<const unsigned char*>view.buf, &pos, end)
    finally:
        PyBuffer_Release(&view)
    return term, pos


# ---------------------------------------------------------------------------
# Encoding: written straight into a bytes object that grows by doubling and
# is shrunk to size at the end (every byte is copied once into it).

cdef struct _Out:
    PyObject* obj          # the bytes object being filled (owned)
    unsigned char* buf     # its data
    Py_ssize_t pos         # bytes written
    Py_ssize_t cap         # its size


cdef int _grow(_Out* o, Py_ssize_t need) except -1:
    # Doubling, or for a large binary its size and an eighth more: what
    # follows it fits without copying it again.
    cdef Py_ssize_t want = o.pos + need
    cdef Py_ssize_t cap = o.cap * 2
    if cap < want + (want >> 3):
        cap = want + (want >> 3)
    _PyBytes_Resize(&o.obj, cap)
    o.buf = <unsigned char*>_bytes_data(o.obj)
    o.cap = cap
    return 0


cdef inline unsigned char* _room(_Out* o, Py_ssize_t need) except NULL:
    """Pointer to ``need`` writable bytes at the end; the caller advances pos."""
    if o.cap - o.pos < need:
        _grow(o, need)
    return o.buf + o.pos


cdef inline void _put_u16(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = <unsigned char>(v >> 8)
    p[1] = <unsigned char>v


cdef inline void _put_u32(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = <unsigned char>(v >> 24)
    p[1] = <unsigned char>(v >> 16)
    p[2] = <unsigned char>(v >> 8)
    p[3] = <unsigned char>v


cdef int _write(_Out* o, const void* data, Py_ssize_t n) except -1:
    cdef unsigned char* p = _room(o, n)
    memcpy(p, data, n)
    o.pos += n
    return 0


cdef int _write_bytes(_Out* o, object b) except -1:
    return _write(o, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))


cdef int _enc_binary(_Out* o, const void* data, Py_ssize_t n) except -1:
    cdef unsigned char* p
    if <uint64_t>n > 0xFFFFFFFFu:
        raise _EncodeError(MSG_ENC_BINARY)
    p = _room(o, 5 + n)
    p[0] = BINARY_EXT
    _put_u32(p + 1, <uint32_t>n)
    if n:
        memcpy(p + 5, data, n)
    o.pos += 5 + n
    return 0


cdef int _enc_delegate(_Out* o, object obj) except -1:
    """Encode a leaf term through the twin (for rare, odd shapes)."""
    cdef bytes b = _py_encode(obj)
    return _write(o, PyBytes_AS_STRING(b) + 1, PyBytes_GET_SIZE(b) - 1)


# Encoded atoms by text, for atoms that are not plain ASCII (twin:
# ``_atom_bytes``; the same bound).
cdef dict _atom_bytes_cache = {}


cdef object _atom_bytes(object text):
    """The encoded atom for an exact str/Atom ``text`` (twin: ``_atom_bytes``)."""
    cdef Py_ssize_t n
    cached_obj = _atom_bytes_cache.get(text)
    if cached_obj is not None:
        return cached_obj
    if PyUnicode_GET_LENGTH(text) > MAX_ATOM_CHARS:
        raise _EncodeError(f"cannot encode atom: {MSG_ATOM_LONG} ({PyUnicode_GET_LENGTH(text)})")
    raw = None
    try:
        raw = PyUnicode_AsUTF8String(text)
    except UnicodeEncodeError:
        pass
    if raw is None:
        raise _EncodeError(MSG_ENC_ATOM)
    n = PyBytes_GET_SIZE(raw)
    if n < 256:
        out = bytes((SMALL_ATOM_UTF8_EXT, n)) + raw
    else:
        out = bytes((ATOM_UTF8_EXT, n >> 8, n & 0xFF)) + raw
    if len(_atom_bytes_cache) < ATOM_CACHE_SIZE:
        _atom_bytes_cache[str(text)] = out
    return out


cdef int _enc_atom(_Out* o, object text) except -1:
    """An atom spelled by ``text`` (any str; plain ASCII written directly)."""
    cdef Py_ssize_t n
    cdef unsigned char* p
    cdef type t = type(text)
    if t is _AtomT or t is str:
        n = PyUnicode_GET_LENGTH(text)
        if n <= MAX_ATOM_CHARS and PyUnicode_IS_ASCII(text):
            p = _room(o, 2 + n)
            p[0] = SMALL_ATOM_UTF8_EXT
            p[1] = <unsigned char>n
            memcpy(p + 2, PyUnicode_1BYTE_DATA(text), n)
            o.pos += 2 + n
            return 0
        return _write_bytes(o, _atom_bytes(text))
    return _write_bytes(o, _py_atom_bytes(text))


cdef int _enc_int(_Out* o, object value) except -1:
    """An exact int (twin: ``_int_bytes``)."""
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(value, &overflow)
    cdef unsigned long long mag
    cdef unsigned char* p
    cdef int nb, i
    if overflow == 0:
        if 0 <= v <= 255:
            p = _room(o, 2)
            p[0] = SMALL_INTEGER_EXT
            p[1] = <unsigned char>v
            o.pos += 2
            return 0
        if -2147483648 <= v <= 2147483647:
            p = _room(o, 5)
            p[0] = INTEGER_EXT
            _put_u32(p + 1, <uint32_t><int32_t>v)
            o.pos += 5
            return 0
        if v < 0:
            mag = <unsigned long long>(-(v + 1)) + 1
        else:
            mag = <unsigned long long>v
        nb = 0
        while nb < 8 and (mag >> (8 * nb)):
            nb += 1
        p = _room(o, 3 + nb)
        p[0] = SMALL_BIG_EXT
        p[1] = <unsigned char>nb
        p[2] = 1 if v < 0 else 0
        for i in range(nb):
            p[3 + i] = <unsigned char>(mag >> (8 * i))
        o.pos += 3 + nb
        return 0
    return _enc_bigint(o, value)


cdef int _enc_bigint(_Out* o, object value) except -1:
    cdef Py_ssize_t n
    cdef unsigned char* p
    negative = value < 0
    mag = -value if negative else value
    n = (mag.bit_length() + 7) // 8
    if n > MAX_BIG_BYTES:
        raise _EncodeError(MSG_ENC_BIG)
    data = mag.to_bytes(n, "little")
    if n < 256:
        p = _room(o, 3)
        p[0] = SMALL_BIG_EXT
        p[1] = <unsigned char>n
        p[2] = 1 if negative else 0
        o.pos += 3
    else:
        p = _room(o, 6)
        p[0] = LARGE_BIG_EXT
        _put_u32(p + 1, <uint32_t>n)
        p[5] = 1 if negative else 0
        o.pos += 6
    return _write_bytes(o, data)


cdef int _enc_float(_Out* o, double d) except -1:
    cdef uint64_t bits
    cdef unsigned char* p
    if not isfinite(d):
        raise _EncodeError(MSG_ENC_FLOAT)
    memcpy(&bits, &d, 8)
    p = _room(o, 9)
    p[0] = NEW_FLOAT_EXT
    _put_u32(p + 1, <uint32_t>(bits >> 32))
    _put_u32(p + 5, <uint32_t>bits)
    o.pos += 9
    return 0


cdef int _enc_str(_Out* o, object text) except -1:
    """An exact str as a UTF-8 binary."""
    if PyUnicode_IS_ASCII(text):
        return _enc_binary(o, PyUnicode_1BYTE_DATA(text), PyUnicode_GET_LENGTH(text))
    raw = None
    try:
        raw = PyUnicode_AsUTF8String(text)
    except UnicodeEncodeError:
        pass
    if raw is None:
        raise _EncodeError(MSG_ENC_STR)
    return _enc_binary(o, PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw))


cdef inline bint _known_not_int(object x):
    """Whether ``x`` is of a type that cannot pass ``isinstance(x, int)``.

    Exact built-in and term types, whose ``__class__`` is their type: for
    them the twin's ``_is_byte`` is False without running any code.
    """
    cdef type t = type(x)
    return (t is tuple or t is _AtomT or t is list or t is str or t is bytes or t is float
            or t is dict or t is bool or x is None or t is _PidT or t is _RefT)


cdef int _byte_list(list lst, Py_ssize_t n, unsigned char* out) except -1:
    """As the twin's ``all(map(_is_byte, lst))``: 1 when every item is an
    exact int 0..255 (their bytes are then in ``out[:n]``), 2 when every item
    passes ``_is_byte`` but some are int subclasses, 0 otherwise."""
    cdef Py_ssize_t i = 0
    cdef int result = 1
    cdef int overflow = 0
    cdef long long v
    cdef PyObject* x
    while i < PyList_GET_SIZE(lst):
        x = PyList_GET_ITEM(lst, i)
        if _type_of(x) is &PyLong_Type:
            v = _as_llong(x, &overflow)
            if overflow or v < 0 or v > 255:
                return 0
            if result == 1:
                out[i] = <unsigned char>v  # i < n: no Python code has run
        elif _known_not_int(<object>x):
            return 0
        elif _py_is_byte(<object>x):  # Python code: it may even change the list
            result = 2
        else:
            return 0
        i += 1
    return result


# The encoder's explicit stack (twin: the iterator stack of ``encode``): a
# container stays on it until its items are exhausted, so ``depth`` counts
# the containers open around the value being written, as the twin's stack
# length does.
cdef enum:
    _E_TUPLE = 0    # exact tuple: obj[i] for i < n
    _E_LIST = 1     # exact list: obj[i] while i < len(obj), then NIL
    _E_DICT = 2     # exact dict: key, value, ... (PyDict_Next from position i)
    _E_ITER = 3     # any Python iterator (the twin's, for the other containers)


cdef struct _EFrame:
    int kind
    Py_ssize_t i
    Py_ssize_t n
    PyObject* obj       # the container or iterator (owned)
    PyObject* pending   # dict: the value of the key just handed out (owned)


cdef inline void _eopen(_EFrame* f, int kind, Py_ssize_t n, object obj) noexcept:
    f.kind = kind
    f.i = 0
    f.n = n
    Py_INCREF(obj)
    f.obj = <PyObject*>obj
    f.pending = NULL


cdef inline void _eframe_clear(_EFrame* f) noexcept:
    Py_XDECREF(f.obj)
    Py_XDECREF(f.pending)
    f.obj = NULL
    f.pending = NULL
    f.kind = -1


# Sentinels: an exhausted frame, and the end of a proper list's elements
# in an iterator frame (where NIL is written).
cdef object _EXHAUSTED = object()
cdef object _NIL_ITEM = object()
cdef tuple _NIL_TAIL = (_NIL_ITEM,)
cdef object _chain = _itertools.chain
cdef object _chain_from_iterable = _itertools.chain.from_iterable


cdef object _eframe_next(_Out* o, _EFrame* f):
    """The next item of the frame, or _EXHAUSTED (a list's NIL is written)."""
    cdef PyObject* k
    cdef PyObject* v
    cdef unsigned char* p
    if f.kind == _E_TUPLE:
        if f.i < f.n:
            f.i += 1
            return <object>PyTuple_GET_ITEM(<object>f.obj, f.i - 1)
        return _EXHAUSTED
    if f.kind == _E_LIST:
        # Like the list iterator: the length is read again at every step.
        if f.i < PyList_GET_SIZE(<object>f.obj):
            f.i += 1
            return <object>PyList_GET_ITEM(<object>f.obj, f.i - 1)
        if f.n:  # the NIL is written once
            f.n = 0
            p = _room(o, 1)
            p[0] = NIL_EXT
            o.pos += 1
        return _EXHAUSTED
    if f.kind == _E_DICT:
        if f.pending != NULL:
            return _take(&f.pending)
        # As the dict iterator, checked before every key and at the end.
        if PyDict_GET_SIZE(<object>f.obj) != f.n:
            f.n = -1
            raise RuntimeError("dictionary changed size during iteration")
        if PyDict_Next(<object>f.obj, &f.i, &k, &v):
            _own(&f.pending, <object>v)
            return <object>k
        return _EXHAUSTED
    return next(<object>f.obj, _EXHAUSTED)


cdef int _enc_list(_Out* o, list lst, _EFrame* push) except -1:
    """An exact list (twin: ``_encode_list``); opens ``push`` for LIST_EXT."""
    cdef Py_ssize_t n = PyList_GET_SIZE(lst)
    cdef unsigned char* p
    cdef int kind
    if n == 0:
        p = _room(o, 1)
        p[0] = NIL_EXT
        o.pos += 1
        return 0
    if n <= 0xFFFF:
        p = _room(o, 3 + n)  # written only if the list is a string after all
        kind = _byte_list(lst, n, p + 3)
        if kind == 1:
            p[0] = STRING_EXT
            _put_u16(p + 1, <uint32_t>n)
            o.pos += 3 + n
            return 0
        if kind == 2:
            p = _room(o, 3)
            p[0] = STRING_EXT
            _put_u16(p + 1, <uint32_t>n)
            o.pos += 3
            return _write_bytes(o, _py_bytes(lst))
    if <uint64_t>n > 0xFFFFFFFFu:
        raise _EncodeError(MSG_ENC_LIST)
    p = _room(o, 5)
    p[0] = LIST_EXT
    _put_u32(p + 1, <uint32_t>n)
    o.pos += 5
    _eopen(push, _E_LIST, 1, lst)
    return 0


cdef int _enc_list_generic(_Out* o, object lst, _EFrame* push) except -1:
    """A list subclass, through its Python protocols (twin: ``_encode_list``)."""
    cdef Py_ssize_t n = len(lst)
    cdef unsigned char* p
    if n == 0:
        p = _room(o, 1)
        p[0] = NIL_EXT
        o.pos += 1
        return 0
    if n <= 0xFFFF and _py_all(_py_map(_py_is_byte, lst)):
        p = _room(o, 3)
        p[0] = STRING_EXT
        _put_u16(p + 1, <uint32_t>n)
        o.pos += 3
        return _write_bytes(o, _py_bytes(lst))
    if <uint64_t>n > 0xFFFFFFFFu:
        raise _EncodeError(MSG_ENC_LIST)
    p = _room(o, 5)
    p[0] = LIST_EXT
    _put_u32(p + 1, <uint32_t>n)
    o.pos += 5
    _eopen(push, _E_ITER, 0, _chain(lst, _NIL_TAIL))
    return 0


cdef bint _safe_key_type(PyTypeObject* t) noexcept:
    """Twin: ``_SAFE_KEY_TYPES`` (Python equality is Erlang equality within each)."""
    cdef PyObject* o = <PyObject*>t
    return (o == <PyObject*>_AtomT or o == <PyObject*>int or o == <PyObject*>float
            or o == <PyObject*>str or o == <PyObject*>bytes or o == <PyObject*>bool
            or o == <PyObject*>_PidT or o == <PyObject*>_RefT or o == <PyObject*>_PortT
            or o == <PyObject*>_ExportT or o == <PyObject*>_BitsT
            or o == <PyObject*>_LocalFunT)


cdef bint _dict_keys_safe(dict d) noexcept:
    """Whether all keys have one exact type among the safe ones (twin: the
    fast exit of ``_check_map_keys``)."""
    cdef Py_ssize_t i = 0
    cdef PyObject* key
    cdef PyObject* value
    cdef PyTypeObject* first = NULL
    while PyDict_Next(d, &i, &key, &value):
        if first == NULL:
            first = _type_of(key)
            if not _safe_key_type(first):
                return False
        elif _type_of(key) != first:
            return False
    return True


cdef int _enc_dict(_Out* o, dict d, _EFrame* push) except -1:
    cdef Py_ssize_t n = PyDict_GET_SIZE(d)
    cdef unsigned char* p = _room(o, 5)
    p[0] = MAP_EXT
    _put_u32(p + 1, <uint32_t>n)
    o.pos += 5
    if n >= 2 and not _dict_keys_safe(d):
        _py._check_map_keys(d)
    if n:
        _eopen(push, _E_DICT, n, d)
    return 0


cdef inline bint _as_u32(PyObject* x, uint32_t* out) noexcept:
    """Whether ``x`` is an exact int in 0..2**32-1 (stored in ``out``)."""
    cdef int overflow = 0
    cdef long long v
    if _type_of(x) is not &PyLong_Type:
        return False
    v = _as_llong(x, &overflow)
    if overflow or v < 0 or (v >> 32) != 0:
        return False
    out[0] = <uint32_t>v
    return True


cdef inline bint _is_atom_text(object x):
    return type(x) is _AtomT or type(x) is str


cdef int _enc_pid(_Out* o, object pid) except -1:
    cdef unsigned char* p
    cdef uint32_t id_, serial, creation
    key = _get_key(_PID_KEY, pid)
    if type(key) is tuple and PyTuple_GET_SIZE(key) == 4:
        node = <object>PyTuple_GET_ITEM(key, 0)
        if (_is_atom_text(node) and _as_u32(PyTuple_GET_ITEM(key, 1), &id_)
                and _as_u32(PyTuple_GET_ITEM(key, 2), &serial)
                and _as_u32(PyTuple_GET_ITEM(key, 3), &creation)):
            p = _room(o, 1)
            p[0] = NEW_PID_EXT
            o.pos += 1
            _enc_atom(o, node)
            p = _room(o, 12)
            _put_u32(p, id_)
            _put_u32(p + 4, serial)
            _put_u32(p + 8, creation)
            o.pos += 12
            return 0
    return _enc_delegate(o, pid)


cdef inline bint _as_u8(PyObject* x, unsigned char* out) noexcept:
    """Whether ``x`` is an exact int in 0..255 (stored in ``out``)."""
    cdef uint32_t v
    if not _as_u32(x, &v) or v > 255:
        return False
    out[0] = <unsigned char>v
    return True


cdef int _enc_ref(_Out* o, object ref) except -1:
    cdef unsigned char* p
    cdef Py_ssize_t n, i
    cdef uint32_t creation = 0, v = 0
    key = _get_key(_REF_KEY, ref)
    if type(key) is tuple and PyTuple_GET_SIZE(key) == 3:
        node = <object>PyTuple_GET_ITEM(key, 0)
        ids = <object>PyTuple_GET_ITEM(key, 2)
        if (_is_atom_text(node) and _as_u32(PyTuple_GET_ITEM(key, 1), &creation)
                and type(ids) is tuple and PyTuple_GET_SIZE(ids) <= 0xFFFF):
            n = PyTuple_GET_SIZE(ids)
            for i in range(n):
                if not _as_u32(PyTuple_GET_ITEM(ids, i), &v):
                    return _enc_delegate(o, ref)
            p = _room(o, 3)
            p[0] = NEWER_REFERENCE_EXT
            _put_u16(p + 1, <uint32_t>n)
            o.pos += 3
            _enc_atom(o, node)
            p = _room(o, 4 + 4 * n)
            _put_u32(p, creation)
            for i in range(n):
                _as_u32(PyTuple_GET_ITEM(ids, i), &v)
                _put_u32(p + 4 + 4 * i, v)
            o.pos += 4 + 4 * n
            return 0
    return _enc_delegate(o, ref)


cdef int _enc_port(_Out* o, object port) except -1:
    cdef unsigned char* p
    cdef int overflow = 0
    cdef unsigned long long id_
    cdef uint32_t creation
    key = _get_key(_PORT_KEY, port)
    if type(key) is tuple and PyTuple_GET_SIZE(key) == 3:
        node = <object>PyTuple_GET_ITEM(key, 0)
        number = <object>PyTuple_GET_ITEM(key, 1)
        if (_is_atom_text(node) and type(number) is int and number >= 0
                and number.bit_length() <= 64
                and _as_u32(PyTuple_GET_ITEM(key, 2), &creation)):
            id_ = number
            # As OTP: NEW_PORT_EXT only for port numbers of up to 28 bits.
            p = _room(o, 1)
            p[0] = NEW_PORT_EXT if (id_ >> 28) == 0 else V4_PORT_EXT
            o.pos += 1
            _enc_atom(o, node)
            if (id_ >> 28) == 0:
                p = _room(o, 8)
                _put_u32(p, <uint32_t>id_)
                _put_u32(p + 4, creation)
                o.pos += 8
            else:
                p = _room(o, 12)
                _put_u32(p, <uint32_t>(id_ >> 32))
                _put_u32(p + 4, <uint32_t>id_)
                _put_u32(p + 8, creation)
                o.pos += 12
            return 0
    return _enc_delegate(o, port)


cdef int _enc_bits(_Out* o, object value) except -1:
    cdef unsigned char* p
    cdef unsigned char bits
    cdef Py_ssize_t n
    key = _get_key(_BITS_KEY, value)
    if type(key) is tuple and PyTuple_GET_SIZE(key) == 2:
        data = <object>PyTuple_GET_ITEM(key, 0)
        if (type(data) is bytes and <uint64_t>PyBytes_GET_SIZE(data) <= 0xFFFFFFFFu
                and _as_u8(PyTuple_GET_ITEM(key, 1), &bits)):
            n = PyBytes_GET_SIZE(data)
            p = _room(o, 6 + n)
            p[0] = BIT_BINARY_EXT
            _put_u32(p + 1, <uint32_t>n)
            p[5] = bits
            memcpy(p + 6, PyBytes_AS_STRING(data), n)
            o.pos += 6 + n
            return 0
    return _enc_delegate(o, value)


cdef int _enc_export(_Out* o, object fun) except -1:
    cdef unsigned char* p
    cdef unsigned char arity
    key = _get_key(_EXPORT_KEY, fun)
    if type(key) is tuple and PyTuple_GET_SIZE(key) == 3:
        module = <object>PyTuple_GET_ITEM(key, 0)
        function = <object>PyTuple_GET_ITEM(key, 1)
        if (_is_atom_text(module) and _is_atom_text(function)
                and _as_u8(PyTuple_GET_ITEM(key, 2), &arity)):
            p = _room(o, 1)
            p[0] = EXPORT_EXT
            o.pos += 1
            _enc_atom(o, module)
            _enc_atom(o, function)
            p = _room(o, 2)
            p[0] = SMALL_INTEGER_EXT
            p[1] = arity
            o.pos += 2
            return 0
    return _enc_delegate(o, fun)


cdef int _enc_improper(_Out* o, object value, _EFrame* push) except -1:
    cdef unsigned char* p
    cdef Py_ssize_t n
    key = value._key
    if type(key) is tuple and PyTuple_GET_SIZE(key) == 2:
        elements = (<tuple>key)[0]
        tail = (<tuple>key)[1]
    else:
        elements, tail = _unpack2(key)
    n = len(elements)
    p = _room(o, 5)
    p[0] = LIST_EXT
    _put_u32(p + 1, <uint32_t>n)
    o.pos += 5
    _eopen(push, _E_ITER, 0, _chain(elements, (tail,)))
    return 0


cdef int _enc_mapping(_Out* o, object m, _EFrame* push) except -1:
    """Any Mapping (twin: ``chain.from_iterable(obj.items())``)."""
    cdef Py_ssize_t n = len(m)
    cdef unsigned char* p = _room(o, 5)
    p[0] = MAP_EXT
    _put_u32(p + 1, <uint32_t>n)
    o.pos += 5
    if len(m) >= 2 and type(m) is not _MapT:
        _py._check_map_keys(m)
    if len(m):
        _eopen(push, _E_ITER, 0, _chain_from_iterable(m.items()))
    return 0


cdef int _enc_bytes_like(_Out* o, object obj) except -1:
    """bytes/bytearray/memoryview and their subclasses (twin: ``_flat``)."""
    cdef Py_buffer view
    if PyBytes_Check(obj) or PyByteArray_Check(obj) or PyMemoryView_Check(obj):
        try:
            PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE)
        except BufferError:
            # A strided memoryview: the twin copies it to contiguous bytes.
            PyObject_GetBuffer(_py_flat(_MemoryViewT(obj)), &view, PyBUF_SIMPLE)
        try:
            _enc_binary(o, view.buf, view.len)
        finally:
            PyBuffer_Release(&view)
        return 0
    return _enc_delegate(o, obj)


cdef inline bint _isinstance(object obj, object cls) except -1:
    # PyObject_IsInstance, not Cython's type-check shortcut: the twin's
    # isinstance() also honours __class__ and ABC registration.
    return PyObject_IsInstance(obj, cls)


cdef int _enc_other(_Out* o, object obj, _EFrame* push) except -1:
    """Everything but the exact types of _enc (twin: ``_encode_other``)."""
    cdef type t = type(obj)
    cdef unsigned char* p
    cdef Py_ssize_t n
    if t is bytearray:
        return _enc_binary(o, PyByteArray_AS_STRING(obj), PyByteArray_GET_SIZE(obj))
    if t is _MemoryViewT:
        return _enc_bytes_like(o, obj)
    if _isinstance(obj, _AtomT):
        return _enc_atom(o, PyObject_Str(obj))
    if _isinstance(obj, bool):  # bool cannot be subclassed: only a __class__ lie gets here
        return _write_bytes(o, _TRUE_ATOM_BYTES if obj else _FALSE_ATOM_BYTES)
    if _isinstance(obj, int):
        return _enc_int(o, PyNumber_Long(obj))
    if _isinstance(obj, float):
        return _enc_float(o, PyFloat_AS_DOUBLE(PyNumber_Float(obj)))
    if _isinstance(obj, str):
        text = PyObject_Str(obj)
        if type(text) is str:
            return _enc_str(o, text)
        return _enc_delegate(o, obj)
    if _isinstance(obj, _BYTES_LIKE):
        return _enc_bytes_like(o, obj)
    if _isinstance(obj, tuple):
        n = len(obj)
        if n < 256:
            p = _room(o, 2)
            p[0] = SMALL_TUPLE_EXT
            p[1] = <unsigned char>n
            o.pos += 2
        else:
            p = _room(o, 5)
            p[0] = LARGE_TUPLE_EXT
            _put_u32(p + 1, <uint32_t>n)
            o.pos += 5
        if n:
            _eopen(push, _E_ITER, 0, iter(obj))
        return 0
    if _isinstance(obj, list):
        return _enc_list_generic(o, obj, push)
    if _isinstance(obj, _Mapping):
        return _enc_mapping(o, obj, push)
    if _isinstance(obj, _ImproperT):
        return _enc_improper(o, obj, push)
    if _isinstance(obj, _PidT):
        return _enc_pid(o, obj) if t is _PidT else _enc_delegate(o, obj)
    if _isinstance(obj, _RefT):
        return _enc_ref(o, obj) if t is _RefT else _enc_delegate(o, obj)
    if _isinstance(obj, _PortT):
        return _enc_port(o, obj) if t is _PortT else _enc_delegate(o, obj)
    if _isinstance(obj, _BitsT):
        return _enc_bits(o, obj) if t is _BitsT else _enc_delegate(o, obj)
    if _isinstance(obj, _ExportT):
        return _enc_export(o, obj) if t is _ExportT else _enc_delegate(o, obj)
    if _isinstance(obj, _LocalFunT):
        raw = obj.raw
        if t is _LocalFunT and type(raw) is bytes:
            return _write_bytes(o, raw)
        return _enc_delegate(o, obj)
    raise _EncodeError(f"cannot encode {type(obj).__qualname__} as an Erlang term")


cdef int _enc(_Out* o, object obj, _EFrame* push) except -1:
    """Write ``obj``, or the head of a container and open ``push`` for its items."""
    cdef type t = type(obj)
    cdef Py_ssize_t n, i
    cdef unsigned char* p
    if t is tuple:
        n = PyTuple_GET_SIZE(obj)
        if n < 256:
            p = _room(o, 2)
            p[0] = SMALL_TUPLE_EXT
            p[1] = <unsigned char>n
            o.pos += 2
        else:
            p = _room(o, 5)
            p[0] = LARGE_TUPLE_EXT
            _put_u32(p + 1, <uint32_t>n)
            o.pos += 5
        if n:
            _eopen(push, _E_TUPLE, n, obj)
        return 0
    if t is _AtomT:
        return _enc_atom(o, obj)
    if t is int:
        return _enc_int(o, obj)
    if t is bytes:
        return _enc_binary(o, PyBytes_AS_STRING(obj), PyBytes_GET_SIZE(obj))
    if t is list:
        return _enc_list(o, <list>obj, push)
    if t is str:
        return _enc_str(o, obj)
    if t is float:
        return _enc_float(o, PyFloat_AS_DOUBLE(obj))
    if t is dict:
        return _enc_dict(o, <dict>obj, push)
    if obj is True:
        return _write_bytes(o, _TRUE_ATOM_BYTES)
    if obj is False:
        return _write_bytes(o, _FALSE_ATOM_BYTES)
    if obj is None:
        return _write_bytes(o, _UNDEFINED_ATOM_BYTES)
    if t is _PidT:
        return _enc_pid(o, obj)
    if t is _RefT:
        return _enc_ref(o, obj)
    return _enc_other(o, obj, push)


cdef int _leaf_run(_Out* o, _EFrame* f) except -1:
    """Fast path: write the run of plain leaves (exact int, float, bytes,
    ASCII atom) that comes next in a tuple or list frame, as _enc would."""
    cdef PyObject* item
    cdef PyTypeObject* t
    cdef Py_ssize_t size
    while True:
        if f.kind == _E_TUPLE:
            if f.i >= f.n:
                return 0
            item = PyTuple_GET_ITEM(<object>f.obj, f.i)
        else:
            if f.i >= PyList_GET_SIZE(<object>f.obj):
                return 0
            item = PyList_GET_ITEM(<object>f.obj, f.i)
        t = _type_of(item)
        if t is &PyLong_Type:
            value = <object>item  # a strong reference while writing it
            _enc_int(o, value)
        elif t is &PyFloat_Type:
            _enc_float(o, PyFloat_AS_DOUBLE(<object>item))
        elif t is &PyBytes_Type:
            _enc_binary(o, PyBytes_AS_STRING(<object>item), PyBytes_GET_SIZE(<object>item))
        elif t is <PyTypeObject*>_AtomT and PyUnicode_IS_ASCII(<object>item):
            size = PyUnicode_GET_LENGTH(<object>item)
            if size > MAX_ATOM_CHARS:
                return 0
            _enc_atom(o, <object>item)
        else:
            return 0
        f.i += 1


cdef int _encode_term(_Out* o, object term) except -1:
    """Write ``term`` (twin: the loop of ``encode``)."""
    cdef _EFrame inline_frames[_INLINE_FRAMES]
    cdef _EFrame* stack = inline_frames
    cdef Py_ssize_t depth = 0
    cdef _EFrame* slot
    cdef unsigned char* p
    obj = term
    try:
        while True:
            # The slot above the open containers takes the value's own
            # frame, if it is a container: the first frames on the C stack,
            # then all of them in one heap block.
            if depth == _INLINE_FRAMES and stack == inline_frames:
                stack = <_EFrame*>PyMem_Malloc((MAX_DEPTH + 1) * sizeof(_EFrame))
                if stack == NULL:
                    stack = inline_frames
                    raise MemoryError()
                memcpy(stack, inline_frames, depth * sizeof(_EFrame))
            slot = &stack[depth]
            slot.kind = -1
            _enc(o, obj, slot)
            if slot.kind >= 0:
                depth += 1  # counted at once, so that an error releases it
                if depth > MAX_DEPTH:
                    raise _EncodeError(MSG_ENC_DEPTH)
            # The next value: the next item of the innermost unfinished container.
            while depth:
                if stack[depth - 1].kind <= _E_LIST:
                    _leaf_run(o, &stack[depth - 1])
                obj = _eframe_next(o, &stack[depth - 1])
                if obj is _EXHAUSTED:
                    depth -= 1
                    _eframe_clear(&stack[depth])
                elif obj is _NIL_ITEM:
                    p = _room(o, 1)
                    p[0] = NIL_EXT
                    o.pos += 1
                else:
                    break
            else:
                return 0
    finally:
        while depth:
            depth -= 1
            _eframe_clear(&stack[depth])
        if stack != inline_frames:
            PyMem_Free(stack)


def encode(term, compressed=0):
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
    cdef _Out o
    cdef int overflow = 0
    cdef long long level = -1
    if type(compressed) is int:
        level = _as_llong(<PyObject*>compressed, &overflow)
    if overflow or not 0 <= level <= 9:
        raise ConfigurationError(MSG_ENC_COMPRESSED)
    o.cap = 5 + PyBytes_GET_SIZE(term) + 1 if type(term) is bytes else 128
    o.obj = _new_bytes(NULL, o.cap)
    o.buf = <unsigned char*>_bytes_data(o.obj)
    o.buf[0] = VERSION
    o.pos = 1
    try:
        _encode_term(&o, term)
        if o.pos != o.cap:
            _PyBytes_Resize(&o.obj, o.pos)
    except BaseException:
        Py_XDECREF(o.obj)
        raise
    data = <bytes>o.obj
    Py_DECREF(data)  # the reference o.obj held now belongs to ``data``
    if level:
        return _py_compress(data, compressed)
    return data


# ---------------------------------------------------------------------------
# Distribution framing and the send scheduler (sans-I/O, for the carrier).

include "_fastpath_framing.pxi"
include "_fastpath_scheduler.pxi"
