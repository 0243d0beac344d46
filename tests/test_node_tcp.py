"""quicdist.Node over the TCP carrier (``carrier="tcp"``).

Python nodes talk to each other over TCP on 127.0.0.1: most tests find
peers through a dict-backed discovery object and do not use epmd
(``TcpConfig(epmd=False)``), so they run without Erlang installed. The
``erl``-marked tests use Debian's epmd (registration, lookup,
unregistration) and a real OTP node (``erl -name``): Python pings Erlang,
Erlang pings Python (``net_adm:ping`` of a Python node it never talked to),
messages both ways to pids and registered names, a wrong cookie refused by
Erlang, and node-down when the Erlang node dies. Every node and ``erl`` a test starts
is stopped or killed at its end; every wait is bounded.
"""

from __future__ import annotations

import gc
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from quicdist import Atom, Mailbox, Node
from quicdist.epmd import EpmdClient
from quicdist.errors import (
    AuthenticationError,
    ConfigurationError,
    DiscoveryError,
    EpmdError,
)
from quicdist.flags import QUICDIST_FLAGS, DistFlag
from quicdist.handshake import Handshake
from quicdist.tcp import TcpConfig
from tests.node_fixtures import (
    COOKIE,
    HOST,
    TIMEOUT,
    DictDiscovery,
    quicdist_threads,
    send_in_order,
    wait_until,
)
from tests.otp import NEEDS_ERL, epmd, erl_node, unique  # noqa: F401 (fixtures)


EXIT = Atom("EXIT")
DOWN = Atom("DOWN")
PROCESS = Atom("process")
NOPROC = Atom("noproc")
NOCONNECTION = Atom("noconnection")
NO_EPMD = TcpConfig(epmd=False)


@pytest.fixture
def disc() -> DictDiscovery:
    return DictDiscovery()


@pytest.fixture
def spawn(disc: DictDiscovery) -> Iterator[Callable[..., Node]]:
    """``spawn("alpha", **kw)``: a started TCP node ``alpha@127.0.0.1`` (no epmd) in ``disc``."""
    made: list[Node] = []

    def spawn(alive: str, **kw: Any) -> Node:
        options: dict[str, Any] = {"cookie": COOKIE, "host": HOST, "carrier": NO_EPMD,
                                   "discovery": disc, "connect_timeout": 5.0}
        options.update(kw)
        node = Node(f"{alive}@{HOST}", **options)
        made.append(node)
        node.start()
        disc.add(node)
        return node

    try:
        yield spawn
    finally:
        for node in reversed(made):
            node.stop()


@pytest.fixture
def pair(spawn: Callable[..., Node]) -> tuple[Node, Node]:
    a = spawn("alpha")
    b = spawn("beta", nodes={a.name: (HOST, a.port)})  # B reaches A by its static table
    return a, b


def round_trip(sender: Mailbox, receiver: Mailbox) -> None:
    """A message there and back: what was sent before it has been handled."""
    token = sender.node.make_ref()
    sender.send(receiver.pid, ("sync", sender.pid, token))
    got = receiver.receive(TIMEOUT, match=lambda m: isinstance(m, tuple) and m[-1] == token)
    receiver.send(got[1], ("synced", token))
    sender.receive(TIMEOUT, match=lambda m: m == (b"synced", token))


# ----------------------------------------------------------- Python <-> Python


def test_ping_both_ways_and_nodes(pair: tuple[Node, Node]) -> None:
    a, b = pair
    assert a.carrier == b.carrier == "tcp"
    assert b.ping(a.name) == "pong"
    assert a.ping(b.name) == "pong"
    assert a.nodes() == [b.name] and b.nodes() == [a.name]
    assert a.ping(f"ghost@{HOST}") == "pang"
    assert isinstance(a.connection_error(f"ghost@{HOST}"), DiscoveryError)


def test_messages_both_ways_to_pids_and_names(pair: tuple[Node, Node]) -> None:
    a, b = pair
    server = a.mailbox("server_on_a")
    client = b.mailbox()
    client.send(("server_on_a", a.name), ("hello", client.pid, [1, 2.5, None]))
    msg = server.receive(TIMEOUT)
    assert msg == (b"hello", client.pid, [1, 2.5, Atom("undefined")])
    server.send(msg[1], (Atom("reply"), b"x" * 10))
    assert client.receive(TIMEOUT) == (Atom("reply"), b"x" * 10)
    b.send(("server_on_a", a.name), "from the node")
    assert server.receive(TIMEOUT) == b"from the node"


