"""QUIC carrier benchmark: quicdist's carrier against plain aioquic, over loopback.

Each measurement runs a client in this process against a server in its own
process (``python -m bench.carrier serve ...``), both on 127.0.0.1, one
server process per (implementation, configuration). The two implementations:

* ``quicdist``: :func:`quicdist.sync.connect` / :class:`quicdist.sync.Listener`
  with ``CarrierConfig(max_datagram_size=N)`` (``pmtu_discovery`` off for the
  fixed sizes, on in the "quicdist defaults" configuration; everything else
  default, mutual TLS with ``verify_peer``). Its server reads events with
  ``next_event()`` on its main thread; a second listener in the same process
  answers in ``on_event``, on the I/O thread (the ``*_server_on_event``
  variants);
* ``aioquic``: aioquic's own asyncio API, :func:`aioquic.asyncio.serve` and
  :func:`aioquic.asyncio.connect`, default ``QuicConfiguration`` except the
  certificate, ALPN ``erlang-dist`` and ``max_datagram_size=N``; the server is
  a ``QuicConnectionProtocol`` subclass handling ``quic_event_received``, the
  client uses ``create_stream()``'s reader and writer.

Scenarios (all checked for correctness; a wrong answer is an error):

* ``bulk``: one stream carries ``bulk_bytes`` of random data one way (quicdist:
  a user stream written through its outbox, consumed by the server; aioquic: a
  bidirectional stream);
  the server replies with the byte count and SHA-256 of what it received;
  MB/s = bytes / (first write .. reply received).
* ``rtt``: 32-byte messages echoed one at a time (quicdist: ``send_dist`` and
  a ``DistFrames`` event, the server echoes with ``send_dist``; aioquic: the
  server echoes the stream's bytes back); per round-trip latency percentiles.
* ``frames``: ``frames`` messages of 40 bytes one way (quicdist: one
  ``send_dist`` each, the receiver counts ``DistFrames`` payloads; aioquic:
  one ``writer.write()`` of a 4-byte-length-prefixed frame each, the receiver
  parses and counts), then an end marker; the server replies with the count
  and SHA-256 of the payloads; frames/s = frames / (first send .. reply).

``run()`` returns the JSON document ``python -m bench carrier`` prints. Every
wait has a timeout; server processes are killed in ``finally`` blocks and exit
on their own when this process goes away (their stdin closes) or after a
wall-time limit.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.metadata
import os
import shutil
import ssl
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._common import (
    ROOT,  # noqa: F401 - bench.carrier.ROOT, as before
    BenchFailure,
    ChildProcess,
    CorrectnessError,
    _announce,
    _describe,
    _exit_when_parent_goes,
    _positive,
    _round,
    _rtt_summary,
    add_timeout_argument,
    base_environment,
    override,
    progress_printer,
)


MiB = 1 << 20
MB = 1_000_000

IMPL_IDS = ("quicdist", "aioquic")
SCENARIOS = ("bulk", "rtt", "frames")
STANDARD_DATAGRAM = 1452
# aioquic 1.7.2 writes the Length of every STREAM and CRYPTO frame as a fixed
# 2-byte varint (connection.py: ``buf.push_uint16(len(frame.data) | 0x4000)``),
# so a frame carrying more than 16383 bytes is misencoded and the peer closes
# with FRAME_ENCODING_ERROR. With 8-byte connection IDs and 2-byte packet
# numbers that happens as soon as max_datagram_size > 16414 (measured: 16414
# works, 16415 breaks aioquic's own client and server; quicdist now refuses
# anything above 16384). Larger sizes (65000) are therefore not in the
# default run.
AIOQUIC_LARGEST_WORKING_DATAGRAM = 16414
JUMBO_DATAGRAMS = (16384,)
ALPN = "erlang-dist"

# Wire conventions between the benchmark client and its servers.
#   quicdist dist frames: b"E..." is echoed, b"C..." is counted, b"D" ends a
#   count and is answered with a REPLY frame; user streams: all bytes are
#   hashed and the stream's end is answered with a REPLY dist frame.
#   aioquic streams: the first byte is the mode (E echo, B bulk, F frames);
#   B and F streams are answered with a REPLY on the same stream.
# b"R", count, bytes, server CPU seconds, server's datagram size now, events
# the server handled, sha256
REPLY = struct.Struct("!cQQdIQ32s")
RTT_SIZE = 32
FRAME_SIZE = 40
SERVER_READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class Settings:
    bulk_bytes: int = 64 * MiB
    rtt_count: int = 5000
    rtt_warmup: int = 200
    frames: int = 200_000
    repeats: int = 3
    datagram_sizes: tuple[int, ...] = (STANDARD_DATAGRAM, *JUMBO_DATAGRAMS)
    scenarios: tuple[str, ...] = SCENARIOS
    # Scenarios measured at the jumbo sizes (RTT of 32-byte messages does not
    # depend on the datagram size).
    jumbo_scenarios: tuple[str, ...] = ("bulk", "frames")
    # Also measure quicdist with its defaults (path-MTU discovery on), when it has them.
    pmtud_config: bool = True
    # Scenarios also measured with the quicdist server answering on its I/O thread.
    on_event_scenarios: tuple[str, ...] = ("rtt",)
    timeout: float = 120.0  # per run of one scenario
    server_lifetime: float = 1800.0  # a server process exits after this long, whatever happens
    write_chunk: int = 64 * 1024


DEFAULT = Settings()
QUICK = Settings(bulk_bytes=1 * MiB, rtt_count=100, rtt_warmup=10, frames=5000, repeats=1,
                 timeout=10.0, server_lifetime=120.0)


# ---------------------------------------------------------------------------
# Data shared by clients and servers


def bulk_data(size: int) -> bytes:
    # Random, so nothing on the way can compress or shortcut it; made once.
    return os.urandom(size)


def rtt_messages(count: int) -> list[bytes]:
    pad = bytes(RTT_SIZE - 5)
    return [b"E" + (i & 0xFFFFFFFF).to_bytes(4, "big") + pad for i in range(count)]


def frame_payloads(count: int) -> list[bytes]:
    pad = b"\xa5" * (FRAME_SIZE - 9)
    return [b"C" + i.to_bytes(8, "big") + pad for i in range(count)]


def make_reply(count: int, nbytes: int, cpu: float, datagram_size: int, events: int,
               digest: bytes) -> bytes:
    return REPLY.pack(b"R", count, nbytes, cpu, datagram_size, events, digest)


@dataclass(frozen=True)
class Reply:
    count: int
    nbytes: int
    server_cpu: float
    server_datagram_size: int
    server_events: int
    digest: bytes


def parse_reply(data: bytes) -> Reply:
    if len(data) != REPLY.size or data[:1] != b"R":
        raise CorrectnessError(f"malformed reply from the server: {data[:64]!r}")
    _, count, nbytes, cpu, size, events, digest = REPLY.unpack(data)
    return Reply(count, nbytes, cpu, size, events, digest)


# ---------------------------------------------------------------------------
# Certificates


@dataclass(frozen=True)
class CertFiles:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str

    def as_args(self) -> list[str]:
        return ["--ca", self.ca, "--cert", self.server_cert, "--key", self.server_key]


def make_certs(directory: str) -> CertFiles:
    from quicdist.certs import make_dev_certs

    made = make_dev_certs(directory, ("server@127.0.0.1", "client@127.0.0.1"))
    return CertFiles(str(made["ca"].certfile), str(made["server@127.0.0.1"].certfile),
                     str(made["server@127.0.0.1"].keyfile), str(made["client@127.0.0.1"].certfile),
                     str(made["client@127.0.0.1"].keyfile))


# ---------------------------------------------------------------------------
# Server processes


def quicdist_config(datagram_size: int, pmtud: bool | None) -> Any:
    """``CarrierConfig(max_datagram_size=N)``, with ``pmtu_discovery`` set when asked
    and when this quicdist has it (``None``: leave the default)."""
    from quicdist.config import CarrierConfig

    kwargs: dict[str, Any] = {"max_datagram_size": datagram_size}
    if pmtud is not None and has_pmtud():
        kwargs["pmtu_discovery"] = pmtud
    return CarrierConfig(**kwargs)


def has_pmtud() -> bool:
    """Does this quicdist do path-MTU discovery (``CarrierConfig.pmtu_discovery``)?"""
    import dataclasses

    from quicdist.config import CarrierConfig

    return any(f.name == "pmtu_discovery" for f in dataclasses.fields(CarrierConfig))


def datagram_size_of(conn: Any) -> int | None:
    """The datagram size a quicdist connection builds packets for now (if it says)."""
    size = getattr(conn.protocol, "datagram_size", None)
    if size is None:
        size = getattr(conn.protocol.quic, "_max_datagram_size", None)
    return int(size) if isinstance(size, int) else None


def _serve_quicdist(args: argparse.Namespace) -> None:
    from quicdist.errors import QuicDistTimeoutError
    from quicdist.events import ConnectionTerminated
    from quicdist.sync import Listener
    from quicdist.tls import TLSConfig

    tls = TLSConfig(args.cert, args.key, args.ca, "verify_peer")
    pmtud = {"on": True, "off": False, "default": None}[args.pmtud]
    config = quicdist_config(args.datagram_size, pmtud)
    handlers: dict[Any, _QuicdistHandler] = {}

    def on_event(conn: Any, event: Any) -> None:
        # The variant: every event handled on the connection's I/O thread.
        handler = handlers.get(conn)
        if handler is None:
            handler = handlers[conn] = _QuicdistHandler()
        handler.handle(conn, event)
        if type(event) is ConnectionTerminated:
            handlers.pop(conn, None)

    listener = Listener("127.0.0.1", 0, tls=tls, config=config, name="bench-server")
    callback_listener = Listener("127.0.0.1", 0, tls=tls, config=config, on_event=on_event,
                                 name="bench-server-cb")
    try:
        _announce(port=listener.port, callback_port=callback_listener.port)
        while True:
            # The main variant: events read with next_event() on this thread.
            try:
                conn = listener.accept(timeout=5.0)
            except QuicDistTimeoutError:
                continue
            handler = _QuicdistHandler()
            try:
                while True:
                    try:
                        event = conn.next_event(5.0)
                    except QuicDistTimeoutError:
                        if conn.closed is not None:
                            break
                        continue
                    handler.handle(conn, event)
                    if type(event) is ConnectionTerminated:
                        break
            finally:
                conn.close(timeout=5.0)
    finally:
        callback_listener.stop()
        listener.stop()


class _QuicdistHandler:
    """The quicdist server's side of the scenarios, for one connection.

    Dist frames starting with E are echoed; frames starting with C are
    counted and hashed until a D, answered with a reply frame; a user stream's
    bytes are hashed (and consumed) until its end, answered with a reply
    frame. Replies go out with send_dist, so this works from any thread,
    including the I/O thread (on_event).
    """

    SEND_TIMEOUT = 60.0

    def __init__(self) -> None:
        from quicdist.events import DistFrames, UserStreamData

        self._dist_frames = DistFrames
        self._stream_data = UserStreamData
        self.streams: dict[int, list[Any]] = {}  # id -> [sha256, bytes, cpu0, events]
        self.counting: list[Any] | None = None  # [sha256, frames, bytes, cpu0, events]

    def handle(self, conn: Any, event: Any) -> None:
        kind = type(event)
        if kind is self._dist_frames:
            frames = event.frames
            if not frames:
                return
            if frames[0][:1] == b"E":
                for frame in frames:
                    conn.send_dist(frame, self.SEND_TIMEOUT)
                return
            state = self.counting
            if state is None:
                state = self.counting = [hashlib.sha256(), 0, 0, time.process_time(), 0]
            state[4] += 1
            done = frames[-1] == b"D"
            body = frames[:-1] if done else frames
            if body:
                joined = b"".join(body)
                state[0].update(joined)
                state[1] += len(body)
                state[2] += len(joined)
            if done:
                self.counting = None
                conn.send_dist(make_reply(state[1], state[2], time.process_time() - state[3],
                                          datagram_size_of(conn) or 0, state[4],
                                          state[0].digest()), self.SEND_TIMEOUT)
        elif kind is self._stream_data:
            sid = event.stream_id
            state = self.streams.get(sid)
            if state is None:
                state = self.streams[sid] = [hashlib.sha256(), 0, time.process_time(), 0]
            state[3] += 1
            data = event.data
            if data:
                state[0].update(data)
                state[1] += len(data)
                conn.consume(sid, len(data))
            if event.fin:
                del self.streams[sid]
                conn.send_dist(make_reply(state[1], state[1], time.process_time() - state[2],
                                          datagram_size_of(conn) or 0, state[3],
                                          state[0].digest()), self.SEND_TIMEOUT)


def _serve_aioquic(args: argparse.Namespace) -> None:
    from aioquic.asyncio import QuicConnectionProtocol, serve
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.events import StreamDataReceived

    class BaselineServerProtocol(QuicConnectionProtocol):
        """Echo (E), bulk hash (B) and length-prefixed frame count (F) streams."""

        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self._state: dict[int, _BaselineStream] = {}

        def quic_event_received(self, event: Any) -> None:
            if not isinstance(event, StreamDataReceived):
                return
            sid = event.stream_id
            data = event.data
            state = self._state.get(sid)
            if state is None:
                if not data:
                    return
                state = self._state[sid] = _BaselineStream(data[:1])
                data = data[1:]
            state.events += 1
            if state.mode == b"E":
                if data:
                    self._quic.send_stream_data(sid, data)
            elif state.mode == b"B":
                state.sha.update(data)
                state.nbytes += len(data)
            else:
                state.feed_frames(data)
            if event.end_stream:
                del self._state[sid]
                if state.mode == b"F" and state.buffer:
                    raise CorrectnessError(f"{len(state.buffer)} bytes of a partial frame")
                count = state.count if state.mode == b"F" else state.nbytes
                reply = make_reply(count, state.nbytes, time.process_time() - state.cpu0,
                                   self._quic._max_datagram_size, state.events,
                                   state.sha.digest())
                self._quic.send_stream_data(sid, reply, end_stream=True)
            # datagram_received() calls transmit() after this.

    async def main() -> None:
        configuration = QuicConfiguration(is_client=False, alpn_protocols=[ALPN],
                                          max_datagram_size=args.datagram_size)
        configuration.load_cert_chain(args.cert, args.key)
        server = await serve("127.0.0.1", 0, configuration=configuration,
                             create_protocol=BaselineServerProtocol)
        transport = server._transport
        assert transport is not None
        _announce(port=transport.get_extra_info("sockname")[1])
        await asyncio.Event().wait()  # until the parent closes our stdin

    asyncio.run(main())


class _BaselineStream:
    __slots__ = ("mode", "sha", "nbytes", "count", "buffer", "cpu0", "events")

    def __init__(self, mode: bytes) -> None:
        if mode not in (b"E", b"B", b"F"):
            raise CorrectnessError(f"unknown stream mode {mode!r}")
        self.mode = mode
        self.sha = hashlib.sha256()
        self.nbytes = 0
        self.count = 0
        self.buffer = b""
        self.cpu0 = time.process_time()
        self.events = 0

    def feed_frames(self, data: bytes) -> None:
        """Parse 4-byte big-endian length-prefixed frames; hash and count the payloads."""
        buf = self.buffer + data if self.buffer else data
        end = len(buf)
        pos = 0
        payloads = []
        frm = int.from_bytes
        while end - pos >= 4:
            size = frm(buf[pos:pos + 4], "big")
            stop = pos + 4 + size
            if stop > end:
                break
            payloads.append(buf[pos + 4:stop])
            pos = stop
        self.buffer = buf[pos:]
        if payloads:
            joined = b"".join(payloads)
            self.sha.update(joined)
            self.nbytes += len(joined)
            self.count += len(payloads)


def server_main(argv: list[str] | None = None) -> int:
    """Entry point of a server process: ``python -m bench.carrier serve IMPL ...``."""
    parser = argparse.ArgumentParser(prog="python -m bench.carrier serve")
    parser.add_argument("impl", choices=IMPL_IDS)
    parser.add_argument("--datagram-size", type=int, required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--lifetime", type=float, default=DEFAULT.server_lifetime)
    parser.add_argument("--pmtud", choices=("on", "off", "default"), default="default",
                        help="quicdist only: CarrierConfig.pmtu_discovery")
    args = parser.parse_args(argv)
    _exit_when_parent_goes(args.lifetime)
    try:
        if args.impl == "quicdist":
            _serve_quicdist(args)
        else:
            _serve_aioquic(args)
    except Exception as exc:  # noqa: BLE001 - one line the client can report
        print(f"bench {args.impl} server failed: {_describe(exc)}", file=sys.stderr, flush=True)
        return 1
    return 0


@dataclass(frozen=True)
class Configuration:
    """One column of the comparison: a datagram size and how quicdist is set up."""

    id: str
    label: str
    datagram_size: int
    pmtud: bool | None  # quicdist's CarrierConfig.pmtu_discovery (None: its default)
    impls: tuple[str, ...]
    scenarios: tuple[str, ...]
    # The configuration whose aioquic results the ratios use (None: this one).
    baseline: str | None = None


class ServerProcess(ChildProcess):
    """A server in its own process; always ended by :meth:`stop` (use ``with``)."""

    who = "server"

    def __init__(self, impl: str, configuration: Configuration, certs: CertFiles,
                 workdir: str, lifetime: float) -> None:
        self.impl = impl
        self.datagram_size = configuration.datagram_size
        pmtud = {True: "on", False: "off", None: "default"}[configuration.pmtud]
        self._spawn(["bench.carrier", "serve", impl,
                     "--datagram-size", str(self.datagram_size), "--pmtud", pmtud,
                     "--lifetime", str(lifetime), *certs.as_args()],
                    os.path.join(workdir, f"server-{impl}-{configuration.id}.stderr"))
        self.port = 0
        self.callback_port: int | None = None
        self.compiled_extension_used: bool | None = None

    def wait_ready(self, timeout: float) -> None:
        info = self._read_ready(
            timeout,
            lambda: BenchFailure(f"{self.impl} server did not start within {timeout} s"
                                 f"{self.stderr_tail()}"),  # still running: say why
            lambda status: BenchFailure(f"{self.impl} server exited before it was ready"
                                        + ("" if status is not None else " (no status)")))
        self.port = int(info["port"])
        self.callback_port = info.get("callback_port")
        self.compiled_extension_used = info.get("compiled_extension_used")

    def alive(self) -> bool:
        return self.proc.poll() is None


# ---------------------------------------------------------------------------
# Statistics


def _throughput_result(runs: list[dict[str, Any]], key: str, per_cpu_key: str, amount: float,
                       **info: Any) -> dict[str, Any]:
    """Median, best and every run of ``key``; plus ``amount`` per CPU second of both
    processes together (steadier than wall-clock rates on a busy machine)."""
    values = [r.pop(key) for r in runs]
    per_cpu = [amount / cpu for r in runs
               if (cpu := r["client_cpu_s"] + r["server_cpu_s"]) > 0]
    return {**info, key: _round(statistics.median(values)), f"best_{key}": _round(max(values)),
            f"runs_{key}": [_round(v) for v in values],
            per_cpu_key: _round(statistics.median(per_cpu)) if per_cpu else None,
            "runs": runs}


# ---------------------------------------------------------------------------
# Workload


@dataclass
class Workload:
    bulk: bytes
    bulk_sha256: bytes
    rtt: list[bytes]
    frames: list[bytes]
    frames_sha256: bytes
    frames_bytes: int


def make_workload(settings: Settings) -> Workload:
    bulk = bulk_data(settings.bulk_bytes) if "bulk" in settings.scenarios else b""
    frames = frame_payloads(settings.frames) if "frames" in settings.scenarios else []
    joined = b"".join(frames)
    return Workload(bulk, hashlib.sha256(bulk).digest(),
                    rtt_messages(settings.rtt_warmup + settings.rtt_count), frames,
                    hashlib.sha256(joined).digest(), len(joined))


def _check_reply(what: str, data: bytes, count: int, nbytes: int, digest: bytes) -> Reply:
    reply = parse_reply(data)
    if reply.count != count or reply.nbytes != nbytes:
        raise CorrectnessError(f"{what}: the server received {reply.count} items / "
                               f"{reply.nbytes} bytes, {count} / {nbytes} were sent")
    if reply.digest != digest:
        raise CorrectnessError(f"{what}: SHA-256 of what the server received differs from "
                               "what was sent")
    return reply


def _run_info(seconds: float, cpu: float, reply: Reply, client_size: int | None
              ) -> dict[str, Any]:
    return {"seconds": _round(seconds), "client_cpu_s": _round(cpu),
            "server_cpu_s": _round(reply.server_cpu),
            "server_events": reply.server_events,
            "datagram_size_at_end": {"client": client_size,
                                     "server": reply.server_datagram_size or None}}


# ---------------------------------------------------------------------------
# quicdist client


class QuicdistClient:
    """One quicdist connection; the calling thread reads events with next_event()."""

    def __init__(self, port: int, configuration: Configuration, certs: CertFiles,
                 timeout: float) -> None:
        from quicdist.errors import QuicDistTimeoutError
        from quicdist.events import ConnectionTerminated, DistFrames
        from quicdist.sync import connect
        from quicdist.tls import TLSConfig

        self._timeout_error = QuicDistTimeoutError
        self._terminated = ConnectionTerminated
        self._dist_frames = DistFrames
        self.timeout = timeout
        tls = TLSConfig(certs.client_cert, certs.client_key, certs.ca, "verify_peer")
        config = quicdist_config(configuration.datagram_size, configuration.pmtud)
        self.conn = connect("127.0.0.1", port, tls=tls, config=config, timeout=timeout,
                            name="bench-client")

    def close(self) -> None:
        self.conn.close(timeout=5.0)

    def udp_counters(self) -> dict[str, Any] | None:
        """quicdist's batched-UDP counters, when it has them (diagnostics only)."""
        udp = getattr(self.conn, "_udp", None)
        if udp is None:
            return None
        return {k: getattr(udp, k, None) for k in ("gso", "gro", "sent_calls", "recv_calls")}

    def _next(self, deadline: float) -> Any:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchFailure(f"no answer within {self.timeout} s")
        try:
            event = self.conn.next_event(left)
        except self._timeout_error:
            raise BenchFailure(f"no answer within {self.timeout} s") from None
        if type(event) is self._terminated:
            raise BenchFailure(f"connection closed: {event.error}")
        return event

    def bulk(self, work: Workload, chunk: int) -> dict[str, Any]:
        conn = self.conn
        deadline = time.monotonic() + self.timeout
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        sid, outbox = conn.open_stream(timeout=self.timeout)
        data = memoryview(work.bulk)
        size = len(data)
        for off in range(0, size, chunk):
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchFailure(f"bulk write did not finish within {self.timeout} s")
            try:
                outbox.write(data[off:off + chunk], fin=off + chunk >= size, timeout=left)
            except self._timeout_error:
                raise BenchFailure(f"bulk write did not finish within {self.timeout} s") from None
        if size == 0:
            outbox.write(b"", fin=True)
        while True:
            event = self._next(deadline)
            if type(event) is self._dist_frames:
                break
        t1 = time.perf_counter()
        cpu1 = time.process_time()
        if len(event.frames) != 1:
            raise CorrectnessError(f"bulk: expected one reply, got {len(event.frames)} frames")
        checked = _check_reply("bulk", event.frames[0], size, size, work.bulk_sha256)
        return {"mb_per_s": size / (t1 - t0) / MB,
                **_run_info(t1 - t0, cpu1 - cpu0, checked, datagram_size_of(conn))}

    def rtt(self, work: Workload, warmup: int) -> list[float]:
        conn = self.conn
        dist_frames = self._dist_frames
        timeout = self.timeout
        samples: list[float] = []
        deadline = time.monotonic() + timeout
        perf = time.perf_counter_ns
        for i, msg in enumerate(work.rtt):
            t0 = perf()
            conn.send_dist(msg, timeout)
            while True:
                event = self._next(deadline)
                if type(event) is dist_frames:
                    break
            t1 = perf()
            if event.frames != [msg]:
                raise CorrectnessError(f"rtt: echo {i} came back as {event.frames[:3]!r}")
            if i >= warmup:
                samples.append((t1 - t0) / 1000)
        return samples

    def frames(self, work: Workload) -> dict[str, Any]:
        conn = self.conn
        timeout = self.timeout
        deadline = time.monotonic() + timeout
        send = conn.send_dist
        payloads = work.frames
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        try:
            for start in range(0, len(payloads), 4096):
                if time.monotonic() > deadline:
                    raise BenchFailure(f"frames: sending did not finish within {timeout} s")
                for p in payloads[start:start + 4096]:
                    send(p, timeout)
            send(b"D", timeout)
        except self._timeout_error:
            raise BenchFailure(f"frames: sending did not finish within {timeout} s") from None
        while True:
            event = self._next(deadline)
            if type(event) is self._dist_frames:
                break
        t1 = time.perf_counter()
        cpu1 = time.process_time()
        if len(event.frames) != 1:
            raise CorrectnessError(f"frames: expected one reply, got {len(event.frames)} frames")
        checked = _check_reply("frames", event.frames[0], len(payloads), work.frames_bytes,
                               work.frames_sha256)
        return {"frames_per_s": len(payloads) / (t1 - t0),
                **_run_info(t1 - t0, cpu1 - cpu0, checked, datagram_size_of(conn))}


