"""quicdist.Node: two or three in-process nodes on 127.0.0.1 over real QUIC.

Every node listens on port 0 with ``verify_peer`` and the dev certificates of
``tests/node_fixtures.py``; peers find each other through a dict-backed
discovery object filled in once their ports are known (and one node also
through its static ``nodes`` table). Every node a test makes is stopped by
the ``spawn`` fixture. Waits are on mailbox receives, joins and connection
attempts, all with timeouts; ``wait_until`` is used only where no event can
be waited on.
"""

from __future__ import annotations

import gc
import math
import os
import queue
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from quicdist import Atom, ImproperList, Mailbox, Map, Node, Pid, Reference, encode
from quicdist.errors import (
    AuthenticationError,
    CallError,
    CertificateError,
    ConfigurationError,
    ConnectionClosed,
    DiscoveryError,
    EncodeError,
    HandshakeError,
    MailboxClosed,
    NodeDown,
    NoProc,
    QuicDistError,
    QuicDistTimeoutError,
    RpcError,
    TLSHandshakeError,
)
from tests.node_fixtures import (
    HOST,
    TIMEOUT,
    DevCerts,
    DictDiscovery,
    make_node,
    quicdist_threads,
    send_in_order,
    tmp_certs,  # noqa: F401 (a fixture)
)


EXIT = Atom("EXIT")
DOWN = Atom("DOWN")
PROCESS = Atom("process")
NORMAL = Atom("normal")
NOPROC = Atom("noproc")
NOCONNECTION = Atom("noconnection")
GEN_CALL = Atom("$gen_call")
GEN_CAST = Atom("$gen_cast")
#: connect_timeout of nodes that dial an address where nothing answers.
SHORT_CONNECT = 0.5


# --------------------------------------------------------------- fixtures


@pytest.fixture
def disc() -> DictDiscovery:
    return DictDiscovery()


@pytest.fixture
def spawn(tmp_certs: DevCerts, disc: DictDiscovery) -> Iterator[Callable[..., Node]]:  # noqa: F811
    """``spawn("alpha", **kw)``: a started node ``alpha@127.0.0.1`` in ``disc``."""
    made: list[Node] = []

    def spawn(alive: str, **kw: Any) -> Node:
        kw.setdefault("discovery", disc)
        node = make_node(tmp_certs, f"{alive}@{HOST}", **kw)
        made.append(node)
        if kw["discovery"] is not disc:
            disc.add(node)
        return node

    try:
        yield spawn
    finally:
        errors = []
        for node in reversed(made):
            try:
                node.stop()
            except Exception as exc:  # stop every node before reporting
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def pair(spawn: Callable[..., Node]) -> tuple[Node, Node]:
    """Node A, then node B that finds A only through its static ``nodes`` table.

    A (and any later node) finds B through the shared discovery dict.
    """
    a = spawn("alpha")
    b = spawn("beta", nodes={a.name: (HOST, a.port)}, discovery=None)
    return a, b


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A UDP port on 127.0.0.1 where a socket is bound but nothing ever answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((HOST, 0))
        yield sock.getsockname()[1]
    finally:
        sock.close()


class GenServer:
    """A Python gen_server: threads serving ``$gen_call`` / ``$gen_cast`` on a mailbox.

    Requests: ``('add', X, Y)`` -> X + Y; ``('echo', T)`` -> T; ``whoami``
    -> the caller's pid; ``noreply`` -> no reply; ``('exit', Reason)`` ->
    the mailbox exits with Reason. Casts land in :attr:`casts`.
    """

    def __init__(self, node: Node, name: str, threads: int = 1) -> None:
        self.mailbox = node.mailbox(name)
        self.casts: queue.Queue[Any] = queue.Queue()
        self.calls: queue.Queue[Any] = queue.Queue()
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, daemon=True,
                                         name=f"test-gen-server-{name}-{i}")
                        for i in range(threads)]
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        try:
            while True:
                try:
                    message = self.mailbox.receive(timeout=None)
                except MailboxClosed:
                    return
                self._handle(message)
        except BaseException as exc:
            self.errors.append(exc)

    def _handle(self, message: Any) -> None:
        if isinstance(message, tuple) and len(message) == 2 and message[0] == GEN_CAST:
            self.casts.put(message[1])
            return
        assert isinstance(message, tuple) and len(message) == 3 and message[0] == GEN_CALL, \
            message
        (caller, tag), request = message[1], message[2]
        self.calls.put(request)
        if request == Atom("noreply"):
            return
        if request == Atom("whoami"):
            reply: Any = caller
        elif isinstance(request, tuple) and request[0] == Atom("add"):
            reply = request[1] + request[2]
        elif isinstance(request, tuple) and request[0] == Atom("echo"):
            reply = request[1]
        elif isinstance(request, tuple) and request[0] == Atom("exit"):
            self.mailbox.exit(request[1])
            return
        else:
            reply = (Atom("error"), Atom("unknown_request"))
        self.mailbox.send(caller, (tag, reply))

    def stop(self) -> None:
        self.mailbox.close()
        for thread in self.threads:
            thread.join(TIMEOUT)
        assert not any(t.is_alive() for t in self.threads), "gen_server thread did not end"
        if self.errors:
            raise self.errors[0]


@pytest.fixture
def gen_server() -> Iterator[Callable[..., GenServer]]:
    servers: list[GenServer] = []

    def start(node: Node, name: str, threads: int = 1) -> GenServer:
        server = GenServer(node, name, threads)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


