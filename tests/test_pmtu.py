"""Path-MTU discovery of the carrier, sans I/O (simulated clock, in-memory wire).

Two CarrierProtocols exchange datagrams through a "path" that drops every
datagram larger than its MTU, like a real link with DF set.
"""

from __future__ import annotations

import pytest

from quicdist.config import CarrierConfig
from quicdist.events import HandshakeCompleted, UserStreamData
from quicdist.protocol import BytesOutbox, CarrierConnection, CarrierProtocol
from quicdist.tls import quic_configuration
from tests.node_fixtures import dev_tls


CLIENT_ADDR = ("10.0.0.1", 1111)
SERVER_ADDR = ("10.0.0.2", 4433)


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return dev_tls(tmp_path_factory.mktemp("pmtu-certs"), "c", "s")


class Path:
    """Both protocols, a simulated clock, and a path with an MTU."""

    def __init__(self, tls, config: CarrierConfig, mtu: int, server_config=None):
        client_tls, server_tls = tls
        server_config = server_config or config

        def make(tls_config, cfg, is_client, **kw):
            conf = quic_configuration(tls_config, is_client=is_client,
                                      max_datagram_size=cfg.max_datagram_size,
                                      max_data=cfg.connection_window,
                                      max_stream_data=cfg.stream_window)
            return CarrierProtocol(CarrierConnection(configuration=conf, **kw), cfg)

        self.now = 0.0
        self.mtu = mtu
        self.client = make(client_tls, config, True)
        self.client.connect(SERVER_ADDR, self.now)
        self.server = make(server_tls, server_config, False,
                           original_destination_connection_id=self.client.quic.original_destination_connection_id)
        self.sizes: list[int] = []
        self.dropped = 0
        self.events = {"client": [], "server": []}

    def run(self, rounds=400, until=None, horizon=5.0):
        for _ in range(rounds):
            moved = 0
            for src, dst, addr in ((self.client, self.server, CLIENT_ADDR),
                                   (self.server, self.client, SERVER_ADDR)):
                for data, _ in src.datagrams_to_send(self.now):
                    self.sizes.append(len(data))
                    if len(data) > self.mtu:
                        self.dropped += 1
                        continue
                    dst.receive_datagram(data, addr, self.now)
                    moved += 1
            for side, proto in (("client", self.client), ("server", self.server)):
                self.events[side] += proto.next_events()
            if until is not None and until():
                return
            if not moved:
                timers = [t for t in (self.client.get_timer(), self.server.get_timer())
                          if t is not None]
                if not timers or min(timers) - self.now > horizon:
                    return  # only keep-alive and idle timers left: settled
                self.now = max(self.now, min(timers))
                for proto in (self.client, self.server):
                    timer = proto.get_timer()
                    if timer is not None and timer <= self.now:
                        proto.handle_timer(self.now)
        raise AssertionError("did not settle")

    def settled(self):
        return all(p.quic.mtu_probe is None and p._mtu_next is None
                   and (p._mtu_probes_left == 0 or p._mtu_ceiling() - p.datagram_size < 256)
                   for p in (self.client, self.server))


def connected(path: Path) -> Path:
    path.run(until=lambda: any(isinstance(e, HandshakeCompleted) for e in path.events["client"]))
    return path


def test_discovers_the_largest_size_the_path_carries(tls):
    path = connected(Path(tls, CarrierConfig(), mtu=16384))
    path.run(until=path.settled)
    # Within one search step of the path MTU (congestion control limits
    # how big the first probes may be).
    for proto in (path.client, path.server):
        assert 16384 - 256 < proto.datagram_size <= 16384
    assert max(path.sizes) <= 16384


def test_a_smaller_path_mtu_is_found_by_search_without_losing_data(tls):
    path = connected(Path(tls, CarrierConfig(), mtu=9000))
    path.run(until=path.settled)
    assert 4000 < path.client.datagram_size <= 9000
    assert path.dropped > 0  # the first probes were too big
    # Bulk data still arrives intact at the discovered size.
    outbox = BytesOutbox(bytes(range(256)) * 4096, fin=True)
    sid = path.client.open_user_stream(outbox)
    path.client.outbox_ready(sid)
    got = bytearray()

    def done():
        for event in path.events["server"]:
            if isinstance(event, UserStreamData) and event.stream_id == sid:
                got.extend(event.data)
                path.server.consume(sid, len(event.data))
                if event.fin:
                    return True
        path.events["server"].clear()
        return False

    path.run(rounds=5000, until=done)
    assert bytes(got) == bytes(range(256)) * 4096


def test_no_discovery_when_disabled(tls):
    config = CarrierConfig(pmtu_discovery=False)
    path = connected(Path(tls, config, mtu=16384))
    path.run()
    assert path.client.datagram_size == 1452 and max(path.sizes) <= 1452


def test_never_above_the_peers_max_udp_payload_size(tls):
    path = Path(tls, CarrierConfig(), mtu=16384)
    # An Erlang peer announces max_udp_payload_size 1452; make the client
    # see exactly that once the transport parameters arrive.
    original = path.client.quic._parse_transport_parameters

    def parse(data, from_session_ticket=False):
        original(data, from_session_ticket)
        path.client.quic.peer_max_udp_payload = 1452

    path.client.quic._parse_transport_parameters = parse
    connected(path)
    path.run(until=path.settled)
    assert path.client.datagram_size == 1452
    assert path.server.datagram_size == 16384


def test_kernel_path_mtu_caps_the_search(tls):
    path = connected(Path(tls, CarrierConfig(), mtu=16384))
    path.client.set_path_mtu(4000)
    path.run(until=path.settled)
    assert path.client.datagram_size <= 4000


def test_a_shrinking_path_falls_back_without_stalling(tls):
    path = connected(Path(tls, CarrierConfig(), mtu=16384))
    path.run(until=path.settled)
    assert path.client.datagram_size > 16000
    path.mtu = 1500  # the route changed: large datagrams now vanish
    outbox = BytesOutbox(b"x" * 300_000, fin=True)
    sid = path.client.open_user_stream(outbox)
    path.client.outbox_ready(sid)
    received = 0

    def done():
        nonlocal received
        for event in path.events["server"]:
            if isinstance(event, UserStreamData) and event.stream_id == sid:
                received += len(event.data)
                path.server.consume(sid, len(event.data))
                if event.fin:
                    return True
        path.events["server"].clear()
        return False

    path.run(rounds=20000, until=done)
    assert received == 300_000
    assert path.client.datagram_size == 1452
    assert path.client.closed is None