# ---------------------------------------------------------------------------
# aioquic (asyncio) client


class AioquicClient:
    """aioquic's asyncio client: one connection, the scenarios run on it in order."""

    def __init__(self, port: int, datagram_size: int, certs: CertFiles, timeout: float) -> None:
        self.port = port
        self.datagram_size = datagram_size
        self.certs = certs
        self.timeout = timeout

    def _configuration(self) -> Any:
        from aioquic.quic.configuration import QuicConfiguration

        configuration = QuicConfiguration(is_client=True, alpn_protocols=[ALPN],
                                          max_datagram_size=self.datagram_size)
        configuration.load_verify_locations(cafile=self.certs.ca)
        configuration.verify_mode = ssl.CERT_REQUIRED
        return configuration

    def session(self, steps: list[Callable[[Any], Any]]) -> None:
        """Connect once and await each step (a coroutine function of the client) in order."""
        asyncio.run(self._session(steps))

    async def _session(self, steps: list[Callable[[Any], Any]]) -> None:
        from aioquic.asyncio import connect

        cm = connect("127.0.0.1", self.port, configuration=self._configuration())
        async with asyncio.timeout(self.timeout):
            client = await cm.__aenter__()
        try:
            for step in steps:
                await step(client)
        finally:
            try:
                async with asyncio.timeout(5.0):
                    await cm.__aexit__(None, None, None)
            except TimeoutError:
                pass

    def _size(self, client: Any) -> int | None:
        return getattr(client._quic, "_max_datagram_size", None)

    def _why(self, client: Any, what: str, exc: BaseException) -> BenchFailure:
        """A failure, with the QUIC close that caused it when there was one."""
        close = getattr(client._quic, "_close_event", None)
        if close is not None:
            return BenchFailure(f"{what}: connection closed (error 0x{close.error_code:x}: "
                                f"{close.reason_phrase})")
        if isinstance(exc, TimeoutError):
            return BenchFailure(f"{what}: no answer within {self.timeout} s")
        return BenchFailure(f"{what}: {_describe(exc)}")

    async def bulk(self, client: Any, work: Workload, chunk: int) -> dict[str, Any]:
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await client.create_stream()
                writer.write(b"B")
                data = memoryview(work.bulk)
                for off in range(0, len(data), chunk):
                    writer.write(data[off:off + chunk])
                    await asyncio.sleep(0)  # let the loop send and read acks
                writer.write_eof()
                reply = await reader.readexactly(REPLY.size)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as exc:
            raise self._why(client, "bulk", exc) from None
        t1 = time.perf_counter()
        cpu1 = time.process_time()
        size = len(work.bulk)
        checked = _check_reply("bulk", reply, size, size, work.bulk_sha256)
        return {"mb_per_s": size / (t1 - t0) / MB,
                **_run_info(t1 - t0, cpu1 - cpu0, checked, self._size(client))}

    async def rtt(self, client: Any, work: Workload, warmup: int) -> list[float]:
        samples: list[float] = []
        perf = time.perf_counter_ns
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await client.create_stream()
                writer.write(b"E")
                for i, msg in enumerate(work.rtt):
                    t0 = perf()
                    writer.write(msg)
                    echo = await reader.readexactly(RTT_SIZE)
                    t1 = perf()
                    if echo != msg:
                        raise CorrectnessError(f"rtt: echo {i} came back as {echo!r}")
                    if i >= warmup:
                        samples.append((t1 - t0) / 1000)
                writer.write_eof()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as exc:
            raise self._why(client, "rtt", exc) from None
        return samples

    async def frames(self, client: Any, work: Workload) -> dict[str, Any]:
        payloads = work.frames
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await client.create_stream()
                writer.write(b"F")
                write = writer.write
                for start in range(0, len(payloads), 1024):
                    for p in payloads[start:start + 1024]:
                        write(len(p).to_bytes(4, "big") + p)
                    await asyncio.sleep(0)  # let the loop send and read acks
                writer.write_eof()
                reply = await reader.readexactly(REPLY.size)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as exc:
            raise self._why(client, "frames", exc) from None
        t1 = time.perf_counter()
        cpu1 = time.process_time()
        checked = _check_reply("frames", reply, len(payloads), work.frames_bytes,
                               work.frames_sha256)
        return {"frames_per_s": len(payloads) / (t1 - t0),
                **_run_info(t1 - t0, cpu1 - cpu0, checked, self._size(client))}


