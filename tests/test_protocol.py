"""CarrierProtocol, sans I/O: two protocols wired together in memory.

Each side is a :class:`~quicdist.protocol.CarrierProtocol` around a
:class:`~quicdist.protocol.CarrierConnection` built from
:func:`quicdist.tls.quic_configuration`. The in-memory harness
(tests/quic_harness.py) moves datagrams and a simulated clock; the
:class:`Endpoint` adapter below makes a CarrierProtocol look like the
QuicConnection the harness drives (``datagrams_to_send`` / ``receive_datagram``
/ ``get_timer`` / ``handle_timer`` / ``next_event``). No sockets, no threads,
no wall clock.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pytest

from quicdist._accel import TICK, pack_frame
from quicdist.certs import make_ca, make_node_cert
from quicdist.config import CarrierConfig
from quicdist.errors import (
    CertificateError,
    ConnectionClosedError,
    ConnectionClosedOK,
    FrameError,
    LocalProtocolError,
    RemoteProtocolError,
)
from quicdist.events import (
    ConnectionTerminated,
    ControlData,
    DistFrames,
    HandshakeCompleted,
    UserStreamData,
    UserStreamReset,
    UserStreamStopped,
)
from quicdist.layout import first_user_stream, reserved_streams
from quicdist.protocol import BytesOutbox, CarrierConnection, CarrierProtocol
from quicdist.sync.outbox import FrameOutbox
from quicdist.tls import TLSConfig, quic_configuration

from .node_fixtures import tls_config
from .quic_harness import (
    C2S,
    S2C,
    SERVER_ADDR,
    Pair,
    RunResult,
    Wire,
    make_client,
    make_server,
    transfer,
)


KIB = 1024
MIB = 1024 * KIB
TIMER_SLACK = 1e-9


# --------------------------------------------------------------------------
# Certificates
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Certs:
    client: TLSConfig
    server: TLSConfig
    stranger: TLSConfig  # signed by another CA


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    d = tmp_path_factory.mktemp("protocol-certs")
    ca = make_ca(d)
    other = make_ca(d / "other")

    return Certs(
        client=tls_config(make_node_cert(d, "client@127.0.0.1", ca), ca),
        server=tls_config(make_node_cert(d, "server@127.0.0.1", ca), ca),
        stranger=tls_config(make_node_cert(d / "other", "x@127.0.0.1", other), ca),
    )


# --------------------------------------------------------------------------
# The adapter: a CarrierProtocol as the harness's "connection"
# --------------------------------------------------------------------------

class Endpoint:
    """A CarrierProtocol with the sans-I/O surface quic_harness drives.

    Records the simulated time of every non-empty batch of datagrams it sent
    (``sent_at``: ``(now, count)``) and hands the protocol's events out one
    by one.
    """

    def __init__(self, protocol: CarrierProtocol) -> None:
        self.protocol = protocol
        self.sent_at: list[tuple[float, int]] = []
        self._pending: deque[Any] = deque()

    # what quic_harness reads
    @property
    def configuration(self):
        return self.protocol.quic.configuration

    @property
    def _network_paths(self):
        return self.protocol.quic._network_paths

    @property
    def original_destination_connection_id(self) -> bytes:
        return self.protocol.quic.original_destination_connection_id

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        out = self.protocol.datagrams_to_send(now)
        if out:
            self.sent_at.append((now, len(out)))
        return out

    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        self.protocol.receive_datagram(data, addr, now)

    def get_timer(self) -> float | None:
        # A hair late: aioquic's time-threshold loss detection compares
        # ``sent_time <= now - delay`` against a timer set to ``sent_time +
        # delay``; with a simulated clock that jumps exactly to the timer the
        # rounding can leave the packet "not yet lost" and the timer where it
        # was, forever. A real clock always moves on.
        timer = self.protocol.get_timer()
        return None if timer is None else timer + TIMER_SLACK

    def handle_timer(self, now: float) -> None:
        self.protocol.handle_timer(now)

    def next_event(self) -> Any:
        if not self._pending:
            self._pending.extend(self.protocol.next_events())
        return self._pending.popleft() if self._pending else None


@dataclass
class Link:
    """Two CarrierProtocols, the harness Pair that moves their datagrams."""

    client: CarrierProtocol
    server: CarrierProtocol
    pair: Pair
    cep: Endpoint = field(init=False)
    sep: Endpoint = field(init=False)

    def __post_init__(self) -> None:
        self.cep = self.pair.client
        self.sep = self.pair.server

    @property
    def now(self) -> float:
        return self.pair.now

    def run(self, **kwargs: Any) -> RunResult:
        """The harness's run_until_idle, from the current time.

        The default horizon stays below both sides' keep-alive interval and
        idle timeout, so "idle" means "nothing but those timers left".
        """
        kwargs.setdefault("max_rounds", 2000)
        timeouts = [p.config.keepalive_interval for p in (self.client, self.server)]
        timeouts += [p.config.idle_timeout for p in (self.client, self.server)]
        kwargs.setdefault("horizon", min(10.0, 0.5 * min(timeouts)))
        return self.pair.run_until_idle(**kwargs)

    def events(self, side: str, cls: type | None = None) -> list[Any]:
        return self.pair.events(side, cls)

    def step(self, direction: str) -> int:
        """One transfer in one direction (no timers); events go to the Pair's lists."""
        sender, receiver = (self.cep, self.sep) if direction == C2S else (self.sep, self.cep)
        moved = transfer(sender, receiver, self.pair.now, wire=self.pair.wire)
        self._pop()
        return moved

    def fire_timers(self) -> None:
        """Move the clock to the earliest timer and handle what is due."""
        timers = [t for t in (self.cep.get_timer(), self.sep.get_timer()) if t is not None]
        assert timers, "no timer to fire"
        self.pair.now = max(self.pair.now, min(timers))
        for ep in (self.cep, self.sep):
            timer = ep.get_timer()
            if timer is not None and timer <= self.pair.now:
                ep.handle_timer(self.pair.now)
        self._pop()

    def _pop(self) -> None:
        for ep, into in ((self.cep, self.pair.client_events),
                         (self.sep, self.pair.server_events)):
            while (event := ep.next_event()) is not None:
                into.append(event)


