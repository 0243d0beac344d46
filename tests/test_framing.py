"""Distribution framing: pack_frame, pack_frames, FrameDecoder (PROTOCOL.md §4).

Every behavioural test runs on both implementations through the `fastpath`
fixture; the differential tests at the end feed the compiled module and the
pure twin the same random byte streams, in the same random chunks, and
require the same frames, the same ``buffered`` after every feed, and the
same exception type and message. QUICDIST_FUZZ_EXAMPLES=N runs N examples
per property instead of the short default.
"""

from __future__ import annotations

import array
import mmap
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from quicdist import _accel
from quicdist.errors import ConfigurationError, FrameError, QuicDistError, RemoteProtocolError
from tests.conftest import COMPILED, PURE


EXAMPLES = int(os.environ.get("QUICDIST_FUZZ_EXAMPLES", "0") or 0)
MAX_LEN = 2**32 - 1
MiB = 1 << 20

needs_compiled = pytest.mark.skipif(COMPILED is None, reason="extension not built")
IMPLS = [PURE] if COMPILED is None else [COMPILED, PURE]


def examples(default: int) -> settings:
    """Hypothesis settings: ``default`` examples, or QUICDIST_FUZZ_EXAMPLES."""
    return settings(max_examples=EXAMPLES or default, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def frame(payload: bytes) -> bytes:
    """The reference encoding, written out independently of the code under test."""
    return struct.pack(">I", len(payload)) + payload


def feed_all(decoder, pieces) -> list[bytes]:
    out: list[bytes] = []
    for piece in pieces:
        out += decoder.feed(piece)
    return out


def outcome(call):
    """The result of call(), or the exception's type and message (for comparisons)."""
    try:
        return ("ok", call())
    except Exception as exc:  # compared as data
        return ("raised", type(exc), str(exc))


# ---------------------------------------------------------------------------
# Selection and constants


def test_constants(fastpath):
    assert fastpath.TICK == b"\x00\x00\x00\x00" == fastpath.pack_frame(b"")
    assert fastpath.DEFAULT_MAX_FRAME_SIZE == 128 * 1024 * 1024
    assert fastpath.FrameDecoder().max_frame_size == fastpath.DEFAULT_MAX_FRAME_SIZE
    assert type(fastpath.TICK) is bytes and type(fastpath.DEFAULT_MAX_FRAME_SIZE) is int


def test_accel_selects_framing_with_the_codec():
    module = COMPILED if _accel.USING_EXTENSION else PURE
    for name in ("FrameDecoder", "pack_frame", "pack_frames", "encode", "decode"):
        assert getattr(_accel, name) is getattr(module, name), name
    assert _accel.TICK == PURE.TICK and _accel.DEFAULT_MAX_FRAME_SIZE == PURE.DEFAULT_MAX_FRAME_SIZE


def test_required_extension_provides_framing():
    if os.environ.get("QUICDIST_REQUIRE_EXTENSIONS", "") in ("", "0"):
        pytest.skip("QUICDIST_REQUIRE_EXTENSIONS is not set")
    assert _accel.USING_EXTENSION is True
    assert _accel.FrameDecoder is COMPILED.FrameDecoder
    assert _accel.pack_frames is COMPILED.pack_frames


# ---------------------------------------------------------------------------
# pack_frame / pack_frames


PAYLOADS = [b"", b"\x00", b"p", b"p\x83h\x04a\x06", bytes(range(256)) * 4, os.urandom(65536)]


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: f"{len(p)}B")
def test_pack_frame_round_trip(fastpath, payload):
    packed = fastpath.pack_frame(payload)
    assert type(packed) is bytes
    assert packed == frame(payload)
    decoder = fastpath.FrameDecoder()
    assert decoder.feed(packed) == [payload]
    assert decoder.buffered == 0


@pytest.mark.parametrize("make", [
    bytearray, memoryview, lambda b: memoryview(bytearray(b)),
    lambda b: memoryview(b"--" + b + b"--")[2:-2],
    lambda b: array.array("B", b),
], ids=["bytearray", "memoryview", "memoryview-bytearray", "memoryview-slice", "array-B"])
def test_pack_frame_takes_any_bytes_like(fastpath, make):
    payload = b"hello frame"
    assert fastpath.pack_frame(make(payload)) == frame(payload)
    assert fastpath.pack_frames([make(payload), payload]) == frame(payload) * 2


