"""Settings of the QUIC carrier (frozen, validated at construction)."""

from __future__ import annotations

from dataclasses import dataclass

from ._accel import DEFAULT_MAX_FRAME_SIZE
from .errors import ConfigurationError


__all__ = ["CarrierConfig"]

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True)
class CarrierConfig:
    """How one node's QUIC connections behave.

    Attributes:
        idle_timeout: seconds without any packet from the peer before the
            connection is dropped (upstream default 300).
        keepalive_interval: seconds of silence after which a QUIC PING is
            sent (upstream default 150).
        max_datagram_size: UDP payload size of the datagrams we send at
            first and fall back to (upstream: 1452).
        pmtu_discovery: probe for larger datagrams where the path allows
            (loopback, jumbo-frame LANs), never above the peer's
            max_udp_payload_size nor the kernel's path MTU.
        pmtu_max: the largest datagram discovery may settle on (aioquic
            limits frames to 16383 bytes, so at most 16384).
        max_frame_size: the largest distribution frame accepted; a larger
            announced length closes that connection with FrameError.
        stream_window: receive credit per stream beyond what the
            application consumed (upstream grants 4 MiB per stream).
        connection_window: receive credit per connection beyond what was
            consumed (upstream: 16 MiB).
        send_buffer: bytes an outbox holds before a writer blocks.
        quantum: the most bytes one scheduling decision hands to aioquic.
        yield_inflight: while more urgent traffic (a user stream of a lower
            priority value, or distribution messages) has sent within
            ``yield_window`` seconds, less urgent user streams keep at most
            this many bytes in flight, so the urgent bytes do not queue
            behind a congestion window of bulk data (0: never yield). On a
            path whose bandwidth-delay product is larger, raise it (bulk
            throughput while urgent traffic is active is about
            ``yield_inflight`` per round trip).
        yield_window: how long after its last bytes urgent traffic counts as active.
        handshake_timeout: seconds a QUIC+TLS handshake may take.
        max_pending_handshakes: connections a listener lets handshake at
            once (each has a thread); Initial packets beyond that are dropped,
            so a flood of them cannot exhaust threads or memory.
        connected_sockets: a listener gives each accepted connection, once
            its handshake is done, a UDP socket of its own on the listener's
            port (``SO_REUSEPORT``) connected to the peer: the kernel then
            hands the peer's datagrams straight to the connection's I/O
            thread instead of through the listener's thread. (A wildcard
            listener's connected socket takes the local address its answers
            leave from.) What still reaches the listener's socket is routed
            by connection ID as before. Linux; quietly off where the kernel
            refuses. With it on, another process of the same user can bind
            the listener's port with ``SO_REUSEPORT`` too.
    """

    idle_timeout: float = 300.0
    keepalive_interval: float = 150.0
    max_datagram_size: int = 1452
    pmtu_discovery: bool = True
    pmtu_max: int = 16384
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    stream_window: int = 4 * MIB
    connection_window: int = 16 * MIB
    send_buffer: int = 1 * MIB
    quantum: int = 16 * KIB
    yield_inflight: int = 128 * KIB
    yield_window: float = 0.1
    handshake_timeout: float = 10.0
    max_pending_handshakes: int = 64
    connected_sockets: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.yield_inflight, int) or self.yield_inflight < 0:
            raise ConfigurationError("yield_inflight must be an int >= 0")
        if not isinstance(self.yield_window, int | float) or self.yield_window < 0:
            raise ConfigurationError("yield_window must be a number of seconds >= 0")
        for name in ("idle_timeout", "keepalive_interval", "handshake_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                raise ConfigurationError(f"{name} must be a positive number of seconds")
        if not 1200 <= self.max_datagram_size <= 16384:
            raise ConfigurationError(
                "max_datagram_size must be in 1200..16384 (aioquic 1.7 cannot frame more)")
        if not self.max_datagram_size <= self.pmtu_max <= 16384:
            raise ConfigurationError("pmtu_max must be in max_datagram_size..16384")
        for name in ("max_frame_size", "stream_window", "connection_window", "send_buffer",
                     "quantum", "max_pending_handshakes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigurationError(f"{name} must be a positive int")
        if self.connection_window < self.stream_window:
            raise ConfigurationError("connection_window must be at least stream_window")