def open_user(protocol: CarrierProtocol, data: bytes = b"", fin: bool = False,
              priority: int = 128) -> tuple[int, BytesOutbox]:
    """Open a user stream sending ``data`` (what StreamOutbox.write's notify does)."""
    outbox = BytesOutbox(data, fin)
    stream_id = protocol.open_user_stream(outbox, priority)
    protocol.outbox_ready(stream_id)
    return stream_id, outbox


def carrier_configuration(tls: TLSConfig, config: CarrierConfig, is_client: bool):
    """What quicdist.sync builds for a connection (connect() / Listener)."""
    return quic_configuration(
        tls, is_client=is_client, idle_timeout=config.idle_timeout,
        max_datagram_size=config.max_datagram_size,
        max_data=config.connection_window, max_stream_data=config.stream_window)


def make_link(certs: Certs, config: CarrierConfig | None = None, *,
              server_config: CarrierConfig | None = None,
              client_tls: TLSConfig | None = None, wire: Wire | None = None,
              handshake: bool = True) -> Link:
    client_config = config or CarrierConfig()
    server_config = server_config or client_config
    client_quic = make_client(
        carrier_configuration(client_tls or certs.client, client_config, True),
        cls=CarrierConnection, connect=False)
    server_quic = make_server(carrier_configuration(certs.server, server_config, False),
                              client_quic, cls=CarrierConnection)
    client = CarrierProtocol(client_quic, client_config)
    server = CarrierProtocol(server_quic, server_config)
    client.connect(SERVER_ADDR, 0.0)
    link = Link(client, server, Pair(Endpoint(client), Endpoint(server), now=0.0,
                                     wire=wire or Wire()))
    if handshake:
        link.run(until=lambda _r: client.handshake_complete and server.handshake_complete)
        assert client.handshake_complete and server.handshake_complete
        link.run()  # settle the last ACKs / HANDSHAKE_DONE
    return link


def user_bytes(events: list[Any], stream_id: int) -> tuple[bytes, bool]:
    data = b"".join(e.data for e in events
                    if isinstance(e, UserStreamData) and e.stream_id == stream_id)
    fin = any(e.fin for e in events if isinstance(e, UserStreamData) and e.stream_id == stream_id)
    return data, fin


def dist_frames(events: list[Any], stream_id: int) -> tuple[list[bytes], int]:
    frames: list[bytes] = []
    ticks = 0
    for e in events:
        if isinstance(e, DistFrames):
            assert e.stream_id == stream_id, e
            frames += e.frames
            ticks += e.ticks
    return frames, ticks


def terminated(events: list[Any]) -> list[Any]:
    return [e.error for e in events if isinstance(e, ConnectionTerminated)]


def attach_dist_outbox(protocol: CarrierProtocol) -> FrameOutbox:
    """What quicdist.sync.Connection does on HandshakeCompleted."""
    stream_id = protocol.dist_stream
    outbox = FrameOutbox(4 * MIB, lambda: protocol.outbox_ready(stream_id))
    protocol.set_outbox(stream_id, outbox, 1)
    return outbox


# --------------------------------------------------------------------------
# Handshake and stream layout
# --------------------------------------------------------------------------

