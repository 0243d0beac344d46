"""The carrier through a lossy, reordering UDP relay (tests/lossy_relay.py).

A real Listener and connect() on 127.0.0.1, every datagram passing a relay
that drops a seeded fraction of them and delivers some late. Whatever the
network does, a user stream's bytes, the distribution messages and the
control messages arrive intact and in order.

Every wait is on an event or a queue with a timeout; every loop is bounded.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

import pytest

from quicdist.config import CarrierConfig
from quicdist.errors import QuicDistTimeoutError
from quicdist.events import (
    ConnectionTerminated,
    ControlData,
    DistFrames,
    HandshakeCompleted,
    UserStreamData,
)
from quicdist.sync import Listener, connect
from quicdist.tls import TLSConfig

from .lossy_relay import C2T, T2C, LossyRelay
from .node_fixtures import dev_tls


TIMEOUT = 10.0 * float(os.environ.get("QUICDIST_TESTS_TIMEOUT_FACTOR", "1"))
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> tuple[TLSConfig, ...]:
    return dev_tls(tmp_path_factory.mktemp("loss-certs"), "a@127.0.0.1", "b@127.0.0.1")


# --------------------------------------------------------------------------
# The relay itself
# --------------------------------------------------------------------------

def test_the_relay_drops_and_reorders_a_seeded_fraction(no_leaks):
    target = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for sock in (target, client):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MIB)
            sock.bind(("127.0.0.1", 0))
        count = 2000
        got: list[int] = []
        with LossyRelay(target.getsockname(), loss=0.1, reorder=0.1, seed=3) as relay:
            target.setblocking(False)
            relay_addr = None  # where the relay's datagrams come from
            for batch in range(0, count, 50):
                for i in range(batch, batch + 50):
                    client.sendto(i.to_bytes(4, "big"), ("127.0.0.1", relay.port))
                while True:  # what came through so far, without waiting
                    try:
                        data, relay_addr = target.recvfrom(64)
                    except BlockingIOError:
                        break
                    got.append(int.from_bytes(data, "big"))
            # Then whatever is still on its way: the end is a quiet half second.
            target.settimeout(0.5)
            for _ in range(count):
                try:
                    data, relay_addr = target.recvfrom(64)
                except TimeoutError:
                    break
                got.append(int.from_bytes(data, "big"))
            assert relay_addr is not None and relay_addr[1] != relay.port
            # A reply from the target reaches the client through the same relay.
            client.settimeout(1.0)
            replies = []
            for _ in range(20):  # the reply may be dropped: send until one passes
                target.sendto(b"reply", relay_addr)
                try:
                    replies.append(client.recv(64))
                    break
                except TimeoutError:
                    pass
            stats = relay.stats
        assert not relay.thread.is_alive()
        assert replies == [b"reply"]
        assert stats.received[C2T] == count
        assert stats.dropped[C2T] + stats.forwarded[C2T] + stats.send_errors[C2T] == count
        assert 0.07 * count < stats.dropped[C2T] < 0.13 * count, stats
        assert stats.reordered[C2T] > 0.05 * count, stats
        assert stats.received[T2C] >= 1
        assert len(got) == stats.forwarded[C2T] and len(set(got)) == len(got)
        inversions = sum(1 for a, b in zip(got, got[1:], strict=False) if b < a)
        assert inversions > 0.03 * count, inversions
    finally:
        target.close()
        client.close()


def test_the_relay_drops_the_same_indices_for_the_same_seed(no_leaks):
    def dropped(seed: int) -> list[bool]:
        relay = LossyRelay(("127.0.0.1", 9), loss=0.2, seed=seed)
        relay.stop()  # only its random generators are used below
        return [relay._rng[C2T].random() < 0.2 for _ in range(200)]

    assert dropped(1) == dropped(1) != dropped(2)


# --------------------------------------------------------------------------
# The carrier through it
# --------------------------------------------------------------------------

class Writer(threading.Thread):
    """Writes a user stream's payload (blocking writes) on its own thread."""

    def __init__(self, outbox, payload: bytes) -> None:
        super().__init__(name="test-writer", daemon=True)
        self.outbox = outbox
        self.payload = payload
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            view = memoryview(self.payload)
            for start in range(0, len(view), 256 * 1024):
                last = start + 256 * 1024 >= len(view)
                self.outbox.write(view[start:start + 256 * 1024], fin=last, timeout=TIMEOUT * 6)
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()


