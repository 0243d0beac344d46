"""Distribution node benchmark: a quicdist Node here, a peer Node in its own process.

Both nodes run on 127.0.0.1 with development certificates (made in a
temporary directory) and mutual TLS (``verify_peer``), and talk through the
public Node API only (:meth:`quicdist.Node.mailbox`, :meth:`Mailbox.send` /
:meth:`Mailbox.receive`, :meth:`Node.ping`, :meth:`Node.rpc`,
:meth:`Node.connect`). The peer runs in ``python -m bench.node serve ...``:
its registered mailboxes ``sink`` (counts and checks what it receives),
``ctl`` (sends on request) and ``echo`` (answers each message), a module
``bench`` with ``echo/1`` for rpc, and a few more idle nodes (``fresh<i>``)
that are each connected once to time the connection setup.

Measured (each checked; a wrong answer is an error, exit status 1):

* ``throughput.local_to_peer``: N messages ``{msg, I, <<Payload>>}`` (16-byte
  and 1 KiB payloads) from a mailbox here to ``{sink, peer}``; the sink checks
  that ``I`` counts up from 0 without a gap or a reorder and that the payload
  is intact, then replies once with the count; msg/s = N / (first send ..
  reply received);
* ``throughput.peer_to_local``: the same messages the other way: ``ctl`` on
  the peer sends N of them to a mailbox here, which checks them and
  measures from its request until the peer's end marker arrived;
* ``latency``: round trips, in microseconds, measured here: a message to the
  peer's ``echo`` mailbox and its answer (``mailbox_roundtrip``),
  ``node.ping(peer)`` (a ``gen_call`` to ``net_kernel``) and
  ``node.rpc(peer, "bench", "echo", [I])``;
* ``connection_setup``: ``node.connect(fresh)`` to a peer node never
  connected before: QUIC, TLS 1.3 with both certificates verified, and the
  distribution handshake.

``run()`` returns the JSON document ``python -m bench node`` prints. Every
wait has a timeout; the peer process is stopped in a ``finally`` block, exits
on its own when this process goes away (its stdin closes), and after
``peer_lifetime`` in any case.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import quicdist
from quicdist import Atom, Node
from quicdist.errors import DiscoveryError, MailboxClosed, QuicDistTimeoutError

from ._common import (
    ROOT,  # noqa: F401 - bench.node.ROOT, as before
    BenchFailure,
    ChildProcess,
    CorrectnessError,
    _announce,
    _Deadline,
    _describe,
    _exit_when_parent_goes,
    _payload,
    _positive,
    _round,
    _rtt_summary,
    _term_bytes,
    add_message_arguments,
    add_timeout_argument,
    node_environment,
    override,
    peer_server_parser,
    progress_printer,
)


MB = 1_000_000
HOST = "127.0.0.1"
LOCAL_NAME = "bench@127.0.0.1"
PEER_NAME = "peer@127.0.0.1"
COOKIE = "quicdist-bench-cookie"
SMALL_PAYLOAD = 16
BINARY_PAYLOAD = 1024
PEER_READY_TIMEOUT = 60.0
# Mailboxes that take a whole run before anyone reads them are not bounded
# by the default 100 000 messages.
UNBOUNDED = 1 << 40

MSG = Atom("msg")
START = Atom("start")
STOP = Atom("stop")
RESULT = Atom("result")
BLAST = Atom("blast")
END = Atom("end")
ECHO = Atom("echo")


@dataclass(frozen=True)
class Settings:
    small_messages: int = 200_000
    binary_messages: int = 50_000
    repeats: int = 3
    rtt_count: int = 2000
    rtt_warmup: int = 200
    ping_count: int = 500
    rpc_count: int = 500
    call_warmup: int = 20
    connects: int = 5
    timeout: float = 120.0  # per run of one scenario
    peer_lifetime: float = 1800.0  # the peer process exits after this long, whatever happens


DEFAULT = Settings()
QUICK = Settings(small_messages=5000, binary_messages=2000, repeats=1, rtt_count=200,
                 rtt_warmup=20, ping_count=50, rpc_count=50, call_warmup=5, connects=3,
                 timeout=20.0, peer_lifetime=120.0)


# ---------------------------------------------------------------------------
# The peer process: python -m bench.node serve ...


def _sink_loop(box: quicdist.Mailbox) -> None:
    """``sink``: a run is START, N x {msg, I, Payload}, STOP; the reply says what came.

    Order is checked on the fly: each I must be the previous one plus one.
    """
    count = expected = bad_order = bad_payload = 0
    want = b""
    first_problem = b""
    cpu0 = time.process_time()
    receive = box.receive
    while True:
        try:
            m = receive()
        except MailboxClosed:
            return
        try:
            if m[0] == MSG:
                count += 1
                i = m[1]
                if i != expected:
                    bad_order += 1
                    if not first_problem:
                        first_problem = f"message {i} arrived where {expected} was due".encode()
                    expected = i + 1 if isinstance(i, int) else expected + 1
                else:
                    expected += 1
                if m[2] != want:
                    bad_payload += 1
                    if not first_problem:
                        first_problem = f"message {i}: the payload differs".encode()
            elif m[0] == START:
                want = _payload(m[3])
                count = expected = bad_order = bad_payload = 0
                first_problem = b""
                cpu0 = time.process_time()
            elif m[0] == STOP:
                box.send(m[1], (RESULT, m[2], count, bad_order, bad_payload, first_problem,
                                time.process_time() - cpu0))
        except Exception as exc:  # noqa: BLE001 - say it, keep serving
            print(f"bench peer sink: {_describe(exc)} on {m!r:.200}", file=sys.stderr,
                  flush=True)


def _ctl_loop(box: quicdist.Mailbox) -> None:
    """``ctl``: {blast, To, RunId, N, Size} sends N x {msg, I, Payload} to To, then
    {end, RunId, N, PeerCpuSeconds}."""
    while True:
        try:
            m = box.receive()
        except MailboxClosed:
            return
        try:
            if m[0] == BLAST:
                _, to, run_id, n, size = m
                payload = _payload(size)
                send = box.send
                cpu0 = time.process_time()
                for i in range(n):
                    send(to, (MSG, i, payload))
                send(to, (END, run_id, n, time.process_time() - cpu0))
        except Exception as exc:  # noqa: BLE001
            print(f"bench peer ctl: {_describe(exc)}", file=sys.stderr, flush=True)


def _echo_loop(box: quicdist.Mailbox) -> None:
    """``echo``: {From, I, Payload} is answered with {echo, I, Payload}."""
    receive, send = box.receive, box.send
    while True:
        try:
            m = receive()
        except MailboxClosed:
            return
        try:
            send(m[0], (ECHO, m[1], m[2]))
        except Exception as exc:  # noqa: BLE001
            print(f"bench peer echo: {_describe(exc)}", file=sys.stderr, flush=True)


def _node(name: str, args: argparse.Namespace, port: int, **kw: Any) -> Node:
    return Node(name, cookie=COOKIE, port=port, host=HOST, certfile=args.cert,
                keyfile=args.key, cafile=args.ca, verify="verify_peer", dns=False, **kw)


def server_main(argv: list[str] | None = None) -> int:
    """Entry point of the peer process: ``python -m bench.node serve ...``."""
    parser = peer_server_parser("python -m bench.node serve", LOCAL_NAME, DEFAULT.timeout,
                                DEFAULT.peer_lifetime)
    args = parser.parse_args(argv)
    _exit_when_parent_goes(args.lifetime)
    nodes: list[Node] = []
    try:
        table = {LOCAL_NAME: (HOST, args.local_port)}
        peer = _node(PEER_NAME, args, 0, nodes=table, send_timeout=args.send_timeout).start()
        nodes.append(peer)
        for name, loop in (("sink", _sink_loop), ("ctl", _ctl_loop), ("echo", _echo_loop)):
            box = peer.mailbox(name, max_messages=UNBOUNDED)
            threading.Thread(target=loop, args=(box,), name=f"bench-peer-{name}",
                             daemon=True).start()
        peer.register_module("bench", {"echo": lambda x: x})
        fresh = []
        for i in range(args.fresh):
            node = _node(f"fresh{i}@{HOST}", args, 0, nodes=table).start()
            nodes.append(node)
            fresh.append(node.port)
        _announce(port=peer.port, fresh_ports=fresh)
        threading.Event().wait()  # until the parent closes our stdin (os._exit there)
    except Exception as exc:  # noqa: BLE001 - one line the parent can report
        print(f"bench peer failed: {_describe(exc)}", file=sys.stderr, flush=True)
        for node in nodes:
            node.stop(timeout=2.0)
        return 1
    return 0


class PeerProcess(ChildProcess):
    """The peer node's process; always ended by :meth:`stop` (use ``with``)."""

    who = "peer"
    module = "bench.node"

    def __init__(self, certs: dict[str, Any], local_port: int, settings: Settings,
                 workdir: str) -> None:
        peer = certs[PEER_NAME]
        self._spawn([self.module, "serve", "--ca", str(certs["ca"].certfile),
                     "--cert", str(peer.certfile), "--key", str(peer.keyfile),
                     "--local-port", str(local_port), *self._extra_args(settings),
                     "--send-timeout", str(settings.timeout),
                     "--lifetime", str(settings.peer_lifetime)],
                    os.path.join(workdir, "peer.stderr"))
        self.port = 0
        self.fresh_ports: list[int] = []
        self.compiled_extension_used: bool | None = None

    def _extra_args(self, settings: Any) -> list[str]:
        return ["--fresh", str(settings.connects)]

    def wait_ready(self, timeout: float) -> None:
        info = self._read_ready(
            timeout,
            lambda: BenchFailure(f"the peer did not start within {timeout} s"
                                 f"{self.stderr_tail()}"),
            lambda status: BenchFailure(f"the peer exited before it was ready"
                                        f"{self.stderr_tail()}"))
        self.port = int(info["port"])
        self.fresh_ports = [int(p) for p in info["fresh_ports"]]
        self.compiled_extension_used = info.get("compiled_extension_used")

    def check_running(self) -> None:
        """BenchFailure if the peer process has exited."""
        if self.proc.poll() is not None:
            raise BenchFailure(f"the peer process exited (status {self.proc.returncode})"
                               f"{self.stderr_tail()}")


