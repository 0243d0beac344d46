"""Nodes in separate processes: a Node here, tests/node_peer.py nodes there.

Each peer process prints facts on stdout and reads commands on stdin; the
test waits for its lines with a timeout (a reader thread per process feeds a
queue) and always ends it: ``quit``, then a kill if it does not exit. Times
are measured from events (a mailbox receiving its EXIT), never slept.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from quicdist import Atom, Node, Pid
from quicdist.certs import make_dev_certs
from quicdist.discovery import DnsSrvDiscovery
from quicdist.errors import DiscoveryError
from tests.line_peer import LinePeer
from tests.lossy_relay import LossyRelay
from tests.node_fixtures import wait_until


pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(),
                                reason="needs Linux /proc")

TIMEOUT = 10.0 * float(os.environ.get("QUICDIST_TESTS_TIMEOUT_FACTOR", "1"))
PEER_SCRIPT = Path(__file__).with_name("node_peer.py")
COOKIE = "process-cookie"
MAIN = "main@127.0.0.1"
#: net_ticktime of the node here in the liveness tests (seconds).
TICK = 2.0
#: How late after net_ticktime a down may come: the ticker looks every
#: min(net_ticktime/4, 1) s, plus scheduling on a loaded 2-core machine.
SLACK = 1.5

EXIT = Atom("EXIT")
DOWN = Atom("DOWN")
PROCESS = Atom("process")
NOCONNECTION = Atom("noconnection")


@dataclass(frozen=True)
class Certs:
    certfile: str
    keyfile: str
    cafile: str

    def args(self) -> list[str]:
        return ["--cert", self.certfile, "--key", self.keyfile, "--ca", self.cafile]


@pytest.fixture(scope="session")
def proc_certs(tmp_path_factory) -> Certs:
    made = make_dev_certs(tmp_path_factory.mktemp("node-process-certs"), ["node"])
    return Certs(str(made["node"].certfile), str(made["node"].keyfile), str(made["ca"].certfile))


class Table:
    """A custom discovery object: node name -> port on 127.0.0.1, filled as peers start."""

    def __init__(self) -> None:
        self.ports: dict[str, int] = {}
        self.calls: list[str] = []

    def add(self, name: str, port: int) -> None:
        self.ports[name] = port

    def lookup(self, node_name: str) -> tuple[str, int]:
        self.calls.append(node_name)
        port = self.ports.get(node_name)
        if port is None:
            raise DiscoveryError(f"{node_name} not in the test table", node=node_name)
        return "127.0.0.1", port


def make_node(certs: Certs, name: str = MAIN, **kwargs) -> Node:
    options = dict(cookie=COOKIE, port=0, host="127.0.0.1", certfile=certs.certfile,
                   keyfile=certs.keyfile, cafile=certs.cafile, verify="verify_peer", dns=False)
    options.update(kwargs)
    return Node(name, **options).start()


class PeerStartFailed(Exception):
    pass


class PeerNode(LinePeer):
    """One tests/node_peer.py process."""

    def __init__(self, name: str, certs: Certs, *args: str, lifetime: float = 60.0) -> None:
        super().__init__(PEER_SCRIPT, ["--name", name, "--cookie", COOKIE, *certs.args(), *args,
                                       "--lifetime", str(lifetime)],
                         label=name, close_timeout=5.0)
        self.name = name
        self.port = 0

    @classmethod
    def start(cls, name: str, certs: Certs, *args: str, lifetime: float = 60.0) -> PeerNode:
        peer = cls(name, certs, *args, lifetime=lifetime)
        try:
            words = peer.expect("PORT", "START-FAILED")
            if words[0] == "START-FAILED":
                raise PeerStartFailed(" ".join(words[1:]))
            peer.port = int(words[1])
            peer.expect("READY")
        except BaseException:
            peer.close()
            raise
        return peer

    def ask(self, line: str, answer: str, timeout: float = TIMEOUT) -> list[str]:
        self.send(line)
        return self.expect(answer, timeout=timeout)

    def echo(self, name: str) -> Pid:
        """Register an echo mailbox there; its pid."""
        node, id_, serial, creation = self.ask(f"echo {name}", "ECHO")[2].split(",")
        return Pid(node, int(id_), int(serial), int(creation))

    def logs(self, since: int = 0) -> list[str]:
        return [line for line in self.seen[since:] if line.startswith("LOG ")]

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(TIMEOUT)


@pytest.fixture
def peers() -> Iterator[list[PeerNode]]:
    """Every PeerNode a test starts goes here and is ended after the test."""
    started: list[PeerNode] = []
    try:
        yield started
    finally:
        for peer in started:
            peer.close()


def start_peer(peers: list[PeerNode], name: str, certs: Certs, node: Node | None,
               *args: str, lifetime: float = 60.0) -> PeerNode:
    """A peer that knows where ``node`` listens (for the connections it makes)."""
    extra = list(args)
    if node is not None:
        extra += ["--peer", f"{node.name}=127.0.0.1:{node.port}"]
    peer = PeerNode.start(name, certs, *extra, lifetime=lifetime)
    peers.append(peer)
    return peer


def round_trip(node: Node, echo_pid: Pid, payload: object = b"hi") -> None:
    with node.mailbox() as mailbox:
        tag = Atom("rt")
        mailbox.send(echo_pid, (mailbox.pid, tag, payload))
        assert mailbox.receive(TIMEOUT) == (tag, payload)


def open_carriers(node: Node) -> int:
    """Carrier connections of the node that are open: accepted plus dialed."""
    accepted = len(node._listener.connections) if node._listener is not None else 0
    with node._lock:
        dialed = sum(1 for c in node._all if c.role == "dialer" and c.connection is not None
                     and c.connection.closed is None)
    return accepted + dialed


# ---------------------------------------------------------------- liveness


def _expect_noconnection(mailbox, pid: Pid, ref, timeout: float) -> float:
    """Receive the EXIT and the DOWN for ``pid``; the time the first one arrived."""
    first = mailbox.receive(timeout)
    at = time.monotonic()
    second = mailbox.receive(TIMEOUT)
    assert {first, second} == {(EXIT, pid, NOCONNECTION),
                               (DOWN, ref, PROCESS, pid, NOCONNECTION)}, (first, second)
    return at


def test_kill_9_is_noticed_within_net_ticktime_and_the_name_comes_back(proc_certs, peers):
    table = Table()
    with make_node(proc_certs, discovery=table, net_ticktime=TICK) as node:
        peer = start_peer(peers, "b@127.0.0.1", proc_certs, node, "--ticktime", str(TICK))
        table.add(peer.name, peer.port)
        echo = peer.echo("e")
        mailbox = node.mailbox()
        mailbox.link(echo)
        ref = mailbox.monitor(echo)
        round_trip(node, echo)
        assert node.nodes() == [peer.name]
        with pytest.raises(TimeoutError):
            mailbox.receive(timeout=0)  # nothing before the kill
        killed_at = time.monotonic()
        peer.kill9()
        down_at = _expect_noconnection(mailbox, echo, ref, TICK + SLACK + 1.0)
        assert node.nodes() == []
        assert killed_at < down_at <= killed_at + TICK + SLACK, down_at - killed_at

        # A new incarnation, same name, same port: it connects to us.
        again = start_peer(peers, "b@127.0.0.1", proc_certs, node, "--port", str(peer.port),
                           "--ticktime", str(TICK))
        assert again.ask(f"ping {node.name}", "PING")[2] == "pong"
        assert node.nodes() == [peer.name]
        echo2 = again.echo("e")
        assert echo2.creation != echo.creation
        round_trip(node, echo2)
        # And the old pid is dead for good: a link to it fails at once.
        mailbox.link(echo)
        assert mailbox.receive(TIMEOUT) == (EXIT, echo, Atom("noproc"))


def test_restart_before_the_tick_timeout_replaces_the_connection(proc_certs, peers):
    """kill -9, and the new incarnation dials before net_ticktime noticed anything."""
    table = Table()
    with make_node(proc_certs, discovery=table, net_ticktime=60.0) as node:
        peer = start_peer(peers, "b@127.0.0.1", proc_certs, node)
        table.add(peer.name, peer.port)
        echo = peer.echo("e")
        mailbox = node.mailbox()
        mailbox.link(echo)
        ref = mailbox.monitor(echo)
        round_trip(node, echo)
        peer.kill9()
        again = start_peer(peers, "b@127.0.0.1", proc_certs, node, "--port", str(peer.port))
        restarted_at = time.monotonic()
        assert again.ask(f"ping {node.name}", "PING")[2] == "pong"
        # The old connection was replaced ('alive', then true): its links and
        # monitors fire now, not 60 s later.
        down_at = _expect_noconnection(mailbox, echo, ref, TIMEOUT)
        assert down_at - restarted_at < TIMEOUT
        assert node.nodes() == [peer.name]
        round_trip(node, again.echo("e2"))
        wait_until(lambda: (len(node._up), len(node._all)) == (1, 1),
                   what="only the new connection left")


def test_blackholed_path_is_noticed_within_net_ticktime(proc_certs, peers):
    table = Table()
    with make_node(proc_certs, discovery=table, net_ticktime=TICK) as node:
        peer = start_peer(peers, "b@127.0.0.1", proc_certs, None)  # ticks every 15 s there
        with LossyRelay(("127.0.0.1", peer.port)) as relay:
            table.add(peer.name, relay.port)
            echo = peer.echo("e")
            mailbox = node.mailbox()
            mailbox.link(echo)
            ref = mailbox.monitor(echo)
            round_trip(node, echo)
            assert relay.stats.forwarded["client->target"] > 0
            relay.loss = 1.0  # from now on every datagram, both ways, is dropped
            cut_at = time.monotonic()
            down_at = _expect_noconnection(mailbox, echo, ref, TICK + SLACK + 1.0)
            assert down_at - cut_at <= TICK + SLACK, down_at - cut_at
            assert node.nodes() == []
            assert relay.stats.dropped["target->client"] + relay.stats.dropped[
                "client->target"] > 0


# ------------------------------------------------------ simultaneous connect


def _connect_at(node: Node, peer: str, epoch: float) -> bool:
    while (left := epoch - time.time()) > 0:
        time.sleep(min(left, 0.001) if left < 0.01 else left - 0.005)
    return node.connect(peer, timeout=TIMEOUT)


def _up_facts(node: Node, peer: str) -> tuple[str, str]:
    with node._lock:
        c = node._up.get(peer)
    assert c is not None, f"no connection to {peer} is up"
    return c.role, str(c.handshake.status if c.handshake is not None else None)


@pytest.mark.parametrize("peer_name", ["a@127.0.0.1", "z@127.0.0.1"],
                         ids=["peer-name-smaller", "peer-name-greater"])
def test_simultaneous_connect_makes_exactly_one_connection(proc_certs, peers, peer_name,
                                                           caplog):
    caplog.set_level(logging.WARNING, logger="quicdist")
    rounds = 5
    table = Table()
    collisions = 0
    with make_node(proc_certs, discovery=table) as node:
        peer = start_peer(peers, peer_name, proc_certs, node)
        table.add(peer.name, peer.port)
        echo = peer.echo("e")
        greater = max(node.name, peer.name)
        for round_no in range(rounds):
            caplog.clear()
            mark = len(peer.seen)
            peer.ask(f"arm {node.name}", "ARMED")
            epoch = time.time() + 0.15
            peer.send(f"go {epoch!r}")
            assert _connect_at(node, peer.name, epoch), node.connection_error(peer.name)
            words = peer.expect("CONNECT")
            assert words[2] == "True", (round_no, words, peer.logs(mark))
            their_role, their_status = words[3], words[4]
            our_role, our_status = _up_facts(node, peer.name)
            # Both sides see the same single connection: one dialed, the other accepted.
            assert {our_role, their_role} == {"dialer", "listener"}, (our_role, their_role)
            assert our_status == their_status, (our_status, their_status)
            assert our_status in ("ok", "ok_simultaneous"), (round_no, our_status)
            winner = node.name if our_role == "dialer" else peer.name
            logs = [r.getMessage() for r in caplog.records] + peer.logs(mark)
            collided = our_status == "ok_simultaneous" or any("'nok'" in m for m in logs)
            if collided:
                collisions += 1
                assert winner == greater, (round_no, winner, our_status, logs)
            # Messages flow both ways on it.
            round_trip(node, echo, round_no)
            assert peer.ask(f"ping {node.name}", "PING")[2] == "pong"
            # One connection on each side, once the losing attempt is gone.
            wait_until(lambda: (len(node._up), len(node._all), open_carriers(node)) == (1, 1, 1),
                       what=f"one connection here (round {round_no})")
            assert node.nodes() == [peer.name]
            deadline = time.monotonic() + TIMEOUT
            while (conns := peer.ask("conns", "CONNS")[1:]) != ["1", "1", "1"]:
                assert time.monotonic() < deadline, f"round {round_no}: peer has {conns}"
                time.sleep(0.02)
            assert peer.ask("nodes", "NODES")[1:] == [node.name]
            # Apart again, for the next round.
            assert node.disconnect(peer.name)
            deadline = time.monotonic() + TIMEOUT
            while peer.ask("nodes", "NODES")[1:] != []:
                assert time.monotonic() < deadline, "the peer still lists us"
                time.sleep(0.02)
            wait_until(lambda: not node._all and open_carriers(node) == 0,
                       what="every connection here closed")
    assert collisions >= 1, "no round had both attempts in flight: the barrier did not work"


# --------------------------------------------------------------- throughput


def test_100k_ordered_messages_from_another_process(proc_certs, peers):
    count = 100_000
    with make_node(proc_certs) as node:
        sink = node.mailbox("sink", max_messages=count + 10)
        peer = start_peer(peers, "b@127.0.0.1", proc_certs, node)
        start = time.monotonic()
        peer.send(f"flood sink {node.name} {count}")
        seq = Atom("seq")
        for i in range(count):
            message = sink.receive(TIMEOUT)
            if message != (seq, i):
                raise AssertionError(f"message {i}: got {message!r}")
        assert sink.receive(TIMEOUT) == (Atom("done"), count)
        took = time.monotonic() - start
        words = peer.expect("FLOODED", timeout=TIMEOUT)
        assert int(words[1]) == count
        assert not sink.closed and len(sink) == 0
        assert node.nodes() == [peer.name]
        assert took < 40, took


# ------------------------------------------------------------ exits across


def test_exits_cross_processes_both_ways(proc_certs, peers):
    table = Table()
    node = make_node(proc_certs, discovery=table)
    try:
        peer = start_peer(peers, "b@127.0.0.1", proc_certs, node)
        table.add(peer.name, peer.port)
        mailbox = node.mailbox()
        peer.ask(f"link-and-report {mailbox.pid.node},{mailbox.pid.id},"
                          f"{mailbox.pid.serial},{mailbox.pid.creation}", "LINKED")
        # LINK and MONITOR_P are asynchronous: a round trip on the same
        # connection (in order behind them) proves they were handled here.
        assert peer.ask(f"ping {node.name}", "PING")[2] == "pong"
        mailbox.exit(Atom("boom"))
        reports = [peer.expect("REPORT")[1:], peer.expect("REPORT")[1:]]
        text = " ".join(" ".join(r) for r in reports)
        assert "Atom('EXIT')" in text and "Atom('DOWN')" in text, reports
        assert text.count("Atom('boom')") == 2, reports
        # A second link; then this node stops: the peer hears noconnection.
        other = node.mailbox()
        peer.ask(f"link-and-report {other.pid.node},{other.pid.id},{other.pid.serial},"
                 f"{other.pid.creation}", "LINKED")
        assert peer.ask(f"ping {node.name}", "PING")[2] == "pong"
        node.stop()
        reports = [peer.expect("REPORT")[1:], peer.expect("REPORT")[1:]]
        text = " ".join(" ".join(r) for r in reports)
        assert text.count("Atom('noconnection')") == 2, reports
        assert peer.ask("nodes", "NODES")[1:] == []
    finally:
        node.stop()


# --------------------------------------------------------------- discovery


def test_discovery_object_is_used_to_find_a_peer(proc_certs, peers):
    table = Table()
    name = "b@custom.invalid"  # resolves nowhere: only the custom object knows it
    with make_node(proc_certs, discovery=table) as node:
        peer = start_peer(peers, name, proc_certs, None)
        table.add(name, peer.port)
        assert node.ping(name, timeout=TIMEOUT) == "pong"
        assert table.calls == [name]
        assert node.nodes() == [name]


def _tiny_dns_class():
    from tests.test_discovery import TinyDns

    class SrvServer(TinyDns):
        """tests/test_discovery.py's server, answering from its own zone."""

        zone: dict[str, list[str]] = {}

        def _answer(self, data: bytes) -> bytes | None:
            query = dns.message.from_wire(data)
            question = query.question[0]
            qname = question.name.to_text()
            with self._lock:
                self._queries.append((qname, dns.rdatatype.to_text(question.rdtype)))
            response = dns.message.make_response(query)
            response.flags |= dns.flags.AA
            records = self.zone.get(qname)
            if records is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.SRV:
                response.answer.append(dns.rrset.from_text(
                    qname, 60, dns.rdataclass.IN, dns.rdatatype.SRV, *records))
            return response.to_wire()

    return SrvServer


