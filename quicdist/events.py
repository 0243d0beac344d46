"""Events the sans-I/O carrier (:mod:`quicdist.protocol`) reports.

The I/O thread drains them after feeding the protocol datagrams and timers,
and hands them to the layer above (the node, user streams, tests).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConnectionClosed


__all__ = [
    "CarrierEvent",
    "ConnectionIdIssued",
    "ConnectionIdRetired",
    "ConnectionTerminated",
    "ControlData",
    "DistFrames",
    "HandshakeCompleted",
    "UserStreamData",
    "UserStreamReset",
    "UserStreamStopped",
]


class CarrierEvent:
    """Base class of the carrier's events."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class HandshakeCompleted(CarrierEvent):
    """QUIC and TLS are up: the distribution handshake may start on stream 0.

    ``peer_subject`` is the subject of the peer's certificate (RFC 4514
    string), or ``""`` when it presented none that was checked. The TCP
    carrier (:mod:`quicdist.tcp`) reports it as soon as the TCP connection
    exists, with ``alpn`` and ``peer_subject`` empty.
    """

    alpn: str
    peer_subject: str


@dataclass(frozen=True, slots=True)
class ControlData(CarrierEvent):
    """Raw bytes from the control stream (0): handshake messages, then ticks.

    The handshake on stream 0 is unframed (PROTOCOL.md §3): message
    boundaries are parsed by the handshake state machine, never inferred from
    how these chunks were cut. (Over TCP each event is exactly one
    handshake message, its 2-byte length stripped.)
    """

    data: bytes


@dataclass(frozen=True, slots=True)
class DistFrames(CarrierEvent):
    """Complete distribution frames from one data stream, in order (ticks left out)."""

    stream_id: int
    frames: list[bytes]
    ticks: int = 0


@dataclass(frozen=True, slots=True)
class UserStreamData(CarrierEvent):
    """Raw bytes on a user stream; ``fin`` once the peer finished sending."""

    stream_id: int
    data: bytes
    fin: bool


@dataclass(frozen=True, slots=True)
class UserStreamReset(CarrierEvent):
    """The peer reset (RESET_STREAM) a user stream with ``code``."""

    stream_id: int
    code: int


@dataclass(frozen=True, slots=True)
class UserStreamStopped(CarrierEvent):
    """The peer asked us to stop sending (STOP_SENDING) on a user stream."""

    stream_id: int
    code: int


@dataclass(frozen=True, slots=True)
class ConnectionTerminated(CarrierEvent):
    """The connection is closed; ``error`` says how (a ConnectionClosed subclass)."""

    error: ConnectionClosed


@dataclass(frozen=True, slots=True)
class ConnectionIdIssued(CarrierEvent):
    """This side issued a new connection ID (a listener must route it here)."""

    connection_id: bytes


@dataclass(frozen=True, slots=True)
class ConnectionIdRetired(CarrierEvent):
    """A connection ID of this side is retired (a listener drops its route)."""

    connection_id: bytes
