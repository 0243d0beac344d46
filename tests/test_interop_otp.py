"""Interop with a real Erlang/OTP node over the TCP carrier (``carrier="tcp"``).

One ``erl -name`` node runs for the whole module beside one quicdist node
(both registered in Debian's epmd on 127.0.0.1); its Erlang side is our own
helper, ``tests/erl/quicdist_interop.erl``, compiled here with ``erlc``. The
tests drive it through the distribution itself: a Python mailbox sends
``{From, Ref, Command}`` to the helper's registered ``qd_ctl`` and waits for
``{Ref, Result}`` (see the helper's header for the commands). The Erlang node
dials the Python node first (``net_adm:ping`` at start), so every later
exchange runs on a connection Erlang opened; the tests that kill a node use
a node of their own (a second ``erl``, or a second Python node).

Covered, both directions each time: ping; 100 000 messages each way to pids
and registered names (alternating) with the order checked, and aliases;
links and monitors with ``exit(Pid, kill)``, other reasons and node-down
(``noconnection``); ``gen_server:call`` from Erlang into a Python
:class:`~quicdist.GenServer` (the ``[alias | Ref]`` tag included) and
:meth:`Node.gen_call` into an Erlang gen_server (``NoProc``, timeout,
``CallError``, ``NodeDown``); ``rpc:call`` / ``erpc:call`` / ``rpc:cast`` /
``erpc:cast`` / ``rpc:block_call`` from Erlang into registered Python
functions (return, the exception forms, unregistered functions, plain
spawns refused, 100 callers at once) and :meth:`Node.rpc` into Erlang;
``gen_server:multi_call`` and kernel's ``global`` on an Erlang node with the
Python node connected; big and odd terms both ways, checked with ``=:=`` on
the Erlang side and with strict type-aware equality on the Python side.

Skipped, loudly, only when erl/erlc/epmd are missing (``make test``
installs erlang-nox). Every wait is bounded; every erl is killed at the end.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from quicdist import (
    Atom,
    BitBinary,
    ErlangError,
    ErlangExit,
    ErlangThrow,
    ExportFun,
    GenServer,
    ImproperList,
    Mailbox,
    Map,
    Node,
    Pid,
    Port,
    Reference,
)
from quicdist.errors import CallError, NodeDown, NoProc, RpcError
from quicdist.gen import NOREPLY
from tests.node_fixtures import TIMEOUT, wait_until
from tests.otp import (
    HOST,
    REQUIRES_ERL,
    ErlNode,
    compile_erl,
    epmd,  # noqa: F401 (fixture)
    erl_atom,
    erl_node,  # noqa: F401 (fixture)
    unique,
)


pytestmark = REQUIRES_ERL

HELPER = Path(__file__).parent / "erl" / "quicdist_interop.erl"

A = Atom
EXIT = A("EXIT")
DOWN = A("DOWN")
PROCESS = A("process")
KILLED = A("killed")
NOPROC = A("noproc")
NOCONNECTION = A("noconnection")
SEQ = A("seq")
WATCHED = A("watched")
#: Messages per direction in the ordering tests.
MESSAGES = 100_000
#: Bound of one helper command (the 100k runs and 1 MiB terms included).
COMMAND_TIMEOUT = 6 * TIMEOUT


# ------------------------------------------------------------------ plumbing


class Erl:
    """Commands to the helper's ``qd_ctl`` on ``node``, sent from ``box``."""

    def __init__(self, box: Mailbox, erl: ErlNode) -> None:
        self.box = box
        self.erl = erl
        self.name = erl.name

    def __call__(self, command: str, *args: Any, timeout: float = COMMAND_TIMEOUT) -> Any:
        term = (A(command), *args) if args else A(command)
        ref = self.box.node.make_ref()
        self.box.send(("qd_ctl", self.name), (self.box.pid, ref, term), raise_nodedown=True)
        try:
            reply = self.box.receive(timeout, match=lambda m: (
                isinstance(m, tuple) and len(m) == 2 and m[0] == ref))
        except TimeoutError:
            pytest.fail(f"erl {self.name}: no answer to {term!r:.200} within {timeout:g} s\n"
                        f"{self.erl.output}")
        result = reply[1]
        if isinstance(result, tuple) and result and result[0] == A("crashed"):
            pytest.fail(f"erl {self.name}: command {term!r:.200} crashed: {result!r:.2000}")
        return result

    def watch(self, target: Any) -> Pid:
        """A watcher on the Erlang side linked to (a pid) and monitoring ``target``."""
        reply = self("watch", target)
        assert isinstance(reply, tuple) and reply[0] == A("watching"), reply
        return reply[1]

    def watched(self, watcher: Pid, timeout: float = TIMEOUT) -> tuple[Any, ...]:
        """The next report of the helper's watcher ``watcher`` (without the header)."""
        try:
            report = self.box.receive(timeout, match=lambda m: (
                isinstance(m, tuple) and len(m) >= 3 and m[0] == WATCHED and m[1] == watcher))
        except TimeoutError:
            pytest.fail(f"watcher {watcher!r} reported nothing within {timeout:g} s\n"
                        f"{self.erl.output}")
        return tuple(report[2:])


