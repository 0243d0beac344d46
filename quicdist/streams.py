"""User streams: raw, prioritised byte streams between two nodes (PROTOCOL.md §6).

Beside the distribution messages, two connected nodes can open any number
of bidirectional *user streams* on their connection: raw bytes, no framing,
each with its own flow control, at a priority of 16 (most urgent) to 255
(default 128), always behind the distribution traffic (0-15).

* :meth:`quicdist.Node.open_stream` opens one (the calling thread owns it)
  and returns a :class:`StreamRef`, a socket-like object: ``send``,
  ``recv``, iteration, ``close`` (FIN), ``reset``, ``settimeout``,
  ``makefile``, ``info``, ``controlling_process``.
* :meth:`quicdist.Node.accept_streams` joins the acceptor pool for a peer;
  the streams that peer opens are handed round-robin to the pool's
  :class:`Acceptor` objects (:meth:`Acceptor.accept`). A stream that finds
  no acceptor is reset with code ``0x100`` (``STREAM_REFUSED``).

The peer learns of a stream with its first bytes: a stream that was opened
but never written to (not even a FIN) does not exist on the wire.

Ownership
=========
A stream belongs to one *owner*: a thread, or a :class:`~quicdist.Mailbox`
(a process). Only the owner may use it; any other thread gets
:class:`~quicdist.errors.NotOwner`. A Mailbox is not tied to a thread
(any thread may serve it, as any thread may call its ``receive``), so a
stream a Mailbox owns may be used from any thread. The owner hands the
stream over with :meth:`StreamRef.controlling_process`.

A Mailbox owner may ask for *message delivery* (``active``), and then
receives what an Erlang owner receives, in order::

    ("quic_dist_stream", ref, ("data", data, fin))   # bytes; fin: the peer finished
    ("quic_dist_stream", ref, ("reset", code))       # the peer reset the stream
    ("quic_dist_stream", ref, "closed")              # both sides sent FIN (exactly once)

(the strings are :class:`~quicdist.Atom` objects; ``ref`` is the
:class:`StreamRef`). When the peer's node goes down the message is
``("reset", Atom("noconnection"))``. An acceptor pool member that is a
Mailbox receives its streams this way from their first bytes.

When an owner goes away (a Mailbox exits, an owner thread ends) its
streams are reset with code 0.

Flow control
============
Bytes a peer sends wait in the stream's receive buffer, and the peer gets
new credit only as the owner reads them (for a Mailbox owner: as it
*receives* the data messages). An owner that stops reading stops its
peer's writer once the stream window (4 MiB by default) is full: memory
stays bounded on both sides, and the other streams and the distribution
messages of the connection go on. On the sending side ``send`` blocks while
the stream's send buffer (1 MiB) is full, up to the stream's timeout.

Threads
=======
Every method of :class:`StreamRef` and :class:`Acceptor` is thread-safe.
The connection's I/O thread feeds the receive buffers and never waits for
an owner. Blocking calls (``send``, ``recv``, ``accept``) take a timeout
(``None``: wait until something happens) and raise
:class:`~quicdist.errors.QuicDistTimeoutError` (a ``TimeoutError``) when it
runs out; a peer node going down wakes every one of them with
:class:`~quicdist.errors.NodeDown`.
"""

from __future__ import annotations

import io
import logging
import threading
import weakref
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .errors import (
    ConfigurationError,
    ConnectionClosed,
    LocalProtocolError,
    MailboxClosed,
    NodeDown,
    NotOwner,
    QuicDistError,
    QuicDistTimeoutError,
    StreamClosed,
    StreamReset,
)
from .events import CarrierEvent, UserStreamData, UserStreamReset, UserStreamStopped
from .mailbox import Mailbox
from .sync.utils import Deadline
from .terms import Atom


if TYPE_CHECKING:
    from .sync.connection import Connection
    from .sync.outbox import StreamOutbox

__all__ = ["MAX_PRIORITY", "MIN_PRIORITY", "STREAM_REFUSED", "Acceptor", "StreamManager",
           "StreamRef"]

logger = logging.getLogger("quicdist.streams")

#: Application error code that refuses a user stream nobody accepts (§6).
STREAM_REFUSED = 0x100
#: Priorities of user streams (lower is more urgent); 0-15 belong to distribution.
MIN_PRIORITY = 16
MAX_PRIORITY = 255
#: The largest QUIC application error code (a 62-bit varint).
MAX_ERROR_CODE = (1 << 62) - 1
#: Retired stream ids kept per connection before those the carrier forgot are pruned.
_RETIRED_PRUNE_AT = 1024

TAG = Atom("quic_dist_stream")
DATA = Atom("data")
RESET = Atom("reset")
CLOSED = Atom("closed")
NOCONNECTION = Atom("noconnection")

Owner = threading.Thread | Mailbox


def check_priority(priority: object) -> int:
    """``priority`` as an int in 16..255, or ConfigurationError (a ValueError)."""
    if type(priority) is not int or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise ConfigurationError(
            f"a user stream's priority is an int in {MIN_PRIORITY}..{MAX_PRIORITY} "
            f"(0-15 are reserved for distribution), not {priority!r}")
    return priority


