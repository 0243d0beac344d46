"""One carrier connection and the I/O thread that alone drives it.

A :class:`Connection` owns a :class:`~quicdist.protocol.CarrierProtocol`
(and through it the aioquic ``QuicConnection``). Its I/O thread is the only
thread that touches them: it reads datagrams (from its own socket when it
dialed, or from the listener that routed them to it), fires timers, runs
the commands user threads posted, pulls scheduled bytes out of the
outboxes, sends datagrams, and hands events to the layer above.

User threads never block the I/O thread: commands go through a queue and a
coalescing wake-up byte; bytes to send wait in bounded outboxes (the writer
blocks there, with a timeout); events are handed to a callback that must
not block, or queued for :meth:`Connection.next_event`.
"""

from __future__ import annotations

import logging
import queue
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from .._accel import TICK
from ..config import CarrierConfig
from ..errors import (
    ConnectionClosed,
    ConnectionClosedError,
    QuicDistTimeoutError,
    StreamClosed,
)
from ..events import (
    CarrierEvent,
    ConnectionIdIssued,
    ConnectionIdRetired,
    ConnectionTerminated,
    HandshakeCompleted,
)
from ..protocol import CarrierConnection, CarrierProtocol
from ..tls import TLSConfig, quic_configuration
from .outbox import FrameOutbox, StreamOutbox
from .udp import UdpIO, connected_socket, path_mtu_payload, set_dont_fragment
from .utils import Deadline, Wakeup


__all__ = ["Connection", "connect"]

logger = logging.getLogger("quicdist.carrier")

EventHandler = Callable[["Connection", CarrierEvent], None]

#: Datagrams read from a socket before the loop looks at anything else.
_READ_BATCH = 64
#: How long close() keeps sending the CONNECTION_CLOSE and waiting for the thread.
_CLOSE_TIMEOUT = 5.0