def test_10k_messages_arrive_in_order(pair: tuple[Node, Node]) -> None:
    a, b = pair
    sender, receiver = a.mailbox(), b.mailbox()
    count = 10_000

    send_in_order(sender, receiver, count)
    # And the other way, interleaved with a message larger than the writer's
    # chunk and the send buffer's half (it leaves in pieces).
    big = bytes(range(256)) * 8192  # 2 MiB
    for i in range(100):
        receiver.send(sender.pid, big if i == 50 else i)
    got_back = [sender.receive(TIMEOUT) for _ in range(100)]
    assert got_back == [big if i == 50 else i for i in range(100)]


def test_links_and_monitors(pair: tuple[Node, Node]) -> None:
    a, b = pair
    watcher = a.mailbox()
    linked, monitored = b.mailbox(), b.mailbox("monitored_on_b")
    watcher.link(linked.pid)
    ref = watcher.monitor(("monitored_on_b", b.name))
    round_trip(watcher, linked)
    linked.exit(Atom("bye"))
    assert watcher.receive(TIMEOUT) == (EXIT, linked.pid, Atom("bye"))
    monitored.exit(Atom("gone"))
    assert watcher.receive(TIMEOUT) == (DOWN, ref, PROCESS,
                                        (Atom("monitored_on_b"), Atom(b.name)), Atom("gone"))
    missing = watcher.monitor(("nobody_here", b.name))
    assert watcher.receive(TIMEOUT) == (DOWN, missing, PROCESS,
                                        (Atom("nobody_here"), Atom(b.name)), NOPROC)


def test_node_down_when_the_peer_stops(pair: tuple[Node, Node]) -> None:
    a, b = pair
    watcher = a.mailbox()
    linked, monitored = b.mailbox(), b.mailbox()
    watcher.link(linked.pid)
    ref = watcher.monitor(monitored.pid)
    round_trip(watcher, linked)
    b.stop()
    got = {watcher.receive(TIMEOUT) for _ in range(2)}
    assert got == {(EXIT, linked.pid, NOCONNECTION),
                   (DOWN, ref, PROCESS, monitored.pid, NOCONNECTION)}
    assert a.nodes() == []


def test_rpc_over_tcp(pair: tuple[Node, Node]) -> None:
    a, b = pair
    a.register_module("calc", {"add": lambda x, y: x + y})
    assert b.rpc(a.name, "calc", "add", [2, 40]) == 42


def test_wrong_cookie_is_refused_on_both_sides(pair: tuple[Node, Node],
                                               spawn: Callable[..., Node]) -> None:
    a, _ = pair
    bad = spawn("intruder", cookie="not-the-cookie")
    assert bad.connect(a.name) is False
    error = bad.connection_error(a.name)
    assert isinstance(error, AuthenticationError) and error.peer == a.name
    assert isinstance(a.connection_error(bad.name), AuthenticationError)
    assert bad.ping(a.name) == "pang"
    assert a.nodes() == [] and bad.nodes() == []
    c = spawn("gamma")
    assert c.ping(a.name) == "pong"  # A is fine


def test_ticks_keep_an_idle_connection_up(spawn: Callable[..., Node]) -> None:
    a = spawn("alpha", net_ticktime=1.0)
    b = spawn("beta", net_ticktime=1.0)
    assert a.ping(b.name) == "pong"
    idle = a.mailbox()
    with pytest.raises(TimeoutError):
        idle.receive(timeout=2.0)  # two net_ticktimes without a message: only ticks
    assert a.nodes() == [b.name] and b.nodes() == [a.name]
    assert b.ping(a.name) == "pong"