def _check_timeout(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"a timeout is None or a number >= 0, not {value!r}")
    return float(value)


_DEFAULT: Any = object()  # "the stream's own timeout"


class StreamRef:
    """One user stream (socket-like, thread-safe). Made by the node, never directly.

    Attributes:
        node: the peer node's name.
        stream_id: the QUIC stream id (client-opened ids from 20, server-opened from 17).
        priority: 16..255, lower is more urgent.
    """

    def __init__(self, manager: StreamManager, node: str, stream_id: int,
                 connection: Connection, outbox: StreamOutbox, priority: int,
                 owner: Owner | None) -> None:
        self.node = node
        self.stream_id = stream_id
        self.priority = priority
        self._manager = manager
        self._connection = connection
        self._outbox = outbox
        # Guards every field below; readers wait on it. Reentrant: a delivery
        # to a full mailbox ends that mailbox, which resets its streams.
        self._cond = threading.Condition(threading.RLock())
        # Serialises whole send() calls, so two writers never interleave.
        self._send_lock = threading.Lock()
        self._owner: Owner | None = owner
        self._active = False  # data and events go to the owner Mailbox as messages
        self._chunks: deque[bytes | memoryview] = deque()
        self._buffered = 0
        self._in_mailbox = 0  # bytes delivered as messages, not yet received
        self._recv_fin = False  # the peer's FIN arrived
        self._fin_told = False  # the owner saw that FIN (b"" or a fin=True message)
        self._send_fin = False
        self._peer_reset: int | None = None
        self._reset_told = False
        self._local_reset: int | None = None
        self._down: NodeDown | None = None
        self._closed_told = False
        self._released = False
        self._forgotten = False
        self._timeout: float | None = None
        self._indexed: Mailbox | None = None  # the manager's owner index (its lock)

    # ------------------------------------------------------------ owner side

    def send(self, data: bytes | bytearray | memoryview, fin: bool = False) -> None:
        """Queue ``data`` (and the end of the stream if ``fin``); blocks while the
        send buffer is full, up to the stream's timeout (:meth:`settimeout`).

        Raises:
            NotOwner: the calling thread does not own the stream.
            StreamClosed: the stream was closed (FIN sent) or reset here.
            StreamReset: the peer reset the stream (``.code``).
            NodeDown: the peer node went down.
            QuicDistTimeoutError: the timeout ran out; its ``bytes_written``
                says how much of ``data`` was queued.
        """
        view = memoryview(data)
        self._check_owner()
        with self._send_lock:
            with self._cond:
                self._check_sendable()
            try:
                self._outbox.write(view, fin, timeout=self._timeout)
            except ConnectionClosed as exc:
                raise self._down_error(exc) from exc
            except (StreamReset, StreamClosed):
                with self._cond:
                    self._check_sendable()
                raise
            if fin:
                self._sent_fin()

    sendall = send

    def recv(self, max_bytes: int = -1, timeout: float | None = None) -> bytes:
        """Up to ``max_bytes`` received bytes (-1: all that arrived), ``b""`` once
        the peer's FIN has been read (and on every later call).

        Blocks until some bytes arrive, up to ``timeout`` (``None``: the
        stream's timeout, see :meth:`settimeout`). Bytes that arrived before
        a peer reset or a node-down are returned first; then the error.

        Raises:
            NotOwner: the calling thread does not own the stream.
            StreamReset: the peer reset the stream (``.code``).
            StreamClosed: the stream was reset here.
            NodeDown: the peer node went down.
            LocalProtocolError: the stream delivers to its Mailbox owner as messages.
            QuicDistTimeoutError: nothing arrived in time.
        """
        if type(max_bytes) is not int or max_bytes == 0 or max_bytes < -1:
            raise ValueError(f"max_bytes is -1 or a positive int, not {max_bytes!r}")
        self._check_owner()
        deadline = Deadline(self._timeout if timeout is None else _check_timeout(timeout))
        with self._cond:
            if self._active:
                raise LocalProtocolError(
                    f"stream {self.stream_id} delivers to its owner as messages; "
                    f"set_active(False) to read it")
            while True:
                if self._local_reset is not None:
                    raise self._reset_here()
                if self._buffered:
                    data = self._take(max_bytes)
                    break
                if self._recv_fin:
                    self._fin_told = True
                    return b""
                if self._peer_reset is not None:
                    self._reset_told = True
                    raise self._reset_by_peer(self._peer_reset)
                if self._down is not None:
                    raise self._down_copy()
                remaining = deadline.timeout()
                if remaining == 0.0:
                    raise QuicDistTimeoutError(
                        f"nothing arrived on stream {self.stream_id} in time")
                self._cond.wait(remaining)
            release = self._release_check()
        if release:
            self._connection.release_stream(self.stream_id, len(data))
        else:
            self._connection.consume(self.stream_id, len(data))
        return data

    def __iter__(self) -> Iterator[bytes]:
        """The received chunks, until the peer's FIN (each ``recv()`` in turn)."""
        while True:
            chunk = self.recv()
            if not chunk:
                return
            yield chunk

    def close(self) -> None:
        """Send FIN (half-close: the peer may still send). Idempotent; never blocks.

        Once both sides have sent FIN the stream is closed (a Mailbox owner
        with message delivery gets ``closed``). Does nothing on a stream that
        was reset or whose node went down.

        Raises:
            NotOwner: the calling thread does not own the stream.
        """
        self._check_owner()
        with self._send_lock:  # after a send in progress on another thread (a Mailbox's)
            with self._cond:
                if self._send_fin or self._terminal():
                    return
            try:
                self._outbox.write(b"", fin=True, timeout=0)
            except (ConnectionClosed, StreamReset, StreamClosed):
                return  # the reset or node-down handling tells the owner
            self._sent_fin()

    def reset(self, code: int = 0) -> None:
        """Abort the stream both ways with the application error ``code``
        (RESET_STREAM and STOP_SENDING); unread bytes are dropped.

        The peer's owner is told ``reset`` with ``code``. Idempotent; does
        nothing once the stream is closed, reset or gone.

        Raises:
            NotOwner: the calling thread does not own the stream.
            ValueError: ``code`` is not in 0..2**62-1.
        """
        if type(code) is not int or not 0 <= code <= MAX_ERROR_CODE:
            raise ValueError(f"an error code is an int in 0..2**62-1, not {code!r}")
        self._check_owner()
        self._abandon(code)

    def settimeout(self, value: float | None) -> None:
        """How long ``send`` and ``recv`` may block: seconds, ``None`` (no
        limit, the default) or 0 (never block)."""
        self._timeout = _check_timeout(value)

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        """``setblocking(False)`` is ``settimeout(0)``, ``True`` is ``settimeout(None)``."""
        self._timeout = None if flag else 0.0

    def controlling_process(self, new_owner: threading.Thread | Mailbox, *,
                            active: bool = False) -> None:
        """Hand the stream to another owner: a live thread, or a Mailbox of this node.

        With a Mailbox, ``active=True`` asks for message delivery (see the
        module documentation); what arrived and was not read yet is
        delivered first. Only the current owner may hand the stream over.

        Raises:
            NotOwner: the calling thread does not own the stream.
            TypeError: ``new_owner`` is neither a Thread nor a Mailbox.
            ConfigurationError: the thread is not alive, or the Mailbox
                belongs to another node.
            MailboxClosed: the Mailbox has exited.
        """
        if isinstance(new_owner, Mailbox):
            if new_owner.node is not self._manager.node:
                raise ConfigurationError(f"{new_owner!r} is a process of another node")
            if new_owner.closed:
                raise MailboxClosed(f"{new_owner!r} has exited", new_owner.exit_reason)
        elif isinstance(new_owner, threading.Thread):
            if not new_owner.is_alive():
                raise ConfigurationError(f"{new_owner!r} is not alive")
            if active:
                raise ConfigurationError("only a Mailbox owner can receive messages")
        else:
            raise TypeError(f"an owner is a threading.Thread or a Mailbox, not {new_owner!r}")
        self._check_owner()
        with self._cond:
            self._owner = new_owner
            self._manager._owner_changed(self)
            self._active = False
            if active:
                self._activate()

    def set_active(self, active: bool = True) -> None:
        """Switch message delivery to the owner Mailbox on or off.

        Raises:
            NotOwner: the calling thread does not own the stream.
            ConfigurationError: the owner is a thread (threads call ``recv``).
        """
        self._check_owner()
        with self._cond:
            if not isinstance(self._owner, Mailbox):
                raise ConfigurationError("only a Mailbox owner can receive messages")
            if active and not self._active:
                self._activate()
            elif not active:
                self._active = False

    def info(self) -> dict[str, Any]:
        """``ref``, ``node``, ``stream_id``, ``owner`` (Thread or Mailbox),
        ``priority``, ``recv_fin`` and ``send_fin`` (quic_dist's stream_info)."""
        with self._cond:
            return {"ref": self, "node": self.node, "stream_id": self.stream_id,
                    "owner": self._owner, "priority": self.priority,
                    "recv_fin": self._recv_fin, "send_fin": self._send_fin}

    @property
    def owner(self) -> Owner | None:
        """The owning thread or Mailbox (None for a stream not yet accepted)."""
        return self._owner

    @property
    def closed(self) -> bool:
        """True once the stream is over: FIN both ways, a reset, or node down."""
        with self._cond:
            return self._terminal()

    def makefile(self, mode: str = "rb", buffering: int | None = None, *,
                 encoding: str | None = None, errors: str | None = None,
                 newline: str | None = None) -> Any:
        """A file object over the stream, as :meth:`socket.socket.makefile`.

        ``mode`` is made of ``r``, ``w`` and ``b``. Reads and writes go
        through :meth:`recv` and :meth:`send` (same owner rule, same
        timeout). Closing the file does not close the stream: call
        :meth:`close` for that (after flushing a writer).
        """
        if not set(mode) <= {"r", "w", "b"}:
            raise ValueError(f"invalid mode {mode!r} (only r, w, b)")
        reading = "r" in mode
        writing = "w" in mode
        if not reading and not writing:
            reading = True
        binary = "b" in mode
        raw = _StreamIO(self, reading, writing)
        if buffering is None:
            buffering = -1
        if buffering < 0:
            buffering = io.DEFAULT_BUFFER_SIZE
        if buffering == 0:
            if not binary:
                raise ValueError("unbuffered streams must be binary")
            return raw
        buffer: io.BufferedIOBase
        if reading and writing:
            buffer = io.BufferedRWPair(raw, raw, buffering)
        elif reading:
            buffer = io.BufferedReader(raw, buffering)
        else:
            buffer = io.BufferedWriter(raw, buffering)
        if binary:
            return buffer
        return io.TextIOWrapper(buffer, encoding, errors, newline)

    def __enter__(self) -> StreamRef:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        with self._cond:
            if self._down is not None:
                state = "down"
            elif self._local_reset is not None or self._peer_reset is not None:
                state = "reset"
            elif self._recv_fin and self._send_fin:
                state = "closed"
            else:
                state = "open"
        return f"<StreamRef {self.node}#{self.stream_id} prio={self.priority} {state}>"

    # ------------------------------------------------------------- internals

    def _check_owner(self) -> None:
        owner = self._owner
        if isinstance(owner, Mailbox):
            return  # any thread may act for a process
        if owner is None:
            raise NotOwner(f"stream {self.stream_id} of {self.node} was not accepted yet",
                           self.stream_id)
        if owner is not threading.current_thread():
            raise NotOwner(f"stream {self.stream_id} of {self.node} belongs to thread "
                           f"{owner.name!r}", self.stream_id)

    def _check_sendable(self) -> None:
        assert self._cond._is_owned()  # type: ignore[attr-defined]
        if self._local_reset is not None:
            raise self._reset_here()
        if self._peer_reset is not None:
            raise self._reset_by_peer(self._peer_reset)
        if self._down is not None:
            raise self._down_copy()
        if self._send_fin:
            raise StreamClosed(f"stream {self.stream_id} was closed (send after close)",
                               self.stream_id)

    def _reset_here(self) -> StreamClosed:
        return StreamClosed(f"stream {self.stream_id} was reset here", self.stream_id)

    def _reset_by_peer(self, code: int) -> StreamReset:
        return StreamReset(f"stream {self.stream_id} was reset by {self.node} "
                           f"(code 0x{code:x})", self.stream_id, code)

    def _down_copy(self) -> NodeDown:
        """A fresh exception for each raise (they may be raised in several threads)."""
        down = self._down
        assert down is not None
        error = NodeDown(down.message, down.node)
        error.__cause__ = down.__cause__
        return error

    def _down_error(self, cause: BaseException) -> NodeDown:
        with self._cond:
            if self._down is not None:
                return self._down_copy()
        return NodeDown(f"the connection to {self.node} closed: stream {self.stream_id} "
                        f"is gone ({cause})", self.node)

    def _terminal(self) -> bool:
        return (self._down is not None or self._local_reset is not None
                or self._peer_reset is not None or (self._recv_fin and self._send_fin))

    def _take(self, max_bytes: int) -> bytes:
        assert self._cond._is_owned()  # type: ignore[attr-defined]
        chunks = self._chunks
        if max_bytes < 0 or max_bytes >= self._buffered:
            if len(chunks) == 1:
                head = chunks.popleft()
                data = head if type(head) is bytes else bytes(head)
            else:
                data = b"".join(chunks)
                chunks.clear()
            self._buffered = 0
            return data
        out: list[bytes | memoryview] = []
        want = max_bytes
        while want:
            head = chunks[0]
            if len(head) <= want:
                out.append(chunks.popleft())
                want -= len(head)
            else:
                view = memoryview(head)
                out.append(view[:want])
                chunks[0] = view[want:]
                want = 0
        self._buffered -= max_bytes
        return b"".join(out)

    def _release_check(self) -> bool:
        """True (once) when the stream is over and its bytes all read or dropped:
        the carrier may forget it. Called with the lock held."""
        if self._released or self._down is not None:
            return False
        if self._terminal() and not self._buffered and not self._in_mailbox:
            self._released = True
            return True
        return False

    def _finish_check(self) -> bool:
        """With the lock held: tell an active owner ``closed`` once FIN went both
        ways; True if the stream just ended (the manager forgets it)."""
        if not (self._recv_fin and self._send_fin) or self._peer_reset is not None:
            return False
        if self._local_reset is not None or self._down is not None:
            return False
        if self._active and not self._closed_told and self._fin_told:
            self._closed_told = True
            self._tell(CLOSED)
        if self._forgotten:
            return False
        self._forgotten = True
        return True

    def _sent_fin(self) -> None:
        with self._cond:
            self._send_fin = True
            ended = self._finish_check()
            release = self._release_check()
        self._after(ended, release)

    def _after(self, ended: bool, release: bool, unread: int = 0) -> None:
        """Outside the lock: forget an ended stream, release its carrier state."""
        if ended:
            self._manager._forget(self)
        if release:
            self._connection.release_stream(self.stream_id, unread)

    def _tell(self, event: Any, on_taken: Any = None) -> bool:
        """Deliver ``(quic_dist_stream, self, event)`` to the owner Mailbox."""
        owner = self._owner
        assert isinstance(owner, Mailbox)
        return owner._deliver((TAG, self, event), on_taken)

    def _deliver_data(self, data: bytes, fin: bool) -> None:
        """Lock held, active: one ``data`` message; its bytes are consumed when received."""
        n = len(data)
        if not n and not fin:
            return
        if n:
            self._in_mailbox += n
            delivered = self._tell((DATA, data, fin), lambda: self._received(n))
            if not delivered:  # the mailbox is gone: the bytes are dropped
                self._in_mailbox -= n
                self._connection.consume(self.stream_id, n)
        else:
            self._tell((DATA, data, fin))
        if fin:
            self._fin_told = True

    def _received(self, n: int) -> None:
        """A data message was received (or dropped with its mailbox): grant credit."""
        with self._cond:
            self._in_mailbox -= n
            released = self._released  # already let go of (a reset): flush at once
            release = self._release_check()
        if release:
            self._connection.release_stream(self.stream_id, n)
        else:
            self._connection.consume(self.stream_id, n, final=released)

    def _activate(self) -> None:
        """Lock held: turn message delivery on, first delivering what is buffered."""
        assert isinstance(self._owner, Mailbox)
        self._active = True
        if self._buffered or (self._recv_fin and not self._fin_told):
            data = self._take(-1) if self._buffered else b""
            self._deliver_data(data, self._recv_fin)
        if self._peer_reset is not None and not self._reset_told:
            self._reset_told = True
            self._tell((RESET, self._peer_reset))
        elif self._down is not None and not self._reset_told:
            self._reset_told = True
            self._tell((RESET, NOCONNECTION))
        elif self._recv_fin and self._send_fin and not self._closed_told:
            self._closed_told = True
            self._tell(CLOSED)

    def _abandon(self, code: int) -> None:
        """Reset the stream here (owner's reset, owner gone, node stopping)."""
        with self._cond:
            if self._terminal():
                return
            self._local_reset = code
            unread = self._buffered
            self._chunks.clear()
            self._buffered = 0
            self._released = True
            self._forgotten = True
            self._cond.notify_all()
        self._outbox.fail(self._reset_here())
        self._connection.reset_stream(self.stream_id, code)
        self._manager._forget(self)
        self._connection.release_stream(self.stream_id, unread)

    # Called on the connection's I/O thread.

    def _on_data(self, data: bytes, fin: bool) -> None:
        with self._cond:
            if self._local_reset is not None or self._down is not None or self._recv_fin:
                drop = len(data)  # late bytes of a stream we are done with
            else:
                drop = 0
                if fin:
                    self._recv_fin = True
                if self._active:
                    self._deliver_data(data, fin)
                elif data:
                    self._chunks.append(data)
                    self._buffered += len(data)
                self._cond.notify_all()
                ended = self._finish_check() if fin else False
                release = self._release_check() if fin else False
        if drop:
            self._connection.consume(self.stream_id, drop, final=True)
            return
        self._after(ended, release)

    def _on_reset(self, code: int) -> None:
        with self._cond:
            if self._terminal():
                return
            self._peer_reset = code
            self._forgotten = True
            if self._active:
                self._reset_told = True
                self._tell((RESET, code))
            self._cond.notify_all()
            release = self._release_check()
        self._outbox.fail(self._reset_by_peer(code))
        # Our own direction ends too (a no-op when the peer's reset stopped it).
        self._connection.reset_stream(self.stream_id, code)
        self._manager._forget(self)
        if release:
            self._connection.release_stream(self.stream_id)

    def _on_down(self, error: NodeDown) -> None:
        with self._cond:
            if self._terminal():
                return
            self._down = error
            self._forgotten = True
            if self._active:
                self._reset_told = True
                self._tell((RESET, NOCONNECTION))
            self._cond.notify_all()
        self._outbox.fail(error)


