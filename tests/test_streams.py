"""User streams through the public API, two nodes in this process (and a raw peer).

The API's contract, checked where it is cheapest: argument checking, the
owner rule, info / list_streams, timeouts, iteration, makefile, message
delivery to a Mailbox owner and its flow control, acceptor pools, node
stop, the connection's receive credit over many streams, and what a
misbehaving peer (tests/raw_peer.py) can and cannot do. The scenarios
across processes are in tests/test_streams_process.py.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from quicdist import Acceptor, Atom, Node, StreamRef
from quicdist.config import CarrierConfig
from quicdist.errors import (
    ConfigurationError,
    ConnectionClosed,
    LocalProtocolError,
    MailboxClosed,
    NodeDown,
    NotConnected,
    NotOwner,
    QuicDistTimeoutError,
    StreamClosed,
    StreamError,
    StreamReset,
)
from quicdist.events import UserStreamData, UserStreamReset
from tests.node_fixtures import (
    COOKIE,
    HOST,
    TIMEOUT,
    DevCerts,
    DictDiscovery,
    make_node,
    tls_config,
    tmp_certs,  # noqa: F401 (a fixture)
)
from tests.raw_peer import RawPeer


TAG = Atom("quic_dist_stream")
DATA = Atom("data")
RESET = Atom("reset")
CLOSED = Atom("closed")
KIB = 1024
MIB = 1024 * KIB


@pytest.fixture
def spawn(tmp_certs: DevCerts) -> Iterator[Callable[..., Node]]:  # noqa: F811
    disc = DictDiscovery()
    made: list[Node] = []

    def spawn(alive: str, **kw: Any) -> Node:
        node = make_node(tmp_certs, f"{alive}@{HOST}", discovery=disc, **kw)
        made.append(node)
        return node

    try:
        yield spawn
    finally:
        for node in reversed(made):
            node.stop()


@pytest.fixture
def nodes(spawn: Callable[..., Node]) -> tuple[Node, Node]:
    a, b = spawn("a"), spawn("b")
    assert a.connect(b.name)
    return a, b


def serve_in_thread(acceptor: Acceptor, handler: Callable[[StreamRef], None],
                    count: int = 1) -> threading.Thread:
    """Accept ``count`` streams on a thread and run ``handler`` on each."""
    def run() -> None:
        for _ in range(count):
            try:
                ref = acceptor.accept(TIMEOUT)
            except (StreamError, NodeDown, QuicDistTimeoutError):
                return
            handler(ref)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def echo(ref: StreamRef) -> None:
    try:
        for chunk in ref:
            ref.send(chunk)
        ref.close()
    except (StreamError, NodeDown):
        pass


def in_thread(fn: Callable[[], Any]) -> BaseException | Any:
    """Run ``fn`` on another thread; what it returned or raised."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(TIMEOUT)
    return out[0]


# ------------------------------------------------------------ arguments


@pytest.mark.parametrize("priority", [0, 15, 256, -1, "128", 128.0, True, None])
def test_priority_outside_16_to_255_is_a_value_error(nodes, priority):
    a, b = nodes
    with pytest.raises(ValueError):
        a.open_stream(b.name, priority)
    with pytest.raises(ValueError):
        a.accept_streams(b.name, priority=priority)
    assert a.list_streams() == []


def test_open_stream_checks_the_peer(spawn):
    a = spawn("a")
    with pytest.raises(NotConnected):
        a.open_stream("nobody@127.0.0.1")
    with pytest.raises(ConfigurationError):
        a.open_stream("not a node name")
    with pytest.raises(ConfigurationError):
        a.open_stream(a.name)
    with pytest.raises(ConfigurationError):
        a.accept_streams("not a node name")
    with pytest.raises(ConfigurationError):
        a.accept_streams(a.name)
    b = spawn("b")
    with pytest.raises(ConfigurationError):
        a.accept_streams(b.name, mailbox=b.mailbox())  # another node's process
    # A peer that is not connected yet is connected first.
    ref = a.open_stream(b.name, 16)
    assert ref.priority == 16 and a.nodes() == [b.name]