def test_pack_frame_of_wide_items_counts_bytes(fastpath):
    wide = array.array("I", [1, 2, 3])
    assert fastpath.pack_frame(wide) == frame(wide.tobytes())
    grid = memoryview(bytes(range(12))).cast("B", (3, 4))
    assert fastpath.pack_frame(grid) == frame(bytes(range(12)))


@pytest.mark.parametrize("bad", ["text", 7, None, 1.5, [b"a"], memoryview(b"abcdef")[::2]],
                         ids=["str", "int", "None", "float", "list", "strided"])
def test_pack_frame_refuses_what_is_not_contiguous_bytes(fastpath, bad):
    with pytest.raises(TypeError) as info:
        fastpath.pack_frame(bad)
    assert str(info.value) == f"expected a bytes-like object, {type(bad).__name__} found"
    with pytest.raises(TypeError) as info:
        fastpath.pack_frames([b"ok", bad])
    assert str(info.value) == f"expected a bytes-like object, {type(bad).__name__} found"


def test_pack_frames_is_concatenated_pack_frame(fastpath):
    assert fastpath.pack_frames(PAYLOADS) == b"".join(map(fastpath.pack_frame, PAYLOADS))
    assert fastpath.pack_frames(PAYLOADS) == b"".join(map(frame, PAYLOADS))
    assert fastpath.pack_frames([]) == b""
    assert fastpath.pack_frames(()) == b""
    assert fastpath.pack_frames(iter([b"a", b"bc"])) == frame(b"a") + frame(b"bc")
    assert fastpath.pack_frames(p for p in (b"x", b"")) == frame(b"x") + fastpath.TICK
    assert fastpath.pack_frames([b"a"] * 100) == frame(b"a") * 100
    assert type(fastpath.pack_frames([b"a"])) is bytes


def test_pack_frames_refuses_a_non_iterable_and_byte_strings(fastpath):
    with pytest.raises(TypeError, match="'int' object is not iterable"):
        fastpath.pack_frames(5)
    # A bytes object is an iterable of ints, not of payloads.
    with pytest.raises(TypeError, match="expected a bytes-like object, int found"):
        fastpath.pack_frames(b"abc")


@pytest.fixture(scope="module")
def huge():
    """A 4 GiB + 1 byte buffer that is never touched (anonymous mmap, no RAM used)."""
    try:
        m = mmap.mmap(-1, MAX_LEN + 1)
    except (OSError, OverflowError, ValueError) as exc:
        pytest.skip(f"cannot map 4 GiB of address space: {exc}")
    yield m
    m.close()


def test_payload_longer_than_a_length_can_say_is_refused(fastpath, huge):
    message = f"frame payload of {MAX_LEN + 1} bytes is larger than a 4-byte length allows " \
              f"({MAX_LEN} bytes)"
    for call in (lambda: fastpath.pack_frame(huge),
                 lambda: fastpath.pack_frame(memoryview(huge)),
                 lambda: fastpath.pack_frames([b"ok", huge])):
        with pytest.raises(ValueError) as info:
            call()
        assert type(info.value) is ConfigurationError
        assert str(info.value) == message


# ---------------------------------------------------------------------------
# FrameDecoder: reassembly


def small_stream(limit: int) -> tuple[list[bytes], bytes]:
    """Ticks, empty payloads, 1 byte, small and exactly-`limit` frames, back to back."""
    frames = [b"", b"a", b"", b"", bytes(range(7)), b"\xff" * limit, b"z", b"",
              os.urandom(limit), b"xy"]
    return frames, b"".join(map(frame, frames))


def test_every_split_into_two_pieces(fastpath):
    limit = 300
    frames, data = small_stream(limit)
    for cut in range(len(data) + 1):
        decoder = fastpath.FrameDecoder(limit)
        first = decoder.feed(data[:cut])
        assert decoder.buffered == cut - len(b"".join(map(frame, first)))
        assert first + decoder.feed(data[cut:]) == frames, cut
        assert decoder.buffered == 0