def run_threads(targets: list[Callable[[], None]], timeout: float = 3 * TIMEOUT) -> None:
    """Run each target on its own thread; re-raise the first failure; bounded."""
    errors: list[BaseException] = []

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:
                errors.append(exc)
        return run

    threads = [threading.Thread(target=wrap(fn), daemon=True, name=f"test-worker-{i}")
               for i, fn in enumerate(targets)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "worker threads did not finish in time"
    if errors:
        raise errors[0]


def round_trip(sender: Mailbox, receiver: Mailbox) -> None:
    """A message from ``sender`` to ``receiver`` and back: both ways are flushed.

    Signals sent before it on the same connection (link, monitor, unlink)
    have been handled by the peer when it returns.
    """
    token = sender.node.make_ref()
    sender.send(receiver.pid, (Atom("sync"), sender.pid, token))
    got = receiver.receive(TIMEOUT, match=lambda m: isinstance(m, tuple) and len(m) == 3
                           and m[0] == Atom("sync") and m[2] == token)
    receiver.send(got[1], (Atom("synced"), token))
    assert sender.receive(TIMEOUT, match=lambda m: m == (Atom("synced"), token))


def assert_identical(x: Any, y: Any) -> None:
    """Same Python types all the way down, and the same Erlang term."""
    assert type(x) is type(y), (x, y)
    if isinstance(x, float):
        assert struct.pack(">d", x) == struct.pack(">d", y), (x, y)
    elif isinstance(x, list | tuple):
        assert len(x) == len(y), (x, y)
        for a, b in zip(x, y, strict=True):
            assert_identical(a, b)
    elif isinstance(x, ImproperList):
        assert_identical(list(x.elements), list(y.elements))
        assert_identical(x.tail, y.tail)
    elif isinstance(x, dict):
        assert len(x) == len(y), (x, y)
        for key, value in x.items():
            assert key in y, (key, y)
            other_key = next(k for k in y if k == key)
            assert_identical(key, other_key)
            assert_identical(value, y[key])
    else:
        assert x == y, (x, y)
    assert encode(x) == encode(y)


# ------------------------------------------------------------------ 1. ping


def test_ping_pong_both_directions_and_nodes(pair: tuple[Node, Node],
                                             spawn: Callable[..., Node]) -> None:
    a, b = pair
    assert a.nodes() == [] and b.nodes() == []
    # B dials A through its static table, A dials C through the discovery dict.
    assert b.ping(a.name) == "pong"
    assert a.ping(b.name) == "pong"
    assert a.nodes() == [b.name]
    assert b.nodes() == [a.name]
    c = spawn("gamma")
    assert a.ping(c.name) == "pong"
    assert c.ping(b.name) == "pong"
    assert a.nodes() == sorted([b.name, c.name])
    assert b.nodes() == sorted([a.name, c.name])
    assert c.nodes() == sorted([a.name, b.name])
    assert a.connection_error(b.name) is None


def test_ping_self_is_pong_without_connections(pair: tuple[Node, Node]) -> None:
    a, _ = pair
    assert a.ping(a.name) == "pong"
    assert a.nodes() == []


def test_ping_unknown_node_is_pang(pair: tuple[Node, Node]) -> None:
    a, _ = pair
    ghost = f"ghost@{HOST}"
    assert a.ping(ghost) == "pang"
    assert a.nodes() == []
    # Not in any table: the host fallback (127.0.0.1:4433) is tried last.
    assert isinstance(a.connection_error(ghost), DiscoveryError | ConnectionClosed)
    assert a.ping("not a node name") == "pang"


def test_ping_address_without_listener_is_pang(spawn: Callable[..., Node], disc: DictDiscovery,
                                               blackhole: int) -> None:
    a = spawn("alpha", connect_timeout=SHORT_CONNECT)
    silent = f"silent@{HOST}"
    disc.add(silent, blackhole)
    started = time.monotonic()
    assert a.ping(silent, timeout=TIMEOUT) == "pang"
    # Bounded by the connection attempts, not by the ping's reply timeout.
    assert time.monotonic() - started < 2 * SHORT_CONNECT + 2.0
    assert a.nodes() == []
    assert isinstance(a.connection_error(silent), QuicDistError)
    assert not a.connect(silent)


def test_disconnect_drops_the_node_on_both_sides_then_ping_reconnects(
        pair: tuple[Node, Node]) -> None:
    a, b = pair
    on_a, on_b = a.mailbox(), b.mailbox()
    assert a.ping(b.name) == "pong"
    ref_a = on_a.monitor(on_b.pid)
    ref_b = on_b.monitor(on_a.pid)
    round_trip(on_a, on_b)
    round_trip(on_b, on_a)

    assert a.disconnect(b.name) is True
    assert on_a.receive(TIMEOUT) == (DOWN, ref_a, PROCESS, on_b.pid, NOCONNECTION)
    assert b.name not in a.nodes()
    assert on_b.receive(TIMEOUT) == (DOWN, ref_b, PROCESS, on_a.pid, NOCONNECTION)
    assert a.name not in b.nodes()
    assert a.disconnect(b.name) is False

    assert a.ping(b.name) == "pong"
    assert a.nodes() == [b.name]
    assert b.nodes() == [a.name]
    # The new connection carries messages both ways.
    round_trip(on_a, on_b)
    round_trip(on_b, on_a)


def test_connect_returns_true_and_is_idempotent(pair: tuple[Node, Node]) -> None:
    a, b = pair
    assert a.connect(b.name) is True
    assert a.connect(b.name) is True
    assert b.connect(a.name) is True
    assert a.nodes() == [b.name] and b.nodes() == [a.name]


# -------------------------------------------------------------- 2. messages


def test_send_to_pid_remote_name_local_name_and_node_send(pair: tuple[Node, Node]) -> None:
    a, b = pair
    sender = a.mailbox()
    target = b.mailbox("target")
    local_sender = b.mailbox()

    sender.send(target.pid, (Atom("to_pid"), 1))
    assert target.receive(TIMEOUT) == (Atom("to_pid"), 1)
    sender.send(("target", b.name), (Atom("to_name"), 2))
    assert target.receive(TIMEOUT) == (Atom("to_name"), 2)
    local_sender.send("target", (Atom("local_name"), 3))
    assert target.receive(TIMEOUT) == (Atom("local_name"), 3)
    local_sender.send(("target", b.name), (Atom("local_tuple"), 4))
    assert target.receive(TIMEOUT) == (Atom("local_tuple"), 4)
    local_sender.send(target.pid, (Atom("local_pid"), 5))
    assert target.receive(TIMEOUT) == (Atom("local_pid"), 5)
    a.send(("target", b.name), (Atom("node_send"), 6))
    assert target.receive(TIMEOUT) == (Atom("node_send"), 6)
    a.send(target.pid, (Atom("node_send_pid"), 7))
    assert target.receive(TIMEOUT) == (Atom("node_send_pid"), 7)
    assert len(target) == 0


def test_reply_to_sender_pid(pair: tuple[Node, Node]) -> None:
    a, b = pair
    client = a.mailbox()
    server = b.mailbox("server")
    client.send(("server", b.name), (Atom("hello"), client.pid, 41))
    tag, from_pid, value = server.receive(TIMEOUT)
    assert tag == Atom("hello") and isinstance(tag, Atom)
    assert from_pid == client.pid and from_pid.node == a.name
    server.send(from_pid, (Atom("answer"), value + 1))
    assert client.receive(TIMEOUT) == (Atom("answer"), 42)


def test_terms_round_trip_exactly(pair: tuple[Node, Node]) -> None:
    a, b = pair
    on_a, on_b = a.mailbox(), b.mailbox()
    big_binary = os.urandom(1 << 20)
    terms: list[Any] = [
        0, 1, -1, 255, 256, 2**31 - 1, -(2**31), 2**31, 2**63 - 1, 2**64, -(2**64) - 1,
        2**1000 + 7, -(3**700),
        0.0, -0.0, 1.5, -2.25, 1e308, 5e-324, math.pi,
        b"", b"\x00\xff\x80", big_binary,
        [], [1, 2, 3], list(range(300)), [Atom("a"), [1, [2, [3]]], (b"x",)], [-1, 256, 2**70],
        (), (1,), (1, 2.0, b"three", Atom("four")), tuple(range(300)),
        {}, {Atom("k"): [1], 1: 2, b"bin": (3,), (1, 2): {Atom("nested"): []}},
        Map([([1, 2], Atom("list_key")), (1, Atom("int")), (1.0, Atom("float"))]),
        Atom("ok"), Atom("héllo wörld"), Atom(""), Atom("a" * 255), True, False,
        ImproperList([1, 2], Atom("tail")), ImproperList([Atom("alias")], a.make_ref()),
        on_a.pid, on_b.pid, a.pid, a.make_ref(), b.make_ref(),
        (on_a.pid, [b.make_ref(), {on_b.pid: big_binary[:10]}]),
    ]
    for term in terms:
        on_a.send(on_b.pid, term)
        there = on_b.receive(TIMEOUT)
        assert_identical(term, there)
        on_b.send(on_a.pid, there)
        back = on_a.receive(TIMEOUT)
        assert_identical(term, back)


def test_text_arrives_as_utf8_binary(pair: tuple[Node, Node]) -> None:
    a, b = pair
    on_a, on_b = a.mailbox(), b.mailbox()
    on_a.send(on_b.pid, "héllo")
    assert on_b.receive(TIMEOUT) == "héllo".encode()
    on_a.send(on_b.pid, None)
    assert on_b.receive(TIMEOUT) == Atom("undefined")


def test_100k_messages_from_one_mailbox_arrive_in_order(pair: tuple[Node, Node]) -> None:
    a, b = pair
    sender, receiver = a.mailbox(), b.mailbox()
    count = 100_000

    send_in_order(sender, receiver, count)
    with pytest.raises(TimeoutError):
        receiver.receive(timeout=0)


def test_large_message_is_delivered_and_keeps_the_connection(
        spawn: Callable[..., Node]) -> None:
    """A 64 MiB binary (half the 128 MiB frame limit) reaches its receiver.

    While it drains, the sender's outbox holds far more than eight send
    buffers; that must not read as "the peer does not read its messages".
    A short net_ticktime makes the node check its outboxes every 0.25 s.
    """
    a = spawn("alpha", net_ticktime=1.0)
    b = spawn("beta", net_ticktime=1.0)
    sender, receiver = a.mailbox(), b.mailbox()
    ref = receiver.monitor(sender.pid)  # connects; DOWN if the connection drops
    payload = os.urandom(64 << 20)
    sender.send(receiver.pid, payload)
    got = receiver.receive(3 * TIMEOUT)
    assert got != (DOWN, ref, PROCESS, sender.pid, NOCONNECTION), "the connection was dropped"
    assert type(got) is bytes and len(got) == len(payload)
    assert got == payload
    assert a.nodes() == [b.name]
    round_trip(sender, receiver)


def test_concurrent_senders_and_receivers_keep_per_sender_order(
        pair: tuple[Node, Node]) -> None:
    a, b = pair
    senders, per_sender, receivers = 8, 5000, 2
    target = b.mailbox("sink")
    seen: list[dict[int, list[int]]] = [{} for _ in range(receivers)]
    remaining = [senders * per_sender]
    lock = threading.Lock()

    def sender(k: int) -> Callable[[], None]:
        def run() -> None:
            with a.mailbox() as mb:
                dest: Any = ("sink", b.name) if k % 2 else target.pid
                for i in range(per_sender):
                    mb.send(dest, (k, i))
        return run

    def receiver(r: int) -> Callable[[], None]:
        def run() -> None:
            while True:
                with lock:
                    if remaining[0] == 0:
                        return
                    remaining[0] -= 1
                k, i = target.receive(TIMEOUT)
                seen[r].setdefault(k, []).append(i)
        return run

    run_threads([sender(k) for k in range(senders)] + [receiver(r) for r in range(receivers)])
    for r in range(receivers):
        for k, numbers in seen[r].items():
            # What one receiver took from the mailbox is a subsequence of a FIFO.
            assert numbers == sorted(numbers), f"receiver {r} saw sender {k} out of order"
    for k in range(senders):
        merged = sorted(n for r in range(receivers) for n in seen[r].get(k, []))
        assert merged == list(range(per_sender)), f"sender {k}: lost or duplicated messages"
    assert len(target) == 0


def test_selective_receive(pair: tuple[Node, Node]) -> None:
    a, b = pair
    sender, mb = a.mailbox(), b.mailbox()
    for i in range(1, 6):
        sender.send(mb.pid, i)
    assert mb.receive(TIMEOUT, match=lambda m: m == 3) == 3
    assert mb.receive(TIMEOUT, match=lambda m: m % 2 == 0) == 2
    # A match that accepts nothing times out and leaves every message queued.
    with pytest.raises(TimeoutError):
        mb.receive(timeout=0.05, match=lambda m: m == 99)
    assert [mb.receive(TIMEOUT) for _ in range(3)] == [1, 4, 5]
    # A waiting selective receive is woken by the matching message only.
    sender.send(mb.pid, b"skip")
    sender.send(mb.pid, b"take")
    assert mb.receive(TIMEOUT, match=lambda m: m == b"take") == b"take"
    assert mb.receive(TIMEOUT) == b"skip"


def test_receive_timeout_raises_timeout_error(pair: tuple[Node, Node]) -> None:
    a, _ = pair
    mb = a.mailbox()
    with pytest.raises(QuicDistTimeoutError):
        mb.receive(timeout=0)
    started = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        mb.receive(timeout=0.1)
    assert isinstance(info.value, QuicDistTimeoutError)
    assert time.monotonic() - started >= 0.09


def test_unencodable_message_raises_and_sends_nothing(pair: tuple[Node, Node]) -> None:
    a, b = pair
    sender, receiver = a.mailbox(), b.mailbox("receiver")
    # Not connected yet: the encoding fails before any connection is made.
    with pytest.raises(EncodeError):
        sender.send(receiver.pid, (1, object()))
    assert a.nodes() == []
    with pytest.raises(EncodeError):
        a.send(("receiver", b.name), [float("nan")])
    assert a.nodes() == []
    sender.send(receiver.pid, b"first")
    with pytest.raises(EncodeError):
        sender.send(receiver.pid, {Atom("k"): object()})
    with pytest.raises(TypeError):  # EncodeError is a TypeError too
        sender.send(("receiver", b.name), object())
    sender.send(receiver.pid, b"last")
    assert receiver.receive(TIMEOUT) == b"first"
    assert receiver.receive(TIMEOUT) == b"last"
    with pytest.raises(TimeoutError):
        receiver.receive(timeout=0.05)


def test_send_to_unregistered_local_name_raises_noproc(pair: tuple[Node, Node]) -> None:
    a, _ = pair
    mb = a.mailbox()
    with pytest.raises(NoProc) as info:
        mb.send("nobody_here", 1)
    assert isinstance(info.value, LookupError)
    with pytest.raises(NoProc):
        a.send("nobody_here", 1)
    with pytest.raises(TypeError):
        mb.send(12345, 1)


def test_send_to_unknown_node_drops_or_raises_nodedown(pair: tuple[Node, Node]) -> None:
    a, _ = pair
    mb = a.mailbox()
    ghost = f"ghost@{HOST}"
    assert mb.send(("x", ghost), 1) is None
    a.send(("x", ghost), 1)
    with pytest.raises(NodeDown) as info:
        mb.send(("x", ghost), 1, raise_nodedown=True)
    assert info.value.node == ghost
    with pytest.raises(NodeDown):
        a.send(Pid(ghost, 1, 0, 1), 1, raise_nodedown=True)
    assert a.nodes() == []


def test_send_to_silent_address_is_bounded(spawn: Callable[..., Node], disc: DictDiscovery,
                                           blackhole: int) -> None:
    a = spawn("alpha", connect_timeout=SHORT_CONNECT)
    silent = f"silent@{HOST}"
    disc.add(silent, blackhole)
    mb = a.mailbox()
    started = time.monotonic()
    mb.send(("x", silent), b"dropped")
    assert time.monotonic() - started < SHORT_CONNECT + 2.0
    started = time.monotonic()
    with pytest.raises(NodeDown):
        mb.send(("x", silent), "raised", raise_nodedown=True)
    assert time.monotonic() - started < SHORT_CONNECT + 2.0
    assert a.nodes() == []


# ------------------------------------------------------ 3. registered names


def test_registered_names(pair: tuple[Node, Node]) -> None:
    a, _ = pair
    assert a.registered() == []
    assert a.whereis("svc") is None
    svc = a.mailbox("svc")
    other = a.mailbox("other")
    assert a.whereis("svc") == svc.pid
    assert a.registered() == ["other", "svc"]
    assert svc.name == "svc"
    with pytest.raises(ConfigurationError):
        a.mailbox("svc")
    for reserved in ("net_kernel", "rex"):
        with pytest.raises(ConfigurationError):
            a.mailbox(reserved)
    for bad in ("", "x" * 256, 42):
        with pytest.raises(ConfigurationError):
            a.mailbox(bad)  # type: ignore[arg-type]
    assert a.registered() == ["other", "svc"]
    svc.close()
    assert a.whereis("svc") is None
    assert a.registered() == ["other"]
    again = a.mailbox("svc")
    assert a.whereis("svc") == again.pid != svc.pid
    other.exit(Atom("crash"))
    assert a.registered() == ["svc"]


# ------------------------------------------------------ 4. links, monitors


def test_remote_link_exit_reason_reaches_linked(pair: tuple[Node, Node]) -> None:
    a, b = pair
    watcher, peer = a.mailbox(), b.mailbox()
    watcher.link(peer.pid)
    round_trip(watcher, peer)
    reason = (Atom("shutdown"), [Atom("crashed"), 42])
    peer.exit(reason)
    assert watcher.receive(TIMEOUT) == (EXIT, peer.pid, reason)
    with pytest.raises(MailboxClosed) as info:
        peer.receive(timeout=0)
    assert info.value.reason == reason


def test_exit_signals_local_and_remote(pair: tuple[Node, Node]) -> None:
    a, b = pair
    sender, remote, local = a.mailbox(), b.mailbox(), a.mailbox()
    # A trapping mailbox gets ordinary exit signals as messages...
    sender.send_exit(remote.pid, Atom("stop_now"))
    assert remote.receive(TIMEOUT) == (EXIT, sender.pid, Atom("stop_now"))
    sender.send_exit(local.pid, NORMAL)
    assert local.receive(TIMEOUT) == (EXIT, sender.pid, NORMAL)
    # ...and 'kill' ends it with 'killed', whichever node it lives on.
    watcher = b.mailbox()
    watcher.link(remote.pid)
    sender.send_exit(remote.pid, Atom("kill"))
    assert watcher.receive(TIMEOUT) == (EXIT, remote.pid, Atom("killed"))
    assert remote.exit_reason == Atom("killed")
    sender.send_exit(local.pid, Atom("kill"))
    assert local.exit_reason == Atom("killed")
    with pytest.raises(TypeError):
        sender.send_exit(("name", b.name), NORMAL)  # type: ignore[arg-type]


def test_bare_system_names_are_served_locally(pair: tuple[Node, Node]) -> None:
    a, _ = pair
    assert a.gen_call("net_kernel", (Atom("is_auth"), Atom(a.name)), timeout=TIMEOUT) \
        == Atom("yes")
    assert a.gen_call(("net_kernel", a.name), (Atom("is_auth"), Atom(a.name)),
                      timeout=TIMEOUT) == Atom("yes")
    assert a.connect(a.name) is True


def test_remote_link_is_bidirectional_and_close_sends_normal(pair: tuple[Node, Node]) -> None:
    a, b = pair
    linker, peer = a.mailbox(), b.mailbox()
    linker.link(peer.pid)
    round_trip(linker, peer)
    linker.close()
    assert peer.receive(TIMEOUT) == (EXIT, linker.pid, NORMAL)


def test_local_link_and_link_to_dead_pid(pair: tuple[Node, Node]) -> None:
    a, b = pair
    one, two = a.mailbox(), a.mailbox()
    one.link(two.pid)
    two.exit(Atom("bye"))
    assert one.receive(TIMEOUT) == (EXIT, two.pid, Atom("bye"))
    # Links to pids that no longer exist: EXIT noproc, locally and remotely.
    one.link(two.pid)
    assert one.receive(TIMEOUT) == (EXIT, two.pid, NOPROC)
    dead_remote = b.mailbox()
    dead_remote.close()
    one.link(dead_remote.pid)
    assert one.receive(TIMEOUT) == (EXIT, dead_remote.pid, NOPROC)


def test_link_and_monitor_toward_unreachable_node(pair: tuple[Node, Node]) -> None:
    a, _ = pair
    mb = a.mailbox()
    ghost = Pid(f"ghost@{HOST}", 1, 0, 1)
    mb.link(ghost)
    assert mb.receive(TIMEOUT) == (EXIT, ghost, NOCONNECTION)
    ref = mb.monitor(ghost)
    assert mb.receive(TIMEOUT) == (DOWN, ref, PROCESS, ghost, NOCONNECTION)
    ref = mb.monitor(("svc", ghost.node))
    assert mb.receive(TIMEOUT) == (DOWN, ref, PROCESS, (Atom("svc"), Atom(ghost.node)),
                                   NOCONNECTION)


def test_unlink_stops_exit(pair: tuple[Node, Node]) -> None:
    a, b = pair
    watcher, peer, local = a.mailbox(), b.mailbox(), a.mailbox()
    watcher.link(peer.pid)
    watcher.link(local.pid)
    round_trip(watcher, peer)
    watcher.unlink(peer.pid)
    watcher.unlink(local.pid)
    watcher.unlink(local.pid)  # no link: a no-op
    round_trip(watcher, peer)
    peer.exit(Atom("gone"))
    local.exit(Atom("gone"))
    # Anything the exit produced on B's side travels before this message.
    with b.mailbox() as after:
        after.send(watcher.pid, b"after")
    assert watcher.receive(TIMEOUT) == b"after"
    with pytest.raises(TimeoutError):
        watcher.receive(timeout=0)


def test_monitor_remote_pid_down_with_reason(pair: tuple[Node, Node]) -> None:
    a, b = pair
    watcher, peer = a.mailbox(), b.mailbox()
    ref = watcher.monitor(peer.pid)
    assert isinstance(ref, Reference) and ref.node == a.name
    round_trip(watcher, peer)
    peer.exit(Atom("boom"))
    assert watcher.receive(TIMEOUT) == (DOWN, ref, PROCESS, peer.pid, Atom("boom"))


def test_monitor_remote_name(pair: tuple[Node, Node]) -> None:
    a, b = pair
    watcher, named = a.mailbox(), b.mailbox("named")
    ref = watcher.monitor(("named", b.name))
    round_trip(watcher, named)
    named.close()
    assert watcher.receive(TIMEOUT) == (DOWN, ref, PROCESS, (Atom("named"), Atom(b.name)),
                                        NORMAL)


def test_monitor_missing_remote_name_is_noproc_at_once(pair: tuple[Node, Node]) -> None:
    a, b = pair
    watcher = a.mailbox()
    ref = watcher.monitor(("missing", b.name))
    down = watcher.receive(timeout=2.0)
    assert down == (DOWN, ref, PROCESS, (Atom("missing"), Atom(b.name)), NOPROC)
    assert isinstance(down[3][0], Atom) and isinstance(down[3][1], Atom)


def test_monitor_dead_remote_pid_is_noproc(pair: tuple[Node, Node]) -> None:
    a, b = pair
    watcher, dead = a.mailbox(), b.mailbox()
    dead.close()
    ref = watcher.monitor(dead.pid)
    assert watcher.receive(TIMEOUT) == (DOWN, ref, PROCESS, dead.pid, NOPROC)


def test_monitor_local_pid_and_name(pair: tuple[Node, Node]) -> None:
    a, _ = pair
    watcher, live, named = a.mailbox(), a.mailbox(), a.mailbox("local_named")
    dead = a.mailbox()
    dead.close()
    ref_dead = watcher.monitor(dead.pid)
    assert watcher.receive(timeout=0) == (DOWN, ref_dead, PROCESS, dead.pid, NOPROC)
    ref_missing = watcher.monitor("no_such_name")
    assert watcher.receive(timeout=0) == (DOWN, ref_missing, PROCESS,
                                          (Atom("no_such_name"), Atom(a.name)), NOPROC)
    ref_live = watcher.monitor(live.pid)
    ref_named = watcher.monitor("local_named")
    live.exit(Atom("done"))
    assert watcher.receive(timeout=0) == (DOWN, ref_live, PROCESS, live.pid, Atom("done"))
    named.close()
    assert watcher.receive(timeout=0) == (DOWN, ref_named, PROCESS,
                                          (Atom("local_named"), Atom(a.name)), NORMAL)


def test_demonitor_stops_down(pair: tuple[Node, Node]) -> None:
    a, b = pair
    watcher, peer, local = a.mailbox(), b.mailbox(), a.mailbox()
    ref_remote = watcher.monitor(peer.pid)
    ref_local = watcher.monitor(local.pid)
    round_trip(watcher, peer)
    watcher.demonitor(ref_remote)
    watcher.demonitor(ref_local)
    watcher.demonitor(ref_local)  # already gone: a no-op
    round_trip(watcher, peer)
    local.exit(Atom("gone"))
    peer.exit(Atom("gone"))
    with b.mailbox() as after:
        after.send(watcher.pid, b"after")
    assert watcher.receive(TIMEOUT) == b"after"
    with pytest.raises(TimeoutError):
        watcher.receive(timeout=0)


def test_remote_node_stop_fires_links_monitors_and_drops_it(pair: tuple[Node, Node]) -> None:
    a, b = pair
    watcher = a.mailbox()
    linked, monitored, named = b.mailbox(), b.mailbox(), b.mailbox("named_on_b")
    watcher.link(linked.pid)
    ref_pid = watcher.monitor(monitored.pid)
    ref_name = watcher.monitor(("named_on_b", b.name))
    round_trip(watcher, linked)
    assert a.nodes() == [b.name]

    b.stop()
    expected = {
        (EXIT, linked.pid, NOCONNECTION),
        (DOWN, ref_pid, PROCESS, monitored.pid, NOCONNECTION),
        (DOWN, ref_name, PROCESS, (Atom("named_on_b"), Atom(b.name)), NOCONNECTION),
    }
    got = {watcher.receive(TIMEOUT) for _ in range(len(expected))}
    assert got == expected
    assert a.nodes() == []
    # B's own mailboxes ended with the node.
    with pytest.raises(MailboxClosed) as info:
        named.receive(timeout=0)
    assert info.value.reason == Atom("shutdown")


def test_disconnect_fires_links_with_noconnection(pair: tuple[Node, Node]) -> None:
    a, b = pair
    on_a, on_b = a.mailbox(), b.mailbox()
    on_a.link(on_b.pid)
    round_trip(on_a, on_b)
    assert b.disconnect(a.name) is True
    assert on_b.receive(TIMEOUT) == (EXIT, on_a.pid, NOCONNECTION)
    assert on_a.receive(TIMEOUT) == (EXIT, on_b.pid, NOCONNECTION)
    # The link is gone on both sides: a later exit over a new connection is void.
    round_trip(on_a, on_b)
    on_b.exit(Atom("later"))
    with b.mailbox() as after:
        after.send(on_a.pid, b"after")
    assert on_a.receive(TIMEOUT) == b"after"


# ----------------------------------------------------------------- 6. aliases


def test_alias_receives_until_unaliased(pair: tuple[Node, Node]) -> None:
    a, b = pair
    owner, remote = b.mailbox(), a.mailbox()
    alias = owner.alias()
    assert isinstance(alias, Reference) and alias.node == b.name
    owner.send(remote.pid, (Atom("my_alias"), alias))
    _, received_alias = remote.receive(TIMEOUT)
    assert received_alias == alias
    remote.send(received_alias, b"via alias")
    assert owner.receive(TIMEOUT) == b"via alias"
    a.send(received_alias, b"node via alias")
    assert owner.receive(TIMEOUT) == b"node via alias"
    b.send(alias, b"local via alias")
    assert owner.receive(TIMEOUT) == b"local via alias"

    assert owner.unalias(alias) is True
    assert owner.unalias(alias) is False
    remote.send(received_alias, b"dropped")
    remote.send(owner.pid, b"marker")
    assert owner.receive(TIMEOUT) == b"marker"
    b.send(alias, b"dropped locally")
    with pytest.raises(TimeoutError):
        owner.receive(timeout=0)


# ------------------------------------------------------ 7. gen_call, gen_cast


def test_gen_call_and_gen_cast_to_python_gen_server(pair: tuple[Node, Node],
                                                   gen_server: Callable[..., GenServer]) -> None:
    a, b = pair
    server = gen_server(b, "calc")
    assert a.gen_call(("calc", b.name), (Atom("add"), 2, 3)) == 5
    assert a.gen_call(server.mailbox.pid, (Atom("echo"), [1, (2,)])) == [1, (2,)]
    caller = a.gen_call(("calc", b.name), Atom("whoami"))
    assert isinstance(caller, Pid) and caller.node == a.name
    # Locally too, by name and by pid.
    assert b.gen_call("calc", (Atom("add"), 10, -4)) == 6
    assert b.gen_call(("calc", b.name), (Atom("add"), 1, 1)) == 2
    a.gen_cast(("calc", b.name), (Atom("note"), 7))
    assert server.casts.get(timeout=TIMEOUT) == (Atom("note"), 7)
    b.gen_cast("calc", Atom("local_note"))
    assert server.casts.get(timeout=TIMEOUT) == Atom("local_note")


def test_gen_call_to_missing_process_raises_noproc(pair: tuple[Node, Node]) -> None:
    a, b = pair
    with pytest.raises(NoProc):
        a.gen_call(("missing", b.name), Atom("hello"), timeout=TIMEOUT)
    with pytest.raises(NoProc):
        b.gen_call("missing", Atom("hello"), timeout=TIMEOUT)
    dead = b.mailbox()
    dead.close()
    with pytest.raises(NoProc):
        a.gen_call(dead.pid, Atom("hello"), timeout=TIMEOUT)
    a.gen_cast(("missing", b.name), Atom("ignored"))  # never raises


def test_gen_call_timeout(pair: tuple[Node, Node], gen_server: Callable[..., GenServer]) -> None:
    a, b = pair
    gen_server(b, "slow")
    started = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        a.gen_call(("slow", b.name), Atom("noreply"), timeout=0.2)
    assert isinstance(info.value, QuicDistTimeoutError)
    assert time.monotonic() - started < TIMEOUT
    # The server still answers later calls (no stale reply confuses them).
    assert a.gen_call(("slow", b.name), (Atom("add"), 1, 2)) == 3


def test_gen_call_target_exits_during_call(pair: tuple[Node, Node],
                                           gen_server: Callable[..., GenServer]) -> None:
    a, b = pair
    gen_server(b, "fragile")
    with pytest.raises(CallError) as info:
        a.gen_call(("fragile", b.name), (Atom("exit"), Atom("crashed")), timeout=TIMEOUT)
    assert info.value.reason == Atom("crashed")
    assert not isinstance(info.value, NoProc)


def test_gen_call_node_goes_down_during_call(pair: tuple[Node, Node],
                                             gen_server: Callable[..., GenServer]) -> None:
    a, b = pair
    server = gen_server(b, "stuck")
    assert a.ping(b.name) == "pong"
    errors: list[BaseException] = []

    def call() -> None:
        try:
            a.gen_call(("stuck", b.name), Atom("noreply"), timeout=3 * TIMEOUT)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=call, daemon=True, name="test-caller")
    thread.start()
    assert server.calls.get(timeout=TIMEOUT) == Atom("noreply")
    b.stop()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], NodeDown), errors