def test_info_and_list_streams(nodes, spawn):
    a, b = nodes
    c = spawn("c")
    assert a.connect(c.name)
    r1 = a.open_stream(b.name)
    r2 = a.open_stream(b.name, priority=200)
    r3 = a.open_stream(c.name, priority=16)
    info = r2.info()
    assert set(info) == {"ref", "node", "stream_id", "owner", "priority", "recv_fin",
                         "send_fin"}
    assert info == {"ref": r2, "node": b.name, "stream_id": r2.stream_id,
                    "owner": threading.current_thread(), "priority": 200,
                    "recv_fin": False, "send_fin": False}
    assert [i["ref"] for i in a.list_streams()] == [r1, r2, r3]
    assert [i["ref"] for i in a.list_streams(b.name)] == [r1, r2]
    assert a.list_streams("nobody@127.0.0.1") == []
    assert r1.stream_id == 20 and r2.stream_id == 24  # a dialed: client ids from 20
    r1.reset()
    r2.close()
    assert r2.info()["send_fin"] and [i["ref"] for i in a.list_streams()] == [r2, r3]
    assert repr(r3).startswith(f"<StreamRef {c.name}#")


# ------------------------------------------------------------ ownership


def test_only_the_owner_may_use_a_stream(nodes):
    a, b = nodes
    ref = a.open_stream(b.name)
    for op in (lambda: ref.send(b"x"), lambda: ref.recv(timeout=0), ref.close,
               ref.reset, lambda: ref.controlling_process(threading.current_thread()),
               ref.set_active):
        error = in_thread(op)
        assert isinstance(error, NotOwner) and isinstance(error, StreamError), error
    assert not ref.closed and ref.info()["owner"] is threading.current_thread()


def test_controlling_process_checks_the_new_owner(nodes):
    a, b = nodes
    ref = a.open_stream(b.name)
    with pytest.raises(TypeError):
        ref.controlling_process(object())  # type: ignore[arg-type]
    dead = threading.Thread(target=lambda: None)
    with pytest.raises(ConfigurationError):
        ref.controlling_process(dead)  # never started
    with pytest.raises(ConfigurationError):
        ref.controlling_process(threading.current_thread(), active=True)
    with pytest.raises(ConfigurationError):
        ref.controlling_process(b.mailbox())  # a process of the other node
    gone = a.mailbox()
    gone.close()
    with pytest.raises(MailboxClosed):
        ref.controlling_process(gone)
    with pytest.raises(ConfigurationError):
        ref.set_active()  # a thread owner reads with recv()
    assert ref.owner is threading.current_thread()


def test_a_mailbox_owner_gets_the_erlang_message_shapes(nodes):
    a, b = nodes
    inbox = b.mailbox()
    b.accept_streams(a.name, mailbox=inbox)
    ref = a.open_stream(b.name)
    ref.send(b"hello")
    tag, server, event = inbox.receive(TIMEOUT)
    assert (tag, event) == (TAG, (DATA, b"hello", False))
    assert type(tag) is Atom and type(event[0]) is Atom
    assert isinstance(server, StreamRef) and server.owner is inbox
    with pytest.raises(LocalProtocolError):
        server.recv(timeout=0)  # it delivers as messages
    ref.close()
    assert inbox.receive(TIMEOUT) == (TAG, server, (DATA, b"", True))
    server.send(b"bye", fin=True)  # any thread acts for a Mailbox owner
    assert inbox.receive(TIMEOUT) == (TAG, server, CLOSED)
    ref.settimeout(TIMEOUT)
    assert b"".join(ref) == b"bye" and ref.closed
    # A reset reaches it as ("reset", Code).
    ref2 = a.open_stream(b.name)
    ref2.send(b"x")
    _, server2, _ = inbox.receive(TIMEOUT)
    ref2.reset(42)
    assert inbox.receive(TIMEOUT) == (TAG, server2, (RESET, 42))
    assert len(inbox) == 0


