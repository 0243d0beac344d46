"""The QUIC carrier over real UDP sockets on 127.0.0.1: threads, streams, TLS, limits.

Every wait is on an event or a queue with a timeout; nothing sleeps.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass

import pytest

from quicdist.certs import make_ca, make_node_cert
from quicdist.config import CarrierConfig
from quicdist.errors import (
    CertificateError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    FrameError,
    QuicDistTimeoutError,
)
from quicdist.events import (
    ConnectionTerminated,
    ControlData,
    DistFrames,
    HandshakeCompleted,
    UserStreamData,
    UserStreamReset,
)
from quicdist.sync import Listener, connect
from quicdist.tls import TLSConfig
from tests.node_fixtures import tls_config


TIMEOUT = 10.0 * float(os.environ.get("QUICDIST_TESTS_TIMEOUT_FACTOR", "1"))


@dataclass
class Certs:
    a: TLSConfig
    b: TLSConfig
    stranger: TLSConfig  # signed by another CA
    expired: TLSConfig


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    import datetime as dt

    d = tmp_path_factory.mktemp("carrier-certs")
    ca = make_ca(d)
    other = make_ca(d / "other")
    now = dt.datetime.now(dt.UTC)

    return Certs(
        a=tls_config(make_node_cert(d, "a@127.0.0.1", ca), ca),
        b=tls_config(make_node_cert(d, "b@127.0.0.1", ca), ca),
        stranger=tls_config(make_node_cert(d / "other", "x@127.0.0.1", other), ca),
        expired=tls_config(make_node_cert(d, "old@127.0.0.1", ca,
                                          not_before=now - dt.timedelta(days=9),
                                          not_after=now - dt.timedelta(days=1)), ca),
    )


@pytest.fixture
def pair(certs, no_leaks):
    """(listener, client connection, accepted server connection)."""
    listener = Listener("127.0.0.1", 0, tls=certs.a)
    client = connect("127.0.0.1", listener.port, tls=certs.b, timeout=TIMEOUT)
    server = listener.accept(timeout=TIMEOUT)
    assert isinstance(server.next_event(TIMEOUT), HandshakeCompleted)
    assert isinstance(client.next_event(TIMEOUT), HandshakeCompleted)
    yield listener, client, server
    client.close()
    listener.stop()


def events_until(conn, predicate, limit=100_000):
    seen = []
    for _ in range(limit):
        event = conn.next_event(TIMEOUT)
        seen.append(event)
        if predicate(event):
            return seen
    raise AssertionError("event never came")


def test_handshake_reports_peer_certificates(certs, no_leaks):
    with Listener("127.0.0.1", 0, tls=certs.a) as listener:
        with connect("127.0.0.1", listener.port, tls=certs.b, timeout=TIMEOUT) as client:
            server = listener.accept(timeout=TIMEOUT)
            server_hello = server.next_event(TIMEOUT)
            client_hello = client.next_event(TIMEOUT)
            assert server_hello == HandshakeCompleted("erlang-dist", "CN=b@127.0.0.1")
            assert client_hello == HandshakeCompleted("erlang-dist", "CN=a@127.0.0.1")


def test_control_messages_and_dist_frames_both_ways(pair):
    _, client, server = pair
    client.send_control(b"N" + bytes(14) + b"b@127.0.0.1")
    client.send_control(b"sok")
    got = b""
    while len(got) < 29:
        event = server.next_event(TIMEOUT)
        assert isinstance(event, ControlData)
        got += event.data
    assert got == b"N" + bytes(14) + b"b@127.0.0.1" + b"sok"
    for i in range(2000):
        client.send_dist(b"c%d" % i)
        server.send_dist(b"s%d" % i)
    for conn, prefix, stream in ((server, b"c", 16), (client, b"s", 13)):
        frames = []
        while len(frames) < 2000:
            event = conn.next_event(TIMEOUT)
            assert isinstance(event, DistFrames) and event.stream_id == stream
            frames += event.frames
        assert frames == [prefix + b"%d" % i for i in range(2000)]


def test_user_streams_data_fin_and_reset(pair):
    _, client, server = pair
    sid, outbox = client.open_stream(priority=64)
    assert sid == 20
    outbox.write(b"ping", fin=False)
    event = server.next_event(TIMEOUT)
    assert event == UserStreamData(20, b"ping", False)
    reply = server.stream_outbox(20)
    reply.write(b"pong", fin=True)
    assert client.next_event(TIMEOUT) == UserStreamData(20, b"pong", True)
    outbox.write(b"", fin=True)
    assert server.next_event(TIMEOUT) == UserStreamData(20, b"", True)

    sid2, outbox2 = client.open_stream()
    assert sid2 == 24
    outbox2.write(b"x")
    assert server.next_event(TIMEOUT) == UserStreamData(24, b"x", False)
    server.reset_stream(24, 0x123)
    event = events_until(client, lambda e: isinstance(e, UserStreamReset))[-1]
    assert event == UserStreamReset(24, 0x123)

    # The server's own user streams start at 17.
    sid3, outbox3 = server.open_stream()
    assert sid3 == 17
    outbox3.write(b"from server", fin=True)
    assert client.next_event(TIMEOUT) == UserStreamData(17, b"from server", True)


def test_close_is_seen_on_both_sides_and_later_calls_fail(pair):
    _, client, server = pair
    client.close()
    assert isinstance(client.closed, ConnectionClosedOK) and client.closed.initiated_locally
    event = events_until(server, lambda e: isinstance(e, ConnectionTerminated))[-1]
    assert isinstance(event.error, ConnectionClosedOK) and not event.error.initiated_locally
    with pytest.raises(ConnectionClosed):
        client.send_dist(b"late")
    with pytest.raises(ConnectionClosed):
        client.send_control(b"late")
    with pytest.raises(ConnectionClosed):
        server.open_stream()
    client.close()  # idempotent


def test_stop_leaves_no_thread_and_no_descriptor(certs, no_leaks):
    listener = Listener("127.0.0.1", 0, tls=certs.a)
    clients = [connect("127.0.0.1", listener.port, tls=certs.b, timeout=TIMEOUT)
               for _ in range(3)]
    for _ in clients:
        listener.accept(timeout=TIMEOUT)
    assert len(listener.connections) == 3
    listener.stop()
    for client in clients:
        events_until(client, lambda e: isinstance(e, ConnectionTerminated))
        client.close()
    # no_leaks checks threads and descriptors


@pytest.mark.parametrize("client_tls, server_tls, alert", [
    ("stranger", "a", "unknown_ca"),
    ("b", "stranger", "unknown_ca"),
    ("expired", "a", "certificate_expired"),
    ("b", "expired", "certificate_expired"),
])
def test_refused_certificates_fail_connect_with_a_typed_error(certs, no_leaks, client_tls,
                                                              server_tls, alert):
    errors = []

    def on_event(conn, event):
        if isinstance(event, ConnectionTerminated):
            errors.append(event.error)

    with Listener("127.0.0.1", 0, tls=getattr(certs, server_tls), on_event=on_event) as listener:
        with pytest.raises(CertificateError, match=alert):
            connect("127.0.0.1", listener.port, tls=getattr(certs, client_tls), timeout=TIMEOUT)
        # The listener's side was refused or refused, with the same typed error.
        for conn in listener.connections:
            conn.join(TIMEOUT)
    assert errors and isinstance(errors[0], CertificateError) and alert in str(errors[0])


def test_connect_to_a_closed_port_fails_fast(certs, no_leaks):
    import socket

    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(ConnectionClosedError, match="ICMP|unreachable|timed out"):
        connect("127.0.0.1", port, tls=certs.b, timeout=TIMEOUT)


def test_oversize_frame_closes_only_that_connection(certs, no_leaks):
    config = CarrierConfig(max_frame_size=1024)
    with Listener("127.0.0.1", 0, tls=certs.a, config=config) as listener:
        good = connect("127.0.0.1", listener.port, tls=certs.b, timeout=TIMEOUT)
        bad = connect("127.0.0.1", listener.port, tls=certs.b, timeout=TIMEOUT)
        servers = [listener.accept(timeout=TIMEOUT), listener.accept(timeout=TIMEOUT)]
        bad.send_dist(bytes(4096))
        good.send_dist(b"fine")
        terminated = []
        done = (ConnectionTerminated, DistFrames)
        for server in servers:
            for event in events_until(server, lambda e: isinstance(e, done)):
                if isinstance(event, ConnectionTerminated):
                    terminated.append(event.error)
        assert len(terminated) == 1
        assert isinstance(terminated[0], ConnectionClosedError)
        assert isinstance(terminated[0].__cause__, FrameError)
        assert "4096" in str(terminated[0])
        events_until(bad, lambda e: isinstance(e, ConnectionTerminated))
        good.send_dist(b"still fine")
        survivor = next(s for s in servers if s.closed is None)
        last = events_until(survivor, lambda e: isinstance(e, DistFrames))[-1]
        assert last.frames == [b"still fine"]
        good.close()
        bad.close()


def test_urgent_bytes_overtake_queued_bulk(pair):
    """A control message and a dist message sent while 64 MiB of priority-128
    data is queued arrive before the bulk transfer completes."""
    _, client, server = pair
    sid, outbox = client.open_stream(priority=128)
    bulk = os.urandom(1 << 20) * 64
    writer_done = threading.Event()

    def write_bulk():
        outbox.write(bulk, fin=True, timeout=120)
        writer_done.set()

    writer = threading.Thread(target=write_bulk, name="bulk-writer")
    writer.start()
    # Wait until bulk bytes are flowing, then send the urgent ones.
    first = server.next_event(TIMEOUT)
    assert isinstance(first, UserStreamData) and first.stream_id == sid
    client.send_control(b"\x00\x00\x00\x00")
    client.send_dist(b"urgent")
    order = []
    received = len(first.data)
    sha = hashlib.sha256(first.data)
    while True:
        event = server.next_event(TIMEOUT * 6)
        if isinstance(event, UserStreamData):
            received += len(event.data)
            sha.update(event.data)
            server.consume(sid, len(event.data))
            if event.fin:
                order.append("bulk done")
                break
        elif isinstance(event, ControlData):
            order.append("control")
        elif isinstance(event, DistFrames):
            order.append("dist")
    writer.join(TIMEOUT)
    assert writer_done.is_set()
    assert order.index("control") < order.index("bulk done")
    assert order.index("dist") < order.index("bulk done")
    assert received == len(bulk) and sha.digest() == hashlib.sha256(bulk).digest()


def test_a_reader_that_stops_makes_the_writer_block(certs, no_leaks):
    config = CarrierConfig(stream_window=256 * 1024, connection_window=1024 * 1024,
                           send_buffer=256 * 1024)
    with Listener("127.0.0.1", 0, tls=certs.a, config=config) as listener:
        with connect("127.0.0.1", listener.port, tls=certs.b, config=config,
                     timeout=TIMEOUT) as client:
            server = listener.accept(timeout=TIMEOUT)
            sid, outbox = client.open_stream()
            # The server never consumes: its credit stays at the initial window.
            with pytest.raises(QuicDistTimeoutError):
                outbox.write(bytes(16 << 20), timeout=2.0)
            received = 0
            while True:
                try:
                    event = server.next_event(0.5)
                except QuicDistTimeoutError:
                    break
                if isinstance(event, UserStreamData):
                    received += len(event.data)
            assert 0 < received <= 256 * 1024
            assert outbox.size <= 256 * 1024
            # Consuming reopens the window and the rest flows.
            server.consume(sid, received)
            event = events_until(server, lambda e: isinstance(e, UserStreamData))[-1]
            assert event.stream_id == sid


def test_a_stalled_stream_starves_neither_other_streams_nor_dist_messages(certs, no_leaks):
    """The bytes of a stream whose reader stopped stay in its outbox (never
    more than its credit goes into aioquic), so the other streams and the
    distribution messages keep the whole connection."""
    with Listener("127.0.0.1", 0, tls=certs.a) as listener:
        with connect("127.0.0.1", listener.port, tls=certs.b, timeout=TIMEOUT) as client:
            server = listener.accept(timeout=TIMEOUT)
            stalled, stalled_outbox = client.open_stream()
            other, other_outbox = client.open_stream()
            failures: list[BaseException] = []

            def fill() -> None:
                try:
                    stalled_outbox.write(bytes(16 << 20), timeout=TIMEOUT)
                except (QuicDistTimeoutError, ConnectionClosed):
                    pass  # expected: nobody reads it, until the connection closes
                except BaseException as exc:  # noqa: BLE001 - reported below
                    failures.append(exc)

            filler = threading.Thread(target=fill)
            filler.start()
            stalled_bytes = 0
            while stalled_bytes < 4 << 20:  # the reader's whole window (default 4 MiB)
                event = server.next_event(TIMEOUT)
                if isinstance(event, UserStreamData) and event.stream_id == stalled:
                    stalled_bytes += len(event.data)
            payload = os.urandom(8 << 20)
            writer = threading.Thread(
                target=lambda: other_outbox.write(payload, fin=True, timeout=TIMEOUT))
            writer.start()
            client.send_dist(b"still flowing")
            got = bytearray()
            dist = []
            other_done = False
            while not (dist and other_done):
                event = server.next_event(TIMEOUT)
                if isinstance(event, UserStreamData) and event.stream_id == other:
                    got += event.data
                    server.consume(other, len(event.data))
                    other_done = event.fin
                elif isinstance(event, DistFrames):
                    dist += event.frames
                elif isinstance(event, UserStreamData):
                    stalled_bytes += len(event.data)
            assert bytes(got) == payload and dist == [b"still flowing"]
            assert stalled_bytes == 4 << 20  # not one byte beyond its window
            writer.join(TIMEOUT)
            client.close()
            filler.join(TIMEOUT)
            assert not writer.is_alive() and not filler.is_alive()
            assert not failures, failures


def test_event_handlers_may_answer_on_the_io_thread(certs, no_leaks):
    """A handler runs on the I/O thread and may call back into its connection
    (send_dist, send_control, open_stream) without deadlocking."""
    opened = []

    def on_event(conn, event):
        assert threading.current_thread() is conn.thread
        if isinstance(event, DistFrames):
            for frame in event.frames:
                conn.send_dist(b"echo:" + frame)
        elif isinstance(event, ControlData):
            conn.send_control(b"ack:" + event.data)
            sid, outbox = conn.open_stream(timeout=TIMEOUT)
            outbox.write(b"opened by a handler", fin=True)
            opened.append(sid)

    with Listener("127.0.0.1", 0, tls=certs.a, on_event=on_event) as listener:
        with connect("127.0.0.1", listener.port, tls=certs.b, timeout=TIMEOUT) as client:
            assert isinstance(client.next_event(TIMEOUT), HandshakeCompleted)
            for i in range(100):
                client.send_dist(b"%d" % i)
            echoed = []
            while len(echoed) < 100:
                event = client.next_event(TIMEOUT)
                assert isinstance(event, DistFrames)
                echoed += event.frames
            assert echoed == [b"echo:%d" % i for i in range(100)]
            client.send_control(b"hi")
            got = events_until(client, lambda e: isinstance(e, UserStreamData) and e.fin)
            assert ControlData(b"ack:hi") in got
            assert got[-1] == UserStreamData(opened[0], b"opened by a handler", True)


def test_finished_streams_are_forgotten(pair):
    """Bookkeeping of user streams that finished both ways does not pile up."""
    _, client, server = pair
    for _ in range(300):
        sid, outbox = client.open_stream()
        outbox.write(b"x", fin=True)
        event = events_until(server, lambda e: isinstance(e, UserStreamData) and e.fin)[-1]
        server.stream_outbox(event.stream_id).write(b"", fin=True)
        events_until(client, lambda e: isinstance(e, UserStreamData) and e.fin)
    # Enough traffic for the periodic sweeps to run on both sides.
    for i in range(2000):
        client.send_dist(b"%d" % i)
    frames = []
    while len(frames) < 2000:
        frames += events_until(server, lambda e: isinstance(e, DistFrames))[-1].frames
    assert len(client.protocol.user_streams) < 100
    assert len(server.protocol.user_streams) < 100
    assert len(server.protocol._credits) < 100


def test_a_flood_of_initials_is_capped(certs, no_leaks):
    """Initial packets that never complete a handshake cannot make the
    listener start unbounded connections (each has a thread)."""
    import socket

    from aioquic.quic.connection import QuicConnection

    from quicdist.tls import quic_configuration

    config = CarrierConfig(max_pending_handshakes=8, handshake_timeout=2.0)
    with Listener("127.0.0.1", 0, tls=certs.a, config=config) as listener:
        flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for _ in range(40):
                fake = QuicConnection(configuration=quic_configuration(certs.b, is_client=True))
                fake.connect(("127.0.0.1", listener.port), now=0.0)
                for data, _addr in fake.datagrams_to_send(now=0.0):
                    flood.sendto(data, ("127.0.0.1", listener.port))
            # A real client still gets in once the half-open ones time out.
            client = connect("127.0.0.1", listener.port, tls=certs.b, timeout=TIMEOUT)
            client.close()
        finally:
            flood.close()
        assert listener.dropped_initials > 0
        assert len(threading.enumerate()) < 40