def test_many_threads_gen_call_concurrently(pair: tuple[Node, Node],
                                            gen_server: Callable[..., GenServer]) -> None:
    a, b = pair
    gen_server(b, "adder")
    threads, calls = 16, 200

    def worker(t: int) -> Callable[[], None]:
        def run() -> None:
            for i in range(calls):
                reply = a.gen_call(("adder", b.name), (Atom("add"), t * 1000, i),
                                   timeout=TIMEOUT)
                assert reply == t * 1000 + i
        return run

    run_threads([worker(t) for t in range(threads)])


# -------------------------------------------------------------------- 8. rpc


def _boom(*args: Any) -> None:
    raise ValueError("boom")


def test_rpc_calls_registered_functions(pair: tuple[Node, Node]) -> None:
    a, b = pair
    b.register_module("m", {"add": lambda x, y: x + y, "boom": _boom,
                            "pair": lambda x: (Atom("ok"), x)})
    assert a.rpc(b.name, "m", "add", [1, 2]) == 3
    assert a.rpc(b.name, "m", "add", [2**80, 1]) == 2**80 + 1
    assert a.rpc(b.name, "m", "pair", [[Atom("x"), b"y"]]) == (Atom("ok"), [Atom("x"), b"y"])
    assert b.rpc(b.name, "m", "add", [4, 5]) == 9  # rpc to itself


