"""The TCP carrier: standard Erlang distribution over TCP (``inet_tcp_dist``).

``Node(..., carrier="tcp")`` runs the same node over plain TCP, so a Python
node can join a stock Erlang cluster (``erl -name``) and talk to any OTP
release without a QUIC-capable Erlang. On the wire this is what OTP's
``inet_tcp_dist`` does:

* the node listens on a TCP port and registers it in the epmd of its host
  (:mod:`quicdist.epmd`); a peer's port comes from the epmd on the peer's
  host, or directly from the static ``nodes`` table;
* the distribution handshake (the same messages as on QUIC stream 0) with a
  2-byte big-endian length before each message;
* after the handshake, every distribution message with a 4-byte length;
  a frame of length 0 is a tick.

**There is no encryption and no TLS**: anyone who can reach the port can
read and inject traffic; the cookie digest only authenticates the
handshake. Use it on trusted networks (or for tests against ``erl``); the
QUIC carrier is the secure one.

The classes here give the node the interface of
:class:`quicdist.sync.connection.Connection` (``send_control``,
``send_tick``, ``last_received``, ``dist_outbox``, ``close``, ``join``,
``peer``, ``closed``, and the events of :mod:`quicdist.events` delivered to
``on_event`` on the connection's reader thread), plus
:meth:`TcpConnection.handshake_complete`, which the node calls when it has
processed the last handshake message: the reader then switches from 2-byte
to 4-byte framing before it looks at one more byte.

Threads: a connection has a reader thread (reads the socket, dispatches
events) and a writer thread (writes handshake messages, then the framed
bytes it takes from ``dist_outbox``); a listener has one thread accepting
connections.
"""

from __future__ import annotations

import logging
import queue
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from ._accel import DEFAULT_MAX_FRAME_SIZE, FrameDecoder
from .config import CarrierConfig
from .errors import (
    ConfigurationError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    LocalProtocolError,
    QuicDistError,
    QuicDistTimeoutError,
    RemoteProtocolError,
)
from .events import (
    CarrierEvent,
    ConnectionTerminated,
    ControlData,
    DistFrames,
    HandshakeCompleted,
)
from .sync.connection import Connection
from .sync.listener import AcceptingListener
from .sync.outbox import FrameOutbox, StreamOutbox
from .sync.utils import Deadline


__all__ = [
    "AnyConnection",
    "TcpConfig",
    "TcpConnection",
    "TcpListener",
    "carrier_config",
    "tcp_connect",
]

logger = logging.getLogger("quicdist.tcp")

TcpEventHandler = Callable[["TcpConnection", CarrierEvent], None]

KIB = 1024
MIB = 1024 * KIB
#: Bytes asked of the socket per read.
_RECV_SIZE = 256 * KIB
#: The most framed bytes the writer takes from the outbox per write.
_WRITE_CHUNK = 256 * KIB
#: How long close() waits for the threads by default.
_CLOSE_TIMEOUT = 5.0
_HANDSHAKE_MAX = 0xFFFF
_USER_STREAMS = "user streams need the QUIC carrier: this is a TCP connection"