def test_handshake_completes_on_both_sides_client_only_after_the_server_confirmed(certs):
    link = make_link(certs, handshake=False)
    client, server = link.client, link.server
    # Step the flights one direction at a time and watch the order.
    client_tls_done_early = False
    for _ in range(50):
        for direction in (C2S, S2C):
            link.step(direction)
            if client.quic._handshake_complete and not client.quic._handshake_confirmed:
                # The client's TLS is done, but the server has not confirmed yet.
                assert not client.handshake_complete
                assert not link.events("client", HandshakeCompleted)
                client_tls_done_early = True
        if link.events("client", HandshakeCompleted):
            # Reported only once the server completed (and sent HANDSHAKE_DONE).
            assert link.events("server", HandshakeCompleted)
            assert client.quic._handshake_confirmed
            break
        link.fire_timers()
    else:
        raise AssertionError("the handshake did not complete")
    assert client_tls_done_early, "never saw the client's TLS finished before confirmation"
    assert link.events("client", HandshakeCompleted) == [
        HandshakeCompleted("erlang-dist", "CN=server@127.0.0.1")]
    assert link.events("server", HandshakeCompleted) == [
        HandshakeCompleted("erlang-dist", "CN=client@127.0.0.1")]
    assert client.handshake_complete and server.handshake_complete
    assert client.closed is None and server.closed is None


def test_a_refused_client_never_reports_the_handshake(certs):
    link = make_link(certs, client_tls=certs.stranger, handshake=False)
    link.run(until=lambda _r: link.client.closed and link.server.closed)
    # The client's own TLS finished (it accepted the server), but the server
    # refused the client's certificate: the client must never look connected.
    assert link.client.quic._handshake_complete
    assert not link.events("client", HandshakeCompleted)
    assert not link.events("server", HandshakeCompleted)
    for side in ("client", "server"):
        errors = terminated(link.events(side))
        assert len(errors) == 1 and isinstance(errors[0], CertificateError), side
    assert not link.client.handshake_complete


def test_reserved_streams_exist_after_the_handshake_and_user_streams_follow(certs):
    link = make_link(certs)
    client, server = link.client, link.server
    assert reserved_streams(True) == (0, 4, 8, 12, 16)
    assert reserved_streams(False) == (1, 5, 9, 13)
    assert {0, 4, 8, 12, 16} <= set(client.quic._streams)
    assert {1, 5, 9, 13} <= set(server.quic._streams)
    assert client.dist_stream == 16 and server.dist_stream == 13
    assert client.open_user_stream(BytesOutbox()) == 20 == first_user_stream(True)
    assert server.open_user_stream(BytesOutbox()) == 17 == first_user_stream(False)
    assert client.open_user_stream(BytesOutbox()) == 24
    assert server.open_user_stream(BytesOutbox()) == 21
    assert client.user_streams == {20, 24} and server.user_streams == {17, 21}


def test_user_streams_and_server_control_writes_need_the_handshake(certs):
    link = make_link(certs, handshake=False)
    with pytest.raises(LocalProtocolError):
        link.client.open_user_stream(BytesOutbox())
    with pytest.raises(LocalProtocolError):
        link.server.send_control(b"sok")  # the client opens stream 0


# --------------------------------------------------------------------------
# Control stream: one STREAM frame per message
# --------------------------------------------------------------------------

def control_per_datagram(sender: CarrierProtocol, receiver: CarrierProtocol, now: float,
                         expected: int) -> list[list[bytes]]:
    """Deliver ``sender``'s datagrams one at a time (firing its timers, e.g.
    pacing) and the receiver's acknowledgements back; for each datagram of
    the sender, the ControlData it produced."""
    per_datagram: list[list[bytes]] = []
    for _ in range(100):
        if sum(len(c) for c in per_datagram) >= expected:
            break
        for data, _addr in sender.datagrams_to_send(now):
            receiver.receive_datagram(data, ("1.2.3.4", 1234) if sender.is_client
                                      else SERVER_ADDR, now)
            per_datagram.append([e.data for e in receiver.next_events()
                                 if isinstance(e, ControlData)])
        for data, _addr in receiver.datagrams_to_send(now):
            sender.receive_datagram(data, SERVER_ADDR if sender.is_client
                                    else ("1.2.3.4", 1234), now)
        if sum(len(c) for c in per_datagram) >= expected:
            break  # done: do not run the clock on into keep-alive time
        timers = [t for t in (sender.get_timer(), receiver.get_timer()) if t is not None]
        if not timers:
            break
        now = max(now, min(timers) + TIMER_SLACK)
        for protocol in (sender, receiver):
            timer = protocol.get_timer()
            if timer is not None and timer <= now:
                protocol.handle_timer(now)
    return [c for c in per_datagram if c]


