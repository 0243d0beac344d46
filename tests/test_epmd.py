"""quicdist.epmd: the epmd codec (sans I/O), the blocking client, epmd discovery.

The codec is checked against byte strings written out by hand from the
layouts of OTP's erl_dist_protocol page; the client against small fake
epmd servers on 127.0.0.1 (refusal, silence, garbage, early close) and,
in the ``erl``-marked tests at the end, against Debian's real epmd.
"""

from __future__ import annotations

import pickle
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from quicdist.discovery import ChainDiscovery, StaticDiscovery
from quicdist.epmd import (
    DEFAULT_EPMD_PORT,
    AliveResponse,
    EpmdClient,
    EpmdDiscovery,
    NodeEntry,
    decode_alive2_resp,
    decode_names_resp,
    decode_port2_resp,
    encode_alive2_req,
    encode_names_req,
    encode_port_please2_req,
    epmd_port,
    tcp_discovery,
)
from quicdist.errors import (
    ConfigurationError,
    DiscoveryError,
    EpmdError,
    QuicDistError,
    QuicDistTimeoutError,
)
from tests.otp import NEEDS_ERL, epmd, unique  # noqa: F401 (epmd is a fixture)


HOST = "127.0.0.1"

# --------------------------------------------------------------------- codec


def test_alive2_req_bytes():
    # Length 15 = 'x' + PortNo:2 + type + proto + high:2 + low:2 + Nlen:2 + "py" + Elen:2
    assert encode_alive2_req("py", 4370) == (
        b"\x00\x0f" b"x" b"\x11\x12" b"M" b"\x00" b"\x00\x06" b"\x00\x06"
        b"\x00\x02" b"py" b"\x00\x00")
    assert encode_alive2_req("n", 1, node_type=72, extra=b"ab", highest_version=6,
                             lowest_version=5) == (
        b"\x00\x10" b"x" b"\x00\x01" b"H" b"\x00" b"\x00\x06" b"\x00\x05"
        b"\x00\x01" b"n" b"\x00\x02" b"ab")


def test_alive2_req_utf8_name_length_is_in_bytes():
    req = encode_alive2_req("é", 9)
    assert req[11:13] == b"\x00\x02" and req[13:15] == "é".encode()
    assert struct.unpack(">H", req[:2])[0] == len(req) - 2


@pytest.mark.parametrize("name", ["", "a@b", "sp ace", "x" * 256, "tab\t", 7, None])
def test_bad_names_are_refused(name):
    with pytest.raises(ConfigurationError):
        encode_alive2_req(name, 4370)
    with pytest.raises(ConfigurationError):
        encode_port_please2_req(name)


@pytest.mark.parametrize("port", [0, 65536, -1, True, "4370", None])
def test_bad_ports_are_refused(port):
    with pytest.raises(ConfigurationError):
        encode_alive2_req("py", port)


def test_alive2_x_resp_and_alive2_resp():
    x = b"v\x00\x01\x02\x03\x04"
    assert decode_alive2_resp(x) == (AliveResponse(0, 0x01020304, True), 6)
    assert decode_alive2_resp(x + b"junk") == (AliveResponse(0, 0x01020304, True), 6)
    y = b"y\x01\x00\x07"
    assert decode_alive2_resp(y) == (AliveResponse(1, 7, False), 4)
    for whole in (x, y):
        for cut in range(len(whole)):
            assert decode_alive2_resp(whole[:cut]) is None
    with pytest.raises(EpmdError):
        decode_alive2_resp(b"w\x00\x00\x00")


def test_port_please2_req_bytes():
    assert encode_port_please2_req("erl") == b"\x00\x04zerl"


PORT2_OK = (b"w\x00" b"\x9c\x40" b"M" b"\x00" b"\x00\x06" b"\x00\x05"
            b"\x00\x03" b"erl" b"\x00\x01" b"!")


