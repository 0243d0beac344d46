"""The handshake state machine against a real OTP node (``erl`` on PATH).

The handshake messages are the same over TCP distribution as over QUIC
stream 0; only the carrier differs: over TCP each handshake message is
prefixed with a 2-byte length, and after the handshake each distribution
message with a 4-byte length (a zero length is a tick). ``TcpCarrier``
below adds and strips those prefixes, so the state machine under test sees
exactly the unframed bytes it sees on QUIC. An epmd client (PORT2_REQ to
find the Erlang node, ALIVE2_REQ to register our listener) completes the
picture. Everything is bounded: socket and subprocess timeouts, and every
``erl`` is killed (its process group) at the end of its test.

Cases:

* the flag values of ``quicdist.flags`` against the installed OTP's
  ``dist.hrl`` (compiled by erlc) and ``erts_internal:get_dflags()``;
* Python dials erl: the handshake completes, erl lists our node in
  ``nodes()``, and a REG_SEND we send after it reaches an Erlang process;
* Python dials erl with a wrong cookie: we report AuthenticationError
  (erl closes without a word), erl logs "Invalid challenge reply";
* erl dials Python (registered in epmd): ``net_kernel:connect_node/1``
  returns true; with a wrong cookie our listener reports AuthenticationError
  and ``connect_node`` returns false.
"""

from __future__ import annotations

import os
import re
import secrets
import select
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from quicdist import Atom, Pid, decode_from, encode
from quicdist.errors import AuthenticationError
from quicdist.flags import MANDATORY_25, QUICDIST_FLAGS, DistFlag
from quicdist.handshake import Handshake
from tests.otp import ensure_epmd, epmd_port


ERL = shutil.which("erl")
ERLC = shutil.which("erlc")
EPMD = shutil.which("epmd")

pytestmark = [
    pytest.mark.erl,
    pytest.mark.skipif(
        ERL is None or ERLC is None or EPMD is None,
        reason="erl/erlc/epmd not found: install erlang-nox (make test does this) -- "
               "the handshake is NOT checked against OTP",
    ),
]

HOST = "127.0.0.1"
EPMD_PORT = epmd_port()
FACTOR = float(os.environ.get("QUICDIST_TESTS_TIMEOUT_FACTOR", "1"))
IO_TIMEOUT = 10.0 * FACTOR  # seconds, for every socket operation
ERL_TIMEOUT = 20.0 * FACTOR  # seconds, for an erl run
VISIBLE = QUICDIST_FLAGS | DistFlag.PUBLISHED


# ---------------------------------------------------------------------------
# Plumbing: erl processes, epmd, the TCP carrier