# ---------------------------------------------------------------------------
# Measurements (this process)


def _receive(box: quicdist.Mailbox, deadline: _Deadline, what: str,
             match: Callable[[Any], bool] | None = None) -> Any:
    try:
        return box.receive(deadline.left(what), match=match)
    except QuicDistTimeoutError:
        raise BenchFailure(f"{what}: no answer within {deadline.seconds} s") from None


class _Book:
    """Discovery for the measuring node: the peer's ports, known once it started."""

    def __init__(self) -> None:
        self.table: dict[str, tuple[str, int]] = {}

    def lookup(self, node_name: str) -> tuple[str, int]:
        try:
            return self.table[node_name]
        except KeyError:
            raise DiscoveryError(f"{node_name!r} is not a benchmark node", node=node_name) from None


def send_run(local: Node, n: int, size: int, run_id: int, timeout: float) -> dict[str, Any]:
    """N messages local -> {sink, peer}; the sink's one reply ends the run."""
    deadline = _Deadline(timeout)
    dest = ("sink", PEER_NAME)
    payload = _payload(size)
    with local.mailbox(max_messages=UNBOUNDED) as me:
        send = me.send
        send(dest, (START, run_id, n, size), raise_nodedown=True)
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        for i in range(n):
            send(dest, (MSG, i, payload), raise_nodedown=True)
        send(dest, (STOP, me.pid, run_id), raise_nodedown=True)
        reply = _receive(me, deadline, "local -> peer",
                         lambda m: isinstance(m, tuple) and m[:2] == (RESULT, run_id))
        t1 = time.perf_counter()
        cpu = time.process_time() - cpu0
    _, _, count, bad_order, bad_payload, first_problem, peer_cpu = reply
    if bad_order or bad_payload or count != n:
        raise CorrectnessError(
            f"local -> peer, {size}-byte payloads: the sink received {count} of {n} messages, "
            f"{bad_order} out of order, {bad_payload} with a wrong payload"
            + (f" (first: {first_problem.decode(errors='replace')})" if first_problem else ""))
    return {"seconds": t1 - t0, "local_cpu_s": cpu, "peer_cpu_s": float(peer_cpu)}