def test_silent_peer_is_declared_down(spawn: Callable[..., Node]) -> None:
    """A raw TCP peer completes the handshake, then never sends a byte again."""
    a = spawn("alpha", net_ticktime=0.6)
    peer_name = f"silent@{HOST}"
    sock = socket.create_connection((HOST, a.port), timeout=TIMEOUT)
    sock.settimeout(TIMEOUT)
    try:
        hs = Handshake("dialer", node_name=peer_name, cookie=COOKIE, creation=5,
                       flags=QUICDIST_FLAGS | DistFlag.PUBLISHED, peer_name=a.name)
        for message in hs.start():
            sock.sendall(struct.pack(">H", len(message)) + message)
        while not (hs.done or hs.failed):
            (size,) = struct.unpack(">H", _recv_exact(sock, 2))
            for message in hs.receive(_recv_exact(sock, size)):
                sock.sendall(struct.pack(">H", len(message)) + message)
        assert hs.done, hs.error
        wait_until(lambda: a.nodes() == [peer_name], what="the node to be up")
        # We send nothing more; A ticks us (4-byte zero frames), then drops us.
        wait_until(lambda: a.nodes() == [], what="the silent node to be declared down")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        assert data and set(data) == {0}, data[:40]  # only ticks ever came
    finally:
        sock.close()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def test_stop_ends_every_thread_and_releases_fds() -> None:
    gc.collect()
    threads_before = quicdist_threads()
    fds_before = len(os.listdir("/proc/self/fd"))
    disc = DictDiscovery()
    nodes = [Node(f"{alive}@{HOST}", cookie=COOKIE, host=HOST, carrier=NO_EPMD, discovery=disc)
             for alive in ("one", "two", "three")]
    try:
        for node in nodes:
            node.start()
            disc.add(node)
        for node in nodes:
            for other in nodes:
                if other is not node:
                    assert node.ping(other.name) == "pong"
        assert len(quicdist_threads() - threads_before) > 3
    finally:
        for node in nodes:
            node.stop()
    wait_until(lambda: not (quicdist_threads() - threads_before),
               what="every quicdist thread to end")
    gc.collect()
    wait_until(lambda: len(os.listdir("/proc/self/fd")) <= fds_before,
               what="every socket to be closed")


def test_tcp_settings() -> None:
    node = Node(f"cfg@{HOST}", cookie=COOKIE, carrier="tcp")
    assert node.carrier == "tcp" and node.port == 0  # any free TCP port by default
    with pytest.raises(ConfigurationError, match="unencrypted"):
        Node(f"cfg@{HOST}", cookie=COOKIE, carrier="tcp", certfile="a.pem", keyfile="a.key")
    with pytest.raises(ConfigurationError):
        Node(f"cfg@{HOST}", cookie=COOKIE, carrier="tcp", verify="verify_peer")
    with pytest.raises(ConfigurationError, match="certfile"):
        Node(f"cfg@{HOST}", cookie=COOKIE)  # QUIC needs a certificate
    with pytest.raises(ConfigurationError):
        Node(f"cfg@{HOST}", cookie=COOKIE, carrier="sctp")
    assert Node(f"cfg@{HOST}", cookie=COOKIE, carrier=TcpConfig(), port=4999).port == 4999


# ------------------------------------------------------------------ epmd (OTP)


@pytest.mark.erl
@NEEDS_ERL
def test_epmd_registration_lookup_and_unregistration(epmd: int) -> None:  # noqa: F811
    client = EpmdClient(HOST, epmd)
    alive = unique("qd_node")
    a = Node(f"{alive}@{HOST}", cookie=COOKIE, carrier="tcp", host=HOST)
    b = Node(f"{unique('qd_peer')}@{HOST}", cookie=COOKIE, carrier="tcp", host=HOST)
    twin = Node(f"{alive}@{HOST}", cookie=COOKIE, carrier="tcp", host=HOST)
    try:
        a.start()
        assert client.port_please(alive).port == a.port
        # The name is taken: the twin does not start (and can be stopped).
        with pytest.raises(EpmdError) as info:
            twin.start()
        assert info.value.result and not twin.running
        twin.stop()
        # No static table, no discovery object: B finds A through epmd.
        b.start()
        assert b.ping(a.name) == "pong" and a.nodes() == [b.name]
    finally:
        b.stop()
        a.stop()
    wait_until(lambda: _gone(client, alive), what="epmd to forget the stopped node")


def _gone(client: EpmdClient, alive: str) -> bool:
    try:
        client.port_please(alive)
    except EpmdError:
        return True
    return False


# ------------------------------------------------------------- real OTP node


ERL_SCRIPT = """
register(echo, spawn(fun Echo() ->
    receive {From, Msg} -> From ! {echoed, node(), Msg}, Echo() end end)),
register(ctl, self()),
io:format("READY ~p~n", [node()]),
Ctl = fun Loop() ->
    receive
        {From, Ref, ping, Node} -> From ! {Ref, net_adm:ping(Node), nodes()}, Loop();
        {From, Ref, send, Dest, Msg} -> Dest ! Msg, From ! {Ref, sent}, Loop()
    end end,
Ctl().
"""