def test_every_split_into_three_pieces(fastpath):
    frames = [b"", b"ab", b"", b"cde", b"f"]
    data = b"".join(map(frame, frames))
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1):
            decoder = fastpath.FrameDecoder(3)
            assert feed_all(decoder, [data[:i], data[i:j], data[j:]]) == frames, (i, j)
            assert decoder.buffered == 0


def test_large_frames_split_near_every_boundary(fastpath):
    frames = [b"", os.urandom(65536), b"q", os.urandom(65535), b""]
    data = b"".join(map(frame, frames))
    edges = [0, 4, 65540, 65545, 65549, len(data) - 4, len(data)]
    cuts = sorted({c + d for c in edges for d in range(-5, 6) if 0 <= c + d <= len(data)}
                  | set(range(0, len(data), 4099)))
    for cut in cuts:
        decoder = fastpath.FrameDecoder(65536)
        assert feed_all(decoder, [data[:cut], data[cut:]]) == frames, cut


def test_byte_by_byte(fastpath):
    frames, data = small_stream(50)
    decoder = fastpath.FrameDecoder(50)
    assert feed_all(decoder, [data[i:i + 1] for i in range(len(data))]) == frames


def test_one_large_frame_in_datagram_sized_pieces(fastpath):
    payload = os.urandom(4 * MiB)
    data = frame(payload) + frame(b"after")
    decoder = fastpath.FrameDecoder()
    out = []
    for i in range(0, len(data), 1200):
        out += decoder.feed(data[i:i + 1200])
        assert decoder.buffered <= 4 * MiB + 4
    assert out == [payload, b"after"]
    assert decoder.buffered == 0


@pytest.mark.parametrize("make", [bytearray, memoryview, lambda b: memoryview(bytearray(b)),
                                  lambda b: array.array("B", b)],
                         ids=["bytearray", "memoryview", "memoryview-bytearray", "array-B"])
def test_decoder_takes_any_bytes_like(fastpath, make):
    frames, data = small_stream(20)
    decoder = fastpath.FrameDecoder(20)
    out = feed_all(decoder, [make(data[i:i + 9]) for i in range(0, len(data), 9)])
    assert out == frames
    assert all(type(f) is bytes for f in out)


def test_decoder_counts_wide_items_as_bytes(fastpath):
    data = frame(b"\x01\x00\x02\x00") + b"\x00\x00"
    decoder = fastpath.FrameDecoder()
    assert decoder.feed(array.array("H", [0, 0x0400, 1, 2, 0])) == [b"\x01\x00\x02\x00"]
    assert decoder.buffered == 2 == len(data) - 8


def test_decoder_keeps_no_reference_to_what_it_was_fed(fastpath):
    chunk = bytearray(frame(b"hello")[:6])
    decoder = fastpath.FrameDecoder()
    assert decoder.feed(chunk) == []
    chunk[:] = b"XXXXXX"  # the caller reuses its buffer
    chunk.extend(b"!!")  # and may resize it: no buffer export is left behind
    assert decoder.feed(memoryview(b"llo")) == [b"hello"]


def test_buffered_accounting(fastpath):
    decoder = fastpath.FrameDecoder()
    assert decoder.buffered == 0
    assert decoder.feed(b"") == []
    assert decoder.buffered == 0
    assert decoder.feed(b"\x00\x00") == []
    assert decoder.buffered == 2  # a partial header counts
    assert decoder.feed(b"\x00\x05ab") == []
    assert decoder.buffered == 6
    assert decoder.feed(b"cde\x00\x00\x00\x00\x00") == [b"abcde", b""]
    assert decoder.buffered == 1
    assert decoder.feed(b"\x00\x00\x01") == []
    assert decoder.buffered == 4
    assert decoder.feed(b"Z") == [b"Z"]
    assert decoder.buffered == 0


def test_ticks_are_empty_frames(fastpath):
    decoder = fastpath.FrameDecoder()
    assert decoder.feed(fastpath.TICK * 3) == [b"", b"", b""]
    assert decoder.feed(fastpath.TICK[:1]) == []
    assert decoder.feed(fastpath.TICK[1:]) == [b""]


