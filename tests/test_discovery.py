"""Node discovery (quicdist.discovery): static table, DNS SRV, host fallback, chain.

The DNS tests talk to a tiny authoritative server on 127.0.0.1 (an ephemeral
UDP port, a thread), built with dnspython's message API. It answers SRV
queries from ``ZONE``, NXDOMAIN for unknown names, SERVFAIL for one name and
never answers for another (the timeout test). No other network is used.
"""

from __future__ import annotations

import pickle
import selectors
import socket
import threading
import time

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from quicdist.discovery import (
    DEFAULT_PORT,
    ChainDiscovery,
    Discovery,
    DnsSrvDiscovery,
    HostDiscovery,
    StaticDiscovery,
    default_discovery,
    split_node_name,
)
from quicdist.errors import ConfigurationError, DiscoveryError


SRV_RECORDS = [
    "20 100 5555 backup.example.test.",  # heaviest, but a worse priority
    "10 5 4433 light.example.test.",
    "10 60 4444 heavy.example.test.",    # lowest priority, highest weight: chosen
    "10 60 4445 zzz.example.test.",      # same priority and weight: loses the tie by name
]

ZONE: dict[str, list[str]] = {
    "_erlang-dist._quic.example.test.": SRV_RECORDS,
    "_erlang-dist._quic.reversed.test.": list(reversed(SRV_RECORDS)),
    "_erlang-dist._quic.single.test.": ["0 0 9100 only.single.test."],
    "_erlang-dist._quic.dot.test.": ["0 0 0 ."],  # "service not available" (RFC 2782)
    "_erlang-dist._quic.nosrv.test.": [],         # the name exists, without SRV records
}
BLACKHOLE = "_erlang-dist._quic.blackhole.test."
SERVFAIL = "_erlang-dist._quic.servfail.test."


class TinyDns:
    """An authoritative DNS server answering from ZONE, one UDP socket, one thread.

    The loop ends when stop() wakes it through a socket pair, after
    ``max_seconds`` or after ``max_queries`` queries, whichever comes first.
    """

    def __init__(self, max_seconds: float = 30.0, max_queries: int = 500) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._max_seconds = max_seconds
        self._max_queries = max_queries
        self._lock = threading.Lock()
        self._queries: list[tuple[str, str]] = []
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, name="tiny-dns", daemon=True)
        self._thread.start()

    @property
    def queries(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._queries)

    def _serve(self) -> None:
        deadline = time.monotonic() + self._max_seconds
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while len(self._queries) < self._max_queries:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                for key, _ in sel.select(timeout=left):
                    if key.fileobj is self._wake_r:
                        return
                    data, addr = self.sock.recvfrom(65535)
                    try:
                        reply = self._answer(data)
                    except Exception as exc:  # record, keep serving; the fixture fails
                        self.errors.append(exc)
                        continue
                    if reply is not None:
                        self.sock.sendto(reply, addr)

    def _answer(self, data: bytes) -> bytes | None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        qname = question.name.to_text()
        with self._lock:
            self._queries.append((qname, dns.rdatatype.to_text(question.rdtype)))
        if qname == BLACKHOLE:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if qname == SERVFAIL:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif qname not in ZONE:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.SRV and ZONE[qname]:
            response.answer.append(
                dns.rrset.from_text(qname, 300, dns.rdataclass.IN, dns.rdatatype.SRV,
                                    *ZONE[qname]))
        return response.to_wire()

    def stop(self) -> None:
        self._wake_w.send(b"x")
        self._thread.join(timeout=5)
        alive = self._thread.is_alive()
        for s in (self.sock, self._wake_r, self._wake_w):
            s.close()
        assert not alive, "the DNS server thread did not stop"


@pytest.fixture
def dns_server():
    server = TinyDns()
    try:
        yield server
    finally:
        server.stop()
    assert not server.errors, server.errors


@pytest.fixture
def srv(dns_server):
    return DnsSrvDiscovery(nameservers=["127.0.0.1"], port=dns_server.port, timeout=2.0)


class Recorder:
    """A custom discovery object: answers from a dict, records its calls."""

    def __init__(self, answers=None, exc=None):
        self.answers = answers or {}
        self.exc = exc
        self.calls = []

    def lookup(self, node_name):
        self.calls.append(node_name)
        if self.exc is not None:
            raise self.exc
        if node_name in self.answers:
            return self.answers[node_name]
        raise DiscoveryError(f"recorder does not know {node_name}", node=node_name)


# -- node names ---------------------------------------------------------------

@pytest.mark.parametrize("name, parts", [
    ("alice@host", ("alice", "host")),
    ("a@b.example.com", ("a", "b.example.com")),
    ("n1@127.0.0.1", ("n1", "127.0.0.1")),
])
def test_split_node_name(name, parts):
    assert split_node_name(name) == parts