@pytest.mark.parametrize("module, function, args", [
    ("m", "nope", [1]),          # undefined function
    ("m", "add", [1]),           # wrong arity
    ("m", "add", [1, 2, 3]),     # wrong arity
    ("unregistered", "f", []),   # unregistered module
])
def test_rpc_undef(pair: tuple[Node, Node], module: str, function: str,
                   args: list[Any]) -> None:
    a, b = pair
    b.register_module("m", {"add": lambda x, y: x + y})
    with pytest.raises(RpcError) as info:
        a.rpc(b.name, module, function, args)
    reason = info.value.reason
    assert isinstance(reason, tuple) and reason[0] == EXIT
    assert isinstance(reason[1], tuple) and reason[1][0] == Atom("undef")


def test_rpc_raising_function_and_unregister(pair: tuple[Node, Node]) -> None:
    a, b = pair
    b.register_module("m", {"boom": _boom, "one": lambda: 1})
    with pytest.raises(RpcError) as info:
        a.rpc(b.name, "m", "boom", [])
    assert isinstance(info.value, CallError)
    assert info.value.reason[0] == EXIT
    # The node survives the exception and goes on serving.
    assert a.rpc(b.name, "m", "one", []) == 1
    b.unregister_module("m")
    with pytest.raises(RpcError):
        a.rpc(b.name, "m", "one", [])


