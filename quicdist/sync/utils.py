"""Small thread helpers: a deadline shared by the steps of a blocking call,
and the wake-up socket pair an I/O thread sleeps on."""

from __future__ import annotations

import os
import socket
import threading
import time

from ..errors import QuicDistTimeoutError


__all__ = ["Deadline", "Wakeup"]


class Deadline:
    """A time budget for one blocking call made of several waits.

    ``None`` means no limit; ``0`` or less means "do not wait" (poll).
    """

    __slots__ = ("_at",)

    def __init__(self, timeout: float | None) -> None:
        self._at = None if timeout is None else time.monotonic() + max(timeout, 0.0)

    def timeout(self) -> float | None:
        """Seconds left (never negative), or None for no limit."""
        if self._at is None:
            return None
        return max(self._at - time.monotonic(), 0.0)

    def expired(self) -> bool:
        return self._at is not None and time.monotonic() >= self._at

    def check(self, what: str) -> None:
        """Raise QuicDistTimeoutError if the budget is spent."""
        if self.expired():
            raise QuicDistTimeoutError(f"timed out {what}")


class Wakeup:
    """A non-blocking socket pair: :meth:`wake` from any thread makes the
    read end readable, so a ``select()`` on :meth:`fileno` returns.

    Wakes are coalesced: between two :meth:`drain` calls only the first
    :meth:`wake` writes a byte (one syscall per burst, not per command).
    """

    __slots__ = ("_reader", "_writer", "_pending", "_lock", "_closed")

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._pending = False
        # Guards _pending and _closed against a concurrent close().
        self._lock = threading.Lock()
        self._closed = False

    def fileno(self) -> int:
        return self._reader.fileno()

    def wake(self) -> None:
        with self._lock:
            if self._pending or self._closed:
                return
            self._pending = True
            try:
                self._writer.send(b"\x00")
            except (BlockingIOError, OSError):
                pass  # already readable, or closing

    def drain(self) -> None:
        """Consume the wake-up bytes. Call *before* looking at what the wakers queued.

        The flag is cleared after the bytes are read: a wake that comes in
        between either sees the flag still set (and its caller's work, queued
        before it called wake(), is found by the look that follows) or writes
        a new byte (and the next select returns at once).
        """
        try:
            while self._reader.recv(4096):
                pass
        except (BlockingIOError, InterruptedError, OSError):
            pass
        with self._lock:
            self._pending = False

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._reader.close()
        self._writer.close()


def open_fd_count() -> int:
    """How many file descriptors this process has open (Linux; tests use it)."""
    return len(os.listdir("/proc/self/fd"))
