"""The carrier's cheaper steady state: the pacer's burst, the pruned send
queue, and accepted connections reading a connected socket of their own.

Sans-I/O where the property is about aioquic state (make_link from
test_protocol), real sockets on 127.0.0.1 where it is about the kernel.
"""

from __future__ import annotations

import errno
import os

import pytest
from aioquic.quic.recovery import QuicPacketPacer

from quicdist.certs import make_ca, make_node_cert
from quicdist.config import CarrierConfig
from quicdist.events import HandshakeCompleted, UserStreamData, UserStreamReset
from quicdist.layout import reserved_streams
from quicdist.protocol import BurstPacer, BytesOutbox
from quicdist.sync import Listener, connect
from tests.node_fixtures import tls_config
from tests.quic_harness import S2C
from tests.test_carrier import TIMEOUT, events_until
from tests.test_protocol import Certs, attach_dist_outbox, make_link, open_user


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    d = tmp_path_factory.mktemp("steady-certs")
    ca = make_ca(d)
    return Certs(client=tls_config(make_node_cert(d, "client@127.0.0.1", ca), ca),
                 server=tls_config(make_node_cert(d, "server@127.0.0.1", ca), ca),
                 stranger=tls_config(make_node_cert(d, "x@127.0.0.1", ca), ca))


MDS = 1452


# --------------------------------------------------------------------------
# The pacer
# --------------------------------------------------------------------------

def burst(pacer: QuicPacketPacer, now: float) -> int:
    """Packets the pacer lets out at one instant (the clock does not move
    within one datagrams_to_send call)."""
    pacer.update_bucket(now=now)
    count = 0
    while pacer.next_send_time(now=now) is None and count < 1000:
        pacer.update_after_send(now=now)
        count += 1
    return count


@pytest.mark.parametrize("cwnd, srtt", [
    (34_000_000, 0.001),   # loopback after slow start: ~34 GB/s
    (8_000_000, 0.0001),
    (200_000_000, 0.001),
])
def test_the_burst_holds_packets_even_at_rates_past_the_per_packet_floor(cwnd, srtt):
    ours = BurstPacer(max_datagram_size=MDS)
    theirs = QuicPacketPacer(max_datagram_size=MDS)
    for pacer in (ours, theirs):
        pacer.update_rate(cwnd, srtt)
    # aioquic's floor of 1 µs per packet leaves its bucket under one packet
    # (the condition the subclass exists for) ...
    assert burst(theirs, 10.0) <= 1
    # ... while ours lets out the 16 packets aioquic's arithmetic asks for.
    assert burst(ours, 10.0) == 16


@pytest.mark.parametrize("cwnd, srtt", [(14_520, 0.1), (1_000_000, 0.05), (100_000, 0.001)])
def test_below_the_floor_the_pacer_is_aioquics(cwnd, srtt):
    ours = BurstPacer(max_datagram_size=MDS)
    theirs = QuicPacketPacer(max_datagram_size=MDS)
    for pacer in (ours, theirs):
        pacer.update_rate(cwnd, srtt)
    assert (ours.bucket_max, ours.packet_time) == (theirs.bucket_max, theirs.packet_time)
    assert burst(ours, 5.0) == burst(theirs, 5.0)


def test_one_send_call_builds_a_burst_on_a_fast_path(certs):
    """End to end through aioquic: with a loopback-sized window and RTT one
    datagrams_to_send() call gives many packets, not one."""
    link = make_link(certs, CarrierConfig(pmtu_discovery=False))
    client = link.client
    loss = client.quic._loss
    loss._cc.congestion_window = 34_000_000
    loss._pacer.update_rate(34_000_000, 0.001)
    open_user(client, os.urandom(256 * 1024), fin=True)
    now = link.now + 1.0
    loss._pacer.update_bucket(now=now)
    assert len(client.datagrams_to_send(now)) >= 16


# --------------------------------------------------------------------------
# The pruned send queue
# --------------------------------------------------------------------------

def queued_ids(protocol, now: float) -> list[int]:
    """The streams in aioquic's send queue, once a send call had the chance
    to prune the idle ones (it does so lazily, when it builds packets)."""
    assert protocol.datagrams_to_send(now) == []
    return [stream.stream_id for stream in protocol.quic._streams_queue]


def test_idle_streams_leave_the_send_queue_and_come_back_with_data(certs):
    link = make_link(certs, CarrierConfig(pmtu_discovery=False))
    client, server = link.client, link.server
    outbox = attach_dist_outbox(client)
    outbox.put(b"hello")
    link.run()
    reserved = reserved_streams(True)
    assert set(reserved) <= set(client.quic._streams)  # the streams exist ...
    assert queued_ids(client, link.now) == []                    # ... but none waits to send
    # New data puts the distribution stream back, at the front, and it leaves.
    for i in range(50):
        outbox.put(b"m%d" % i)
    link.run()
    frames = [f for e in link.events("server") if type(e).__name__ == "DistFrames"
              for f in e.frames]
    assert frames == [b"hello"] + [b"m%d" % i for i in range(50)]
    assert queued_ids(client, link.now) == []
    assert queued_ids(server, link.now) == []