class PyGen:
    """The Python gen_server the Erlang side calls (``py_gen``)."""

    def __init__(self, node: Node, name: str) -> None:
        self.casts: queue.Queue[Any] = queue.Queue()
        self.server = GenServer(node, name, handle_call=self.handle_call,
                                handle_cast=self.casts.put)

    @staticmethod
    def handle_call(request: Any, caller: tuple[Pid, Any]) -> Any:
        if isinstance(request, tuple) and len(request) == 2 and request[0] == A("echo"):
            return request[1]
        if request == A("tag"):
            return caller[1]
        if request == A("from"):
            return caller[0]
        if request == A("noreply"):
            return NOREPLY
        if request == A("crash"):
            raise RuntimeError("crash requested")
        return (A("unknown"), request)


class Cluster:
    def __init__(self, node: Node, erl: ErlNode, cookie: str, code: Path,
                 gen: PyGen, casts: Mailbox) -> None:
        self.node = node
        self.erl = erl
        self.erl_name = erl.name
        self.cookie = cookie
        self.code = code
        self.gen = gen
        self.casts = casts


def _functions(node: Node) -> dict[str, Callable[..., Any]]:
    """The module ``py`` the Erlang side calls through rpc/erpc."""

    def throw(value: Any) -> Any:
        raise ErlangThrow(value)

    def exit_(reason: Any) -> Any:
        raise ErlangExit(reason)

    def error(reason: Any) -> Any:
        raise ErlangError(reason)

    def boom() -> Any:
        raise ValueError("boom from python")

    def notify(value: Any) -> Any:
        node.send("py_casts", (A("cast_arrived"), value))
        return A("ok")

    def sleep(ms: int) -> Any:
        time.sleep(ms / 1000)
        return A("slept")

    return {"add": lambda x, y: x + y, "echo": lambda x: x, "throw": throw, "exit": exit_,
            "error": error, "boom": boom, "notify": notify, "sleep": sleep,
            "whoami": lambda: A(node.name)}


def start_erl(name: str, cookie: str, code: Path, ping: str | None = None,
              lifetime: float = 60 * TIMEOUT) -> ErlNode:
    """An erl node running the helper; READY checked (the caller closes it)."""
    start = f"quicdist_interop:start({erl_atom(ping)})" if ping else "quicdist_interop:start()"
    erl = ErlNode(name, cookie, start + ".", lifetime=lifetime, code_paths=[code])
    try:
        line = erl.wait_for("READY")
    except BaseException:
        erl.close()
        raise
    if ping and not line.endswith(" pong"):
        erl.close()
        pytest.fail(f"erl could not ping {ping}: {line}\n{erl.output}")
    return erl


@pytest.fixture(scope="module")
def helper_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_erl(HELPER, tmp_path_factory.mktemp("interop-erl"))


@pytest.fixture(scope="module")
def cluster(epmd: int, helper_code: Path) -> Iterator[Cluster]:  # noqa: F811
    cookie = unique("cookie")
    node = Node(f"{unique('py')}@{HOST}", cookie=cookie, carrier="tcp", host=HOST,
                connect_timeout=TIMEOUT)
    node.start()
    erl: ErlNode | None = None
    try:
        node.register_module("py", _functions(node))
        gen = PyGen(node, "py_gen")
        casts = node.mailbox("py_casts")
        # The Erlang node dials us: net_adm:ping at its start.
        erl = start_erl(f"{unique('erl')}@{HOST}", cookie, helper_code, ping=node.name)
        yield Cluster(node, erl, cookie, helper_code, gen, casts)
    finally:
        node.stop()
        if erl is not None:
            erl.close()


@pytest.fixture
def erl(cluster: Cluster) -> Iterator[Erl]:
    """Commands to the module's erl node, from a fresh mailbox (closed afterwards)."""
    box = cluster.node.mailbox(max_messages=4 * MESSAGES)
    try:
        yield Erl(box, cluster.erl)
    finally:
        box.close()


# ------------------------------------------------------------ strict equality


def diff(a: Any, b: Any, path: str = "term") -> str | None:
    """Where ``a`` and ``b`` differ as Erlang terms with their Python types (None: equal).

    True is not 1, an Atom is not a str, a Map is not a dict, 1 is not 1.0;
    map order does not matter (it does not in Erlang).
    """
    if type(a) is not type(b):
        return f"{path}: {type(a).__name__} {a!r:.100} vs {type(b).__name__} {b!r:.100}"
    if isinstance(a, list | tuple):
        if len(a) != len(b):
            return f"{path}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if (found := diff(x, y, f"{path}[{i}]")) is not None:
                return found
        return None
    if isinstance(a, ImproperList):
        return (diff(list(a.elements), list(b.elements), f"{path}.elements")
                or diff(a.tail, b.tail, f"{path}.tail"))
    if isinstance(a, dict | Map):
        pairs_a, pairs_b = list(a.items()), list(b.items())
        if len(pairs_a) != len(pairs_b):
            return f"{path}: {len(pairs_a)} keys vs {len(pairs_b)}"
        index: dict[Any, list[tuple[Any, Any]]] = {}
        for k, v in pairs_b:  # candidates by Python equality, then checked strictly
            try:
                index.setdefault((type(k), k), []).append((k, v))
            except TypeError:  # an unhashable key (in a Map)
                index.setdefault((type(k), id(k)), []).append((k, v))
        for key, value in pairs_a:
            try:
                candidates = index.get((type(key), key), [])
            except TypeError:
                candidates = pairs_b
            match = [v for k, v in candidates if diff(key, k) is None]
            if len(match) != 1:
                return f"{path}: key {key!r:.100} not in the other map"
            if (found := diff(value, match[0], f"{path}[{key!r:.40}]")) is not None:
                return found
        return None
    if isinstance(a, float):
        return None if a == b and repr(a) == repr(b) else f"{path}: {a!r} vs {b!r}"
    return None if a == b else f"{path}: {a!r:.100} vs {b!r:.100}"