# ---------------------------------------------------------------------------
# One (implementation, configuration)


class _Recorder:
    """Collects one (implementation, configuration)'s results and its errors."""

    def __init__(self, impl: str, configuration: Configuration) -> None:
        self.impl = impl
        self.label = f"{impl} {configuration.id}"
        self.results: dict[str, Any] = {}
        self.errors: list[str] = []
        self.server: ServerProcess | None = None

    def fail(self, scenario: str, exc: BaseException) -> None:
        server = self.server
        tail = "" if server is None or server.alive() else (
            f" (server exited with status {server.proc.poll()}){server.stderr_tail()}")
        message = _describe(exc) + tail
        self.results[scenario] = {"error": message}
        # A wrong answer is always an error; a quicdist run that cannot
        # complete (stall, crash, refused configuration) is one too. The
        # baseline failing is only reported in its cell.
        if isinstance(exc, CorrectnessError) or self.impl == "quicdist":
            self.errors.append(f"{scenario} {self.label}: {message}")


def measure_one(impl: str, configuration: Configuration, work: Workload, settings: Settings,
                certs: CertFiles, workdir: str, progress: Callable[[str], None]
                ) -> tuple[dict[str, Any], list[str]]:
    """Start a server, run the configuration's scenarios; returns (results, errors)."""
    rec = _Recorder(impl, configuration)
    scenarios = configuration.scenarios
    try:
        server = ServerProcess(impl, configuration, certs, workdir, settings.server_lifetime)
    except OSError as exc:
        for scenario in scenarios:
            rec.fail(scenario, exc)
        return rec.results, rec.errors
    rec.server = server
    with server:
        try:
            server.wait_ready(SERVER_READY_TIMEOUT)
        except BenchFailure as exc:
            for scenario in scenarios:
                rec.fail(scenario, exc)
            return rec.results, rec.errors
        rec.results["server"] = {"pid": server.pid,
                                 "compiled_extension_used": server.compiled_extension_used}
        if impl == "quicdist":
            _run_quicdist(server, configuration, work, settings, certs, rec, progress)
        else:
            _run_aioquic(server, configuration, work, settings, certs, rec, progress)
    return rec.results, rec.errors