def test_switching_to_messages_delivers_what_was_buffered_first(nodes):
    a, b = nodes
    acceptor = b.accept_streams(a.name)
    ref = a.open_stream(b.name)
    ref.send(b"one ")
    server = acceptor.accept(TIMEOUT)
    ref.send(b"two", fin=True)
    assert server.recv(3, timeout=TIMEOUT) == b"one"
    inbox = b.mailbox()
    server.controlling_process(inbox, active=True)
    data = b""
    while True:
        _, got, event = inbox.receive(TIMEOUT)
        assert got is server and event[0] == DATA
        data += event[1]
        if event[2]:
            break
    assert data == b" two"
    server.set_active(False)
    assert server.recv(timeout=0) == b""  # the FIN was told: EOF from now on
    server.close()
    assert server.closed


def test_a_mailbox_owner_that_does_not_receive_stops_its_peer(spawn):
    config = CarrierConfig(stream_window=256 * KIB, send_buffer=64 * KIB)
    a, b = spawn("a", carrier=config), spawn("b", carrier=config)
    inbox = b.mailbox()
    b.accept_streams(a.name, mailbox=inbox)
    ref = a.open_stream(b.name)
    ref.settimeout(0.5)
    payload = os.urandom(4 * MIB)
    with pytest.raises(QuicDistTimeoutError) as info:
        ref.send(payload)
    sent = info.value.bytes_written
    # Bounded: the receiver's stream window, our send buffer, a quantum or so.
    assert 0 < sent <= 256 * KIB + 64 * KIB + 64 * KIB, sent
    ref.settimeout(TIMEOUT)
    received = bytearray()

    def drain() -> None:
        while True:
            _, _, (_, data, fin) = inbox.receive(TIMEOUT)
            received.extend(data)
            if fin:
                return

    reader = threading.Thread(target=drain)
    reader.start()
    ref.send(payload[sent:], fin=True)
    reader.join(TIMEOUT)
    assert bytes(received) == payload


# ------------------------------------------------------- socket semantics


def test_send_after_close_close_and_reset_are_idempotent(nodes):
    a, b = nodes
    serve_in_thread(b.accept_streams(a.name), echo)
    ref = a.open_stream(b.name)
    ref.settimeout(TIMEOUT)
    ref.send(b"ping")
    ref.close()
    ref.close()
    with pytest.raises(StreamClosed):
        ref.send(b"after close")
    with pytest.raises(StreamClosed):
        ref.send(b"", fin=True)
    assert b"".join(ref) == b"ping"
    assert ref.recv() == b"" and ref.closed
    ref.reset(3)  # closed both ways: nothing to reset
    for code in (-1, 1 << 62, "1", 1.0):
        with pytest.raises(ValueError):
            ref.reset(code)  # type: ignore[arg-type]
    other = a.open_stream(b.name)
    other.reset(1)
    other.reset(2)
    with pytest.raises(StreamClosed):
        other.send(b"x")
    with pytest.raises(StreamClosed):
        other.recv()
    other.close()  # nothing to close


def test_timeouts(nodes):
    a, b = nodes
    ref = a.open_stream(b.name)
    with pytest.raises(TimeoutError):
        ref.recv(timeout=0.05)
    ref.settimeout(0.05)
    assert ref.gettimeout() == 0.05
    with pytest.raises(QuicDistTimeoutError):
        ref.recv()
    ref.setblocking(False)
    assert ref.gettimeout() == 0.0
    with pytest.raises(QuicDistTimeoutError):
        ref.recv()
    ref.setblocking(True)
    assert ref.gettimeout() is None
    for bad in (-1, "1", True):
        with pytest.raises(ValueError):
            ref.settimeout(bad)  # type: ignore[arg-type]
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError):
            ref.recv(bad)  # type: ignore[arg-type]


def test_recv_sizes_iteration_and_context_manager(nodes):
    a, b = nodes
    acceptor = b.accept_streams(a.name)
    with a.open_stream(b.name) as ref:
        ref.settimeout(TIMEOUT)  # bounds the iterations below
        ref.send(b"abcdefgh")
        server = acceptor.accept(TIMEOUT)
        server.settimeout(TIMEOUT)
        assert server.recv(3, timeout=TIMEOUT) == b"abc"
        assert server.recv(2, timeout=TIMEOUT) == b"de"
        assert server.recv(timeout=TIMEOUT) == b"fgh"
    # Leaving the with block sent FIN.
    assert ref.info()["send_fin"]
    assert list(server) == []
    server.send(b"x" * 100_000, fin=True)
    assert sum(len(chunk) for chunk in ref) == 100_000
    assert ref.closed and server.closed


