"""quicdist.gen.GenServer: gen_server calls and casts served from a Python mailbox."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from quicdist import Atom, GenServer, ImproperList, Node
from quicdist.errors import CallError, MailboxClosed, NoProc
from quicdist.gen import NOREPLY, reply
from tests.node_fixtures import (
    TIMEOUT,
    DevCerts,
    DictDiscovery,
    make_node,
    tmp_certs,  # noqa: F401 (a fixture)
)


@pytest.fixture
def nodes(tmp_certs: DevCerts) -> Iterator[tuple[Node, Node]]:  # noqa: F811
    disc = DictDiscovery()
    a = make_node(tmp_certs, "gena@127.0.0.1", discovery=disc)
    try:
        b = make_node(tmp_certs, "genb@127.0.0.1", discovery=disc)
        try:
            yield a, b
        finally:
            b.stop()
    finally:
        a.stop()


def test_calls_casts_and_infos_from_another_node(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    casts: list[Any] = []
    infos: list[Any] = []
    seen = threading.Event()

    def handle_info(message: Any) -> None:
        infos.append(message)
        seen.set()

    server = GenServer(a, "counter", handle_call=lambda req, caller: (Atom("got"), req),
                       handle_cast=casts.append, handle_info=handle_info)
    with server:
        assert b.gen_call(("counter", a.name), 41, timeout=TIMEOUT) == (Atom("got"), 41)
        b.gen_cast(("counter", a.name), Atom("poke"))
        b.send(("counter", a.name), Atom("plain"))
        assert seen.wait(TIMEOUT)
        assert casts == [Atom("poke")] and infos == [Atom("plain")]
        assert b.gen_call(server.pid, "by pid", timeout=TIMEOUT) == (Atom("got"), b"by pid")
    assert server.exit_reason == Atom("normal")
    with pytest.raises(NoProc):
        b.gen_call(("counter", a.name), 1, timeout=TIMEOUT)


def test_alias_tag_round_trips_exactly(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    with GenServer(a, "echo", handle_call=lambda req, caller: caller[1]):
        caller = b.mailbox()
        tag = ImproperList([Atom("alias")], b.make_ref())
        caller.send(("echo", a.name), (Atom("$gen_call"), (caller.pid, tag), Atom("hi")))
        assert caller.receive(TIMEOUT) == (tag, tag)


def test_noreply_and_later_reply(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    pending: list[Any] = []

    def handle_call(req: Any, caller: Any) -> Any:
        if req == Atom("wait"):
            pending.append(caller)
            return NOREPLY
        for waiting in pending:
            reply(a, waiting, Atom("released"))
        return Atom("ok")

    with GenServer(a, "deferred", handle_call=handle_call):
        result: list[Any] = []
        waiter = threading.Thread(target=lambda: result.append(
            b.gen_call(("deferred", a.name), Atom("wait"), timeout=TIMEOUT)))
        waiter.start()
        # The waiter's call is pending once the server holds it; a second
        # call releases it (calls are served in order).
        for _ in range(10_000):
            assert b.gen_call(("deferred", a.name), Atom("release"), timeout=TIMEOUT) \
                == Atom("ok")
            if pending:
                break
        assert pending, "the waiting call never reached the server"
        # Calls are served in order: this one comes after the waiter's, so it
        # releases it (the loop may have stopped on a release served earlier).
        assert b.gen_call(("deferred", a.name), Atom("release"), timeout=TIMEOUT) == Atom("ok")
        waiter.join(TIMEOUT)
        assert result == [Atom("released")]


def test_a_crashing_handler_exits_the_server(nodes: tuple[Node, Node]) -> None:
    a, b = nodes

    def handle_call(req: Any, caller: Any) -> Any:
        raise ValueError("bad request")

    server = GenServer(a, "fragile", handle_call=handle_call)
    try:
        with pytest.raises(CallError) as info:
            b.gen_call(("fragile", a.name), 1, timeout=TIMEOUT)
        assert info.value.reason[:2] == (Atom("python_exception"), Atom("ValueError"))
        with pytest.raises(MailboxClosed):
            server.mailbox.receive(timeout=0)
    finally:
        server.stop()