def test_rpc_result_without_erlang_term_is_an_rpc_error(pair: tuple[Node, Node]) -> None:
    """A registered function returning what cannot be encoded fails the call at once."""
    a, b = pair
    b.register_module("m", {"opaque": lambda: object(), "nan": lambda: float("nan"),
                            "one": lambda: 1})
    for function in ("opaque", "nan"):
        started = time.monotonic()
        with pytest.raises(RpcError) as info:  # an answer, not the caller's timeout
            a.rpc(b.name, "m", function, [], timeout=3.0)
        assert info.value.reason[0] == EXIT
        assert time.monotonic() - started < 3.0
    assert a.rpc(b.name, "m", "one", []) == 1


def test_rpc_to_unreachable_node_raises_nodedown(pair: tuple[Node, Node]) -> None:
    a, _ = pair
    with pytest.raises(NodeDown):
        a.rpc(f"ghost@{HOST}", "m", "f", [], timeout=TIMEOUT)


# -------------------------------------------------------- 9. mailbox overflow


def test_mailbox_overflow_exits_and_tells_links(pair: tuple[Node, Node]) -> None:
    a, b = pair
    limit = 5
    small = b.mailbox("small", max_messages=limit)
    local_link, remote_link, remote_watch = b.mailbox(), a.mailbox(), a.mailbox()
    local_link.link(small.pid)
    remote_link.link(small.pid)
    ref = remote_watch.monitor(small.pid)
    round_trip(remote_link, small)
    round_trip(remote_watch, small)
    sender = a.mailbox()
    for i in range(limit + 1):
        sender.send(small.pid, i)
    overflow = Atom("mailbox_overflow")
    assert local_link.receive(TIMEOUT) == (EXIT, small.pid, overflow)
    assert remote_link.receive(TIMEOUT) == (EXIT, small.pid, overflow)
    assert remote_watch.receive(TIMEOUT) == (DOWN, ref, PROCESS, small.pid, overflow)
    assert small.closed and small.exit_reason == overflow
    assert b.whereis("small") is None
    # Documented: the owner's next receive raises MailboxClosed.
    with pytest.raises(MailboxClosed) as info:
        small.receive(timeout=0)
    assert info.value.reason == overflow