def test_dns_srv_discovery_finds_the_peer(proc_certs, peers):
    name = "b@example.test"
    server_class = _tiny_dns_class()
    server = server_class()
    try:
        peer = start_peer(peers, name, proc_certs, None)
        server.zone = {"_erlang-dist._quic.example.test.": [f"0 0 {peer.port} 127.0.0.1."]}
        discovery = DnsSrvDiscovery(nameservers=["127.0.0.1"], port=server.port, timeout=2.0)
        with make_node(proc_certs, discovery=discovery) as node:
            assert node.ping(name, timeout=TIMEOUT) == "pong"
            assert node.nodes() == [name]
        assert ("_erlang-dist._quic.example.test.", "SRV") in server.queries
    finally:
        server.stop()
    assert not server.errors, server.errors


def _udp_port_free(port: int) -> bool:
    for host in ("0.0.0.0", "127.0.0.1"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def test_host_fallback_on_port_4433(proc_certs, peers):
    if not _udp_port_free(4433):
        pytest.skip("UDP port 4433 is busy on this machine: the host:4433 fallback "
                    "cannot be exercised")
    try:
        start_peer(peers, "b@127.0.0.1", proc_certs, None, "--port", "4433")
    except PeerStartFailed as exc:
        pytest.skip(f"UDP port 4433 was taken meanwhile ({exc})")
    # No table, no discovery object, no DNS: the host part of the name, port 4433.
    with make_node(proc_certs, dns=False) as node:
        assert node.ping("b@127.0.0.1", timeout=TIMEOUT) == "pong"
        assert node.nodes() == ["b@127.0.0.1"]