def test_a_refused_type_consumes_nothing(fastpath):
    decoder = fastpath.FrameDecoder()
    decoder.feed(b"\x00\x00\x00\x02a")
    for bad in ("b", 5, None, memoryview(b"abcd")[::2]):
        with pytest.raises(TypeError, match="expected a bytes-like object"):
            decoder.feed(bad)
        assert decoder.buffered == 5
    assert decoder.feed(b"b") == [b"ab"]


def test_repr(fastpath):
    decoder = fastpath.FrameDecoder(10)
    decoder.feed(b"\x00")
    assert repr(decoder) == "<FrameDecoder max_frame_size=10 buffered=1>"
    with pytest.raises(FrameError):
        decoder.feed(b"\x00\x00\xff")
    assert repr(decoder) == "<FrameDecoder max_frame_size=10 poisoned>"


# ---------------------------------------------------------------------------
# FrameDecoder: the size limit


@pytest.mark.parametrize("limit", [0, 1, 1000, 2**31, MAX_LEN])
def test_max_frame_size_limits(fastpath, limit):
    decoder = fastpath.FrameDecoder(limit)
    assert decoder.max_frame_size == limit
    assert decoder.feed(fastpath.TICK) == [b""]
    header = struct.pack(">I", limit)
    if limit == 0:
        assert decoder.feed(header) == [b""]
    else:  # exactly the limit is accepted: the decoder waits for the payload
        some = min(limit - 1, 3)
        assert decoder.feed(header + b"\xee" * some) == []
        assert decoder.buffered == 4 + some
    if limit < MAX_LEN:
        over = fastpath.FrameDecoder(limit)
        with pytest.raises(FrameError):
            over.feed(struct.pack(">I", limit + 1))


def test_oversized_header_fails_as_soon_as_it_is_complete(fastpath):
    decoder = fastpath.FrameDecoder(1000)
    header = struct.pack(">I", 1001)
    for i in range(3):
        assert decoder.feed(header[i:i + 1]) == []
        assert decoder.buffered == i + 1
    message = "frame of 1001 bytes announced, larger than the limit of 1000 bytes"
    with pytest.raises(FrameError) as info:
        decoder.feed(header[3:])  # no payload byte has arrived
    assert str(info.value) == message
    err = info.value
    assert isinstance(err, RemoteProtocolError) and isinstance(err, ValueError)
    assert isinstance(err, QuicDistError) and err.error_code == 0x2
    assert decoder.buffered == 0

    # Poisoned: every later feed raises the same error, whatever it is fed.
    for data in (b"", fastpath.TICK, frame(b"fine"), bytearray(b"x"), "not bytes"):
        with pytest.raises(FrameError) as again:
            decoder.feed(data)
        assert str(again.value) == message and type(again.value) is FrameError
        assert decoder.buffered == 0


def test_oversized_header_inside_a_chunk(fastpath):
    decoder = fastpath.FrameDecoder(8)
    data = frame(b"ok") + fastpath.TICK + struct.pack(">I", 2**32 - 1) + b"payload..."
    with pytest.raises(FrameError, match=f"frame of {2**32 - 1} bytes announced, larger than "
                                         "the limit of 8 bytes"):
        decoder.feed(data)
    with pytest.raises(FrameError):
        decoder.feed(b"")


def test_oversized_header_completing_a_held_partial_header(fastpath):
    decoder = fastpath.FrameDecoder(8)
    assert decoder.feed(frame(b"ok") + b"\x00\x00") == [b"ok"]
    with pytest.raises(FrameError, match="frame of 256 bytes announced"):
        decoder.feed(b"\x01\x00")


def test_a_poisoned_decoder_leaves_the_others_alone(fastpath):
    bad, good = fastpath.FrameDecoder(4), fastpath.FrameDecoder(4)
    assert good.feed(b"\x00\x00\x00") == []
    with pytest.raises(FrameError):
        bad.feed(b"\x00\x00\x00\x05")
    assert good.feed(b"\x01x" + frame(b"yz")) == [b"x", b"yz"]
    assert fastpath.FrameDecoder(4).feed(frame(b"abcd")) == [b"abcd"]