def test_a_stop_sending_for_a_pruned_stream_is_answered_with_a_reset(certs):
    link = make_link(certs, CarrierConfig(pmtu_discovery=False))
    client, server = link.client, link.server
    sid, _outbox = open_user(client, b"data, then silence")
    link.run()
    assert sid not in queued_ids(client, link.now)  # all acked, no FIN: idle
    server.quic.stop_stream(sid, 0x77)
    link.run()
    resets = [e for e in link.events("server") if isinstance(e, UserStreamReset)]
    assert resets and resets[-1].stream_id == sid and resets[-1].code == 0x77


def test_streams_finished_both_ways_are_discarded_and_the_peer_may_open_more(certs):
    """Discarding needs the stream in the queue when it finishes; the peer's
    stream count (MAX_STREAMS) only grows back if it is."""
    link = make_link(certs, CarrierConfig(pmtu_discovery=False))
    client, server = link.client, link.server
    limit = client.quic._remote_max_streams_bidi
    for _ in range(limit + 20):
        sid, _ = open_user(client, b"x", fin=True)
        link.run()
        server.set_outbox(sid, _finished_outbox(), 128)
        server.outbox_ready(sid)
        link.run()
    assert len(client.quic._streams) <= 10
    assert len(server.quic._streams) <= 10
    got = [e for e in link.events("server") if isinstance(e, UserStreamData) and e.fin]
    assert len(got) == limit + 20


def _finished_outbox() -> BytesOutbox:
    return BytesOutbox(b"", fin=True)


def test_lost_credit_is_sent_again(certs):
    """A MAX_STREAM_DATA frame that is lost is resent, though the stream's
    credit is only looked at when it changed or its frame was lost.

    The loss is found by later packets being acknowledged (not by a probe
    timeout, whose probe aioquic builds itself, visiting every stream)."""
    window = 64 * 1024
    config = CarrierConfig(pmtu_discovery=False, stream_window=window,
                           connection_window=16 * window)
    link = make_link(certs, config)
    client, server = link.client, link.server
    dropping: list[bool] = []
    dropped: list[int] = []

    def drop(direction, index, datagram):
        if direction == S2C and dropping:
            dropping.clear()  # just the one carrying the new credit
            dropped.append(index)
            return True
        return False

    link.pair.wire.drop = drop
    payload = os.urandom(4 * window)
    sid, _ = open_user(client, payload, fin=True)
    link.run(max_rounds=4000)  # the first window arrives; the sender blocks
    received = bytearray()

    def collect() -> None:
        for event in link.events("server"):
            if isinstance(event, UserStreamData) and event.stream_id == sid:
                received.extend(event.data)
        link.pair.server_events.clear()

    collect()
    assert len(received) == window
    server.consume(sid, window)  # one grant: credit up to two windows ...
    dropping.append(True)
    link.step(S2C)               # ... in a datagram that is lost
    assert dropped and not dropping
    replies = attach_dist_outbox(server)
    for i in range(6):           # later packets, acknowledged: the loss shows
        replies.put(b"r%d" % i)
        link.step(S2C)
    link.run(max_rounds=4000)
    collect()
    assert len(received) == 2 * window
    assert bytes(received) == payload[:2 * window]


# --------------------------------------------------------------------------
# Connected sockets for accepted connections
# --------------------------------------------------------------------------

def accepted_pair(tls_a, tls_b, config=None, host="127.0.0.1"):
    listener = Listener(host, 0, tls=tls_a, config=config)
    client = connect("127.0.0.1", listener.port, tls=tls_b, config=config, timeout=TIMEOUT)
    server = listener.accept(timeout=TIMEOUT)
    assert isinstance(server.next_event(TIMEOUT), HandshakeCompleted)
    assert isinstance(client.next_event(TIMEOUT), HandshakeCompleted)
    return listener, client, server


def exchange(client, server, count: int) -> None:
    for i in range(count):
        client.send_dist(b"c%d" % i)
    frames: list[bytes] = []
    while len(frames) < count:
        frames += events_until(server, lambda e: True)[-1].frames
    assert frames == [b"c%d" % i for i in range(count)]
    server.send_dist(b"done")
    assert events_until(client, lambda e: True)[-1].frames == [b"done"]


def test_an_accepted_connection_reads_its_own_connected_socket(certs, no_leaks):
    listener, client, server = accepted_pair(certs.server, certs.client)
    try:
        assert server._own_sock is not None
        assert server._own_sock.getpeername() == client._sock.getsockname()
        assert server._own_sock.getsockname() == listener._sock.getsockname()
        before = listener._udp.recv_calls
        exchange(client, server, 2000)
        # The peer's datagrams went to the connection's socket, not the listener's.
        assert server._udp.recv_calls > 0
        assert listener._udp.recv_calls == before
    finally:
        client.close()
        listener.stop()


