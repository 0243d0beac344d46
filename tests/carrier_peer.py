"""A carrier peer in its own process, driven by tests/test_carrier_process.py.

    python tests/carrier_peer.py <mode> --cert C --key K --ca CA [options]

It prints one line per fact on stdout (``PORT 4433``, ``ACCEPTED``,
``BLOCKED 5242880 6291456``, ...), reads one command per line on stdin, and
always ends on its own: on ``quit``, when stdin closes, or after
``--lifetime`` seconds (exit status 3).

Modes
-----
``echo``
    Listens (or dials ``--connect PORT``); echoes every distribution message
    back prefixed with ``echo:``, every control message back, and every user
    stream's bytes back on the same stream (FIN included), consuming as it
    reads. As a dialer it first sends the control message ``peer-hello``.
    Prints ``DONE`` when the connection ends.
``sink``
    Listens; accepts one connection; reads user stream events but grants no
    credit (never ``consume()``) until told ``consume``. Checks the bytes
    against the pattern (see :func:`pattern_block`) and prints
    ``FIN <bytes> <ok|corrupt>`` at the end of the stream. ``stats`` prints
    ``STATS <bytes received>``.
``source``
    Dials ``--connect PORT``, opens a user stream (``OPEN <id>``). ``write N T``
    writes N pattern bytes in 1 MiB pieces within T seconds: ``WROTE N``, or
    ``BLOCKED <lower> <upper>`` when the deadline passed first (the bytes
    queued lie between the two). ``fin`` ends the stream (``FINSENT``).
``hold``
    Listens (or dials ``--connect PORT``); prints ``ACCEPTED`` or
    ``CONNECTED`` and then does nothing (the test kills it).
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import threading
from collections.abc import Iterator
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quicdist.config import CarrierConfig  # noqa: E402
from quicdist.errors import QuicDistError, QuicDistTimeoutError  # noqa: E402
from quicdist.events import (  # noqa: E402
    ConnectionTerminated,
    ControlData,
    DistFrames,
    UserStreamData,
)
from quicdist.sync import Listener, connect  # noqa: E402
from quicdist.sync.utils import Deadline  # noqa: E402
from quicdist.tls import TLSConfig  # noqa: E402


BLOCK = 1024 * 1024
_BASE = bytes((i * 131 + (i >> 8) * 7) & 0xFF for i in range(BLOCK))


def pattern_block(index: int) -> bytes:
    """Block ``index`` of the test pattern: its index, then fixed bytes."""
    return index.to_bytes(8, "big") + _BASE[8:]


class PatternChecker:
    """Checks that a byte stream is a prefix of the pattern."""

    def __init__(self) -> None:
        self.offset = 0
        self.ok = True

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            index, within = divmod(self.offset, BLOCK)
            n = min(len(view), BLOCK - within)
            if self.ok and view[:n] != pattern_block(index)[within:within + n]:
                self.ok = False
            self.offset += n
            view = view[n:]


def say(*words: object) -> None:
    print(*words, flush=True)


def watchdog(seconds: float) -> None:
    def expire() -> None:
        say("LIFETIME-EXPIRED")
        os._exit(3)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


def commands() -> Iterator[list[str]]:
    """Lines from stdin until EOF or ``quit`` (read on demand)."""
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            return
        yield words


def open_connection(args, on_event=None):
    tls = TLSConfig(args.cert, args.key, args.ca, "verify_peer")
    config = CarrierConfig(idle_timeout=args.idle_timeout, keepalive_interval=args.keepalive)
    if args.connect:
        conn = connect("127.0.0.1", args.connect, tls=tls, config=config, timeout=10.0,
                       on_event=on_event, name="peer")
        say("CONNECTED")
        return None, conn
    listener = Listener("127.0.0.1", 0, tls=tls, config=config, on_event=on_event)
    say("PORT", listener.port)
    conn = listener.accept(timeout=args.lifetime)
    say("ACCEPTED")
    return listener, conn


def run_echo(args) -> None:
    # The I/O thread only queues events; this thread answers (writes may block).
    events: queue.SimpleQueue = queue.SimpleQueue()
    listener, conn = open_connection(args, lambda _conn, event: events.put(event))
    if args.connect:
        conn.send_control(b"peer-hello")
    outboxes = {}
    while True:
        event = events.get(timeout=args.lifetime)  # the watchdog ends us by then anyway
        if isinstance(event, ConnectionTerminated):
            break
        if isinstance(event, DistFrames):
            for frame in event.frames:
                conn.send_dist(b"echo:" + frame, timeout=30.0)
        elif isinstance(event, ControlData):
            conn.send_control(event.data)
        elif isinstance(event, UserStreamData):
            conn.consume(event.stream_id, len(event.data))
            outbox = outboxes.get(event.stream_id)
            if outbox is None:
                outbox = outboxes[event.stream_id] = conn.stream_outbox(event.stream_id)
            outbox.write(event.data, fin=event.fin, timeout=30.0)
    say("DONE")
    conn.close()
    if listener is not None:
        listener.stop()


def run_sink(args) -> None:
    listener, conn = open_connection(args)
    lock = threading.Lock()
    state = {"received": 0, "consumed": 0, "consuming": False, "stream": None}
    checker = PatternChecker()

    def reader() -> None:
        while True:
            try:
                event = conn.next_event(1.0)
            except QuicDistTimeoutError:
                continue
            if isinstance(event, ConnectionTerminated):
                return
            if isinstance(event, UserStreamData):
                checker.feed(event.data)
                with lock:
                    state["stream"] = event.stream_id
                    state["received"] += len(event.data)
                    if state["consuming"]:
                        conn.consume(event.stream_id, state["received"] - state["consumed"])
                        state["consumed"] = state["received"]
                if event.fin:
                    say("FIN", state["received"], "ok" if checker.ok else "corrupt")

    thread = threading.Thread(target=reader, name="sink-reader", daemon=True)
    thread.start()
    for words in commands():
        if words[0] == "consume":
            with lock:
                state["consuming"] = True
                if state["stream"] is not None and state["received"] > state["consumed"]:
                    conn.consume(state["stream"], state["received"] - state["consumed"])
                    state["consumed"] = state["received"]
            say("CONSUMING")
        elif words[0] == "stats":
            with lock:
                say("STATS", state["received"])
    conn.close()
    listener.stop()


def run_source(args) -> None:
    _, conn = open_connection(args)
    stream_id, outbox = conn.open_stream()
    say("OPEN", stream_id)
    written = 0  # whole blocks queued
    for words in commands():
        if words[0] == "write":
            total, timeout = int(words[1]), float(words[2])
            deadline = Deadline(timeout)
            try:
                while written < total:
                    block = pattern_block(written // BLOCK)
                    outbox.write(block, timeout=deadline.timeout())
                    written += BLOCK
                say("WROTE", written)
            except QuicDistTimeoutError:
                # Part of the block that timed out may be queued.
                say("BLOCKED", written, written + BLOCK)
        elif words[0] == "fin":
            try:
                outbox.write(b"", fin=True, timeout=30.0)
                say("FINSENT")
            except QuicDistError as exc:
                say("ERROR", type(exc).__name__)
    conn.close()


def run_hold(args) -> None:
    listener, conn = open_connection(args)
    for _ in commands():
        pass
    conn.close()
    if listener is not None:
        listener.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["echo", "sink", "source", "hold"])
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--connect", type=int, default=0, help="dial this port on 127.0.0.1")
    parser.add_argument("--idle-timeout", type=float, default=30.0)
    parser.add_argument("--keepalive", type=float, default=150.0)
    parser.add_argument("--lifetime", type=float, default=60.0)
    args = parser.parse_args(argv)
    watchdog(args.lifetime)
    {"echo": run_echo, "sink": run_sink, "source": run_source, "hold": run_hold}[args.mode](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