@pytest.mark.parametrize("name", ["", "alice", "a@b@c", "@host", "alice@", "@", "@@"])
def test_malformed_node_names(name):
    with pytest.raises(DiscoveryError, match="malformed node name") as info:
        split_node_name(name)
    assert info.value.node == name


def test_non_str_node_name():
    with pytest.raises(DiscoveryError, match="must be a str"):
        split_node_name(b"a@b")  # type: ignore[arg-type]


def test_chain_refuses_malformed_names_before_asking_anyone():
    custom = Recorder({"x": ("h", 1)})
    chain = default_discovery(discovery=custom, dns=False)
    with pytest.raises(DiscoveryError, match="malformed node name"):
        chain.lookup("no-at-sign")
    assert custom.calls == []


@pytest.mark.parametrize("method", [StaticDiscovery({}), HostDiscovery(),
                                    DnsSrvDiscovery(nameservers=["127.0.0.1"])])
def test_each_method_refuses_malformed_names(method):
    with pytest.raises(DiscoveryError, match="malformed node name"):
        method.lookup("a@b@c")


def test_discovery_protocol_is_runtime_checkable():
    for method in (StaticDiscovery(), HostDiscovery(), Recorder(),
                   DnsSrvDiscovery(nameservers=["127.0.0.1"]),
                   ChainDiscovery(HostDiscovery())):
        assert isinstance(method, Discovery)
    assert not isinstance(object(), Discovery)


# -- static table -------------------------------------------------------------

def test_static_hit_and_miss():
    table = StaticDiscovery({"alice@host": ("10.0.0.1", 9001), "bob@host": ("b.example", 9002)})
    assert table.lookup("alice@host") == ("10.0.0.1", 9001)
    assert table.lookup("bob@host") == ("b.example", 9002)
    with pytest.raises(DiscoveryError, match="not in the static table") as info:
        table.lookup("carol@host")
    assert info.value.node == "carol@host"
    assert "carol@host" in str(info.value)


def test_static_table_is_copied():
    source = {"alice@host": ("10.0.0.1", 9001)}
    table = StaticDiscovery(source)
    source["bob@host"] = ("10.0.0.2", 9002)
    del source["alice@host"]
    assert table.lookup("alice@host") == ("10.0.0.1", 9001)
    assert "bob@host" not in table


@pytest.mark.parametrize("entry", [
    ("host", 0), ("host", 65536), ("host", -1), ("host", "4433"), ("host", True),
    ("host", 4433.0), ("", 4433), (None, 4433), ("has space", 4433), ("a@b", 4433),
    ("host\n", 4433), "host:4433", ("host",), ("host", 4433, "extra"), None,
])
def test_static_bad_entries(entry):
    with pytest.raises(ConfigurationError):
        StaticDiscovery({"alice@host": entry})


@pytest.mark.parametrize("name", ["alice", "a@b@c", "@host", "alice@", 42])
def test_static_bad_names(name):
    with pytest.raises(ConfigurationError, match="static discovery"):
        StaticDiscovery({name: ("host", 4433)})


def test_static_not_a_mapping():
    with pytest.raises(ConfigurationError, match="mapping"):
        StaticDiscovery([("alice@host", ("h", 1))])  # type: ignore[arg-type]


def test_static_add_and_remove():
    table = StaticDiscovery()
    assert len(table) == 0
    table.add("alice@host", "10.0.0.1", 9001)
    assert table.lookup("alice@host") == ("10.0.0.1", 9001)
    table.add("alice@host", "10.0.0.9", 9009)  # replaces
    assert table.lookup("alice@host") == ("10.0.0.9", 9009)
    table.remove("alice@host")
    table.remove("alice@host")  # absent: no error
    with pytest.raises(DiscoveryError):
        table.lookup("alice@host")
    with pytest.raises(ConfigurationError):
        table.add("alice@host", "10.0.0.1", 0)
    with pytest.raises(ConfigurationError):
        table.add("alice", "10.0.0.1", 1)
    assert len(table) == 0  # failed adds left nothing behind


def test_static_concurrent_add_remove():
    table = StaticDiscovery()
    barrier = threading.Barrier(8)

    def work(t):
        barrier.wait(timeout=10)
        for i in range(200):
            table.add(f"n{t}_{i}@host", "h", 1 + i)
            if i % 2:
                table.remove(f"n{t}_{i}@host")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=10)
    assert not any(th.is_alive() for th in threads)
    assert len(table) == 8 * 100
    assert table.lookup("n7_198@host") == ("h", 199)
    assert "n7_199@host" not in table


# -- DNS SRV ------------------------------------------------------------------

