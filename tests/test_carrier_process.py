"""The carrier between separate processes on 127.0.0.1 (peer: tests/carrier_peer.py).

Each peer process prints facts on stdout and reads commands on stdin; the
test waits for its lines with a timeout (a reader thread per process feeds a
queue) and always ends it: ``quit``, then a kill if it does not exit.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from quicdist.certs import make_ca, make_node_cert
from quicdist.config import CarrierConfig
from quicdist.errors import ConnectionClosedError
from quicdist.events import (
    ConnectionTerminated,
    ControlData,
    DistFrames,
    HandshakeCompleted,
    UserStreamData,
)
from quicdist.sync import Listener, connect
from quicdist.tls import TLSConfig
from tests.line_peer import LinePeer


pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(),
                                reason="needs Linux /proc")

TIMEOUT = 10.0 * float(os.environ.get("QUICDIST_TESTS_TIMEOUT_FACTOR", "1"))
PEER_SCRIPT = Path(__file__).with_name("carrier_peer.py")
MIB = 1024 * 1024


@dataclass(frozen=True)
class Certs:
    ours: TLSConfig
    peer_args: tuple[str, ...]


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    d = tmp_path_factory.mktemp("process-certs")
    ca = make_ca(d)
    ours = make_node_cert(d, "test@127.0.0.1", ca)
    peer = make_node_cert(d, "peer@127.0.0.1", ca)
    return Certs(
        ours=TLSConfig(str(ours.certfile), str(ours.keyfile), str(ca.certfile), "verify_peer"),
        peer_args=("--cert", str(peer.certfile), "--key", str(peer.keyfile),
                   "--ca", str(ca.certfile)),
    )


class Peer(LinePeer):
    """One tests/carrier_peer.py process."""

    def __init__(self, mode: str, certs: Certs, *args: str, lifetime: float = 90.0) -> None:
        super().__init__(PEER_SCRIPT, [mode, *certs.peer_args, *args, "--lifetime", str(lifetime)],
                         label=mode)
        self.mode = mode

    def memory(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) of the process, in bytes."""
        values = {}
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0]) * 1024
        return values["VmRSS"], values["VmHWM"]


@pytest.fixture
def peers(certs, no_leaks):
    """Start peers with ``peers(mode, *args)``; all are ended after the test."""
    started: list[Peer] = []

    def start(mode: str, *args: str) -> Peer:
        peer = Peer(mode, certs, *args)
        started.append(peer)
        return peer

    yield start
    for peer in started:
        peer.close()


def next_of(conn, cls, timeout=TIMEOUT):
    """The next event of type ``cls`` (others are returned too, in order)."""
    seen = []
    deadline = time.monotonic() + timeout
    for _ in range(1_000_000):
        event = conn.next_event(max(deadline - time.monotonic(), 0.0))
        seen.append(event)
        if isinstance(event, cls):
            return event, seen
    raise AssertionError(f"no {cls.__name__}")


# --------------------------------------------------------------------------
# (a) a plain exchange
# --------------------------------------------------------------------------

@pytest.mark.parametrize("peer_role", ["listens", "dials"])
def test_dist_frames_control_and_a_user_stream_echo_across_processes(certs, peers, peer_role):
    messages = 1000
    payload = os.urandom(3 * MIB)
    listener = None
    if peer_role == "listens":
        peer = peers("echo")
        port = int(peer.expect("PORT")[1])
        conn = connect("127.0.0.1", port, tls=certs.ours, timeout=TIMEOUT)
        assert next_of(conn, HandshakeCompleted)[0].peer_subject == "CN=peer@127.0.0.1"
        conn.send_control(b"hello")
        expected_control = b"hello"
        dist_stream = 13
    else:
        listener = Listener("127.0.0.1", 0, tls=certs.ours)
        peer = peers("echo", "--connect", str(listener.port))
        conn = listener.accept(timeout=TIMEOUT)
        assert next_of(conn, HandshakeCompleted)[0].peer_subject == "CN=peer@127.0.0.1"
        # Only the dialer may open stream 0: the peer said hello first.
        event, _ = next_of(conn, ControlData)
        assert event.data == b"peer-hello"
        conn.send_control(b"hello")
        expected_control = b"hello"
        dist_stream = 16
    try:
        sid, outbox = conn.open_stream()
        writer_error: list[BaseException] = []

        def write() -> None:
            try:
                for start in range(0, len(payload), 256 * 1024):
                    outbox.write(payload[start:start + 256 * 1024],
                                 fin=start + 256 * 1024 >= len(payload), timeout=TIMEOUT * 3)
            except BaseException as exc:
                writer_error.append(exc)

        writer = threading.Thread(target=write, name="test-writer", daemon=True)
        writer.start()
        sent = [b"m%d" % i + bytes(i % 50) for i in range(messages)]
        for m in sent:
            conn.send_dist(m, timeout=TIMEOUT)

        control = b""
        frames: list[bytes] = []
        echoed = hashlib.sha256()
        received = 0
        fin = False
        deadline = time.monotonic() + TIMEOUT * 6
        while not (fin and len(frames) >= messages and len(control) >= len(expected_control)):
            assert time.monotonic() < deadline, (len(frames), received, control)
            event = conn.next_event(TIMEOUT)
            if isinstance(event, ControlData):
                control += event.data
            elif isinstance(event, DistFrames):
                assert event.stream_id == dist_stream
                frames += event.frames
            elif isinstance(event, UserStreamData):
                assert event.stream_id == sid and not fin
                echoed.update(event.data)
                received += len(event.data)
                conn.consume(sid, len(event.data))
                fin = event.fin
            else:
                raise AssertionError(f"unexpected {event!r}")
        writer.join(TIMEOUT)
        assert not writer.is_alive() and not writer_error, writer_error
        assert control == expected_control
        assert frames == [b"echo:" + m for m in sent]
        assert received == len(payload)
        assert echoed.digest() == hashlib.sha256(payload).digest()
    finally:
        conn.close()
        if listener is not None:
            listener.stop()
    peer.expect("DONE")
    assert peer.close() == 0, peer.stderr()