class Erl:
    """One ``erl -name`` node running an ``-eval`` script; killed on close()."""

    def __init__(self, name: str, cookie: str, script: str) -> None:
        self.name = name
        env = dict(os.environ, ERL_CRASH_DUMP_SECONDS="0", ERL_CRASH_DUMP=os.devnull)
        self.proc = subprocess.Popen(
            [ERL, "-name", name, "-setcookie", cookie, "-noinput", "-eval", script],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True)
        self.early = b""  # output read by wait_for()
        self.output = ""

    def wait_for(self, text: str, timeout: float = ERL_TIMEOUT) -> None:
        """Read erl's output until ``text`` appears (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while text.encode() not in self.early:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                pytest.fail(f"erl {self.name} did not print {text!r} within {timeout} s:\n"
                            f"{self.early.decode(errors='replace')}")
            chunk = os.read(fd, 4096)
            if not chunk:
                pytest.fail(f"erl {self.name} exited before printing {text!r}:\n"
                            f"{self.early.decode(errors='replace')}")
            self.early += chunk

    def wait(self, timeout: float = ERL_TIMEOUT) -> str:
        """Wait for erl to halt; its output (stdout and stderr)."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.close()
            pytest.fail(f"erl {self.name} did not halt within {timeout} s:\n{self.output}")
        self.early += out
        self.output = self.early.decode(errors="replace")
        return self.output

    def close(self) -> None:
        """Kill erl (its whole process group); keep what it printed in ``output``."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            out, _ = self.proc.communicate(timeout=5)
            self.early += out or b""
        except (subprocess.TimeoutExpired, ValueError):
            pass
        self.output = self.early.decode(errors="replace")


@pytest.fixture
def erl_nodes():
    """Start Erl nodes with ``start(name, cookie, script)``; all are killed at the end."""
    started: list[Erl] = []

    def start(name: str, cookie: str, script: str) -> Erl:
        node = Erl(name, cookie, script)
        started.append(node)
        return node

    yield start
    for node in started:
        node.close()


@pytest.fixture(scope="module")
def epmd() -> int:
    """Make sure an epmd runs (``epmd -daemon``; it stays, as erl would leave it)."""
    return ensure_epmd()


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return bytes(data)


def epmd_port_of(alive: str, deadline: float) -> int:
    """PORT2_REQ ('z'): the distribution port of node ``alive``, polling until ``deadline``."""
    while True:
        with socket.create_connection((HOST, EPMD_PORT), timeout=IO_TIMEOUT) as s:
            req = b"z" + alive.encode()
            s.sendall(struct.pack(">H", len(req)) + req)
            head = recv_exact(s, 2)
            assert head[0] == ord("w"), head
            if head[1] == 0:
                port, node_type, proto, high, low = struct.unpack(">HBBHH", recv_exact(s, 8))
                assert (node_type, proto) == (77, 0) and low <= 6 <= high
                return port
        if time.monotonic() > deadline:
            pytest.fail(f"{alive} never registered in epmd")
        time.sleep(0.05)


def epmd_register(alive: str, port: int) -> tuple[socket.socket, int]:
    """ALIVE2_REQ ('x'): register ``alive`` at ``port``; returns (the socket to keep
    open while registered, the creation epmd gave us)."""
    s = socket.create_connection((HOST, EPMD_PORT), timeout=IO_TIMEOUT)
    name = alive.encode()
    req = (b"x" + struct.pack(">HBBHH", port, 77, 0, 6, 6)
           + struct.pack(">H", len(name)) + name + struct.pack(">H", 0))
    s.sendall(struct.pack(">H", len(req)) + req)
    tag, result = recv_exact(s, 2)
    if tag == ord("v"):  # ALIVE2_X_RESP (OTP 23+ epmd): 32-bit creation
        (creation,) = struct.unpack(">I", recv_exact(s, 4))
    else:
        assert tag == ord("y"), tag
        (creation,) = struct.unpack(">H", recv_exact(s, 2))
    assert result == 0, f"epmd refused to register {alive}: result {result}"
    return s, creation


class TcpCarrier:
    """Handshake messages over TCP: a 2-byte length before each, then 4-byte frames."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(IO_TIMEOUT)
        self.rest = b""  # bytes after the handshake
        self.sent: list[bytes] = []
        self.received: list[bytes] = []

    def send(self, messages: list[bytes]) -> None:
        for message in messages:
            self.sent.append(message)
            self.sock.sendall(struct.pack(">H", len(message)) + message)

    def run(self, hs: Handshake) -> Handshake:
        """Drive ``hs`` to done or failed: one framed message per receive() call."""
        self.send(hs.start())
        while not (hs.done or hs.failed):
            try:
                (size,) = struct.unpack(">H", recv_exact(self.sock, 2))
                message = recv_exact(self.sock, size)
            except EOFError:
                hs.receive_eof()
                break
            self.received.append(message)
            self.send(hs.receive(message))
        if hs.done:
            self.rest = hs.result.leftover
        return hs

    def send_frame(self, payload: bytes) -> None:
        self.sock.sendall(struct.pack(">I", len(payload)) + payload)

    def serve_until_closed(self, deadline: float) -> list[bytes]:
        """Read distribution frames until the peer closes; answer ticks with ticks."""
        frames = []
        buf = self.rest
        while time.monotonic() < deadline:
            while len(buf) >= 4:
                (size,) = struct.unpack(">I", buf[:4])
                if len(buf) < 4 + size:
                    break
                frame, buf = buf[4:4 + size], buf[4 + size:]
                if size == 0:
                    self.send_frame(b"")
                else:
                    frames.append(frame)
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
        return frames


def names() -> tuple[str, str, str]:
    tag = secrets.token_hex(4)
    return f"e_{tag}@{HOST}", f"py_{tag}", f"py_{tag}@{HOST}"


