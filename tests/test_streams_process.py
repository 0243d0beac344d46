"""User streams between a Node here and tests/node_peer.py nodes in other processes.

Every scenario of the user-stream issue that involves the wire runs here,
over 127.0.0.1 between two processes: request/response both ways, the
acceptor pool's round-robin, refusal with 0x100, half-close and ``closed``,
reset codes both ways, ownership (hand-over, owner exit), 1000 concurrent
streams, a large transfer checked by SHA-256, priorities under bulk load,
a reader that stops, and a node going down with streams open. The peer
prints facts on stdout (see tests/node_peer.py); the test waits for them
with a timeout, never sleeps. Orders are asserted, not durations (except
the node-down bound, which is the contract: within net_ticktime).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest

from quicdist import Atom, Mailbox, Node, StreamRef
from quicdist.config import CarrierConfig
from quicdist.errors import (
    NodeDown,
    NotOwner,
    QuicDistTimeoutError,
    StreamClosed,
    StreamReset,
)
from tests.test_node_process import (  # noqa: F401 (fixtures)
    SLACK,
    TICK,
    TIMEOUT,
    PeerNode,
    Table,
    make_node,
    peers,
    proc_certs,
    start_peer,
)


PEER = "b@127.0.0.1"
TAG = Atom("quic_dist_stream")
DATA = Atom("data")
RESET = Atom("reset")
CLOSED = Atom("closed")
MIB = 1024 * 1024
#: The soak run's transfer (make soak): 1 GiB unless QUICDIST_SOAK_STREAM_MIB says.
SOAK_MIB = int(os.environ.get("QUICDIST_SOAK_STREAM_MIB", "1024"))
#: The bulk stream of the priority test (it is reset once the urgent one is done).
BULK_MIB = 1024


def pair(proc_certs, peers, **node_kw) -> tuple[Node, PeerNode]:  # noqa: F811
    """A node here and a connected peer process (the caller stops the node)."""
    table = Table()
    node = make_node(proc_certs, discovery=table, **node_kw)
    try:
        ticktime = node_kw.get("net_ticktime")
        extra = ("--ticktime", str(ticktime)) if ticktime else ()
        peer = start_peer(peers, PEER, proc_certs, node, *extra)
        table.add(peer.name, peer.port)
        assert node.connect(PEER)
    except BaseException:
        node.stop()
        raise
    return node, peer


def stream_messages(mailbox: Mailbox, ref: StreamRef, until=CLOSED) -> list:
    """The stream events ``mailbox`` gets for ``ref``, up to and including ``until``."""
    events = []
    while True:
        message = mailbox.receive(TIMEOUT)
        assert message[0] == TAG and message[1] is ref, message
        events.append(message[2])
        if message[2] == until or (isinstance(message[2], tuple) and message[2][0] == until):
            return events


def echo_round_trip(ref: StreamRef, payload: bytes) -> None:
    ref.send(payload)
    got = b""
    while len(got) < len(payload):
        got += ref.recv(timeout=TIMEOUT)
    assert got == payload


# ------------------------------------------------------------- basics


def test_request_response_both_ways(proc_certs, peers):  # noqa: F811
    node, peer = pair(proc_certs, peers)
    with node:
        # Python here opens, the peer's acceptor answers.
        peer.ask(f"accept {node.name} 1 sha", "ACCEPTING")
        request = os.urandom(100_000)
        with node.open_stream(PEER) as ref:
            ref.settimeout(TIMEOUT)
            ref.send(request, fin=True)
            answer = b"".join(ref)
        assert answer == f"{len(request)} {hashlib.sha256(request).hexdigest()}".encode()
        assert ref.closed and ref.info()["recv_fin"] and ref.info()["send_fin"]
        words = peer.expect("SHA")
        assert int(words[1]) == ref.stream_id and int(words[2]) == len(request)

        # The peer opens, an acceptor here answers.
        acceptor = node.accept_streams(PEER)
        peer.ask(f"open q {node.name} 128", "OPENED")
        peer.ask("send-fin q what time is it", "DONE")
        peer.send("read q")
        server = acceptor.accept(TIMEOUT)
        assert server.owner is threading.current_thread()
        assert server.node == PEER and server.stream_id % 2 == 1  # opened by the listener
        server.settimeout(TIMEOUT)
        assert b"".join(server) == b"what time is it"
        server.send(b"tea time", fin=True)
        assert peer.expect("READ")[1:] == ["q", "tea", "time", "EOF"]
        assert server.closed
        assert node.list_streams() == []


def test_acceptor_pool_round_robin_with_four_acceptor_threads(proc_certs, peers):  # noqa: F811
    node, peer = pair(proc_certs, peers)
    with node:
        # Four acceptor threads here; the peer opens 12 streams one after the other.
        acceptors = [node.accept_streams(PEER) for _ in range(4)]
        served: list[list[int]] = [[] for _ in acceptors]
        errors: list[BaseException] = []

        def serve(k: int) -> None:
            try:
                for _ in range(3):
                    ref = acceptors[k].accept(TIMEOUT)
                    ref.settimeout(TIMEOUT)
                    served[k].append(ref.stream_id)
                    ref.send(b"".join(ref) + b"!", fin=True)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=serve, args=(k,)) for k in range(4)]
        for thread in threads:
            thread.start()
        ids = []
        for i in range(12):
            ids.append(int(peer.ask(f"open s{i} {node.name} 128", "OPENED")[2]))
            peer.ask(f"send-fin s{i} n{i}", "DONE")
            peer.send(f"read s{i}")
            assert peer.expect("READ")[1:] == [f"s{i}", f"n{i}!", "EOF"]
        for thread in threads:
            thread.join(TIMEOUT)
        assert not errors, errors
        # Stream i went to acceptor i mod 4, in order.
        assert served == [ids[k::4] for k in range(4)]

        # And the other way round: four acceptor threads in the peer.
        peer.ask(f"accept {node.name} 4 echo", "ACCEPTING")
        for i in range(8):
            with node.open_stream(PEER) as ref:
                echo_round_trip(ref, b"ping %d" % i)
            words = peer.expect("ACCEPTED")
            assert int(words[1]) == i % 4 and int(words[2]) == ref.stream_id


def test_no_acceptor_refuses_with_0x100(proc_certs, peers):  # noqa: F811
    node, peer = pair(proc_certs, peers)
    with node:
        ref = node.open_stream(PEER)
        ref.send(b"anyone there?")
        with pytest.raises(StreamReset) as info:
            ref.recv(timeout=TIMEOUT)
        assert info.value.code == 0x100
        with pytest.raises(StreamReset) as info:
            ref.send(b"more")
        assert info.value.code == 0x100
        assert ref.closed and node.list_streams() == []
        # The other way: nothing accepts here.
        peer.ask(f"open r {node.name} 128", "OPENED")
        peer.ask("send r hello", "DONE")
        peer.send("read r")
        assert peer.expect("READ-ERROR")[1:] == ["r", "StreamReset", "256"]
        # An acceptor that leaves the pool stops accepting.
        acceptor = node.accept_streams(PEER)
        node.stop_accepting(acceptor)
        peer.ask(f"open r2 {node.name} 128", "OPENED")
        peer.ask("send r2 hello", "DONE")
        peer.send("read r2")
        assert peer.expect("READ-ERROR")[1:] == ["r2", "StreamReset", "256"]
        assert node.ping(PEER) == "pong"


def test_half_close_and_closed_once_on_both_sides(proc_certs, peers):  # noqa: F811
    node, peer = pair(proc_certs, peers)
    with node:
        # Here: a Mailbox owner with message delivery; there: a thread that
        # reads to our FIN, then answers and closes.
        peer.ask(f"accept {node.name} 1 halfclose", "ACCEPTING")
        ref = node.open_stream(PEER)
        mailbox = node.mailbox()
        ref.send(b"question")
        ref.close()  # half-close: we can still receive
        assert ref.info()["send_fin"] and not ref.info()["recv_fin"]
        with pytest.raises(StreamClosed):
            ref.send(b"after close")
        ref.controlling_process(mailbox, active=True)
        events = stream_messages(mailbox, ref)
        data = b"".join(e[1] for e in events if isinstance(e, tuple) and e[0] == DATA)
        assert data == b"bye"
        assert events[-1] == CLOSED and events.count(CLOSED) == 1
        assert [e[2] for e in events if isinstance(e, tuple)][-1] is True  # fin before closed
        assert peer.expect("GOT-FIN")[1:] == [str(ref.stream_id), "8"]
        assert peer.expect("BOTH-FIN")[1:] == [str(ref.stream_id), "True"]
        # Nothing more comes: a round trip on the connection proves it.
        assert node.ping(PEER) == "pong"
        assert len(mailbox) == 0

        # The same seen from a Mailbox acceptor there: closed exactly once.
        peer.ask(f"accept-mailbox {node.name} echo", "ACCEPTING")
        peer.ask(f"stop-accepting {node.name}", "STOPPED-ACCEPTING")  # only the mailbox left
        peer.ask(f"accept-mailbox {node.name} echo", "ACCEPTING")
        with node.open_stream(PEER) as ref2:
            ref2.send(b"abc", fin=True)
            assert b"".join(ref2) == b"abc"
        assert peer.expect("MSG")[2:] == ["data", "3", "True"]
        assert peer.expect("MSG")[2:] == ["closed"]
        since = len(peer.seen)
        assert peer.ask(f"ping {node.name}", "PING")[2] == "pong"
        assert not [line for line in peer.seen[since:] if line.startswith("MSG")]


def test_reset_codes_both_ways(proc_certs, peers):  # noqa: F811
    node, peer = pair(proc_certs, peers)
    with node:
        # Reset here, seen there.
        peer.ask(f"accept {node.name} 1 hold", "ACCEPTING")
        ref = node.open_stream(PEER)
        ref.send(b"x")
        peer.expect("ACCEPTED")
        ref.reset(0x1234)
        assert peer.expect("RECV-ERROR")[1:] == [str(ref.stream_id), "StreamReset",
                                                 str(0x1234)]
        with pytest.raises(StreamClosed):
            ref.send(b"y")
        ref.reset(5)  # idempotent
        peer.ask(f"stop-accepting {node.name}", "STOPPED-ACCEPTING")

        # Reset there, seen here (thread owner and Mailbox owner).
        peer.ask(f"accept {node.name} 2 reset 119", "ACCEPTING")
        ref = node.open_stream(PEER)
        ref.send(b"x")
        with pytest.raises(StreamReset) as info:
            ref.recv(timeout=TIMEOUT)
        assert info.value.code == 119 and info.value.stream_id == ref.stream_id
        mailbox = node.mailbox()
        ref = node.open_stream(PEER)
        ref.controlling_process(mailbox, active=True)
        ref.send(b"x")
        assert stream_messages(mailbox, ref, until=RESET) == [(RESET, 119)]

        # The peer resets a stream it opened.
        acceptor = node.accept_streams(PEER)
        peer.ask(f"open z {node.name} 128", "OPENED")
        peer.ask("send z data", "DONE")
        server = acceptor.accept(TIMEOUT)
        assert server.recv(timeout=TIMEOUT) == b"data"
        peer.ask("reset z 7", "DONE")
        with pytest.raises(StreamReset) as info:
            server.recv(timeout=TIMEOUT)
        assert info.value.code == 7


# ------------------------------------------------------------ ownership


def test_controlling_process_to_another_thread_and_to_a_mailbox(proc_certs, peers):  # noqa: F811
    node, peer = pair(proc_certs, peers)
    with node:
        peer.ask(f"accept {node.name} 1 echo", "ACCEPTING")
        ref = node.open_stream(PEER)
        echo_round_trip(ref, b"mine")
        handed = threading.Event()
        done = threading.Event()
        results: list[object] = []

        def worker() -> None:
            handed.wait(TIMEOUT)
            try:
                echo_round_trip(ref, b"now the worker's")
                results.append("ok")
            except BaseException as exc:  # noqa: BLE001 - checked below
                results.append(exc)
            done.set()
            handed.clear()
            handed.wait(TIMEOUT)  # stay alive until the main thread is done

        thread = threading.Thread(target=worker)
        thread.start()
        try:
            ref.controlling_process(thread)
            assert ref.info()["owner"] is thread
            with pytest.raises(NotOwner):
                ref.send(b"not mine any more")
            with pytest.raises(NotOwner):
                ref.recv(timeout=0)
            with pytest.raises(NotOwner):
                ref.controlling_process(threading.current_thread())
            handed.set()
            assert done.wait(TIMEOUT) and results == ["ok"]
        finally:
            handed.set()
            thread.join(TIMEOUT)

        # To a Mailbox: what the peer sends arrives as messages.
        ref2 = node.open_stream(PEER)
        mailbox = node.mailbox()
        ref2.send(b"before")
        ref2.controlling_process(mailbox, active=True)
        assert ref2.info()["owner"] is mailbox
        ref2.send(b" and after", fin=True)  # a Mailbox owner acts from any thread
        events = stream_messages(mailbox, ref2)
        data = b"".join(e[1] for e in events if isinstance(e, tuple))
        assert data == b"before and after" and events[-1] == CLOSED


def test_owner_exit_resets_its_streams_with_code_0(proc_certs, peers):  # noqa: F811
    node, peer = pair(proc_certs, peers)
    with node:
        peer.ask(f"accept {node.name} 2 hold", "ACCEPTING")
        # A Mailbox owner exits.
        ref = node.open_stream(PEER)
        ref.send(b"x")
        assert peer.expect("ACCEPTED")[2] == str(ref.stream_id)
        mailbox = node.mailbox()
        ref.controlling_process(mailbox)
        mailbox.close()
        assert peer.expect("RECV-ERROR")[1:] == [str(ref.stream_id), "StreamReset", "0"]
        assert ref.closed and node.list_streams() == []
        # An owner thread ends (the node's ticker notices within a second).
        opened: list[StreamRef] = []
        accepted = threading.Event()

        def own() -> None:
            opened.append(node.open_stream(PEER))
            opened[0].send(b"y")
            accepted.wait(TIMEOUT)

        thread = threading.Thread(target=own)
        thread.start()
        try:
            peer.expect("ACCEPTED")
        finally:
            accepted.set()
            thread.join(TIMEOUT)
        assert peer.expect("RECV-ERROR")[1:] == [str(opened[0].stream_id), "StreamReset", "0"]
        assert opened[0].closed


# ---------------------------------------------------------------- scale


def test_a_thousand_concurrent_streams_on_one_connection(proc_certs, peers):  # noqa: F811
    node, peer = pair(proc_certs, peers)
    with node:
        peer.ask(f"accept-mailbox {node.name} echo-quiet", "ACCEPTING")
        refs = [node.open_stream(PEER) for _ in range(1000)]
        assert len(node.list_streams(PEER)) == 1000
        assert len({ref.stream_id for ref in refs}) == 1000
        requests = [b"%04d:" % i + os.urandom(200) for i in range(1000)]
        for ref, request in zip(refs, requests, strict=True):
            ref.send(request, fin=True)
        for ref, request in zip(refs, requests, strict=True):
            ref.settimeout(TIMEOUT)
            assert b"".join(ref) == request
            assert ref.closed
        assert node.list_streams() == []
        assert node.ping(PEER) == "pong"
        # The carrier forgot them too (its bookkeeping does not pile up).
        assert int(peer.ask("streams", "STREAMS")[1]) == 0


def _big_transfer(node: Node, peer: PeerNode, mib: int) -> None:
    peer.ask(f"accept {node.name} 1 sha", "ACCEPTING")
    digest = hashlib.sha256()
    block = os.urandom(MIB)
    with node.open_stream(PEER) as ref:
        ref.settimeout(TIMEOUT)  # each send and recv (the peer reads as it comes)
        for i in range(mib):
            # A different MiB each time (the first 8 bytes count up).
            piece = i.to_bytes(8, "big") + block[8:]
            digest.update(piece)
            ref.send(piece)
        ref.close()
        answer = b"".join(ref)
    assert answer == f"{mib * MIB} {digest.hexdigest()}".encode()


def test_a_256_mib_transfer_arrives_intact(proc_certs, peers):  # noqa: F811
    node, peer = pair(proc_certs, peers)
    with node:
        _big_transfer(node, peer, 256)


@pytest.mark.soak
@pytest.mark.skipif(not os.environ.get("QUICDIST_SOAK"),
                    reason="a long run: make soak (QUICDIST_SOAK=1)")
def test_a_long_transfer_arrives_intact(proc_certs, peers):  # noqa: F811
    node, peer = pair(proc_certs, peers)
    with node:
        _big_transfer(node, peer, SOAK_MIB)


# ------------------------------------------------------------ priorities


def test_urgent_stream_completes_100_round_trips_during_a_bulk_transfer(
        proc_certs, peers):  # noqa: F811
    """Priority 16 against priority 255 saturating the connection: the urgent
    stream's 100 round trips, and distribution messages between them, all
    complete while the bulk transfer is still running."""
    node, peer = pair(proc_certs, peers)
    with node:
        peer.ask(f"accept {node.name} 1 sha", "ACCEPTING")   # first stream: the bulk
        peer.ask(f"accept {node.name} 1 echo", "ACCEPTING")  # second: the urgent one
        echo = peer.echo("e")
        bulk = node.open_stream(PEER, priority=255)
        failures: list[BaseException] = []
        stop = threading.Event()
        handed = threading.Event()
        sent = [0]

        def write_bulk() -> None:
            block = bytes(MIB)
            handed.wait(TIMEOUT)
            try:
                for _ in range(BULK_MIB):
                    if stop.is_set():
                        bulk.reset(9)  # end the bulk stream early
                        return
                    bulk.send(block)
                    sent[0] += MIB
                bulk.close()
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

        writer = threading.Thread(target=write_bulk)
        writer.start()
        bulk.controlling_process(writer)
        handed.set()
        try:
            assert peer.expect("ACCEPTED")[1:] == ["0", str(bulk.stream_id)]
            urgent = node.open_stream(PEER, priority=16)
            order = []
            with node.mailbox() as me:
                for i in range(100):
                    echo_round_trip(urgent, b"urgent %03d" % i)
                    if i % 10 == 0:
                        # Distribution messages flow too: a mailbox round trip, a ping.
                        me.send(echo, (me.pid, Atom("t"), i))
                        assert me.receive(TIMEOUT) == (Atom("t"), i)
                        assert node.ping(PEER, timeout=TIMEOUT) == "pong"
                order.append("urgent done")
            assert peer.expect("ACCEPTED")[1:] == ["0", str(urgent.stream_id)]
            # The bulk transfer has not completed: its answer (sent at its
            # end, with FIN) has not arrived, and its writer is still writing.
            if not bulk.info()["recv_fin"] and sent[0] < BULK_MIB * MIB:
                order.append("bulk still running")
            assert order == ["urgent done", "bulk still running"], (sent[0], order)
            urgent.close()
            assert urgent.recv(timeout=TIMEOUT) == b""
        finally:
            stop.set()
            writer.join(TIMEOUT)
        assert not failures, failures
        assert peer.expect("RECV-ERROR", "SHA")[1:] == [str(bulk.stream_id), "StreamReset", "9"]
        assert node.ping(PEER) == "pong"


# -------------------------------------------------------- flow control


def test_a_reader_that_stops_blocks_its_writer_and_nothing_else(proc_certs, peers):  # noqa: F811
    window = 1 * MIB
    config = CarrierConfig(stream_window=window, send_buffer=256 * 1024)
    node, peer = pair(proc_certs, peers, carrier=config)
    with node:
        peer.ask(f"accept {node.name} 1 stall", "ACCEPTING")
        rss_before = int(peer.ask("rss", "RSS")[1])
        stalled = node.open_stream(PEER)
        stalled.settimeout(1.0)
        block = os.urandom(MIB)
        digest = hashlib.sha256()
        queued = 0
        with pytest.raises(QuicDistTimeoutError) as info:
            for _ in range(64):
                stalled.send(block)
                digest.update(block)
                queued += len(block)
        partial = info.value.bytes_written
        digest.update(block[:partial])
        queued += partial
        peer.expect("STALLED")
        # What the writer got rid of is bounded: the peer's stream window
        # (the peer's default, 4 MiB) plus our send buffer and one block.
        assert queued <= 4 * MIB + 256 * 1024 + MIB, queued
        # Other streams and the distribution messages go on meanwhile (the
        # stalled stream's reader keeps it; new streams go to an echo acceptor).
        peer.ask(f"stop-accepting {node.name}", "STOPPED-ACCEPTING")
        peer.ask(f"accept {node.name} 1 echo", "ACCEPTING")
        for i in range(20):
            with node.open_stream(PEER) as ref:
                echo_round_trip(ref, b"other %d" % i)
        assert node.ping(PEER) == "pong"
        rss_stalled = int(peer.ask("rss", "RSS")[1])
        assert rss_stalled - rss_before < 32 * 1024, (rss_before, rss_stalled)
        # Once the reader reads, the rest flows and all of it is intact.
        peer.ask("drain", "DRAINING")
        stalled.settimeout(TIMEOUT)
        rest = block[partial:]
        stalled.send(rest, fin=True)
        digest.update(rest)
        queued += len(rest)
        assert b"".join(stalled) == f"{queued} {digest.hexdigest()}".encode()


# ------------------------------------------------------------ node down


def test_node_going_down_wakes_every_blocked_call_within_net_ticktime(
        proc_certs, peers):  # noqa: F811
    node, peer = pair(proc_certs, peers, net_ticktime=TICK)
    with node:
        peer.ask(f"accept {node.name} 1 hold", "ACCEPTING")
        peer.ask(f"accept {node.name} 1 stall", "ACCEPTING")
        reader = node.open_stream(PEER)
        reader.send(b"x")
        peer.expect("ACCEPTED")
        writer = node.open_stream(PEER)
        writer.send(b"y")
        peer.expect("ACCEPTED")
        mailbox = node.mailbox()
        active = node.open_stream(PEER)
        active.controlling_process(mailbox, active=True)
        errors: dict[str, BaseException] = {}
        handed = threading.Event()
        sending = threading.Event()

        def blocked_recv() -> None:
            handed.wait(TIMEOUT)
            try:
                reader.recv(timeout=4 * TICK)
            except BaseException as exc:  # noqa: BLE001 - checked below
                errors["recv"] = exc

        def blocked_send() -> None:
            handed.wait(TIMEOUT)
            try:
                block = bytes(MIB)
                for _ in range(256):
                    writer.send(block)
                    sending.set()
            except BaseException as exc:  # noqa: BLE001 - checked below
                errors["send"] = exc

        threads = [threading.Thread(target=blocked_recv), threading.Thread(target=blocked_send)]
        for thread in threads:
            thread.start()
        reader.controlling_process(threads[0])
        writer.controlling_process(threads[1])
        handed.set()
        assert sending.wait(TIMEOUT)
        peer.expect("STALLED")
        killed = time.monotonic()
        peer.kill9()
        for thread in threads:
            thread.join(TICK + SLACK + 2.0)
            assert not thread.is_alive()
        woke = time.monotonic() - killed
        assert woke <= TICK + SLACK, woke
        assert isinstance(errors["recv"], NodeDown), errors
        assert isinstance(errors["send"], NodeDown), errors
        assert mailbox.receive(TIMEOUT) == (TAG, active, (RESET, Atom("noconnection")))
        # Operations on streams of a node that went down fail at once.
        with pytest.raises(NodeDown):
            active.send(b"late")
        active.set_active(False)
        with pytest.raises(NodeDown):
            active.recv(timeout=0)
        active.close()  # does nothing
        active.reset()  # does nothing
        assert node.list_streams() == [] and node.nodes() == []