def test_port2_resp_found():
    entry = NodeEntry("erl", 40000, 77, 0, 6, 5, b"!")
    assert decode_port2_resp(PORT2_OK) == (entry, len(PORT2_OK))
    assert decode_port2_resp(PORT2_OK + b"more") == (entry, len(PORT2_OK))
    for cut in range(len(PORT2_OK)):
        assert decode_port2_resp(PORT2_OK[:cut]) is None, cut
    assert entry.speaks(6) and entry.speaks(5) and not entry.speaks(7)
    assert not NodeEntry("x", 1, 77, 1, 6, 6).speaks(6)  # not TCP/IPv4


def test_port2_resp_not_found_and_garbage():
    assert decode_port2_resp(b"w\x01") == (1, 2)
    with pytest.raises(EpmdError):
        decode_port2_resp(b"v\x00")
    with pytest.raises(EpmdError):
        decode_port2_resp(b"w\x00\x9c\x40M\x00\x00\x06\x00\x05\x00\x02\xff\xfe\x00\x00")


def test_names_req_and_resp():
    assert encode_names_req() == b"\x00\x01n"
    data = (struct.pack(">I", 4369) + b"name a at port 40001\nname b_2 at port 5\n"
            b"garbage line\nname c at port notanumber\n")
    assert decode_names_resp(data) == (4369, [("a", 40001), ("b_2", 5)])
    assert decode_names_resp(struct.pack(">I", 4369)) == (4369, [])
    with pytest.raises(EpmdError):
        decode_names_resp(b"\x00\x00")


def test_epmd_port_from_argument_and_environment(monkeypatch):
    monkeypatch.delenv("ERL_EPMD_PORT", raising=False)
    assert epmd_port() == DEFAULT_EPMD_PORT == 4369
    assert epmd_port(5000) == 5000
    monkeypatch.setenv("ERL_EPMD_PORT", "4400")
    assert epmd_port() == 4400
    assert EpmdClient().port == 4400 and EpmdDiscovery().port == 4400
    monkeypatch.setenv("ERL_EPMD_PORT", "four")
    with pytest.raises(ConfigurationError):
        epmd_port()
    with pytest.raises(ConfigurationError):
        epmd_port(70000)


def test_epmd_error_is_a_discovery_error_and_pickles():
    error = EpmdError("refused", "py", 1)
    assert isinstance(error, DiscoveryError) and isinstance(error, QuicDistError)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.message, copy.node, copy.result) == ("refused", "py", 1)
    assert str(copy) == "refused"


# -------------------------------------------------------- fake epmd servers


class FakeEpmd:
    """A TCP server on 127.0.0.1 that answers each connection with ``respond``."""

    def __init__(self, respond: Callable[[socket.socket, bytes], None]) -> None:
        self.server = socket.create_server((HOST, 0))
        self.server.settimeout(0.05)
        self.port = self.server.getsockname()[1]
        self.requests: list[bytes] = []
        self._respond = respond
        self._stop = threading.Event()
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, daemon=True, name="test-fake-epmd")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._open.append(conn)
            conn.settimeout(2)
            try:
                (size,) = struct.unpack(">H", _recv_exact(conn, 2))
                request = _recv_exact(conn, size)
                self.requests.append(request)
                self._respond(conn, request)
            except (OSError, EOFError):
                pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.server.close()
        for conn in self._open:
            conn.close()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


@pytest.fixture
def fake_epmd() -> Iterator[Callable[[Callable[[socket.socket, bytes], None]], FakeEpmd]]:
    made: list[FakeEpmd] = []

    def make(respond: Callable[[socket.socket, bytes], None]) -> FakeEpmd:
        fake = FakeEpmd(respond)
        made.append(fake)
        return fake

    try:
        yield make
    finally:
        for fake in made:
            fake.close()


def _closing(reply: bytes) -> Callable[[socket.socket, bytes], None]:
    def respond(conn: socket.socket, request: bytes) -> None:
        for i in range(len(reply)):  # byte by byte: the client must reassemble
            conn.sendall(reply[i:i + 1])
        conn.close()
    return respond


