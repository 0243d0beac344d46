"""The listening side: one UDP socket, datagrams routed by connection ID.

A :class:`Listener` owns one UDP socket and one thread that reads it. Each
datagram goes to the connection its destination connection ID belongs to
(IDs are registered as connections issue and retire them); an Initial
packet with an unknown ID starts a new connection with its own I/O thread.
Connections send their datagrams on the shared socket themselves, or, once
their handshake is done, on a socket of their own connected to the peer
that the kernel also delivers the peer's datagrams to
(``CarrierConfig.connected_sockets``).
"""

from __future__ import annotations

import logging
import queue
import selectors
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

from aioquic._buffer import Buffer
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_version_negotiation,
    pull_quic_header,
)

from ..config import CarrierConfig
from ..errors import ConnectionClosedOK, QuicDistTimeoutError
from ..events import (
    CarrierEvent,
    ConnectionIdIssued,
    ConnectionIdRetired,
    ConnectionTerminated,
    HandshakeCompleted,
)
from ..protocol import CarrierConnection, CarrierProtocol
from ..tls import TLSConfig, quic_configuration
from .connection import Connection, EventHandler, tune_socket
from .udp import UdpIO, allow_connected_sockets, set_dont_fragment
from .utils import Wakeup


if TYPE_CHECKING:
    from ..tcp import TcpConnection

__all__ = ["AcceptingListener", "Listener"]

logger = logging.getLogger("quicdist.carrier")

_READ_BATCH = 256


C = TypeVar("C", bound="Connection | TcpConnection")