def test_without_connected_sockets_the_listener_routes_everything(certs,
                                                                  no_leaks):
    config = CarrierConfig(connected_sockets=False)
    listener, client, server = accepted_pair(certs.server, certs.client, config)
    try:
        assert server._own_sock is None
        before = listener._udp.recv_calls
        exchange(client, server, 500)
        assert listener._udp.recv_calls > before
    finally:
        client.close()
        listener.stop()


def test_a_wildcard_listener_connects_from_the_routes_address(certs, no_leaks):
    # The connected socket binds to where the kernel's route to the peer
    # starts (127.0.0.1 here): where the listener's own answers come from.
    listener, client, server = accepted_pair(certs.server, certs.client, host="0.0.0.0")
    try:
        assert server._own_sock is not None
        assert server._own_sock.getsockname() == ("127.0.0.1", listener.port)
        before = listener._udp.recv_calls
        exchange(client, server, 500)
        assert listener._udp.recv_calls == before
    finally:
        client.close()
        listener.stop()


def test_a_taken_port_still_refuses_a_second_listener(certs, no_leaks):
    """SO_REUSEPORT is set after the bind, so binding a listener's port stays exclusive."""
    with Listener("127.0.0.1", 0, tls=certs.server) as listener:
        with pytest.raises(OSError) as info:
            Listener("127.0.0.1", listener.port, tls=certs.server)
        assert info.value.errno == errno.EADDRINUSE


# --------------------------------------------------------------------------
# Skipping send calls that could not send anything
# --------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_skipped_send_call_never_hides_a_packet(certs, seed):
    """Whenever the protocol skips aioquic's datagrams_to_send (nothing to
    feed, CarrierConnection.nothing_to_send), aioquic's own call would have
    built nothing and discarded no stream: checked at every call of a lossy, reordering exchange of
    distribution messages, user streams, FINs, resets and credit."""
    import random

    from aioquic.quic.connection import QuicConnection

    from tests.quic_harness import Wire

    rng = random.Random(seed)
    wire = Wire(drop=lambda _d, _i, _data: rng.random() < 0.05,
                reorder=lambda _d, ds: rng.sample(ds, len(ds)))
    window = 32 * 1024
    link = make_link(certs, CarrierConfig(pmtu_discovery=False, stream_window=window,
                                          connection_window=8 * window), wire=wire)
    checked = [0, 0]  # skipped calls checked, calls made

    def guard(protocol):
        real = protocol.datagrams_to_send

        def datagrams_to_send(now):
            quic = protocol.quic
            if (not protocol._control and not protocol._scheduler.active
                    and protocol._mtu_next is None and quic.nothing_to_send(now)):
                checked[0] += 1
                streams = set(quic._streams)
                assert QuicConnection.datagrams_to_send(quic, now) == []
                assert set(quic._streams) == streams  # no discard was due either
            checked[1] += 1
            return real(now)

        protocol.datagrams_to_send = datagrams_to_send

    guard(link.client)
    guard(link.server)
    client_out = attach_dist_outbox(link.client)
    server_out = attach_dist_outbox(link.server)
    streams = []
    for round_ in range(6):
        for i in range(50):
            client_out.put(b"c%d.%d" % (round_, i))
            server_out.put(b"s%d.%d" % (round_, i))
        sid, _ = open_user(link.client, os.urandom(rng.randrange(1, 3 * window)),
                           fin=rng.random() < 0.5)
        streams.append(sid)
        if round_ % 2:
            link.client.quic.reset_stream(streams[0], 0x5)
        link.run(max_rounds=20000)
        for event in link.events("server"):
            if isinstance(event, UserStreamData) and event.data:
                link.server.consume(event.stream_id, len(event.data))
        link.pair.server_events.clear()
        link.run(max_rounds=20000)
    assert wire.dropped
    assert checked[0] > 50 and checked[1] > checked[0]


def test_a_peer_that_moves_is_followed_off_the_connected_socket(certs, no_leaks):
    """A NAT rebinding: the client's datagrams come from a new address. They
    reach the listener's socket (the connected one is bound to the old
    address), are routed by connection ID, and the server answers the new
    address from the shared socket once aioquic validated the path."""
    from tests.lossy_relay import LossyRelay

    listener = Listener("127.0.0.1", 0, tls=certs.server)
    relay = LossyRelay(("127.0.0.1", listener.port))
    try:
        client = connect("127.0.0.1", relay.port, tls=certs.client, timeout=TIMEOUT)
        try:
            server = listener.accept(timeout=TIMEOUT)
            assert isinstance(server.next_event(TIMEOUT), HandshakeCompleted)
            assert isinstance(client.next_event(TIMEOUT), HandshakeCompleted)
            exchange(client, server, 100)
            assert server._own_sock is not None
            old = server._own_sock.getpeername()
            routed = listener._udp.recv_calls
            new_port = relay.rebind()
            assert new_port != old[1]
            exchange(client, server, 500)
            assert listener._udp.recv_calls > routed  # the new address came this way
            assert server.protocol.quic._network_paths[0].addr[1] == new_port
        finally:
            client.close()
    finally:
        relay.stop()
        listener.stop()