def test_client_register_keeps_the_connection_and_close_releases_it(fake_epmd):
    holder: dict[str, socket.socket] = {}

    def respond(conn: socket.socket, request: bytes) -> None:
        holder["conn"] = conn
        conn.sendall(b"v\x00\x00\x00\x00\x2a")

    fake = fake_epmd(respond)
    registration = EpmdClient(HOST, fake.port, timeout=2).register("py", 4370)
    assert fake.requests == [encode_alive2_req("py", 4370)[2:]]
    assert (registration.name, registration.port, registration.creation) == ("py", 4370, 42)
    assert not registration.closed
    conn = holder["conn"]
    conn.settimeout(0.2)
    with pytest.raises(TimeoutError):
        conn.recv(1)  # still open: nothing, no EOF
    registration.close()
    registration.close()
    assert registration.closed
    conn.settimeout(2)
    assert conn.recv(1) == b""  # epmd sees the close: the name is unregistered


def test_client_register_refused_and_old_epmd(fake_epmd):
    fake = fake_epmd(_closing(b"v\x01\x00\x00\x00\x00"))
    with pytest.raises(EpmdError) as info:
        EpmdClient(HOST, fake.port, timeout=2).register("py", 4370)
    assert info.value.result == 1 and info.value.node == "py"
    old = fake_epmd(lambda conn, req: conn.sendall(b"y\x00\x00\x05"))
    with EpmdClient(HOST, old.port, timeout=2).register("py", 4370) as registration:
        assert registration.creation == 5


def test_client_port_please(fake_epmd):
    fake = fake_epmd(_closing(PORT2_OK))
    entry = EpmdClient(HOST, fake.port, timeout=2).port_please("erl")
    assert fake.requests == [b"zerl"]
    assert entry.port == 40000 and entry.name == "erl"
    missing = fake_epmd(_closing(b"w\x01"))
    with pytest.raises(EpmdError) as info:
        EpmdClient(HOST, missing.port, timeout=2).port_please("ghost")
    assert info.value.result == 1 and "ghost" in str(info.value)


def test_client_names(fake_epmd):
    fake = fake_epmd(_closing(struct.pack(">I", 4369) + b"name a at port 1\n"))
    assert EpmdClient(HOST, fake.port, timeout=2).names() == [("a", 1)]
    assert fake.requests == [b"n"]