def test_makefile_text_and_binary(nodes):
    a, b = nodes

    def upper_lines(ref: StreamRef) -> None:
        reader = ref.makefile("rb")
        writer = ref.makefile("wb")
        for line in reader:
            writer.write(line.decode("utf-8").upper().encode("utf-8"))
            writer.flush()
        ref.close()

    serve_in_thread(b.accept_streams(a.name), upper_lines)
    ref = a.open_stream(b.name)
    ref.settimeout(TIMEOUT)  # bounds the readline() calls
    with ref.makefile("rw", encoding="utf-8", newline="\n") as f:
        f.write("hello\nwörld\n")
        f.flush()
        assert f.readline() == "HELLO\n"
        assert f.readline() == "WÖRLD\n"
        ref.close()
        assert f.readline() == ""
    with pytest.raises(ValueError):
        ref.makefile("ra")
    with pytest.raises(ValueError):
        ref.makefile("r", buffering=0)


# -------------------------------------------------------------- acceptors


def test_acceptor_leaving_hands_its_waiting_streams_on_or_refuses_them(nodes):
    a, b = nodes
    first = b.accept_streams(a.name)
    second = b.accept_streams(a.name)
    r1 = a.open_stream(b.name)
    r1.send(b"for the first")
    # r1 is waiting in `first` (round-robin starts there); it leaves the pool.
    r2 = a.open_stream(b.name)
    r2.send(b"for the second")
    got = second.accept(TIMEOUT)
    assert got.recv(timeout=TIMEOUT) == b"for the second"
    first.close()
    first.close()  # idempotent
    with pytest.raises(StreamClosed):
        first.accept(0)
    handed = second.accept(TIMEOUT)
    assert handed.stream_id == r1.stream_id
    assert handed.recv(timeout=TIMEOUT) == b"for the first"
    # The last member leaves: its waiting stream is refused, and so are new ones.
    r3 = a.open_stream(b.name)
    r3.send(b"late")
    b.stop_accepting(second)
    with pytest.raises(StreamReset) as info:
        r3.recv(timeout=TIMEOUT)
    assert info.value.code == 0x100
    with pytest.raises(QuicDistTimeoutError):
        b.accept_streams(a.name).accept(timeout=0.05)


def test_a_mailbox_acceptor_leaves_the_pool_when_it_exits(nodes):
    a, b = nodes
    inbox = b.mailbox()
    acceptor = b.accept_streams(a.name, mailbox=inbox)
    with pytest.raises(LocalProtocolError):
        acceptor.accept(0)
    ref = a.open_stream(b.name)
    ref.send(b"x")
    _, server, _ = inbox.receive(TIMEOUT)
    inbox.close()  # owner exit: its stream is reset with 0, its acceptor leaves
    with pytest.raises(StreamReset) as info:
        ref.recv(timeout=TIMEOUT)
    assert info.value.code == 0 and server.closed and acceptor.closed
    late = a.open_stream(b.name)
    late.send(b"y")
    with pytest.raises(StreamReset) as info:
        late.recv(timeout=TIMEOUT)
    assert info.value.code == 0x100