def test_local_overflow(pair: tuple[Node, Node]) -> None:
    a, _ = pair
    small, linked = a.mailbox(max_messages=1), a.mailbox()
    linked.link(small.pid)
    a.send(small.pid, 1)
    assert not small.closed
    a.send(small.pid, 2)
    assert small.closed
    assert linked.receive(timeout=0) == (EXIT, small.pid, Atom("mailbox_overflow"))


def test_receive_after_close_raises(pair: tuple[Node, Node]) -> None:
    a, _ = pair
    mb = a.mailbox()
    mb.close()
    with pytest.raises(MailboxClosed) as info:
        mb.receive(timeout=TIMEOUT)
    assert info.value.reason == NORMAL
    with pytest.raises(MailboxClosed):
        mb.link(a.pid)
    with pytest.raises(MailboxClosed):
        mb.monitor(a.pid)


# ----------------------------------------------------------- 10. wrong cookie


def test_wrong_cookie_is_refused_and_both_nodes_stay_healthy(
        pair: tuple[Node, Node], spawn: Callable[..., Node]) -> None:
    a, _ = pair
    bad = spawn("intruder", cookie="not-the-cookie")
    assert bad.connect(a.name) is False
    error = bad.connection_error(a.name)
    assert isinstance(error, AuthenticationError), error
    assert isinstance(error, HandshakeError) and error.peer == a.name
    # The listener refused the dialer's digest: it knows why too.
    assert isinstance(a.connection_error(bad.name), AuthenticationError)
    assert bad.ping(a.name) == "pang"
    assert a.connect(bad.name) is False
    assert isinstance(a.connection_error(bad.name), AuthenticationError)
    assert bad.name not in a.nodes()
    assert a.name not in bad.nodes()
    # Both still work: A with a third node, the intruder locally.
    c = spawn("gamma")
    assert c.ping(a.name) == "pong"
    assert a.nodes() == [c.name]
    assert bad.name not in a.nodes()
    with bad.mailbox("still_here") as mb:
        bad.send("still_here", "ok")
        assert mb.receive(TIMEOUT) == "ok"


