"""Hostile input: every bad byte string raises DecodeError, fast and cheaply.

"Cheaply" is checked with tracemalloc: decoding a hostile input may not
allocate more than a small multiple of its own size (with a floor for the
interpreter's own bookkeeping). A wall-clock bound is left to pytest-timeout;
speed is measured in bench/, never asserted here.
"""

from __future__ import annotations

import tracemalloc
import zlib

import pytest

from quicdist import Atom, BitBinary, ImproperList, Pid, Reference
from quicdist.errors import DecodeError
from quicdist.etf import MAX_BIG_BYTES, MAX_DEPTH


U32_MAX = b"\xff\xff\xff\xff"

HOSTILE = {
    "empty": b"",
    "no version": b"a\x01",
    "bad version": b"\x82a\x01",
    "only version": b"\x83",
    "unknown tag": b"\x83\x01",
    "unknown tag 255": b"\x83\xff",
    "atom cache ref": b"\x83R\x00",
    "nested compressed": b"\x83h\x01P\x00\x00\x00\x01x\x9c",
    "old fun": b"\x83u\x00\x00\x00\x00",
    "local ext": b"\x83y",
    "4 GiB binary": b"\x83m" + U32_MAX + b"abcd",
    "4 GiB tuple": b"\x83i" + U32_MAX + b"abcd",
    "4 GiB list": b"\x83l" + U32_MAX + b"abcd",
    "4 GiB map": b"\x83t" + U32_MAX + b"abcd",
    "4 GiB bit binary": b"\x83M" + U32_MAX + b"\x03ab",
    "4 GiB big": b"\x83o" + U32_MAX + b"\x00ab",
    "64 KiB string": b"\x83k\xff\xffab",
    "64 KiB atom": b"\x83v\xff\xffab",
    "4 GiB fun": b"\x83p" + U32_MAX + b"ab",
    "4 GiB compressed": b"\x83P" + U32_MAX + zlib.compress(b"a\x01"),
    "compressed size lie (small)": b"\x83P\x00\x00\x00\x01" + zlib.compress(b"a\x01"),
    "compressed size lie (large)": b"\x83P\x00\x00\x00\x09" + zlib.compress(b"a\x01"),
    "compressed garbage": b"\x83P\x00\x00\x00\x02garbage!",
    "compressed truncated": b"\x83P\x00\x00\x00\x02" + zlib.compress(b"a\x01")[:-3],
    "compressed inner garbage": b"\x83P\x00\x00\x00\x02" + zlib.compress(b"\x01\x01"),
    "big over the limit": b"\x83o" + (MAX_BIG_BYTES + 1).to_bytes(4, "big") + b"\x00",
    "big bad sign": b"\x83n\x01\x02\x01",
    "atom 256 chars utf8": b"\x83v\x01\x00" + b"a" * 256,
    "atom 256 chars latin1": b"\x83d\x01\x00" + b"a" * 256,
    "atom 256 chars multibyte": b"\x83v\x02\x00" + "ä".encode() * 256,
    "atom invalid utf8": b"\x83w\x02\xc3\x28",
    "atom overlong utf8": b"\x83w\x02\xc0\xaf",
    "atom surrogate utf8": b"\x83w\x03\xed\xa0\x80",
    "pid node not atom": b"\x83Xa\x01" + bytes(12),
    "pid truncated": b"\x83Xw\x01n\x00\x00",
    "ref too many ids": b"\x83Z\x00\x06w\x01n" + bytes(28),
    "ref without ids": b"\x83Z\x00\x00w\x01n" + bytes(4),
    "ref truncated": b"\x83Z\x00\x03w\x01n" + bytes(6),
    "port truncated": b"\x83xw\x01n" + bytes(5),
    "export arity not small int": b"\x83qw\x01mw\x01fb\x00\x00\x00\x01",
    "export module not atom": b"\x83qa\x01w\x01fa\x01",
    "nan float": b"\x83F\x7f\xf8" + bytes(6),
    "inf float": b"\x83F\x7f\xf0" + bytes(6),
    "old float garbage": b"\x83c" + b"not a float".ljust(31, b"\x00"),
    "old float inf": b"\x83c" + b"1e999".ljust(31, b"\x00"),
    "fun size too small": b"\x83p\x00\x00\x00\x04",
    "fun env overrun": b"\x83p\x00\x00\x00\x1d" + bytes(21) + U32_MAX,
    "trailing bytes": b"\x83jj",
    "duplicate map key": b"\x83t\x00\x00\x00\x02a\x01a\x01a\x01a\x02",
    "deep tuples": b"\x83" + b"h\x01" * 100_000 + b"j",
    "deep lists": b"\x83" + b"l\x00\x00\x00\x01" * 100_000 + b"j",
    "deep maps": b"\x83" + b"t\x00\x00\x00\x01j" * 100_000 + b"j",
    "deep improper tails": b"\x83" + b"l\x00\x00\x00\x01j" * 100_000 + b"j",
    "deep just over the limit": b"\x83" + b"h\x01" * (MAX_DEPTH + 1) + b"j",
}