def assert_same(got: Any, want: Any) -> None:
    found = diff(got, want)
    assert found is None, found


# ------------------------------------------------------- the odd terms, twice


def big_binary(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def deep(n: int) -> Any:
    term: Any = A("leaf")
    for i in range(1, n + 1):
        term = (i, [term])
    return term


def odd_terms(py_pid: Pid, py_ref: Reference, e_pid: Pid, e_ref: Reference,
              e_port: Port) -> list[tuple[Atom, Any]]:
    """The list ``quicdist_interop:odd_terms/5`` builds, built here."""
    return [
        (A("big_binary"), big_binary(1 << 20)),
        (A("bignum_pos"), (1 << 200) + 12345),
        (A("bignum_neg"), -(1 << 300) - 7),
        (A("bignum_huge"), 1 << 5000),
        (A("integers"), [0, 255, 256, -1, 134217727, -134217728, 2147483647, -2147483648,
                         2147483648, 9223372036854775807, -9223372036854775808,
                         18446744073709551616]),
        (A("floats"), [0.0, 1.5, -2.25e-300, 1.7976931348623157e308, 5e-324,
                       3.141592653589793, -1.0e10]),
        (A("atoms"), [A(""), A("héllo_wörld"), A("日本語"), A("λ"), A("with space"),
                      A("UPPER"), A("nil"), A("λ" * 255)]),
        (A("booleans"), [True, False, A("undefined")]),
        (A("empty"), ([], (), b"", {})),
        (A("improper"), [ImproperList([1], 2), ImproperList([A("a"), A("b")], b"tail"),
                         ImproperList([[]], A("x"))]),
        (A("string"), list(b"hello")),
        (A("byte_list"), list(range(256))),
        (A("int_list"), list(range(0, 70001, 7))),
        (A("unicode_binary"), "héllo wörld ☃".encode()),
        (A("map"), {A("a"): 1, b"b": [1, 2], (A("t"), 1): {A("nested"): True},
                    3.5: list(b"x")}),
        (A("big_map"), {i: str(i).encode() for i in range(1, 101)}),
        (A("odd_map"), Map([([1, 2], A("list_key")), (1, A("int")), (1.0, A("float"))])),
        (A("bits"), [BitBinary(b"\x20", 3), BitBinary(bytes([255, 7 << 3]), 5),
                     BitBinary(b"\x00", 1)]),
        (A("tuples"), [(), (A("a"),), tuple(range(1, 301))]),
        (A("deep"), deep(200)),
        (A("pids_refs"), [py_pid, py_ref, e_pid, e_ref, e_port]),
        (A("export_fun"), ExportFun("lists", "reverse", 1)),
        (A("mixed"), [(A("ok"), b"", [], {}), [()], Map([([], ())]), b"a", [b""]]),
    ]


def assert_terms(got: list[Any], want: list[tuple[Atom, Any]]) -> None:
    assert isinstance(got, list) and len(got) == len(want), got
    for (name, term), pair in zip(want, got, strict=True):
        assert isinstance(pair, tuple) and len(pair) == 2 and pair[0] == name, pair
        found = diff(pair[1], term, str(name))
        assert found is None, found


# ----------------------------------------------------------------------- ping


def test_ping_both_ways(cluster: Cluster, erl: Erl) -> None:
    node = cluster.node
    # The module's connection was dialed by Erlang (net_adm:ping at its start).
    assert node.nodes() == [cluster.erl_name]
    assert node.ping(cluster.erl_name) == "pong"
    assert erl("ping", A(node.name)) == A("pong")
    assert A(node.name) in erl("nodes")
    info = erl("info")
    assert info[0] == A(cluster.erl_name) and info[4] >= b"23", info  # OTP release
    # A Python node Erlang never talked to dials Erlang (epmd lookup) ...
    dialer = Node(f"{unique('py_dialer')}@{HOST}", cookie=cluster.cookie, carrier="tcp",
                  host=HOST)
    listener = Node(f"{unique('py_listener')}@{HOST}", cookie=cluster.cookie, carrier="tcp",
                    host=HOST)
    try:
        dialer.start()
        assert dialer.ping(cluster.erl_name) == "pong"
        assert dialer.nodes() == [cluster.erl_name]
        # ... and Erlang dials a Python node it never talked to.
        listener.start()
        assert erl("ping", A(listener.name)) == A("pong")
        assert listener.nodes() == [cluster.erl_name]
        assert erl("ping", A(f"nobody_{unique('x')}@{HOST}")) == A("pang")
    finally:
        listener.stop()
        dialer.stop()
    assert node.ping(f"nobody_{unique('x')}@{HOST}") == "pang"


# ------------------------------------------------------------------- messages


def test_100k_messages_erlang_to_python_in_order(cluster: Cluster, erl: Erl) -> None:
    node = cluster.node
    name = unique("py_seq")
    with node.mailbox(name, max_messages=2 * MESSAGES) as box:
        # Message I goes to the pid when I is even, to {Name, Node} when odd.
        assert erl("send_seq", [box.pid, (A(name), A(node.name))], MESSAGES) == A("sent")
        expected = 0
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while expected < MESSAGES:
            m = box.receive(max(0.0, deadline - time.monotonic()))
            assert m == (SEQ, expected), f"message {expected}: got {m!r:.200}"
            expected += 1
        assert box.receive(TIMEOUT) == (A("seq_done"), MESSAGES)


def test_100k_messages_python_to_erlang_in_order(cluster: Cluster, erl: Erl) -> None:
    name = unique("qd_collector")
    reply = erl("collector", A(name), MESSAGES)
    assert reply[0] == A("collector"), reply
    collector = reply[1]
    assert isinstance(collector, Pid) and collector.node == cluster.erl_name
    dests = (collector, (name, cluster.erl_name))  # pid when even, name when odd
    with cluster.node.mailbox() as sender:
        send = sender.send
        for i in range(MESSAGES):
            send(dests[i & 1], (SEQ, i))
    result = erl.box.receive(COMMAND_TIMEOUT, match=lambda m: (
        isinstance(m, tuple) and m[:2] == (A("collected"), A(name))))
    assert result == (A("collected"), A(name), MESSAGES, 0, A("none")), result


def test_echo_by_registered_name_both_ways(cluster: Cluster, erl: Erl) -> None:
    node = cluster.node
    with node.mailbox("py_echo_target") as box:
        box.send(("qd_echo", cluster.erl_name), (box.pid, [A("hi"), b"\x00" * 3]))
        assert box.receive(TIMEOUT) == (A("echoed"), A(cluster.erl_name),
                                        [A("hi"), b"\x00\x00\x00"])
        # The node itself sends too (its own pid): the echo's answer is dropped.
        node.send(("qd_echo", cluster.erl_name), (node.pid, A("from_the_node")))
        assert erl("send_seq", [(A("py_echo_target"), A(node.name))], 3) == A("sent")
        assert [box.receive(TIMEOUT) for _ in range(4)] == [
            (SEQ, 0), (SEQ, 1), (SEQ, 2), (A("seq_done"), 3)]


def test_aliases_both_ways(cluster: Cluster, erl: Erl) -> None:
    """ALIAS_SEND: to an Erlang process's alias, and from Erlang to a mailbox's alias."""
    with cluster.node.mailbox() as box:
        alias = erl("alias_echo")
        assert isinstance(alias, Reference) and alias.node == cluster.erl_name
        box.send(alias, (box.pid, [A("through"), b"alias"]))
        assert box.receive(TIMEOUT) == (A("via_alias"), [A("through"), b"alias"])
        mine = box.alias()
        assert erl("send_seq", [mine], 2) == A("sent")
        assert [box.receive(TIMEOUT) for _ in range(3)] == [
            (SEQ, 0), (SEQ, 1), (A("seq_done"), 2)]
        # Once deactivated, the alias delivers nothing (the pid still does).
        assert box.unalias(mine)
        assert erl("send_seq", [mine, box.pid], 2) == A("sent")
        assert erl("send_seq", [box.pid], 1) == A("sent")
        assert [box.receive(TIMEOUT) for _ in range(2)] == [(SEQ, 1), (SEQ, 0)]
        assert box.receive(TIMEOUT) == (A("seq_done"), 1)
        with pytest.raises(TimeoutError):
            box.receive(0.2)


# ---------------------------------------------------------- links, monitors


def test_python_links_and_monitors_erlang_processes(cluster: Cluster, erl: Erl) -> None:
    name = cluster.erl_name
    v1 = erl("victim", A("none"))
    v2 = erl("victim", A("qd_victim2"))
    v3 = erl("victim", A("none"))
    v4 = erl("victim", A("none"))
    assert all(isinstance(v, Pid) and v.node == name for v in (v1, v2, v3, v4))
    with cluster.node.mailbox() as w:
        w.link(v1)
        r1 = w.monitor(v1)
        w.link(v2)
        r2 = w.monitor(("qd_victim2", name))
        w.link(v3)
        r3 = w.monitor(v3)
        w.link(v4)
        r4 = w.monitor(v4)
        assert erl("is_alive", v1) is True  # link and monitors are there by now

        # Python kills an Erlang process: exit(V1, kill).
        w.send_exit(v1, A("kill"))
        got = {w.receive(TIMEOUT) for _ in range(2)}
        assert got == {(EXIT, v1, KILLED), (DOWN, r1, PROCESS, v1, KILLED)}
        # Erlang kills one (monitored by name).
        assert erl("kill", v2) == A("ok")
        got = {w.receive(TIMEOUT) for _ in range(2)}
        assert got == {(EXIT, v2, KILLED),
                       (DOWN, r2, PROCESS, (A("qd_victim2"), A(name)), KILLED)}
        # One exits with a reason of its own.
        reason = (A("shutdown"), (1, b"why"))
        assert erl("stop", v3, reason) == A("ok")
        got = {w.receive(TIMEOUT) for _ in range(2)}
        assert got == {(EXIT, v3, reason), (DOWN, r3, PROCESS, v3, reason)}
        # After unlink and demonitor nothing comes (UNLINK_ID acked by OTP).
        w.unlink(v4)
        w.demonitor(r4)
        assert erl("kill", v4) == A("ok")
        assert erl("is_alive", v4) is False
        # A missing name and a dead pid: noproc at once.
        r5 = w.monitor(("qd_nobody", name))
        assert w.receive(TIMEOUT) == (DOWN, r5, PROCESS, (A("qd_nobody"), A(name)), NOPROC)
        w.link(v1)
        assert w.receive(TIMEOUT) == (EXIT, v1, NOPROC)
        r6 = w.monitor(v1)
        assert w.receive(TIMEOUT) == (DOWN, r6, PROCESS, v1, NOPROC)
        with pytest.raises(TimeoutError):
            w.receive(0.3)  # nothing about v4


def test_erlang_links_and_monitors_python_processes(cluster: Cluster, erl: Erl) -> None:
    node = cluster.node
    target = node.mailbox("py_target")
    other = node.mailbox()
    try:
        w1 = erl.watch(target.pid)  # link + monitor by pid
        w2 = erl.watch((A("py_target"), A(node.name)))  # monitor by name
        w3 = erl.watch(other.pid)
        # Erlang kills a Python mailbox: exit(PyPid, kill).
        assert erl("kill", target.pid) == A("ok")
        wait_until(lambda: target.closed, what="the killed mailbox to exit")
        assert target.exit_reason == KILLED
        assert {erl.watched(w1), erl.watched(w1)} == {
            (A("exit"), target.pid, KILLED), (A("down"), target.pid, KILLED)}
        assert erl.watched(w2) == (A("down"), (A("py_target"), A(node.name)), KILLED)
        assert node.whereis("py_target") is None
        # Any other exit signal reaches a mailbox as a message (mailboxes trap exits).
        assert erl("exit", other.pid, A("please_stop")) == A("ok")
        message = other.receive(TIMEOUT)
        assert message[0] == EXIT and isinstance(message[1], Pid)
        assert message[1].node == cluster.erl_name and message[2] == A("please_stop")
        # A mailbox that exits with a reason of its own.
        reason = (A("custom"), 42, (b"x",))
        other.exit(reason)
        assert {erl.watched(w3), erl.watched(w3)} == {
            (A("exit"), other.pid, reason), (A("down"), other.pid, reason)}
        # Watching a dead pid or a missing name: noproc at once.
        w4 = erl.watch(target.pid)
        assert {erl.watched(w4), erl.watched(w4)} == {
            (A("exit"), target.pid, NOPROC), (A("down"), target.pid, NOPROC)}
        w5 = erl.watch((A("py_nobody"), A(node.name)))
        assert erl.watched(w5) == (A("down"), (A("py_nobody"), A(node.name)), NOPROC)
    finally:
        target.close()
        other.close()


def test_erlang_node_dies(cluster: Cluster, erl: Erl, erl_node) -> None:  # noqa: F811
    """kill -9 of the erl OS process: links, monitors and a pending gen_call see it."""
    node = cluster.node
    other = erl_node(f"{unique('erl_doomed')}@{HOST}", cluster.cookie,
                     "quicdist_interop:start().", code_paths=[cluster.code], lifetime=60)
    other.wait_for("READY")
    doomed = Erl(erl.box, other)
    victim = doomed("victim", A("none"))
    errors: list[BaseException] = []
    with node.mailbox() as w:
        w.link(victim)
        by_pid = w.monitor(victim)
        by_name = w.monitor(("qd_echo", other.name))

        def call() -> None:
            try:
                node.gen_call(("qd_server", other.name), (A("sleep"), 60_000, w.pid),
                              timeout=3 * TIMEOUT)
            except BaseException as exc:  # noqa: BLE001 - checked below
                errors.append(exc)

        caller = threading.Thread(target=call, daemon=True, name="test-gen-call")
        caller.start()
        # The call waits at the Erlang side.
        assert w.receive(TIMEOUT) == (A("sleeping"), 60_000)
        assert doomed("is_alive", victim) is True
        other.close()  # SIGKILL, process group
        got = {w.receive(TIMEOUT) for _ in range(3)}
        assert got == {(EXIT, victim, NOCONNECTION),
                       (DOWN, by_pid, PROCESS, victim, NOCONNECTION),
                       (DOWN, by_name, PROCESS, (A("qd_echo"), A(other.name)), NOCONNECTION)}
        caller.join(TIMEOUT)
        assert not caller.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], NodeDown), errors
        wait_until(lambda: node.nodes() == [cluster.erl_name],
                   what="the dead node to leave nodes()")
        assert node.ping(other.name) == "pang"
        # The module's erl node is unaffected.
        assert node.ping(cluster.erl_name) == "pong"