@pytest.mark.parametrize("loss, seed, pmtu", [
    (0.01, 101, False),
    (0.05, 105, False),
    (0.01, 201, True),
    (0.05, 205, True),
], ids=["loss1-1452", "loss5-1452", "loss1-pmtu", "loss5-pmtu"])
def test_everything_arrives_intact_and_in_order_through_loss(tls, no_leaks, loss, seed, pmtu):
    """With path-MTU discovery off every datagram is at most 1452 bytes (a few
    thousand of them); with it on, loopback lets them grow to 16 KiB and the
    probes themselves get lost too."""
    server_tls, client_tls = tls
    # 16 KiB datagrams: send more, so that enough of them cross the relay.
    size = 16 * MIB if pmtu else 4 * MIB
    messages = 5000
    reorder = 0.03
    config = CarrierConfig(idle_timeout=60.0, handshake_timeout=TIMEOUT, pmtu_discovery=pmtu)
    payload = os.urandom(size)
    controls = [b"N" + bytes(14) + b"b@127.0.0.1", b"sok", b"r" + os.urandom(20)]
    controls += [b"\x00\x00\x00\x00"] * 5
    started = time.monotonic()
    with Listener("127.0.0.1", 0, tls=server_tls, config=config) as listener, \
            LossyRelay(("127.0.0.1", listener.port), loss=loss, reorder=reorder,
                       seed=seed) as relay:
        client = connect("127.0.0.1", relay.port, tls=client_tls, config=config,
                         timeout=TIMEOUT * 2)
        writer = None
        try:
            server = listener.accept(timeout=TIMEOUT)
            assert isinstance(server.next_event(TIMEOUT), HandshakeCompleted)
            assert isinstance(client.next_event(TIMEOUT), HandshakeCompleted)

            for m in controls:
                client.send_control(m)
            sid, outbox = client.open_stream(priority=200)
            writer = Writer(outbox, payload)
            writer.start()
            c2s = [b"c%05d" % i + bytes(i % 97) for i in range(messages)]
            s2c = [b"s%05d" % i + bytes(i % 89) for i in range(messages)]
            for m in c2s:
                client.send_dist(m, timeout=TIMEOUT)

            # The server side: read everything, consuming the user stream as it comes.
            control = b""
            frames: list[bytes] = []
            sha = hashlib.sha256()
            received = 0
            fin = False
            answered = False
            deadline = time.monotonic() + TIMEOUT * 6
            control_size = len(b"".join(controls))
            while not (fin and len(frames) >= messages and len(control) >= control_size):
                assert time.monotonic() < deadline, (received, len(frames), len(control),
                                                     relay.stats)
                event = server.next_event(TIMEOUT)
                if isinstance(event, ControlData):
                    control += event.data
                    if not answered:  # stream 0 is open now: answer on it
                        server.send_control(b"sok")
                        server.send_control(b"N" + bytes(18) + b"a@127.0.0.1")
                        for m in s2c:
                            server.send_dist(m, timeout=TIMEOUT)
                        answered = True
                elif isinstance(event, DistFrames):
                    assert event.stream_id == 16
                    frames += event.frames
                elif isinstance(event, UserStreamData):
                    assert event.stream_id == sid and not fin
                    sha.update(event.data)
                    received += len(event.data)
                    server.consume(sid, len(event.data))
                    fin = event.fin
                else:
                    raise AssertionError(f"unexpected {event!r}")
            assert control == b"".join(controls)
            assert frames == c2s
            assert received == size and sha.digest() == hashlib.sha256(payload).digest()
            assert writer.done.wait(TIMEOUT) and writer.error is None, writer.error

            # The client side got the server's answer, in order.
            control = b""
            frames = []
            while len(frames) < messages or len(control) < 3 + 30:
                assert time.monotonic() < deadline, (len(frames), len(control), relay.stats)
                event = client.next_event(TIMEOUT)
                if isinstance(event, ControlData):
                    control += event.data
                elif isinstance(event, DistFrames):
                    assert event.stream_id == 13
                    frames += event.frames
                else:
                    raise AssertionError(f"unexpected {event!r}")
            assert control == b"sok" + b"N" + bytes(18) + b"a@127.0.0.1"
            assert frames == s2c
            assert client.closed is None and server.closed is None
        finally:
            client.close()
            if writer is not None:
                writer.join(TIMEOUT)
        stats = relay.stats
    elapsed = time.monotonic() - started
    sizes = (client.protocol.datagram_size, server.protocol.datagram_size)
    print(f"\nloss={loss:.0%} seed={seed} pmtu={pmtu} datagram sizes={sizes}: "
          f"{elapsed:.1f} s, relay {stats}")
    # The network really was lossy and out of order (both ways, where enough
    # datagrams went that way for the seeded draws to hit some).
    assert stats.total("dropped") >= 0.5 * loss * stats.total("received"), stats
    for direction in (C2T, T2C):
        if stats.received[direction] * loss >= 8:
            assert stats.dropped[direction] > 0, stats
        if stats.received[direction] * reorder >= 8:
            assert stats.reordered[direction] > 0, stats
    assert stats.dropped[C2T] > 0 and stats.reordered[C2T] > 0, stats
    if not pmtu:
        assert max(sizes) <= 1452
        assert stats.total("dropped") >= 20, stats


def test_a_connection_survives_a_burst_of_total_loss(tls, no_leaks):
    """Nothing gets through for a while (less than the idle timeout): the
    connection recovers and every message sent meanwhile arrives."""
    server_tls, client_tls = tls
    config = CarrierConfig(idle_timeout=30.0)
    with Listener("127.0.0.1", 0, tls=server_tls, config=config) as listener, \
            LossyRelay(("127.0.0.1", listener.port), seed=9) as relay:
        with connect("127.0.0.1", relay.port, tls=client_tls, config=config,
                     timeout=TIMEOUT) as client:
            server = listener.accept(timeout=TIMEOUT)
            assert isinstance(server.next_event(TIMEOUT), HandshakeCompleted)
            relay.loss = 0.999999  # a blackout
            for i in range(100):
                client.send_dist(b"during %d" % i)
            # Wait until the client has retransmitted into the void a few times.
            blackout_start = relay.stats.dropped[C2T]
            assert relay.wait_for(lambda st: st.dropped[C2T] >= blackout_start + 4, TIMEOUT), \
                relay.stats
            with pytest.raises(QuicDistTimeoutError):
                server.next_event(0)  # nothing got through the blackout
            relay.loss = 0.0
            frames: list[bytes] = []
            while len(frames) < 100:
                event = server.next_event(TIMEOUT)
                assert not isinstance(event, ConnectionTerminated), event
                if isinstance(event, DistFrames):
                    frames += event.frames
            assert frames == [b"during %d" % i for i in range(100)]
    assert relay.stats.dropped[C2T] >= 4