@dataclass(frozen=True)
class TcpConfig:
    """How one node's TCP distribution behaves (``Node(carrier=TcpConfig(...))``).

    ``Node(carrier="tcp")`` is ``TcpConfig()``.

    Attributes:
        epmd: register the node in the epmd of its host when it starts
            (unregistering when it stops) and find peers through the epmd
            of their host. False: neither; peers must then be in the
            ``nodes`` table or the ``discovery`` object.
        epmd_port: epmd's port (None: ``ERL_EPMD_PORT``, else 4369).
        epmd_timeout: seconds an epmd request may take.
        send_buffer: bytes a connection's outbox holds before a sender
            blocks (Erlang's busy distribution port).
        max_frame_size: the largest distribution message accepted; a larger
            announced length closes the connection (FrameError).
        nodelay: set TCP_NODELAY (OTP's default for distribution).
        max_pending_handshakes: accepted connections that may be in their
            distribution handshake at once; more are closed at once (each
            connection has two threads).
    """

    epmd: bool = True
    epmd_port: int | None = None
    epmd_timeout: float = 5.0
    send_buffer: int = 1 * MIB
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    nodelay: bool = True
    max_pending_handshakes: int = 64

    def __post_init__(self) -> None:
        if self.epmd_port is not None and (
                isinstance(self.epmd_port, bool) or not isinstance(self.epmd_port, int)
                or not 0 < self.epmd_port < 65536):
            raise ConfigurationError("epmd_port must be None or in 1..65535")
        if not isinstance(self.epmd_timeout, int | float) or self.epmd_timeout <= 0:
            raise ConfigurationError("epmd_timeout must be a positive number of seconds")
        for name in ("send_buffer", "max_frame_size", "max_pending_handshakes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigurationError(f"{name} must be a positive int")
        if self.max_frame_size > 0xFFFFFFFF:
            raise ConfigurationError("max_frame_size must fit in 32 bits")


def carrier_config(carrier: CarrierConfig | TcpConfig | str | None
                   ) -> CarrierConfig | TcpConfig:
    """The settings a node's ``carrier`` argument stands for.

    ``None`` or ``"quic"``: QUIC with default settings; ``"tcp"``: TCP with
    default settings; a :class:`CarrierConfig` (QUIC) or :class:`TcpConfig`
    as given.
    """
    if carrier is None or carrier == "quic":
        return CarrierConfig()
    if carrier == "tcp":
        return TcpConfig()
    if isinstance(carrier, CarrierConfig | TcpConfig):
        return carrier
    raise ConfigurationError(
        f"carrier must be 'quic', 'tcp', a CarrierConfig or a TcpConfig, not {carrier!r}")


class TcpConnection:
    """One TCP distribution connection (thread-safe).

    Made by :func:`tcp_connect` (dialing) or a :class:`TcpListener`
    (accepted); not constructed directly.

    Events go to ``on_event(connection, event)``, called on the reader
    thread (it must not block), or, without a handler, to a queue read by
    :meth:`next_event`. In order: :class:`HandshakeCompleted` at once (TCP
    has no transport handshake; ``alpn`` and ``peer_subject`` are ``""``),
    then one :class:`ControlData` per handshake message (its 2-byte length
    stripped), then, after :meth:`handshake_complete`,
    :class:`DistFrames` (stream id 0; ticks counted, not listed), and last
    :class:`ConnectionTerminated`.
    """

    def __init__(self, sock: socket.socket, peer: Any, *, is_client: bool,
                 config: TcpConfig, name: str, on_event: TcpEventHandler | None = None) -> None:
        self.peer = peer
        self.name = name
        self.is_client = is_client
        self.config = config
        self._sock = sock
        self._on_event = on_event
        self._events: queue.SimpleQueue[CarrierEvent] = queue.SimpleQueue()
        # Guards _closing, _close_error, _control and _framed.
        self._lock = threading.Lock()
        self._closing = False
        self._close_error: ConnectionClosed | None = None
        self._framed = False
        self._control: deque[bytes] = deque()
        self._wake = threading.Event()
        self._last_received: float | None = None
        self._started = False
        self._finished = threading.Event()
        self.dist_outbox = FrameOutbox(config.send_buffer, self._wake.set)
        self._reader = threading.Thread(target=self._read_loop, daemon=True,
                                        name=f"quicdist-tcp-{name}")
        self._writer = threading.Thread(target=self._write_loop, daemon=True,
                                        name=f"quicdist-tcpw-{name}")

    # ------------------------------------------------------------ user side

    def start(self) -> None:
        """Start the reader and writer threads (once)."""
        with self._lock:
            if self._started:
                return
            self._started = True
        self._writer.start()
        self._reader.start()

    @property
    def closed(self) -> ConnectionClosed | None:
        """Why the connection is closed, or None while it is open."""
        return self._close_error

    @property
    def established(self) -> bool:
        """Always True: a TCP connection exists once connected."""
        return True

    @property
    def framed(self) -> bool:
        """Whether the handshake is over (4-byte framing in both directions)."""
        return self._framed

    @property
    def thread(self) -> threading.Thread:
        """The reader thread (the one events are delivered on)."""
        return self._reader

    @property
    def last_received(self) -> float | None:
        """``time.monotonic()`` of the last bytes from the peer (None: none yet)."""
        return self._last_received

    def handshake_complete(self) -> None:
        """The distribution handshake is over: switch to 4-byte frames.

        Call it from the event handler, on the reader thread, while handling
        the :class:`ControlData` that completed the handshake: the reader
        parses every later byte as a 4-byte frame, and :meth:`send_control`
        refuses further handshake messages. Idempotent.

        Raises:
            LocalProtocolError: called from another thread (the reader may
                already have read past the handshake).
        """
        if threading.current_thread() is not self._reader:
            raise LocalProtocolError(
                "handshake_complete() must be called from the connection's event handler")
        with self._lock:
            self._framed = True

    def send_control(self, data: bytes, timeout: float | None = 10.0) -> None:
        """Send one handshake message, with its 2-byte length. Never blocks.

        ``timeout`` is accepted for the carrier interface; the message is
        queued for the writer thread at once, before any distribution frame.

        Raises:
            LocalProtocolError: after :meth:`handshake_complete`, or a
                message longer than 65535 bytes.
            ConnectionClosed: the connection is closed or closing.
        """
        payload = bytes(data)
        if len(payload) > _HANDSHAKE_MAX:
            raise LocalProtocolError(
                f"a handshake message of {len(payload)} bytes does not fit a 2-byte length")
        with self._lock:
            self._check_open()
            if self._framed:
                raise LocalProtocolError("the distribution handshake is over: no more "
                                         "handshake messages on this connection")
            self._control.append(struct.pack(">H", len(payload)) + payload)
        self._wake.set()

    def send_dist(self, payload: bytes, timeout: float | None = None) -> None:
        """Queue one distribution message; blocks while the send buffer is full."""
        self._check_open()
        self.dist_outbox.put(payload, timeout)

    def send_tick(self) -> None:
        """A tick (a zero-length frame), unless other bytes are waiting to go. Never blocks.

        Does nothing before the handshake is over or once the connection is
        closing: any bytes the peer receives prove this side alive.
        """
        if not self._framed or self._closing or self.dist_outbox.size:
            return
        try:
            self.dist_outbox.put(b"", force=True)
        except QuicDistError:
            pass  # closed meanwhile

    def next_event(self, timeout: float | None = None) -> CarrierEvent:
        """The next event (only without an ``on_event`` handler).

        Raises QuicDistTimeoutError when none arrives in time.
        """
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            raise QuicDistTimeoutError("timed out waiting for a carrier event") from None

    def close(self, error_code: int = 0, reason: str = "",
              timeout: float | None = _CLOSE_TIMEOUT) -> None:
        """Close the connection and wait (up to ``timeout``) for its threads to end.

        Idempotent; ``timeout=0`` does not wait, and neither does a call
        from the connection's own threads. Bytes still in the outbox are
        not sent (as QUIC's close, and as Erlang's disconnect).
        """
        error = ConnectionClosedOK(reason or "connection closed", error_code,
                                   initiated_locally=True)
        if self._terminate(error):
            self._shutdown()
        with self._lock:
            started = self._started
        if not started:
            self._sock.close()
            self._finished.set()
            return
        me = threading.current_thread()
        if timeout != 0 and me is not self._reader and me is not self._writer:
            self.join(timeout)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the connection's threads to end; True if they did."""
        deadline = Deadline(timeout)
        if not self._finished.wait(timeout):
            return False
        # The reader sets _finished as its last act: wait for it to be gone.
        if self._reader.is_alive() and threading.current_thread() is not self._reader:
            self._reader.join(deadline.timeout())
        return not self._reader.is_alive()

    # The user-stream part of the QUIC carrier's interface: TCP has none.

    def open_stream(self, priority: int = 128, timeout: float | None = 10.0
                    ) -> tuple[int, StreamOutbox]:
        """Refused: raises LocalProtocolError (user streams need QUIC)."""
        raise LocalProtocolError(_USER_STREAMS)

    def stream_outbox(self, stream_id: int, priority: int = 128,
                      timeout: float | None = 10.0) -> StreamOutbox:
        """Refused: raises LocalProtocolError (user streams need QUIC)."""
        raise LocalProtocolError(_USER_STREAMS)

    def consume(self, stream_id: int, nbytes: int, final: bool = False) -> None:
        """Refused: raises LocalProtocolError (user streams need QUIC)."""
        raise LocalProtocolError(_USER_STREAMS)

    def release_stream(self, stream_id: int, unread: int = 0) -> None:
        """Refused: raises LocalProtocolError (user streams need QUIC)."""
        raise LocalProtocolError(_USER_STREAMS)

    def reset_stream(self, stream_id: int, code: int = 0) -> None:
        """Refused: raises LocalProtocolError (user streams need QUIC)."""
        raise LocalProtocolError(_USER_STREAMS)

    def ping(self) -> None:
        """A tick (TCP has no PING of its own)."""
        self.send_tick()

    def __enter__(self) -> TcpConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._close_error else "open"
        role = "client" if self.is_client else "server"
        return f"<TcpConnection {self.name} {role} {state}>"

    # ------------------------------------------------------------- plumbing

    def _check_open(self) -> None:
        if self._close_error is not None:
            raise self._close_error
        if self._closing:
            raise ConnectionClosedError("connection is closing", initiated_locally=True)

    def _terminate(self, error: ConnectionClosed) -> bool:
        """Record why the connection ends (the first reason wins); True the first time."""
        with self._lock:
            if self._close_error is not None:
                return False
            self._close_error = error
            self._closing = True
            self._control.clear()
        self.dist_outbox.fail(error)
        self._wake.set()
        return True

    def _shutdown(self) -> None:
        """Wake both threads: a blocked recv() returns b"", a blocked send() fails."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # not connected (any more)
        self._wake.set()

    def _dispatch(self, event: CarrierEvent) -> None:
        if self._on_event is None:
            self._events.put(event)
            return
        try:
            self._on_event(self, event)
        except Exception:
            logger.exception("event handler failed on %s for %r", self.name, event)

    # --------------------------------------------------------- reader thread

    def _read_loop(self) -> None:
        error: ConnectionClosed | None = None
        try:
            if self._close_error is None:
                self._dispatch(HandshakeCompleted(alpn="", peer_subject=""))
            error = self._read()
        except RemoteProtocolError as exc:  # a FrameError too
            logger.warning("%s: %s; closing", self.name, exc)
            error = ConnectionClosedError(f"protocol error: {exc}", exc.error_code,
                                          initiated_locally=True)
        except BaseException as exc:  # a bug: report it once, fail everything cleanly
            logger.error("reader thread of %s failed", self.name, exc_info=True)
            error = ConnectionClosedError(f"reader thread failed: {exc!r}",
                                          initiated_locally=True)
            error.__cause__ = exc
        finally:
            self._finish(error)

    def _read(self) -> ConnectionClosed | None:
        """Read until EOF, an error or a local close; the reason it ended."""
        sock = self._sock
        buf = bytearray()
        decoder: FrameDecoder | None = None
        while self._close_error is None:
            try:
                chunk = sock.recv(_RECV_SIZE)
            except OSError as exc:
                if self._close_error is not None:
                    return None
                if isinstance(exc, ConnectionResetError):
                    return ConnectionClosedError("connection reset by the peer")
                return ConnectionClosedError(f"receive failed: {exc}")
            if not chunk:
                if self._close_error is not None:
                    return None
                return ConnectionClosedOK("the peer closed the connection")
            self._last_received = time.monotonic()
            if decoder is not None:
                self._frames(decoder.feed(chunk))
                continue
            # The handshake: one 2-byte-framed message per event, and a
            # switch to 4-byte frames as soon as the handler completes it.
            buf += chunk
            pos = 0
            while len(buf) - pos >= 2 and self._close_error is None:
                (size,) = struct.unpack_from(">H", buf, pos)
                if size == 0:
                    raise RemoteProtocolError("an empty handshake message")
                if len(buf) - pos - 2 < size:
                    break
                message = bytes(buf[pos + 2:pos + 2 + size])
                pos += 2 + size
                self._dispatch(ControlData(message))
                if self._framed:
                    decoder = FrameDecoder(self.config.max_frame_size)
                    break
            del buf[:pos]
            if decoder is not None and buf and self._close_error is None:
                rest = bytes(buf)
                buf.clear()
                self._frames(decoder.feed(rest))
        return None

    def _frames(self, frames: list[bytes]) -> None:
        if not frames:
            return
        payloads = [f for f in frames if f]
        if payloads:
            self._dispatch(DistFrames(0, payloads, len(frames) - len(payloads)))

    def _finish(self, error: ConnectionClosed | None) -> None:
        self._terminate(error or ConnectionClosedError("connection ended",
                                                        initiated_locally=True))
        self._shutdown()
        self._writer.join(_CLOSE_TIMEOUT)
        self._sock.close()
        close_error = self._close_error
        assert close_error is not None
        if not isinstance(close_error, ConnectionClosedOK):
            logger.info("connection %s closed: %s", self.name, close_error)
        self._dispatch(ConnectionTerminated(close_error))
        self._finished.set()

    # --------------------------------------------------------- writer thread

    def _write_loop(self) -> None:
        sock = self._sock
        outbox = self.dist_outbox
        control = self._control
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._closing:
                    return
                # Handshake messages first: they only exist before the first
                # frame, and after them nothing but the outbox is written.
                while True:
                    with self._lock:
                        message = control.popleft() if control else None
                    if message is None:
                        break
                    sock.sendall(message)
                while not self._closing:
                    data, _ = outbox.take(_WRITE_CHUNK)
                    if not data:
                        break
                    sock.sendall(data)
        except OSError as exc:
            if self._terminate(ConnectionClosedError(f"send failed: {exc}")):
                self._shutdown()
        except BaseException as exc:  # a bug
            logger.error("writer thread of %s failed", self.name, exc_info=True)
            error = ConnectionClosedError(f"writer thread failed: {exc!r}",
                                          initiated_locally=True)
            error.__cause__ = exc
            if self._terminate(error):
                self._shutdown()


#: Either carrier's connection, as the node sees it.
AnyConnection: TypeAlias = Connection | TcpConnection


def _tune(sock: socket.socket, config: TcpConfig) -> None:
    sock.settimeout(None)
    if config.nodelay and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def tcp_connect(
    host: str,
    port: int,
    *,
    config: TcpConfig | None = None,
    timeout: float | None = 10.0,
    on_event: TcpEventHandler | None = None,
    name: str | None = None,
) -> TcpConnection:
    """Dial ``host:port`` over TCP and start the connection's threads.

    Returns once the TCP connection is up (the handshake is the caller's,
    starting with the :class:`HandshakeCompleted` event).

    Raises:
        ConnectionClosedError: the address does not resolve, nobody listens
            there, or the network refuses.
        QuicDistTimeoutError: not connected within ``timeout``.
    """
    config = config or TcpConfig()
    where = f"{host}:{port}"
    if timeout is not None and timeout <= 0:
        raise QuicDistTimeoutError(f"no time left to connect to {where}")
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:
        raise QuicDistTimeoutError(f"timed out connecting to {where}") from None
    except ConnectionRefusedError:
        raise ConnectionClosedError(f"nobody listens at {where} (connection refused)",
                                    initiated_locally=True) from None
    except OSError as exc:
        raise ConnectionClosedError(f"cannot connect to {where}: {exc}",
                                    initiated_locally=True) from exc
    try:
        _tune(sock, config)
        peer = sock.getpeername()
        connection = TcpConnection(sock, peer, is_client=True, config=config,
                                   name=name or where, on_event=on_event)
    except BaseException:
        sock.close()
        raise
    connection.start()
    return connection


class TcpListener(AcceptingListener[TcpConnection]):
    """Accept TCP distribution connections on ``host:port`` (port 0: any free port).

    Each accepted connection is passed to ``on_connection`` on its reader
    thread (before its first event), or queued for :meth:`accept`;
    ``on_event`` receives the events of every accepted connection. The
    listener starts at once; :meth:`stop` closes every connection it
    accepted, its thread and its socket.
    """

    _logger = logger

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        config: TcpConfig | None = None,
        on_connection: Callable[[TcpConnection], None] | None = None,
        on_event: TcpEventHandler | None = None,
        name: str = "listener",
    ) -> None:
        self.config = config or TcpConfig()
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        family, _, _, _, addr = infos[0]
        sock = socket.create_server(addr, family=family, backlog=128)
        try:
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        super().__init__(sock, name=name, on_connection=on_connection, on_event=on_event)
        #: Connections closed at once because too many handshakes were running.
        self.refused = 0
        self._start(f"quicdist-tcplisten-{self.port}")

    def __repr__(self) -> str:
        return f"<TcpListener {self.name} port={self.port}>"

    # ------------------------------------------------------ listener thread

    def _ready(self) -> None:
        while True:
            try:
                sock, addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of file descriptors: try again later
                logger.warning("listener %s: accept failed: %s", self.name, exc)
                return
            try:
                self._admit(sock, addr)
            except Exception:
                sock.close()
                logger.exception("listener %s: could not set up a connection", self.name)

    def _admit(self, sock: socket.socket, addr: Any) -> None:
        with self._lock:
            pending = sum(1 for c in self._connections if not c.framed)
            if self._stopping or pending >= self.config.max_pending_handshakes:
                if not self._stopping:
                    self.refused += 1
                sock.close()
                return
            sock.setblocking(True)
            _tune(sock, self.config)
            connection = TcpConnection(sock, addr, is_client=False, config=self.config,
                                       name=f"{self.name}<-{addr[0]}:{addr[1]}",
                                       on_event=self._event)
            self._connections.add(connection)
        connection.start()

    # ---------------------------------------------- called by reader threads

    def _terminated(self, connection: TcpConnection, event: ConnectionTerminated) -> None:
        with self._lock:
            self._connections.discard(connection)