# ----------------------------------------------------------- 11. certificates


def test_certificate_from_another_ca_is_refused(pair: tuple[Node, Node],
                                                spawn: Callable[..., Node]) -> None:
    a, _ = pair
    stranger = spawn("stranger", stranger=True)
    assert stranger.connect(a.name) is False
    error = stranger.connection_error(a.name)
    assert isinstance(error, CertificateError) and isinstance(error, TLSHandshakeError), error
    assert a.connect(stranger.name) is False
    assert isinstance(a.connection_error(stranger.name), CertificateError)
    assert stranger.name not in a.nodes() and a.nodes() == []
    assert stranger.nodes() == []
    c = spawn("gamma")
    assert c.ping(a.name) == "pong"


# ------------------------------------------------------- 12. config checks


@pytest.mark.parametrize("name", ["noat", "a@", "@b", "a@b@c", "", "sp ace@host", 123, None])
def test_bad_node_names(tmp_certs: DevCerts, name: Any) -> None:  # noqa: F811
    with pytest.raises(ConfigurationError):
        make_node(tmp_certs, name, start=False)


@pytest.mark.parametrize("options", [
    {"cookie": ""}, {"cookie": b""}, {"port": -1}, {"port": 65536}, {"port": 100_000},
    {"net_ticktime": 0}, {"connect_timeout": -1}, {"max_messages": 0},
    {"verify": "sometimes"},
])
def test_bad_settings(tmp_certs: DevCerts, options: dict[str, Any]) -> None:  # noqa: F811
    with pytest.raises(ConfigurationError):
        make_node(tmp_certs, f"x@{HOST}", start=False, **options)


