"""An in-memory, sans-I/O harness for two aioquic ``QuicConnection``s.

No sockets, no threads, no wall clock: datagrams are handed from one
connection to the other in memory and time is a simulated ``now`` that only
moves when nothing is in flight, straight to the earliest ``get_timer()``.
Every loop is bounded by a round count.

API
---

``CLIENT_ADDR``, ``SERVER_ADDR``
    The fake addresses each side sees for the other.

``make_client(configuration, *, cls=QuicConnection, now=0.0, connect=True, **kwargs)``
    A client connection (``configuration.is_client`` must be True); with
    ``connect`` it has already called ``connect(SERVER_ADDR, now)``.

``make_server(configuration, client, *, cls=QuicConnection, **kwargs)``
    The server for ``client`` (same original destination connection id).

``client_and_server(client_configuration, server_configuration, *,``
``                  client_cls=..., server_cls=..., now=0.0, wire=None) -> Pair``
    Both, connected, wrapped in a :class:`Pair`.

``transfer(sender, receiver, now, *, wire=None) -> int``
    Moves every datagram ``sender`` has to send into ``receiver``, through
    ``wire`` (drop/reorder hooks); returns how many the sender emitted
    (dropped ones included).

``run_until_idle(client, server, *, now_start=0.0, max_rounds=200, horizon=10.0,``
``               wire=None, on_event=None, until=None) -> RunResult``
    Rounds of client->server then server->client transfers, popping events
    after each. When a round moves nothing, ``now`` jumps to the earliest
    timer and it is handled. Stops when nothing is in flight and no timer is
    due within ``horizon`` seconds (the idle timeout is far away, or both
    connections have terminated), or when ``until(result)`` is true. Raises
    :class:`HarnessError` after ``max_rounds`` rounds. ``on_event(side,
    connection, event)`` sees each event as it is popped (``side`` is
    ``"client"``/``"server"``), so a protocol layered on top can react (send
    on a stream, close) and its output moves in the next round.

``Pair``
    ``.client``, ``.server``, ``.now``, ``.client_events``,
    ``.server_events``, ``.wire``; ``.run_until_idle(**kw)`` continues from
    ``.now`` and appends events; ``.events(side, cls=None)``.

``Wire(drop=None, reorder=None)``
    Fault injection. ``drop(direction, index, datagram) -> bool`` drops a
    datagram (``direction`` is ``C2S`` or ``S2C``, ``index`` counts the
    datagrams emitted in that direction, from 0); ``reorder(direction,
    datagrams) -> datagrams`` may permute, duplicate or remove the
    datagrams of one transfer. ``Wire.sent``/``Wire.dropped`` record what
    happened. Helpers: ``drop_indices(direction, *indices)``,
    ``reverse_batches``.

``events_of_type(events, cls)``
    The events of one type, in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import QuicEvent


__all__ = [
    "C2S",
    "CLIENT_ADDR",
    "S2C",
    "SERVER_ADDR",
    "HarnessError",
    "Pair",
    "RunResult",
    "Wire",
    "client_and_server",
    "drop_indices",
    "events_of_type",
    "make_client",
    "make_server",
    "reverse_batches",
    "run_until_idle",
    "transfer",
]

CLIENT_ADDR = ("1.2.3.4", 1234)
SERVER_ADDR = ("2.3.4.5", 4433)
C2S = "client->server"
S2C = "server->client"

E = TypeVar("E", bound=QuicEvent)
DropHook = Callable[[str, int, bytes], bool]
ReorderHook = Callable[[str, list[bytes]], list[bytes]]
EventHook = Callable[[str, QuicConnection, QuicEvent], None]


class HarnessError(AssertionError):
    """The exchange did not settle within the round budget."""


@dataclass
class Wire:
    """The in-memory link between the two connections, with fault hooks."""

    drop: DropHook | None = None
    reorder: ReorderHook | None = None
    #: datagrams emitted so far, per direction (also the next drop index)
    sent: dict[str, int] = field(default_factory=lambda: {C2S: 0, S2C: 0})
    #: (direction, index) of every dropped datagram
    dropped: list[tuple[str, int]] = field(default_factory=list)

    def carry(self, direction: str, datagrams: list[bytes]) -> list[bytes]:
        kept = []
        for data in datagrams:
            index = self.sent[direction]
            self.sent[direction] = index + 1
            if self.drop is not None and self.drop(direction, index, data):
                self.dropped.append((direction, index))
            else:
                kept.append(data)
        if self.reorder is not None:
            kept = self.reorder(direction, kept)
        return kept


def drop_indices(direction: str, *indices: int) -> DropHook:
    """A drop hook losing the datagrams with these indices in ``direction``."""
    wanted = frozenset(indices)
    return lambda d, i, _data: d == direction and i in wanted


def reverse_batches(direction: str, datagrams: list[bytes]) -> list[bytes]:
    """A reorder hook delivering each transfer's datagrams last-first."""
    return datagrams[::-1]