class _StreamIO(io.RawIOBase):
    """The raw file under :meth:`StreamRef.makefile`."""

    def __init__(self, ref: StreamRef, reading: bool, writing: bool) -> None:
        super().__init__()
        self._ref = ref
        self._reading = reading
        self._writing = writing

    def readable(self) -> bool:
        return self._reading

    def writable(self) -> bool:
        return self._writing

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if not view:
            return 0
        data = self._ref.recv(len(view))
        view[:len(data)] = data
        return len(data)

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._ref.send(view)
        return len(view)


class Acceptor:
    """A member of the acceptor pool for one peer node (thread-safe).

    Made by :meth:`quicdist.Node.accept_streams`. The streams the peer
    opens are handed round-robin to the pool's members; each waits here
    until :meth:`accept` takes it (a thread member) or is delivered to the
    member's Mailbox at once (a Mailbox member).
    """

    def __init__(self, manager: StreamManager, peer: str, mailbox: Mailbox | None,
                 priority: int) -> None:
        self.peer = peer
        self.mailbox = mailbox
        self.priority = priority
        self._manager = manager
        # Guards _pending and _error; accept() waits on it.
        self._cond = threading.Condition(threading.Lock())
        self._pending: deque[StreamRef] = deque()
        self._error: QuicDistError | None = None

    def accept(self, timeout: float | None = None) -> StreamRef:
        """The next stream the peer opened; the calling thread becomes its owner.

        Its first bytes are already waiting in it. Blocks up to ``timeout``
        (``None``: until a stream comes or the acceptor is closed).

        Raises:
            QuicDistTimeoutError: no stream in time.
            StreamClosed: the acceptor was closed.
            NodeDown: the node was stopped.
            LocalProtocolError: a Mailbox member is given its streams as messages.
        """
        if self.mailbox is not None:
            raise LocalProtocolError("a Mailbox acceptor receives its streams as messages")
        deadline = Deadline(timeout)
        with self._cond:
            while not self._pending:
                if self._error is not None:
                    raise self._error
                remaining = deadline.timeout()
                if remaining == 0.0:
                    raise QuicDistTimeoutError(f"no stream from {self.peer} in time")
                self._cond.wait(remaining)
            ref = self._pending.popleft()
        with ref._cond:
            ref._owner = threading.current_thread()
        self._manager._owner_changed(ref)
        return ref

    def close(self) -> None:
        """Leave the pool (``node.stop_accepting(acceptor)``). Idempotent.

        Streams assigned to this member and not accepted yet go to another
        member of the pool, or are refused (reset with 0x100) if none is left.
        """
        self._manager.stop_accepting(self)

    @property
    def closed(self) -> bool:
        return self._error is not None

    def __len__(self) -> int:
        """Streams waiting to be accepted."""
        with self._cond:
            return len(self._pending)

    def __enter__(self) -> Acceptor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        who = f" {self.mailbox!r}" if self.mailbox is not None else ""
        state = " closed" if self.closed else ""
        return f"<Acceptor {self.peer}{who}{state}>"

    def _offer(self, ref: StreamRef) -> bool:
        """Queue a new stream for accept() (I/O thread); False once closed."""
        with self._cond:
            if self._error is not None:
                return False
            self._pending.append(ref)
            self._cond.notify()
            return True

    def _shut(self, error: QuicDistError) -> list[StreamRef]:
        """Refuse further offers; wake accept(); the streams left waiting."""
        with self._cond:
            if self._error is None:
                self._error = error
            pending = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        return pending


