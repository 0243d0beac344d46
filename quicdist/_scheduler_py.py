"""Pure-Python twin of the scheduler half of ``quicdist._fastpath``: the specification.

:class:`SendScheduler` decides which stream the carrier serves next: strict
priority by urgency (0 is the most urgent), round-robin among the streams of
one urgency. The carrier calls :meth:`SendScheduler.next` once per quantum
it hands to aioquic, so a control frame (urgency 0) queued while bulk user
data (urgency 128) is being sent is served on the very next call.

Urgencies: 0 control (stream 0), 1-15 distribution data, 16-255 user
streams. A stream is *blocked* (nothing to send) or *unblocked* (has data);
only unblocked streams are served. ``unblock``/``block`` are idempotent.

Every operation is O(1) whatever the number of streams: each urgency has its
own round-robin queue of unblocked streams (an insertion-ordered dict here,
a circular linked list of slots in the Cython module) and a 256-bit mask
says which urgencies have any, so ``next()`` finds the lowest one with one
bit trick. The Cython module (``_fastpath_scheduler.pxi``) has the same
names, results, exception types and messages; ``tests/test_scheduler.py``
drives both with the same operations and compares every answer.

Sans-I/O and single-owner: a scheduler belongs to the thread that uses it
(the carrier's I/O thread).
"""

from __future__ import annotations

from collections import OrderedDict

from .errors import ConfigurationError


__all__ = ["SendScheduler"]

#: Largest urgency (the least urgent).
MAX_URGENCY = 255

#: Largest QUIC stream id (62 bits).
MAX_STREAM_ID = (1 << 62) - 1


# Messages shared with the Cython module (it imports these functions).


def msg_bad_stream_id(value: object) -> str:
    return f"stream_id must be an int from 0 to {MAX_STREAM_ID}, got {value!r}"


def msg_bad_urgency(value: object) -> str:
    return f"urgency must be an int from 0 to {MAX_URGENCY}, got {value!r}"


def msg_duplicate(stream_id: int) -> str:
    return f"stream {stream_id} is already scheduled"


def check_urgency(value: object) -> int:
    if type(value) is bool or not isinstance(value, int) or not 0 <= value <= MAX_URGENCY:
        raise ConfigurationError(msg_bad_urgency(value))
    return int(value)


def check_stream_id(value: object) -> int:
    if type(value) is bool or not isinstance(value, int) or not 0 <= value <= MAX_STREAM_ID:
        raise ConfigurationError(msg_bad_stream_id(value))
    return int(value)


class SendScheduler:
    """Strict priority by urgency, round-robin within an urgency.

    Streams are identified by their QUIC stream id (an int from 0 to
    2**62-1). A stream starts blocked.

    ``next()`` returns the stream to serve: among the unblocked streams, one
    of the lowest urgency; among those, the one that has waited longest, and
    it goes to the back of that urgency's queue (so three unblocked streams
    a, b, c of one urgency are served a, b, c, a, b, c, ...). A stream that
    becomes unblocked joins the back of its urgency's queue; ``block`` takes
    it out. ``next()`` returns -1 when no stream is unblocked.

    Raises (every method):
        ConfigurationError: (a ``ValueError``) an invalid urgency, an invalid
            stream id given to ``add``, or ``add`` of a known stream.
        KeyError: a stream id that was never added (or was removed).
    """

    __slots__ = ("_urgency", "_queues", "_mask", "_active")

    def __init__(self) -> None:
        # stream id -> urgency, for every known stream.
        self._urgency: dict[int, int] = {}
        # urgency -> its unblocked streams, in round-robin order (values unused).
        self._queues: list[OrderedDict[int, None]] = [
            OrderedDict() for _ in range(MAX_URGENCY + 1)
        ]
        # bit u is set when urgency u has an unblocked stream.
        self._mask = 0
        # number of unblocked streams.
        self._active = 0

    def _lookup(self, stream_id: object) -> tuple[int, int]:
        """(the stream id as an exact int, its urgency), or KeyError(stream_id)."""
        sid = stream_id
        if type(sid) is not int:
            if type(sid) is bool or not isinstance(sid, int):
                raise KeyError(stream_id)
            sid = int(sid)
        level = self._urgency.get(sid)
        if level is None:
            raise KeyError(stream_id)
        return sid, level

    def add(self, stream_id: int, urgency: int) -> None:
        """Start scheduling a stream, blocked, at ``urgency`` (0..255)."""
        sid = check_stream_id(stream_id)
        level = check_urgency(urgency)
        if sid in self._urgency:
            raise ConfigurationError(msg_duplicate(sid))
        self._urgency[sid] = level

    def remove(self, stream_id: int) -> None:
        """Forget a stream (blocked or not)."""
        sid, level = self._lookup(stream_id)
        self._dequeue(sid, level)
        del self._urgency[sid]

    def urgency(self, stream_id: int) -> int:
        """The urgency of a known stream."""
        return self._lookup(stream_id)[1]

    def set_urgency(self, stream_id: int, urgency: int) -> None:
        """Move a stream to another urgency, keeping it blocked or unblocked.

        An unblocked stream joins the back of its new urgency's queue; setting
        the urgency it already has changes nothing.
        """
        level = check_urgency(urgency)
        sid, old = self._lookup(stream_id)
        if level == old:
            return
        self._urgency[sid] = level
        if self._dequeue(sid, old):
            self._enqueue(sid, level)

    def unblock(self, stream_id: int) -> None:
        """The stream has data to send (no change if it was already unblocked)."""
        sid, level = self._lookup(stream_id)
        if sid not in self._queues[level]:
            self._enqueue(sid, level)

    def block(self, stream_id: int) -> None:
        """The stream has nothing to send (no change if it was already blocked)."""
        sid, level = self._lookup(stream_id)
        self._dequeue(sid, level)

    def next(self) -> int:
        """The stream to serve now, or -1 if none is unblocked."""
        mask = self._mask
        if not mask:
            return -1
        queue = self._queues[(mask & -mask).bit_length() - 1]
        stream_id = next(iter(queue))
        queue.move_to_end(stream_id)
        return stream_id

    @property
    def active(self) -> int:
        """How many streams are unblocked."""
        return self._active

    def __len__(self) -> int:
        return len(self._urgency)

    def __contains__(self, stream_id: object) -> bool:
        try:
            self._lookup(stream_id)
        except KeyError:
            return False
        return True

    def __repr__(self) -> str:
        return f"<SendScheduler streams={len(self._urgency)} active={self._active}>"

    def _enqueue(self, sid: int, level: int) -> None:
        self._queues[level][sid] = None
        self._mask |= 1 << level
        self._active += 1

    def _dequeue(self, sid: int, level: int) -> bool:
        queue = self._queues[level]
        if sid not in queue:
            return False
        del queue[sid]
        if not queue:
            self._mask &= ~(1 << level)
        self._active -= 1
        return True