def receive_run(local: Node, n: int, size: int, run_id: int, timeout: float) -> dict[str, Any]:
    """N messages {ctl, peer} -> a mailbox here, checked and timed by the receiver."""
    deadline = _Deadline(timeout)
    want = _payload(size)
    count = bad_order = bad_payload = 0
    first_problem = ""
    with local.mailbox(max_messages=UNBOUNDED) as me:
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        me.send(("ctl", PEER_NAME), (BLAST, me.pid, run_id, n, size), raise_nodedown=True)
        receive = me.receive
        while True:
            try:
                m = receive(deadline.left("peer -> local"))
            except QuicDistTimeoutError:
                raise BenchFailure(f"peer -> local: {count} of {n} messages within "
                                   f"{deadline.seconds} s") from None
            if m[0] == MSG:
                if m[1] != count:
                    bad_order += 1
                    first_problem = first_problem or f"message {m[1]} arrived where {count} was due"
                if m[2] != want:
                    bad_payload += 1
                    first_problem = first_problem or f"message {m[1]}: the payload differs"
                count += 1
            elif m[0] == END and m[1] == run_id:
                break
            else:
                raise CorrectnessError(f"peer -> local: unexpected message {m!r:.200}")
        t1 = time.perf_counter()
        cpu = time.process_time() - cpu0
    if bad_order or bad_payload or count != n or m[2] != n:
        raise CorrectnessError(
            f"peer -> local, {size}-byte payloads: received {count} of {n} messages, "
            f"{bad_order} out of order, {bad_payload} with a wrong payload"
            + (f" (first: {first_problem})" if first_problem else ""))
    return {"seconds": t1 - t0, "local_cpu_s": cpu, "peer_cpu_s": float(m[3])}


