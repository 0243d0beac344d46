"""The QUIC carrier of the distribution protocol, sans I/O.

:class:`CarrierProtocol` drives one aioquic ``QuicConnection`` and adds what
aioquic leaves to its user (see STYLE.md §4):

* the stream layout of quic_dist v1.3.0 (:mod:`quicdist.layout`): the
  control stream, the reserved distribution data streams opened in order,
  user streams above them;
* distribution framing: one :class:`FrameDecoder` per data stream, frames
  handed up in order (PROTOCOL.md §4);
* priorities: quicdist, not aioquic, decides which stream's bytes enter
  aioquic next, with a strict-priority, round-robin-within-urgency
  :class:`SendScheduler`, and keeps only about one congestion window of
  bytes queued inside aioquic, so urgent bytes overtake bulk data within
  about one round trip;
* send backpressure: bytes wait in per-stream *outboxes* owned by the layer
  above (bounded there), and are pulled from them quantum by quantum;
* receive backpressure: receive credit (MAX_STREAM_DATA / MAX_DATA) follows
  what the application consumed (:meth:`CarrierProtocol.consume`) instead of
  aioquic's policy of doubling it whatever the reader does; a stream's
  bytes are only handed to aioquic within the credit the peer gave that
  stream, so a reader that stops stalls its own stream and nothing else
  (at most half of the connection window is ever held back for unread
  bytes);
* keep-alive PINGs and typed close reasons.

Like aioquic, every method that depends on time takes ``now``; nothing here
touches a socket, a thread or a clock. The I/O thread in
:mod:`quicdist.sync.connection` is the only caller.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

from aioquic import tls as aioquic_tls
from aioquic._buffer import Buffer
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicNetworkPath, stream_is_client_initiated
from aioquic.quic.packet import QuicFrameType, QuicPacketType, pull_quic_transport_parameters
from aioquic.quic.packet_builder import (
    QuicDeliveryState,
    QuicPacketBuilder,
    QuicPacketBuilderStop,
)
from aioquic.quic.recovery import QuicPacketPacer
from aioquic.quic.stream import QuicStream

from ._accel import FrameDecoder, SendScheduler
from .config import CarrierConfig
from .errors import (
    ConnectionClosed,
    ConnectionClosedError,
    FrameError,
    LocalProtocolError,
    RemoteProtocolError,
    StreamClosed,
)
from .events import (
    CarrierEvent,
    ConnectionIdIssued,
    ConnectionIdRetired,
    ConnectionTerminated,
    ControlData,
    DistFrames,
    HandshakeCompleted,
    UserStreamData,
    UserStreamReset,
    UserStreamStopped,
)
from .layout import (
    CONTROL_STREAM,
    StreamKind,
    classify,
    dist_send_stream,
    reserved_streams,
    urgency_of_kind,
)
from .tls import MutualTLSConnection, connection_closed_error


__all__ = ["BytesOutbox", "CarrierConnection", "CarrierProtocol", "Outbox"]

logger = logging.getLogger("quicdist.carrier")

#: Application error codes of CONNECTION_CLOSE / RESET_STREAM we send.
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1

#: aioquic 1.7 writes a STREAM frame's length as a 2-byte varint, so no
#: frame may carry 16384 bytes or more; datagrams are kept at this size or
#: below (every frame then fits).
AIOQUIC_MAX_DATAGRAM = 16384
#: Event drains between two sweeps of the bookkeeping of finished streams.
_SWEEP_EVERY = 256
#: Consecutive probe timeouts that make large datagrams suspect (a black hole).
_BLACK_HOLE_PTOS = 3
#: Seconds after a fallback before the path is searched again.
_MTU_REPROBE_AFTER = 30.0
#: QUIC's default for a peer that announces no max_udp_payload_size.
_DEFAULT_MAX_UDP_PAYLOAD = 65527

_MAX_STREAM_DATA_CAPACITY = 1 + 2 * 8
_CONNECTION_LIMIT_CAPACITY = 1 + 8


class Outbox(Protocol):
    """Where a stream's outgoing bytes wait until the scheduler pulls them.

    The layer above owns each outbox (and bounds it: a full outbox blocks the
    writer there). The protocol only calls :meth:`take`, from the I/O thread.
    """

    def take(self, max_bytes: int) -> tuple[bytes, bool]:
        """Up to ``max_bytes`` of pending bytes, and whether the stream ends after them."""
        ...


class BytesOutbox:
    """A plain, unbounded, single-threaded outbox (tests and internal use)."""

    __slots__ = ("_buffer", "_fin")

    def __init__(self, data: bytes = b"", fin: bool = False) -> None:
        self._buffer = bytearray(data)
        self._fin = fin

    def write(self, data: bytes, fin: bool = False) -> None:
        if self._fin:
            raise StreamClosed("write after the end of the stream")
        self._buffer += data
        self._fin = fin

    def take(self, max_bytes: int) -> tuple[bytes, bool]:
        chunk = bytes(self._buffer[:max_bytes])
        del self._buffer[:max_bytes]
        return chunk, self._fin and not self._buffer

    def __len__(self) -> int:
        return len(self._buffer)


class BurstPacer(QuicPacketPacer):
    """aioquic's pacer, with its burst counted in packets.

    aioquic floors the time per packet at 1 µs but sizes the bucket from the
    unfloored rate (2 to 16 packets at ``cwnd / srtt``). Once that rate
    passes ~23 GB/s, which loopback reaches (a congestion window of tens of
    MB, a millisecond of smoothed RTT), the bucket holds less than one
    packet's time, and as the clock does not move within one
    ``datagrams_to_send()`` call, each call yields one or two packets: the
    I/O loop then runs once per packet, without GSO batching, and bulk
    throughput falls by a third. Here the bucket always holds the 2..16
    packets aioquic means it to, at the floored time per packet.
    """

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        super().update_rate(congestion_window, smoothed_rtt)
        size = self._max_datagram_size
        packets = max(2, min(congestion_window // 4, 16 * size) // size)
        if self.packet_time is not None and self.bucket_max < packets * self.packet_time:
            self.bucket_max = packets * self.packet_time


class CarrierConnection(MutualTLSConnection):
    """An aioquic connection whose receive credit is granted by the application.

    aioquic doubles a stream's MAX_STREAM_DATA (and the connection's MAX_DATA)
    whenever the peer has used half of it, whether or not anybody reads the
    data. Here the credit of a stream is whatever the protocol put in
    :attr:`stream_credit` (consumed bytes + window), and the connection's is
    :attr:`connection_credit`; a reader that falls behind stops the credit
    and the sender blocks, so memory stays bounded.

    It also builds 1-RTT packets more cheaply than aioquic in the steady
    state (:meth:`_write_application`): aioquic visits every stream the
    connection ever opened for every packet it builds, twice (credit, then
    data), and a quic_dist connection holds up to nine streams that are
    idle nearly always (the reserved distribution streams, the control
    stream between ticks). Here only streams that may have something to send
    are visited: idle ones leave aioquic's send queue
    (:meth:`_prune_send_queue`) and come back through every path that can
    give them work (our own calls, and the peer's frames for them); a
    stream's credit is only looked at when it changed or its frame was lost.

    Relies on aioquic 1.7 internals (``_write_stream_limits``,
    ``_write_connection_limits``, ``_streams_queue``, the ``_write_*_frame``
    helpers, ``Limit``), pinned in pyproject.toml.
    """

    def __init__(self, *, configuration: QuicConfiguration, **kwargs: Any) -> None:
        super().__init__(configuration=configuration, **kwargs)
        self._loss._pacer = BurstPacer(max_datagram_size=self._max_datagram_size)
        #: stream id -> the highest MAX_STREAM_DATA we are willing to grant.
        self.stream_credit: dict[int, int] = {}
        #: the highest MAX_DATA we are willing to grant.
        self.connection_credit: int = configuration.max_data
        #: the peer's max_udp_payload_size transport parameter (aioquic
        #: checks it but does not keep it; we must never send more).
        self.peer_max_udp_payload: int = _DEFAULT_MAX_UDP_PAYLOAD
        #: (ping uid, size) of the path-MTU probe in progress, if any.
        self.mtu_probe: tuple[int, int] | None = None
        #: outcome of the last probe: (size, acked), acked None when the probe
        #: could not be padded to its full size (no answer) — read by the protocol.
        self.mtu_probe_result: tuple[int, bool | None] | None = None
        self._mtu_probe_full = False
        #: set when the peer raised a stream's credit or the stream count
        #: (MAX_STREAM_DATA, MAX_STREAMS): streams waiting on them may go on.
        self.limits_moved = False
        #: ids of streams that may owe the peer a MAX_STREAM_DATA frame.
        self._limits_due: set[int] = set()
        #: ids of the streams in aioquic's send queue as of the last pruning
        #: (streams aioquic created since are in the queue but not here).
        self._queued: set[int] = set()

    # ------------------------------------------------ the send queue, pruned

    def grant_stream_credit(self, stream_id: int, credit: int) -> None:
        """Let the peer send up to offset ``credit`` on ``stream_id``."""
        self.stream_credit[stream_id] = credit
        self._limits_due.add(stream_id)

    def _on_max_stream_data_delivery(self, delivery: QuicDeliveryState, stream: QuicStream
                                     ) -> None:
        super()._on_max_stream_data_delivery(delivery, stream)
        if delivery != QuicDeliveryState.ACKED:
            self._limits_due.add(stream.stream_id)  # type: ignore[arg-type]

    def _requeue(self, stream_id: int) -> None:
        """Put a stream back in aioquic's send queue (it may have work now)."""
        if stream_id in self._queued:
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        if stream not in self._streams_queue:
            # To the front: a stream that was idle (a tick, a distribution
            # message after a pause) goes before the busy ones, which
            # aioquic's round-robin then serves in turn.
            self._streams_queue.insert(0, stream)
        self._queued.add(stream_id)

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        super().send_stream_data(stream_id, data, end_stream)
        self._requeue(stream_id)

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        super().reset_stream(stream_id, error_code)
        self._requeue(stream_id)

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        super().stop_stream(stream_id, error_code)
        self._requeue(stream_id)

    def _handle_stream_frame(self, context: Any, frame_type: int, buf: Buffer) -> None:
        start = buf.tell()
        super()._handle_stream_frame(context, frame_type, buf)
        if frame_type & 1:
            # Only a FIN can finish the receiving side (data that fills a
            # gap before an earlier FIN finds the stream still queued: a
            # known final size keeps it there).
            self._requeue_from_frame(buf, start)

    def _handle_reset_stream_frame(self, context: Any, frame_type: int, buf: Buffer) -> None:
        start = buf.tell()
        super()._handle_reset_stream_frame(context, frame_type, buf)
        self._requeue_from_frame(buf, start)

    def _handle_stop_sending_frame(self, context: Any, frame_type: int, buf: Buffer) -> None:
        start = buf.tell()
        super()._handle_stop_sending_frame(context, frame_type, buf)
        self._requeue_from_frame(buf, start)

    def _requeue_from_frame(self, buf: Buffer, start: int) -> None:
        # Each of these frames starts with the stream id (the frame type is
        # already read); the frame may have finished a stream (to discard) or
        # asked for a RESET_STREAM.
        end = buf.tell()
        buf.seek(start)
        stream_id = buf.pull_uint_var()
        buf.seek(end)
        self._requeue(stream_id)

    @staticmethod
    def _is_idle(stream: QuicStream) -> bool:
        """Nothing to send, nothing in flight, nothing that ACKs or losses can change.

        Only our own calls and the peer's frames for the stream can give
        such a stream work again, and each of them requeues it.
        """
        sender = stream.sender
        receiver = stream.receiver
        # (All acked: nothing pending either. aioquic's buffer_is_empty is
        # only brought up to date when it next looks for a frame.)
        return (sender._buffer_start == sender._buffer_stop and sender._buffer_fin is None
                and sender._reset_error_code is None
                and receiver._stop_error_code is None and receiver._final_size is None
                and not stream.is_finished)

    def _prune_send_queue(self) -> None:
        queue = self._streams_queue
        keep = [stream for stream in queue if not self._is_idle(stream)]
        if len(keep) != len(queue):
            self._streams_queue = keep
        self._queued = {stream.stream_id for stream in keep}  # type: ignore[misc]

    def _steady(self, network_path: QuicNetworkPath) -> bool:
        """Whether a 1-RTT packet can carry nothing but ACK, credit and
        stream frames (anything else goes through aioquic's own builder)."""
        return (self._handshake_complete
                and not self._handshake_done_pending
                and (network_path.is_validated or network_path.local_challenge_sent)
                and not network_path.remote_challenges
                and not self._retire_connection_ids
                and not self._streams_blocked_pending
                and not self._ping_pending
                and not self._probe_pending
                and not self._datagrams_pending
                and self._cryptos[aioquic_tls.Epoch.ONE_RTT].send.is_valid()
                and self._crypto_streams[aioquic_tls.Epoch.ONE_RTT].sender.buffer_is_empty
                and all(cid.was_sent for cid in self._host_cids))

    def _write_application(self, builder: QuicPacketBuilder, network_path: QuicNetworkPath,
                           now: float) -> None:
        if not self._steady(network_path):
            try:
                super()._write_application(builder, network_path, now)
            finally:
                self._prune_send_queue()
            return
        try:
            self._write_steady(builder, now)
        finally:
            self._prune_send_queue()

    def _write_steady(self, builder: QuicPacketBuilder, now: float) -> None:
        # The same packets aioquic's _write_application builds when only
        # ACK, MAX_DATA/MAX_STREAMS, MAX_STREAM_DATA and stream frames
        # (STREAM, RESET_STREAM, STOP_SENDING) are due, visiting only the
        # streams that may have some.
        crypto = self._cryptos[aioquic_tls.Epoch.ONE_RTT]
        space = self._spaces[aioquic_tls.Epoch.ONE_RTT]
        pacer = self._loss._pacer
        streams = self._streams
        limits_due = self._limits_due
        # Unlike aioquic, look before building: an empty packet costs as
        # much to start and drop as a small one to send.
        while self._steady_work(space, now):
            if space.ack_at is None or space.ack_at >= now:  # pacing, unless an ACK is due
                self._pacing_at = pacer.next_send_time(now=now)
                if self._pacing_at is not None:
                    break
            builder.start_packet(QuicPacketType.ONE_RTT, crypto)
            if space.ack_at is not None and space.ack_at <= now:
                self._write_ack_frame(builder=builder, space=space, now=now)
            self._write_connection_limits(builder=builder, space=space)
            for stream_id in list(limits_due):
                stream = streams.get(stream_id)
                if stream is not None:
                    self._write_stream_limits(builder=builder, space=space, stream=stream)
                limits_due.discard(stream_id)
            discarded = self._write_queued_streams(builder, space)
            if builder.packet_is_empty:
                if not discarded:
                    break  # (a discard may owe the peer MAX_STREAMS: one more round)
            else:
                pacer.update_after_send(now=now)

    def nothing_to_send(self, now: float) -> bool:
        """True only when ``datagrams_to_send(now)`` would return nothing and
        change nothing, known without building a packet (False: it may send).

        The caller that skips the call clears the pacing timer, as the call
        would have.
        """
        if (self._close_pending or not self._handshake_confirmed
                or len(self._network_paths) != 1
                or (self._is_client and self._remote_preferred_address is not None)
                or not self._steady(self._network_paths[0])):
            return False
        if self._streams_queue:
            self._prune_send_queue()  # (what the skipped call would have done)
        return not self._steady_work(self._spaces[aioquic_tls.Epoch.ONE_RTT], now)

    def _steady_work(self, space: Any, now: float) -> bool:
        """Whether a steady-state 1-RTT packet has something to carry: an ACK
        that is due, credit (connection or stream), or a queued stream's frame
        or discard."""
        return bool((space.ack_at is not None and space.ack_at <= now) or self._limits_due
                    or self._due_connection_limits() or self._queue_has_work())

    def _due_connection_limits(self) -> list[Any]:
        """The connection limits (MAX_DATA, MAX_STREAMS) that owe the peer a
        frame, MAX_DATA raised to the granted credit first."""
        max_data = self._local_max_data
        if self.connection_credit > max_data.value:
            max_data.value = self.connection_credit
        due = [max_data] if max_data.value != max_data.sent else []
        for limit in (self._local_max_streams_bidi, self._local_max_streams_uni):
            # MAX_STREAMS is batched, as aioquic does
            if limit.value != limit.sent and limit.sent - limit.used < limit.value - limit.sent:
                due.append(limit)
        return due

    def _queue_has_work(self) -> bool:
        """Whether a queued stream has a frame to send or is to be discarded."""
        for stream in self._streams_queue:
            sender = stream.sender
            if (stream.is_finished or stream.receiver.stop_pending or sender.reset_pending
                    or (not stream.is_blocked
                        and (len(sender._pending) or sender._pending_eof))):
                return True
        return False

    def _write_queued_streams(self, builder: QuicPacketBuilder, space: Any) -> bool:
        """Stream frames for the queued streams, round-robin; True if any was discarded."""
        queue = self._streams_queue
        sent: list[QuicStream] = []
        discarded: list[QuicStream] = []
        try:
            for stream in queue:
                if stream.is_finished:
                    stream_id: int = stream.stream_id  # type: ignore[assignment]
                    self._streams.pop(stream_id)
                    if stream_is_client_initiated(stream_id) != self._is_client:
                        # the peer may open another stream in its place
                        self._stream_limit(stream_id).value += 1
                    discarded.append(stream)
                    continue
                sender = stream.sender
                if stream.receiver.stop_pending:
                    self._write_stop_sending_frame(builder=builder, stream=stream)
                if sender.reset_pending:
                    self._write_reset_stream_frame(builder=builder, stream=stream)
                elif not stream.is_blocked and not sender.buffer_is_empty:
                    used = self._write_stream_frame(
                        builder=builder, space=space, stream=stream,
                        max_offset=min(sender.highest_offset + self._remote_max_data
                                       - self._remote_max_data_used,
                                       stream.max_stream_data_remote))
                    self._remote_max_data_used += used
                    if used > 0:
                        sent.append(stream)
        finally:
            if sent or discarded:
                # Served streams go to the back of the queue; discarded ones leave it.
                moved = sent + discarded
                self._streams_queue = [s for s in queue if s not in moved] + sent
        return bool(discarded)

    def _handle_max_stream_data_frame(self, context: Any, frame_type: int, buf: Buffer
                                      ) -> None:
        super()._handle_max_stream_data_frame(context, frame_type, buf)
        self.limits_moved = True

    def _handle_max_streams_bidi_frame(self, context: Any, frame_type: int, buf: Buffer
                                       ) -> None:
        super()._handle_max_streams_bidi_frame(context, frame_type, buf)
        self.limits_moved = True

    @property
    def datagram_size(self) -> int:
        """The UDP payload size packets are built for now."""
        return int(self._max_datagram_size)

    def set_datagram_size(self, size: int) -> None:
        """Build packets of ``size`` bytes from now on (pacer and congestion
        control follow, so their per-packet arithmetic stays right)."""
        self._max_datagram_size = size
        loss = self._loss
        loss._pacer._max_datagram_size = size
        cc = loss._cc
        if hasattr(cc, "_max_datagram_size"):
            cc._max_datagram_size = size
        if hasattr(cc, "additive_increase_factor"):
            cc.additive_increase_factor = size

    def _parse_transport_parameters(self, data: bytes, from_session_ticket: bool = False
                                    ) -> None:
        super()._parse_transport_parameters(data, from_session_ticket)
        try:
            params = pull_quic_transport_parameters(Buffer(data=data))
        except ValueError:  # aioquic has already refused it
            return
        if params.max_udp_payload_size is not None:
            self.peer_max_udp_payload = params.max_udp_payload_size

    def _write_ping_frame(self, builder: QuicPacketBuilder, uids: list[int] = [],  # noqa: B006
                          comment: str = "") -> None:
        super()._write_ping_frame(builder, uids, comment)
        probe = self.mtu_probe
        if probe is not None and probe[0] in uids:
            # Fill the packet: the probe is a PING padded to the probe size.
            # If congestion control leaves less room, the probe proves nothing.
            room = builder.remaining_buffer_space
            # The datagram ends at the builder's capacity once padded; the
            # anti-amplification limit or the congestion window can make
            # that less than the probe size.
            self._mtu_probe_full = (room <= builder.remaining_flight_space
                                    and builder._buffer_capacity >= probe[1])
            if room > 1 and self._mtu_probe_full:
                try:
                    buf = builder.start_frame(QuicFrameType.PADDING, capacity=room)
                except QuicPacketBuilderStop:
                    self._mtu_probe_full = False
                    return
                buf.push_bytes(bytes(room - 1))

    def _on_ping_delivery(self, delivery: QuicDeliveryState, uids: Sequence[int]) -> None:
        probe = self.mtu_probe
        if probe is not None and probe[0] in uids:
            # A lost probe is an answer, not something to resend.
            self.mtu_probe = None
            acked = delivery == QuicDeliveryState.ACKED
            self.mtu_probe_result = (probe[1], acked if self._mtu_probe_full else None)
            uids = [uid for uid in uids if uid != probe[0]]
            if not uids:
                return
        super()._on_ping_delivery(delivery, uids)

    def _write_stream_limits(
        self, builder: QuicPacketBuilder, space: Any, stream: QuicStream
    ) -> None:
        credit = self.stream_credit.get(stream.stream_id)  # type: ignore[arg-type]
        if credit is not None and credit > stream.max_stream_data_local:
            stream.max_stream_data_local = credit
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(
                QuicFrameType.MAX_STREAM_DATA,
                capacity=_MAX_STREAM_DATA_CAPACITY,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(stream.stream_id)  # type: ignore[arg-type]
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local

    def _write_connection_limits(self, builder: QuicPacketBuilder, space: Any) -> None:
        for limit in self._due_connection_limits():
            buf = builder.start_frame(
                limit.frame_type,
                capacity=_CONNECTION_LIMIT_CAPACITY,
                handler=self._on_connection_limit_delivery,
                handler_args=(limit,),
            )
            buf.push_uint_var(limit.value)
            limit.sent = limit.value


class _Credit:
    """Receive-credit bookkeeping of one stream."""

    __slots__ = ("consumed", "granted")

    def __init__(self, granted: int) -> None:
        self.consumed = 0
        self.granted = granted


class CarrierProtocol:
    """One distribution connection's QUIC state machine (sans I/O).

    Args:
        quic: the connection (client or server), not yet connected.
        config: carrier settings (windows, quantum, frame size, keep-alive).
    """

    def __init__(self, quic: CarrierConnection, config: CarrierConfig) -> None:
        self.quic = quic
        self.config = config
        self.is_client: bool = quic.configuration.is_client
        self.dist_stream = dist_send_stream(self.is_client)
        self._scheduler = SendScheduler()
        self._outboxes: dict[int, Outbox] = {}
        self._decoders: dict[int, FrameDecoder] = {}
        self._credits: dict[int, _Credit] = {}
        # User-stream bytes handed up and not yet consumed by the application.
        self._held = 0
        self._control: deque[bytes] = deque()
        # Stream-0 offset where the last control message handed to aioquic
        # ends: the next one is handed only once the peer acknowledged that
        # one, so two never reach the peer's handshake code in one read, even
        # when the first is lost and resent (PROTOCOL.md §3).
        self._control_end = 0
        self._events: deque[CarrierEvent] = deque()
        self._handshake_done = False
        self._tls_done: str | None = None  # ALPN, once TLS completed locally
        self._user_streams: set[int] = set()
        self._sweep_countdown = _SWEEP_EVERY
        self._in_aioquic: set[int] = set()
        # Streams with bytes to send that the peer's limits hold back.
        self._waiting: set[int] = set()
        # Scheduler urgency -> when bytes of that urgency were last handed to aioquic.
        self._fed_at: dict[int, float] = {}
        self._closed: ConnectionClosed | None = None
        self._last_activity: float | None = None
        #: when the last datagram from the peer arrived (liveness: any packet counts)
        self.last_received: float | None = None
        self._handshake_deadline: float | None = None
        self._ping_uid = 0
        # Path-MTU discovery (RFC 8899 style, over PING+PADDING probes).
        self._path_mtu: int | None = None  # what the kernel's route allows
        self._mtu_failed: int | None = None  # smallest size known not to pass
        self._mtu_probes_left = 6 if config.pmtu_discovery else 0
        self._mtu_next: int | None = None  # size of the probe waiting for room
        self._mtu_reprobe_at: float | None = None  # when to search again after a fallback
        self._now = 0.0  # the latest time the protocol was given
        self._ignored_streams: set[int] = set()

    # ------------------------------------------------------------------ state

    @property
    def handshake_complete(self) -> bool:
        """QUIC and TLS are up (streams may be used)."""
        return self._handshake_done

    @property
    def closed(self) -> ConnectionClosed | None:
        """Why the connection is closed, or None while it is open."""
        return self._closed

    @property
    def user_streams(self) -> frozenset[int]:
        """The user streams this connection knows of (open in either direction)."""
        return frozenset(self._user_streams)

    # ----------------------------------------------------------------- inputs

    def connect(self, addr: Any, now: float) -> None:
        """Start the QUIC handshake (client only)."""
        self.quic.connect(addr, now=now)
        self._last_activity = now
        self._handshake_deadline = now + self.config.handshake_timeout

    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        """Feed one UDP datagram from the peer."""
        if self._handshake_deadline is None:
            self._handshake_deadline = now + self.config.handshake_timeout
        self._now = now
        self.last_received = now
        self.quic.receive_datagram(data, addr, now=now)
        self._last_activity = now
        self._drain_quic_events()

    def handle_timer(self, now: float) -> None:
        """Call when :meth:`get_timer` is due."""
        quic_timer = self.quic.get_timer()
        if quic_timer is not None and now >= quic_timer:
            self.quic.handle_timer(now=now)
        if (not self._handshake_done and self._closed is None
                and self._handshake_deadline is not None and now >= self._handshake_deadline):
            self.quic.close(error_code=PROTOCOL_ERROR, reason_phrase="QUIC handshake timed out")
        if (self.quic.datagram_size > self.config.max_datagram_size
                and self.quic._loss._pto_count >= _BLACK_HOLE_PTOS):
            self._mtu_black_hole(f"{_BLACK_HOLE_PTOS} probe timeouts in a row")
        if self._mtu_reprobe_at is not None and now >= self._mtu_reprobe_at:
            # The path may have grown back (or the loss was not the path's
            # fault): search again, from scratch (RFC 8899's raise timer).
            self._mtu_reprobe_at = None
            self._mtu_failed = None
            self._mtu_probes_left = 6
            self._maybe_probe()
        self._now = now
        keepalive = self._keepalive_at()
        if keepalive is not None and now >= keepalive and self._handshake_done:
            self._ping_uid += 1
            self.quic.send_ping(self._ping_uid)
            self._last_activity = now
        self._drain_quic_events()

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must be called next (None: no timer)."""
        handshake = (None if self._handshake_done or self._closed is not None
                     else self._handshake_deadline)
        reprobe = self._mtu_reprobe_at if self._closed is None else None
        timers = [t for t in (self.quic.get_timer(), self._keepalive_at(), handshake, reprobe)
                  if t is not None]
        return min(timers) if timers else None

    def _keepalive_at(self) -> float | None:
        if not self._handshake_done or self._closed is not None or self._last_activity is None:
            return None
        return self._last_activity + self.config.keepalive_interval

    # ---------------------------------------------------------------- outputs

    def next_events(self) -> list[CarrierEvent]:
        """The events that happened since the last call, in order.

        Consecutive data events of one stream are merged (one event per
        stream per batch of datagrams, not one per packet).
        """
        self._drain_quic_events()
        events: list[CarrierEvent] = []
        pieces: list[bytes] = []  # data of the UserStreamData run at the end of events
        for event in self._events:
            last = events[-1] if events else None
            if (isinstance(event, UserStreamData) and isinstance(last, UserStreamData)
                    and last.stream_id == event.stream_id and not last.fin):
                pieces.append(event.data)
                events[-1] = UserStreamData(event.stream_id, b"", event.fin)
                continue
            if pieces:
                self._join_run(events, pieces)
            if (isinstance(event, DistFrames) and isinstance(last, DistFrames)
                    and last.stream_id == event.stream_id):
                last.frames.extend(event.frames)
                events[-1] = DistFrames(event.stream_id, last.frames, last.ticks + event.ticks)
                continue
            events.append(event)
            if isinstance(event, UserStreamData):
                pieces.append(event.data)
        if pieces:
            self._join_run(events, pieces)
        self._events.clear()
        return events

    @staticmethod
    def _join_run(events: list[CarrierEvent], pieces: list[bytes]) -> None:
        """Give the UserStreamData ending ``events`` all the data of its run."""
        last = events[-1]
        assert isinstance(last, UserStreamData)
        if len(pieces) > 1:
            events[-1] = UserStreamData(last.stream_id, b"".join(pieces), last.fin)
        pieces.clear()

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        """Pull scheduled bytes into aioquic and return the datagrams to send.

        Each message queued with :meth:`send_control` leaves in its own
        STREAM frame, in a later batch of datagrams than the one before it
        (PROTOCOL.md §3: the Erlang peer hands "whatever is buffered" to its
        handshake code).
        """
        out: list[tuple[bytes, Any]] = []
        quic = self.quic
        self._now = now
        if (not self._control and not self._scheduler.active and self._mtu_next is None
                and not (self._waiting and quic.limits_moved) and quic.nothing_to_send(now)):
            # Nothing to feed and nothing aioquic would send: skip building
            # (and dropping) an empty packet, the common case of a turn of
            # the I/O loop that only received.
            quic._pacing_at = None
            return out
        while True:
            self._feed()
            if self._mtu_next is not None and self._start_probe():
                # Build this batch at the probe size: the padded PING fills a
                # datagram of exactly that size.
                size = quic._max_datagram_size
                quic._max_datagram_size = quic.mtu_probe[1]  # type: ignore[index]
                try:
                    batch = quic.datagrams_to_send(now=now)
                finally:
                    quic._max_datagram_size = size
            else:
                batch = quic.datagrams_to_send(now=now)
            out.extend(batch)
            if not (batch and self._control and self._control_delivered()):
                break
        if out:
            self._last_activity = now
        self._drain_quic_events()
        return out

    # --------------------------------------------------------------- commands

    def send_control(self, data: bytes) -> None:
        """Queue one message for the control stream (a handshake message or a tick)."""
        self._check_open()
        if not self.is_client and not self._stream_exists(CONTROL_STREAM):
            raise LocalProtocolError("the server cannot write to stream 0 before the client")
        self._control.append(bytes(data))

    def set_outbox(self, stream_id: int, outbox: Outbox, priority: int = 128) -> None:
        """Attach the outbox a stream's outgoing bytes are pulled from.

        The distribution stream (:attr:`dist_stream`) runs at urgency 1, user
        streams at ``priority`` (16..255).
        """
        self._check_open()
        kind = classify(stream_id)
        if kind is StreamKind.CONTROL or kind is StreamKind.INVALID:
            raise LocalProtocolError(f"stream {stream_id} takes no outbox")
        if stream_id in self._outboxes:
            raise LocalProtocolError(f"stream {stream_id} already has an outbox")
        self._outboxes[stream_id] = outbox
        self._scheduler.add(stream_id, urgency_of_kind(kind, priority))

    def outbox_ready(self, stream_id: int) -> None:
        """The outbox of ``stream_id`` has bytes (or its end) to send."""
        if stream_id in self._outboxes:
            self._scheduler.unblock(stream_id)

    def set_priority(self, stream_id: int, priority: int) -> None:
        """Change a user stream's priority (16..255)."""
        self._scheduler.set_urgency(stream_id, urgency_of_kind(classify(stream_id), priority))

    def open_user_stream(self, outbox: Outbox, priority: int = 128) -> int:
        """Open the next user stream, sending from ``outbox``; returns its id."""
        self._check_open()
        if not self._handshake_done:
            raise LocalProtocolError("user streams need a completed QUIC handshake")
        urgency_of_kind(StreamKind.USER, priority)  # validates before anything changes
        stream_id = self.quic.get_next_available_stream_id()
        if classify(stream_id) is not StreamKind.USER:
            raise LocalProtocolError(f"stream {stream_id} is not a user stream")
        # Create it now (no bytes leave): the next call must get the next id.
        self.quic.send_stream_data(stream_id, b"")
        self._user_streams.add(stream_id)
        self._credits[stream_id] = _Credit(self.quic._local_max_stream_data_bidi_local)
        self.set_outbox(stream_id, outbox, priority)
        return stream_id

    def consume(self, stream_id: int, nbytes: int) -> None:
        """The application has taken ``nbytes`` of a user stream's data: grant credit."""
        if nbytes <= 0:
            return
        self._held = max(self._held - nbytes, 0)
        credit = self._credits.get(stream_id)
        if credit is not None:  # None: the stream is gone, only the connection's credit moves
            credit.consumed += nbytes
            self._grant(stream_id, credit)
        self._grant_connection()

    def reset_stream(self, stream_id: int, code: int = 0) -> None:
        """Abort a user stream both ways (RESET_STREAM and STOP_SENDING with ``code``)."""
        if classify(stream_id) is not StreamKind.USER:
            raise LocalProtocolError(f"only user streams can be reset, not {stream_id}")
        self._forget_outbox(stream_id)
        if self._closed is not None or not self._stream_exists(stream_id):
            return
        stream = self.quic._streams[stream_id]
        if not stream.sender.is_finished and not stream.sender.reset_pending:
            self.quic.reset_stream(stream_id, code)
        if not stream.receiver.is_finished:
            self.quic.stop_stream(stream_id, code)
        self._release(stream_id)

    def close(self, error_code: int = NO_ERROR, reason: str = "") -> None:
        """Close the connection (CONNECTION_CLOSE with an application code)."""
        if self._closed is None:
            self.quic.close(error_code=error_code, reason_phrase=reason)
            self._drain_quic_events()

    @property
    def datagram_size(self) -> int:
        """The UDP payload size in use (grows as path-MTU discovery succeeds)."""
        return self.quic.datagram_size

    def set_path_mtu(self, payload: int | None) -> None:
        """What the kernel says the path carries (UDP payload bytes), or None."""
        self._path_mtu = payload
        if payload is not None and payload < self.quic.datagram_size:
            self._mtu_black_hole(f"the kernel's path MTU dropped to {payload}")
        self._maybe_probe()

    def path_mtu_exceeded(self) -> None:
        """A datagram was too big for the path (EMSGSIZE): fall back at once."""
        if self.quic.datagram_size > self.config.max_datagram_size:
            self._mtu_black_hole("a datagram was too big for the path")

    def _mtu_ceiling(self) -> int:
        limits = [min(self.config.pmtu_max, AIOQUIC_MAX_DATAGRAM), self.quic.peer_max_udp_payload]
        if self._path_mtu is not None:
            limits.append(self._path_mtu)
        if self._mtu_failed is not None:
            limits.append(self._mtu_failed - 1)
        return min(limits)

    def _maybe_probe(self) -> None:
        quic = self.quic
        if (not self._handshake_done or self._closed is not None or quic.mtu_probe is not None
                or self._mtu_next is not None or self._mtu_probes_left <= 0):
            return
        current = quic.datagram_size
        ceiling = self._mtu_ceiling()
        if ceiling - current < 256:
            self._mtu_probes_left = 0  # close enough: the search is over
            return
        self._mtu_next = ceiling if self._mtu_failed is None else (current + ceiling) // 2

    def _start_probe(self) -> bool:
        """Send the waiting probe if congestion control has room for all of it."""
        quic = self.quic
        assert self._mtu_next is not None
        room = quic._loss.congestion_window - quic._loss.bytes_in_flight
        size = min(self._mtu_next, room)
        if size - quic.datagram_size < 256 or not self._handshake_done:
            return False  # wait for the window to grow (bulk traffic grows it)
        self._mtu_next = None
        self._mtu_probes_left -= 1
        self._ping_uid += 1
        quic.mtu_probe = (self._ping_uid, size)
        quic.send_ping(self._ping_uid)
        return True

    def _mtu_probe_done(self, size: int, acked: bool | None) -> None:
        if acked is None:
            self._mtu_probes_left += 1  # inconclusive: it does not count
        elif acked:
            if self.quic.datagram_size < size <= self._mtu_ceiling():
                logger.debug("path carries %d-byte datagrams", size)
                self.quic.set_datagram_size(size)
        elif self._mtu_failed is None or size < self._mtu_failed:
            self._mtu_failed = size
        self._maybe_probe()

    def _mtu_black_hole(self, why: str) -> None:
        base = self.config.max_datagram_size
        current = self.quic.datagram_size
        if current > base:
            logger.warning("datagrams of %d bytes no longer pass (%s): back to %d",
                           current, why, base)
            self.quic.set_datagram_size(base)
            self._mtu_failed = current if self._mtu_failed is None else min(
                self._mtu_failed, current)
            if self.config.pmtu_discovery:
                self._mtu_reprobe_at = self._now + _MTU_REPROBE_AFTER
        self.quic.mtu_probe = None
        self._mtu_next = None

    def ping(self) -> None:
        """Send a QUIC PING now (liveness probe)."""
        self._ping_uid += 1
        self.quic.send_ping(self._ping_uid)

    # -------------------------------------------------------------- internals

    def _check_open(self) -> None:
        if self._closed is not None:
            raise self._closed

    def _stream_exists(self, stream_id: int) -> bool:
        return stream_id in self.quic._streams

    def _reserve_streams(self) -> None:
        # Open our reserved ids in increasing order (nothing is sent): aioquic
        # discards the ids a side skips, and the peer learns of them
        # implicitly when a higher one carries data.
        for stream_id in reserved_streams(self.is_client):
            if not self._stream_exists(stream_id):
                self.quic.send_stream_data(stream_id, b"")

    def _feed(self) -> None:
        """Hand aioquic the next bytes, most urgent first, about one window's worth.

        A stream is only given what the peer lets it send now: its credit
        (MAX_STREAM_DATA) and, for a stream the peer's MAX_STREAMS does not
        cover yet, nothing. Such a stream waits here, blocked in the
        scheduler, until the peer's limits move (:meth:`_recheck_waiting`),
        so a reader that stops reading (or a flood of new streams) never
        fills aioquic's buffers with bytes that cannot leave and starves the
        other streams and the distribution messages.
        """
        if not self._handshake_done or self._closed is not None:
            return
        quic = self.quic
        if self._control and self._control_delivered():
            quic.send_stream_data(CONTROL_STREAM, self._control.popleft())
            self._control_end = quic._streams[CONTROL_STREAM].sender._buffer_stop
        if self._waiting and quic.limits_moved:
            self._recheck_waiting()
        unsent = self._unsent_in_aioquic()
        budget = quic._loss.congestion_window - unsent
        quantum = self.config.quantum
        scheduler = self._scheduler
        streams = quic._streams
        # While more urgent traffic is active, less urgent streams keep only
        # `yield_inflight` bytes in flight: the urgent bytes then wait behind
        # little (aioquic and the peer's socket buffer are FIFO), at the
        # cost of bulk throughput while it lasts.
        top = self._urgent_level()
        yield_room = self.config.yield_inflight - quic._loss.bytes_in_flight - unsent
        now = self._now
        while budget > 0:
            stream_id = scheduler.next()
            if stream_id < 0:
                break
            outbox = self._outboxes[stream_id]
            want = min(quantum, budget)
            level = scheduler.urgency(stream_id)
            if level > top:
                if yield_room <= 0:
                    break  # strict priority: every stream still queued is as low
                want = min(want, yield_room)
            stream = streams.get(stream_id)
            if stream is not None:
                room = (0 if stream.is_blocked
                        else stream.max_stream_data_remote - stream.sender._buffer_stop)
                if room <= 0:
                    want = 0  # only a FIN may still go (it needs no credit)
                elif room < want:
                    want = room
            data, fin = outbox.take(want)
            if data or fin:
                try:
                    quic.send_stream_data(stream_id, data, end_stream=fin)
                except (ValueError, RuntimeError) as exc:
                    # The stream was reset or finished meanwhile: its bytes go nowhere.
                    logger.debug("dropping %d bytes for stream %d: %s", len(data), stream_id, exc)
                    self._forget_outbox(stream_id)
                    continue
                budget -= len(data)
                if data:
                    yield_room -= len(data)
                    self._fed_at[level] = now
                    if level < top and self.config.yield_inflight:
                        top = level  # what follows in this round yields to it already
                self._in_aioquic.add(stream_id)
            if fin:
                self._forget_outbox(stream_id)
            elif data and getattr(outbox, "drained", False):
                scheduler.block(stream_id)  # (saves asking it again for nothing)
            elif not data:
                scheduler.block(stream_id)
                if want == 0 and stream is not None:
                    # Blocked by the peer's limits, not by an empty outbox.
                    self._waiting.add(stream_id)

    def _urgent_level(self) -> int:
        """The most urgent level that sent within ``yield_window`` (256: none)."""
        if not self.config.yield_inflight:
            return 256
        since = self._now - self.config.yield_window
        fed_at = self._fed_at
        for level in sorted(fed_at):
            if fed_at[level] >= since:
                return level
            del fed_at[level]  # quiet for long enough: forget it
        return 256

    def _recheck_waiting(self) -> None:
        """Unblock the waiting streams the peer's new limits let send again."""
        self.quic.limits_moved = False
        streams = self.quic._streams
        for stream_id in list(self._waiting):
            stream = streams.get(stream_id)
            if stream_id not in self._outboxes or stream is None:
                self._waiting.discard(stream_id)
            elif (not stream.is_blocked
                    and stream.max_stream_data_remote > stream.sender._buffer_stop):
                self._waiting.discard(stream_id)
                self._scheduler.unblock(stream_id)

    def _control_delivered(self) -> bool:
        """Whether the peer acknowledged the last control message handed to aioquic.

        aioquic drops acknowledged bytes from the front of its send buffer,
        so the buffer's start passing the message's end means all of it
        arrived.
        """
        stream = self.quic._streams.get(CONTROL_STREAM)
        return stream is None or stream.sender._buffer_start >= self._control_end

    def _unsent_in_aioquic(self) -> int:
        unsent = 0
        streams = self.quic._streams
        for stream_id in list(self._in_aioquic):
            stream = streams.get(stream_id)
            if stream is None:
                self._in_aioquic.discard(stream_id)
                continue
            sender = stream.sender
            # Only what may leave now occupies the path: bytes beyond the
            # peer's credit (or on a stream it has not allowed yet) do not.
            left = 0 if stream.is_blocked else (
                min(sender._buffer_stop, stream.max_stream_data_remote) - sender.highest_offset)
            if left <= 0 and sender._buffer_stop <= sender.highest_offset:
                self._in_aioquic.discard(stream_id)
            else:
                unsent += left
        return unsent

    def _forget_outbox(self, stream_id: int) -> None:
        if self._outboxes.pop(stream_id, None) is not None:
            self._scheduler.remove(stream_id)
            self._waiting.discard(stream_id)

    def _release(self, stream_id: int) -> None:
        self._credits.pop(stream_id, None)
        self.quic.stream_credit.pop(stream_id, None)
        self._decoders.pop(stream_id, None)

    def _grant(self, stream_id: int, credit: _Credit) -> None:
        window = self.config.stream_window
        target = credit.consumed + window
        # Batch updates: announce new credit once a quarter window was freed.
        if target - credit.granted >= window // 4:
            credit.granted = target
            self.quic.grant_stream_credit(stream_id, target)

    def _grant_connection(self) -> None:
        # The peer may send a window beyond everything received (aioquic's
        # count, which includes the final sizes of reset streams), minus
        # what the application still holds unread, but never less than
        # half a window: readers that stop on several streams (each bounded
        # by its own stream window) cannot starve the distribution streams
        # and the other user streams of the connection.
        window = self.config.connection_window
        held = min(self._held, window // 2)
        target = self.quic._local_max_data.used - held + window
        if target - self.quic.connection_credit >= window // 4:
            self.quic.connection_credit = target

    def _credit_for(self, stream_id: int) -> _Credit:
        credit = self._credits.get(stream_id)
        if credit is None:
            credit = self._credits[stream_id] = _Credit(
                self.quic._local_max_stream_data_bidi_remote)
        return credit

    def _drain_quic_events(self) -> None:
        quic = self.quic
        self._sweep_countdown -= 1
        if self._sweep_countdown <= 0:
            self._sweep_countdown = _SWEEP_EVERY
            self._sweep()
        while True:
            event = quic.next_event()
            if event is None:
                break
            if isinstance(event, qe.StreamDataReceived):
                self._on_stream_data(event.stream_id, event.data, event.end_stream)
            elif isinstance(event, qe.HandshakeCompleted):
                self._tls_done = event.alpn_protocol or ""
            elif isinstance(event, qe.StreamReset):
                self._on_stream_reset(event.stream_id, event.error_code)
            elif isinstance(event, qe.StopSendingReceived):
                self._on_stop_sending(event.stream_id, event.error_code)
            elif isinstance(event, qe.ConnectionIdIssued):
                self._events.append(ConnectionIdIssued(event.connection_id))
            elif isinstance(event, qe.ConnectionIdRetired):
                self._events.append(ConnectionIdRetired(event.connection_id))
        # A client's TLS finishes before the server has checked the client's
        # certificate: report the handshake once the server confirmed it
        # (HANDSHAKE_DONE), so a refused client never looks connected.
        if (self._tls_done is not None and not self._handshake_done
                and (not self.is_client or quic._handshake_confirmed)):
            self._handshake_done = True
            self._reserve_streams()
            cert = quic.peer_certificate
            self._events.append(HandshakeCompleted(
                alpn=self._tls_done,
                peer_subject=cert.subject.rfc4514_string() if cert is not None else ""))
            self._maybe_probe()
        if quic.mtu_probe_result is not None:
            size, acked = quic.mtu_probe_result
            quic.mtu_probe_result = None
            self._mtu_probe_done(size, acked)
        # aioquic reports ConnectionTerminated only when the closing or
        # draining period ends (3 PTO later); the connection is unusable from
        # the moment a close is decided, so report it now.
        if self._closed is None:
            error = connection_closed_error(quic)
            if error is not None:
                self._set_closed(error)

    def _sweep(self) -> None:
        """Forget streams aioquic has discarded (both directions finished)."""
        streams = self.quic._streams
        for stream_id in [s for s in self._credits if s not in streams]:
            if self.quic._stream_is_discarded(stream_id):
                self._user_streams.discard(stream_id)
                self._release(stream_id)

    def _on_stream_data(self, stream_id: int, data: bytes, fin: bool) -> None:
        kind = classify(stream_id)
        if kind is StreamKind.USER:
            if stream_id not in self._user_streams:
                if stream_is_client_initiated(stream_id) == self.is_client:
                    return  # data on a stream of ours that we already let go of
                self._user_streams.add(stream_id)
                self._credit_for(stream_id)
            # Held until the application says it consumed it (consume()).
            self._held += len(data)
            self._grant_connection()  # beyond half a window held, the window slides on
            self._events.append(UserStreamData(stream_id, data, fin))
            return
        # Control, distribution and stray streams are consumed on delivery.
        self._consume_now(stream_id, len(data))
        if kind is StreamKind.CONTROL:
            if data:
                self._events.append(ControlData(data))
            return
        if kind is StreamKind.INVALID:
            if stream_id not in self._ignored_streams:
                # Said once per stream, and the peer is asked to stop: a
                # peer cannot flood the log (or our credit) this way.
                self._ignored_streams.add(stream_id)
                logger.warning("ignoring unidirectional stream %d (not part of quic_dist)",
                               stream_id)
                if not fin:
                    self.quic.stop_stream(stream_id, PROTOCOL_ERROR)
            return
        decoder = self._decoders.get(stream_id)
        if decoder is None:
            decoder = self._decoders[stream_id] = FrameDecoder(self.config.max_frame_size)
        try:
            frames = decoder.feed(data)
        except FrameError as exc:
            self._fail(exc)
            return
        if frames:
            payloads = [f for f in frames if f]
            self._events.append(DistFrames(stream_id, payloads, len(frames) - len(payloads)))

    def _consume_now(self, stream_id: int, nbytes: int) -> None:
        credit = self._credit_for(stream_id)
        credit.consumed += nbytes
        self._grant(stream_id, credit)
        self._grant_connection()

    def _on_stream_reset(self, stream_id: int, code: int) -> None:
        kind = classify(stream_id)
        if kind is StreamKind.INVALID:
            return  # a stream outside the layout that we ignore anyway
        if kind is StreamKind.USER:
            self._forget_outbox(stream_id)
            self._release(stream_id)
            self._events.append(UserStreamReset(stream_id, code))
            self._grant_connection()  # the bytes it will never deliver are free again
        else:
            self._fail(RemoteProtocolError(
                f"the peer reset distribution stream {stream_id} (code {code})"))

    def _on_stop_sending(self, stream_id: int, code: int) -> None:
        kind = classify(stream_id)
        if kind is StreamKind.INVALID:
            # A stream outside the layout (we never open one, but a test or
            # a misbehaving layer above might): just abort it.
            stream = self.quic._streams.get(stream_id)
            if stream is not None and not stream.sender.is_finished and not (
                    stream.sender.reset_pending):
                self.quic.reset_stream(stream_id, code)
            return
        if kind is not StreamKind.USER:
            self._fail(RemoteProtocolError(
                f"the peer stopped distribution stream {stream_id} (code {code})"))
            return
        self._forget_outbox(stream_id)
        stream = self.quic._streams.get(stream_id)
        if stream is not None and not stream.sender.is_finished and not stream.sender.reset_pending:
            self.quic.reset_stream(stream_id, code)
        self._events.append(UserStreamStopped(stream_id, code))

    def _fail(self, exc: RemoteProtocolError) -> None:
        logger.warning("closing the connection: %s", exc)
        self.quic.close(error_code=exc.error_code, reason_phrase=str(exc)[:200])
        error = ConnectionClosedError(str(exc), exc.error_code, initiated_locally=True)
        error.__cause__ = exc
        self._set_closed(error)

    def _set_closed(self, error: ConnectionClosed) -> None:
        if self._closed is None:
            self._closed = error
            self._scheduler = SendScheduler()
            self._outboxes.clear()
            self._events.append(ConnectionTerminated(error))