def test_python_node_stops(cluster: Cluster, erl: Erl) -> None:
    """Erlang links to and monitors a Python node's processes; the node stops."""
    py2 = Node(f"{unique('py_doomed')}@{HOST}", cookie=cluster.cookie, carrier="tcp",
               host=HOST)
    try:
        py2.start()
        box = py2.mailbox("py2_box")
        # Erlang dials py2 itself: a link to a pid of a node it never talked
        # to connects (the signals wait for the connection).
        w1 = erl.watch(box.pid)
        w2 = erl.watch((A("py2_box"), A(py2.name)))
        # Sent after the link and monitors, on the same connection.
        assert erl("ping", A(py2.name)) == A("pong")
        assert py2.nodes() == [cluster.erl_name]
    finally:
        py2.stop()
    reports = {erl.watched(w1) for _ in range(3)}
    assert reports == {(A("exit"), box.pid, NOCONNECTION),
                       (A("down"), box.pid, NOCONNECTION),
                       (A("nodedown"), A(py2.name))}
    reports = {erl.watched(w2) for _ in range(2)}
    assert reports == {(A("down"), (A("py2_box"), A(py2.name)), NOCONNECTION),
                       (A("nodedown"), A(py2.name))}
    assert A(py2.name) not in erl("nodes")