def make_client(configuration: QuicConfiguration, *, cls: type[QuicConnection] = QuicConnection,
                now: float = 0.0, connect: bool = True, **kwargs: Any) -> QuicConnection:
    assert configuration.is_client, "a client needs is_client=True"
    client = cls(configuration=configuration, **kwargs)
    if connect:
        client.connect(SERVER_ADDR, now=now)
    return client


def make_server(configuration: QuicConfiguration, client: QuicConnection, *,
                cls: type[QuicConnection] = QuicConnection, **kwargs: Any) -> QuicConnection:
    assert not configuration.is_client, "a server needs is_client=False"
    return cls(configuration=configuration,
               original_destination_connection_id=client.original_destination_connection_id,
               **kwargs)


def _is_client(connection: QuicConnection) -> bool:
    return bool(connection.configuration.is_client)


def transfer(sender: QuicConnection, receiver: QuicConnection, now: float, *,
             wire: Wire | None = None) -> int:
    """Move ``sender``'s pending datagrams into ``receiver``; return how many were sent."""
    from_client = _is_client(sender)
    if not from_client and not sender._network_paths:
        # A server that has not received a datagram yet has no peer address
        # and aioquic's datagrams_to_send() would fail (IndexError).
        return 0
    direction = C2S if from_client else S2C
    source = CLIENT_ADDR if from_client else SERVER_ADDR
    datagrams = [data for data, _addr in sender.datagrams_to_send(now=now)]
    delivered = wire.carry(direction, datagrams) if wire is not None else datagrams
    for data in delivered:
        receiver.receive_datagram(data, source, now=now)
    return len(datagrams)


@dataclass
class RunResult:
    """What one run_until_idle() saw."""

    now: float
    rounds: int = 0
    client_events: list[QuicEvent] = field(default_factory=list)
    server_events: list[QuicEvent] = field(default_factory=list)


def _pop_events(side: str, connection: QuicConnection, into: list[QuicEvent],
                on_event: EventHook | None) -> None:
    while (event := connection.next_event()) is not None:
        into.append(event)
        if on_event is not None:
            on_event(side, connection, event)


def run_until_idle(
    client: QuicConnection,
    server: QuicConnection,
    *,
    now_start: float = 0.0,
    max_rounds: int = 200,
    horizon: float = 10.0,
    wire: Wire | None = None,
    on_event: EventHook | None = None,
    until: Callable[[RunResult], bool] | None = None,
) -> RunResult:
    """Exchange datagrams and fire timers until nothing is left to do (see module doc)."""
    result = RunResult(now=now_start)

    def pop_all() -> None:
        _pop_events("client", client, result.client_events, on_event)
        _pop_events("server", server, result.server_events, on_event)

    pop_all()
    for rounds in range(1, max_rounds + 1):
        result.rounds = rounds
        moved = transfer(client, server, result.now, wire=wire)
        pop_all()
        moved += transfer(server, client, result.now, wire=wire)
        pop_all()
        if until is not None and until(result):
            return result
        if moved:
            continue
        timers = [t for t in (client.get_timer(), server.get_timer()) if t is not None]
        if not timers or min(timers) > result.now + horizon:
            return result
        result.now = max(result.now, min(timers))
        for connection in (client, server):
            timer = connection.get_timer()
            if timer is not None and timer <= result.now:
                connection.handle_timer(now=result.now)
        pop_all()
        if until is not None and until(result):
            return result
    raise HarnessError(f"not idle after {max_rounds} rounds (now={result.now:.3f})")


def events_of_type(events: Iterable[QuicEvent], cls: type[E]) -> list[E]:
    return [event for event in events if isinstance(event, cls)]


@dataclass
class Pair:
    """A client and a server connection plus the events and time they have seen."""

    client: QuicConnection
    server: QuicConnection
    now: float = 0.0
    wire: Wire = field(default_factory=Wire)
    client_events: list[QuicEvent] = field(default_factory=list)
    server_events: list[QuicEvent] = field(default_factory=list)

    def run_until_idle(self, **kwargs: Any) -> RunResult:
        kwargs.setdefault("wire", self.wire)
        result = run_until_idle(self.client, self.server, now_start=self.now, **kwargs)
        self.now = result.now
        self.client_events += result.client_events
        self.server_events += result.server_events
        return result

    def events(self, side: str, cls: type[E] | None = None) -> list[Any]:
        events = self.client_events if side == "client" else self.server_events
        return list(events) if cls is None else events_of_type(events, cls)


def client_and_server(
    client_configuration: QuicConfiguration,
    server_configuration: QuicConfiguration,
    *,
    client_cls: type[QuicConnection] = QuicConnection,
    server_cls: type[QuicConnection] = QuicConnection,
    now: float = 0.0,
    wire: Wire | None = None,
) -> Pair:
    """A connected (``connect()`` called) client and its server, not yet exchanging."""
    client = make_client(client_configuration, cls=client_cls, now=now)
    server = make_server(server_configuration, client, cls=server_cls)
    return Pair(client=client, server=server, now=now, wire=wire or Wire())
