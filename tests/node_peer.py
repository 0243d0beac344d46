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

User streams (tests/test_streams_process.py)
--------------------------------------------
``accept NODE K MODE [ARG]``
    K acceptor threads join the pool for NODE; each prints ``ACCEPTED <k>
    <stream id>`` for every stream it accepts and hands it to a new thread
    (``controlling_process``) that serves it by MODE: ``echo`` (every chunk
    back, FIN after the peer's FIN; ``ECHOED <id> <bytes>``), ``sha`` (reads
    to FIN, answers ``"<bytes> <sha256 hex>"`` and FIN; ``SHA <id> <bytes>
    <hex>``), ``reset CODE`` (reads one chunk, resets with CODE;
    ``RESET-SENT <id> <code>``), ``stall`` (reads nothing until ``drain``,
    then serves it as ``sha``; ``STALLED <id>`` first), ``halfclose`` (reads
    to FIN: ``GOT-FIN <id> <bytes>``, then sends ``bye`` and FIN:
    ``BOTH-FIN <id> <closed>``), ``hold`` (reads until FIN or an error:
    ``RECV-END <id>`` or ``RECV-ERROR <id> <exception> <code>``).
``accept-mailbox NODE MODE``
    A Mailbox joins the pool: its streams arrive as messages, each printed
    as ``MSG <id> data <bytes> <fin>``, ``MSG <id> reset <code>`` or ``MSG <id>
    closed``; MODE ``echo`` also sends every data message back (FIN with the
    peer's), ``echo-quiet`` does that and prints nothing but errors.
``drain`` / ``stop-accepting NODE``
    Lets the ``stall`` streams read; closes NODE's acceptors (``STOPPED-ACCEPTING``).
``open LABEL NODE PRIORITY``
    Opens a stream to NODE, owned by the command thread: ``OPENED LABEL <id>``.
``send LABEL TEXT`` / ``send-fin LABEL TEXT`` / ``close LABEL`` / ``reset LABEL CODE``
    On that stream (``DONE <command> LABEL``, or ``FAILED <command> LABEL
    <exception> <code>``).
``read LABEL``
    A new thread takes the stream and reads it to its end: ``READ LABEL
    <text> EOF``, or ``READ-ERROR LABEL <exception> <code>``.
``streams`` / ``rss``
    ``STREAMS <open user streams>``; ``RSS <resident kB>``.
Every log record of quicdist at WARNING or above is printed as ``LOG <message>``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import threading
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quicdist import Atom, Node, Pid, StreamRef  # noqa: E402
from quicdist.config import CarrierConfig  # noqa: E402
from quicdist.errors import MailboxClosed, QuicDistError  # noqa: E402
from quicdist.streams import Acceptor  # noqa: E402


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


def _error_words(exc: BaseException) -> tuple[str, object]:
    return type(exc).__name__, getattr(exc, "code", "-")


class Streams:
    """The user-stream commands (see the module docstring)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.acceptors: dict[str, list[Acceptor]] = {}
        self.opened: dict[str, StreamRef] = {}
        self.drain = threading.Event()

    def command(self, command: str, args: list[str]) -> bool:
        if command == "accept":
            peer, count, mode, extra = args[0], int(args[1]), args[2], args[3:]
            for k in range(count):
                acceptor = self.node.accept_streams(peer)
                self.acceptors.setdefault(peer, []).append(acceptor)
                spawn(self.accept_loop, acceptor, k, mode, extra)
            say("ACCEPTING", peer, count, mode)
        elif command == "accept-mailbox":
            peer, mode = args
            mailbox = self.node.mailbox()
            self.acceptors.setdefault(peer, []).append(
                self.node.accept_streams(peer, mailbox=mailbox))
            spawn(self.mailbox_loop, mailbox, mode)
            say("ACCEPTING", peer, "mailbox", mode)
        elif command == "drain":
            self.drain.set()
            say("DRAINING")
        elif command == "stop-accepting":
            for acceptor in self.acceptors.pop(args[0], []):
                self.node.stop_accepting(acceptor)
            say("STOPPED-ACCEPTING", args[0])
        elif command == "open":
            label, peer, priority = args
            try:
                ref = self.node.open_stream(peer, int(priority))
            except QuicDistError as exc:
                say("OPEN-FAILED", label, *_error_words(exc))
            else:
                self.opened[label] = ref
                say("OPENED", label, ref.stream_id)
        elif command in ("send", "send-fin", "close", "reset"):
            ref = self.opened[args[0]]
            try:
                if command == "close":
                    ref.close()
                elif command == "reset":
                    ref.reset(int(args[1]))
                else:
                    ref.send(" ".join(args[1:]).encode(), fin=command == "send-fin")
            except QuicDistError as exc:
                say("FAILED", command, args[0], *_error_words(exc))
            else:
                say("DONE", command, args[0])
        elif command == "read":
            ref = self.opened[args[0]]
            self.hand_over(ref, self.read_to_end, args[0])
        elif command == "streams":
            say("STREAMS", len(self.node.list_streams()))
        elif command == "rss":
            say("RSS", rss_kb())
        else:
            return False
        return True

    def hand_over(self, ref: StreamRef, serve, *args: object) -> None:
        """Serve ``ref`` on a new thread that owns it."""
        ready = threading.Event()

        def run() -> None:
            ready.wait()
            serve(ref, *args)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        ref.controlling_process(thread)
        ready.set()

    def accept_loop(self, acceptor: Acceptor, k: int, mode: str, extra: list[str]) -> None:
        while True:
            try:
                ref = acceptor.accept()
            except QuicDistError:
                return
            say("ACCEPTED", k, ref.stream_id)
            self.hand_over(ref, self.serve, mode, extra)

    def serve(self, ref: StreamRef, mode: str, extra: list[str]) -> None:
        sid = ref.stream_id
        try:
            if mode == "echo":
                total = 0
                for chunk in ref:
                    total += len(chunk)
                    ref.send(chunk)
                ref.close()
                say("ECHOED", sid, total)
            elif mode in ("sha", "stall"):
                if mode == "stall":
                    say("STALLED", sid)
                    self.drain.wait()
                digest = hashlib.sha256()
                total = 0
                for chunk in ref:
                    total += len(chunk)
                    digest.update(chunk)
                ref.send(f"{total} {digest.hexdigest()}".encode(), fin=True)
                say("SHA", sid, total, digest.hexdigest())
            elif mode == "reset":
                ref.recv()
                ref.reset(int(extra[0]))
                say("RESET-SENT", sid, int(extra[0]))
            elif mode == "halfclose":
                total = sum(len(chunk) for chunk in ref)
                say("GOT-FIN", sid, total)
                ref.send(b"bye", fin=True)
                say("BOTH-FIN", sid, ref.closed)
            elif mode == "hold":
                for _ in ref:
                    pass
                say("RECV-END", sid)
        except QuicDistError as exc:
            say("RECV-ERROR", sid, *_error_words(exc))

    def mailbox_loop(self, mailbox, mode: str) -> None:
        quiet = mode.endswith("-quiet")
        echo = mode.startswith("echo")
        while True:
            try:
                message = mailbox.receive()
            except MailboxClosed:
                return
            _, ref, event = message
            try:
                if isinstance(event, tuple) and event[0] == "data":
                    _, data, fin = event
                    if not quiet:
                        say("MSG", ref.stream_id, "data", len(data), fin)
                    if echo:
                        ref.send(data, fin=fin)
                elif isinstance(event, tuple):
                    if not quiet:
                        say("MSG", ref.stream_id, "reset", event[1])
                elif not quiet:
                    say("MSG", ref.stream_id, event)
            except QuicDistError as exc:
                say("MSG-ERROR", ref.stream_id, *_error_words(exc))

    def read_to_end(self, ref: StreamRef, label: str) -> None:
        try:
            data = b"".join(ref)
        except QuicDistError as exc:
            say("READ-ERROR", label, *_error_words(exc))
        else:
            say("READ", label, data.decode() or "-", "EOF")


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def run(node: Node) -> None:
    streams = Streams(node)
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
        elif not streams.command(command, args):
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