def test_srv_choice_by_priority_then_weight(srv, dns_server):
    host, port = srv.lookup("alice@example.test")
    assert (host, port) == ("heavy.example.test", 4444)
    assert not host.endswith(".")
    assert dns_server.queries == [("_erlang-dist._quic.example.test.", "SRV")]


def test_srv_choice_does_not_depend_on_record_order(srv):
    assert srv.lookup("alice@reversed.test") == ("heavy.example.test", 4444)


def test_srv_single_record_and_trailing_dot_stripped(srv):
    assert srv.lookup("bob@single.test") == ("only.single.test", 9100)


def test_srv_query_name(srv):
    assert srv.query_name("alice@example.test") == "_erlang-dist._quic.example.test"
    custom = DnsSrvDiscovery(nameservers=["127.0.0.1"], service="_other._udp")
    assert custom.query_name("a@b.test.") == "_other._udp.b.test"


def test_srv_nxdomain(srv, dns_server):
    with pytest.raises(DiscoveryError, match="NXDOMAIN") as info:
        srv.lookup("alice@unknown.test")
    assert info.value.node == "alice@unknown.test"
    assert "_erlang-dist._quic.unknown.test" in str(info.value)
    assert dns_server.queries == [("_erlang-dist._quic.unknown.test.", "SRV")]


def test_srv_no_records(srv):
    with pytest.raises(DiscoveryError, match="no SRV records"):
        srv.lookup("alice@nosrv.test")


def test_srv_service_not_available(srv):
    with pytest.raises(DiscoveryError, match="not available"):
        srv.lookup("alice@dot.test")


def test_srv_servfail(srv):
    with pytest.raises(DiscoveryError, match="servfail.test"):
        srv.lookup("alice@servfail.test")


def test_srv_timeout(dns_server):
    srv = DnsSrvDiscovery(nameservers=["127.0.0.1"], port=dns_server.port, timeout=0.3)
    start = time.monotonic()
    with pytest.raises(DiscoveryError, match="timed out") as info:
        srv.lookup("alice@blackhole.test")
    elapsed = time.monotonic() - start
    assert 0.25 <= elapsed < 2.0
    assert info.value.node == "alice@blackhole.test"
    assert ("_erlang-dist._quic.blackhole.test.", "SRV") in dns_server.queries


def test_srv_answers_are_cached(dns_server):
    cached = DnsSrvDiscovery(nameservers=["127.0.0.1"], port=dns_server.port)
    uncached = DnsSrvDiscovery(nameservers=["127.0.0.1"], port=dns_server.port, cache=False)
    for _ in range(3):
        assert cached.lookup("a@example.test") == ("heavy.example.test", 4444)
    assert len(dns_server.queries) == 1
    for _ in range(3):
        assert uncached.lookup("a@example.test") == ("heavy.example.test", 4444)
    assert len(dns_server.queries) == 4


@pytest.mark.parametrize("name, why", [
    ("a@127.0.0.1", "IP address"), ("a@::1", "IP address"),
    ("a@localhost", "localhost"), ("a@x.localhost", "localhost"),
])
def test_srv_skips_ip_literals_and_localhost(srv, dns_server, name, why):
    with pytest.raises(DiscoveryError, match=why):
        srv.lookup(name)
    assert dns_server.queries == []


@pytest.mark.parametrize("kwargs", [
    {"nameservers": ["not-an-address"]}, {"nameservers": []}, {"nameservers": "127.0.0.1"},
    {"port": 0}, {"port": 70000}, {"timeout": 0}, {"timeout": -1.0}, {"service": ""},
])
def test_srv_bad_configuration(kwargs):
    kwargs = {"nameservers": ["127.0.0.1"], **kwargs}
    with pytest.raises(ConfigurationError):
        DnsSrvDiscovery(**kwargs)


# -- host fallback ------------------------------------------------------------

@pytest.mark.parametrize("name, host", [("a@127.0.0.1", "127.0.0.1"),
                                        ("a@localhost", "localhost")])
def test_host_fallback(name, host):
    assert HostDiscovery().lookup(name) == (host, 4433)
    assert DEFAULT_PORT == 4433
    assert HostDiscovery(port=5000).lookup(name) == (host, 5000)


def test_host_unresolvable():
    with pytest.raises(DiscoveryError, match="does not resolve") as info:
        HostDiscovery().lookup("a@no-such-host.invalid")
    assert info.value.node == "a@no-such-host.invalid"


@pytest.mark.parametrize("port", [0, 65536, "4433", True])
def test_host_bad_port(port):
    with pytest.raises(ConfigurationError):
        HostDiscovery(port)


# -- chains ---------------------------------------------------------------------