class AcceptingListener(Generic[C]):
    """What the QUIC :class:`Listener` and the :class:`~quicdist.tcp.TcpListener`
    share: the accepted connections, :meth:`accept`, :meth:`stop` and the
    listening thread that waits on the socket.

    A subclass builds its socket, calls ``__init__``, sets up its own state,
    then :meth:`_start`; it implements :meth:`_ready` (the socket is
    readable) and may extend :meth:`_terminated`.
    """

    _logger = logger

    def __init__(self, sock: socket.socket, *, name: str,
                 on_connection: Callable[[C], None] | None,
                 on_event: Callable[[C, CarrierEvent], None] | None) -> None:
        self._sock = sock
        try:
            self._wakeup = Wakeup()
        except BaseException:
            sock.close()
            raise
        self._on_connection = on_connection
        self._on_event = on_event
        self._accepted: queue.SimpleQueue[C] = queue.SimpleQueue()
        self.address: tuple[Any, ...] = sock.getsockname()
        self.name = name
        # Guards _connections and _stopping (and a subclass's routing state).
        self._lock = threading.Lock()
        self._connections: set[C] = set()
        self._stopping = False

    def _start(self, thread_name: str) -> None:
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.address[1])

    @property
    def connections(self) -> list[C]:
        """The connections this listener accepted that are still open."""
        with self._lock:
            return list(self._connections)

    def accept(self, timeout: float | None = None) -> C:
        """The next accepted connection (only without ``on_connection``)."""
        try:
            return self._accepted.get(timeout=timeout)
        except queue.Empty:
            raise QuicDistTimeoutError("timed out waiting for a connection") from None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every connection, then the socket; returns
        when the threads ended."""
        with self._lock:
            self._stopping = True
            connections = list(self._connections)
        for connection in connections:
            connection.close(reason="listener stopped", timeout=timeout)
        self._wakeup.wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------ listener thread

    def _ready(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        try:
            selector.register(self._sock, selectors.EVENT_READ)
            selector.register(self._wakeup, selectors.EVENT_READ)
            while not self._stopping:
                for key, _ in selector.select():
                    if key.fileobj is self._wakeup:
                        self._wakeup.drain()
                    else:
                        self._ready()
        except Exception:
            self._logger.exception("listener %s failed", self.name)
        finally:
            selector.close()
            with self._lock:
                self._stopping = True
                leftovers = list(self._connections)
            for connection in leftovers:
                connection.close(reason="listener stopped", timeout=0)
            for connection in leftovers:
                connection.join(5.0)
            self._sock.close()
            self._wakeup.close()

    # ------------------------------------- called by the connections' threads

    def _event(self, connection: C, event: CarrierEvent) -> None:
        if isinstance(event, HandshakeCompleted):
            if self._on_connection is not None:
                self._on_connection(connection)
            else:
                self._accepted.put(connection)
        elif isinstance(event, ConnectionTerminated):
            self._terminated(connection, event)
        if self._on_event is not None:
            self._on_event(connection, event)
        else:
            connection._events.put(event)

    def _terminated(self, connection: C, event: ConnectionTerminated) -> None:
        """An accepted connection ended (its thread, before ``on_event`` hears of it)."""


class Listener(AcceptingListener[Connection]):
    """Accept QUIC carrier connections on ``host:port`` (port 0: any free port).

    Established connections (TLS done) are passed to ``on_connection`` on
    their I/O thread, or queued for :meth:`accept`. ``on_event`` receives
    the events of every accepted connection (see :class:`Connection`).
    The listener starts at once; :meth:`stop` closes every connection it
    accepted, its thread and its socket.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tls: TLSConfig,
        config: CarrierConfig | None = None,
        on_connection: Callable[[Connection], None] | None = None,
        on_event: EventHandler | None = None,
        name: str = "listener",
    ) -> None:
        self.config = config or CarrierConfig()
        self._configuration = quic_configuration(
            tls, is_client=False, idle_timeout=self.config.idle_timeout,
            max_datagram_size=self.config.max_datagram_size,
            max_data=self.config.connection_window, max_stream_data=self.config.stream_window,
        )
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind(addr)
            sock.setblocking(False)
            tune_socket(sock)
            set_dont_fragment(sock)
            self._udp = UdpIO(sock, connected=False)
            #: where accepted connections bind their connected sockets (None: they do not)
            self._direct_addr = (allow_connected_sockets(sock) if self.config.connected_sockets
                                 else None)
        except BaseException:
            sock.close()
            raise
        super().__init__(sock, name=name, on_connection=on_connection, on_event=on_event)
        # Connection IDs -> connections, under _lock (the listener thread
        # reads it, I/O threads update it as connection IDs come and go).
        self._routes: dict[bytes, Connection] = {}
        #: Initial packets dropped because too many handshakes were in progress.
        self.dropped_initials = 0
        self._start(f"quicdist-listen-{self.port}")

    # ------------------------------------------------------ listener thread

    def _ready(self) -> None:
        for _ in range(_READ_BATCH // 16):
            try:
                datagrams = self._udp.recv(16)
            except OSError:
                continue  # e.g. an ICMP error for an earlier sendto
            if not datagrams:
                return
            for data, addr in datagrams:
                self._route(data, addr)

    def _route(self, data: bytes, addr: Any) -> None:
        try:
            header = pull_quic_header(
                Buffer(data=data), host_cid_length=self._configuration.connection_id_length)
        except ValueError:
            return  # not QUIC: ignore
        versions = self._configuration.supported_versions
        if (header.packet_type != QuicPacketType.VERSION_NEGOTIATION
                and header.version is not None and header.version not in versions):
            self._sock.sendto(encode_quic_version_negotiation(
                source_cid=header.destination_cid, destination_cid=header.source_cid,
                supported_versions=versions), addr)
            return
        with self._lock:
            connection = self._routes.get(header.destination_cid)
            if connection is None:
                if (self._stopping or header.packet_type != QuicPacketType.INITIAL
                        or len(data) < SMALLEST_MAX_DATAGRAM_SIZE):
                    return
                pending = sum(1 for c in self._connections if not c.established)
                if pending >= self.config.max_pending_handshakes:
                    self.dropped_initials += 1
                    return  # a flood of Initials: let the real ones retry
                connection = self._new_connection(header.destination_cid, addr)
        connection.deliver(data, addr)

    def _new_connection(self, original_cid: bytes, addr: Any) -> Connection:
        assert self._lock.locked()
        quic = CarrierConnection(configuration=self._configuration,
                                 original_destination_connection_id=original_cid)
        protocol = CarrierProtocol(quic, self.config)
        connection = Connection(protocol, self._sock, addr, owns_socket=False,
                                name=f"{self.name}<-{addr[0]}:{addr[1]}",
                                on_event=self._event, on_routes=self._routes_changed,
                                direct_addr=self._direct_addr)
        self._routes[original_cid] = connection
        self._routes[quic.host_cid] = connection
        self._connections.add(connection)
        connection.start()
        return connection

    # ------------------------------------------------- called by I/O threads

    def _routes_changed(self, connection: Connection, event: CarrierEvent) -> None:
        with self._lock:
            if isinstance(event, ConnectionIdIssued):
                self._routes[event.connection_id] = connection
            elif isinstance(event, ConnectionIdRetired):
                if self._routes.get(event.connection_id) is connection:
                    del self._routes[event.connection_id]
            elif isinstance(event, ConnectionTerminated):
                for cid in [c for c, conn in self._routes.items() if conn is connection]:
                    del self._routes[cid]
                self._connections.discard(connection)

    def _terminated(self, connection: Connection, event: ConnectionTerminated) -> None:
        if not isinstance(event.error, ConnectionClosedOK):
            logger.info("connection %s closed: %s", connection.name, event.error)
