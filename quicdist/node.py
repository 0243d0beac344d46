"""The distribution node: connections, handshakes, processes, links, monitors, ticks.

A :class:`Node` is a Python program's membership in an Erlang cluster. It
listens for QUIC carrier connections (:mod:`quicdist.sync`), dials peers it
is asked to reach, runs the distribution handshake (:mod:`quicdist.handshake`)
on stream 0 of each connection, and then exchanges distribution messages
(:mod:`quicdist.dist`) with the peer.

Threads
=======
Each connection has its own I/O thread (the carrier's). Everything a peer
sends is handled there: the handshake, and then each control message, which
at most appends to a mailbox queue or queues a reply; nothing on an I/O
thread ever waits for a user thread or for another connection. Replies sent
from an I/O thread skip the send-buffer limit instead of blocking (a peer
that keeps asking without reading its answers is disconnected once eight
buffers' worth are waiting).

User threads call the public methods; sends block while the connection's
send buffer is full (Erlang suspends a sender on a busy distribution port
the same way), up to ``send_timeout``. One more thread, the ticker, sends
the liveness ticks and declares silent peers down (PROTOCOL.md §5); rpc
calls from peers run on a small worker pool.

Semantics
=========
Messages between two processes travel on one stream, in order, and none is
lost while the connection lives. A message to a process on a node that is
not connected connects first (blocking the sender up to
``connect_timeout``); if that fails the message is dropped, as Erlang drops
it, unless the caller asked to be told (``raise_nodedown=True``). Local
sends hand the Python object itself to the receiver (no copy).

Mailboxes always trap exits: exit signals arrive as ``('EXIT', From,
Reason)`` messages, except an ``exit(Pid, kill)`` from a peer, which ends
the mailbox with reason ``killed`` as it ends any Erlang process.
"""

from __future__ import annotations

import itertools
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from . import dist, erpc
from .config import CarrierConfig
from .discovery import Discovery, default_discovery
from .epmd import EpmdClient, EpmdRegistration, tcp_discovery
from .errors import (
    CallError,
    ConfigurationError,
    ConnectionClosed,
    DiscoveryError,
    EncodeError,
    HandshakeError,
    NodeDown,
    NoProc,
    NotConnected,
    QuicDistError,
    QuicDistTimeoutError,
    RpcError,
)
from .events import (
    CarrierEvent,
    ConnectionTerminated,
    ControlData,
    DistFrames,
    HandshakeCompleted,
    UserStreamData,
    UserStreamReset,
    UserStreamStopped,
)
from .flags import QUICDIST_FLAGS, DistFlag
from .gen import GEN_CALL, GEN_CAST, parse_call
from .handshake import Handshake, valid_node_name
from .mailbox import DEFAULT_MAX_MESSAGES, DOWN, EXIT, PROCESS, Mailbox
from .streams import STREAM_REFUSED, Acceptor, StreamManager, StreamRef, check_priority
from .sync.connection import Connection, connect as carrier_connect
from .sync.listener import Listener
from .sync.utils import Deadline
from .tcp import TcpConfig, TcpConnection, TcpListener, carrier_config, tcp_connect
from .terms import Atom, Pid, Reference
from .tls import TLSConfig, VerifyMode


__all__ = ["STREAM_REFUSED", "Node"]

logger = logging.getLogger("quicdist.node")

#: Registered names the node itself serves (never user-registrable).
SYSTEM_NAMES = frozenset({"net_kernel", "rex", "global_name_server", "code_server",
                          "erl_prim_loader", "init", "user"})

_NOPROC = Atom("noproc")
_NOCONNECTION = Atom("noconnection")
_KILL = Atom("kill")
_KILLED = Atom("killed")
_SHUTDOWN = Atom("shutdown")
_YES = Atom("yes")
_BADRPC = Atom("badrpc")
_EXIT_TAG = Atom("EXIT")
_ERROR = Atom("error")
_NOT_SUPPORTED = Atom("not_supported")

# Bytes queued past the send-buffer limit by an I/O thread's own replies,
# as a multiple of the limit, before the peer is dropped for not reading.
_FORCED_SLACK = 8
# Bytes of distribution frames a dialer keeps while the listener's
# challenge_ack is in flight (they may overtake it on another stream).
_MAX_EARLY_BYTES = 4 * 1024 * 1024
# How long a handshake that failed with a farewell message stays open so
# the farewell reaches the peer.
_FAREWELL_GRACE = 1.0

_io_thread = threading.local()


def _on_io_thread() -> bool:
    return bool(getattr(_io_thread, "active", False))


class _Conn:
    """One carrier connection to (or from) a peer node, and its handshake."""

    def __init__(self, role: str, peer_name: str | None = None) -> None:
        self.role = role
        self.peer_name = peer_name
        self.connection: Connection | TcpConnection | None = None
        self.handshake: Handshake | None = None
        #: connecting (QUIC) -> handshaking -> up -> closed; or failing -> closed
        self.state = "connecting"
        self.cancelled = False
        self.early: list[CarrierEvent] = []
        self.early_bytes = 0
        #: the name a dialer gave in its send_name (for logs; not yet proven)
        self.claimed_name: str | None = None
        self.started = time.monotonic()
        self.up_since = 0.0
        self.last_tick = 0.0
        self.close_at = 0.0

    def close(self, reason: str) -> None:
        """Close without waiting (any thread)."""
        if self.connection is not None:
            self.connection.close(reason=reason, timeout=0)

    def __repr__(self) -> str:
        return f"<_Conn {self.role} {self.peer_name} {self.state}>"


@dataclass
class _Monitor:
    """A monitor where at least one side is local.

    ``watcher`` is the monitoring pid, ``target`` what it named (a Pid, or an
    Atom name), ``node`` the target's node, ``local_target`` the local pid
    watched (None when the target is remote or a system name).
    """

    watcher: Pid
    target: Pid | Atom
    node: str
    local_target: Pid | None

    def down_object(self) -> Any:
        if isinstance(self.target, Pid):
            return self.target
        return (self.target, Atom(self.node))