def _run_quicdist(server: ServerProcess, configuration: Configuration, work: Workload,
                  settings: Settings, certs: CertFiles, rec: _Recorder,
                  progress: Callable[[str], None]) -> None:
    # The main runs: the server reads events with next_event() on its main
    # thread. The "_server_on_event" variants: the server answers in the
    # listener's on_event callback, on its I/O thread; the difference is the
    # cost of handing each event to another thread.
    variants = [("", server.port, configuration.scenarios,
                 "its main thread, events read with next_event()")]
    extra = tuple(s for s in configuration.scenarios if s in settings.on_event_scenarios)
    if extra and server.callback_port:
        variants.append(("_server_on_event", server.callback_port, extra,
                         "its I/O thread, in the Listener's on_event callback"))
    for suffix, port, scenarios, where in variants:
        try:
            client = QuicdistClient(port, configuration, certs, settings.timeout)
        except Exception as exc:  # noqa: BLE001 - any failure to connect is reported
            for scenario in scenarios:
                rec.fail(scenario + suffix, exc)
            continue
        try:
            for scenario in scenarios:
                key = scenario + suffix
                progress(f"carrier {key} {rec.label}")
                try:
                    if scenario == "rtt":
                        result = _rtt_summary(client.rtt(work, settings.rtt_warmup))
                    elif scenario == "bulk":
                        result = _bulk_result([client.bulk(work, settings.write_chunk)
                                               for _ in range(settings.repeats)], work)
                    else:
                        result = _frames_result([client.frames(work)
                                                 for _ in range(settings.repeats)], work)
                    rec.results[key] = {"server_handles_events_on": where, **result}
                except Exception as exc:  # noqa: BLE001
                    rec.fail(key, exc)
            rec.results["client_udp" + suffix] = client.udp_counters()
        finally:
            client.close()


