"""The control stream through the threaded carrier (real sockets on 127.0.0.1).

PROTOCOL.md §3: each handshake message is its own STREAM frame (an Erlang
peer hands "whatever is buffered" to its handshake code), and only the
dialer opens stream 0. These tests hold the threaded layer to both.
"""

from __future__ import annotations

import os

import pytest

from quicdist.errors import LocalProtocolError
from quicdist.events import ControlData, HandshakeCompleted
from quicdist.sync import Listener, connect
from quicdist.sync.utils import open_fd_count
from quicdist.tls import TLSConfig
from tests.node_fixtures import dev_tls


TIMEOUT = 10.0 * float(os.environ.get("QUICDIST_TESTS_TIMEOUT_FACTOR", "1"))


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> tuple[TLSConfig, ...]:
    return dev_tls(tmp_path_factory.mktemp("control-certs"), "a@127.0.0.1", "b@127.0.0.1")


@pytest.fixture
def pair(tls):
    fds = open_fd_count()
    server_tls, client_tls = tls
    listener = Listener("127.0.0.1", 0, tls=server_tls)
    client = connect("127.0.0.1", listener.port, tls=client_tls, timeout=TIMEOUT)
    server = listener.accept(timeout=TIMEOUT)
    assert isinstance(server.next_event(TIMEOUT), HandshakeCompleted)
    assert isinstance(client.next_event(TIMEOUT), HandshakeCompleted)
    yield client, server
    client.close()
    listener.stop()
    assert open_fd_count() == fds


def control_events(conn, nbytes: int) -> list[bytes]:
    """ControlData payloads, one per event, until ``nbytes`` arrived."""
    chunks: list[bytes] = []
    for _ in range(nbytes):
        if sum(len(c) for c in chunks) >= nbytes:
            break
        event = conn.next_event(TIMEOUT)
        assert isinstance(event, ControlData), event
        chunks.append(event.data)
    return chunks


def test_control_messages_queued_together_each_arrive_as_their_own_frame(pair):
    client, server = pair
    for trial in range(20):
        for messages in ([b"N%02d-send-name" % trial, b"sok"],
                         [b"s%02d-ok" % trial, b"N%02d-challenge" % trial, b"a%02d-ack" % trial,
                          b"\x00\x00\x00\x00"]):
            for m in messages:
                client.send_control(m)
            assert control_events(server, sum(map(len, messages))) == messages, trial


def test_a_control_message_the_server_sends_too_early_is_refused_or_delivered(pair):
    client, server = pair
    try:
        server.send_control(b"early")
    except LocalProtocolError:
        return  # refused to the caller: fine
    # A synchronous round trip through the server's command queue (FIFO): the
    # send_control command has run once this returns, before stream 0 exists.
    server.open_stream(timeout=TIMEOUT)
    # Not refused: then it must not be lost once the client opened stream 0.
    client.send_control(b"hello")
    assert control_events(server, 5) == [b"hello"]
    server.send_control(b"later")
    # Stream 0 is ordered: if "early" was sent at all, it comes before "later".
    got = b"".join(control_events(client, len(b"later")))
    assert got.startswith(b"early"), f"the early message was dropped: {got!r}"