# ----------------------------------------------------------------- gen_server


def test_gen_server_call_from_erlang_into_python(cluster: Cluster, erl: Erl) -> None:
    node = cluster.node
    dest = (A("py_gen"), A(node.name))
    value = [A("x"), (1, 2.5), {b"k": b"v"}, ImproperList([1], 2)]
    assert erl("gen_call", dest, (A("echo"), value), 5000) == value
    # Also by pid.
    assert erl("gen_call", cluster.gen.server.pid, (A("echo"), 7), 5000) == 7
    # The caller's tag is OTP 24+'s [alias | Mref] improper list ...
    tag = erl("gen_call", dest, A("tag"), 5000)
    assert isinstance(tag, ImproperList) and tag.elements == (A("alias"),), tag
    assert isinstance(tag.tail, Reference) and tag.tail.node == cluster.erl_name
    caller = erl("gen_call", dest, A("from"), 5000)
    assert isinstance(caller, Pid) and caller.node == cluster.erl_name
    # ... and comes back exactly (=:= checked on the Erlang side).
    reply = erl("raw_call", dest, A("tag"), 5000)
    assert reply[0] == A("reply") and reply[3] is True, reply
    # A cast.
    assert erl("gen_cast", dest, (A("note"), 1)) == A("ok")
    assert cluster.gen.casts.get(timeout=TIMEOUT) == (A("note"), 1)
    # A missing name: noproc at once (the monitor answers), not a timeout.
    started = time.monotonic()
    result = erl("gen_call", (A("py_nobody"), A(node.name)), A("hi"), 30_000)
    assert result[0] == EXIT and result[1][0] == NOPROC, result
    assert time.monotonic() - started < TIMEOUT
    # No reply: the caller's timeout.
    result = erl("gen_call", dest, A("noreply"), 300)
    assert result[0] == EXIT and result[1][0] == A("timeout"), result
    # A crashing handler ends the server; the caller gets its exit reason.
    crashing = PyGen(node, "py_gen_crash")
    result = erl("gen_call", (A("py_gen_crash"), A(node.name)), A("crash"), 5000)
    assert result[0] == EXIT, result
    assert result[1][0] == (A("python_exception"), A("RuntimeError"), b"crash requested")
    assert crashing.server.exit_reason == result[1][0]
    # The server that answered everything still does.
    assert erl("gen_call", dest, (A("echo"), A("still_here")), 5000) == A("still_here")