class Node:
    """A node of an Erlang cluster, carried over QUIC (or, with ``carrier="tcp"``,
    over standard, unencrypted Erlang TCP distribution).

    Args:
        name: this node's name, ``alive@host``.
        cookie: the cluster's shared secret (str, encoded Latin-1, or bytes).
        port: port to listen on (0: any free port; :attr:`port` tells);
            default 4433 (UDP) for QUIC, any free TCP port for TCP.
        host: address to listen on.
        certfile, keyfile, cafile, verify: the node's TLS identity and how
            peers are checked (see :class:`quicdist.tls.TLSConfig`);
            certfile and keyfile are required for QUIC. With
            ``carrier="tcp"`` there is no TLS (plain Erlang TCP
            distribution is unencrypted) and giving any of them is a
            ConfigurationError.
        nodes: static discovery table ``{node_name: (host, port)}`` (for
            TCP: the peer's TCP port; epmd is then not asked).
        discovery: any object with ``lookup(node_name) -> (host, port)``;
            tried after ``nodes``, then QUIC tries DNS SRV and the
            ``host:4433`` fallback (:func:`quicdist.discovery.default_discovery`),
            TCP the epmd on the node's host (:func:`quicdist.epmd.tcp_discovery`).
        net_ticktime: seconds of silence after which a peer is declared
            down; a tick goes out every quarter of it.
        hidden: do not advertise this node as visible (like ``erl -hidden``).
        connect_timeout: how long a connection attempt (discovery, QUIC,
            TLS, handshake) may take.
        send_timeout: how long a send waits for room in a full send
            buffer (None: until the connection closes).
        max_messages: default bound of a mailbox's queue.
        carrier: ``"quic"`` (the default) or a :class:`CarrierConfig` for
            QUIC; ``"tcp"`` or a :class:`quicdist.tcp.TcpConfig` for standard
            Erlang distribution over TCP: epmd registration and lookup,
            2-byte framed handshake, 4-byte framed messages, no encryption
            (:mod:`quicdist.tcp`). User streams need QUIC.
        dns: try DNS SRV in discovery (QUIC only).
        rpc_workers: threads that run rpc calls from peers.
        creation: this incarnation's 32-bit creation (default: random).

    Raises:
        ConfigurationError: an invalid name, cookie, certificate or setting.
    """

    def __init__(
        self,
        name: str,
        *,
        cookie: str | bytes,
        port: int | None = None,
        host: str = "0.0.0.0",
        certfile: str | None = None,
        keyfile: str | None = None,
        cafile: str | None = None,
        verify: VerifyMode = "verify_none",
        nodes: Mapping[str, tuple[str, int]] | None = None,
        discovery: Discovery | None = None,
        net_ticktime: float = 60.0,
        hidden: bool = False,
        connect_timeout: float = 7.0,
        send_timeout: float | None = None,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        carrier: CarrierConfig | TcpConfig | str | None = None,
        dns: bool = True,
        rpc_workers: int = 8,
        creation: int | None = None,
    ) -> None:
        if not isinstance(name, str) or not valid_node_name(name):
            raise ConfigurationError(f"invalid node name {name!r} (expected alive@host)")
        if isinstance(cookie, str):
            try:
                cookie = cookie.encode("latin-1")
            except UnicodeEncodeError:
                raise ConfigurationError("the cookie must be Latin-1 text or bytes") from None
        if not isinstance(cookie, bytes) or not cookie:
            raise ConfigurationError("the cookie must be a non-empty str or bytes")
        if port is not None and (not isinstance(port, int) or not 0 <= port <= 65535):
            raise ConfigurationError(f"port must be in 0..65535, got {port!r}")
        for what, value in (("net_ticktime", net_ticktime), ("connect_timeout", connect_timeout)):
            if not isinstance(value, int | float) or value <= 0:
                raise ConfigurationError(f"{what} must be a positive number, got {value!r}")
        if send_timeout is not None and send_timeout < 0:
            raise ConfigurationError("send_timeout must be None or >= 0")
        if not isinstance(max_messages, int) or max_messages < 1:
            raise ConfigurationError("max_messages must be a positive int")
        if not isinstance(rpc_workers, int) or rpc_workers < 1:
            raise ConfigurationError("rpc_workers must be a positive int")
        if creation is None:
            creation = secrets.randbelow(0xFFFFFFFF - 4) + 4
        elif not isinstance(creation, int) or not 0 < creation <= 0xFFFFFFFF:
            raise ConfigurationError("creation must be in 1..2**32-1")
        self.name = name
        self.creation = creation
        self._cookie = cookie
        config = carrier_config(carrier)
        #: ``"quic"`` or ``"tcp"``.
        self.carrier = "tcp" if isinstance(config, TcpConfig) else "quic"
        self._tls: TLSConfig | None = None
        self._tcp: TcpConfig | None = None
        self._epmd: EpmdRegistration | None = None
        self._epmd_retry = 0.0
        if isinstance(config, TcpConfig):
            if certfile or keyfile or cafile or verify != "verify_none":
                raise ConfigurationError(
                    "carrier='tcp' is plain (unencrypted) Erlang TCP distribution: "
                    "certfile, keyfile, cafile and verify do not apply")
            self._tcp = config
            self._carrier = CarrierConfig()
            self._bind = (host, 0 if port is None else port)
            self._discovery: Discovery = tcp_discovery(
                nodes, discovery, epmd=config.epmd, epmd_port=config.epmd_port,
                epmd_timeout=config.epmd_timeout)
        else:
            if not certfile or not keyfile:
                raise ConfigurationError("the QUIC carrier needs certfile and keyfile "
                                         "(carrier='tcp' runs without TLS)")
            self._tls = TLSConfig(certfile, keyfile, cafile, verify)
            self._carrier = config
            self._bind = (host, 4433 if port is None else port)
            self._discovery = default_discovery(nodes, discovery, dns=dns)
        self.net_ticktime = float(net_ticktime)
        self.hidden = hidden
        self.connect_timeout = float(connect_timeout)
        self.send_timeout = send_timeout
        self.max_messages = max_messages
        # SPAWN: rpc:call / erpc from Erlang arrive as spawn requests (quicdist.erpc).
        flags = QUICDIST_FLAGS | DistFlag.ALIAS | DistFlag.SPAWN
        if not hidden:
            flags |= DistFlag.PUBLISHED
        self._flags = int(flags)

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._state = "new"  # new -> running -> stopped
        self._listener: Listener | TcpListener | None = None
        self._ticker: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._workers = _WorkerPool(rpc_workers, f"quicdist-rpc-{name}")
        # User streams and acceptor pools (quicdist.streams).
        self._streams = StreamManager(self)
        # Connections, keyed by peer node name where known.
        self._up: dict[str, _Conn] = {}
        self._dialing: dict[str, _Conn] = {}
        self._accepting: dict[str, _Conn] = {}
        self._accepted: dict[Connection | TcpConnection, _Conn] = {}
        self._all: set[_Conn] = set()
        self._nok_until: dict[str, float] = {}
        self._last_error: dict[str, BaseException] = {}
        # Processes.
        self._mailboxes: dict[Pid, Mailbox] = {}
        self._names: dict[str, Mailbox] = {}
        self._links: dict[Pid, set[Pid]] = {}
        self._unlinking: dict[tuple[Pid, Pid], int] = {}
        self._monitors: dict[Reference, _Monitor] = {}
        self._watched_by: dict[Pid, set[Reference]] = {}
        self._aliases: dict[Reference, Pid] = {}
        self._modules: dict[str, dict[str, Callable[..., Any]]] = {}
        self._pid_ids = itertools.count(1)
        self._ref_ids = itertools.count(1)
        self._unlink_ids = itertools.count(1)
        # The pid that sends on behalf of the node itself (node.send, system replies).
        self._node_pid = self._make_pid()

    # ------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        """The port the node listens on (UDP for QUIC, TCP for TCP; once started)."""
        if self._listener is None:
            return self._bind[1]
        return self._listener.port

    @property
    def running(self) -> bool:
        return self._state == "running"

    def start(self) -> Node:
        """Start listening and ticking. Returns the node (for chaining).

        A TCP node also registers in the epmd of its host (EpmdError, a
        DiscoveryError, if epmd is not running or the name is taken; the
        node is then not started).
        """
        with self._lock:
            if self._state != "new":
                raise ConfigurationError(f"node {self.name} was already {self._state}")
            host, port = self._bind
            if self._tcp is not None:
                self._listener = TcpListener(host, port, config=self._tcp,
                                             on_connection=self._accepted_connection,
                                             on_event=self._listener_event, name=self.name)
                if self._tcp.epmd:
                    try:
                        self._epmd = self._epmd_register()
                    except BaseException:
                        self._listener.stop()
                        self._listener = None
                        raise
            else:
                assert self._tls is not None
                self._listener = Listener(host, port, tls=self._tls, config=self._carrier,
                                          on_connection=self._accepted_connection,
                                          on_event=self._listener_event, name=self.name)
            self._state = "running"
            self._ticker = threading.Thread(target=self._tick_loop, daemon=True,
                                            name=f"quicdist-ticker-{self.name}")
            self._ticker.start()
        logger.info("node %s listening on %s port %d", self.name,
                    "TCP" if self._tcp is not None else "UDP", self.port)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection and end every thread of the node. Idempotent.

        Mailboxes exit with reason ``shutdown`` (their receivers wake up
        with :class:`MailboxClosed`); peers see the connection close.
        """
        with self._lock:
            if self._state != "running":
                self._state = "stopped"
                return
            self._state = "stopped"
            conns = list(self._all)
            mailboxes = list(self._mailboxes.values())
            self._cond.notify_all()
        self._stop_event.set()
        self._streams.stop()  # blocked stream calls wake with NodeDown
        if self._epmd is not None:
            self._epmd.close()  # epmd forgets the name at once
        for c in conns:
            c.close("node stopped")
        if self._listener is not None:
            self._listener.stop(timeout)
        deadline = Deadline(timeout)
        for c in conns:
            if c.connection is not None:
                c.connection.join(deadline.timeout())
        if self._ticker is not None and self._ticker is not threading.current_thread():
            self._ticker.join(deadline.timeout())
        for mailbox in mailboxes:
            mailbox._mark_exited(_SHUTDOWN)
        self._workers.stop(deadline.timeout())
        logger.info("node %s stopped", self.name)

    def __enter__(self) -> Node:
        if self._state == "new":
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Node {self.name} port={self.port} {self._state}>"

    # ---------------------------------------------------------- connections

    def nodes(self) -> list[str]:
        """The names of the connected peer nodes."""
        with self._lock:
            return sorted(self._up)

    def connect(self, peer: str, timeout: float | None = None) -> bool:
        """Connect to ``peer`` (``net_kernel:connect_node`` semantics).

        Returns True once the connection is up (at once if it already is),
        False if it cannot be made within ``timeout`` (default
        ``connect_timeout``); :meth:`connection_error` says why.
        """
        if peer == self.name:
            return True
        try:
            self._ensure_connected(peer, timeout)
        except NotConnected:
            return False
        return True

    def connection_error(self, peer: str) -> BaseException | None:
        """Why the last attempt to connect to ``peer`` failed (None if none did)."""
        with self._lock:
            return self._last_error.get(peer)

    def disconnect(self, peer: str) -> bool:
        """Close the connection to ``peer``; True if there was one.

        Links and monitors toward that node fire with ``noconnection``.
        """
        with self._lock:
            c = self._up.get(peer)
        if c is None:
            return False
        self._conn_down(c, NodeDown(f"disconnected from {peer}", peer))
        c.close("disconnected")
        return True

    def ping(self, peer: str, timeout: float = 7.0) -> str:
        """``net_adm:ping``: ``"pong"`` if ``peer`` answers as a node, else ``"pang"``."""
        if peer == self.name:
            return "pong"
        if not isinstance(peer, str) or not valid_node_name(peer):
            return "pang"
        try:
            reply = self.gen_call(("net_kernel", peer),
                                  (Atom("is_auth"), Atom(self.name)), timeout=timeout)
        except (QuicDistError, TimeoutError):
            return "pang"
        return "pong" if reply == _YES else "pang"

    def _ensure_connected(self, peer: str, timeout: float | None = None) -> _Conn:
        if peer == self.name:
            raise ConfigurationError("a node does not connect to itself")
        if not isinstance(peer, str) or not valid_node_name(peer):
            raise ConfigurationError(f"invalid node name {peer!r} (expected alive@host)")
        deadline = Deadline(self.connect_timeout if timeout is None else timeout)
        dial: _Conn | None = None
        with self._lock:
            self._check_running()
            up = self._up.get(peer)
            if up is not None:
                return up
            if peer not in self._dialing and peer not in self._accepting:
                dial = _Conn("dialer", peer)
                self._dialing[peer] = dial
                self._all.add(dial)
                self._nok_until.pop(peer, None)
        if dial is not None:
            self._dial(dial, deadline)
        with self._cond:
            while True:
                up = self._up.get(peer)
                if up is not None:
                    return up
                if self._state != "running":
                    raise NotConnected(f"node {self.name} is stopped", peer)
                wait = deadline.timeout()
                nok = self._nok_until.get(peer)
                in_progress = peer in self._dialing or peer in self._accepting
                if not in_progress and nok is not None:
                    left = nok - time.monotonic()
                    if left > 0:
                        in_progress = True
                        wait = left if wait is None else min(wait, left)
                if not in_progress:
                    error = self._last_error.get(peer)
                    raise NotConnected(f"cannot connect to {peer}: {error}", peer) from error
                if wait == 0.0:
                    raise NotConnected(f"timed out connecting to {peer}", peer)
                self._cond.wait(wait)

    def _dial(self, c: _Conn, deadline: Deadline) -> None:
        peer = c.peer_name
        assert peer is not None
        try:
            host, port = self._discovery.lookup(peer)
            c.handshake = Handshake("dialer", node_name=self.name, cookie=self._cookie,
                                    creation=self.creation, flags=self._flags, peer_name=peer)
            wait = deadline.timeout()
            connection: Connection | TcpConnection
            if self._tcp is not None:
                connection = tcp_connect(
                    host, port, config=self._tcp,
                    timeout=self.connect_timeout if wait is None else wait,
                    on_event=lambda conn, event: self._event(c, conn, event),
                    name=f"{self.name}->{peer}")
            else:
                assert self._tls is not None
                connection = carrier_connect(
                    host, port, tls=self._tls, config=self._carrier,
                    timeout=self.connect_timeout if wait is None else wait,
                    on_event=lambda conn, event: self._event(c, conn, event),
                    name=f"{self.name}->{peer}")
        except (QuicDistError, OSError) as exc:
            if not isinstance(exc, DiscoveryError | ConnectionClosed | QuicDistTimeoutError):
                logger.warning("connecting %s -> %s failed: %s", self.name, peer, exc)
            self._conn_failed(c, exc)
            return
        c.connection = connection
        with self._lock:
            cancelled = c.cancelled or self._state != "running"
        if cancelled:
            connection.close(reason="connection attempt cancelled", timeout=0)

    # Listener side: called on the accepted connection's I/O thread.

    def _accepted_connection(self, connection: Connection | TcpConnection) -> None:
        c = _Conn("listener")
        c.connection = connection
        c.state = "handshaking"

        def accept(name: str, flags: int) -> str:
            return self._accept_name(c, name)

        c.handshake = Handshake("listener", node_name=self.name, cookie=self._cookie,
                                creation=self.creation, flags=self._flags, accept=accept)
        with self._lock:
            if self._state != "running":
                connection.close(reason="node stopped", timeout=0)
                return
            self._accepted[connection] = c
            self._all.add(c)

    def _listener_event(self, connection: Connection | TcpConnection,
                        event: CarrierEvent) -> None:
        with self._lock:
            c = self._accepted.get(connection)
        if c is not None:
            self._event(c, connection, event)

    def _accept_name(self, c: _Conn, name: str) -> str:
        """The status for a dialer named ``name`` (OTP's rules, simultaneous connect)."""
        c.claimed_name = name
        with self._lock:
            if self._state != "running" or name == self.name:
                return "not_allowed"
            if name in self._up:
                c.peer_name = name
                return "alive"
            if name in self._accepting:
                return "nok"
            dialing = self._dialing.get(name)
            status = "ok"
            if dialing is not None:
                # Both nodes dial each other: the greater name's attempt wins.
                if self.name > name:
                    return "nok"
                dialing.cancelled = True
                del self._dialing[name]
                dialing.close("simultaneous connect: the peer's attempt wins")
                status = "ok_simultaneous"
            c.peer_name = name
            self._accepting[name] = c
            return status

    # ------------------------------------------------------- event handling

    def _event(self, c: _Conn, connection: Connection | TcpConnection,
               event: CarrierEvent) -> None:
        """Every event of every connection, on that connection's I/O thread."""
        _io_thread.active = True
        try:
            if c.connection is None:
                c.connection = connection
            if isinstance(event, DistFrames):
                if c.state == "up":
                    self._dist_frames(c, event)
                elif not self._hold_early(c, event, sum(map(len, event.frames))):
                    # A dialer sends nothing before the handshake completes:
                    # this peer has not proved it knows the cookie.
                    self._fail_and_close(c, HandshakeError(
                        "distribution messages before the handshake completed", "early"))
            elif isinstance(event, UserStreamData | UserStreamReset | UserStreamStopped):
                # A stream the listener opened right after its challenge_ack
                # may overtake the ack (a lost packet): kept until then.
                size = len(event.data) if isinstance(event, UserStreamData) else 0
                if not self._hold_early(c, event, size):
                    self._user_stream_event(c, event)
            elif isinstance(event, ControlData):
                self._control(c, event.data)
            elif isinstance(event, HandshakeCompleted):
                self._quic_up(c)
            elif isinstance(event, ConnectionTerminated):
                self._terminated(c, event.error)
        finally:
            _io_thread.active = False

    @staticmethod
    def _hold_early(c: _Conn, event: CarrierEvent, size: int) -> bool:
        """Keep ``event`` until the dialer has read the challenge_ack; False if not allowed.

        The listener may send right after its challenge_ack, on another
        stream, and those bytes may overtake the ack (up to _MAX_EARLY_BYTES).
        """
        if (c.role != "dialer" or c.state != "handshaking"
                or c.early_bytes + size > _MAX_EARLY_BYTES):
            return False
        c.early.append(event)
        c.early_bytes += size
        return True

    def _quic_up(self, c: _Conn) -> None:
        if c.role != "dialer":
            return
        with self._lock:
            cancelled = c.cancelled or self._state != "running"
        if cancelled:
            c.close("connection attempt cancelled")
            return
        assert c.handshake is not None and c.connection is not None
        c.state = "handshaking"
        try:
            for message in c.handshake.start():
                c.connection.send_control(message)
        except ConnectionClosed:
            return  # its end event follows

    def _control(self, c: _Conn, data: bytes) -> None:
        if c.state == "up":
            if data.strip(b"\x00"):
                logger.warning("%s: %d bytes that are not ticks on stream 0 from %s; ignored",
                               self.name, len(data), c.peer_name)
            return
        hs = c.handshake
        if hs is None or c.state != "handshaking":
            return
        replies = hs.receive(data)
        assert c.connection is not None
        try:
            for message in replies:
                c.connection.send_control(message)
        except ConnectionClosed:
            return  # closed under us (e.g. a simultaneous connect): its end event follows
        if hs.failed:
            error = hs.error
            assert error is not None
            routine = c.handshake is not None and c.handshake.status == "nok"
            logger.log(logging.INFO if routine else logging.WARNING,
                       "%s: handshake with %s failed: %s", self.name,
                       c.peer_name or c.claimed_name or c.connection.peer, error)
            if replies:  # a farewell status: let it reach the peer before closing
                c.state = "failing"
                c.close_at = time.monotonic() + _FAREWELL_GRACE
                self._conn_failed(c, error, close=False)
            else:
                self._fail_and_close(c, error)
        elif hs.done:
            self._handshake_done(c)

    def _handshake_done(self, c: _Conn) -> None:
        result = c.handshake.result if c.handshake is not None else None
        assert result is not None
        if isinstance(c.connection, TcpConnection):
            # On the reader thread, before it reads on: 4-byte frames from now on.
            c.connection.handshake_complete()
        name = result.peer_name
        with self._lock:
            stale = self._state != "running" or c.cancelled
            if not stale:
                old = self._up.get(name)
                if old is not None and old is not c:
                    # The peer said its old connection is dead ('alive' -> true):
                    # that node went down, then comes up again on this one.
                    self._conn_down(old, NodeDown(f"{name} reconnected", name))
                    old.close("replaced by a new connection")
                c.state = "up"
                c.peer_name = name
                c.up_since = c.last_tick = time.monotonic()
                self._up[name] = c
                if self._dialing.get(name) is c:
                    del self._dialing[name]
                if self._accepting.get(name) is c:
                    del self._accepting[name]
                self._nok_until.pop(name, None)
                self._last_error.pop(name, None)
                self._cond.notify_all()
        if stale:
            c.close("connection attempt cancelled")
            return
        logger.info("%s: node %s up (%s)", self.name, name, c.role)
        early, c.early = c.early, []
        for held in early:  # in the order they arrived
            if isinstance(held, DistFrames):
                self._dist_frames(c, held)
            else:
                self._user_stream_event(c, held)

    def _terminated(self, c: _Conn, error: ConnectionClosed) -> None:
        if c.handshake is not None and c.state in ("handshaking", "connecting"):
            c.handshake.receive_eof()
            hs_error = c.handshake.error
            if hs_error is not None and c.state == "handshaking":
                logger.warning("%s: handshake with %s failed: %s", self.name,
                               c.peer_name or "?", hs_error)
            self._conn_failed(c, hs_error or error)
        elif c.state == "up":
            self._conn_down(c, NodeDown(f"connection to {c.peer_name} closed: {error}",
                                        c.peer_name or ""))
        self._forget(c)

    def _forget(self, c: _Conn) -> None:
        with self._lock:
            c.state = "closed"
            self._all.discard(c)
            if c.connection is not None:
                self._accepted.pop(c.connection, None)

    def _fail_and_close(self, c: _Conn, error: BaseException) -> None:
        self._conn_failed(c, error)
        c.close(str(error))

    def _conn_failed(self, c: _Conn, error: BaseException, close: bool = True) -> None:
        """A connection that never came up ended (or will): tell who waits."""
        with self._lock:
            name = c.peer_name
            if c.state != "failing":
                c.state = "closed" if close else c.state
            if name is not None:
                if self._dialing.get(name) is c:
                    del self._dialing[name]
                if self._accepting.get(name) is c:
                    del self._accepting[name]
                if not c.cancelled:
                    self._last_error[name] = error
                hs = c.handshake
                if c.role == "dialer" and hs is not None and hs.status == "nok":
                    # The peer dials us too and its attempt wins: wait for it.
                    self._nok_until[name] = time.monotonic() + self.connect_timeout
            if close:
                self._all.discard(c)
            self._cond.notify_all()

    # ------------------------------------------------------------ node down

    def _conn_down(self, c: _Conn, error: NodeDown) -> None:
        """Node ``c.peer_name`` is down (or this connection to it was replaced).

        Idempotent per connection: links and monitors fire once.
        """
        name = c.peer_name or ""
        with self._lock:
            if c.state == "down_done":
                return
            c.state = "down_done"
            if self._up.get(name) is c:
                del self._up[name]
            self._all.discard(c)
            self._cond.notify_all()
            exits: list[tuple[Mailbox, Pid]] = []
            downs: list[tuple[Mailbox, Reference, Any]] = []
            for local, linked in list(self._links.items()):
                gone = {p for p in linked if p.node == name}
                if not gone:
                    continue
                linked -= gone
                mailbox = self._mailboxes.get(local)
                for remote in gone:
                    self._unlinking.pop((local, remote), None)
                    if mailbox is not None:
                        exits.append((mailbox, remote))
            for ref, mon in list(self._monitors.items()):
                mine = mon.watcher.node == self.name
                if mon.node == name and mon.local_target is None and mine:
                    del self._monitors[ref]
                    watcher = self._mailboxes.get(mon.watcher)
                    if watcher is not None:
                        downs.append((watcher, ref, mon.down_object()))
                elif mon.watcher.node == name:
                    del self._monitors[ref]
                    if mon.local_target is not None:
                        self._watched_by.get(mon.local_target, set()).discard(ref)
        logger.info("%s: node %s down: %s", self.name, name, error)
        if isinstance(c.connection, Connection):
            self._streams.connection_down(c.connection, name, error)
        for mailbox, remote in exits:
            mailbox._deliver((EXIT, remote, _NOCONNECTION))
        for mailbox, ref, obj in downs:
            mailbox._deliver((DOWN, ref, PROCESS, obj, _NOCONNECTION))

    # -------------------------------------------------------------- ticking

    def _tick_loop(self) -> None:
        interval = min(self.net_ticktime / 4, 1.0)
        while not self._stop_event.wait(interval):
            try:
                self._tick(time.monotonic())
            except Exception:
                logger.exception("ticker of %s failed", self.name)

    def _epmd_register(self) -> EpmdRegistration:
        assert self._tcp is not None and self._listener is not None
        return EpmdClient(port=self._tcp.epmd_port, timeout=self._tcp.epmd_timeout,
                          ).register(self.name.partition("@")[0], self._listener.port)

    def _check_epmd(self, now: float) -> None:
        """Register again when epmd dropped our registration (it was restarted)."""
        registration = self._epmd
        if registration is None or registration.alive() or now < self._epmd_retry:
            return
        registration.close()
        try:
            fresh = self._epmd_register()
        except (QuicDistError, OSError) as exc:
            self._epmd_retry = now + 5.0
            logger.warning("%s: epmd dropped our registration and registering again "
                           "failed (retrying in 5 s): %s", self.name, exc)
            return
        with self._lock:
            if self._state != "running":
                fresh.close()
                return
            self._epmd = fresh
        logger.warning("%s: epmd dropped our registration; registered again", self.name)

    def _tick(self, now: float) -> None:
        self._streams.tick()  # streams whose owner thread ended are reset
        self._check_epmd(now)
        with self._lock:
            conns = list(self._all)
        tick_every = self.net_ticktime / 4
        setup_limit = self.connect_timeout
        for c in conns:
            connection = c.connection
            if c.state == "up" and connection is not None:
                heard = connection.last_received or c.up_since
                if now - max(heard, c.up_since) > self.net_ticktime:
                    logger.warning("%s: node %s silent for %.1f s (net_ticktime %.1f s): "
                                   "down", self.name, c.peer_name, now - heard,
                                   self.net_ticktime)
                    self._conn_down(c, NodeDown(f"{c.peer_name} timed out (net_tick_timeout)",
                                                c.peer_name or ""))
                    c.close("net_tick_timeout")
                    continue
                if now - c.last_tick >= tick_every:
                    c.last_tick = now
                    connection.send_tick()
                outbox = connection.dist_outbox
                if outbox.forced_over > _FORCED_SLACK * outbox.limit:
                    logger.warning("%s: node %s does not read its messages; disconnecting",
                                   self.name, c.peer_name)
                    self._conn_down(c, NodeDown(f"{c.peer_name} stopped reading",
                                                c.peer_name or ""))
                    c.close("peer does not read")
            elif c.state == "failing" and now >= c.close_at:
                c.state = "closed"
                c.close("handshake failed")
                with self._lock:
                    self._all.discard(c)
            elif c.state in ("connecting", "handshaking") and now - c.started > setup_limit:
                error = HandshakeError(
                    f"no distribution handshake within {setup_limit:.1f} s (connect_timeout)",
                    c.state, c.peer_name)
                logger.warning("%s: handshake with %s failed: %s", self.name,
                               c.peer_name or (connection.peer if connection else "?"), error)
                self._fail_and_close(c, error)

    # ------------------------------------------------------------ processes

    def _make_pid(self) -> Pid:
        n = next(self._pid_ids)
        return Pid(self.name, n & 0x0FFFFFFF, n >> 28, self.creation)

    def make_ref(self) -> Reference:
        """A new reference of this node (unique for its lifetime)."""
        n = next(self._ref_ids)
        return Reference(self.name, self.creation,
                         [n & 0x3FFFF, (n >> 18) & 0xFFFFFFFF, secrets.randbits(32)])

    def mailbox(self, name: str | None = None, *, max_messages: int | None = None) -> Mailbox:
        """A new process of this node, registered as ``name`` if given.

        Raises:
            ConfigurationError: ``name`` is taken, reserved or not a valid atom.
        """
        if name is not None:
            if not isinstance(name, str) or not name or len(name) > 255:
                raise ConfigurationError(f"invalid registered name {name!r}")
            if name in SYSTEM_NAMES:
                raise ConfigurationError(f"{name!r} is served by the node itself")
        mailbox = Mailbox(self, self._make_pid(), name,
                          self.max_messages if max_messages is None else max_messages)
        with self._lock:
            self._check_running()
            if name is not None:
                if name in self._names:
                    raise ConfigurationError(f"the name {name!r} is already registered")
                self._names[name] = mailbox
            self._mailboxes[mailbox.pid] = mailbox
        return mailbox

    def whereis(self, name: str) -> Pid | None:
        """The pid registered as ``name`` on this node, or None."""
        with self._lock:
            mailbox = self._names.get(name)
        return None if mailbox is None else mailbox.pid

    def registered(self) -> list[str]:
        """The names registered on this node."""
        with self._lock:
            return sorted(self._names)

    def _check_running(self) -> None:
        if self._state != "running":
            raise NodeDown(f"node {self.name} is not running ({self._state})", self.name)

    def _process_exit(self, mailbox: Mailbox, reason: Any) -> None:
        """``mailbox`` ends with ``reason``: links and monitors are told."""
        if not mailbox._mark_exited(reason):
            return
        self._streams.owner_exited(mailbox)  # its streams are reset with code 0
        pid = mailbox.pid
        with self._lock:
            self._mailboxes.pop(pid, None)
            if mailbox.name is not None and self._names.get(mailbox.name) is mailbox:
                del self._names[mailbox.name]
            linked = self._links.pop(pid, set())
            for other in linked:
                if other.node == self.name:
                    self._links.get(other, set()).discard(pid)
                self._unlinking.pop((pid, other), None)
            watchers = [(ref, self._monitors.pop(ref)) for ref in self._watched_by.pop(pid, ())
                        if ref in self._monitors]
            mine = [(ref, mon) for ref, mon in self._monitors.items() if mon.watcher == pid]
            for ref, mon in mine:
                del self._monitors[ref]
                if mon.local_target is not None:
                    self._watched_by.get(mon.local_target, set()).discard(ref)
            for alias in [a for a, p in self._aliases.items() if p == pid]:
                del self._aliases[alias]
            running = self._state == "running"
        if not running:
            return
        for other in linked:
            if other.node == self.name:
                target = self._mailbox_of(other)
                if target is not None:
                    target._deliver((EXIT, pid, reason))
            else:
                self._signal(other.node, dist.Exit(pid, other, reason))
        for ref, mon in watchers:
            if mon.watcher.node == self.name:
                watcher = self._mailbox_of(mon.watcher)
                if watcher is not None:
                    watcher._deliver((DOWN, ref, PROCESS, mon.down_object(), reason))
            else:
                self._signal(mon.watcher.node,
                             dist.MonitorPExit(mon.target, mon.watcher, ref, reason))
        for ref, mon in mine:
            if mon.local_target is None and mon.node != self.name:
                self._signal(mon.node, dist.DemonitorP(pid, mon.target, ref))

    def _mailbox_of(self, pid: Pid) -> Mailbox | None:
        # One atomic dict read, no lock: it is on the path of every message
        # (a mailbox removed meanwhile refuses the delivery itself).
        return self._mailboxes.get(pid)

    # ---------------------------------------------------------------- send

    def send(self, dest: Any, message: Any, *, raise_nodedown: bool = False) -> None:
        """Send ``message`` to a Pid, a registered name here, or ``(name, node)``.

        Sent on behalf of the node itself (its own pid, :attr:`pid`).
        See :meth:`Mailbox.send` for the delivery rules.
        """
        self._send(self._node_pid, dest, message, raise_nodedown=raise_nodedown)

    @property
    def pid(self) -> Pid:
        """The pid the node uses for sends without a mailbox (messages to it are dropped)."""
        return self._node_pid

    def _send(self, from_pid: Pid, dest: Any, message: Any, *,
              raise_nodedown: bool) -> None:
        if isinstance(dest, Pid):
            if dest.node == self.name:
                target = self._mailbox_of(dest)
                if target is not None:
                    target._deliver(message)
                return
            self._send_remote(dest.node, dist.Send(dest, message), raise_nodedown)
            return
        if isinstance(dest, str):
            with self._lock:
                target_mb = self._names.get(dest)
            if target_mb is None and dest in SYSTEM_NAMES:
                self._system_message(None, Atom(dest), from_pid, message)
                return
            if target_mb is None:
                raise NoProc(f"no process is registered as {dest!r} on {self.name}",
                             Atom(dest))
            target_mb._deliver(message)
            return
        if isinstance(dest, tuple) and len(dest) == 2 and all(isinstance(x, str) for x in dest):
            name, node = dest
            if node == self.name:
                with self._lock:
                    target_mb = self._names.get(name)
                if target_mb is not None:
                    target_mb._deliver(message)
                elif name in SYSTEM_NAMES:
                    self._system_message(None, Atom(name), from_pid, message)
                return
            self._send_remote(node, dist.RegSend(from_pid, Atom(name), message), raise_nodedown)
            return
        if isinstance(dest, Reference):
            with self._lock:
                owner = self._aliases.get(dest)
            if dest.node == self.name:
                if owner is not None:
                    mailbox = self._mailbox_of(owner)
                    if mailbox is not None:
                        mailbox._deliver(message)
                return
            self._send_remote(dest.node, dist.AliasSend(from_pid, dest, message), raise_nodedown)
            return
        raise TypeError(f"a destination is a Pid, a registered name, (name, node) or an "
                        f"alias Reference, not {dest!r}")

    def _send_remote(self, node: str, msg: dist.DistMessage, raise_nodedown: bool) -> None:
        payload = dist.encode_message(msg)  # EncodeError before anything is sent
        try:
            # The common case first, without the lock: the node is up (a
            # dict read is atomic; _put re-checks that the connection lives).
            c = self._up.get(node)
            if c is None:
                c = self._ensure_connected(node) if not _on_io_thread() else self._up_conn(node)
            self._put(c, payload)
        except (NodeDown, ConnectionClosed, DiscoveryError, ConfigurationError) as exc:
            if raise_nodedown:
                if isinstance(exc, NodeDown):
                    raise
                raise NodeDown(f"cannot send to {node}: {exc}", node) from exc
            logger.debug("%s: message to %s dropped: %s", self.name, node, exc)

    def _up_conn(self, node: str) -> _Conn:
        with self._lock:
            c = self._up.get(node)
        if c is None:
            raise NodeDown(f"{node} is not connected", node)
        return c

    def _put(self, c: _Conn, payload: bytes) -> None:
        connection = c.connection
        assert connection is not None
        # A closed connection's outbox raises its close error (ConnectionClosed).
        if _on_io_thread():
            connection.dist_outbox.put(payload, force=True)
        else:
            connection.dist_outbox.put(payload, self.send_timeout)

    def _signal(self, node: str, msg: dist.DistMessage) -> None:
        """Send a signal to an already connected node; drop it if the node is gone."""
        try:
            c = self._up_conn(node)
            self._put(c, dist.encode_message(msg))
        except (NodeDown, ConnectionClosed) as exc:
            logger.debug("%s: signal %s to %s dropped: %s", self.name, msg.op.name, node, exc)
        except (EncodeError, QuicDistTimeoutError) as exc:
            logger.warning("%s: signal %s to %s not sent: %s", self.name, msg.op.name, node,
                           exc)

    # ------------------------------------------------------ links, monitors

    def _link(self, mailbox: Mailbox, pid: Pid) -> None:
        me = mailbox.pid
        if pid == me:
            return
        if pid.node == self.name:
            with self._lock:
                other = self._mailboxes.get(pid)
                if other is not None:
                    self._links.setdefault(me, set()).add(pid)
                    self._links.setdefault(pid, set()).add(me)
            if other is None:
                mailbox._deliver((EXIT, pid, _NOPROC))
            return
        try:
            c = self._ensure_connected(pid.node)
        except NodeDown:
            mailbox._deliver((EXIT, pid, _NOCONNECTION))
            return
        with self._lock:
            self._links.setdefault(me, set()).add(pid)
            self._unlinking.pop((me, pid), None)
        try:
            self._put(c, dist.encode_message(dist.Link(me, pid)))
        except ConnectionClosed:
            pass  # the node-down handling delivers the noconnection EXIT

    def _unlink(self, mailbox: Mailbox, pid: Pid) -> None:
        me = mailbox.pid
        with self._lock:
            linked = self._links.get(me, set())
            if pid not in linked:
                return
            linked.discard(pid)
            if pid.node == self.name:
                self._links.get(pid, set()).discard(me)
                return
            unlink_id = next(self._unlink_ids)
            self._unlinking[(me, pid)] = unlink_id
        self._signal(pid.node, dist.UnlinkId(unlink_id, me, pid))

    def _monitor(self, mailbox: Mailbox, target: Any) -> Reference:
        me = mailbox.pid
        ref = self.make_ref()
        if isinstance(target, str) and not isinstance(target, tuple):
            target = (target, self.name)
        if isinstance(target, tuple):
            if len(target) != 2 or not all(isinstance(x, str) for x in target):
                raise TypeError(f"monitor target must be a Pid, a name or (name, node), "
                                f"not {target!r}")
            name, node = Atom(target[0]), target[1]
            mon = _Monitor(me, name, node, None)
        elif isinstance(target, Pid):
            mon = _Monitor(me, target, target.node, None)
        else:
            raise TypeError(f"monitor target must be a Pid, a name or (name, node), "
                            f"not {target!r}")
        if mon.node == self.name:
            with self._lock:
                if isinstance(mon.target, Pid):
                    watched = self._mailboxes.get(mon.target)
                else:
                    watched = self._names.get(mon.target)
                if watched is not None:
                    mon.local_target = watched.pid
                    self._monitors[ref] = mon
                    self._watched_by.setdefault(watched.pid, set()).add(ref)
            if watched is None:
                if not isinstance(mon.target, Pid) and mon.target in SYSTEM_NAMES:
                    return ref  # the node's own services never exit while it runs
                mailbox._deliver((DOWN, ref, PROCESS, mon.down_object(), _NOPROC))
            return ref
        try:
            c = self._ensure_connected(mon.node)
        except NodeDown:
            mailbox._deliver((DOWN, ref, PROCESS, mon.down_object(), _NOCONNECTION))
            return ref
        with self._lock:
            self._monitors[ref] = mon
        try:
            self._put(c, dist.encode_message(dist.MonitorP(me, mon.target, ref)))
        except ConnectionClosed:
            pass  # node-down handling delivers DOWN noconnection
        return ref

    def _demonitor(self, mailbox: Mailbox, ref: Reference) -> None:
        with self._lock:
            mon = self._monitors.get(ref)
            if mon is None or mon.watcher != mailbox.pid:
                return
            del self._monitors[ref]
            if mon.local_target is not None:
                self._watched_by.get(mon.local_target, set()).discard(ref)
                return
        if mon.node != self.name:
            self._signal(mon.node, dist.DemonitorP(mailbox.pid, mon.target, ref))

    def _exit_signal(self, from_pid: Pid, to_pid: Pid, reason: Any) -> None:
        """``exit(To, Reason)`` from ``from_pid``: EXIT2 to a remote pid, or handled here."""
        if not isinstance(to_pid, Pid):
            raise TypeError(f"an exit signal goes to a Pid, not {to_pid!r}")
        if to_pid.node != self.name:
            self._send_remote(to_pid.node, dist.Exit2(from_pid, to_pid, reason),
                              raise_nodedown=False)
            return
        target = self._mailbox_of(to_pid)
        if target is None:
            return
        if reason == _KILL:
            self._process_exit(target, _KILLED)
        else:
            target._deliver((EXIT, from_pid, reason))

    def _alias(self, mailbox: Mailbox) -> Reference:
        ref = self.make_ref()
        with self._lock:
            self._aliases[ref] = mailbox.pid
        return ref

    def _unalias(self, mailbox: Mailbox, ref: Reference) -> bool:
        with self._lock:
            if self._aliases.get(ref) == mailbox.pid:
                del self._aliases[ref]
                return True
        return False

    # ----------------------------------------------------------- gen calls

    def gen_call(self, dest: Any, request: Any, timeout: float | None = 5.0) -> Any:
        """``gen_server:call(Dest, Request, Timeout)`` toward any gen_server.

        ``dest`` is a Pid, a local registered name or ``(name, node)``.

        Raises:
            NoProc: the target does not exist.
            NodeDown: its node cannot be reached or went down during the call.
            CallError: the target exited during the call (``.reason``).
            QuicDistTimeoutError (a TimeoutError): no reply within ``timeout``.
        """
        node = _node_of(dest, self.name)
        deadline = Deadline(timeout)
        if node != self.name:
            # NotConnected (a NodeDown) before anything else; the call's
            # timeout bounds the connection attempt too.
            wait = deadline.timeout()
            self._ensure_connected(node, self.connect_timeout if wait is None
                                   else min(wait, self.connect_timeout))
        with self.mailbox() as mailbox:
            ref = mailbox.monitor(dest)
            tag = ref
            self._send(mailbox.pid, dest, (GEN_CALL, (mailbox.pid, tag), request),
                       raise_nodedown=True)

            def match(m: Any) -> bool:
                return isinstance(m, tuple) and (
                    (len(m) == 2 and m[0] == tag)
                    or (len(m) == 5 and m[0] == DOWN and m[1] == ref))

            try:
                reply = mailbox.receive(deadline.timeout(), match=match)
            except QuicDistTimeoutError:
                raise QuicDistTimeoutError(
                    f"no reply from {dest!r} within {timeout} s") from None
            if len(reply) == 2:
                return reply[1]
            reason = reply[4]
            if reason == _NOPROC:
                raise NoProc(f"no process {dest!r}", reason)
            if reason == _NOCONNECTION:
                raise NodeDown(f"node {node} went down during the call to {dest!r}", node)
            raise CallError(f"{dest!r} exited during the call: {reason!r}", reason)

    def gen_cast(self, dest: Any, request: Any) -> None:
        """``gen_server:cast(Dest, Request)``: fire and forget (never raises NodeDown)."""
        try:
            self._send(self._node_pid, dest, (GEN_CAST, request), raise_nodedown=False)
        except NoProc:
            pass

    def rpc(self, peer: str, module: str, function: str, args: Iterable[Any] = (),
            timeout: float | None = 10.0) -> Any:
        """``rpc:call(Peer, Module, Function, Args, Timeout)``: the function's result.

        Raises:
            RpcError: the call failed there (``{badrpc, Reason}``: an
                undefined function, an exception...); ``.reason`` is the term.
            NodeDown: the node cannot be reached or went down.
            QuicDistTimeoutError (a TimeoutError): no answer in time.
        """
        request = (Atom("call"), Atom(module), Atom(function), list(args), Atom("user"))
        try:
            reply = self.gen_call(("rex", peer), request, timeout=timeout)
        except NoProc as exc:
            raise RpcError(f"rpc to {peer}: no rex server there", exc.reason) from exc
        if isinstance(reply, tuple) and len(reply) == 2 and reply[0] == _BADRPC:
            raise RpcError(f"rpc {module}:{function}/{len(request[3])} on {peer} failed: "
                           f"{reply[1]!r}", reply[1])
        return reply

    def register_module(self, name: str, functions: Any) -> None:
        """Expose Python callables to peers as ``name:function/arity``.

        ``functions`` is a mapping ``{function_name: callable}`` or an object
        whose public callable attributes are the functions. Only what is
        registered here can be called by a peer.
        """
        if isinstance(functions, Mapping):
            table = {str(k): v for k, v in functions.items()}
        else:
            table = {k: getattr(functions, k) for k in dir(functions)
                     if not k.startswith("_") and callable(getattr(functions, k))}
        for key, value in table.items():
            if not callable(value):
                raise ConfigurationError(f"{name}:{key} is not callable")
        with self._lock:
            self._modules[name] = table

    def unregister_module(self, name: str) -> None:
        with self._lock:
            self._modules.pop(name, None)

    def _lookup_function(self, module: Any, function: Any, arity: int
                         ) -> Callable[..., Any] | None:
        with self._lock:
            table = self._modules.get(str(module))
        return erpc.lookup(table, function, arity)

    def _run_call(self, module: Any, function: Any, args: Any) -> Any:
        """Run a registered function; the reply ``rex`` gives (a value or ``{badrpc, R}``)."""
        return erpc.rex_reply(erpc.run_function(self, module, function, args))

    # --------------------------------------------- messages from the peers

    def _dist_frames(self, c: _Conn, event: DistFrames) -> None:
        for payload in event.frames:
            try:
                msg = dist.decode_message(payload)
            except (QuicDistError, ValueError) as exc:
                logger.warning("%s: dropped a malformed message from %s: %s",
                               self.name, c.peer_name, exc)
                continue
            try:
                self._handle(c, msg)
            except Exception:
                logger.exception("%s: handling %s from %s failed", self.name,
                                 msg.op.name, c.peer_name)

    def _handle(self, c: _Conn, msg: dist.DistMessage) -> None:
        peer = c.peer_name or ""
        if isinstance(msg, dist.Send | dist.SendSender):
            if msg.to_pid == self._node_pid:
                return
            if msg.to_pid.node != self.name:
                logger.debug("%s: SEND for a pid of %s dropped", self.name, msg.to_pid.node)
                return
            mailbox = self._mailbox_of(msg.to_pid)
            if mailbox is not None:
                mailbox._deliver(msg.message)
        elif isinstance(msg, dist.RegSend):
            mailbox = self._names.get(msg.to_name)  # atomic read, as in _mailbox_of
            if mailbox is not None:
                mailbox._deliver(msg.message)
            elif msg.to_name in SYSTEM_NAMES:
                self._system_message(c, msg.to_name, msg.from_pid, msg.message)
            else:
                logger.debug("%s: REG_SEND to unregistered %s dropped", self.name, msg.to_name)
        elif isinstance(msg, dist.AliasSend):
            with self._lock:
                owner = self._aliases.get(msg.alias)
            target = self._mailbox_of(owner) if owner is not None else None
            if target is not None:
                target._deliver(msg.message)
        elif isinstance(msg, dist.Link):
            self._remote_link(c, msg.from_pid, msg.to_pid)
        elif isinstance(msg, dist.UnlinkId):
            with self._lock:
                self._links.get(msg.to_pid, set()).discard(msg.from_pid)
            self._signal(peer, dist.UnlinkIdAck(msg.id, msg.to_pid, msg.from_pid))
        elif isinstance(msg, dist.UnlinkIdAck):
            with self._lock:
                key = (msg.to_pid, msg.from_pid)
                if self._unlinking.get(key) == msg.id:
                    del self._unlinking[key]
        elif isinstance(msg, dist.Exit | dist.PayloadExit):
            self._remote_link_exit(msg.from_pid, msg.to_pid, msg.reason)
        elif isinstance(msg, dist.Exit2 | dist.PayloadExit2):
            if msg.to_pid.node == self.name:
                self._exit_signal(msg.from_pid, msg.to_pid, msg.reason)
        elif isinstance(msg, dist.MonitorP):
            self._remote_monitor(c, msg)
        elif isinstance(msg, dist.DemonitorP):
            with self._lock:
                mon = self._monitors.get(msg.ref)
                if mon is not None and mon.watcher == msg.from_pid:
                    del self._monitors[msg.ref]
                    if mon.local_target is not None:
                        self._watched_by.get(mon.local_target, set()).discard(msg.ref)
        elif isinstance(msg, dist.MonitorPExit | dist.PayloadMonitorPExit):
            with self._lock:
                mon = self._monitors.get(msg.ref)
                if mon is None or mon.watcher != msg.to_pid or mon.local_target is not None:
                    return
                del self._monitors[msg.ref]
                watcher = self._mailboxes.get(msg.to_pid)
            if watcher is not None:
                watcher._deliver((DOWN, msg.ref, PROCESS, mon.down_object(), msg.reason))
        elif isinstance(msg, dist.SpawnRequest):
            erpc.handle_spawn_request(self, peer, msg)
        else:
            logger.debug("%s: %s from %s ignored", self.name, msg.op.name, peer)

    def _remote_link(self, c: _Conn, remote: Pid, local: Pid) -> None:
        with self._lock:
            alive = local in self._mailboxes
            if alive:
                self._links.setdefault(local, set()).add(remote)
                self._unlinking.pop((local, remote), None)
        if not alive:
            self._signal(c.peer_name or "", dist.Exit(local, remote, _NOPROC))

    def _remote_link_exit(self, remote: Pid, local: Pid, reason: Any) -> None:
        with self._lock:
            linked = self._links.get(local)
            if linked is None or remote not in linked:
                return  # no link (or we are unlinking): the signal is void
            if (local, remote) in self._unlinking:
                return
            linked.discard(remote)
            mailbox = self._mailboxes.get(local)
        if mailbox is not None:
            mailbox._deliver((EXIT, remote, reason))

    def _remote_monitor(self, c: _Conn, msg: dist.MonitorP) -> None:
        target = msg.to_proc
        with self._lock:
            if isinstance(target, Pid):
                mailbox = self._mailboxes.get(target) if target.node == self.name else None
            else:
                mailbox = self._names.get(target)
            if mailbox is not None:
                self._monitors[msg.ref] = _Monitor(msg.from_pid, target, msg.from_pid.node,
                                                   mailbox.pid)
                self._watched_by.setdefault(mailbox.pid, set()).add(msg.ref)
                return
            if not isinstance(target, Pid) and target in SYSTEM_NAMES:
                self._monitors[msg.ref] = _Monitor(msg.from_pid, target, msg.from_pid.node,
                                                   None)
                return
        self._signal(c.peer_name or "", dist.MonitorPExit(target, msg.from_pid, msg.ref,
                                                          _NOPROC))

    # ------------------------------------------------- the node's services

    def _system_message(self, c: _Conn | None, name: Atom, from_pid: Pid, message: Any) -> None:
        """net_kernel, rex and the other names every Erlang node has (PROTOCOL.md §8)."""
        call = parse_call(message)
        if name == "net_kernel":
            if call is None:
                return
            (caller, tag), request = call
            if (isinstance(request, tuple) and len(request) == 2
                    and request[0] == Atom("is_auth")):
                self._reply(caller, tag, _YES)
            else:
                self._reply(caller, tag, (_ERROR, _NOT_SUPPORTED))
        elif name == "rex":
            if (isinstance(message, tuple) and len(message) == 2
                    and isinstance(message[0], Pid) and message[1] == Atom("features_request")):
                self._send(self._node_pid, message[0],
                           (Atom("features_reply"), Atom(self.name), [erpc.ERPC]),
                           raise_nodedown=False)
                return
            if call is not None:
                (caller, tag), request = call
                if (isinstance(request, tuple) and len(request) == 5
                        and request[0] in (Atom("call"), Atom("block_call"))):
                    self._submit(lambda: self._reply_call(
                        caller, tag, request[1], request[2], request[3]))
                else:
                    self._reply(caller, tag, (_BADRPC, _NOT_SUPPORTED))
                return
            if (isinstance(message, tuple) and len(message) == 2 and message[0] == GEN_CAST
                    and isinstance(message[1], tuple) and len(message[1]) == 5
                    and message[1][0] == Atom("cast")):
                cast = message[1]
                self._submit(lambda: self._run_call(cast[1], cast[2], cast[3]))
        elif name == "global_name_server":
            self._global(message, call)
        elif call is not None:
            (caller, tag), _request = call
            self._reply(caller, tag, (_ERROR, _NOT_SUPPORTED))

    def _global(self, message: Any, call: tuple[tuple[Pid, Any], Any] | None) -> None:
        """Just enough of kernel's ``global`` that Erlang nodes stay in sync with us.

        A visible node is sent ``init_connect`` by every Erlang node's
        global_name_server; without an ``in_sync`` answer ``global:sync()``
        and global locks block there forever. quicdist keeps no global
        names: locks are granted, registrations accepted, nothing stored.
        """
        if (call is None and isinstance(message, tuple) and len(message) == 2
                and message[0] == GEN_CAST and isinstance(message[1], tuple)
                and len(message[1]) == 4 and message[1][0] == Atom("init_connect")
                and isinstance(message[1][2], str)):
            peer = str(message[1][2])
            self._send(self._node_pid, ("global_name_server", peer),
                       (GEN_CAST, (Atom("in_sync"), Atom(self.name), True)),
                       raise_nodedown=False)
            return
        if call is None:
            return
        (caller, tag), request = call
        kind = request[0] if isinstance(request, tuple) and request else request
        answers = {Atom("set_lock"): True, Atom("del_lock"): True, Atom("register"): _YES,
                   Atom("register_ext"): _YES, Atom("unregister"): Atom("ok")}
        answer = answers.get(kind) if isinstance(kind, Atom) else None
        self._reply(caller, tag, (_ERROR, _NOT_SUPPORTED) if answer is None else answer)

    def _reply_call(self, caller: Pid, tag: Any, module: Any, function: Any, args: Any
                    ) -> None:
        """Run an rpc call (worker thread) and answer it, whatever it returned."""
        value = self._run_call(module, function, args)
        try:
            self._reply(caller, tag, value)
        except EncodeError as exc:
            reason = (Atom("python_exception"), Atom("EncodeError"),
                      f"the result has no Erlang term: {exc}".encode("utf-8", "replace"))
            self._reply(caller, tag, (_BADRPC, (_EXIT_TAG, (reason, []))))

    def _reply(self, caller: Pid, tag: Any, value: Any) -> None:
        self._send(self._node_pid, caller, (tag, value), raise_nodedown=False)

    def _submit(self, job: Callable[[], Any]) -> bool:
        """Run ``job`` on the worker pool; False if the node no longer runs."""
        if self._state != "running":
            return False
        return self._workers.submit(job)

    # --------------------------------------------------------- user streams

    def open_stream(self, peer: str, priority: int = 128) -> StreamRef:
        """Open a user stream to ``peer`` (connecting first if needed).

        The calling thread owns the returned :class:`~quicdist.StreamRef`.
        ``priority`` is 16 (most urgent) to 255; 0-15 are the distribution
        traffic's. The peer learns of the stream with its first bytes.

        Raises:
            ConfigurationError (a ValueError): ``priority`` outside 16..255,
                an invalid node name, or a carrier without user streams (TCP).
            NotConnected: the peer is not connected and cannot be.
            NodeDown: the connection went down while the stream was opened.
        """
        check_priority(priority)
        c = self._ensure_connected(peer)
        connection = c.connection
        if not isinstance(connection, Connection):
            raise ConfigurationError(f"user streams need the QUIC carrier ({peer} is "
                                     f"connected over {type(connection).__name__})")
        return self._streams.open(connection, peer, priority, self.connect_timeout)

    def accept_streams(self, peer: str, *, mailbox: Mailbox | None = None,
                       priority: int = 128) -> Acceptor:
        """Join the acceptor pool for the streams ``peer`` opens.

        The streams are handed round-robin to the pool's members: a thread
        takes its share with :meth:`Acceptor.accept`; a ``mailbox`` member
        owns its streams at once and receives them as ``("quic_dist_stream",
        Ref, ...)`` messages. Replies on accepted streams go at ``priority``.
        Without any member, a peer's new stream is reset with 0x100.

        Raises:
            ConfigurationError: an invalid node name or priority.
            NodeDown: the node is stopped.
        """
        if not isinstance(peer, str) or not valid_node_name(peer) or peer == self.name:
            raise ConfigurationError(f"invalid peer node name {peer!r}")
        check_priority(priority)
        if mailbox is not None and (not isinstance(mailbox, Mailbox) or mailbox.node is not self):
            raise ConfigurationError(f"{mailbox!r} is not a Mailbox of {self.name}")
        return self._streams.accept_streams(peer, mailbox, priority)

    def stop_accepting(self, acceptor: Acceptor) -> None:
        """Take ``acceptor`` out of its pool (same as ``acceptor.close()``)."""
        self._streams.stop_accepting(acceptor)

    def list_streams(self, peer: str | None = None) -> list[dict[str, Any]]:
        """The open user streams of every connected node, or of ``peer``: their
        :meth:`StreamRef.info` dicts."""
        return self._streams.list(peer)

    def _user_stream_event(self, c: _Conn, event: CarrierEvent) -> None:
        connection = c.connection
        if isinstance(connection, Connection):
            self._streams.on_event(connection, c.peer_name, c.state == "up", event)


class _WorkerPool:
    """Threads that run peers' rpc calls; started on demand, joined by :meth:`stop`."""

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._jobs: queue.SimpleQueue[Callable[[], Any] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._stopped = False

    def submit(self, job: Callable[[], Any]) -> bool:
        with self._lock:
            if self._stopped:
                return False
            # Each job claims an idle worker, or a new one while under the
            # limit: a burst of calls runs in parallel, not one by one.
            if self._idle > 0:
                self._idle -= 1
            elif len(self._threads) < self._size:
                thread = threading.Thread(target=self._run, daemon=True,
                                          name=f"{self._name}-{len(self._threads)}")
                self._threads.append(thread)
                thread.start()
            self._jobs.put(job)
        return True

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception:
                logger.exception("an rpc job failed")
            with self._lock:
                self._idle += 1

    def stop(self, timeout: float | None) -> None:
        with self._lock:
            self._stopped = True
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(None)
        deadline = Deadline(timeout)
        for thread in threads:
            thread.join(deadline.timeout())


def _node_of(dest: Any, local: str) -> str:
    """The node a destination lives on (TypeError for what is not a destination)."""
    if isinstance(dest, Pid | Reference):
        return str(dest.node)
    if isinstance(dest, str):
        return local
    if isinstance(dest, tuple) and len(dest) == 2 and all(isinstance(x, str) for x in dest):
        return str(dest[1])
    raise TypeError(f"a destination is a Pid, a registered name, (name, node) or an "
                    f"alias Reference, not {dest!r}")