def test_stopped_and_unstarted_nodes(tmp_certs: DevCerts, pair: tuple[Node, Node]) -> None:  # noqa: F811
    a, b = pair
    new = make_node(tmp_certs, f"new@{HOST}", start=False)
    with pytest.raises(NodeDown):
        new.mailbox()
    with pytest.raises(ConfigurationError):
        a.start()  # already running
    a.stop()
    a.stop()  # idempotent
    assert not a.running
    with pytest.raises(ConfigurationError):
        a.start()  # a stopped node does not start again
    with pytest.raises(NodeDown):
        a.mailbox()
    with pytest.raises(NodeDown):
        a.connect(b.name)
    with pytest.raises(NodeDown):
        a.send(("x", b.name), 1, raise_nodedown=True)
    with pytest.raises(NodeDown):
        a.gen_call(("x", b.name), 1)
    with pytest.raises(NodeDown):
        a.rpc(b.name, "m", "f", [])
    assert a.ping(b.name) == "pang"


# ------------------------------------------------------------------ 13. stop


def test_stop_ends_every_thread_and_releases_fds(tmp_certs: DevCerts) -> None:  # noqa: F811
    gc.collect()
    threads_before = quicdist_threads()
    fds_before = len(os.listdir("/proc/self/fd"))
    disc = DictDiscovery()
    nodes: list[Node] = []
    try:
        for alive in ("one", "two", "three"):
            nodes.append(make_node(tmp_certs, f"{alive}@{HOST}", discovery=disc))
        one, two, three = nodes
        for x in nodes:
            x.register_module("m", {"id": lambda v: v})
        assert one.ping(two.name) == "pong"
        assert three.ping(one.name) == "pong"
        assert two.rpc(three.name, "m", "id", [7]) == 7
        assert three.rpc(one.name, "m", "id", [8]) == 8
        waiting = two.mailbox()
        outcome: list[BaseException] = []

        def blocked_receive() -> None:
            try:
                waiting.receive(timeout=3 * TIMEOUT)
            except BaseException as exc:
                outcome.append(exc)

        receiver = threading.Thread(target=blocked_receive, daemon=True, name="test-recv")
        receiver.start()
        idle = one.mailbox()
        assert quicdist_threads() - threads_before
    finally:
        for x in nodes:
            x.stop()
    receiver.join(TIMEOUT)
    assert not receiver.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], MailboxClosed), outcome
    with pytest.raises(MailboxClosed):
        idle.receive(timeout=TIMEOUT)
    leftover = quicdist_threads() - threads_before
    assert not leftover, f"threads survived stop(): {sorted(t.name for t in leftover)}"
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == fds_before