def test_gen_call_into_erlang_gen_server(cluster: Cluster, erl: Erl) -> None:
    node = cluster.node
    server = ("qd_server", cluster.erl_name)
    value = {A("k"): [1, 2, (A("t"), b"bin")], b"big": 1 << 100}
    assert node.gen_call(server, (A("echo"), value)) == value
    first = node.gen_call(server, A("incr"))
    assert node.gen_call(server, A("incr")) == first + 1
    assert node.gen_call(server, A("whoami")) == A(cluster.erl_name)
    node.gen_cast(server, (A("py_cast"), 1))
    node.gen_cast(server, (A("py_cast"), 2))
    casts = node.gen_call(server, A("casts"))
    assert casts[:2] == [(A("py_cast"), 2), (A("py_cast"), 1)], casts
    # By pid, and a server that stops instead of answering.
    pid = erl("start_server")
    assert isinstance(pid, Pid)
    assert node.gen_call(pid, (A("echo"), 5)) == 5
    with pytest.raises(CallError) as info:
        node.gen_call(pid, A("crash"), timeout=TIMEOUT)
    assert info.value.reason == A("boom") and not isinstance(info.value, NoProc)
    with pytest.raises(NoProc):
        node.gen_call(pid, (A("echo"), 5), timeout=TIMEOUT)  # dead by now
    # No such name there.
    started = time.monotonic()
    with pytest.raises(NoProc):
        node.gen_call(("qd_nobody", cluster.erl_name), A("hi"), timeout=30.0)
    assert time.monotonic() - started < TIMEOUT
    # A reply that comes too late.
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        node.gen_call(server, (A("sleep"), 2000), timeout=0.3)
    assert time.monotonic() - started < 1.5
    assert node.gen_call(server, (A("echo"), 1)) == 1  # the late reply confuses nothing
    # A node that does not exist.
    with pytest.raises(NodeDown):
        node.gen_call(("qd_server", f"nobody_{unique('x')}@{HOST}"), A("hi"), timeout=5.0)


# ------------------------------------------------------------------------ rpc