def test_stop_wakes_accept_recv_and_send(spawn):
    a, b = spawn("a"), spawn("b", carrier=CarrierConfig(stream_window=64 * KIB))
    acceptor = b.accept_streams(a.name)
    ref = a.open_stream(b.name)  # a writes to it until b's window is full
    ref.send(b"x")
    server = acceptor.accept(TIMEOUT)
    assert server.recv(timeout=TIMEOUT) == b"x"
    # b waits in recv on a second stream, on which nothing more comes (on
    # the first, recv would return what a keeps writing).
    quiet_ref = a.open_stream(b.name)
    quiet_ref.send(b"y")
    quiet = acceptor.accept(TIMEOUT)
    assert quiet.recv(timeout=TIMEOUT) == b"y"
    results: dict[str, BaseException] = {}
    started = threading.Event()
    writing = threading.Event()

    def wait_accept() -> None:  # on b
        started.wait(TIMEOUT)
        try:
            acceptor.accept()
        except BaseException as exc:  # noqa: BLE001 - checked below
            results["accept"] = exc

    def wait_recv() -> None:  # on b
        started.wait(TIMEOUT)
        try:
            quiet.recv()
        except BaseException as exc:  # noqa: BLE001 - checked below
            results["recv"] = exc

    def wait_send() -> None:  # on a, blocked by b's small window (b does not read)
        started.wait(TIMEOUT)
        try:
            for _ in range(64):
                ref.send(bytes(64 * KIB))
                writing.set()
        except BaseException as exc:  # noqa: BLE001 - checked below
            results["send"] = exc

    threads = [threading.Thread(target=f) for f in (wait_accept, wait_recv, wait_send)]
    for thread in threads:
        thread.start()
    quiet.controlling_process(threads[1])
    ref.controlling_process(threads[2])
    started.set()
    assert writing.wait(TIMEOUT)
    b.stop()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not [t for t in threads if t.is_alive()], "b.stop() did not wake every call"
    assert isinstance(results["accept"], NodeDown), results
    assert isinstance(results["recv"], NodeDown), results
    assert isinstance(results["send"], NodeDown), results
    with pytest.raises(NodeDown):
        b.accept_streams(a.name)
    with pytest.raises(NodeDown):
        b.open_stream(a.name)


# ------------------------------------------------------------- credit


def test_many_streams_do_not_use_up_the_connection_window(spawn):
    """Every byte a stream delivered is consumed once, read or dropped: after
    many streams (read, reset half-read, reset unread, refused) through a
    1 MiB connection window, a 3 MiB transfer still flows."""
    config = CarrierConfig(stream_window=256 * KIB, connection_window=1 * MIB,
                           send_buffer=128 * KIB)
    a, b = spawn("a", carrier=config), spawn("b", carrier=config)
    acceptor = b.accept_streams(a.name)
    for i in range(60):
        ref = a.open_stream(b.name)
        ref.send(os.urandom(50 * KIB + i), fin=True)
        server = acceptor.accept(TIMEOUT)
        if i % 3 == 0:
            server.settimeout(TIMEOUT)
            assert len(b"".join(server)) == 50 * KIB + i
            server.close()
            assert ref.recv(timeout=TIMEOUT) == b""
        else:
            if i % 3 == 1:
                server.recv(timeout=TIMEOUT)  # some of it; the rest is dropped
            server.reset(i)
            with pytest.raises(StreamReset):
                ref.recv(timeout=TIMEOUT)
    b.stop_accepting(acceptor)
    for _ in range(20):
        refused = a.open_stream(b.name)
        refused.send(os.urandom(100 * KIB))
        with pytest.raises(StreamReset):
            refused.recv(timeout=TIMEOUT)
    digests: list[bytes] = []
    serving = serve_in_thread(b.accept_streams(a.name),
                              lambda server: digests.append(
                                  hashlib.sha256(b"".join(server)).digest()))
    big = os.urandom(3 * MIB)
    ref = a.open_stream(b.name)
    ref.settimeout(TIMEOUT)
    ref.send(big, fin=True)
    serving.join(TIMEOUT)
    assert digests == [hashlib.sha256(big).digest()]


# ------------------------------------------------------ a hostile peer


@pytest.fixture
def raw(tmp_certs: DevCerts, spawn) -> Iterator[tuple[Node, RawPeer]]:  # noqa: F811
    node = spawn("n")
    tls = tls_config(tmp_certs.node, tmp_certs.ca)
    peer = RawPeer.connected(node.port, tls, node.name, cookie=COOKIE)
    try:
        yield node, peer
    finally:
        peer.close()