def test_two_control_messages_leave_in_separate_batches(certs):
    link = make_link(certs)
    client, server = link.client, link.server
    name = b"N" + bytes(14) + b"client@127.0.0.1"
    client.send_control(name)
    client.send_control(b"sok")
    first = client.datagrams_to_send(link.now)
    assert first
    # The first datagram alone delivers exactly the first message.
    server.receive_datagram(first[0][0], ("1.2.3.4", 1234), link.now)
    assert [e for e in server.next_events() if isinstance(e, ControlData)] == [ControlData(name)]
    rest = [d for d, _ in first[1:]]
    # The second message is in a later datagram, and alone in its STREAM frame.
    for data in rest:
        server.receive_datagram(data, ("1.2.3.4", 1234), link.now)
    got = [e.data for e in server.next_events() if isinstance(e, ControlData)]
    link.run()
    got += [e.data for e in link.events("server", ControlData)]
    assert got == [b"sok"]
    # The server answers the same way (after the client opened stream 0):
    # each message arrives on its own, the second only after the first was
    # acknowledged.
    challenge = b"N" + bytes(18) + b"server@127.0.0.1"
    server.send_control(b"sok")
    server.send_control(challenge)
    link.run()
    assert [e.data for e in link.events("client", ControlData)] == [b"sok", challenge]


def test_two_control_messages_stay_apart_when_the_pacer_holds_the_first_back(certs):
    link = make_link(certs)
    client, server = link.client, link.server
    now = link.now
    # Bulk bytes empty the pacer's bucket at this instant...
    open_user(client, bytes(200_000))
    for data, _addr in client.datagrams_to_send(now):
        server.receive_datagram(data, ("1.2.3.4", 1234), now)
    server.next_events()
    assert client.quic._pacing_at is not None and client.quic._pacing_at > now
    # ...so the first message is handed to aioquic but cannot leave yet.
    client.send_control(b"sok")
    client.send_control(b"N" + bytes(18) + b"server@127.0.0.1")
    assert control_per_datagram(client, server, now, 2) == [
        [b"sok"], [b"N" + bytes(18) + b"server@127.0.0.1"]]


def test_three_control_messages_each_leave_in_their_own_stream_frame(certs):
    """PROTOCOL.md §3: never two handshake messages in one STREAM frame, however
    many are queued at once (e.g. a status, a challenge and a tick)."""
    link = make_link(certs)
    messages = [b"AAA", b"BBB", b"CCC", b"DDD"]
    for m in messages:
        link.client.send_control(m)
    got = control_per_datagram(link.client, link.server, link.now, len(messages))
    assert got == [[m] for m in messages]


def test_a_lost_control_message_is_not_glued_to_the_next_one(certs):
    link = make_link(certs)
    first = link.pair.wire.sent[C2S]
    # Lose the datagram that carries the first message, nothing else.
    link.pair.wire.drop = lambda direction, index, _d: direction == C2S and index == first
    link.client.send_control(b"sok")
    link.client.send_control(b"N" + bytes(18) + b"server@127.0.0.1")
    link.run()
    assert link.pair.wire.dropped == [(C2S, first)]
    assert [e.data for e in link.events("server", ControlData)] == [
        b"sok", b"N" + bytes(18) + b"server@127.0.0.1"]


def test_control_messages_arrive_whole_and_in_order_through_loss(certs):
    rng = random.Random(7)
    wire = Wire(drop=lambda _d, _i, _data: rng.random() < 0.2,
                reorder=lambda _d, ds: rng.sample(ds, len(ds)))
    link = make_link(certs, wire=wire)
    messages = [b"m%03d" % i + os.urandom(rng.randrange(0, 300)) for i in range(40)]
    for m in messages:
        link.client.send_control(m)
    link.run()
    got = b"".join(e.data for e in link.events("server", ControlData))
    assert got == b"".join(messages)
    assert wire.dropped


# --------------------------------------------------------------------------
# Distribution frames
# --------------------------------------------------------------------------

@pytest.mark.parametrize("lossy", [False, True], ids=["clean", "lossy"])
def test_dist_frames_arrive_in_order_and_ticks_are_counted(certs, lossy):
    rng = random.Random(11)
    wire = Wire()
    if lossy:
        wire = Wire(drop=lambda _d, _i, _data: rng.random() < 0.05,
                    reorder=lambda _d, ds: rng.sample(ds, len(ds)))
    link = make_link(certs, wire=wire)
    client_out = attach_dist_outbox(link.client)
    server_out = attach_dist_outbox(link.server)
    sent_c = [b"c%d" % i + bytes(rng.randrange(0, 200)) for i in range(3000)]
    sent_s = [b"s%d" % i for i in range(3000)]
    sent_c.insert(1500, os.urandom(200 * KIB))  # one frame spanning many datagrams
    for i, payload in enumerate(sent_c):
        client_out.put(payload)
        if i % 100 == 0:
            client_out.put(b"")  # a tick on the data stream
    server_out.put_many(sent_s)
    server_out.put_many([b"", b"", b""])
    link.run()
    frames, ticks = dist_frames(link.events("server"), 16)
    assert frames == sent_c and ticks == 31
    frames, ticks = dist_frames(link.events("client"), 13)
    assert frames == sent_s and ticks == 3
    assert not terminated(link.events("client")) and not terminated(link.events("server"))
    if lossy:
        assert wire.dropped


