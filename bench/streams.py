"""User-stream benchmark: StreamRef between a Node here and a peer Node in its own process.

Both nodes run on 127.0.0.1 with development certificates (made in a
temporary directory), mutual TLS (``verify_peer``) and the default
``CarrierConfig``, and use the public user-stream API only
(:meth:`quicdist.Node.open_stream`, :meth:`quicdist.Node.accept_streams`,
:class:`quicdist.StreamRef`). The peer (``python -m bench.streams serve
...``) accepts every stream on a pool of acceptor threads and serves each
on its own thread by the stream's first byte: ``S`` (sink: reads to FIN,
answers with the byte count and SHA-256 of what followed) or ``E`` (echo:
every chunk back, FIN after FIN).

Measured, side by side in one run (each checked; a wrong answer is an
error, exit status 1):

* ``bulk.one_stream``: 64 MiB of random bytes on one stream, in 64 KiB
  sends, then FIN; MB/s = bytes / (first send until the sink's answer
  arrived);
* ``bulk.aioquic_baseline``: the same transfer with ``python -m bench
  carrier``'s plain aioquic (asyncio) client and server, at 1452-byte
  datagrams (aioquic has no path-MTU discovery), measured in this run;
  ``bulk.quicdist_carrier``: quicdist's carrier alone (defaults), for the
  cost of the node layer;
* ``bulk.parallel_16``: 16 streams at once, 4 MiB each (64 MiB in all),
  one writer thread per stream; aggregate MB/s = all bytes / (start until
  the last answer);
* ``latency.open_to_first_byte``: ``open_stream()``, a 32-byte request,
  until the first byte of its echo is back (the peer accepts, hands the
  stream to a new thread, which echoes);
* ``latency.urgent_rtt_idle`` / ``latency.urgent_rtt_under_bulk``: 32-byte
  round trips on a priority-16 stream, on an idle connection, then while a
  priority-255 stream sends bulk data as fast as it can (its MB/s meanwhile
  is reported, its bytes checked).

``run()`` returns the JSON document ``python -m bench streams`` prints.
Every wait has a timeout; the peer process is stopped in a ``finally``
block, exits on its own when this process goes away (its stdin closes),
and after ``peer_lifetime`` in any case.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import quicdist
from quicdist import Node, StreamRef
from quicdist.errors import QuicDistError

from . import carrier
from ._common import (
    BenchFailure,
    CorrectnessError,
    _announce,
    _describe,
    _exit_when_parent_goes,
    _positive,
    _round,
    _rtt_summary,
    add_timeout_argument,
    override,
    peer_server_parser,
    progress_printer,
)
from .node import PEER_READY_TIMEOUT, PeerProcess, _Book


MB = 1_000_000
MiB = 1024 * 1024
HOST = "127.0.0.1"
LOCAL_NAME = "bench@127.0.0.1"
PEER_NAME = "peer@127.0.0.1"
COOKIE = "quicdist-bench-cookie"
RTT_SIZE = 32
SINK = b"S"
ECHO = b"E"


@dataclass(frozen=True)
class Settings:
    bulk_bytes: int = 64 * MiB
    parallel: int = 16
    repeats: int = 3
    write_chunk: int = 64 * 1024
    opens: int = 500
    open_warmup: int = 20
    rtt_count: int = 2000
    rtt_warmup: int = 200
    baseline: bool = True  # also run the aioquic (and quicdist carrier) bulk baselines
    timeout: float = 120.0  # per run of one scenario
    peer_lifetime: float = 1800.0


DEFAULT = Settings()
QUICK = Settings(bulk_bytes=2 * MiB, parallel=4, repeats=1, opens=30, open_warmup=3,
                 rtt_count=100, rtt_warmup=10, timeout=30.0, peer_lifetime=120.0)


# ---------------------------------------------------------------------------
# The peer process: python -m bench.streams serve ...


def _serve(ref: StreamRef) -> None:
    """Serve one stream (this thread owns it) by its first byte."""
    try:
        first = ref.recv()
        if not first:
            ref.close()
            return
        mode, rest = first[:1], first[1:]
        if mode == SINK:
            cpu0 = time.process_time()
            digest = hashlib.sha256(rest)
            total = len(rest)
            for chunk in ref:
                total += len(chunk)
                digest.update(chunk)
            ref.send(f"{total} {digest.hexdigest()} {time.process_time() - cpu0:.6f}".encode(),
                     fin=True)
        elif mode == ECHO:
            if rest:
                ref.send(rest)
            for chunk in ref:
                ref.send(chunk)
            ref.close()
        else:
            ref.reset(1)
    except QuicDistError as exc:
        print(f"bench peer stream {ref.stream_id}: {_describe(exc)}", file=sys.stderr,
              flush=True)


def _accept_loop(acceptor: Any) -> None:
    while True:
        try:
            ref = acceptor.accept()
        except QuicDistError:
            return
        ready = threading.Event()

        def run(ref: StreamRef = ref, ready: threading.Event = ready) -> None:
            ready.wait()
            _serve(ref)

        thread = threading.Thread(target=run, name=f"bench-peer-stream-{ref.stream_id}",
                                  daemon=True)
        thread.start()
        ref.controlling_process(thread)
        ready.set()


def server_main(argv: list[str] | None = None) -> int:
    """Entry point of the peer process: ``python -m bench.streams serve ...``."""
    parser = peer_server_parser("python -m bench.streams serve", LOCAL_NAME, DEFAULT.timeout,
                                DEFAULT.peer_lifetime)
    parser.add_argument("--acceptors", type=int, default=4)
    args = parser.parse_args(argv)
    _exit_when_parent_goes(args.lifetime)
    try:
        peer = Node(PEER_NAME, cookie=COOKIE, port=0, host=HOST, certfile=args.cert,
                    keyfile=args.key, cafile=args.ca, verify="verify_peer", dns=False,
                    nodes={LOCAL_NAME: (HOST, args.local_port)},
                    send_timeout=args.send_timeout).start()
        for i in range(args.acceptors):
            threading.Thread(target=_accept_loop, args=(peer.accept_streams(LOCAL_NAME),),
                             name=f"bench-peer-acceptor-{i}", daemon=True).start()
        _announce(port=peer.port, fresh_ports=[])
        threading.Event().wait()  # until the parent closes our stdin (os._exit there)
    except Exception as exc:  # noqa: BLE001 - one line the parent can report
        print(f"bench peer failed: {_describe(exc)}", file=sys.stderr, flush=True)
        return 1
    return 0


class StreamsPeer(PeerProcess):
    """The peer node's process (bench.node's PeerProcess, running bench.streams)."""

    module = "bench.streams"

    def _extra_args(self, settings: Any) -> list[str]:
        return []  # no fresh nodes


# ---------------------------------------------------------------------------
# Measurements (this process)


def _check_answer(what: str, answer: bytes, nbytes: int, digest: str) -> float:
    """The sink's answer ``"<bytes> <sha256> <cpu>"``; returns the peer's CPU seconds."""
    try:
        count, hexdigest, cpu = answer.decode().split()
    except ValueError:
        raise CorrectnessError(f"{what}: malformed answer {answer[:80]!r}") from None
    if int(count) != nbytes or hexdigest != digest:
        raise CorrectnessError(f"{what}: the peer received {count} bytes (SHA-256 "
                               f"{hexdigest[:16]}...), {nbytes} were sent ({digest[:16]}...)")
    return float(cpu)


def _read_all(ref: StreamRef, what: str, timeout: float) -> bytes:
    try:
        return b"".join(iter(lambda: ref.recv(timeout=timeout), b""))
    except TimeoutError:
        raise BenchFailure(f"{what}: no answer within {timeout} s") from None


def _send_all(ref: StreamRef, data: memoryview, chunk: int) -> None:
    for off in range(0, len(data), chunk):
        ref.send(data[off:off + chunk])


def bulk_one_stream(local: Node, data: bytes, digest: str, settings: Settings
                    ) -> dict[str, Any]:
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    ref = local.open_stream(PEER_NAME)
    ref.settimeout(settings.timeout)
    ref.send(SINK)
    _send_all(ref, memoryview(data), settings.write_chunk)
    ref.close()
    answer = _read_all(ref, "bulk one stream", settings.timeout)
    t1 = time.perf_counter()
    cpu = time.process_time() - cpu0
    peer_cpu = _check_answer("bulk one stream", answer, len(data), digest)
    return {"mb_per_s": len(data) / (t1 - t0) / MB, "seconds": t1 - t0, "local_cpu_s": cpu,
            "peer_cpu_s": peer_cpu}


def bulk_parallel(local: Node, data: bytes, settings: Settings) -> dict[str, Any]:
    n = settings.parallel
    share = len(data) // n
    pieces = [memoryview(data)[i * share:(i + 1) * share] for i in range(n)]
    digests = [hashlib.sha256(p).hexdigest() for p in pieces]
    failures: list[BaseException] = []
    answers: list[float] = [0.0] * n
    start = threading.Barrier(n + 1)

    def one(i: int) -> None:
        try:
            start.wait(settings.timeout)
            ref = local.open_stream(PEER_NAME)
            ref.settimeout(settings.timeout)
            ref.send(SINK)
            _send_all(ref, pieces[i], settings.write_chunk)
            ref.close()
            answer = _read_all(ref, f"parallel stream {i}", settings.timeout)
            answers[i] = _check_answer(f"parallel stream {i}", answer, share, digests[i])
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=one, args=(i,), name=f"bench-writer-{i}")
               for i in range(n)]
    for thread in threads:
        thread.start()
    cpu0 = time.process_time()
    start.wait(settings.timeout)
    t0 = time.perf_counter()
    for thread in threads:
        thread.join(settings.timeout)
    t1 = time.perf_counter()
    if any(thread.is_alive() for thread in threads):
        raise BenchFailure(f"parallel streams: not done within {settings.timeout} s")
    if failures:
        raise failures[0]
    total = share * n
    # Each sink reports the peer process's CPU time since its stream began:
    # they overlap, so the largest is the peer's CPU time for the run.
    return {"mb_per_s": total / (t1 - t0) / MB, "seconds": t1 - t0,
            "local_cpu_s": time.process_time() - cpu0, "peer_cpu_s": max(answers)}


def _echo_round_trip(ref: StreamRef, message: bytes, timeout: float) -> None:
    ref.send(message)
    got = b""
    while len(got) < len(message):
        chunk = ref.recv(timeout=timeout)
        if not chunk:
            raise CorrectnessError("echo: the stream ended early")
        got += chunk
    if got != message:
        raise CorrectnessError(f"echo: {message!r} came back as {got!r}")


def open_to_first_byte(local: Node, settings: Settings) -> list[float]:
    samples = []
    perf = time.perf_counter
    for i in range(settings.open_warmup + settings.opens):
        message = ECHO + (b"%031d" % i)
        t0 = perf()
        ref = local.open_stream(PEER_NAME)
        ref.send(message)
        first = ref.recv(timeout=settings.timeout)
        t1 = perf()
        rest = message[1:]
        got = first
        ref.close()
        got += _read_all(ref, "open to first byte", settings.timeout)
        if got != rest:
            raise CorrectnessError(f"open to first byte {i}: echo {got!r}")
        if i >= settings.open_warmup:
            samples.append((t1 - t0) * 1e6)
    return samples


def urgent_rtt(local: Node, settings: Settings) -> list[float]:
    ref = local.open_stream(PEER_NAME, priority=16)
    ref.send(ECHO)
    samples = []
    perf = time.perf_counter
    try:
        for i in range(settings.rtt_warmup + settings.rtt_count):
            message = b"%032d" % i
            t0 = perf()
            _echo_round_trip(ref, message, settings.timeout)
            t1 = perf()
            if i >= settings.rtt_warmup:
                samples.append((t1 - t0) * 1e6)
    finally:
        ref.close()
    return samples


def urgent_rtt_under_bulk(local: Node, data: bytes, settings: Settings
                          ) -> tuple[list[float], dict[str, Any]]:
    """Urgent round trips while a priority-255 stream sends as fast as it can."""
    bulk = local.open_stream(PEER_NAME, priority=255)
    stop = threading.Event()
    flowing = threading.Event()
    handed = threading.Event()
    failures: list[BaseException] = []
    sent = [0]
    drained = [0.0]
    view = memoryview(data)
    chunk = settings.write_chunk

    def write() -> None:  # owns the bulk stream: writes until told, then checks the answer
        handed.wait(settings.timeout)
        digest = hashlib.sha256()
        try:
            bulk.settimeout(settings.timeout)
            bulk.send(SINK)
            off = 0
            while not stop.is_set():
                piece = view[off:off + chunk]
                bulk.send(piece)
                digest.update(piece)
                sent[0] += len(piece)
                off = (off + chunk) % len(view)
                if sent[0] >= 4 * MiB or sent[0] >= len(view):
                    flowing.set()
            bulk.close()
            t0 = time.perf_counter()
            answer = _read_all(bulk, "bulk under urgent", settings.timeout)
            drained[0] = time.perf_counter() - t0
            _check_answer("bulk under urgent", answer, sent[0], digest.hexdigest())
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)
            flowing.set()

    writer = threading.Thread(target=write, name="bench-bulk-writer")
    writer.start()
    bulk.controlling_process(writer)
    handed.set()
    try:
        if not flowing.wait(settings.timeout) or failures:
            raise BenchFailure(f"the bulk stream did not start: {failures}")
        t0 = time.perf_counter()
        samples = urgent_rtt(local, settings)
        t1 = time.perf_counter()
        during = sent[0]
    finally:
        stop.set()
        writer.join(settings.timeout)
    if writer.is_alive():
        raise BenchFailure(f"the bulk stream did not end within {settings.timeout} s")
    if failures:
        raise failures[0]
    return samples, {"bulk_mb_per_s_meanwhile": _round(during / (t1 - t0) / MB) if t1 > t0
                     else None,
                     "bulk_bytes_checked": sent[0],
                     "bulk_drain_after_s": _round(drained[0])}


def _throughput(runs: list[dict[str, Any]], nbytes: int, **info: Any) -> dict[str, Any]:
    rates = [r.pop("mb_per_s") for r in runs]
    per_cpu = [nbytes / MB / cpu for r in runs
               if (cpu := r["local_cpu_s"] + r["peer_cpu_s"]) > 0]
    return {**info, "bytes": nbytes, "mb_per_s": _round(statistics.median(rates)),
            "best_mb_per_s": _round(max(rates)), "runs_mb_per_s": [_round(v) for v in rates],
            "mb_per_cpu_s": _round(statistics.median(per_cpu)) if per_cpu else None,
            "runs": [{k: _round(v) for k, v in r.items()} for r in runs]}


def carrier_baselines(settings: Settings, say: Callable[[str], None]
                      ) -> tuple[dict[str, Any], list[str]]:
    """64 MiB bulk with bench.carrier: plain aioquic at 1452 bytes, quicdist's carrier."""
    csettings = replace(carrier.DEFAULT, bulk_bytes=settings.bulk_bytes,
                        repeats=settings.repeats, scenarios=("bulk",), rtt_count=1,
                        rtt_warmup=0, frames=0, timeout=settings.timeout,
                        server_lifetime=settings.peer_lifetime)
    work = carrier.make_workload(csettings)
    out: dict[str, Any] = {}
    errors: list[str] = []
    workdir = tempfile.mkdtemp(prefix="quicdist-bench-streams-carrier-")
    try:
        certs = carrier.make_certs(workdir)
        for key, impl, configuration in (
                ("aioquic_baseline", "aioquic", carrier.Configuration(
                    "mds_1452", "aioquic at 1452-byte datagrams", carrier.STANDARD_DATAGRAM,
                    None, ("aioquic",), ("bulk",))),
                ("quicdist_carrier", "quicdist", carrier.Configuration(
                    "quicdist_defaults", "quicdist's carrier with its defaults",
                    carrier.STANDARD_DATAGRAM, None, ("quicdist",), ("bulk",)))):
            results, errs = carrier.measure_one(impl, configuration, work, csettings, certs,
                                                workdir, lambda text: say(f"streams {text}"))
            cell = results.get("bulk", {"error": "not measured"})
            cell["what"] = configuration.label + " (python -m bench carrier, same run)"
            out[key] = cell
            errors.extend(f"baseline {e}" for e in errs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return out, errors


# ---------------------------------------------------------------------------
# The whole run


def environment() -> dict[str, Any]:
    env = carrier.environment()
    env["quicdist_using_extension"] = quicdist.USING_EXTENSION
    return env


def run(quick: bool = False, settings: Settings | None = None,
        progress: bool = False) -> dict[str, Any]:
    """Run the benchmark and return the JSON document (see bench/README.md)."""
    from quicdist.certs import make_dev_certs

    settings = settings or (QUICK if quick else DEFAULT)
    say = progress_printer(progress)

    errors: list[str] = []
    bulk: dict[str, Any] = {}
    latency: dict[str, Any] = {}
    peer_info: dict[str, Any] = {}
    started = time.monotonic()
    peer: StreamsPeer | None = None

    def attempt(where: dict[str, Any], key: str, fn: Callable[[], Any]) -> None:
        say(f"streams {key}")
        try:
            if peer is not None:
                peer.check_running()
            where[key] = fn()
        except Exception as exc:  # noqa: BLE001 - every failure is reported
            where[key] = {"error": _describe(exc)}
            errors.append(f"{key}: {_describe(exc)}")

    data = os.urandom(settings.bulk_bytes)
    digest = hashlib.sha256(data).hexdigest()
    workdir = tempfile.mkdtemp(prefix="quicdist-bench-streams-")
    local: Node | None = None
    try:
        certs = make_dev_certs(workdir, (LOCAL_NAME, PEER_NAME))
        book = _Book()
        mine = certs[LOCAL_NAME]
        local = Node(LOCAL_NAME, cookie=COOKIE, port=0, host=HOST, certfile=str(mine.certfile),
                     keyfile=str(mine.keyfile), cafile=str(certs["ca"].certfile),
                     verify="verify_peer", discovery=book, dns=False,
                     connect_timeout=min(settings.timeout, 30.0)).start()
        node = local
        peer = StreamsPeer(certs, local.port, settings, workdir)
        try:
            peer.wait_ready(PEER_READY_TIMEOUT)
        except Exception as exc:  # any failure to start: say it as a BenchFailure
            raise BenchFailure(str(exc)) from exc
        peer_info.update(pid=peer.pid, compiled_extension_used=peer.compiled_extension_used)
        book.table[PEER_NAME] = (HOST, peer.port)
        if not local.connect(PEER_NAME, timeout=settings.timeout):
            raise BenchFailure(f"cannot connect to the peer: "
                               f"{local.connection_error(PEER_NAME)}{peer.stderr_tail()}")

        attempt(bulk, "one_stream", lambda: _throughput(
            [bulk_one_stream(node, data, digest, settings) for _ in range(settings.repeats)],
            len(data), streams=1))
        attempt(bulk, f"parallel_{settings.parallel}", lambda: _throughput(
            [bulk_parallel(node, data, settings) for _ in range(settings.repeats)],
            len(data) // settings.parallel * settings.parallel, streams=settings.parallel))
        attempt(latency, "open_to_first_byte",
                lambda: _rtt_summary(open_to_first_byte(node, settings)))
        attempt(latency, "urgent_rtt_idle", lambda: _rtt_summary(urgent_rtt(node, settings)))

        def under_bulk() -> dict[str, Any]:
            samples, info = urgent_rtt_under_bulk(node, data, settings)
            return {**_rtt_summary(samples), **info}

        attempt(latency, "urgent_rtt_under_bulk", under_bulk)
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

    if settings.baseline:
        baselines, errs = carrier_baselines(settings, say)
        bulk.update(baselines)
        errors.extend(errs)

    return {
        "benchmark": "streams",
        "units": {
            "mb_per_s": "10^6 bytes per second of stream data, median over repeats (best_ "
                        "and runs_ alongside)",
            "mb_per_cpu_s": "10^6 bytes per CPU second of both processes together (all "
                            "threads), median over repeats",
            "latency": "microseconds, measured here (nearest-rank percentiles)",
        },
        "environment": environment(),
        "settings": {
            "quick": quick,
            "nodes": f"{LOCAL_NAME} in this process, {PEER_NAME} in another, 127.0.0.1, dev "
                     "certificates, verify_peer, default CarrierConfig (path-MTU discovery "
                     "on)",
            "bulk_bytes": settings.bulk_bytes,
            "parallel_streams": settings.parallel,
            "write_chunk": settings.write_chunk,
            "repeats": settings.repeats,
            "opens": settings.opens,
            "rtt_message_bytes": RTT_SIZE,
            "rtt_count": settings.rtt_count,
            "rtt_warmup": settings.rtt_warmup,
            "timeout_per_run_s": settings.timeout,
            "wall_seconds": round(time.monotonic() - started, 1),
        },
        "peer": peer_info,
        "bulk": bulk,
        "latency": latency,
        "targets": _targets(bulk, latency),
        "errors": errors,
    }


def _num(cell: dict[str, Any] | None, key: str) -> float | None:
    value = (cell or {}).get(key)
    return value if isinstance(value, (int, float)) else None


def _targets(bulk: dict[str, Any], latency: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, for reading only: benchmarks never gate anything."""
    one = _num(bulk.get("one_stream"), "mb_per_s")
    base = _num(bulk.get("aioquic_baseline"), "mb_per_s")
    idle = _num(latency.get("urgent_rtt_idle"), "p50_us")
    loaded = _num(latency.get("urgent_rtt_under_bulk"), "p50_us")
    return [
        {"target": "one-stream bulk (64 MiB) >= the plain-aioquic baseline's MB/s, "
                   "measured in the same run",
         "streams_mb_per_s": one, "aioquic_mb_per_s": base,
         "ratio": None if one is None or not base else round(one / base, 3),
         "met": None if one is None or base is None else one >= base},
        {"target": "urgent-stream RTT under bulk load <= 3x the idle RTT (p50)",
         "idle_p50_us": idle, "under_bulk_p50_us": loaded,
         "ratio": None if idle is None or loaded is None else round(loaded / idle, 3),
         "met": None if idle is None or loaded is None else loaded <= 3 * idle},
    ]


# ---------------------------------------------------------------------------
# CLI helpers used by bench/__main__.py


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and counts, one repeat (smoke runs, noisy numbers)")
    parser.add_argument("--bulk-mib", type=_positive(float), default=None,
                        help="bulk transfer size in MiB (default 64)")
    parser.add_argument("--parallel", type=_positive(int), default=None,
                        help="parallel streams sharing the bulk bytes (default 16)")
    parser.add_argument("--repeats", type=_positive(int), default=None,
                        help="runs of each bulk case (default 3)")
    parser.add_argument("--opens", type=_positive(int), default=None,
                        help="streams opened for the open-to-first-byte latency (default 500)")
    parser.add_argument("--rtt-count", type=_positive(int), default=None,
                        help="urgent round trips measured, idle and under load (default 2000)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the aioquic and quicdist-carrier bulk baselines")
    add_timeout_argument(parser)


def settings_from_args(args: argparse.Namespace) -> Settings:
    changes: dict[str, Any] = {}
    if args.bulk_mib is not None:
        changes["bulk_bytes"] = int(args.bulk_mib * MiB)
    if args.no_baseline:
        changes["baseline"] = False
    return override(QUICK if args.quick else DEFAULT, args,
                    ((attr, attr) for attr in ("parallel", "repeats", "opens", "rtt_count",
                                               "timeout")),
                    **changes)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        sys.exit(server_main(sys.argv[2:]))
    print("usage: python -m bench streams [options]  (this module's own entry point only "
          "runs the peer: python -m bench.streams serve ...)", file=sys.stderr)
    sys.exit(2)
