"""quicdist.tcp: the TCP carrier's connections and listener, without a node.

The peer is either another quicdist TCP connection or a raw socket that
writes exactly the bytes a test wants (several messages in one write, one
message byte by byte, a frame header right behind the last handshake
message). Every wait is bounded: event queues with timeouts, socket
timeouts, joins.
"""

from __future__ import annotations

import logging
import queue
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from quicdist.config import CarrierConfig
from quicdist.errors import (
    ConfigurationError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    FrameError,
    LocalProtocolError,
    QuicDistTimeoutError,
)
from quicdist.events import (
    CarrierEvent,
    ConnectionTerminated,
    ControlData,
    DistFrames,
    HandshakeCompleted,
)
from quicdist.tcp import TcpConfig, TcpConnection, TcpListener, carrier_config, tcp_connect
from tests.node_fixtures import TIMEOUT


HOST = "127.0.0.1"
DONE = b"done"  # the handshake message after which a Recorder switches to frames


class Recorder:
    """An ``on_event`` handler: queues (connection, event); switches to 4-byte
    frames on the reader thread when it sees the ControlData ``DONE``."""

    def __init__(self, answer_done: bool = False) -> None:
        self.events: queue.Queue[tuple[TcpConnection, CarrierEvent]] = queue.Queue()
        self.fail_first = False
        #: answer DONE with DONE before switching (as a listener answers the
        #: challenge_reply with its challenge_ack)
        self.answer_done = answer_done

    def __call__(self, connection: TcpConnection, event: CarrierEvent) -> None:
        if isinstance(event, ControlData) and event.data == DONE:
            if self.answer_done:
                connection.send_control(DONE)
            connection.handshake_complete()
        self.events.put((connection, event))
        if self.fail_first:
            self.fail_first = False
            raise RuntimeError("a handler bug")

    def next(self, kind: type | None = None, timeout: float = TIMEOUT) -> CarrierEvent:
        """The next event (of type ``kind``: others before it are an error)."""
        try:
            _, event = self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event within {timeout} s") from None
        if kind is not None:
            assert isinstance(event, kind), event
        return event

    def frames(self, count: int) -> list[bytes]:
        """Payloads of the next DistFrames events until ``count`` arrived."""
        got: list[bytes] = []
        while len(got) < count:
            event = self.next(DistFrames)
            assert isinstance(event, DistFrames) and event.stream_id == 0
            got.extend(event.frames)
        return got


@pytest.fixture
def listener() -> Iterator[tuple[TcpListener, Recorder]]:
    recorder = Recorder()
    lst = TcpListener(HOST, 0, on_event=recorder, name="test")
    try:
        yield lst, recorder
    finally:
        lst.stop()


def raw_client(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=TIMEOUT)
    sock.settimeout(TIMEOUT)
    return sock


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"EOF after {len(data)} of {n} bytes")
        data += chunk
    return data


def hs(message: bytes) -> bytes:
    return struct.pack(">H", len(message)) + message


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def accepted(recorder: Recorder) -> TcpConnection:
    connection, event = recorder.events.get(timeout=TIMEOUT)
    assert isinstance(event, HandshakeCompleted), event
    assert event.alpn == "" and event.peer_subject == ""
    return connection


def wait_eof(sock: socket.socket) -> bytes:
    """Everything the peer still sends, up to its close (bounded)."""
    data = b""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    raise AssertionError("the peer did not close")


# ----------------------------------------------------------------- handshake


def test_handshake_messages_one_event_each_whatever_the_chunking(listener):
    lst, recorder = listener
    with raw_client(lst.port) as sock:
        server = accepted(recorder)
        assert not server.framed and server.established and not server.is_client
        # Two messages in one write, then one message byte by byte.
        sock.sendall(hs(b"abc") + hs(b"de"))
        for byte in hs(b"fghij"):
            sock.sendall(bytes([byte]))
        assert recorder.next(ControlData).data == b"abc"
        assert recorder.next(ControlData).data == b"de"
        assert recorder.next(ControlData).data == b"fghij"
        assert server.last_received is not None
        # And what we send carries the 2-byte length.
        server.send_control(b"sok")
        server.send_control(b"N" + bytes(20))
        assert recv_exact(sock, 5) == b"\x00\x03sok"
        assert recv_exact(sock, 23) == b"\x00\x15N" + bytes(20)