def _run_aioquic(server: ServerProcess, configuration: Configuration, work: Workload,
                 settings: Settings, certs: CertFiles, rec: _Recorder,
                 progress: Callable[[str], None]) -> None:
    client = AioquicClient(server.port, configuration.datagram_size, certs, settings.timeout)

    def step(scenario: str) -> Callable[[Any], Any]:
        async def run(conn: Any) -> None:
            progress(f"carrier {scenario} {rec.label}")
            try:
                if scenario == "rtt":
                    rec.results["rtt"] = _rtt_summary(
                        await client.rtt(conn, work, settings.rtt_warmup))
                elif scenario == "bulk":
                    runs = [await client.bulk(conn, work, settings.write_chunk)
                            for _ in range(settings.repeats)]
                    rec.results["bulk"] = _bulk_result(runs, work)
                else:
                    runs = [await client.frames(conn, work) for _ in range(settings.repeats)]
                    rec.results["frames"] = _frames_result(runs, work)
            except Exception as exc:  # noqa: BLE001
                rec.fail(scenario, exc)
        return run

    try:
        client.session([step(s) for s in configuration.scenarios])
    except Exception as exc:  # noqa: BLE001 - e.g. the connection never came up
        for scenario in configuration.scenarios:
            if scenario not in rec.results:
                rec.fail(scenario, exc)