def test_chain_static_wins_over_dns(srv, dns_server):
    chain = ChainDiscovery(StaticDiscovery({"alice@example.test": ("10.1.2.3", 9000)}), srv)
    assert chain.lookup("alice@example.test") == ("10.1.2.3", 9000)
    assert dns_server.queries == []
    assert chain.lookup("bob@example.test") == ("heavy.example.test", 4444)
    assert len(dns_server.queries) == 1


def test_default_discovery_order(srv, dns_server):
    # the custom object here is the DNS method, pointed at the test server
    chain = default_discovery({"alice@example.test": ("10.1.2.3", 9000)}, srv, dns=False)
    assert chain.lookup("alice@example.test") == ("10.1.2.3", 9000)  # static
    assert dns_server.queries == []
    assert chain.lookup("bob@example.test") == ("heavy.example.test", 4444)  # custom
    assert chain.lookup("bob@localhost") == ("localhost", 4433)  # host fallback
    assert chain.lookup("bob@127.0.0.1") == ("127.0.0.1", 4433)


def test_default_discovery_structure():
    custom = Recorder()
    full = default_discovery({"a@b": ("h", 1)}, custom)
    assert isinstance(full, ChainDiscovery)
    kinds = [type(m) for m in full.methods]
    assert kinds == [StaticDiscovery, Recorder, DnsSrvDiscovery, HostDiscovery]
    assert full.methods[1] is custom
    assert full.methods[3].port == 4433
    assert [type(m) for m in default_discovery().methods] == [DnsSrvDiscovery, HostDiscovery]
    assert [type(m) for m in default_discovery(dns=False).methods] == [HostDiscovery]


def test_custom_object_is_used():
    custom = Recorder({"alice@anywhere.invalid": ("10.9.9.9", 7000)})
    chain = default_discovery(discovery=custom, dns=False)
    assert chain.lookup("alice@anywhere.invalid") == ("10.9.9.9", 7000)
    assert custom.calls == ["alice@anywhere.invalid"]
    # a DiscoveryError from the custom object moves on to the fallback
    assert chain.lookup("bob@127.0.0.1") == ("127.0.0.1", 4433)
    assert custom.calls == ["alice@anywhere.invalid", "bob@127.0.0.1"]


def test_custom_object_raising_keyerror_is_wrapped():
    boom = KeyError("bob")
    chain = default_discovery(discovery=Recorder(exc=boom), dns=False)
    assert chain.lookup("bob@127.0.0.1") == ("127.0.0.1", 4433)  # did not escape
    with pytest.raises(DiscoveryError) as info:
        chain.lookup("bob@nowhere.invalid")
    err = info.value
    assert "KeyError" in str(err) and "does not resolve" in str(err)
    group = err.__cause__
    assert isinstance(group, ExceptionGroup)
    assert all(isinstance(e, DiscoveryError) for e in group.exceptions)
    assert group.exceptions[0].__cause__ is boom


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(3)])
def test_base_exceptions_pass_through(exc):
    chain = default_discovery(discovery=Recorder(exc=exc), dns=False)
    with pytest.raises(type(exc)):
        chain.lookup("bob@127.0.0.1")


@pytest.mark.parametrize("bad", ["10.0.0.1:7000", ("10.0.0.1",), ("", 7000),
                                 ("10.0.0.1", 0), ("10.0.0.1", "7000"), None])
def test_custom_object_bad_answer_moves_on(bad):
    chain = ChainDiscovery(Recorder({"a@127.0.0.1": bad}), HostDiscovery())
    assert chain.lookup("a@127.0.0.1") == ("127.0.0.1", 4433)
    with pytest.raises(DiscoveryError, match="invalid address"):
        ChainDiscovery(Recorder({"a@127.0.0.1": bad})).lookup("a@127.0.0.1")


def test_chain_failure_lists_every_method(srv):
    chain = ChainDiscovery(StaticDiscovery({"x@y": ("h", 1)}), srv, HostDiscovery())
    with pytest.raises(DiscoveryError) as info:
        chain.lookup("alice@nowhere.invalid")
    message = str(info.value)
    assert info.value.node == "alice@nowhere.invalid"
    parts = ["static table: ", "not in the static table", "DNS SRV: ", "NXDOMAIN",
             "host: ", "does not resolve"]
    positions = [message.index(p) for p in parts]
    assert positions == sorted(positions), message
    assert len(info.value.__cause__.exceptions) == 3
    clone = pickle.loads(pickle.dumps(info.value))
    assert (clone.message, clone.node) == (info.value.message, info.value.node)


def test_chain_and_default_refuse_objects_without_lookup():
    with pytest.raises(ConfigurationError):
        ChainDiscovery()
    with pytest.raises(ConfigurationError):
        ChainDiscovery(object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        default_discovery(discovery=object())  # type: ignore[arg-type]
