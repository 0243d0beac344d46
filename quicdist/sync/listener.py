"""The listening side: one UDP socket, datagrams routed by connection ID.

A :class:`Listener` owns one UDP socket and one thread that reads it. Each
datagram goes to the connection its destination connection ID belongs to
(IDs are registered as connections issue and retire them); an Initial
packet with an unknown ID starts a new connection with its own I/O thread.
Connections send their datagrams on the shared socket themselves.
"""

from __future__ import annotations

import logging
import queue
import selectors
import socket
import threading
from collections.abc import Callable
from typing import Any

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
from .udp import UdpIO, set_dont_fragment
from .utils import Wakeup


__all__ = ["Listener"]

logger = logging.getLogger("quicdist.carrier")

_READ_BATCH = 256


class Listener:
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
        self._on_connection = on_connection
        self._on_event = on_event
        self._accepted: queue.SimpleQueue[Connection] = queue.SimpleQueue()
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
        family, _, _, _, addr = infos[0]
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._sock.bind(addr)
            self._sock.setblocking(False)
            tune_socket(self._sock)
            set_dont_fragment(self._sock)
            self._udp = UdpIO(self._sock, connected=False)
        except BaseException:
            self._sock.close()
            raise
        self.address: tuple[Any, ...] = self._sock.getsockname()
        self.name = name
        self._wakeup = Wakeup()
        # Guards _routes and _connections (the listener thread reads them,
        # I/O threads update them as connection IDs come and go).
        self._lock = threading.Lock()
        self._routes: dict[bytes, Connection] = {}
        self._connections: set[Connection] = set()
        self._stopping = False
        #: Initial packets dropped because too many handshakes were in progress.
        self.dropped_initials = 0
        self._thread = threading.Thread(target=self._run, name=f"quicdist-listen-{self.port}",
                                        daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.address[1])

    @property
    def connections(self) -> list[Connection]:
        """The connections this listener accepted that are still open."""
        with self._lock:
            return list(self._connections)

    def accept(self, timeout: float | None = None) -> Connection:
        """The next established connection (only without ``on_connection``)."""
        try:
            return self._accepted.get(timeout=timeout)
        except queue.Empty:
            raise QuicDistTimeoutError("timed out waiting for a connection") from None

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection, then the socket; returns when all threads ended."""
        with self._lock:
            self._stopping = True
            connections = list(self._connections)
        for connection in connections:
            connection.close(reason="listener stopped", timeout=timeout)
        self._wakeup.wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------ listener thread

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
                        self._read()
        except Exception:
            logger.exception("listener %s failed", self.name)
        finally:
            selector.close()
            with self._lock:
                self._stopping = True
                leftovers = list(self._connections)
            for connection in leftovers:
                connection.close(reason="listener stopped")
            for connection in leftovers:
                connection.join(5.0)
            self._sock.close()
            self._wakeup.close()

    def _read(self) -> None:
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
                                on_event=self._event, on_routes=self._routes_changed)
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

    def _event(self, connection: Connection, event: CarrierEvent) -> None:
        if isinstance(event, HandshakeCompleted):
            if self._on_connection is not None:
                self._on_connection(connection)
            else:
                self._accepted.put(connection)
        if isinstance(event, ConnectionTerminated) and not isinstance(
                event.error, ConnectionClosedOK):
            logger.info("connection %s closed: %s", connection.name, event.error)
        if self._on_event is not None:
            self._on_event(connection, event)
        else:
            connection._events.put(event)