def test_client_errors(fake_epmd):
    closed = fake_epmd(lambda conn, req: conn.close())
    with pytest.raises(EpmdError, match="closed"):
        EpmdClient(HOST, closed.port, timeout=2).port_please("erl")
    with pytest.raises(EpmdError, match="closed"):
        EpmdClient(HOST, closed.port, timeout=2).register("py", 1)
    garbage = fake_epmd(_closing(b"HTTP/1.1 400 Bad Request\r\n"))
    with pytest.raises(EpmdError, match="PORT2_RESP"):
        EpmdClient(HOST, garbage.port, timeout=2).port_please("erl")
    # Nobody listens there: refused at once.
    sock = socket.socket()
    sock.bind((HOST, 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(EpmdError, match="not running"):
        EpmdClient(HOST, port, timeout=2).port_please("erl")


def test_client_times_out_on_a_silent_epmd(fake_epmd):
    silent = fake_epmd(lambda conn, req: None)  # reads the request, never answers
    start = time.monotonic()
    with pytest.raises(QuicDistTimeoutError):
        EpmdClient(HOST, silent.port, timeout=0.3).register("py", 4370)
    with pytest.raises(TimeoutError):
        EpmdClient(HOST, silent.port, timeout=0.3).port_please("erl")
    assert time.monotonic() - start < 5


def test_client_settings_are_checked():
    with pytest.raises(ConfigurationError):
        EpmdClient("", 4369)
    with pytest.raises(ConfigurationError):
        EpmdClient(HOST, 4369, timeout=0)
    with pytest.raises(ConfigurationError):
        EpmdDiscovery(timeout=-1)


# ------------------------------------------------------------------ discovery


def test_epmd_discovery_asks_the_epmd_of_the_node_host(fake_epmd):
    fake = fake_epmd(_closing(PORT2_OK))
    assert EpmdDiscovery(fake.port, timeout=2).lookup(f"erl@{HOST}") == (HOST, 40000)
    assert fake.requests == [b"zerl"]


def test_epmd_discovery_failures_are_discovery_errors(fake_epmd):
    missing = fake_epmd(_closing(b"w\x01"))
    with pytest.raises(EpmdError) as info:
        EpmdDiscovery(missing.port, timeout=2).lookup(f"ghost@{HOST}")
    assert info.value.node == f"ghost@{HOST}" and info.value.result == 1
    # Registered, but speaks only version 5: quicdist needs 6.
    v5 = PORT2_OK.replace(b"\x00\x06\x00\x05", b"\x00\x05\x00\x05")
    old = fake_epmd(_closing(v5))
    with pytest.raises(EpmdError, match="version"):
        EpmdDiscovery(old.port, timeout=2).lookup(f"erl@{HOST}")
    silent = fake_epmd(lambda conn, req: None)
    with pytest.raises(DiscoveryError):
        EpmdDiscovery(silent.port, timeout=0.3).lookup(f"erl@{HOST}")
    with pytest.raises(DiscoveryError):
        EpmdDiscovery(missing.port).lookup("no-at-sign")


def test_tcp_discovery_chain(fake_epmd):
    fake = fake_epmd(_closing(PORT2_OK))
    chain = tcp_discovery({f"static@{HOST}": (HOST, 1234)}, epmd_port=fake.port,
                          epmd_timeout=2)
    assert isinstance(chain, ChainDiscovery)
    assert chain.lookup(f"static@{HOST}") == (HOST, 1234)
    assert fake.requests == []  # a static entry never asks epmd
    assert chain.lookup(f"erl@{HOST}") == (HOST, 40000)
    assert [type(m) for m in chain.methods] == [StaticDiscovery, EpmdDiscovery]
    # Without epmd: only the table (and a custom object).
    no_epmd = tcp_discovery(None, epmd=False)
    with pytest.raises(DiscoveryError):
        no_epmd.lookup(f"erl@{HOST}")
    with pytest.raises(ConfigurationError):
        tcp_discovery(None, object())  # type: ignore[arg-type]


# ------------------------------------------------------- the real epmd (OTP)


@pytest.mark.erl
@NEEDS_ERL
def test_real_epmd_register_lookup_names_unregister(epmd):  # noqa: F811
    client = EpmdClient(HOST, epmd, timeout=5)
    name = unique("qd_epmd")
    with socket.create_server((HOST, 0)) as server:
        port = server.getsockname()[1]
        registration = client.register(name, port)
        try:
            assert registration.creation != 0
            entry = client.port_please(name)
            assert entry == NodeEntry(name, port, 77, 0, 6, 6, b"")
            assert (name, port) in client.names()
            assert EpmdDiscovery(epmd).lookup(f"{name}@{HOST}") == (HOST, port)
            # The name is taken while the registration lives.
            with pytest.raises(EpmdError) as info:
                client.register(name, port + 1 if port < 65535 else port - 1)
            assert info.value.result
        finally:
            registration.close()
        # Unregistered when the connection closed (epmd notices at once, but
        # asynchronously: poll briefly).
        deadline = time.monotonic() + 5
        while True:
            try:
                client.port_please(name)
            except EpmdError as exc:
                assert exc.result
                break
            assert time.monotonic() < deadline, "epmd kept the name after the close"
            time.sleep(0.02)
        # And the name can be registered again.
        client.register(name, port).close()


@pytest.mark.erl
@NEEDS_ERL
def test_real_epmd_unknown_name(epmd):  # noqa: F811
    with pytest.raises(EpmdError) as info:
        EpmdClient(HOST, epmd, timeout=5).port_please(unique("qd_nobody"))
    assert info.value.result
