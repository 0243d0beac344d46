"""Batched UDP I/O: GSO on send, GRO on receive, plain calls where the kernel has neither.

Per-packet cost is what limits a Python QUIC stack, and on Linux a large
part of it is one syscall per datagram. With UDP generic segmentation
offload (``UDP_SEGMENT``) one ``sendmsg`` carries up to 64 equal-sized
datagrams (the last may be shorter); with generic receive offload
(``UDP_GRO``) one ``recvmsg`` returns several datagrams from the same peer
glued together, with their size in a control message. Both are probed per
socket and quietly turned off when the kernel refuses them.
"""

from __future__ import annotations

import errno
import socket
import struct
import sys
from collections import deque
from typing import Any


__all__ = ["UdpIO", "allow_connected_sockets", "connected_socket", "path_mtu_payload",
           "set_dont_fragment"]

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
#: The kernel's limit on segments in one GSO send.
_MAX_SEGMENTS = 64
#: Largest payload one sendmsg may carry (IP length field minus headers).
_MAX_GSO_BYTES = 65000
_RECV_SIZE = 65535
_GRO_CMSG_SPACE = socket.CMSG_SPACE(4)
_FATAL_GSO = (errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.EIO, errno.EMSGSIZE)


class UdpIO:
    """Send and receive datagrams on one non-blocking UDP socket.

    ``connected``: the socket was ``connect()``-ed (a dialing connection);
    addresses are then ignored on send and the peer's is reported on receive.
    """

    __slots__ = ("sock", "connected", "peer", "gso", "gro", "sent_calls", "recv_calls",
                 "too_big")

    def __init__(self, sock: socket.socket, *, connected: bool, peer: Any = None,
                 gso: bool = True, gro: bool = True) -> None:
        self.sock = sock
        self.connected = connected
        self.peer = peer
        self.gso = gso and hasattr(sock, "sendmsg")
        self.gro = False
        if gro:
            try:
                sock.setsockopt(SOL_UDP, UDP_GRO, 1)
                self.gro = True
            except OSError:
                pass
        self.sent_calls = 0
        self.recv_calls = 0
        #: set when a send failed with EMSGSIZE (the path shrank); the owner clears it
        self.too_big = False

    # ------------------------------------------------------------------ send

    def send(self, backlog: deque[tuple[bytes, Any]]) -> None:
        """Send from the front of ``backlog`` until it is empty or the socket is full.

        Sent datagrams are removed; the rest stay, in order. Errors that only
        mean "this datagram did not get there" (unreachable, too big) drop
        the datagram as the network would; others propagate.
        """
        sock = self.sock
        while backlog:
            first, addr = backlog[0]
            count = 1
            if self.gso:
                size = len(first)
                total = size
                n = len(backlog)
                while count < n and count < _MAX_SEGMENTS:
                    data, other = backlog[count]
                    length = len(data)
                    if other != addr or length > size or total + length > _MAX_GSO_BYTES:
                        break
                    count += 1
                    total += length
                    if length < size:
                        break  # a shorter datagram can only be the last segment
            try:
                if count == 1:
                    if self.connected:
                        sock.send(first)
                    else:
                        sock.sendto(first, addr)
                else:
                    payload = b"".join(backlog[i][0] for i in range(count))
                    control = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", len(first)))]
                    if self.connected:
                        sock.sendmsg([payload], control)
                    else:
                        sock.sendmsg([payload], control, 0, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if count > 1 and exc.errno in _FATAL_GSO:
                    self.gso = False  # this kernel or path cannot: send them one by one
                    continue
                if exc.errno == errno.EMSGSIZE:
                    self.too_big = True
                elif exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH,
                                       errno.ENETUNREACH):
                    raise
            self.sent_calls += 1
            for _ in range(count):
                backlog.popleft()

    # --------------------------------------------------------------- receive

    def recv(self, max_calls: int) -> list[tuple[bytes, Any]]:
        """Up to ``max_calls`` receive calls' worth of datagrams (GRO buffers split).

        Raises ConnectionRefusedError on a connected socket whose peer sent
        back ICMP port unreachable.
        """
        out: list[tuple[bytes, Any]] = []
        sock = self.sock
        for _ in range(max_calls):
            try:
                if self.gro:
                    data, ancdata, _flags, addr = sock.recvmsg(_RECV_SIZE, _GRO_CMSG_SPACE)
                else:
                    data, addr = sock.recvfrom(_RECV_SIZE)
                    ancdata = []
            except (BlockingIOError, InterruptedError):
                break
            self.recv_calls += 1
            if self.connected:
                addr = self.peer
            segment = 0
            for level, kind, value in ancdata:
                if level == SOL_UDP and kind == UDP_GRO and len(value) >= 2:
                    segment = int.from_bytes(value[:4] if len(value) >= 4 else value[:2],
                                             sys.byteorder)
            if segment and segment < len(data):
                view = memoryview(data)
                out.extend((bytes(view[i:i + segment]), addr)
                           for i in range(0, len(data), segment))
            else:
                out.append((data, addr))
        return out


