"""A quicdist Node in its own process, driven by tests/test_node_process.py.

    python tests/node_peer.py --name b@127.0.0.1 --cookie C --cert C --key K --ca CA \
        [--port 0] [--peer a@127.0.0.1=127.0.0.1:PORT ...] [--ticktime T] [--lifetime S]

It prints one fact per line on stdout (``PORT 40123`` first, then
``READY``), reads one command per line on stdin, and always ends on its
own: on ``quit``, when stdin closes, or after ``--lifetime`` seconds (exit
status 3). A failure to start prints ``START-FAILED <reason>`` (exit 2).

Commands (and what they print)
------------------------------
``echo NAME``
    Registers a mailbox NAME that answers every ``(Pid, Tag, Payload)`` with
    ``(Tag, Payload)`` sent to Pid (other messages are ignored); prints
    ``ECHO NAME <pid>`` where ``<pid>`` is ``node,id,serial,creation``.
``connect NODE`` / ``ping NODE`` / ``disconnect NODE``
    ``CONNECT NODE <True|False> <role> <status>`` (the role of the connection
    that is up: dialer or listener, and the handshake status it got), ``PING
    NODE <pong|pang>``, ``DISCONNECT NODE <True|False>``.
``arm NODE`` then ``go [EPOCH]``
    A barrier: ``arm`` readies a thread that connects to NODE once ``go``
    arrives (at the wall-clock instant EPOCH, ``time.time()``, if given, so
    that two processes fire together); prints ``ARMED NODE``, then the
    ``CONNECT`` line.
``link-and-report NODE,ID,SERIAL,CREATION``
    A new mailbox links to that pid and monitors it; prints ``LINKED <pid>``
    (its own pid), then ``REPORT <repr>`` for every message it gets
    (``('EXIT', Pid, Reason)``, ``('DOWN', ...)``).
``flood NAME NODE N``
    Sends ``(seq, I)`` for I in 0..N-1 to the registered NAME on NODE from one
    mailbox, then ``(done, N)``; prints ``FLOODED N <seconds>``.
``nodes`` / ``conns``
    ``NODES a,b`` (empty after ``NODES`` when none); ``CONNS <connections the
    node tracks> <up> <open carrier connections>``.
``quit``
Every log record of quicdist at WARNING or above is printed as ``LOG <message>``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quicdist import Atom, Node, Pid  # noqa: E402
from quicdist.config import CarrierConfig  # noqa: E402
from quicdist.errors import MailboxClosed, QuicDistError  # noqa: E402


_out_lock = threading.Lock()


def say(*words: object) -> None:
    with _out_lock:
        print(*words, flush=True)


def format_pid(pid: Pid) -> str:
    return f"{pid.node},{pid.id},{pid.serial},{pid.creation}"


def parse_pid(text: str) -> Pid:
    node, id_, serial, creation = text.split(",")
    return Pid(node, int(id_), int(serial), int(creation))


class _SayHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            say("LOG", record.getMessage().replace("\n", " | "))
        except Exception:  # never let logging kill a thread
            pass


def watchdog(seconds: float) -> None:
    def expire() -> None:
        say("LIFETIME-EXPIRED")
        os._exit(3)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


def spawn(target, *args) -> None:
    threading.Thread(target=target, args=args, daemon=True).start()


def connection_facts(node: Node, peer: str) -> tuple[str, str]:
    """(role, handshake status) of the connection to ``peer`` that is up."""
    with node._lock:
        c = node._up.get(peer)
    if c is None:
        return "none", "none"
    status = c.handshake.status if c.handshake is not None else None
    return c.role, str(status)


def do_connect(node: Node, peer: str) -> None:
    ok = node.connect(peer)
    role, status = connection_facts(node, peer)
    if not ok:
        say("LOG", f"connect {peer} failed: {node.connection_error(peer)}")
    say("CONNECT", peer, ok, role, status)


def echo_loop(mailbox) -> None:
    while True:
        try:
            message = mailbox.receive()
        except MailboxClosed:
            return
        if isinstance(message, tuple) and len(message) == 3 and isinstance(message[0], Pid):
            mailbox.send(message[0], (message[1], message[2]))


def report_loop(mailbox) -> None:
    while True:
        try:
            message = mailbox.receive()
        except MailboxClosed:
            return
        say("REPORT", repr(message))


def flood(node: Node, name: str, peer: str, count: int) -> None:
    start = time.monotonic()
    with node.mailbox() as mailbox:
        seq = Atom("seq")
        for i in range(count):
            mailbox.send((name, peer), (seq, i))
        mailbox.send((name, peer), (Atom("done"), count))
    say("FLOODED", count, f"{time.monotonic() - start:.3f}")


def run(node: Node) -> None:
    armed: dict[str, threading.Event] = {}
    go_at: list[float] = []
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        command, args = words[0], words[1:]
        if command == "quit":
            return
        if command == "echo":
            mailbox = node.mailbox(args[0])
            spawn(echo_loop, mailbox)
            say("ECHO", args[0], format_pid(mailbox.pid))
        elif command == "connect":
            spawn(do_connect, node, args[0])
        elif command == "ping":
            spawn(lambda peer: say("PING", peer, node.ping(peer)), args[0])
        elif command == "disconnect":
            say("DISCONNECT", args[0], node.disconnect(args[0]))
        elif command == "arm":
            event = armed[args[0]] = threading.Event()

            def fire(peer: str, event: threading.Event = event) -> None:
                event.wait()
                if go_at:
                    while (left := go_at[0] - time.time()) > 0:
                        time.sleep(min(left, 0.001) if left < 0.01 else left - 0.005)
                do_connect(node, peer)

            spawn(fire, args[0])
            say("ARMED", args[0])
        elif command == "go":
            go_at[:] = [float(args[0])] if args else []
            for event in armed.values():
                event.set()
            armed.clear()
        elif command == "link-and-report":
            mailbox = node.mailbox()
            target = parse_pid(args[0])
            mailbox.link(target)
            mailbox.monitor(target)
            spawn(report_loop, mailbox)
            say("LINKED", format_pid(mailbox.pid))
        elif command == "flood":
            spawn(flood, node, args[0], args[1], int(args[2]))
        elif command == "nodes":
            say("NODES", ",".join(node.nodes()))
        elif command == "conns":
            with node._lock:
                tracked, up = len(node._all), len(node._up)
            carriers = 0
            if node._listener is not None:
                carriers += len(node._listener.connections)
            with node._lock:
                carriers += sum(1 for c in node._all if c.role == "dialer"
                                and c.connection is not None and c.connection.closed is None)
            say("CONNS", tracked, up, carriers)
        else:
            say("UNKNOWN", command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--cookie", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--peer", action="append", default=[], metavar="NODE=HOST:PORT",
                        help="static discovery entry (repeatable)")
    parser.add_argument("--ticktime", type=float, default=60.0)
    parser.add_argument("--connect-timeout", type=float, default=7.0)
    parser.add_argument("--lifetime", type=float, default=60.0)
    args = parser.parse_args(argv)
    watchdog(args.lifetime)
    handler = _SayHandler(logging.WARNING)
    logging.getLogger("quicdist").addHandler(handler)
    table = {}
    for entry in args.peer:
        name, _, address = entry.partition("=")
        host, _, port = address.rpartition(":")
        table[name] = (host, int(port))
    try:
        node = Node(args.name, cookie=args.cookie, host=args.host, port=args.port,
                    certfile=args.cert, keyfile=args.key, cafile=args.ca,
                    verify="verify_peer", nodes=table or None, dns=False,
                    net_ticktime=args.ticktime, connect_timeout=args.connect_timeout,
                    carrier=CarrierConfig()).start()
    except (QuicDistError, OSError) as exc:
        say("START-FAILED", type(exc).__name__, str(exc).replace("\n", " "))
        return 2
    try:
        say("PORT", node.port)
        say("READY", node.name)
        run(node)
    finally:
        node.stop()
        say("STOPPED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