def test_rpc_call_from_erlang_into_python(cluster: Cluster, erl: Erl) -> None:
    py = A(cluster.node.name)
    m = A("py")
    badrpc, exception = A("badrpc"), A("exception")
    assert erl("rpc", py, m, A("add"), [1, 2]) == 3
    assert erl("rpc", py, m, A("add"), [1 << 70, 1]) == (1 << 70) + 1
    assert erl("rpc", py, m, A("whoami"), []) == py
    assert erl("erpc", py, m, A("add"), [40, 2]) == (A("return"), 42)
    # throw: rpc:call returns the value (as catch does); erpc rethrows it.
    thrown = (A("thrown"), [1])
    assert erl("rpc", py, m, A("throw"), [thrown]) == thrown
    assert erl("erpc", py, m, A("throw"), [thrown]) == (A("throw"), thrown)
    # exit and error.
    assert erl("rpc", py, m, A("exit"), [A("bye")]) == (badrpc, (EXIT, A("bye")))
    assert erl("erpc", py, m, A("exit"), [A("bye")]) == (A("exit"), (exception, A("bye")))
    assert erl("rpc", py, m, A("error"), [A("bad")]) == (badrpc, (EXIT, (A("bad"), [])))
    assert erl("erpc", py, m, A("error"), [A("bad")]) == (A("error"),
                                                          (exception, A("bad"), []))
    # A plain Python exception.
    py_exc = (A("python_exception"), A("ValueError"), b"boom from python")
    assert erl("rpc", py, m, A("boom"), []) == (badrpc, (EXIT, (py_exc, [])))
    assert erl("erpc", py, m, A("boom"), []) == (A("error"), (exception, py_exc, []))
    # Nothing unregistered runs: undef, as for an undefined Erlang function.
    for module, function, args in ((m, A("nosuch"), []),           # unknown function
                                   (m, A("add"), [1]),             # wrong arity
                                   (A("os"), A("system"), [b"true"]),  # not registered
                                   (A("builtins"), A("eval"), [b"1"])):
        undef = (A("undef"), [(module, function, args, [])])
        assert erl("rpc", py, module, function, args) == (badrpc, (EXIT, undef))
        assert erl("erpc", py, module, function, args) == (A("error"), (exception, *undef))
    # The legacy rex form ({block_call, M, F, A, GL} to rex) answers the same.
    assert erl("block_call", py, m, A("add"), [2, 3]) == 5
    assert erl("block_call", py, m, A("exit"), [A("bye")]) == (badrpc, (EXIT, A("bye")))
    assert erl("block_call", py, m, A("nosuch"), []) == (
        badrpc, (EXIT, (A("undef"), [(m, A("nosuch"), [], [])])))
    # A plain remote spawn of anything is refused cleanly (no process, no hang).
    assert erl("spawn_request", py, m, A("add"), [1, 2]) == (A("error"), A("notsup"))
    assert erl("spawn_request", py, A("erlang"), A("apply"), [m, []]) == (
        A("error"), A("notsup"))


def test_concurrent_calls_from_erlang(cluster: Cluster, erl: Erl) -> None:
    """Many Erlang processes calling at once (one TCP read holds many requests)."""
    py = A(cluster.node.name)
    rpc_add = (A("rpc"), py, A("py"), A("add"), [20, 22])
    assert erl("parallel", 100, rpc_add) == [42] * 100
    gen_echo = (A("gen_call"), (A("py_gen"), py), (A("echo"), A("hi")), 5000)
    assert erl("parallel", 100, gen_echo) == [A("hi")] * 100
    # The caller's timeout: {badrpc, timeout}; the node answers the next call.
    assert erl("rpc", py, A("py"), A("sleep"), [1000], 200) == (A("badrpc"), A("timeout"))
    assert erl("rpc", py, A("py"), A("add"), [1, 1], 5000) == 2
    # 16 slow calls arriving together at a fresh node run on its rpc worker
    # pool (8 threads by default): about 2 x 0.25 s, far below the callers'
    # 2.5 s.
    fresh = Node(f"{unique('py_pool')}@{HOST}", cookie=cluster.cookie, carrier="tcp",
                 host=HOST)
    try:
        fresh.start()
        fresh.register_module("py", _functions(fresh))
        name = A(fresh.name)
        assert erl("rpc", name, A("py"), A("add"), [1, 1], 5000) == 2  # Erlang connects
        started = time.monotonic()
        results = erl("parallel", 16, (A("rpc"), name, A("py"), A("sleep"), [250], 2500))
        elapsed = time.monotonic() - started
        erl("rpc", name, A("py"), A("add"), [1, 1], 10_000)  # whatever is left has run
    finally:
        fresh.stop()
    assert results == [A("slept")] * 16, (
        f"{results.count(A('slept'))} of 16 concurrent 0.25 s rpc calls finished within "
        f"2.5 s (took {elapsed:.1f} s): the rpc worker pool did not run them in parallel")
    assert elapsed < 2.5


def test_rpc_cast_from_erlang_into_python(cluster: Cluster, erl: Erl) -> None:
    py = A(cluster.node.name)
    assert erl("rpc_cast", py, A("py"), A("notify"), [1]) is True
    assert cluster.casts.receive(TIMEOUT) == (A("cast_arrived"), 1)
    assert erl("erpc_cast", py, A("py"), A("notify"), [[2, A("two")]]) == A("ok")
    assert cluster.casts.receive(TIMEOUT) == (A("cast_arrived"), [2, A("two")])
    # A cast of something unregistered does nothing (and breaks nothing).
    assert erl("rpc_cast", py, A("py"), A("nosuch"), []) is True
    assert erl("rpc", py, A("py"), A("add"), [1, 1]) == 2
    with pytest.raises(TimeoutError):
        cluster.casts.receive(0.2)