def _peak_allocation(fn) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_input_raises_decode_error(fastpath, name):
    data = HOSTILE[name]

    def attempt():
        with pytest.raises(DecodeError) as info:
            fastpath.decode(data)
        assert isinstance(info.value, ValueError)
        assert -1 <= info.value.offset <= len(data)
        assert str(info.value)

    peak = _peak_allocation(attempt)
    assert peak <= 64 * 1024 + 64 * len(data), f"{name}: peak allocation {peak} bytes"


def test_deepest_allowed_nesting_decodes(fastpath):
    data = b"\x83" + b"h\x01" * MAX_DEPTH + b"j"
    term = fastpath.decode(data)
    for _ in range(MAX_DEPTH):
        assert type(term) is tuple and len(term) == 1
        term = term[0]
    assert term == []
    assert fastpath.encode(fastpath.decode(data)) == data


def test_depth_error_names_the_offending_container(fastpath):
    data = b"\x83" + b"h\x01" * (MAX_DEPTH + 1) + b"j"
    with pytest.raises(DecodeError, match="nested deeper") as info:
        fastpath.decode(data)
    assert info.value.offset == 1 + 2 * MAX_DEPTH


def test_every_truncation_of_a_rich_term_raises(fastpath):
    term = (1, -70000, 2**100, 1.25, Atom("ok"), Atom("é"), "str", b"bin", [1, 2, 3],
            [Atom("a"), 300], ImproperList([1], 2), {Atom("k"): [1000]},
            Pid("n@h", 1, 2, 3), Reference("n@h", 1, (1, 2, 3)), BitBinary(b"\x80", 1), (), [],
            {})
    data = fastpath.encode(term)
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            fastpath.decode(data[:cut])
    # And decode_from on a prefix never reads past what it was given.
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            fastpath.decode_from(memoryview(data)[:cut])


def test_failed_decode_leaves_later_decodes_intact(fastpath):
    good = fastpath.encode((Atom("fine"), [1, 2], b"x"))
    for data in HOSTILE.values():
        with pytest.raises(DecodeError):
            fastpath.decode(data)
    assert fastpath.decode(good) == (Atom("fine"), [1, 2], b"x")


def test_compressed_bomb_is_bounded_by_declared_size(fastpath):
    # 16 MiB of zeros compress to ~16 KiB; declaring 100 bytes must stop
    # inflation at the declared size instead of expanding it all.
    bomb = zlib.compress(b"m" + (16 * 1024 * 1024).to_bytes(4, "big") + bytes(16 * 1024 * 1024))
    data = b"\x83P\x00\x00\x00\x64" + bomb

    def attempt():
        with pytest.raises(DecodeError, match="declared size"):
            fastpath.decode(data)

    assert _peak_allocation(attempt) < 1024 * 1024