def test_switch_to_frames_exactly_when_the_handshake_completes(listener):
    lst, recorder = listener
    with raw_client(lst.port) as sock:
        server = accepted(recorder)
        # The last handshake message and frames in one write. Read with the
        # 2-byte framing, the frame header 00 00 00 01 would be an empty message.
        sock.sendall(hs(b"x1") + hs(DONE) + frame(b"\x01") + frame(b"") + frame(b"yz"))
        assert recorder.next(ControlData).data == b"x1"
        assert recorder.next(ControlData).data == DONE
        assert server.framed
        event = recorder.next(DistFrames)
        assert event == DistFrames(0, [b"\x01", b"yz"], 1)
        # Frames split anywhere still arrive whole; a lone tick makes no event.
        data = frame(b"A" * 1000) + frame(b"") + frame(b"B")
        for i in range(0, len(data), 7):
            sock.sendall(data[i:i + 7])
        assert recorder.frames(2) == [b"A" * 1000, b"B"]
        sock.sendall(frame(b""))
        sock.sendall(frame(b"last"))
        assert recorder.next(DistFrames).frames == [b"last"]
        # Our side now writes 4-byte frames, and ticks as empty frames.
        server.dist_outbox.put(b"payload")
        assert recv_exact(sock, 11) == b"\x00\x00\x00\x07payload"
        server.send_tick()
        assert recv_exact(sock, 4) == b"\x00\x00\x00\x00"
        with pytest.raises(LocalProtocolError):
            server.send_control(b"late")


def test_ticks_wait_for_the_handshake_and_handshake_complete_needs_the_reader(listener):
    lst, recorder = listener
    with raw_client(lst.port) as sock:
        server = accepted(recorder)
        server.send_tick()  # before the handshake: nothing is written
        with pytest.raises(LocalProtocolError):
            server.handshake_complete()  # not on the reader thread
        server.send_control(b"marker")
        assert recv_exact(sock, 8) == b"\x00\x06marker"
        with pytest.raises(LocalProtocolError):
            server.send_control(bytes(70000))


def test_handler_errors_are_logged_and_the_connection_goes_on(listener, caplog):
    lst, recorder = listener
    with raw_client(lst.port) as sock:
        accepted(recorder)
        recorder.fail_first = True
        with caplog.at_level(logging.ERROR, logger="quicdist.tcp"):
            sock.sendall(hs(b"one") + hs(b"two"))
            assert recorder.next(ControlData).data == b"one"
            assert recorder.next(ControlData).data == b"two"
        assert "event handler failed" in caplog.text


# -------------------------------------------------- two quicdist connections


def test_dial_and_exchange_both_ways_in_order(listener):
    lst, server_rec = listener
    client_rec = Recorder()
    client = tcp_connect(HOST, lst.port, on_event=client_rec, timeout=TIMEOUT)
    try:
        assert client.is_client and client.peer == (HOST, lst.port)
        assert isinstance(client_rec.next(), HandshakeCompleted)
        server = accepted(server_rec)
        server_rec.answer_done = True
        client.send_control(b"hello")
        assert server_rec.next(ControlData).data == b"hello"
        server.send_control(b"challenge")
        assert client_rec.next(ControlData).data == b"challenge"
        client.send_control(DONE)
        assert server_rec.next(ControlData).data == DONE
        assert client_rec.next(ControlData).data == DONE
        assert client.framed and server.framed
        # 2000 messages one way, a 1 MiB message (larger than a writer's
        # chunk: it leaves in pieces) in the middle; then the other way.
        big = bytes(range(256)) * 4096
        payloads = [i.to_bytes(4, "big") for i in range(2000)]
        payloads.insert(1000, big)
        for payload in payloads:
            client.send_dist(payload, timeout=TIMEOUT)
        assert server_rec.frames(len(payloads)) == payloads
        for payload in payloads[:100]:
            server.dist_outbox.put(payload)
        assert client_rec.frames(100) == payloads[:100]
    finally:
        client.close()


def test_close_is_idempotent_and_both_sides_learn_why(listener):
    lst, server_rec = listener
    client_rec = Recorder()
    client = tcp_connect(HOST, lst.port, on_event=client_rec, timeout=TIMEOUT)
    server = accepted(server_rec)
    started = time.monotonic()
    client.close(reason="bye", timeout=0)  # does not wait
    assert time.monotonic() - started < 1.0
    client.close(reason="again")
    assert client.join(TIMEOUT)
    assert isinstance(client.closed, ConnectionClosedOK) and client.closed.initiated_locally
    assert client.closed.reason == "bye"
    assert isinstance(client_rec.next(HandshakeCompleted), HandshakeCompleted)
    mine = client_rec.next(ConnectionTerminated)
    assert mine.error is client.closed
    theirs = server_rec.next(ConnectionTerminated)
    assert isinstance(theirs.error, ConnectionClosedOK) and not theirs.error.initiated_locally
    assert server.join(TIMEOUT) and server.closed is theirs.error
    with pytest.raises(ConnectionClosed):
        client.send_control(b"x")
    with pytest.raises(ConnectionClosed):
        client.dist_outbox.put(b"x")
    with pytest.raises(ConnectionClosed):
        client.send_dist(b"x")
    client.send_tick()  # quietly nothing
    assert server not in lst.connections


def test_peer_reset_is_an_error_close(listener):
    lst, recorder = listener
    sock = raw_client(lst.port)
    server = accepted(recorder)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST
    event = recorder.next(ConnectionTerminated)
    assert isinstance(event.error, ConnectionClosed) and not event.error.initiated_locally
    assert server.join(TIMEOUT)