class Connection:
    """A QUIC carrier connection (thread-safe).

    Made by :func:`connect` (dialing) or by a
    :class:`~quicdist.sync.listener.Listener` (accepted); not constructed
    directly.

    Events (:mod:`quicdist.events`) go to ``on_event(connection, event)``,
    called on the I/O thread (it must not block), or, without a handler, to
    a queue read by :meth:`next_event`.
    """

    def __init__(
        self,
        protocol: CarrierProtocol,
        sock: socket.socket,
        peer: Any,
        *,
        owns_socket: bool,
        name: str,
        on_event: EventHandler | None = None,
        on_routes: Callable[[Connection, CarrierEvent], None] | None = None,
        direct_addr: Any = None,
    ) -> None:
        self.protocol = protocol
        self.peer = peer
        self.name = name
        self.is_client = protocol.is_client
        self._sock = sock
        self._owns_socket = owns_socket
        #: the socket this connection reads itself and closes: its own when
        #: it dialed; for an accepted one, the connected socket it may get
        #: once the handshake is done (direct_addr, :meth:`_go_direct`).
        self._own_sock: socket.socket | None = sock if owns_socket else None
        self._direct_addr = direct_addr
        self._on_event = on_event
        self._on_routes = on_routes
        self._events: queue.SimpleQueue[CarrierEvent] = queue.SimpleQueue()
        self._wakeup = Wakeup()
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._inbound: queue.SimpleQueue[tuple[bytes, Any]] = queue.SimpleQueue()
        self._ready: queue.SimpleQueue[int] = queue.SimpleQueue()
        # Guards _closing against concurrent _post(): a command is either
        # queued before the close is decided, or refused.
        self._lock = threading.Lock()
        self._closing = False
        self._close_error: ConnectionClosed | None = None
        self._handshake = threading.Event()
        # Set once the handshake either completed or can no longer complete.
        self._settled = threading.Event()
        self._stream_outboxes: dict[int, StreamOutbox] = {}
        # Guards _consumed (credit gathered from reader threads).
        self._consume_lock = threading.Lock()
        self._consumed: dict[int, int] = {}
        self._consume_step = max(protocol.config.stream_window // 8, 1)
        # Datagrams the kernel had no room for yet (I/O thread only): they are
        # sent first, as soon as the socket is writable, before any new ones.
        self._backlog: deque[tuple[bytes, Any]] = deque()
        self._selector: selectors.BaseSelector | None = None
        self._want_writable = False
        self._udp = UdpIO(sock, connected=owns_socket, peer=peer, gro=owns_socket)
        #: the listener's socket, once the connection has its own (sends to
        #: an address other than the peer's, after a migration, go there).
        self._shared_udp: UdpIO | None = None
        config = protocol.config
        self.dist_outbox = FrameOutbox(config.send_buffer,
                                       lambda: self._mark_ready(protocol.dist_stream))
        self._thread = threading.Thread(target=self._run, name=f"quicdist-io-{name}", daemon=True)

    # ------------------------------------------------------------ user side

    def start(self) -> None:
        """Start the I/O thread (once)."""
        self._thread.start()

    @property
    def closed(self) -> ConnectionClosed | None:
        """Why the connection is closed, or None while it is open."""
        return self._close_error

    @property
    def established(self) -> bool:
        """Whether the QUIC and TLS handshake completed."""
        return self._handshake.is_set()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def wait_handshake(self, timeout: float | None) -> None:
        """Block until QUIC and TLS are up; raise the close error if they never are."""
        if not self._settled.wait(timeout):
            raise QuicDistTimeoutError("timed out waiting for the QUIC handshake")
        if not self._handshake.is_set():
            assert self._close_error is not None
            raise self._close_error

    def send_control(self, data: bytes, timeout: float | None = 10.0) -> None:
        """Send one control-stream message (a handshake message or a tick).

        Each call leaves in its own STREAM frame (PROTOCOL.md §3). Waits for
        the I/O thread to accept it, so a refusal (LocalProtocolError: the
        accepting side may not write before the dialer opened stream 0;
        ConnectionClosed) reaches the caller.
        """
        payload = bytes(data)
        self._call(lambda: self.protocol.send_control(payload), timeout)

    def send_dist(self, payload: bytes, timeout: float | None = None) -> None:
        """Queue one distribution message; blocks while the send buffer is full."""
        self._check_open()
        self.dist_outbox.put(payload, timeout)

    def open_stream(self, priority: int = 128, timeout: float | None = 10.0
                    ) -> tuple[int, StreamOutbox]:
        """Open a user stream; returns its id and the outbox to write to."""
        outbox_box: list[StreamOutbox] = []

        def open_() -> int:
            outbox = StreamOutbox(self.protocol.config.send_buffer, lambda: None)
            stream_id = self.protocol.open_user_stream(outbox, priority)
            outbox._notify = lambda: self._mark_ready(stream_id)
            self._stream_outboxes[stream_id] = outbox
            outbox_box.append(outbox)
            return stream_id

        stream_id = self._call(open_, timeout)
        return stream_id, outbox_box[0]

    def stream_outbox(self, stream_id: int, priority: int = 128,
                      timeout: float | None = 10.0) -> StreamOutbox:
        """The outbox of a stream the peer opened (made on first use)."""
        def attach() -> StreamOutbox:
            outbox = self._stream_outboxes.get(stream_id)
            if outbox is None:
                outbox = StreamOutbox(self.protocol.config.send_buffer,
                                      lambda: self._mark_ready(stream_id))
                self.protocol.set_outbox(stream_id, outbox, priority)
                self._stream_outboxes[stream_id] = outbox
            return outbox

        outbox: StreamOutbox = self._call(attach, timeout)
        return outbox

    def consume(self, stream_id: int, nbytes: int, final: bool = False) -> None:
        """Tell the peer it may send ``nbytes`` more on a user stream (credit).

        Small amounts are gathered here and handed to the I/O thread once
        they reach an eighth of the stream window (the protocol only
        announces credit in quarter-window steps anyway), so reading in
        small pieces costs no wake-up per read. ``final`` says the
        application is done with the stream (it read or dropped the last of
        its bytes): what was gathered goes out now, and the stream's entry
        here is forgotten. Every byte a user stream delivered must be
        consumed once, read or dropped: the connection's credit counts them.
        """
        with self._consume_lock:
            pending = self._consumed.pop(stream_id, 0) + nbytes
            if pending < self._consume_step and not final:
                self._consumed[stream_id] = pending
                return
        if pending > 0:
            self._post(lambda: self.protocol.consume(stream_id, pending), quiet=True)

    def release_stream(self, stream_id: int, unread: int = 0) -> None:
        """The application is done with a user stream: it will neither write
        nor read it any more (closed both ways, or reset).

        ``unread`` bytes it received and dropped are consumed with what was
        gathered (:meth:`consume`), and the stream's outbox is forgotten
        (what it still holds, such as a FIN, is still sent).
        """
        self.consume(stream_id, unread, final=True)

        def forget() -> None:
            self._stream_outboxes.pop(stream_id, None)

        self._post(forget, quiet=True)

    def reset_stream(self, stream_id: int, code: int = 0) -> None:
        """Abort a user stream in both directions with ``code``."""
        self._post(lambda: self._reset(stream_id, code), quiet=True)

    def ping(self) -> None:
        """Send a QUIC PING now."""
        self._post(self.protocol.ping)

    def send_tick(self) -> None:
        """A distribution tick (4 zero bytes on stream 0) and a QUIC PING (PROTOCOL.md §5).

        Never blocks; does nothing once the connection is closing.
        """
        protocol = self.protocol

        def tick() -> None:  # one command, one wake-up
            protocol.ping()
            protocol.send_control(TICK)

        self._post(tick, quiet=True)

    @property
    def last_received(self) -> float | None:
        """``time.monotonic()`` of the last datagram from the peer (None: none yet)."""
        return self.protocol.last_received

    def next_event(self, timeout: float | None = None) -> CarrierEvent:
        """The next event (only without an ``on_event`` handler).

        Raises QuicDistTimeoutError when none arrives in time.
        """
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            raise QuicDistTimeoutError("timed out waiting for a carrier event") from None

    def close(self, error_code: int = 0, reason: str = "", timeout: float | None = _CLOSE_TIMEOUT
              ) -> None:
        """Close the connection and wait (up to ``timeout``) for its thread to end.

        Idempotent. Safe to call from the I/O thread itself (then it does
        not wait).
        """
        with self._lock:
            first = not self._closing
            self._closing = True
            if first:
                self._commands.put(lambda: self.protocol.close(error_code, reason))
        self._wakeup.wake()
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            self._thread.join(timeout)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the I/O thread to end; True if it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._close_error else "open"
        return f"<Connection {self.name} {'client' if self.is_client else 'server'} {state}>"

    # ------------------------------------------------------------- plumbing

    def _check_open(self) -> None:
        if self._close_error is not None:
            raise self._close_error

    def _post(self, command: Callable[[], None], quiet: bool = False) -> None:
        with self._lock:
            if self._closing or self._close_error is not None:
                if quiet:
                    return
                raise self._close_error or ConnectionClosedError(
                    "connection is closing", initiated_locally=True)
            self._commands.put(command)
        if threading.current_thread() is not self._thread:
            self._wakeup.wake()

    def _call(self, fn: Callable[[], Any], timeout: float | None) -> Any:
        if threading.current_thread() is self._thread:
            # An event handler on the I/O thread: it owns the protocol, run now.
            self._check_open()
            return fn()
        future: Future[Any] = Future()

        def run() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:
                    future.set_exception(exc)

        self._post(run)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise QuicDistTimeoutError("timed out waiting for the I/O thread") from None

    def _mark_ready(self, stream_id: int) -> None:
        self._ready.put(stream_id)
        if threading.current_thread() is not self._thread:
            self._wakeup.wake()

    def deliver(self, data: bytes, addr: Any) -> None:
        """A datagram routed here by the listener (listener thread)."""
        self._inbound.put((data, addr))
        self._wakeup.wake()

    def _reset(self, stream_id: int, code: int) -> None:
        outbox = self._stream_outboxes.pop(stream_id, None)
        self.protocol.reset_stream(stream_id, code)
        if outbox is not None:
            outbox.fail(StreamClosed(f"stream {stream_id} was reset locally", stream_id))

    # ------------------------------------------------------------ I/O thread

    def _run(self) -> None:
        protocol = self.protocol
        selector = self._selector = selectors.DefaultSelector()
        try:
            selector.register(self._wakeup, selectors.EVENT_READ)
            if self._owns_socket:
                self._sock.setblocking(False)
                tune_socket(self._sock)
                set_dont_fragment(self._sock)
                selector.register(self._sock, selectors.EVENT_READ)
                protocol.connect(self.peer, time.monotonic())
            if protocol.config.pmtu_discovery:
                protocol.set_path_mtu(path_mtu_payload(self._sock.family, self.peer))
            inbound_empty = self._inbound.empty
            ready = self._ready
            commands = self._commands
            backlog = self._backlog
            timer = protocol.get_timer()
            while True:
                now = time.monotonic()
                wait = None if timer is None else max(timer - now, 0.0)
                if not (ready.empty() and commands.empty()):
                    wait = 0.0  # work queued from this thread (no wake-up byte)
                readable = False
                for key, mask in selector.select(wait):
                    if key.fileobj is self._wakeup:
                        self._wakeup.drain()
                    elif mask & selectors.EVENT_READ:
                        readable = True
                now = time.monotonic()
                # Only what changed the connection's state can give aioquic
                # something to send; an iteration with none of it (a wake-up
                # whose command was already run, an early timer) skips the
                # costly datagrams_to_send().
                work = readable and self._read_socket(now)
                if not inbound_empty():
                    self._drain_inbound(now)
                    work = True
                if timer is not None and now >= timer:
                    protocol.handle_timer(now)
                    work = True
                # Events first: what handlers send in answer (on this thread)
                # leaves in this very iteration.
                if self._dispatch(protocol.next_events()):
                    work = True
                if not commands.empty():
                    self._run_commands()
                    work = True
                if not ready.empty():
                    self._drain_ready()
                    work = True
                if work or backlog:
                    self._transmit(now)
                    self._dispatch(protocol.next_events())
                if protocol.closed is not None:
                    self._transmit(time.monotonic())
                    break
                timer = protocol.get_timer()
        except BaseException as exc:  # a bug: report it once, fail everything cleanly
            logger.error("I/O thread of %s failed", self.name, exc_info=True)
            error = ConnectionClosedError(f"I/O thread failed: {exc!r}", initiated_locally=True)
            error.__cause__ = exc
            self._terminate(error)
        finally:
            if self._close_error is None:
                self._terminate(protocol.closed or ConnectionClosedError(
                    "connection ended", initiated_locally=True))
            selector.close()
            with self._lock:
                self._closing = True
            self._wakeup.close()
            if self._own_sock is not None:
                self._own_sock.close()

    def _read_socket(self, now: float) -> bool:
        """Feed what the socket holds (a batch); True if anything happened."""
        protocol = self.protocol
        try:
            datagrams = self._udp.recv(_READ_BATCH)
        except ConnectionRefusedError:
            # ICMP port unreachable: nobody listens there. Before the
            # handshake that is a failed dial; afterwards loss handling and
            # the idle timeout decide.
            if not protocol.handshake_complete:
                protocol.close(0x1, "peer unreachable (ICMP port unreachable)")
                self._terminate(ConnectionClosedError(
                    f"nobody listens at {self.peer} (ICMP port unreachable)",
                    initiated_locally=True))
            return True
        for data, addr in datagrams:
            protocol.receive_datagram(data, addr, now)
        return bool(datagrams)

    def _drain_inbound(self, now: float) -> None:
        inbound = self._inbound
        protocol = self.protocol
        while True:
            try:
                data, addr = inbound.get_nowait()
            except queue.Empty:
                return
            protocol.receive_datagram(data, addr, now)

    def _run_commands(self) -> None:
        commands = self._commands
        while True:
            try:
                command = commands.get_nowait()
            except queue.Empty:
                return
            try:
                command()
            except ConnectionClosed:
                pass  # the protocol is closed; the command's caller was told or will be
            except Exception:
                logger.exception("command failed on %s", self.name)

    def _drain_ready(self) -> None:
        ready = self._ready
        protocol = self.protocol
        while True:
            try:
                stream_id = ready.get_nowait()
            except queue.Empty:
                return
            protocol.outbox_ready(stream_id)

    def _transmit(self, now: float) -> None:
        # Datagrams that did not fit in the socket buffer go first; while any
        # wait, no new ones are made (aioquic counts them in flight already:
        # dropping them would look like loss and stall on the PTO timer).
        backlog = self._backlog
        if backlog:
            self._send_backlog()
        if not backlog:
            # One call gives all that congestion control allows now; asking
            # again at once would only build (and drop) an empty packet.
            backlog.extend(self.protocol.datagrams_to_send(now))
            if backlog:
                self._send_backlog()
        want = bool(backlog)
        if want != self._want_writable:
            self._want_writable = want
            self._update_selector(want)

    def _send_backlog(self) -> None:
        udp = self._udp
        backlog = self._backlog
        if self._shared_udp is not None and (backlog[0][1] != self.peer
                                             or backlog[-1][1] != self.peer):
            udp = self._shared_udp  # (the connected socket only reaches the peer)
        udp.send(backlog)
        if udp.too_big:
            udp.too_big = False
            self.protocol.path_mtu_exceeded()
            self.protocol.set_path_mtu(path_mtu_payload(self._sock.family, self.peer))

    def _update_selector(self, want_write: bool) -> None:
        selector = self._selector
        if selector is None:
            return
        if self._own_sock is not None:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want_write else 0)
            selector.modify(self._own_sock, events)
        elif want_write:
            selector.register(self._sock, selectors.EVENT_WRITE)
        else:
            selector.unregister(self._sock)

    def _dispatch(self, events: list[CarrierEvent]) -> bool:
        """Hand ``events`` on; True if there were any."""
        for event in events:
            if isinstance(event, HandshakeCompleted):
                self.protocol.set_outbox(self.protocol.dist_stream, self.dist_outbox, 1)
                if self._direct_addr is not None:
                    self._go_direct()
                self._handshake.set()
                self._settled.set()
            elif isinstance(event, ConnectionIdIssued | ConnectionIdRetired):
                if self._on_routes is not None:
                    self._on_routes(self, event)
                continue
            elif isinstance(event, ConnectionTerminated):
                self._terminate(event.error)
            if self._on_event is not None:
                try:
                    self._on_event(self, event)
                except Exception:
                    logger.exception("event handler failed on %s for %r", self.name, event)
            else:
                self._events.put(event)
        return bool(events)

    def _go_direct(self) -> None:
        """An accepted connection takes its peer's datagrams on a connected
        socket of its own from now on (CarrierConfig.connected_sockets).

        I/O thread only. On failure nothing changes: the listener keeps
        routing, as it does for whatever still reaches its socket.
        """
        local, self._direct_addr = self._direct_addr, None
        selector = self._selector
        if selector is None:
            return
        try:
            sock = connected_socket(self._sock.family, local, self.peer)
        except (OSError, ValueError) as exc:
            logger.debug("%s: no connected socket (%s); the listener routes", self.name, exc)
            return
        tune_socket(sock)
        set_dont_fragment(sock)
        if self._want_writable:  # the shared socket was watched for room
            selector.unregister(self._sock)
            self._want_writable = False
        selector.register(sock, selectors.EVENT_READ)
        self._own_sock = sock
        self._shared_udp = self._udp
        self._udp = UdpIO(sock, connected=True, peer=self.peer)

    def _terminate(self, error: ConnectionClosed) -> None:
        if self._close_error is not None:
            return
        self._close_error = error
        self._settled.set()
        self.dist_outbox.fail(error)
        for outbox in self._stream_outboxes.values():
            outbox.fail(error)
        if self._on_routes is not None:
            self._on_routes(self, ConnectionTerminated(error))