def failure_context(carrier: TcpCarrier | None, erl: Erl) -> str:
    lines = [f"erl output:\n{erl.output}"]
    if carrier is not None:
        lines.append(f"sent: {carrier.sent}\nreceived: {carrier.received}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Flag values


def test_flag_values_match_the_installed_otp(tmp_path: Path):
    """Every DFLAG_* of dist.hrl is a DistFlag member with the same value, and
    MANDATORY_25 is what dist.hrl and this emulator call mandatory."""
    out = subprocess.run([ERL, "-noshell", "-eval",
                          'io:format("~s~n", [code:lib_dir(kernel)]), halt().'],
                         capture_output=True, timeout=ERL_TIMEOUT, check=True)
    hrl = Path(out.stdout.decode().strip()) / "include" / "dist.hrl"
    text = hrl.read_text()
    defined = re.findall(r"^-define\(DFLAG_([A-Z0-9_]+),", text, re.MULTILINE)
    flags = [name for name in defined if name != "RESERVED"]
    assert flags, f"no DFLAG_ in {hrl}"
    rows = ",\n".join(f'{{"{name}", ?DFLAG_{name}}}' for name in flags)
    source = (
        "-module(qd_flags).\n-export([main/0]).\n"
        '-include_lib("kernel/include/dist.hrl").\n'
        f"main() ->\n    Rows = [{rows},\n"
        '{"MANDATORY_25", ?MANDATORY_DFLAGS_25}, {"RESERVED", ?DFLAG_RESERVED}],\n'
        "    Mandatory = element(3, erts_internal:get_dflags()),\n"
        '    [io:format("~s ~b~n", [N, V]) || {N, V} <- Rows],\n'
        '    io:format("ERTS_MANDATORY ~b~n", [Mandatory]).\n'
    )
    (tmp_path / "qd_flags.erl").write_text(source)
    subprocess.run([ERLC, "qd_flags.erl"], cwd=tmp_path, check=True, timeout=ERL_TIMEOUT,
                   capture_output=True)
    out = subprocess.run([ERL, "-noshell", "-pa", str(tmp_path), "-eval",
                          "qd_flags:main(), halt()."],
                         capture_output=True, timeout=ERL_TIMEOUT, check=True)
    values = {}
    for line in out.stdout.decode().splitlines():
        name, value = line.split()
        values[name] = int(value)
    for name in flags:
        assert DistFlag[name].value == values[name], name
    assert values["MANDATORY_25"] == MANDATORY_25
    assert values["RESERVED"] == 0xF8000000
    # The emulator's own mandatory set (OTP 25: MANDATORY_25; OTP 26+: also
    # V4_NC and UNLINK_ID): quicdist offers all of it.
    assert values["ERTS_MANDATORY"] & ~QUICDIST_FLAGS == 0
    assert values["ERTS_MANDATORY"] & MANDATORY_25 == MANDATORY_25


# ---------------------------------------------------------------------------
# Python dials erl


WAIT_FOR_US = """
register(probe, self()),
io:format("READY~n"),
Py = '{py}',
Wait = fun W(0) -> timeout; W(N) ->
    case lists:member(Py, nodes()) of true -> ok; false -> timer:sleep(20), W(N - 1) end
end,
R = Wait(400),
io:format("NODES ~p ~p~n", [R, nodes()]),
receive M -> io:format("GOT ~p~n", [M]) after 5000 -> io:format("NOMSG~n") end,
halt().
"""


def dial(erl: Erl, alive: str, hs: Handshake) -> TcpCarrier:
    port = epmd_port_of(alive, time.monotonic() + ERL_TIMEOUT)
    sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
    carrier = TcpCarrier(sock)
    carrier.run(hs)
    return carrier


def test_python_dials_erl(epmd, erl_nodes):
    erl_name, _, py_name = names()
    cookie = secrets.token_hex(8)
    erl = erl_nodes(erl_name, cookie, WAIT_FOR_US.format(py=py_name))
    # epmd knows erl before its -eval runs: wait until 'probe' is registered,
    # or our REG_SEND to it would be dropped.
    erl.wait_for("READY")
    creation = secrets.randbits(32) | 1
    hs = Handshake("dialer", node_name=py_name, cookie=cookie, creation=creation,
                   flags=VISIBLE, peer_name=erl_name)
    carrier = dial(erl, erl_name.partition("@")[0], hs)
    try:
        assert hs.done, f"{hs.error!r}\n{failure_context(carrier, erl)}"
        result = hs.result
        assert result.peer_name == erl_name
        assert hs.status == "ok"
        assert result.peer_flags & DistFlag.PUBLISHED
        assert result.our_flags & DistFlag.PUBLISHED
        assert result.our_flags & QUICDIST_FLAGS == QUICDIST_FLAGS
        # Not ours: negotiated away though erl offers them.
        assert result.peer_flags & DistFlag.DIST_HDR_ATOM_CACHE
        assert not result.our_flags & DistFlag.DIST_HDR_ATOM_CACHE
        assert not result.our_flags & DistFlag.FRAGMENTS
        assert result.peer_creation != 0
        # One real distribution message: REG_SEND {6, From, '', probe}, pass-through.
        me = Pid(py_name, 1, 0, creation)
        message = (Atom("hello_from"), Atom(py_name), b"over tcp")
        carrier.send_frame(b"p" + encode((6, me, Atom(""), Atom("probe"))) + encode(message))
        frames = carrier.serve_until_closed(time.monotonic() + ERL_TIMEOUT)
    finally:
        carrier.sock.close()
    output = erl.wait()
    assert f"NODES ok ['{py_name}']" in output, failure_context(carrier, erl)
    assert f"GOT {{hello_from,'{py_name}',<<\"over tcp\">>}}" in output, output
    # What erl sent us after the handshake is distribution in the pass-through
    # form (no atom-cache header: we did not offer it): 'p', then the control
    # tuple (for a visible node: rex's features_request, global's init_connect).
    controls = []
    for frame in frames:
        assert frame[:1] == b"p", frame[:20]
        control, _ = decode_from(frame, 1)
        controls.append(control)
    assert all(isinstance(c, tuple) for c in controls), controls


def test_python_dials_erl_with_the_wrong_cookie(epmd, erl_nodes):
    erl_name, _, py_name = names()
    erl = erl_nodes(erl_name, "right_cookie", "timer:sleep(20000), halt().")
    hs = Handshake("dialer", node_name=py_name, cookie="wrong_cookie", creation=7,
                   flags=VISIBLE, peer_name=erl_name)
    carrier = dial(erl, erl_name.partition("@")[0], hs)
    carrier.sock.close()
    erl.wait_for("Invalid challenge reply")  # erl's error report; then it can go
    erl.close()
    assert hs.failed, failure_context(carrier, erl)
    assert isinstance(hs.error, AuthenticationError), repr(hs.error)
    assert hs.error.stage == "challenge_ack"
    assert hs.error.peer == erl_name
    # We got as far as sending our reply; erl never acknowledged it.
    assert carrier.sent[-1][:1] == b"r" and all(m[:1] != b"a" for m in carrier.received)
    assert py_name in erl.output, erl.output  # "Connection attempt from node py_... rejected"


# ---------------------------------------------------------------------------
# erl dials Python


CONNECT = """
R = net_kernel:connect_node('{py}'),
io:format("CONNECT ~p ~p~n", [R, nodes([visible, hidden])]),
halt().
"""


def accept(server: socket.socket, erl: Erl) -> socket.socket:
    """The connection erl makes to our listener (bounded by IO_TIMEOUT)."""
    try:
        sock, _ = server.accept()
    except TimeoutError:
        erl.close()
        pytest.fail(f"erl did not connect within {IO_TIMEOUT} s\n{erl.output}")
    return sock


def listen(alive: str) -> tuple[socket.socket, socket.socket, int]:
    server = socket.create_server((HOST, 0))
    server.settimeout(IO_TIMEOUT)
    registration, creation = epmd_register(alive, server.getsockname()[1])
    return server, registration, creation


def test_erl_dials_python(epmd, erl_nodes):
    erl_name, py_alive, py_name = names()
    cookie = secrets.token_hex(8)
    server, registration, creation = listen(py_alive)
    seen = []
    try:
        erl = erl_nodes(erl_name, cookie, CONNECT.format(py=py_name))
        sock = accept(server, erl)
        hs = Handshake("listener", node_name=py_name, cookie=cookie, creation=creation,
                       flags=VISIBLE,
                       accept=lambda name, flags: seen.append((name, flags)) or "ok")
        carrier = TcpCarrier(sock)
        try:
            carrier.run(hs)
            assert hs.done, f"{hs.error!r}\n{failure_context(carrier, erl)}"
            carrier.serve_until_closed(time.monotonic() + ERL_TIMEOUT)
        finally:
            sock.close()
        output = erl.wait()
    finally:
        server.close()
        registration.close()
    assert seen and seen[0][0] == erl_name
    assert carrier.received[0][:1] == b"N"  # OTP 25 sends the new send_name
    assert [m[:1] for m in carrier.sent] == [b"s", b"N", b"a"]
    assert carrier.sent[0] == b"sok"
    assert hs.result.peer_name == erl_name
    assert hs.result.peer_flags & MANDATORY_25 == MANDATORY_25
    assert f"CONNECT true ['{py_name}']" in output, failure_context(carrier, erl)


def test_erl_dials_python_with_the_wrong_cookie(epmd, erl_nodes):
    erl_name, py_alive, py_name = names()
    server, registration, creation = listen(py_alive)
    try:
        erl = erl_nodes(erl_name, "their_cookie", CONNECT.format(py=py_name))
        sock = accept(server, erl)
        hs = Handshake("listener", node_name=py_name, cookie="our_cookie",
                       creation=creation, flags=VISIBLE)
        carrier = TcpCarrier(sock)
        try:
            carrier.run(hs)
        finally:
            sock.close()
        output = erl.wait()
    finally:
        server.close()
        registration.close()
    assert hs.failed, failure_context(carrier, erl)
    assert isinstance(hs.error, AuthenticationError), repr(hs.error)
    assert hs.error.stage == "challenge_reply"
    assert hs.error.peer == erl_name
    assert all(m[:1] != b"a" for m in carrier.sent)  # nothing after the failure
    assert "CONNECT false []" in output, failure_context(carrier, erl)
