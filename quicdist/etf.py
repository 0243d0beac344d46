"""Erlang's External Term Format: ``encode(term) -> bytes``, ``decode(data) -> term``.

Erlang to Python (decode)
=========================

=======================================  =====================================
Erlang term                              Python value
=======================================  =====================================
integer (any size)                       ``int``
float                                    ``float``
``true`` / ``false``                     ``True`` / ``False``
any other atom                           :class:`~quicdist.terms.Atom` (``str``
                                         subclass); ``undefined`` stays
                                         ``Atom('undefined')``
tuple                                    ``tuple``
``[]`` and proper lists                  ``list`` (a string like ``"abc"`` is a
                                         list of ints: ``[97, 98, 99]``)
improper list ``[a | b]``                :class:`~quicdist.terms.ImproperList`
binary                                   ``bytes``
bitstring (not whole bytes)              :class:`~quicdist.terms.BitBinary`
map                                      ``dict`` in wire order, or
                                         :class:`~quicdist.terms.Map` when the
                                         keys do not fit a dict
pid / port / reference                   :class:`~quicdist.terms.Pid` /
                                         :class:`~quicdist.terms.Port` /
                                         :class:`~quicdist.terms.Reference`
``fun M:F/A``                            :class:`~quicdist.terms.ExportFun`
local fun                                :class:`~quicdist.terms.LocalFun`
                                         (opaque)
=======================================  =====================================

Python to Erlang (encode)
=========================

=========================================  ===================================
Python value                               Erlang term
=========================================  ===================================
``int`` (and int subclasses but ``bool``)  integer (bignum beyond 64 bits)
``float``                                  float (NaN/inf raise EncodeError)
``True`` / ``False``                       ``true`` / ``false``
``None``                                   ``undefined``
:class:`Atom`                              atom
``str``                                    UTF-8 binary (``<<"text"/utf8>>``)
``bytes``, ``bytearray``, ``memoryview``   binary
``tuple``                                  tuple
``list``                                   list (``STRING_EXT`` when every
                                           element is an int 0..255, as OTP
                                           does)
``dict`` / any ``Mapping`` / ``Map``       map, keys in iteration order
the quicdist term types                    the corresponding term
=========================================  ===================================

A map cannot have two keys that are one Erlang term: ``{"a": 1, b"a": 2}``
(both are the binary ``<<"a">>``), ``{None: 1, Atom("undefined"): 2}`` or
``{True: 1, Atom("true"): 2}`` raise :class:`~quicdist.errors.EncodeError`
instead of producing a map OTP would reject.

Canonical form: for every term ``T``, ``encode(decode(B)) == B`` where
``B = term_to_binary(T, [{minor_version, 2}])``. The decoder also accepts
the older forms OTP emits (latin-1 atoms, ``FLOAT_EXT``, ``PID_EXT``, ...,
and compressed terms) and re-encodes them in the current form, except local
funs, which always re-encode to the bytes they came in. A reference has 1 to
5 ids (OTP 25 crashes on one with none).

Limits (hostile input raises :class:`~quicdist.errors.DecodeError`, a
``ValueError``): nesting deeper than :data:`MAX_DEPTH`, integers larger than
OTP's own limit, atoms over 255 characters, invalid UTF-8, unknown tags,
lengths that exceed the input, trailing bytes after the term (use
:func:`decode_from` to read concatenated terms).
"""

from __future__ import annotations

from ._accel import USING_EXTENSION, decode, decode_from, encode
from ._constants import MAX_ATOM_CHARS, MAX_BIG_BYTES, MAX_DEPTH


__all__ = [
    "MAX_ATOM_CHARS",
    "MAX_BIG_BYTES",
    "MAX_DEPTH",
    "USING_EXTENSION",
    "decode",
    "decode_from",
    "encode",
]