def tune_socket(sock: socket.socket, size: int = 4 * 1024 * 1024) -> None:
    """Ask for large socket buffers (the kernel caps them at net.core.[rw]mem_max)."""
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
        except OSError:
            pass


def connect(
    host: str,
    port: int,
    *,
    tls: TLSConfig,
    config: CarrierConfig | None = None,
    timeout: float | None = 10.0,
    on_event: EventHandler | None = None,
    name: str | None = None,
) -> Connection:
    """Dial ``host:port`` over QUIC and wait for the TLS handshake.

    The connection gets its own UDP socket and I/O thread.

    Raises:
        OSError: the address cannot be resolved or the socket not opened.
        CertificateError / TLSHandshakeError: TLS refused (both sides know why).
        ConnectionClosedError: nobody answers (ICMP unreachable) or the peer closed.
        QuicDistTimeoutError: no handshake within ``timeout``.
    """
    config = config or CarrierConfig()
    deadline = Deadline(timeout)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.connect(addr)
        configuration = quic_configuration(
            tls, is_client=True, idle_timeout=config.idle_timeout,
            max_datagram_size=config.max_datagram_size,
            max_data=config.connection_window, max_stream_data=config.stream_window,
        )
        quic = CarrierConnection(configuration=configuration)
        protocol = CarrierProtocol(quic, config)
        connection = Connection(protocol, sock, addr, owns_socket=True,
                                name=name or f"{host}:{port}", on_event=on_event)
    except BaseException:
        sock.close()
        raise
    connection.start()
    try:
        wait = deadline.timeout()
        connection.wait_handshake(config.handshake_timeout if wait is None
                                  else min(wait, config.handshake_timeout))
    except BaseException:
        connection.close(reason="handshake failed")
        raise
    return connection