class _ConnStreams:
    """The user streams of one carrier connection.

    ``retired`` holds the peer's streams that were refused or are over
    here: bytes still in flight on them are late, not a new stream. An id
    leaves it once the carrier forgot the stream (no byte can come any more).
    """

    __slots__ = ("peer", "connection", "streams", "retired")

    def __init__(self, peer: str, connection: Connection) -> None:
        self.peer = peer
        self.connection = connection
        self.streams: dict[int, StreamRef] = {}
        self.retired: set[int] = set()


class _Pool:
    __slots__ = ("members", "turn")

    def __init__(self) -> None:
        self.members: list[Acceptor] = []
        self.turn = 0

    def pick(self) -> Acceptor | None:
        if not self.members:
            return None
        member = self.members[self.turn % len(self.members)]
        self.turn += 1
        return member


class StreamManager:
    """The node's user streams: open, accept, route the carrier's events, clean up.

    Owned by :class:`quicdist.Node`, which calls it from its connections'
    I/O threads (:meth:`on_event`, :meth:`connection_down`), from
    ``_process_exit`` (:meth:`owner_exited`), its ticker (:meth:`tick`) and
    ``stop`` (:meth:`stop`).
    """

    def __init__(self, node: Any) -> None:
        self.node = node
        # Guards every table below. A leaf lock: nothing else is acquired
        # (and nobody is called) while it is held.
        self._lock = threading.Lock()
        self._conns: dict[Connection, _ConnStreams] = {}
        self._down: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._pools: dict[str, _Pool] = {}
        self._by_mailbox: dict[Mailbox, set[StreamRef]] = {}
        self._mailbox_acceptors: dict[Mailbox, list[Acceptor]] = {}
        self._stopped = False

    # ------------------------------------------------------------ public

    def open(self, connection: Connection, peer: str, priority: int,
             timeout: float | None) -> StreamRef:
        """Open a stream on ``connection`` (the calling thread owns it)."""
        try:
            stream_id, outbox = connection.open_stream(priority, timeout)
        except ConnectionClosed as exc:
            raise NodeDown(f"cannot open a stream to {peer}: {exc}", peer) from exc
        ref = StreamRef(self, peer, stream_id, connection, outbox, priority,
                        threading.current_thread())
        with self._lock:
            gone = self._stopped or connection in self._down
            if not gone:
                self._conn(connection, peer).streams[stream_id] = ref
        if gone:
            ref._on_down(NodeDown(f"the connection to {peer} went down", peer))
            raise NodeDown(f"the connection to {peer} went down", peer)
        return ref

    def accept_streams(self, peer: str, mailbox: Mailbox | None, priority: int) -> Acceptor:
        acceptor = Acceptor(self, peer, mailbox, priority)
        with self._lock:
            if self._stopped:
                raise NodeDown(f"node {self.node.name} is stopped", self.node.name)
            self._pools.setdefault(peer, _Pool()).members.append(acceptor)
            if mailbox is not None:
                self._mailbox_acceptors.setdefault(mailbox, []).append(acceptor)
        if mailbox is not None and mailbox.closed:  # it exited meanwhile
            self.stop_accepting(acceptor)
        return acceptor

    def stop_accepting(self, acceptor: Acceptor,
                       error: QuicDistError | None = None) -> None:
        with self._lock:
            pool = self._pools.get(acceptor.peer)
            if pool is not None and acceptor in pool.members:
                pool.members.remove(acceptor)
                if not pool.members:
                    del self._pools[acceptor.peer]
            if acceptor.mailbox is not None:
                mine = self._mailbox_acceptors.get(acceptor.mailbox, [])
                if acceptor in mine:
                    mine.remove(acceptor)
                if not mine:
                    self._mailbox_acceptors.pop(acceptor.mailbox, None)
        pending = acceptor._shut(error or StreamClosed(
            f"the acceptor for {acceptor.peer} was closed"))
        for ref in pending:
            self._assign(ref)

    def list(self, peer: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            refs = [ref for cs in self._conns.values() if peer is None or cs.peer == peer
                    for ref in cs.streams.values()]
        refs.sort(key=lambda r: (r.node, r.stream_id))
        return [ref.info() for ref in refs]

    # ------------------------------------------------ the node's hooks

    def on_event(self, connection: Connection, peer: str | None, up: bool,
                 event: CarrierEvent) -> None:
        """A user-stream event of ``connection`` (its I/O thread)."""
        if isinstance(event, UserStreamData):
            self._on_data(connection, peer, up, event)
        elif isinstance(event, UserStreamReset | UserStreamStopped):
            with self._lock:
                cs = self._conns.get(connection)
                ref = cs.streams.get(event.stream_id) if cs is not None else None
                known = cs is not None and event.stream_id in cs.retired
            if ref is not None:
                ref._on_reset(event.code)
            elif not known:
                logger.debug("%s: %s of unknown stream %d from %s (code 0x%x) ignored",
                             self.node.name, type(event).__name__, event.stream_id, peer,
                             event.code)

    def connection_down(self, connection: Connection | None, peer: str,
                        error: BaseException) -> None:
        """Every stream of ``connection`` fails with NodeDown (its blocked calls wake)."""
        if connection is None:
            return
        with self._lock:
            self._down.add(connection)
            cs = self._conns.pop(connection, None)
            refs = list(cs.streams.values()) if cs is not None else []
            for ref in refs:
                self._unindex(ref)
        for ref in refs:
            ref._on_down(NodeDown(f"node {peer} went down: stream {ref.stream_id} is gone "
                                  f"({error})", peer))

    def owner_exited(self, mailbox: Mailbox) -> None:
        """A Mailbox exited: its streams are reset with 0, its acceptors leave their pools."""
        with self._lock:
            refs = list(self._by_mailbox.pop(mailbox, ()))
            acceptors = list(self._mailbox_acceptors.get(mailbox, ()))
        for acceptor in acceptors:
            self.stop_accepting(acceptor)
        for ref in refs:
            if ref._owner is mailbox:
                ref._abandon(0)

    def tick(self) -> None:
        """Reset (code 0) the streams whose owner thread has ended (ticker thread)."""
        with self._lock:
            refs = [ref for cs in self._conns.values() for ref in cs.streams.values()
                    if isinstance(ref._owner, threading.Thread)]
        for ref in refs:
            owner = ref._owner
            if isinstance(owner, threading.Thread) and not owner.is_alive():
                logger.debug("%s: the owner of stream %d of %s ended: reset",
                             self.node.name, ref.stream_id, ref.node)
                ref._abandon(0)

    def stop(self) -> None:
        """The node stops: acceptors are closed, every stream fails with NodeDown."""
        error = NodeDown(f"node {self.node.name} is stopped", self.node.name)
        with self._lock:
            self._stopped = True
            acceptors = [a for pool in self._pools.values() for a in pool.members]
            self._pools.clear()
            self._mailbox_acceptors.clear()
            conns = list(self._conns.items())
            self._conns.clear()
            self._by_mailbox.clear()
        for acceptor in acceptors:
            acceptor._shut(error)
        for connection, cs in conns:
            self._down.add(connection)
            for ref in cs.streams.values():
                ref._on_down(NodeDown(f"node {self.node.name} stopped: stream "
                                      f"{ref.stream_id} to {cs.peer} is gone", cs.peer))

    # ------------------------------------------------------------ internals

    def _conn(self, connection: Connection, peer: str) -> _ConnStreams:
        assert self._lock.locked()
        cs = self._conns.get(connection)
        if cs is None:
            cs = self._conns[connection] = _ConnStreams(peer, connection)
        return cs

    def _on_data(self, connection: Connection, peer: str | None, up: bool,
                 event: UserStreamData) -> None:
        stream_id = event.stream_id
        with self._lock:
            cs = self._conns.get(connection)
            ref = cs.streams.get(stream_id) if cs is not None else None
            retired = cs is not None and stream_id in cs.retired
            gone = self._stopped or connection in self._down
            if cs is not None and len(cs.retired) > _RETIRED_PRUNE_AT:
                # On the I/O thread: the carrier's own view is stable here.
                cs.retired &= connection.protocol.user_streams
        if ref is not None:
            ref._on_data(event.data, event.fin)
            return
        mine = (stream_id & 1) == (0 if connection.is_client else 1)
        if retired or mine or gone:
            # Late bytes of a stream refused or over here, or of a
            # connection that is going away: dropped, their credit returned.
            if mine and not retired:
                logger.debug("%s: %d bytes on finished stream %d from %s dropped",
                             self.node.name, len(event.data), stream_id, peer)
            connection.consume(stream_id, len(event.data), final=True)
            return
        acceptor = None
        if up and peer is not None:
            with self._lock:
                pool = self._pools.get(peer)
                acceptor = pool.pick() if pool is not None else None
        if acceptor is None:
            self._refuse(connection, peer, stream_id, len(event.data),
                         "no acceptor" if up else "the handshake is not complete")
            return
        assert peer is not None
        try:
            outbox = connection.stream_outbox(stream_id, acceptor.priority)
        except (ConnectionClosed, LocalProtocolError) as exc:
            logger.debug("%s: stream %d from %s not accepted: %s", self.node.name, stream_id,
                         peer, exc)
            connection.consume(stream_id, len(event.data), final=True)
            return
        ref = StreamRef(self, peer, stream_id, connection, outbox, acceptor.priority, None)
        with self._lock:
            self._conn(connection, peer).streams[stream_id] = ref
        ref._on_data(event.data, event.fin)
        if not self._hand(ref, acceptor):
            self._assign(ref)

    def _refuse(self, connection: Connection, peer: str | None, stream_id: int,
                nbytes: int, why: str) -> None:
        logger.info("%s: stream %d from %s refused (0x%x): %s", self.node.name, stream_id,
                    peer, STREAM_REFUSED, why)
        with self._lock:
            cs = self._conns.get(connection)
            if cs is None and peer is not None and connection not in self._down:
                cs = self._conn(connection, peer)
            if cs is not None:
                cs.retired.add(stream_id)
        connection.reset_stream(stream_id, STREAM_REFUSED)
        connection.consume(stream_id, nbytes, final=True)

    def _hand(self, ref: StreamRef, acceptor: Acceptor) -> bool:
        """Give a stream to ``acceptor``: its queue, or its Mailbox as messages
        (what already arrived first); False if the acceptor is closed."""
        mailbox = acceptor.mailbox
        if mailbox is None:
            return acceptor._offer(ref)
        with ref._cond:
            ref._owner = mailbox
            self._owner_changed(ref)
            ref._activate()
        if mailbox.closed:
            ref._abandon(0)
        return True

    def _assign(self, ref: StreamRef) -> None:
        """A stream whose acceptor left before accepting it: the next member, or refused."""
        for _ in range(64):  # members may be closing meanwhile: a bounded retry
            with self._lock:
                pool = self._pools.get(ref.node)
                acceptor = pool.pick() if pool is not None else None
            if acceptor is None:
                break
            if self._hand(ref, acceptor):
                return
        ref._abandon(STREAM_REFUSED)

    def _owner_changed(self, ref: StreamRef) -> None:
        with self._lock:
            self._unindex(ref)
            owner = ref._owner
            if isinstance(owner, Mailbox) and not ref._forgotten:
                self._by_mailbox.setdefault(owner, set()).add(ref)
                ref._indexed = owner

    def _unindex(self, ref: StreamRef) -> None:
        assert self._lock.locked()
        mailbox = ref._indexed
        if mailbox is not None:
            ref._indexed = None
            refs = self._by_mailbox.get(mailbox)
            if refs is not None:
                refs.discard(ref)
                if not refs:
                    del self._by_mailbox[mailbox]

    def _forget(self, ref: StreamRef) -> None:
        """The stream is over (closed both ways, reset, gone): out of the tables."""
        with self._lock:
            cs = self._conns.get(ref._connection)
            if cs is not None and cs.streams.get(ref.stream_id) is ref:
                del cs.streams[ref.stream_id]
                cs.retired.add(ref.stream_id)
            self._unindex(ref)