def _bulk_result(runs: list[dict[str, Any]], work: Workload) -> dict[str, Any]:
    return _throughput_result(runs, "mb_per_s", "mb_per_cpu_s", len(work.bulk) / MB,
                              bytes=len(work.bulk), verified="byte count and SHA-256")


def _frames_result(runs: list[dict[str, Any]], work: Workload) -> dict[str, Any]:
    return _throughput_result(runs, "frames_per_s", "frames_per_cpu_s", len(work.frames),
                              frames=len(work.frames), payload_bytes=FRAME_SIZE,
                              verified="frame count and SHA-256 of the payloads")


# ---------------------------------------------------------------------------
# Environment and the whole run


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def environment() -> dict[str, Any]:
    from quicdist import _accel

    env = base_environment()
    try:
        aioquic_version: str | None = importlib.metadata.version("aioquic")
    except importlib.metadata.PackageNotFoundError:
        aioquic_version = None
    env["compiled_extension_used_by_client"] = _accel.USING_EXTENSION
    env["quicdist_has_pmtu_discovery"] = has_pmtud()
    env["aioquic_version"] = aioquic_version
    env["net_core_rmem_max"] = _read_int("/proc/sys/net/core/rmem_max")
    env["net_core_wmem_max"] = _read_int("/proc/sys/net/core/wmem_max")
    env["loopback_mtu"] = _read_int("/sys/class/net/lo/mtu")
    return env


