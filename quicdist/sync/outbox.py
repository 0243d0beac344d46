"""Thread-safe, bounded outboxes: where a stream's outgoing bytes wait.

Writers (any user thread) append and block while an outbox is full; the
connection's I/O thread pulls bytes out with :meth:`take` when the scheduler
picks the stream (see :class:`quicdist.protocol.Outbox`). Nothing is dropped
or reordered; a closed connection or a reset stream wakes blocked writers
with the error.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from .._accel import pack_frame, pack_frames
from ..errors import QuicDistTimeoutError, StreamClosed
from .utils import Deadline


__all__ = ["FrameOutbox", "StreamOutbox"]


class _Bounded:
    """What both outboxes share: the size, the limit, waiting and failing."""

    def __init__(self, limit: int, notify: Callable[[], None]) -> None:
        self._limit = limit
        self._notify = notify
        self._size = 0
        # Guards every field below; writers wait on it for room.
        self._cond = threading.Condition(threading.Lock())
        self._signalled = False  # the I/O thread was told there is data
        self._error: BaseException | None = None
        self._waiting = 0
        #: bytes put with ``force`` while the outbox was full, since it last
        #: drained below its limit (how far the I/O thread's replies overran it)
        self.forced_over = 0

    @property
    def size(self) -> int:
        """Bytes waiting to be sent."""
        return self._size

    @property
    def limit(self) -> int:
        """Bytes the outbox holds before a writer blocks."""
        return self._limit

    def fail(self, error: BaseException) -> None:
        """Refuse all further writes with ``error`` and wake blocked writers."""
        with self._cond:
            if self._error is None:
                self._error = error
            self._cond.notify_all()

    def _wait_for_room(self, deadline: Deadline) -> None:
        assert self._cond._is_owned()  # type: ignore[attr-defined]
        while self._size >= self._limit and self._error is None:
            remaining = deadline.timeout()
            if remaining == 0.0:
                raise QuicDistTimeoutError(
                    f"timed out waiting for room in the send buffer ({self._size} bytes queued)")
            self._waiting += 1
            try:
                self._cond.wait(remaining)
            finally:
                self._waiting -= 1
        if self._error is not None:
            raise self._error

    def _added(self) -> bool:
        """Call with the lock held after adding bytes; True if the I/O thread must hear."""
        if self._signalled:
            return False
        self._signalled = True
        return True

    @property
    def drained(self) -> bool:
        """The last :meth:`take` emptied the outbox and nothing was added since
        (the next addition notifies). Read by the I/O thread without the lock:
        an addition racing with the read notifies anyway."""
        return not self._signalled

    def _taken(self, n: int, empty: bool) -> None:
        self._size -= n
        if self._size < self._limit:
            self.forced_over = 0
        if empty:
            self._signalled = False
        # Wake blocked writers at the low-water mark (half the limit), not on
        # every quantum taken: each wake-up costs the I/O thread the GIL.
        if self._waiting and n and self._size <= self._limit // 2:
            self._cond.notify_all()


class StreamOutbox(_Bounded):
    """Raw bytes of one user stream, with an optional end (FIN)."""

    def __init__(self, limit: int, notify: Callable[[], None]) -> None:
        super().__init__(limit, notify)
        self._chunks: deque[memoryview] = deque()
        self._fin = False

    @property
    def finished(self) -> bool:
        """Whether the end of the stream was written."""
        return self._fin

    def write(self, data: bytes | bytearray | memoryview, fin: bool = False,
              timeout: float | None = None) -> None:
        """Queue ``data`` (and the end of the stream if ``fin``), blocking while full.

        A large write is queued piece by piece as room frees up, so the
        outbox never holds much more than its limit. Raises
        QuicDistTimeoutError if the timeout expires first: the bytes queued
        so far stay queued, and the error's ``bytes_written`` says how many
        (resume with ``data[exc.bytes_written:]``); StreamClosed after the
        end was written; or the connection's or stream's error once it failed.
        """
        view = memoryview(bytes(data) if not isinstance(data, bytes) else data)
        deadline = Deadline(timeout)
        written = 0
        with self._cond:
            if self._fin:
                raise StreamClosed("write after the end of the stream")
            while True:
                try:
                    if view or not fin:
                        self._wait_for_room(deadline)
                    elif self._error is not None:  # a bare FIN takes no room
                        raise self._error
                except QuicDistTimeoutError as exc:
                    exc.bytes_written = written
                    raise
                room = max(self._limit - self._size, 0)
                piece, view = view[:room], view[room:]
                if piece:
                    self._chunks.append(piece)
                    self._size += len(piece)
                    written += len(piece)
                last = not view
                if last and fin:
                    self._fin = True
                notify = (piece or (last and fin)) and self._added()
                if notify:
                    self._cond.release()
                    try:
                        self._notify()
                    finally:
                        self._cond.acquire()
                if last:
                    return

    def take(self, max_bytes: int) -> tuple[bytes, bool]:
        """Up to ``max_bytes`` of queued bytes and whether the stream ends there (I/O thread)."""
        with self._cond:
            out: list[memoryview] = []
            want = max_bytes
            chunks = self._chunks
            while chunks and want > 0:
                head = chunks[0]
                if len(head) <= want:
                    out.append(chunks.popleft())
                    want -= len(head)
                else:
                    out.append(head[:want])
                    chunks[0] = head[want:]
                    want = 0
            n = max_bytes - want
            empty = not chunks
            fin = self._fin and empty
            self._taken(n, empty)
        return b"".join(out), fin


class FrameOutbox(_Bounded):
    """Distribution messages of one connection, framed as they are pulled.

    :meth:`put` queues a payload; :meth:`take` packs as many whole frames as
    fit into one bytes object (one ``send_stream_data`` call for many small
    messages) and splits a frame only when a single one is larger than the
    quantum.
    """

    def __init__(self, limit: int, notify: Callable[[], None]) -> None:
        super().__init__(limit, notify)
        self._payloads: deque[bytes] = deque()
        self._partial: memoryview | None = None  # the rest of a frame split by take()

    def put(self, payload: bytes, timeout: float | None = None, *, force: bool = False) -> None:
        """Queue one distribution message (its frame header is added later).

        ``force`` queues it even when the buffer is full, never waiting: for
        the I/O thread's own replies, which must not block it (the caller
        bounds how far past the limit it lets the buffer grow).
        """
        deadline = Deadline(timeout)
        with self._cond:
            if force:
                if self._error is not None:
                    raise self._error
                if self._size >= self._limit:
                    self.forced_over += 4 + len(payload)
            else:
                self._wait_for_room(deadline)
            self._payloads.append(payload)
            self._size += 4 + len(payload)
            notify = self._added()
        if notify:
            self._notify()

    def put_many(self, payloads: list[bytes], timeout: float | None = None) -> None:
        """Queue several messages at once (one wake-up for all of them)."""
        deadline = Deadline(timeout)
        with self._cond:
            self._wait_for_room(deadline)
            self._payloads.extend(payloads)
            self._size += sum(4 + len(p) for p in payloads)
            notify = self._added()
        if notify:
            self._notify()

    def take(self, max_bytes: int) -> tuple[bytes, bool]:
        """Framed bytes, up to ``max_bytes`` (I/O thread). Never ends the stream."""
        with self._cond:
            parts: list[bytes | memoryview] = []
            budget = max_bytes
            if self._partial is not None:
                piece, rest = self._partial[:budget], self._partial[budget:]
                self._partial = rest if len(rest) else None
                parts.append(piece)
                budget -= len(piece)
            payloads = self._payloads
            if self._partial is None and budget > 0 and payloads:
                batch: list[bytes] = []
                size = 0
                # Whole frames while they fit; the first one even if it does
                # not (it is then split and its rest sent next time).
                while payloads and (size + 4 + len(payloads[0]) <= budget or not batch):
                    payload = payloads.popleft()
                    batch.append(payload)
                    size += 4 + len(payload)
                    if size >= budget:
                        break
                packed = pack_frames(batch) if len(batch) > 1 else pack_frame(batch[0])
                if len(packed) > budget:
                    view = memoryview(packed)
                    parts.append(view[:budget])
                    self._partial = view[budget:]
                else:
                    parts.append(packed)
            taken = sum(len(p) for p in parts)
            self._taken(taken, not payloads and self._partial is None)
        if len(parts) == 1 and type(parts[0]) is bytes:
            return parts[0], False
        return b"".join(parts), False