# --------------------------------------------------------------------------
# (b) receive backpressure: bounded memory on both sides
# --------------------------------------------------------------------------

def test_a_reader_that_never_consumes_bounds_both_processes_memory(peers, capsys):
    total = 256 * MIB
    sink = peers("sink")
    port = sink.expect("PORT")[1]
    source = peers("source", "--connect", port)
    sid = int(source.expect("OPEN")[1])
    sink.expect("ACCEPTED")
    assert sid == 20
    before = {"sink": sink.memory(), "source": source.memory()}

    # 256 MiB toward a reader that grants no credit: the write blocks.
    started = time.monotonic()
    source.send(f"write {total} 3")
    words = source.expect("BLOCKED", timeout=3 + TIMEOUT)
    blocked_after = time.monotonic() - started
    lower, upper = int(words[1]), int(words[2])
    sink.send("stats")
    received = int(sink.expect("STATS")[1])
    after = {"sink": sink.memory(), "source": source.memory()}

    growth = {}
    for name in ("sink", "source"):
        rss0, _hwm0 = before[name]
        rss1, hwm1 = after[name]
        growth[name] = max(rss1, hwm1) - rss0
    with capsys.disabled():
        print(f"\n[backpressure] write of {total // MIB} MiB blocked after {blocked_after:.1f} s "
              f"with {lower / MIB:.1f}..{upper / MIB:.1f} MiB accepted, "
              f"{received / MIB:.2f} MiB delivered unread")
        for name in ("sink", "source"):
            (rss0, hwm0), (rss1, hwm1) = before[name], after[name]
            print(f"[backpressure] {name}: VmRSS {rss0 / MIB:.1f} -> {rss1 / MIB:.1f} MiB, "
                  f"VmHWM {hwm0 / MIB:.1f} -> {hwm1 / MIB:.1f} MiB, "
                  f"growth {growth[name] / MIB:.1f} MiB")
    # Nothing beyond the stream window reached the reader...
    assert 0 < received <= CarrierConfig().stream_window
    # ...the writer got only about window + send buffer + a congestion window in...
    assert upper < 32 * MIB, (lower, upper)
    # ...and neither process holds anything like the 256 MiB.
    assert growth["sink"] < 64 * MIB, growth
    assert growth["source"] < 64 * MIB, growth

    # Once the reader consumes, the rest of what was queued flows, intact.
    sink.send("consume")
    sink.expect("CONSUMING")
    source.send("fin")
    source.expect("FINSENT", timeout=TIMEOUT * 3)
    words = sink.expect("FIN", timeout=TIMEOUT * 3)
    delivered, verdict = int(words[1]), words[2]
    assert verdict == "ok"
    assert lower <= delivered <= upper and delivered > received, (lower, delivered, upper)
    assert sink.close() == 0, sink.stderr()
    assert source.close() == 0, source.stderr()


# --------------------------------------------------------------------------
# (c) a peer killed with SIGKILL
# --------------------------------------------------------------------------

@pytest.mark.parametrize("peer_role", ["listens", "dials"])
def test_a_killed_peer_ends_the_connection_within_the_idle_timeout(certs, peers, peer_role):
    idle = 2.0
    config = CarrierConfig(idle_timeout=idle)
    listener = None
    if peer_role == "listens":
        peer = peers("hold")
        port = int(peer.expect("PORT")[1])
        conn = connect("127.0.0.1", port, tls=certs.ours, config=config, timeout=TIMEOUT)
        peer.expect("ACCEPTED")
    else:
        listener = Listener("127.0.0.1", 0, tls=certs.ours, config=config)
        peer = peers("hold", "--connect", str(listener.port))
        conn = listener.accept(timeout=TIMEOUT)
        peer.expect("CONNECTED")
    try:
        assert isinstance(conn.next_event(TIMEOUT), HandshakeCompleted)
        killed = time.monotonic()
        os.kill(peer.pid, signal.SIGKILL)
        assert peer.proc.wait(TIMEOUT) == -signal.SIGKILL
        # Traffic toward the dead peer: retransmitted into the void, never blocking.
        for i in range(10):
            conn.send_dist(b"anyone there? %d" % i, timeout=TIMEOUT)
        event, _ = next_of(conn, ConnectionTerminated, timeout=2 * idle + TIMEOUT)
        elapsed = time.monotonic() - killed
        print(f"[sigkill] peer {peer_role}: connection ended {elapsed:.2f} s after the kill "
              f"(idle timeout {idle} s): {event.error}")
        assert isinstance(event.error, ConnectionClosedError), event.error
        assert conn.closed is event.error
        # The idle timer restarts at most once, on the first packet sent after
        # the last one received (RFC 9000 §10.1).
        assert elapsed < 2 * idle + 2.0, elapsed
        assert conn.join(TIMEOUT), "the I/O thread is still running"
        if listener is not None:
            # The listener forgot it and still accepts.
            assert conn not in listener.connections
            with connect("127.0.0.1", listener.port, tls=certs.ours, config=config,
                         timeout=TIMEOUT) as again:
                listener.accept(timeout=TIMEOUT).close()
                again.close()
    finally:
        conn.close()
        if listener is not None:
            listener.stop()