def configurations(settings: Settings, impl_ids: tuple[str, ...]) -> list[Configuration]:
    pmtud = has_pmtud()
    pinned = " (quicdist's path-MTU discovery off)" if pmtud else ""
    out = []
    for size in settings.datagram_sizes:
        jumbo = size != STANDARD_DATAGRAM
        wanted = settings.jumbo_scenarios if jumbo else SCENARIOS
        scenarios = tuple(s for s in settings.scenarios if s in wanted)
        if not scenarios:
            continue
        label = (f"loopback jumbo: fixed {size}-byte datagrams on both sides{pinned}; only "
                 "meaningful where the path carries them") if jumbo else (
                 f"standard: fixed {size}-byte datagrams on both sides{pinned}")
        out.append(Configuration(f"mds_{size}", label, size, False if pmtud else None,
                                 impl_ids, scenarios))
    scenarios = tuple(s for s in settings.scenarios if s in settings.jumbo_scenarios)
    if settings.pmtud_config and pmtud and "quicdist" in impl_ids and scenarios:
        out.append(Configuration(
            "quicdist_defaults_pmtud",
            f"quicdist's defaults: starts at {STANDARD_DATAGRAM} bytes and discovers larger "
            "datagrams (loopback jumbo); aioquic has no discovery, so the ratios use its "
            f"fixed-{STANDARD_DATAGRAM} results",
            STANDARD_DATAGRAM, None, ("quicdist",), scenarios, baseline=f"mds_{STANDARD_DATAGRAM}"))
    return out


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return round(num / den, 3)


def _value(results: dict[str, Any], impl: str, scenario: str, key: str) -> float | None:
    row = (results.get(impl) or {}).get(scenario) or {}
    value = row.get(key)
    return value if isinstance(value, (int, float)) else None


def run(impl_ids: tuple[str, ...] = IMPL_IDS, quick: bool = False,
        settings: Settings | None = None, progress: bool = False) -> dict[str, Any]:
    """Run the benchmark and return the JSON document (see bench/README.md)."""
    settings = settings or (QUICK if quick else DEFAULT)
    say = progress_printer(progress)
    errors: list[str] = []
    columns: dict[str, Any] = {}
    started = time.monotonic()
    work = make_workload(settings)
    workdir = tempfile.mkdtemp(prefix="quicdist-bench-carrier-")
    try:
        certs = make_certs(workdir)
        for configuration in configurations(settings, impl_ids):
            results: dict[str, Any] = {}
            for impl in configuration.impls:
                row, errs = measure_one(impl, configuration, work, settings, certs, workdir,
                                        say)
                results[impl] = row
                errors.extend(errs)
            base = results
            if configuration.baseline is not None:
                base = (columns.get(configuration.baseline) or {}).get("results") or {}
            q, a = "quicdist", "aioquic"
            columns[configuration.id] = {
                "label": configuration.label,
                "max_datagram_size": configuration.datagram_size,
                "quicdist_pmtu_discovery": configuration.pmtud,
                "scenarios": list(configuration.scenarios),
                "results": results,
                "ratios_baseline": configuration.baseline or configuration.id,
                "ratios_quicdist_over_aioquic": {
                    "bulk_mb_per_s": _ratio(_value(results, q, "bulk", "mb_per_s"),
                                            _value(base, a, "bulk", "mb_per_s")),
                    "frames_per_s": _ratio(_value(results, q, "frames", "frames_per_s"),
                                           _value(base, a, "frames", "frames_per_s")),
                    "bulk_mb_per_cpu_s": _ratio(_value(results, q, "bulk", "mb_per_cpu_s"),
                                            _value(base, a, "bulk", "mb_per_cpu_s")),
                "frames_per_cpu_s": _ratio(_value(results, q, "frames", "frames_per_cpu_s"),
                                           _value(base, a, "frames", "frames_per_cpu_s")),
                "rtt_p50_us": _ratio(_value(results, q, "rtt", "p50_us"),
                                         _value(base, a, "rtt", "p50_us")),
                    "rtt_p99_us": _ratio(_value(results, q, "rtt", "p99_us"),
                                         _value(base, a, "rtt", "p99_us")),
                    "rtt_server_on_event_p50_us": _ratio(
                        _value(results, q, "rtt_server_on_event", "p50_us"),
                        _value(base, a, "rtt", "p50_us")),
                },
            }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    return {
        "benchmark": "carrier",
        "units": {
            "mb_per_s": "10^6 bytes per second of application data, median over repeats "
                        "(best_ and runs_ alongside)",
            "frames_per_s": "application messages per second, median over repeats",
            "rtt": "microseconds per round trip, measured by the client (nearest-rank "
                   "percentiles)",
            "ratios": "quicdist / aioquic: above 1 is better for throughput, below 1 is "
                      "better for latency",
            "cpu_s": "process CPU seconds (all threads) during one run, client and server",
            "per_cpu_s": "mb_per_cpu_s / frames_per_cpu_s: the amount moved per CPU second "
                         "of client and server together (median over repeats); steadier than "
                         "the wall-clock rates when the machine is busy",
        },
        "environment": environment(),
        "settings": {
            "quick": quick,
            "implementations": {
                "quicdist": "quicdist.sync.connect / Listener, CarrierConfig(max_datagram_size=N"
                            ", pmtu_discovery as per configuration), other settings default; "
                            "client and server read events with next_event() (plus an RTT "
                            "variant whose server echoes from on_event); mutual TLS "
                            "verify_peer",
                "aioquic": "aioquic.asyncio.connect / serve, default QuicConfiguration except "
                           "certificate, ALPN erlang-dist and max_datagram_size=N; server "
                           "handles quic_event_received, client uses create_stream() reader/"
                           "writer",
            },
            "selected": list(impl_ids),
            "bulk_bytes": settings.bulk_bytes,
            "write_chunk": settings.write_chunk,
            "rtt_message_bytes": RTT_SIZE,
            "rtt_count": settings.rtt_count,
            "rtt_warmup": settings.rtt_warmup,
            "frames": settings.frames,
            "frame_payload_bytes": FRAME_SIZE,
            "repeats": settings.repeats,
            "datagram_sizes": list(settings.datagram_sizes),
            "scenarios": list(settings.scenarios),
            "timeout_per_run_s": settings.timeout,
            "wall_seconds": round(time.monotonic() - started, 1),
            "note": ("no datagram size above 16384 by default: aioquic 1.7.2 writes STREAM "
                     "frame lengths as 2-byte varints, so datagrams above "
                     f"{AIOQUIC_LARGEST_WORKING_DATAGRAM} bytes corrupt frames "
                     "(FRAME_ENCODING_ERROR) in aioquic itself and in quicdist"),
        },
        "configurations": columns,
        "targets": _targets(columns),
        "errors": errors,
    }