def test_dist_stream_needs_no_consume_beyond_the_window(certs):
    """Distribution data is consumed on delivery: 16x the windows still flows."""
    config = CarrierConfig(stream_window=64 * KIB, connection_window=128 * KIB)
    link = make_link(certs, config)
    out = attach_dist_outbox(link.client)
    payloads = [os.urandom(1000) for _ in range(2 * MIB // 1000)]
    out.put_many(payloads)
    link.run()
    frames, _ = dist_frames(link.events("server"), 16)
    assert frames == payloads


def test_an_oversize_frame_closes_the_connection_on_the_receiving_side(certs):
    link = make_link(certs, CarrierConfig(), server_config=CarrierConfig(max_frame_size=1024))
    out = attach_dist_outbox(link.client)
    out.put(b"fine")
    out.put(bytes(4096))
    link.run()
    assert dist_frames(link.events("server"), 16)[0] in ([b"fine"], [])
    errors = terminated(link.events("server"))
    assert len(errors) == 1
    error = errors[0]
    assert isinstance(error, ConnectionClosedError) and error.initiated_locally
    assert isinstance(error.__cause__, FrameError)
    assert error.error_code == FrameError.error_code
    assert "4096" in str(error)
    assert link.server.closed is error
    # The sender sees the close, from the peer, with the same code.
    errors = terminated(link.events("client"))
    assert len(errors) == 1
    assert isinstance(errors[0], ConnectionClosedError) and not errors[0].initiated_locally
    assert errors[0].error_code == FrameError.error_code
    assert link.client.closed is errors[0]


# --------------------------------------------------------------------------
# Receive credit
# --------------------------------------------------------------------------

def test_an_unread_user_stream_stops_at_the_window_and_consume_reopens_it(certs):
    window = 64 * KIB
    config = CarrierConfig(stream_window=window, connection_window=4 * window)
    link = make_link(certs, config)
    payload = os.urandom(1 * MIB)
    sid, outbox = open_user(link.client, payload, fin=True)
    link.run()
    data, fin = user_bytes(link.events("server"), sid)
    assert len(data) == window and not fin
    assert data == payload[:window]
    # The rest waits on the sender's side: in its outbox, at most about a
    # congestion window of it handed to aioquic.
    assert len(outbox) >= len(payload) - window - link.client.quic._loss.congestion_window
    # Running longer (timers, PTOs) delivers nothing more.
    link.run(until=lambda r: r.now > link.now + 30, horizon=60)
    assert len(user_bytes(link.events("server"), sid)[0]) == window

    # Consuming reopens the window, by exactly what was consumed.
    link.server.consume(sid, window)
    link.run()
    data, fin = user_bytes(link.events("server"), sid)
    assert len(data) == 2 * window and not fin

    # A reader that keeps consuming gets everything, intact.
    def consume(side, ep, event):
        if side == "server" and isinstance(event, UserStreamData):
            ep.protocol.consume(event.stream_id, len(event.data))

    link.server.consume(sid, window)
    link.run(on_event=consume)
    data, fin = user_bytes(link.events("server"), sid)
    assert fin and hashlib.sha256(data).digest() == hashlib.sha256(payload).digest()


def test_unread_user_streams_hold_back_at_most_half_the_connection_window(certs):
    """Each unread stream stops at its own window; together they may hold more
    than half the connection window, and the connection still has room: other
    streams and the distribution messages are not starved by stalled readers."""
    window = 64 * KIB
    config = CarrierConfig(stream_window=window, connection_window=2 * window)
    link = make_link(certs, config)
    sids = [open_user(link.client, os.urandom(2 * window), fin=True)[0] for _ in range(3)]
    link.run()
    received = {sid: len(user_bytes(link.events("server"), sid)[0]) for sid in sids}
    assert received == {sid: window for sid in sids}, received
    # 3 windows unread (more than the connection window): a fourth stream and
    # a distribution message still get through.
    dist = attach_dist_outbox(link.client)
    dist.put(b"still flowing")
    link.client.outbox_ready(link.client.dist_stream)
    other, _ = open_user(link.client, os.urandom(window // 2), fin=True)
    link.run()
    assert dist_frames(link.events("server"), link.client.dist_stream)[0] == [b"still flowing"]
    assert user_bytes(link.events("server"), other) == (
        user_bytes(link.events("server"), other)[0], True)
    assert len(user_bytes(link.events("server"), other)[0]) == window // 2
    # Consuming on one stream lets that stream go on.
    link.server.consume(sids[0], window)
    link.run()
    assert len(user_bytes(link.events("server"), sids[0])[0]) == 2 * window


# --------------------------------------------------------------------------
# Priorities
# --------------------------------------------------------------------------

def test_a_dist_frame_overtakes_a_queued_low_priority_user_stream(certs):
    link = make_link(certs)
    bulk = os.urandom(6 * MIB)
    sid, _ = open_user(link.client, bulk, fin=True, priority=255)
    dist = attach_dist_outbox(link.client)
    order: list[tuple[str, int]] = []
    received = 0

    def on_event(side, ep, event):
        nonlocal received
        if side != "server":
            return
        if isinstance(event, UserStreamData):
            if received == 0:
                # Bulk bytes are flowing: now queue urgent messages.
                dist.put(b"urgent")
                link.client.send_control(b"\x00\x00\x00\x00")
            received += len(event.data)
            ep.protocol.consume(event.stream_id, len(event.data))
            if event.fin:
                order.append(("bulk done", received))
        elif isinstance(event, DistFrames):
            order.append(("dist", received))
        elif isinstance(event, ControlData):
            order.append(("control", received))

    link.run(on_event=on_event, max_rounds=20000)
    kinds = [k for k, _ in order]
    assert kinds[-1] == "bulk done" and sorted(kinds) == ["bulk done", "control", "dist"], order
    assert received == len(bulk)
    at = dict(order)
    # Urgent bytes did not wait for the queued bulk: they arrived while most
    # of it was still to come.
    assert at["dist"] < len(bulk) // 2 and at["control"] < len(bulk) // 2, order
    data, fin = user_bytes(link.events("server"), sid)
    assert fin and data == bulk


@pytest.mark.parametrize("yield_inflight", [128 * KIB, 0])
def test_bulk_yields_all_but_yield_inflight_while_urgent_traffic_is_active(certs,
                                                                          yield_inflight):
    """With a large congestion window, a priority-255 stream would fill it; while
    a priority-16 stream is active it keeps at most ``yield_inflight`` in flight."""
    link = make_link(certs, CarrierConfig(yield_inflight=yield_inflight))
    client = link.client
    client.quic._loss._cc.congestion_window = 8 * MIB  # as on a fast path, long after start
    open_user(client, os.urandom(4 * MIB), fin=True, priority=255)
    open_user(client, b"urgent", fin=True, priority=16)
    now = link.now + 0.001

    def handed() -> int:  # what aioquic holds for the peer: in flight plus not yet sent
        return client.quic._loss.bytes_in_flight + client._unsent_in_aioquic()

    client.datagrams_to_send(now)
    if yield_inflight:
        assert handed() <= yield_inflight + 16 * KIB, handed()
        # Once the urgent stream has been quiet for yield_window, bulk has the window again.
        client.datagrams_to_send(now + client.config.yield_window + 0.001)
        assert handed() > 1 * MIB, handed()
    else:
        assert handed() > 1 * MIB, handed()


def test_between_user_streams_the_lower_priority_value_goes_first(certs):
    link = make_link(certs)
    size = 1 * MIB
    low, _ = open_user(link.client, os.urandom(size), fin=True, priority=200)
    high, _ = open_user(link.client, os.urandom(size), fin=True, priority=16)
    done: list[tuple[int, int]] = []  # (stream finished, bytes of `low` received by then)
    received = {low: 0, high: 0}
    cwnd = [link.client.quic._loss.congestion_window]

    def on_event(side, ep, event):
        cwnd.append(link.client.quic._loss.congestion_window)
        if side == "server" and isinstance(event, UserStreamData):
            received[event.stream_id] += len(event.data)
            ep.protocol.consume(event.stream_id, len(event.data))
            if event.fin:
                done.append((event.stream_id, received[low]))

    link.run(on_event=on_event, max_rounds=20000)
    assert [sid for sid, _ in done] == [high, low]
    # Strict priority, not aioquic's round robin: `low` got at most about a
    # congestion window (what may sit in aioquic beside `high`'s last bytes)
    # before `high` was complete.
    assert done[0][1] <= max(cwnd) + link.client.config.quantum, (done, max(cwnd))


# --------------------------------------------------------------------------
# Liveness: keep-alive, idle timeout, handshake timeout
# --------------------------------------------------------------------------

def test_keepalive_pings_keep_an_idle_connection_open(certs):
    config = CarrierConfig(keepalive_interval=5.0, idle_timeout=12.0)
    link = make_link(certs, config)
    start = link.now
    link.cep.sent_at.clear()
    link.sep.sent_at.clear()
    end = start + 60.0
    link.run(until=lambda r: r.now >= end, horizon=100, max_rounds=5000)
    assert link.now >= end
    assert not terminated(link.events("client")) and not terminated(link.events("server"))
    assert link.client.closed is None and link.server.closed is None
    # Something left the otherwise idle connection about every keep-alive
    # interval, the first one only once the interval had passed.
    times = sorted(t for ep in (link.cep, link.sep) for t, _ in ep.sent_at)
    assert times and start + 5.0 - 0.01 <= times[0] <= start + 5.0 + 1.0, times
    gaps = [b - a for a, b in zip([start, *times], [*times, end], strict=True)]
    assert max(gaps) < 12.0, times
    # Both sides still work.
    link.client.send_control(b"alive?")
    link.run()
    assert link.events("server", ControlData)[-1] == ControlData(b"alive?")


def test_without_keepalive_traffic_the_idle_timeout_closes_both_sides(certs):
    config = CarrierConfig(keepalive_interval=100.0, idle_timeout=8.0)
    link = make_link(certs, config)
    start = link.now
    link.run(until=lambda _r: link.client.closed and link.server.closed, horizon=100,
             max_rounds=500)
    for side, protocol in (("client", link.client), ("server", link.server)):
        errors = terminated(link.events(side))
        assert len(errors) == 1, side
        assert isinstance(errors[0], ConnectionClosedError), errors[0]
        assert "idle" in str(errors[0]).lower()
        assert protocol.closed is errors[0]
    assert start + 8.0 - 0.01 <= link.now <= start + 8.0 + 1.0


def test_a_silent_peer_is_dropped_at_the_idle_timeout_despite_our_pings(certs):
    config = CarrierConfig(keepalive_interval=2.0, idle_timeout=8.0)
    link = make_link(certs, config)
    start = link.now
    link.cep.sent_at.clear()
    link.pair.wire.drop = lambda direction, _i, _d: direction == S2C
    link.run(until=lambda _r: link.client.closed is not None, horizon=100, max_rounds=500)
    errors = terminated(link.events("client"))
    assert len(errors) == 1 and isinstance(errors[0], ConnectionClosedError), errors
    assert link.client.closed is errors[0]
    # The ping at +2 s restarted aioquic's idle timer once (RFC 9000 §10.1);
    # nothing restarts it after that.
    assert start + 8.0 - 0.01 <= link.now <= start + 2.0 + 8.0 + 1.0
    assert link.cep.sent_at, "the client never pinged"
    assert start + 2.0 - 0.01 <= link.cep.sent_at[0][0] <= start + 3.0, link.cep.sent_at


def test_the_handshake_timeout_closes_a_server_that_never_completes(certs):
    config = CarrierConfig(handshake_timeout=3.0, idle_timeout=60.0)
    # Only the client's first flight reaches the server; nothing else moves.
    wire = Wire(drop=lambda direction, index, _d: direction == S2C or index > 0)
    link = make_link(certs, config, wire=wire, handshake=False)
    link.run(until=lambda _r: link.server.closed is not None and link.client.closed is not None,
             horizon=100, max_rounds=500)
    for side, protocol in (("server", link.server), ("client", link.client)):
        assert not link.events(side, HandshakeCompleted)
        errors = terminated(link.events(side))
        assert len(errors) == 1 and isinstance(errors[0], ConnectionClosedError), side
        assert "handshake timed out" in str(errors[0])
        assert protocol.closed is errors[0]
    assert link.now <= 3.0 + 1.0  # long before the idle timeout


@pytest.mark.parametrize("why", ["refused", "handshake timeout"])
def test_a_connection_that_never_completed_leaves_no_timer_in_the_past(certs, why):
    if why == "refused":
        link = make_link(certs, client_tls=certs.stranger, handshake=False)
    else:
        wire = Wire(drop=lambda direction, index, _d: direction == S2C or index > 0)
        link = make_link(certs, CarrierConfig(handshake_timeout=3.0), wire=wire,
                         handshake=False)
    link.run(until=lambda _r: link.client.closed and link.server.closed, horizon=100,
             max_rounds=500)
    assert link.client.closed is not None and link.server.closed is not None
    for protocol in (link.client, link.server):
        now = link.now
        for _ in range(20):  # through aioquic's closing/draining period
            timer = protocol.get_timer()
            if timer is None:
                break
            now = max(now, timer) + TIMER_SLACK
            protocol.handle_timer(now)
            protocol.datagrams_to_send(now)
            assert (protocol.get_timer() or now + 1) > now, "a timer stuck in the past"


# --------------------------------------------------------------------------
# Resets, STOP_SENDING, stray streams
# --------------------------------------------------------------------------

def test_a_peer_reset_of_a_user_stream_reports_the_code(certs):
    link = make_link(certs)
    sid, _ = open_user(link.client, b"hello")
    link.run()
    assert user_bytes(link.events("server"), sid) == (b"hello", False)
    # The server writes back, then aborts its sending side only.
    reply = BytesOutbox(b"partial")
    link.server.set_outbox(sid, reply)
    link.server.outbox_ready(sid)
    link.run()
    link.server.quic.reset_stream(sid, 0x123)
    link.run()
    assert link.events("client", UserStreamReset) == [UserStreamReset(sid, 0x123)]
    assert not link.events("client", UserStreamStopped)
    assert link.client.closed is None and link.server.closed is None


def test_reset_stream_aborts_both_directions_of_a_user_stream(certs):
    link = make_link(certs)
    sid, outbox = open_user(link.client, b"x" * 1000)
    link.run()
    link.server.set_outbox(sid, BytesOutbox(b"y"))
    link.server.outbox_ready(sid)
    link.run()
    link.server.reset_stream(sid, 0x77)
    link.run()
    assert UserStreamReset(sid, 0x77) in link.events("client")
    assert UserStreamStopped(sid, 0x77) in link.events("client")
    # Further bytes in the client's outbox go nowhere; the connection lives on.
    outbox.write(b"more")
    link.client.outbox_ready(sid)
    link.run()
    assert user_bytes(link.events("server"), sid) == (b"x" * 1000, False)
    assert link.client.closed is None and link.server.closed is None


def test_stop_sending_on_a_user_stream_reports_it_and_stops_the_sender(certs):
    link = make_link(certs)
    sid, outbox = open_user(link.client, b"first")
    link.run()
    assert user_bytes(link.events("server"), sid) == (b"first", False)
    link.server.quic.stop_stream(sid, 0x42)
    link.run()
    assert link.events("client", UserStreamStopped) == [UserStreamStopped(sid, 0x42)]
    # The client answered with RESET_STREAM (RFC 9000 §3.5) and sends nothing more.
    assert link.events("server", UserStreamReset) == [UserStreamReset(sid, 0x42)]
    outbox.write(b"second")
    link.client.outbox_ready(sid)
    link.run()
    assert user_bytes(link.events("server"), sid) == (b"first", False)
    assert link.client.closed is None and link.server.closed is None


def test_a_peer_resetting_a_distribution_stream_closes_the_connection(certs):
    link = make_link(certs)
    attach_dist_outbox(link.client).put(b"hello")
    link.run()
    link.client.quic.reset_stream(16, 0x5)
    link.run()
    errors = terminated(link.events("server"))
    assert len(errors) == 1 and isinstance(errors[0], ConnectionClosedError)
    assert isinstance(errors[0].__cause__, RemoteProtocolError)
    assert "16" in str(errors[0])
    client_errors = terminated(link.events("client"))
    assert len(client_errors) == 1 and not client_errors[0].initiated_locally
    assert isinstance(client_errors[0], ConnectionClosedError)


def test_a_peer_stopping_a_distribution_stream_closes_the_connection(certs):
    link = make_link(certs)
    attach_dist_outbox(link.server).put(b"hello")
    link.run()
    assert dist_frames(link.events("client"), 13)[0] == [b"hello"]
    link.client.quic.stop_stream(13, 0x6)
    link.run()
    errors = terminated(link.events("server"))
    assert len(errors) == 1 and isinstance(errors[0].__cause__, RemoteProtocolError)
    assert isinstance(terminated(link.events("client"))[0], ConnectionClosedError)


def test_data_on_a_unidirectional_stream_is_ignored(certs, caplog):
    window = 64 * KIB
    config = CarrierConfig(stream_window=window, connection_window=2 * window)
    link = make_link(certs, config)
    uni = link.client.quic.get_next_available_stream_id(is_unidirectional=True)
    assert uni == 2
    # Much more than the connection window: the stray bytes must not eat the
    # connection's credit either.
    junk = os.urandom(8 * window)
    with caplog.at_level(logging.WARNING, logger="quicdist.carrier"):
        link.client.quic.send_stream_data(uni, junk, end_stream=True)
        link.run()
    assert any("unidirectional" in r.getMessage() for r in caplog.records)
    assert not [e for e in link.events("server")
                if isinstance(e, UserStreamData | ControlData | DistFrames)]
    # Said once, not once per packet.
    assert sum("unidirectional" in r.getMessage() for r in caplog.records) == 1
    # The connection is unharmed: control, dist and user data still flow.
    link.client.send_control(b"still here")
    attach_dist_outbox(link.client).put(b"dist")
    sid, _ = open_user(link.client, b"user", fin=True)
    link.run()
    assert link.events("server", ControlData) == [ControlData(b"still here")]
    assert dist_frames(link.events("server"), 16)[0] == [b"dist"]
    assert user_bytes(link.events("server"), sid) == (b"user", True)
    assert link.client.closed is None and link.server.closed is None


def test_close_is_reported_on_both_sides(certs):
    link = make_link(certs)
    link.client.close(0, "bye")
    link.run()
    ce, se = terminated(link.events("client")), terminated(link.events("server"))
    assert len(ce) == 1 and isinstance(ce[0], ConnectionClosedOK) and ce[0].initiated_locally
    assert len(se) == 1 and isinstance(se[0], ConnectionClosedOK) and not se[0].initiated_locally
    with pytest.raises(ConnectionClosedOK):
        link.client.send_control(b"late")
    with pytest.raises(ConnectionClosedOK):
        link.server.open_user_stream(BytesOutbox())


def test_a_tick_on_the_control_stream_is_raw_bytes(certs):
    link = make_link(certs)
    link.client.send_control(TICK)
    link.run()
    assert link.events("server", ControlData) == [ControlData(b"\x00\x00\x00\x00")]
    assert pack_frame(b"") == TICK
