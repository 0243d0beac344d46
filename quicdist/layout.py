"""The stream layout of quic_dist v1.3.0 (PROTOCOL.md §2), in one place.

============  ==========  ===============================================
stream ids    opened by   purpose
============  ==========  ===============================================
0             client      control: the distribution handshake, then ticks
4, 8, 12, 16  client      the client's distribution data streams
1, 5, 9, 13   server      the server's distribution data streams
20, 24, ...   client      user streams
17, 21, ...   server      user streams
============  ==========  ===============================================

A stream is classified by its id alone (:func:`classify`). Distribution
messages toward a peer are all sent on one data stream (:func:`dist_send_stream`:
16 for the client, 13 for the server), which keeps Erlang's ordering
guarantee and is what an Erlang peer running quic v1.3.0 expects; frames are
accepted on any distribution data stream, each with its own reassembly buffer.

aioquic discards the ids a side skips when it opens a higher one, so each
side opens (reserves) its distribution streams in increasing id order
(:func:`reserved_streams`) before it sends on any of them or opens a user
stream. Reserving sends nothing: the peer learns of the lower ids implicitly
when a higher one arrives.
"""

from __future__ import annotations

import enum


__all__ = [
    "CONTROL_STREAM",
    "DATA_STREAM_COUNT",
    "StreamKind",
    "classify",
    "dist_send_stream",
    "first_user_stream",
    "is_client_initiated",
    "reserved_streams",
    "urgency_of_kind",
]

#: The control stream: the distribution handshake, then only ticks.
CONTROL_STREAM = 0
#: Distribution data streams per side in quic_dist v1.3.0.
DATA_STREAM_COUNT = 4

_CLIENT_DATA = (4, 8, 12, 16)
_SERVER_DATA = (1, 5, 9, 13)
_FIRST_USER_CLIENT = 20
_FIRST_USER_SERVER = 17


class StreamKind(enum.Enum):
    """What a QUIC stream carries."""

    CONTROL = "control"
    DIST = "dist"
    USER = "user"
    #: Not a bidirectional stream quic_dist uses (unidirectional ids).
    INVALID = "invalid"


def is_client_initiated(stream_id: int) -> bool:
    """Whether the dialing side (the QUIC client) opened ``stream_id``."""
    return stream_id & 1 == 0


def classify(stream_id: int) -> StreamKind:
    """The kind of ``stream_id``, from the id alone (PROTOCOL.md §2).

    Client-initiated ids (even) are user streams from 20 on, server-initiated
    ids (odd) from 17 on; 0 is the control stream; every other bidirectional
    id is a distribution data stream. Unidirectional ids (bit 1 set) are not
    part of the layout.
    """
    if stream_id < 0:
        raise ValueError(f"stream ids are non-negative, got {stream_id}")
    if stream_id & 2:
        return StreamKind.INVALID
    if stream_id == CONTROL_STREAM:
        return StreamKind.CONTROL
    if stream_id & 1 == 0:
        return StreamKind.USER if stream_id >= _FIRST_USER_CLIENT else StreamKind.DIST
    return StreamKind.USER if stream_id >= _FIRST_USER_SERVER else StreamKind.DIST


def reserved_streams(is_client: bool) -> tuple[int, ...]:
    """The ids a side opens, in this order, before anything else.

    The client: 0 (control), then 4, 8, 12, 16; the server: 1, 5, 9, 13.
    """
    return (CONTROL_STREAM, *_CLIENT_DATA) if is_client else _SERVER_DATA


def dist_send_stream(is_client: bool) -> int:
    """The data stream that carries all of a side's distribution messages."""
    return _CLIENT_DATA[-1] if is_client else _SERVER_DATA[-1]


def first_user_stream(is_client: bool) -> int:
    """The lowest user-stream id the side may open."""
    return _FIRST_USER_CLIENT if is_client else _FIRST_USER_SERVER


def urgency_of_kind(kind: StreamKind, user_priority: int = 128) -> int:
    """Scheduler urgency: 0 control, 1 distribution data, 16..255 user streams."""
    if kind is StreamKind.CONTROL:
        return 0
    if kind is StreamKind.DIST:
        return 1
    if not 16 <= user_priority <= 255:
        raise ValueError(f"user stream priority must be in 16..255, got {user_priority}")
    return user_priority