def _quic(peer: RawPeer, fn: Callable[[Any], None]) -> None:
    """Run ``fn(quic)`` on the raw peer's I/O thread (its aioquic connection)."""
    peer.conn._call(lambda: fn(peer.conn.protocol.quic), TIMEOUT)


def test_garbage_and_resets_on_unknown_streams_are_refused_or_ignored(raw):
    node, peer = raw
    # A stream nobody accepts: refused with 0x100, however much garbage follows.
    sid, outbox = peer.conn.open_stream()
    outbox.write(os.urandom(300 * KIB))
    event = peer.expect_user_event(lambda e: isinstance(e, UserStreamReset))
    assert event == UserStreamReset(sid, 0x100)
    # A reset of a stream the node never saw (no byte was sent on it).
    sid2, _ = peer.conn.open_stream()
    peer.conn.reset_stream(sid2, 77)
    # A reset of the refused stream, again.
    peer.conn.reset_stream(sid, 78)
    peer.barrier()  # the node still answers, in order
    # And a later stream is served normally.
    acceptor = node.accept_streams(peer.name)
    sid3, outbox3 = peer.conn.open_stream()
    outbox3.write(b"real", fin=True)
    server = acceptor.accept(TIMEOUT)
    server.settimeout(TIMEOUT)
    assert server.stream_id == sid3 and b"".join(server) == b"real"
    server.send(b"answer", fin=True)
    event = peer.expect_user_event(lambda e: isinstance(e, UserStreamData) and e.fin)
    assert event.stream_id == sid3
    assert node.list_streams() == [] and node.nodes() == [peer.name]


def test_garbage_on_a_stream_below_the_user_threshold_closes_only_that_connection(
        raw, tmp_certs):  # noqa: F811
    node, peer = raw
    # Stream 8 is one of the dialer's distribution streams (PROTOCOL.md §2):
    # what arrives there must be distribution frames.
    _quic(peer, lambda quic: quic.send_stream_data(8, b"\xff\xff\xff\xff not a frame"))
    closed = peer.expect_closed()
    assert isinstance(closed, ConnectionClosed) and closed.error_code == 0x2  # FrameError
    tls = tls_config(tmp_certs.node, tmp_certs.ca)
    again = RawPeer.connected(node.port, tls, node.name, cookie=COOKIE)
    try:
        again.barrier()
    finally:
        again.close()


def test_a_peer_opening_more_streams_than_allowed_is_closed(raw, tmp_certs):  # noqa: F811
    node, peer = raw

    def overrun(quic: Any) -> None:
        quic._remote_max_streams_bidi = 10_000  # pretend the node allowed it
        quic.send_stream_data(4 * 500, b"one too many")

    _quic(peer, overrun)
    closed = peer.expect_closed()
    assert closed.error_code == 0x4  # STREAM_LIMIT_ERROR
    tls = tls_config(tmp_certs.node, tmp_certs.ca)
    again = RawPeer.connected(node.port, tls, node.name, cookie=COOKIE)
    try:
        again.barrier()
    finally:
        again.close()


def test_bytes_that_arrive_after_a_reset_are_not_a_new_stream(raw):
    node, peer = raw
    acceptor = node.accept_streams(peer.name)
    sid, outbox = peer.conn.open_stream()
    outbox.write(b"first")
    server = acceptor.accept(TIMEOUT)
    assert server.recv(timeout=TIMEOUT) == b"first"
    reset_done = threading.Event()

    def late_bytes() -> None:
        # On the peer's I/O thread, before it reads the node's STOP_SENDING:
        # bytes that were on their way when the node reset the stream.
        reset_done.wait(TIMEOUT)
        peer.conn.protocol.quic.send_stream_data(sid, b"late bytes")

    peer.conn._post(late_bytes)
    server.reset(5)
    reset_done.set()
    marker, marker_outbox = peer.conn.open_stream()
    marker_outbox.write(b"marker", fin=True)
    following = acceptor.accept(TIMEOUT)
    assert following.stream_id == marker != sid
    following.settimeout(TIMEOUT)
    assert b"".join(following) == b"marker"
    assert len(acceptor) == 0
    peer.barrier()