def _throughput(runs: list[dict[str, Any]], n: int, size: int, measured_by: str
                ) -> dict[str, Any]:
    term_bytes = _term_bytes(n, size)
    rates = [n / r["seconds"] for r in runs]
    per_cpu = [n / cpu for r in runs if (cpu := r["local_cpu_s"] + r["peer_cpu_s"]) > 0]
    median_rate = statistics.median(rates)
    return {
        "messages": n,
        "message": f"{{msg, I, <<{size} bytes>>}}",
        "payload_bytes": size,
        "term_bytes_per_message": _round(term_bytes / n),
        "msgs_per_s": _round(median_rate),
        "mb_per_s": _round(median_rate * term_bytes / n / MB),
        "payload_mb_per_s": _round(median_rate * size / MB),
        "best_msgs_per_s": _round(max(rates)),
        "runs_msgs_per_s": [_round(v) for v in rates],
        "msgs_per_cpu_s": _round(statistics.median(per_cpu)) if per_cpu else None,
        "measured_by": measured_by,
        "verified": "count, order (I = 0, 1, 2... without a gap) and payload of every message",
        "runs": [{k: _round(v) for k, v in r.items()} for r in runs],
    }


def mailbox_rtt(local: Node, count: int, warmup: int, timeout: float) -> list[float]:
    deadline = _Deadline(timeout)
    dest = ("echo", PEER_NAME)
    payload = _payload(SMALL_PAYLOAD)
    samples = []
    perf = time.perf_counter
    with local.mailbox() as me:
        send, receive, pid = me.send, me.receive, me.pid
        for i in range(warmup + count):
            t0 = perf()
            send(dest, (pid, i, payload), raise_nodedown=True)
            try:
                reply = receive(deadline.left("mailbox round trip"))
            except QuicDistTimeoutError:
                raise BenchFailure(f"mailbox round trip {i}: no echo within "
                                   f"{deadline.seconds} s") from None
            t1 = perf()
            if reply != (ECHO, i, payload):
                raise CorrectnessError(f"mailbox round trip {i}: echo {reply!r:.200}")
            if i >= warmup:
                samples.append((t1 - t0) * 1e6)
    return samples


def ping_rtt(local: Node, count: int, warmup: int, timeout: float) -> list[float]:
    deadline = _Deadline(timeout)
    samples = []
    for i in range(warmup + count):
        t0 = time.perf_counter()
        answer = local.ping(PEER_NAME, timeout=deadline.left("ping"))
        t1 = time.perf_counter()
        if answer != "pong":
            raise BenchFailure(f"ping {i}: {answer}")
        if i >= warmup:
            samples.append((t1 - t0) * 1e6)
    return samples


