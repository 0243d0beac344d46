"""Pure-Python twin of the framing half of ``quicdist._fastpath``: the specification.

Distribution frames (PROTOCOL.md §4): ``Length:4 (big-endian) | Payload``;
a frame of length 0 is a tick. The Cython module (``_fastpath_framing.pxi``)
has the same names, signatures, defaults, results, exception types and
messages; ``tests/test_framing.py`` holds the two together differentially.

``pack_frame(payload)``
    one frame: header + payload, the payload copied once.
``pack_frames(payloads)``
    many frames coalesced into one ``bytes`` object (one allocation, each
    payload copied once), for one ``send_stream_data`` call.
``FrameDecoder(max_frame_size=DEFAULT_MAX_FRAME_SIZE)``
    the reassembler of one stream's bytes (never mix two streams in one
    decoder): ``feed(data)`` returns the frames it completed, a tick as
    ``b""``.

How the decoder avoids quadratic copying: complete frames are cut straight
out of the chunk being fed (one copy each, into the ``bytes`` returned); the
reassembly ``bytearray`` only ever holds the one frame that is still
incomplete at the end of a chunk, starting at offset 0. The next chunk first
completes that frame (appending only the bytes it is missing), then goes on
in the chunk itself. Nothing is ever re-sliced, shifted or compacted, and a
large frame arriving in small pieces costs amortised O(piece) per feed, so
the whole frame is O(size).

Sans-I/O and single-owner: a decoder belongs to the thread that feeds it
(the carrier's I/O thread); the functions and constants are immutable and
can be used from any thread.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

from .errors import ConfigurationError, FrameError


__all__ = ["DEFAULT_MAX_FRAME_SIZE", "TICK", "FrameDecoder", "pack_frame", "pack_frames"]

#: Largest frame a decoder accepts unless told otherwise (128 MiB).
DEFAULT_MAX_FRAME_SIZE = 128 * 1024 * 1024

#: A tick: a frame of length 0 (PROTOCOL.md §5).
TICK = b"\x00\x00\x00\x00"

#: Largest payload the 4-byte length can describe.
MAX_FRAME_LENGTH = 0xFFFFFFFF

_HEADER = struct.Struct(">I")
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from


# ---------------------------------------------------------------------------
# Messages shared with the Cython module (it imports these functions, so the
# two cannot drift apart).


def msg_not_bytes_like(obj: object) -> str:
    return f"expected a bytes-like object, {type(obj).__name__} found"


def msg_payload_too_large(length: int) -> str:
    return (f"frame payload of {length} bytes is larger than a 4-byte length allows "
            f"({MAX_FRAME_LENGTH} bytes)")


def msg_frame_too_large(length: int, limit: int) -> str:
    return f"frame of {length} bytes announced, larger than the limit of {limit} bytes"


def msg_bad_max_frame_size(value: object) -> str:
    return f"max_frame_size must be an int from 0 to {MAX_FRAME_LENGTH}, got {value!r}"


def _as_buffer(obj: Any) -> memoryview:
    """A flat byte view of any C-contiguous bytes-like object, else TypeError."""
    try:
        view = memoryview(obj)
    except TypeError:
        raise TypeError(msg_not_bytes_like(obj)) from None
    if not view.c_contiguous:
        view.release()
        raise TypeError(msg_not_bytes_like(obj))
    if view.ndim != 1 or view.format != "B":
        view = view.cast("B")
    return view


# ---------------------------------------------------------------------------
# Encoding


def pack_frame(payload: Any) -> bytes:
    """One distribution frame: the 4-byte big-endian length, then ``payload``.

    Args:
        payload: any C-contiguous bytes-like object; copied once.

    Returns:
        ``header + payload`` as a new ``bytes`` object (``TICK`` for an empty
        payload).

    Raises:
        TypeError: ``payload`` is not a bytes-like object.
        ConfigurationError: (a ``ValueError``) the payload is longer than
            2**32-1 bytes.
    """
    if type(payload) is bytes:
        length = len(payload)
        if length > MAX_FRAME_LENGTH:
            raise ConfigurationError(msg_payload_too_large(length))
        return _pack_header(length) + payload
    view = _as_buffer(payload)
    with view:
        length = view.nbytes
        if length > MAX_FRAME_LENGTH:
            raise ConfigurationError(msg_payload_too_large(length))
        return _pack_header(length) + view


def pack_frames(payloads: Iterable[Any]) -> bytes:
    """Many frames coalesced into one ``bytes`` object, in order.

    Equal to ``b"".join(map(pack_frame, payloads))``, but the result is the
    only allocation of its size and each payload is copied once, into it.

    Args:
        payloads: an iterable of C-contiguous bytes-like objects.

    Raises:
        TypeError: ``payloads`` is not iterable, or an item is not bytes-like
            (the first such item in order).
        ConfigurationError: (a ``ValueError``) an item is longer than 2**32-1
            bytes (the first such item in order).
    """
    items = payloads if type(payloads) is list or type(payloads) is tuple else list(payloads)
    parts: list[Any] = []
    views: list[memoryview] = []
    try:
        for item in items:
            if type(item) is bytes:
                length = len(item)
            else:
                item = _as_buffer(item)
                views.append(item)
                length = item.nbytes
            if length > MAX_FRAME_LENGTH:
                raise ConfigurationError(msg_payload_too_large(length))
            parts.append(_pack_header(length))
            parts.append(item)
        return b"".join(parts)
    finally:
        for view in views:
            view.release()


# ---------------------------------------------------------------------------
# Decoding


def _check_max_frame_size(value: object) -> int:
    if type(value) is bool or not isinstance(value, int) or not 0 <= value <= MAX_FRAME_LENGTH:
        raise ConfigurationError(msg_bad_max_frame_size(value))
    return int(value)


class FrameDecoder:
    """Reassembles the distribution frames of one stream.

    Feed it the stream's bytes as they arrive, in any chunking; it returns
    each complete frame once, in order. One decoder per stream: frames never
    span two streams (PROTOCOL.md §2).

    A header announcing more than ``max_frame_size`` bytes raises
    :class:`~quicdist.errors.FrameError` from the ``feed()`` that completes
    the 4-byte header, without waiting for the payload; frames completed
    earlier in that same call are discarded with the rest of the stream.
    The decoder is then poisoned: it drops what it held, and every later
    ``feed()`` raises a ``FrameError`` with the same message. The carrier
    closes that connection (``FrameError.error_code``); other decoders are
    not affected.

    Args:
        max_frame_size: the largest payload accepted, in bytes (0 to 2**32-1).

    Raises:
        ConfigurationError: (a ``ValueError``) ``max_frame_size`` is not an
            int in that range.
    """

    __slots__ = ("_buf", "_max", "_need", "_error")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self._max = _check_max_frame_size(max_frame_size)
        # The incomplete frame at the end of what was fed so far (header
        # included), always starting at offset 0; empty between frames.
        self._buf = bytearray()
        # 4 + its length once its header is complete, else 0.
        self._need = 0
        # The FrameError message once poisoned.
        self._error: str | None = None

    @property
    def max_frame_size(self) -> int:
        """The largest payload accepted, in bytes."""
        return self._max

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete (a partial header included)."""
        return len(self._buf)

    def _poison(self, length: int) -> FrameError:
        self._error = msg_frame_too_large(length, self._max)
        self._buf = bytearray()
        self._need = 0
        return FrameError(self._error)

    def feed(self, data: Any) -> list[bytes]:
        """Add the stream's next bytes; return the frames they complete.

        Args:
            data: any C-contiguous bytes-like object (possibly empty). It is
                not kept: what belongs to an incomplete frame is copied.

        Returns:
            The complete frames, in order, each a new ``bytes`` object (a
            tick is ``b""``); an empty list when no frame was completed.

        Raises:
            FrameError: a frame header announced more than ``max_frame_size``
                bytes (now or in an earlier call).
            TypeError: ``data`` is not bytes-like (nothing is consumed).
        """
        if self._error is not None:
            raise FrameError(self._error)
        if type(data) is bytes:
            return self._feed(data, len(data))
        view = _as_buffer(data)
        with view:
            return self._feed(view, view.nbytes)

    def _feed(self, data: Any, size: int) -> list[bytes]:
        frames: list[bytes] = []
        pos = 0
        buf = self._buf
        if buf:
            # 1. Complete the frame left over from the previous chunk.
            held = len(buf)
            if held < 4:
                take = min(4 - held, size)
                buf += data[:take]
                pos = take
                if len(buf) < 4:
                    return frames
                length = _unpack_header(buf)[0]
                if length > self._max:
                    raise self._poison(length)
                self._need = 4 + length
            need = self._need
            take = min(need - len(buf), size - pos)
            if take:
                buf += data[pos:pos + take]
                pos += take
            if len(buf) < need:
                return frames
            del buf[:4]  # O(1): a bytearray drops a prefix by moving its start
            frames.append(bytes(buf))
            buf.clear()
            self._need = 0
        # 2. Cut the frames that are complete in the chunk itself.
        limit = self._max
        while size - pos >= 4:
            length = _unpack_header(data, pos)[0]
            if length > limit:
                raise self._poison(length)
            end = pos + 4 + length
            if end > size:
                self._need = 4 + length
                break
            frames.append(bytes(data[pos + 4:end]))
            pos = end
        # 3. Keep the incomplete tail (a partial header, or a partial frame).
        if pos < size:
            buf += data[pos:]
        return frames

    def __repr__(self) -> str:
        state = "poisoned" if self._error is not None else f"buffered={len(self._buf)}"
        return f"<FrameDecoder max_frame_size={self._max} {state}>"
