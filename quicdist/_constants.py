"""External Term Format tags and the codec's limits (shared by both codecs).

The Cython fast path repeats these values as C constants;
tests/test_exports.py checks that the two agree.
"""

from __future__ import annotations


VERSION = 131

# Tags (erl_ext_dist).
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

# Limits.
#: Deepest nesting of tuples, lists, maps and fun environments either codec
#: accepts. Deeper terms raise DecodeError / EncodeError (never RecursionError).
MAX_DEPTH = 1000
#: Largest integer magnitude in bytes; the same limit as OTP 25's
#: binary_to_term (integers beyond it do not exist in Erlang).
MAX_BIG_BYTES = 4194296
#: Longest atom, in characters (Erlang's limit).
MAX_ATOM_CHARS = 255
#: Most ids in a reference (NEWER_REFERENCE_EXT).
MAX_REF_IDS = 5
#: How many distinct atoms each codec remembers to avoid re-creating them.
ATOM_CACHE_SIZE = 4096