def rpc_rtt(local: Node, count: int, warmup: int, timeout: float) -> list[float]:
    deadline = _Deadline(timeout)
    samples = []
    for i in range(warmup + count):
        t0 = time.perf_counter()
        answer = local.rpc(PEER_NAME, "bench", "echo", [i], timeout=deadline.left("rpc"))
        t1 = time.perf_counter()
        if answer != i:
            raise CorrectnessError(f"rpc bench:echo({i}) returned {answer!r:.200}")
        if i >= warmup:
            samples.append((t1 - t0) * 1e6)
    return samples


def connect_times(local: Node, names: list[str], timeout: float) -> list[float]:
    """node.connect(name) to peer nodes never connected before; milliseconds each."""
    out = []
    for name in names:
        t0 = time.perf_counter()
        ok = local.connect(name, timeout=timeout)
        t1 = time.perf_counter()
        if not ok:
            raise BenchFailure(f"connect to {name} failed: {local.connection_error(name)}")
        out.append((t1 - t0) * 1e3)
        local.disconnect(name)
    return out


# ---------------------------------------------------------------------------
# Environment and the whole run


environment = node_environment


def run(quick: bool = False, settings: Settings | None = None,
        progress: bool = False) -> dict[str, Any]:
    """Run the benchmark and return the JSON document (see bench/README.md)."""
    from quicdist.certs import make_dev_certs

    settings = settings or (QUICK if quick else DEFAULT)
    say = progress_printer(progress, "node ")

    errors: list[str] = []
    throughput: dict[str, dict[str, Any]] = {"local_to_peer": {}, "peer_to_local": {}}
    latency: dict[str, Any] = {}
    setup: dict[str, Any] = {}
    peer_info: dict[str, Any] = {}
    started = time.monotonic()
    peer: PeerProcess | None = None

    def attempt(where: dict[str, Any], label: str, key: str, fn: Callable[[], Any]) -> None:
        say(label)
        try:
            if peer is not None:
                peer.check_running()
            where[key] = fn()
        except Exception as exc:  # noqa: BLE001 - every failure is reported
            where[key] = {"error": _describe(exc)}
            errors.append(f"{label}: {_describe(exc)}")

    workdir = tempfile.mkdtemp(prefix="quicdist-bench-node-")
    local: Node | None = None
    try:
        certs = make_dev_certs(workdir, (LOCAL_NAME, PEER_NAME))
        book = _Book()
        mine = certs[LOCAL_NAME]
        local = Node(LOCAL_NAME, cookie=COOKIE, port=0, host=HOST, certfile=str(mine.certfile),
                     keyfile=str(mine.keyfile), cafile=str(certs["ca"].certfile),
                     verify="verify_peer", discovery=book, dns=False,
                     connect_timeout=min(settings.timeout, 30.0),
                     send_timeout=settings.timeout).start()
        node = local
        peer = PeerProcess(certs, local.port, settings, workdir)
        peer.wait_ready(PEER_READY_TIMEOUT)
        peer_info.update(pid=peer.pid, compiled_extension_used=peer.compiled_extension_used)
        book.table[PEER_NAME] = (HOST, peer.port)
        fresh = [f"fresh{i}@{HOST}" for i in range(len(peer.fresh_ports))]
        book.table.update((name, (HOST, port))
                          for name, port in zip(fresh, peer.fresh_ports, strict=True))
        t0 = time.perf_counter()
        if not local.connect(PEER_NAME, timeout=settings.timeout):
            raise BenchFailure(f"cannot connect to the peer: "
                               f"{local.connection_error(PEER_NAME)}{peer.stderr_tail()}")
        first_connect_ms = (time.perf_counter() - t0) * 1e3

        run_ids = iter(range(1, 1 << 30))
        cases = (("small", settings.small_messages, SMALL_PAYLOAD),
                 ("binary_1kib", settings.binary_messages, BINARY_PAYLOAD))
        directions = (
            ("local_to_peer", send_run,
             "the sender (here): first send until the sink's reply arrived"),
            ("peer_to_local", receive_run,
             "the receiver (here): request sent until the peer's end marker arrived"))
        for direction, run_fn, by in directions:
            for case, n, size in cases:
                def measure(fn=run_fn, n=n, size=size, by=by) -> dict[str, Any]:
                    runs = [fn(node, n, size, next(run_ids), settings.timeout)
                            for _ in range(settings.repeats)]
                    return _throughput(runs, n, size, by)
                attempt(throughput[direction], f"{direction}.{case}", case, measure)
        for key, rtt_fn, count, warmup in (
                ("mailbox_roundtrip", mailbox_rtt, settings.rtt_count, settings.rtt_warmup),
                ("ping", ping_rtt, settings.ping_count, settings.call_warmup),
                ("rpc", rpc_rtt, settings.rpc_count, settings.call_warmup)):
            attempt(latency, f"latency.{key}", key,
                    lambda f=rtt_fn, c=count, w=warmup: _rtt_summary(
                        f(node, c, w, settings.timeout)))

        def setup_times() -> dict[str, Any]:
            times = connect_times(node, fresh, settings.timeout)
            return {"count": len(times), "median_ms": _round(statistics.median(times)),
                    "min_ms": _round(min(times)), "max_ms": _round(max(times)),
                    "runs_ms": [_round(t) for t in times],
                    "first_connect_ms": _round(first_connect_ms),
                    "first_connect_note": f"the first connect of this process (to "
                                          f"{PEER_NAME}), not in the median"}
        if fresh:
            attempt(setup, "connection_setup", "connect", setup_times)
        tail = peer.stderr_tail()
        if tail:
            peer_info["stderr"] = tail
    except Exception as exc:  # noqa: BLE001 - the run could not even start
        errors.append(f"setup: {_describe(exc)}")
    finally:
        try:
            if local is not None:
                local.stop(timeout=5.0)
        finally:
            if peer is not None:
                peer.stop()
            shutil.rmtree(workdir, ignore_errors=True)

    return {
        "benchmark": "node",
        "units": {
            "msgs_per_s": "messages per second, median over repeats (best_ and runs_ "
                          "alongside)",
            "mb_per_s": "10^6 bytes per second of the messages' ETF encoding "
                        "(term_bytes_per_message each; distribution headers not counted)",
            "payload_mb_per_s": "10^6 bytes per second of the binaries inside the messages",
            "msgs_per_cpu_s": "messages per CPU second of both processes together (all "
                              "threads), median over repeats",
            "latency": "microseconds per round trip, measured here (nearest-rank "
                       "percentiles)",
            "connection_setup": "milliseconds for node.connect() to return True",
        },
        "environment": environment(),
        "settings": {
            "quick": quick,
            "nodes": f"{LOCAL_NAME} in this process, {PEER_NAME} (and fresh<i>@{HOST}) in "
                     "another, 127.0.0.1, dev certificates, verify_peer, default "
                     "CarrierConfig",
            "small_messages": settings.small_messages,
            "binary_messages": settings.binary_messages,
            "repeats": settings.repeats,
            "rtt_count": settings.rtt_count,
            "rtt_warmup": settings.rtt_warmup,
            "ping_count": settings.ping_count,
            "rpc_count": settings.rpc_count,
            "call_warmup": settings.call_warmup,
            "connects": settings.connects,
            "timeout_per_run_s": settings.timeout,
            "wall_seconds": round(time.monotonic() - started, 1),
        },
        "peer": peer_info,
        "throughput": throughput,
        "latency": latency,
        "connection_setup": setup.get("connect", {}),
        "errors": errors,
    }


# ---------------------------------------------------------------------------
# CLI helpers used by bench/__main__.py


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_message_arguments(parser)
    parser.add_argument("--repeats", type=_positive(int), default=None,
                        help="throughput runs per case (default 3)")
    parser.add_argument("--rtt-count", type=_positive(int), default=None,
                        help="mailbox round trips measured (default 2000)")
    parser.add_argument("--calls", type=_positive(int), default=None,
                        help="ping and rpc round trips measured (default 500 each)")
    parser.add_argument("--connects", type=_positive(int), default=None,
                        help="fresh peer nodes connected to (default 5)")
    add_timeout_argument(parser)


def settings_from_args(args: argparse.Namespace) -> Settings:
    return override(QUICK if args.quick else DEFAULT, args,
                    (("messages", "small_messages"), ("binary_messages", "binary_messages"),
                     ("repeats", "repeats"), ("rtt_count", "rtt_count"),
                     ("calls", "ping_count"), ("calls", "rpc_count"),
                     ("connects", "connects"), ("timeout", "timeout")))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        sys.exit(server_main(sys.argv[2:]))
    print("usage: python -m bench node [options]  (this module's own entry point only "
          "runs the peer: python -m bench.node serve ...)", file=sys.stderr)
    sys.exit(2)