@pytest.mark.parametrize("bad", [-1, 2**32, 2**64, "10", 10.0, True, None, b"\x10"],
                         ids=repr)
def test_invalid_max_frame_size(fastpath, bad):
    with pytest.raises(ValueError) as info:
        fastpath.FrameDecoder(bad)
    assert type(info.value) is ConfigurationError
    assert str(info.value) == f"max_frame_size must be an int from 0 to {MAX_LEN}, got {bad!r}"


def test_max_frame_size_by_keyword(fastpath):
    assert fastpath.FrameDecoder(max_frame_size=5).max_frame_size == 5


# ---------------------------------------------------------------------------
# Random chunkings (each implementation against the reference encoding)


payloads_st = st.lists(st.one_of(st.just(b""), st.binary(max_size=40), st.binary(max_size=3000)),
                       max_size=12)


def chunks_of(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


@examples(150)
@given(frames=payloads_st, cuts=st.lists(st.integers(0, 2**20), max_size=20),
       kinds=st.lists(st.sampled_from(["bytes", "bytearray", "memoryview"]), min_size=1))
def test_random_chunkings(frames, cuts, kinds):
    data = b"".join(map(frame, frames))
    pieces = chunks_of(data, cuts)
    make = {"bytes": bytes, "bytearray": bytearray, "memoryview": memoryview}
    typed = [make[kinds[i % len(kinds)]](p) for i, p in enumerate(pieces)]
    for impl in IMPLS:
        decoder = impl.FrameDecoder(3000)
        assert feed_all(decoder, typed) == frames, impl.__name__
        assert decoder.buffered == 0
        assert impl.pack_frames(frames) == data


# ---------------------------------------------------------------------------
# Differential: the compiled module against the pure twin


def run_decoder(impl, limit, pieces):
    """Everything observable: each feed's outcome and ``buffered`` after it."""
    decoder = impl.FrameDecoder(limit)
    trace = []
    for piece in pieces:
        trace.append((outcome(lambda p=piece: decoder.feed(p)), decoder.buffered))
    return trace


@needs_compiled
@examples(500)
@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 600), max_size=12),
       limit=st.one_of(st.integers(0, 300), st.just(MAX_LEN)))
def test_differential_random_bytes(data, cuts, limit):
    pieces = chunks_of(data, cuts) + [b"", b"\x00" * 5]
    assert run_decoder(COMPILED, limit, pieces) == run_decoder(PURE, limit, pieces)


@needs_compiled
@examples(200)
@given(frames=payloads_st, limit=st.integers(0, 3000), cuts=st.lists(st.integers(0, 2**16)),
       junk=st.binary(max_size=8))
def test_differential_frames_with_a_limit(frames, limit, cuts, junk):
    data = b"".join(map(frame, frames)) + junk
    pieces = chunks_of(data, cuts)
    assert run_decoder(COMPILED, limit, pieces) == run_decoder(PURE, limit, pieces)


@needs_compiled
@examples(200)
@given(items=st.lists(st.one_of(st.binary(max_size=50), st.text(max_size=3), st.integers(),
                                st.none(), st.binary(max_size=20).map(bytearray),
                                st.binary(max_size=20).map(memoryview)), max_size=6))
def test_differential_pack(items):
    for form in (list, tuple, iter):
        assert outcome(lambda f=form: COMPILED.pack_frames(f(items))) == \
            outcome(lambda f=form: PURE.pack_frames(f(items)))
    for item in items:
        assert outcome(lambda i=item: COMPILED.pack_frame(i)) == \
            outcome(lambda i=item: PURE.pack_frame(i))


@needs_compiled
@examples(100)
@given(value=st.one_of(st.integers(-2, 2**33), st.floats(), st.text(max_size=3), st.none(),
                       st.booleans()))
def test_differential_max_frame_size(value):
    def make(impl):
        return impl.FrameDecoder(value).max_frame_size

    assert outcome(lambda: make(COMPILED)) == outcome(lambda: make(PURE))