# Linux socket options for path-MTU handling.
_IP_MTU_DISCOVER = 10
_IP_PMTUDISC_DO = 2
_IP_MTU = 14
_IPV6_MTU_DISCOVER = 23
_IPV6_PMTUDISC_DO = 2
_IPV6_MTU = 24
_UDP_IPV4_OVERHEAD = 28
_UDP_IPV6_OVERHEAD = 48


def _is_wildcard(family: int, host: str) -> bool:
    return socket.inet_pton(family, host) == bytes(4 if family == socket.AF_INET else 16)


def allow_connected_sockets(sock: socket.socket) -> Any:
    """Let connected sockets share a bound listening socket's port.

    Sets ``SO_REUSEPORT`` *after* the bind, so binding itself still fails
    when the port is taken (and an ephemeral port is never one another
    socket holds). Returns the listener's address, which
    :func:`connected_socket` binds to, or None when the kernel has no
    ``SO_REUSEPORT``.
    """
    reuseport = getattr(socket, "SO_REUSEPORT", None)
    if reuseport is None:
        return None
    try:
        sock.setsockopt(socket.SOL_SOCKET, reuseport, 1)
    except OSError:
        return None
    return sock.getsockname()


def connected_socket(family: int, local: Any, peer: Any) -> socket.socket:
    """A non-blocking UDP socket on a listener's port, connected to ``peer``
    (``local`` is the listener's address, see :func:`allow_connected_sockets`).

    The kernel delivers ``peer``'s datagrams to that address to this socket
    rather than to the listener's. A wildcard listener's connected socket
    binds to the address the kernel's route to ``peer`` starts from, which
    is where the listener's own answers come from too: what ``peer`` sends to
    another local address still reaches the listener. Raises OSError (or
    ValueError for a malformed address) when it cannot be made.
    """
    if _is_wildcard(family, local[0]):
        with _route_probe(family, peer) as probe:
            source = probe.getsockname()
        local = (source[0], local[1], *source[2:])
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(local)
        sock.connect(peer)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def set_dont_fragment(sock: socket.socket) -> None:
    """Send with DF set, so an oversized datagram fails (EMSGSIZE) instead of
    being fragmented: path-MTU discovery depends on it."""
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER, _IPV6_PMTUDISC_DO)
        else:
            sock.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _IP_PMTUDISC_DO)
    except OSError:
        pass


def path_mtu_payload(family: int, peer: Any) -> int | None:
    """The largest UDP payload the kernel's route to ``peer`` carries, or None.

    Asks a throw-away socket connected to ``peer`` (no packet is sent).
    """
    try:
        with _route_probe(family, peer) as probe:
            if family == socket.AF_INET6:
                mtu = probe.getsockopt(socket.IPPROTO_IPV6, _IPV6_MTU)
                return int(mtu) - _UDP_IPV6_OVERHEAD
            mtu = probe.getsockopt(socket.IPPROTO_IP, _IP_MTU)
            return int(mtu) - _UDP_IPV4_OVERHEAD
    except OSError:
        return None


def _route_probe(family: int, peer: Any) -> socket.socket:
    """A throw-away UDP socket connected to ``peer`` (no packet is sent), to
    ask the kernel about its route there; use it in a ``with`` block."""
    probe = socket.socket(family, socket.SOCK_DGRAM)
    try:
        probe.connect(peer)
    except BaseException:
        probe.close()
        raise
    return probe