def test_rpc_from_python_into_erlang(cluster: Cluster) -> None:
    node, name = cluster.node, cluster.erl_name
    assert node.rpc(name, "erlang", "node", []) == A(name)
    assert node.rpc(name, "lists", "reverse", [[1, 2, 3]]) == [3, 2, 1]
    assert node.rpc(name, "lists", "seq", [1, 5]) == [1, 2, 3, 4, 5]
    assert node.rpc(name, "erlang", "list_to_binary", [[104, 105]]) == b"hi"
    assert node.rpc(name, "quicdist_interop", "fail", [A("throw"), 7]) == 7
    with pytest.raises(RpcError) as info:
        node.rpc(name, "quicdist_interop", "fail", [A("error"), A("bad_thing")])
    reason = info.value.reason
    assert reason[0] == EXIT and reason[1][0] == A("bad_thing"), reason
    assert isinstance(reason[1][1], list) and reason[1][1], reason  # the stack
    with pytest.raises(RpcError) as info:
        node.rpc(name, "quicdist_interop", "fail", [A("exit"), A("gone")])
    assert info.value.reason == (EXIT, A("gone"))
    with pytest.raises(RpcError) as info:
        node.rpc(name, "erlang", "binary_to_atom", [42, A("utf8")])
    assert info.value.reason[0] == EXIT and info.value.reason[1][0] == A("badarg")
    with pytest.raises(RpcError) as info:
        node.rpc(name, "no_such_module", "f", [1])
    assert info.value.reason[0] == EXIT and info.value.reason[1][0] == A("undef")


# ------------------------------------------------- Erlang's cluster services


def test_gen_server_multi_call_into_python(cluster: Cluster, erl: Erl) -> None:
    """gen_server:multi_call tags its calls {Ref, Node} (a tuple, not a ref or alias)."""
    py, me = A(cluster.node.name), A(cluster.erl_name)
    done = A("done")
    call = (A("multi_call"), [py], A("py_gen"), (A("echo"), 1), 3000)
    assert erl("within", 5000, call) == (done, ([(py, 1)], []))
    # The node's own services answer such a call too.
    call = (A("multi_call"), [py], A("net_kernel"), (A("is_auth"), me), 3000)
    assert erl("within", 5000, call) == (done, ([(py, A("yes"))], [])), (
        "net_kernel did not answer a gen_server:multi_call ({Ref, Node} tag)")


def test_global_keeps_working_with_a_python_node_connected(cluster: Cluster, erl: Erl
                                                          ) -> None:
    """kernel's global on an Erlang node with a visible quicdist node connected."""
    py, me = A(cluster.node.name), A(cluster.erl_name)
    done = A("done")
    assert A(cluster.node.name) in erl("nodes")
    with cluster.node.mailbox() as box:
        name = A(unique("qd_global"))
        register = (A("apply"), A("global"), A("register_name"), [name, box.pid])
        assert erl("within", 5000, register) == (done, A("yes"))
        where = (A("apply"), A("global"), A("whereis_name"), [name])
        assert erl("within", 5000, where) == (done, box.pid)
        # global:sync() waits for every visible node's global_name_server.
        sync = (A("apply"), A("global"), A("sync"), [])
        assert erl("within", 5000, sync) == (done, A("ok")), (
            "global:sync() blocks while a visible quicdist node is connected")
        # Locks and transactions ask every node they name, this one included.
        trans = (A("global_trans"), (A("qd_lock"), erl.box.pid), [me, py])
        assert erl("within", 5000, trans) == (done, A("in_trans")), (
            "global:trans/set_lock over a quicdist node never completes")


# ---------------------------------------------------------------------- terms


def test_odd_terms_erlang_to_python(cluster: Cluster, erl: Erl) -> None:
    py_ref = cluster.node.make_ref()
    e_pid, e_ref, e_port, terms = erl("terms", erl.box.pid, py_ref)
    assert isinstance(e_pid, Pid) and isinstance(e_ref, Reference) and isinstance(e_port, Port)
    assert_terms(terms, odd_terms(erl.box.pid, py_ref, e_pid, e_ref, e_port))
    # The same through node.rpc (a gen_call to rex answered with the terms).
    terms = cluster.node.rpc(cluster.erl_name, "quicdist_interop", "odd_terms",
                             [erl.box.pid, py_ref, e_pid, e_ref, e_port], timeout=30.0)
    assert_terms(terms, odd_terms(erl.box.pid, py_ref, e_pid, e_ref, e_port))
    big = cluster.node.rpc(cluster.erl_name, "quicdist_interop", "big_binary", [3 << 20])
    assert big == big_binary(3 << 20)


def test_odd_terms_python_to_erlang_and_back(cluster: Cluster, erl: Erl) -> None:
    py_ref = cluster.node.make_ref()
    e_pid, e_ref, e_port, _ = erl("terms", erl.box.pid, py_ref)
    terms = odd_terms(erl.box.pid, py_ref, e_pid, e_ref, e_port)
    mismatches, echoed = erl("check_terms", terms, erl.box.pid, py_ref)
    assert mismatches == [], f"not =:= on the Erlang side: {mismatches}"
    assert_terms(echoed, terms)
    # Erlang -> Python -> Erlang through rpc:call of py:echo/1, =:= there.
    result = erl("rpc_terms", A(cluster.node.name), A("py"), A("echo"), erl.box.pid, py_ref)
    assert result == ([], len(terms)), result


def test_deep_and_wide_terms_both_ways(cluster: Cluster, erl: Erl) -> None:
    value = [deep(450), list(range(100_000)), tuple(A(f"a{i}") for i in range(1000)),
             {i: [i] * 3 for i in range(2000)}, b"\xff" * (1 << 20)]
    assert_same(cluster.node.rpc(cluster.erl_name, "quicdist_interop", "echo", [value],
                                 timeout=30.0), value)
    assert_same(erl("rpc", A(cluster.node.name), A("py"), A("echo"), [value]), value)