# ------------------------------------------------------------ hostile peers


def test_oversized_frame_closes_the_connection():
    recorder = Recorder()
    with TcpListener(HOST, 0, config=TcpConfig(max_frame_size=16), on_event=recorder) as lst:
        with raw_client(lst.port) as sock:
            accepted(recorder)
            sock.sendall(hs(DONE) + frame(b"x" * 16))
            recorder.next(ControlData)
            assert recorder.next(DistFrames).frames == [b"x" * 16]
            sock.sendall(struct.pack(">I", 17))
            event = recorder.next(ConnectionTerminated)
            assert isinstance(event.error, ConnectionClosedError)
            assert event.error.error_code == FrameError.error_code
            assert "17" in str(event.error)
            wait_eof(sock)


def test_empty_handshake_message_closes_the_connection(listener):
    lst, recorder = listener
    with raw_client(lst.port) as sock:
        accepted(recorder)
        sock.sendall(b"\x00\x00")
        event = recorder.next(ConnectionTerminated)
        assert isinstance(event.error, ConnectionClosedError)
        assert "empty handshake message" in str(event.error)
        wait_eof(sock)


def test_too_many_pending_handshakes_are_refused():
    recorder = Recorder()
    config = TcpConfig(max_pending_handshakes=1)
    with TcpListener(HOST, 0, config=config, on_event=recorder) as lst:
        with raw_client(lst.port) as first:
            accepted(recorder)
            with raw_client(lst.port) as second:
                assert wait_eof(second) == b""  # closed at once
            assert lst.refused == 1
            # Once the first one is past its handshake, there is room again.
            first.sendall(hs(DONE))
            recorder.next(ControlData)
            with raw_client(lst.port) as third:
                accepted(recorder)
                third.sendall(hs(b"ok"))
                assert recorder.next(ControlData).data == b"ok"
            assert lst.refused == 1


# ---------------------------------------------------------- dial and listen


def test_dialing_nobody_fails_cleanly():
    sock = socket.socket()
    sock.bind((HOST, 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(ConnectionClosedError, match="refused"):
        tcp_connect(HOST, port, timeout=TIMEOUT)
    with pytest.raises(QuicDistTimeoutError):
        tcp_connect(HOST, port, timeout=0)


def test_listener_accept_queue_and_stop_closes_everything():
    before = {t for t in threading.enumerate() if t.name.startswith("quicdist-tcp")}
    lst = TcpListener(HOST, 0)  # no callbacks: accept() and next_event()
    with pytest.raises(QuicDistTimeoutError):
        lst.accept(timeout=0.05)
    sock = raw_client(lst.port)
    try:
        server = lst.accept(timeout=TIMEOUT)
        assert isinstance(server.next_event(TIMEOUT), HandshakeCompleted)
        sock.sendall(hs(b"q"))
        assert server.next_event(TIMEOUT) == ControlData(b"q")
        with pytest.raises(QuicDistTimeoutError):
            server.next_event(timeout=0.05)
        assert lst.connections == [server]
        lst.stop()
        assert wait_eof(sock) == b""
        assert server.join(TIMEOUT)
        assert isinstance(server.next_event(TIMEOUT), ConnectionTerminated)
        with pytest.raises(OSError):
            socket.create_connection((HOST, lst.port), timeout=1).close()
    finally:
        sock.close()
        lst.stop()
    left = {t for t in threading.enumerate() if t.name.startswith("quicdist-tcp")} - before
    for thread in left:
        thread.join(TIMEOUT)
    assert not [t for t in left if t.is_alive()], left


def test_user_streams_are_refused_on_tcp(listener):
    lst, recorder = listener
    with raw_client(lst.port):
        server = accepted(recorder)
        for call in (lambda: server.open_stream(), lambda: server.stream_outbox(1),
                     lambda: server.consume(1, 10), lambda: server.release_stream(1),
                     lambda: server.reset_stream(1)):
            with pytest.raises(LocalProtocolError, match="QUIC"):
                call()


# ------------------------------------------------------------------ settings


def test_tcp_config_is_checked():
    for bad in ({"epmd_port": 0}, {"epmd_port": 70000}, {"epmd_timeout": 0},
                {"send_buffer": 0}, {"max_frame_size": 0}, {"max_frame_size": 2**32},
                {"max_pending_handshakes": 0}, {"send_buffer": True}):
        with pytest.raises(ConfigurationError):
            TcpConfig(**bad)


def test_carrier_config_names():
    assert carrier_config(None) == CarrierConfig() == carrier_config("quic")
    assert carrier_config("tcp") == TcpConfig()
    tcp = TcpConfig(epmd=False)
    assert carrier_config(tcp) is tcp
    for bad in ("udp", "TCP", 3):
        with pytest.raises(ConfigurationError):
            carrier_config(bad)  # type: ignore[arg-type]