@pytest.mark.erl
@NEEDS_ERL
def test_real_otp_node_both_directions(epmd: int, erl_node) -> None:  # noqa: F811
    cookie = unique("cookie")
    erl_name = f"{unique('e')}@{HOST}"
    py1 = Node(f"{unique('py')}@{HOST}", cookie=cookie, carrier="tcp", host=HOST)
    py2 = Node(f"{unique('py')}@{HOST}", cookie=cookie, carrier="tcp", host=HOST)
    try:
        py1.start()
        erl = erl_node(erl_name, cookie, ERL_SCRIPT, lifetime=60)
        erl.wait_for("READY")
        # Python dials Erlang (its port from epmd): ping, then the echo server.
        assert py1.ping(erl_name) == "pong", erl.output
        assert py1.nodes() == [erl_name]
        me = py1.mailbox("py_inbox")
        me.send(("echo", erl_name), (me.pid, "hello erlang"))
        assert me.receive(TIMEOUT) == (Atom("echoed"), Atom(erl_name), b"hello erlang")
        # Erlang dials Python: net_adm:ping of a node it never talked to.
        py2.start()
        inbox = py2.mailbox("inbox")
        ref = py1.make_ref()
        me.send(("ctl", erl_name), (me.pid, ref, Atom("ping"), Atom(py2.name)))
        got = me.receive(TIMEOUT)
        assert got[:2] == (ref, Atom("pong")), (got, erl.output)
        assert Atom(py2.name) in got[2]
        assert py2.nodes() == [erl_name]
        # Erlang sends to a registered name on the node that it dialed.
        ref = py1.make_ref()
        me.send(("ctl", erl_name), (me.pid, ref, Atom("send"), (Atom("inbox"), Atom(py2.name)),
                                    (Atom("hello_python"), ref)))
        assert me.receive(TIMEOUT) == (ref, Atom("sent"))
        assert inbox.receive(TIMEOUT) == (Atom("hello_python"), ref)
        # A Python node with the wrong cookie: Erlang refuses it (closing
        # without a word after our challenge_reply) and says why in its log.
        intruder = Node(f"{unique('intruder')}@{HOST}", cookie="wrong", carrier="tcp",
                        host=HOST)
        try:
            intruder.start()
            assert intruder.ping(erl_name) == "pang"
            error = intruder.connection_error(erl_name)
            assert isinstance(error, AuthenticationError), error
        finally:
            intruder.stop()
        wait_until(lambda: intruder.name in erl.output, what="erl to log the refusal")
        # The Erlang node dies: Python's monitors fire with noconnection.
        mref = me.monitor(("echo", erl_name))
        round_trip_erl(me, erl_name)
        erl.close()
        assert me.receive(TIMEOUT) == (DOWN, mref, PROCESS,
                                       (Atom("echo"), Atom(erl_name)), NOCONNECTION)
        wait_until(lambda: py1.nodes() == [] and py2.nodes() == [],
                   what="both Python nodes to see the Erlang node down")
    finally:
        py2.stop()
        py1.stop()


def round_trip_erl(me: Mailbox, erl_name: str) -> None:
    """An echo there and back: the monitor sent before it reached Erlang."""
    me.send(("echo", erl_name), (me.pid, "sync"))
    assert me.receive(TIMEOUT) == (Atom("echoed"), Atom(erl_name), b"sync")


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.erl
@NEEDS_ERL
def test_node_registers_again_when_epmd_restarts() -> None:
    """epmd forgets every name when it restarts; the node notices (its
    registration connection closes) and registers again."""
    import shutil
    import subprocess
    import time

    port = _free_tcp_port()
    epmd_bin = shutil.which("epmd")
    assert epmd_bin is not None

    def start_epmd() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([epmd_bin, "-port", str(port)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        client = EpmdClient(port=port, timeout=1.0)
        deadline = time.monotonic() + 10
        while True:  # no event says "epmd listens": poll, bounded
            try:
                client.names()
                return proc
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    proc.kill()
                    raise
                threading.Event().wait(0.05)

    def registered(alive: str, within: float) -> bool:
        client = EpmdClient(port=port, timeout=1.0)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                if alive in {name for name, _ in client.names()}:
                    return True
            except Exception:
                pass
            threading.Event().wait(0.05)
        return False

    first = start_epmd()
    second = None
    alive = unique("reg")
    node = Node(f"{alive}@127.0.0.1", cookie="c", host="127.0.0.1",
                carrier=TcpConfig(epmd_port=port))
    try:
        node.start()
        assert registered(alive, 5)
        first.kill()
        first.wait(10)
        second = start_epmd()
        assert registered(alive, 10), "the node did not register again"
        entry = EpmdClient(port=port, timeout=1.0).port_please(alive)
        assert entry.port == node.port
    finally:
        node.stop()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