def _targets(columns: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, for reading only: benchmarks never gate anything."""
    std = (columns.get(f"mds_{STANDARD_DATAGRAM}") or {}).get("results", {})
    q_bulk = _value(std, "quicdist", "bulk", "mb_per_s")
    a_bulk = _value(std, "aioquic", "bulk", "mb_per_s")
    jumbo = {cid: _value(c["results"], "quicdist", "bulk", "mb_per_s")
             for cid, c in columns.items() if cid != f"mds_{STANDARD_DATAGRAM}"}
    best_jumbo = max((v for v in jumbo.values() if v is not None), default=None)
    q_rtt = _value(std, "quicdist", "rtt", "p50_us")
    a_rtt = _value(std, "aioquic", "rtt", "p50_us")
    frames = {cid: _value(c["results"], "quicdist", "frames", "frames_per_s")
              for cid, c in columns.items()}
    std_frames = frames.get(f"mds_{STANDARD_DATAGRAM}")
    return [
        {"target": "bulk throughput at max_datagram_size 1452 >= 2x the aioquic baseline",
         "quicdist_mb_per_s": q_bulk, "aioquic_mb_per_s": a_bulk,
         "ratio": _ratio(q_bulk, a_bulk),
         "met": None if q_bulk is None or a_bulk is None else q_bulk >= 2 * a_bulk},
        {"target": "bulk throughput on loopback with large datagrams >= 150 MB/s "
                   "(judged on the best of the jumbo and discovery configurations)",
         "quicdist_mb_per_s": jumbo, "best": best_jumbo,
         "met": None if best_jumbo is None else best_jumbo >= 150},
        {"target": "RTT p50 of 32-byte messages no worse than the aioquic baseline "
                   "(quicdist server echoing from next_event)",
         "quicdist_p50_us": q_rtt, "aioquic_p50_us": a_rtt,
         "quicdist_server_on_event_p50_us": _value(std, "quicdist", "rtt_server_on_event",
                                                   "p50_us"),
         "met": None if q_rtt is None or a_rtt is None else q_rtt <= a_rtt},
        {"target": "small frames (40 bytes) >= 200,000 frames/s (judged at 1452)",
         "quicdist_frames_per_s": frames,
         "met": None if std_frames is None else std_frames >= 200_000},
    ]


# ---------------------------------------------------------------------------
# CLI helpers used by bench/__main__.py


def settings_from_args(args: argparse.Namespace) -> Settings:
    changes: dict[str, Any] = {}
    if args.bulk_mib is not None:
        changes["bulk_bytes"] = int(args.bulk_mib * MiB)
    if args.no_pmtud_config:
        changes["pmtud_config"] = False
    return override(QUICK if args.quick else DEFAULT, args,
                    (("repeats", "repeats"), ("rtt_count", "rtt_count"), ("frames", "frames"),
                     ("datagram_sizes", "datagram_sizes"), ("scenarios", "scenarios"),
                     ("timeout", "timeout"), ("server_on_event", "on_event_scenarios")),
                    **changes)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    def sizes(text: str) -> tuple[int, ...]:
        try:
            values = tuple(dict.fromkeys(int(v) for v in text.split(",") if v.strip()))
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
        if not values or any(not 1200 <= v <= 65527 for v in values):
            raise argparse.ArgumentTypeError("datagram sizes must be in 1200..65527")
        return values

    def scenarios(text: str) -> tuple[str, ...]:
        values = tuple(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
        unknown = [v for v in values if v not in SCENARIOS]
        if not values or unknown:
            raise argparse.ArgumentTypeError(
                f"unknown scenario {', '.join(unknown) or text!r}; choose from "
                + ", ".join(SCENARIOS))
        return values

    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, one repeat (smoke runs, noisy numbers)")
    parser.add_argument("--scenarios", type=scenarios, default=None, metavar="LIST",
                        help="comma-separated subset of " + ", ".join(SCENARIOS))
    parser.add_argument("--datagram-sizes", type=sizes, default=None, metavar="LIST",
                        help="fixed max_datagram_size values (default 1452,16384)")
    parser.add_argument("--no-pmtud-config", action="store_true",
                        help="skip the quicdist-defaults (path-MTU discovery) configuration")
    parser.add_argument("--server-on-event", type=scenarios, default=None, metavar="LIST",
                        help="scenarios also run against a quicdist server that answers in "
                        "on_event, on its I/O thread (default: rtt)")
    parser.add_argument("--repeats", type=_positive(int), default=None,
                        help="runs of bulk and frames per configuration (default 3)")
    parser.add_argument("--bulk-mib", type=_positive(float), default=None,
                        help="bulk transfer size in MiB (default 64)")
    parser.add_argument("--rtt-count", type=_positive(int), default=None,
                        help="round trips measured (default 5000)")
    parser.add_argument("--frames", type=_positive(int), default=None,
                        help="40-byte frames per run (default 200000)")
    add_timeout_argument(parser)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        sys.exit(server_main(sys.argv[2:]))
    print("usage: python -m bench carrier [options]  (this module's own entry point only "
          "runs servers: python -m bench.carrier serve IMPL ...)", file=sys.stderr)
    sys.exit(2)
