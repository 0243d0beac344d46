"""Python <-> Erlang over TCP distribution, next to Erlang <-> Erlang, in the same run.

Three nodes on 127.0.0.1, all on standard Erlang TCP distribution with the
local epmd: a quicdist ``Node(..., carrier="tcp")`` in this process
(``bench_py_<hex>``), and two ``erl -name`` nodes, ``A`` and ``B``, running
our helper module ``tests/erl/quicdist_interop.erl`` (compiled with ``erlc``
into a temporary directory). The Python node drives both Erlang nodes
through the distribution itself (commands to the helper's ``qd_ctl``).

Measured (each checked; a wrong answer is an error, exit status 1):

* ``throughput``: N messages ``{msg, I, <<Size x "x">>}`` one way, preceded
  by a start marker, counted at the receiver, which checks that ``I`` goes 0,
  1, 2... without a gap and that every payload is intact; msg/s = N / (start
  marker received .. last message received), timed by the receiver:

  * ``python_to_erlang``: a mailbox here sends to ``{qd_sink, A}``
    (REG_SEND); A's sink times and checks;
  * ``erlang_to_erlang``: B sends the same messages to the same
    ``{qd_sink, A}``, the same way (the baseline);
  * ``erlang_to_python``: A sends to a mailbox pid here (SEND), which times
    and checks them.

* ``latency``: ping-pong round trips of ``{From, I, <<16 bytes>>}`` answered
  with ``{echo, I, <<16 bytes>>}``: ``python_erlang`` (a mailbox here to
  ``{qd_echo, A}``, timed here), ``erlang_python`` (A to a Python echo
  mailbox served by a thread here, timed by A) and ``erlang_erlang`` (B to
  ``{qd_echo, A}``, timed by B).

``run()`` returns the JSON document ``python -m bench interop`` prints. Every
wait has a timeout; the erl processes are killed (with their process group)
in a ``finally`` block and halt on their own after ``erl_lifetime``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from quicdist import Atom, Mailbox, Node
from quicdist.errors import MailboxClosed, QuicDistTimeoutError

from ._common import (
    ROOT,
    BenchFailure,
    CorrectnessError,
    _Deadline,
    _describe,
    _payload,
    _positive,
    _round,
    _rtt_summary,
    _term_bytes,
    add_message_arguments,
    add_timeout_argument,
    node_environment,
    override,
    progress_printer,
)


HELPER = ROOT / "tests" / "erl" / "quicdist_interop.erl"
HOST = "127.0.0.1"
MB = 1_000_000
SMALL_PAYLOAD = 16
BINARY_PAYLOAD = 1024
RTT_PAYLOAD = 16
ERL_READY_TIMEOUT = 30.0
UNBOUNDED = 1 << 40
TARGET_RATIO = 0.5

MSG = Atom("msg")
START = Atom("start")
SINK_RESULT = Atom("sink_result")
ECHO = Atom("echo")


@dataclass(frozen=True)
class Settings:
    small_messages: int = 200_000
    binary_messages: int = 50_000
    repeats: int = 3
    rtt_count: int = 2000
    rtt_warmup: int = 200
    timeout: float = 120.0  # per run of one scenario
    erl_lifetime: float = 1800.0  # the erl nodes halt after this long, whatever happens


DEFAULT = Settings()
QUICK = Settings(small_messages=5000, binary_messages=2000, repeats=1, rtt_count=200,
                 rtt_warmup=20, timeout=30.0, erl_lifetime=180.0)


# ---------------------------------------------------------------------------
# The Erlang nodes


def missing_tools() -> list[str]:
    return [tool for tool in ("erl", "erlc", "epmd") if shutil.which(tool) is None]


def ensure_epmd(timeout: float = 5.0) -> None:
    """An epmd on 127.0.0.1 (``ERL_EPMD_PORT`` or 4369); started if none answers."""
    port = int(os.environ.get("ERL_EPMD_PORT", "4369"))
    try:
        socket.create_connection((HOST, port), timeout=1).close()
        return
    except OSError:
        pass
    subprocess.run(["epmd", "-daemon"], check=False, timeout=10)
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise BenchFailure(f"epmd did not start on port {port}") from None
            time.sleep(0.05)


def compile_helper(outdir: str) -> None:
    done = subprocess.run(["erlc", "-o", outdir, str(HELPER)], capture_output=True,
                          timeout=60, check=False)
    if done.returncode != 0:
        raise BenchFailure(f"erlc {HELPER.name} failed: "
                           f"{(done.stdout + done.stderr).decode(errors='replace')[-2000:]}")


class ErlProcess:
    """``erl -name NAME`` running the helper; always ended by :meth:`stop`."""

    def __init__(self, name: str, cookie: str, code: str, start: str, lifetime: float) -> None:
        self.name = name
        script = (f"spawn(fun() -> timer:sleep({int(lifetime * 1000)}), halt(3) end), "
                  f"{start}.")
        env = dict(os.environ, ERL_CRASH_DUMP_SECONDS="0", ERL_CRASH_DUMP=os.devnull)
        self.proc = subprocess.Popen(
            ["erl", "-name", name, "-setcookie", cookie, "-noinput", "-pa", code,
             "-eval", script],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True)
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name=f"bench-erl-{name}")
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._cond:
                self._lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def output_tail(self, limit: int = 600) -> str:
        with self._cond:
            text = "\n".join(self._lines).strip()
        return f"; erl {self.name} said: {text[-limit:]}" if text else ""

    def wait_ready(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self._lines:
                    if line.startswith("READY"):
                        return line
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    break
                self._cond.wait(left)
        why = "exited" if self._eof else f"was not ready within {timeout} s"
        raise BenchFailure(f"erl {self.name} {why}{self.output_tail()}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 9)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Control:
    """Commands to the helpers' ``qd_ctl`` (``{From, Ref, Command}`` -> ``{Ref, Result}``)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.box = node.mailbox(max_messages=UNBOUNDED)

    def __call__(self, erl: str, command: Any, timeout: float) -> Any:
        ref = self.node.make_ref()
        self.box.send(("qd_ctl", erl), (self.box.pid, ref, command), raise_nodedown=True)
        try:
            reply = self.box.receive(timeout, match=lambda m: (
                isinstance(m, tuple) and len(m) == 2 and m[0] == ref))
        except QuicDistTimeoutError:
            raise BenchFailure(f"{erl}: no answer to {command!r:.120} within {timeout} s"
                               ) from None
        result = reply[1]
        if isinstance(result, tuple) and result and result[0] == Atom("crashed"):
            raise BenchFailure(f"{erl}: command {command!r:.120} crashed: {result!r:.600}")
        return result

    def receive(self, match: Callable[[Any], bool], deadline: _Deadline, what: str) -> Any:
        try:
            return self.box.receive(deadline.left(what), match=match)
        except QuicDistTimeoutError:
            raise BenchFailure(f"{what}: no answer within {deadline.seconds} s") from None


# ---------------------------------------------------------------------------
# Throughput


def _check_sink(result: tuple[Any, ...], n: int, what: str) -> float:
    _, _, count, bad_order, bad_payload, micros = result
    if count != n or bad_order or bad_payload:
        raise CorrectnessError(f"{what}: the sink received {count} of {n} messages, "
                               f"{bad_order} out of order, {bad_payload} with a wrong payload")
    return float(micros) / 1e6


def _sink_result(run_id: int) -> Callable[[Any], bool]:
    return lambda m: isinstance(m, tuple) and len(m) == 6 and m[:2] == (SINK_RESULT, run_id)


def python_to_erlang(node: Node, ctl: Control, sink: tuple[str, str], n: int, size: int,
                     run_id: int, timeout: float) -> dict[str, Any]:
    """N messages from a mailbox here to ``{qd_sink, A}``; A's sink times them."""
    deadline = _Deadline(timeout)
    payload = _payload(size)
    with node.mailbox() as me:
        send = me.send
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        send(sink, (START, run_id, n, size, ctl.box.pid), raise_nodedown=True)
        for i in range(n):
            send(sink, (MSG, i, payload), raise_nodedown=True)
        t1 = time.perf_counter()
        cpu = time.process_time() - cpu0
    result = ctl.receive(_sink_result(run_id), deadline, "python -> erlang")
    seconds = _check_sink(result, n, "python -> erlang")
    return {"seconds": seconds, "sender_seconds": t1 - t0, "python_cpu_s": cpu}


def erlang_to_erlang(ctl: Control, sender: str, sink: tuple[str, str], n: int, size: int,
                     run_id: int, timeout: float) -> dict[str, Any]:
    """B sends the same N messages to ``{qd_sink, A}``; A's sink times them."""
    deadline = _Deadline(timeout)
    blasted = ctl(sender, (Atom("blast"), (Atom(sink[0]), Atom(sink[1])), run_id, n, size,
                           ctl.box.pid), timeout)
    result = ctl.receive(_sink_result(run_id), deadline, "erlang -> erlang")
    seconds = _check_sink(result, n, "erlang -> erlang")
    return {"seconds": seconds, "sender_seconds": float(blasted[1]) / 1e6}


def erlang_to_python(node: Node, ctl: Control, sender: str, n: int, size: int, run_id: int,
                     timeout: float) -> dict[str, Any]:
    """A sends N messages to a mailbox pid here, which checks and times them."""
    deadline = _Deadline(timeout)
    want = _payload(size)
    count = bad_order = bad_payload = 0
    with node.mailbox(max_messages=UNBOUNDED) as me:
        ref = node.make_ref()
        ctl.box.send(("qd_ctl", sender), (ctl.box.pid, ref, (
            Atom("blast"), me.pid, run_id, n, size, me.pid)), raise_nodedown=True)
        receive = me.receive
        cpu0 = time.process_time()
        try:
            first = receive(deadline.left("erlang -> python"))
            t0 = time.perf_counter()
            if first != (START, run_id, n, size, me.pid):
                raise CorrectnessError(f"erlang -> python: {first!r:.200} instead of the "
                                       f"start marker")
            for i in range(n):
                m = receive(deadline.left("erlang -> python"))
                if m[1] != i:
                    bad_order += 1
                if m[2] != want:
                    bad_payload += 1
                count += 1
            t1 = time.perf_counter()
        except QuicDistTimeoutError:
            raise BenchFailure(f"erlang -> python: {count} of {n} messages within "
                               f"{deadline.seconds} s") from None
        cpu = time.process_time() - cpu0
    blasted = ctl.receive(lambda m: isinstance(m, tuple) and len(m) == 2 and m[0] == ref,
                          deadline, "erlang -> python (the sender's answer)")[1]
    if bad_order or bad_payload:
        raise CorrectnessError(f"erlang -> python: {bad_order} of {n} messages out of order, "
                               f"{bad_payload} with a wrong payload")
    return {"seconds": t1 - t0, "sender_seconds": float(blasted[1]) / 1e6,
            "python_cpu_s": cpu}


def _throughput(runs: list[dict[str, Any]], n: int, size: int, how: str) -> dict[str, Any]:
    rates = [n / r["seconds"] for r in runs]
    median = statistics.median(rates)
    per_message = _term_bytes(n, size) / n
    return {
        "messages": n,
        "message": f"{{msg, I, <<{size} bytes>>}}",
        "payload_bytes": size,
        "term_bytes_per_message": _round(per_message),
        "msgs_per_s": _round(median),
        "mb_per_s": _round(median * per_message / MB),
        "best_msgs_per_s": _round(max(rates)),
        "runs_msgs_per_s": [_round(v) for v in rates],
        "how": how,
        "verified": "count, order (I = 0, 1, 2... without a gap) and payload of every message",
        "runs": [{k: _round(v) for k, v in r.items()} for r in runs],
    }


# ---------------------------------------------------------------------------
# Latency


def python_erlang_rtt(node: Node, echo: tuple[str, str], count: int, warmup: int,
                      timeout: float) -> list[float]:
    deadline = _Deadline(timeout)
    payload = _payload(RTT_PAYLOAD)
    samples = []
    perf = time.perf_counter
    with node.mailbox() as me:
        send, receive, pid = me.send, me.receive, me.pid
        for i in range(warmup + count):
            t0 = perf()
            send(echo, (pid, i, payload), raise_nodedown=True)
            try:
                reply = receive(deadline.left("python -> erlang round trip"))
            except QuicDistTimeoutError:
                raise BenchFailure(f"round trip {i}: no echo within {deadline.seconds} s"
                                   ) from None
            t1 = perf()
            if reply != (ECHO, i, payload):
                raise CorrectnessError(f"round trip {i}: echo {reply!r:.200}")
            if i >= warmup:
                samples.append((t1 - t0) * 1e6)
    return samples


def erlang_rtt(ctl: Control, erl: str, echo: tuple[str, str], count: int, warmup: int,
               timeout: float) -> list[float]:
    """Round trips timed by ``erl`` (its ``pingpong`` command) to ``echo``."""
    result = ctl(erl, (Atom("pingpong"), (Atom(echo[0]), Atom(echo[1])), count, warmup,
                       RTT_PAYLOAD), timeout)
    if not (isinstance(result, tuple) and result[0] == Atom("samples")):
        raise BenchFailure(f"{erl}: ping-pong to {echo} failed: {result!r:.200}")
    samples = [float(v) for v in result[1]]
    if len(samples) != count:
        raise CorrectnessError(f"{erl}: {len(samples)} round trips timed, {count} wanted")
    return samples


def _echo_loop(box: Mailbox) -> None:
    """``py_echo``: {From, I, Payload} is answered with {echo, I, Payload}."""
    receive, send = box.receive, box.send
    while True:
        try:
            m = receive()
        except MailboxClosed:
            return
        try:
            send(m[0], (ECHO, m[1], m[2]))
        except Exception as exc:  # noqa: BLE001 - say it, keep serving
            print(f"bench interop echo: {_describe(exc)}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# The whole run


environment = node_environment


def _ratio(a: dict[str, Any], b: dict[str, Any], key: str) -> float | None:
    x, y = a.get(key), b.get(key)
    if not isinstance(x, int | float) or not isinstance(y, int | float) or y <= 0:
        return None
    return round(x / y, 3)


def run(quick: bool = False, settings: Settings | None = None,
        progress: bool = False) -> dict[str, Any]:
    """Run the benchmark and return the JSON document (see bench/README.md)."""
    settings = settings or (QUICK if quick else DEFAULT)
    say = progress_printer(progress, "interop ")

    errors: list[str] = []
    throughput: dict[str, dict[str, Any]] = {
        "python_to_erlang": {}, "erlang_to_erlang": {}, "erlang_to_python": {}}
    latency: dict[str, Any] = {}
    erlang: dict[str, Any] = {}
    started = time.monotonic()
    erls: list[ErlProcess] = []

    def attempt(where: dict[str, Any], label: str, key: str, fn: Callable[[], Any]) -> None:
        say(label)
        try:
            for erl in erls:
                if not erl.alive():
                    raise BenchFailure(f"erl {erl.name} exited{erl.output_tail()}")
            where[key] = fn()
        except Exception as exc:  # noqa: BLE001 - every failure is reported
            where[key] = {"error": _describe(exc)}
            errors.append(f"{label}: {_describe(exc)}")

    tag = secrets.token_hex(4)
    cookie = f"quicdist-bench-{secrets.token_hex(8)}"
    py_name = f"bench_py_{tag}@{HOST}"
    a_name, b_name = f"bench_erl_a_{tag}@{HOST}", f"bench_erl_b_{tag}@{HOST}"
    workdir = tempfile.mkdtemp(prefix="quicdist-bench-interop-")
    node: Node | None = None
    echo_box: Mailbox | None = None
    try:
        missing = missing_tools()
        if missing:
            raise BenchFailure(f"{', '.join(missing)} not found: install erlang-nox "
                               f"(make bench does this); nothing was measured")
        ensure_epmd()
        compile_helper(workdir)
        node = Node(py_name, cookie=cookie, carrier="tcp", host=HOST,
                    connect_timeout=min(settings.timeout, 30.0), send_timeout=settings.timeout)
        node.start()
        local = node
        echo_box = node.mailbox("py_echo", max_messages=UNBOUNDED)
        threading.Thread(target=_echo_loop, args=(echo_box,), daemon=True,
                         name="bench-interop-echo").start()
        # A dials the Python node (net_adm:ping at its start); B is dialed by A's sends.
        for name, start in ((a_name, f"quicdist_interop:start('{py_name}')"),
                            (b_name, "quicdist_interop:start()")):
            erls.append(ErlProcess(name, cookie, workdir, start, settings.erl_lifetime))
        for erl in erls:
            line = erl.wait_ready(ERL_READY_TIMEOUT)
            if erl.name == a_name and not line.endswith(" pong"):
                raise BenchFailure(f"erl {a_name} could not reach {py_name}: {line}")
        ctl = Control(node)
        info = ctl(a_name, Atom("info"), settings.timeout)
        erlang.update(otp_release=info[4].decode(), erts_version=info[5].decode())
        if ctl(b_name, (Atom("ping"), Atom(a_name)), settings.timeout) != Atom("pong"):
            raise BenchFailure(f"{b_name} cannot reach {a_name}")
        if not node.connect(b_name, timeout=settings.timeout):
            raise BenchFailure(f"cannot connect to {b_name}: {node.connection_error(b_name)}")

        sink = ("qd_sink", a_name)
        run_ids = iter(range(1, 1 << 30))
        cases = (("small", settings.small_messages, SMALL_PAYLOAD),
                 ("binary_1kib", settings.binary_messages, BINARY_PAYLOAD))
        directions: tuple[tuple[str, Callable[[int, int, int], dict[str, Any]], str], ...] = (
            ("python_to_erlang",
             lambda n, size, rid: python_to_erlang(local, ctl, sink, n, size, rid,
                                                   settings.timeout),
             f"a mailbox of {py_name} sends to {{qd_sink, A}} (REG_SEND); A's sink times "
             "from the start marker to the last message"),
            ("erlang_to_erlang",
             lambda n, size, rid: erlang_to_erlang(ctl, b_name, sink, n, size, rid,
                                                   settings.timeout),
             "B sends to {qd_sink, A} (REG_SEND); A's sink times from the start marker "
             "to the last message"),
            ("erlang_to_python",
             lambda n, size, rid: erlang_to_python(local, ctl, a_name, n, size, rid,
                                                   settings.timeout),
             f"A sends to a mailbox pid of {py_name} (SEND); the mailbox's reader times "
             "from the start marker to the last message"),
        )
        for case, n, size in cases:
            for direction, fn, how in directions:
                def measure(fn=fn, n=n, size=size, how=how) -> dict[str, Any]:
                    runs = [fn(n, size, next(run_ids)) for _ in range(settings.repeats)]
                    return _throughput(runs, n, size, how)
                attempt(throughput[direction], f"{direction}.{case}", case, measure)

        count, warmup = settings.rtt_count, settings.rtt_warmup
        for key, fn in (
                ("python_erlang", lambda: python_erlang_rtt(
                    local, ("qd_echo", a_name), count, warmup, settings.timeout)),
                ("erlang_python", lambda: erlang_rtt(
                    ctl, a_name, ("py_echo", py_name), count, warmup, settings.timeout)),
                ("erlang_erlang", lambda: erlang_rtt(
                    ctl, b_name, ("qd_echo", a_name), count, warmup, settings.timeout))):
            attempt(latency, f"latency.{key}", key, lambda f=fn: _rtt_summary(f()))
        for erl in erls:
            tail = erl.output_tail()
            if "error" in tail.lower() or "crash" in tail.lower():
                erlang.setdefault("output", {})[erl.name] = tail
    except Exception as exc:  # noqa: BLE001 - the run could not even start
        errors.append(f"setup: {_describe(exc)}")
    finally:
        try:
            if node is not None:
                node.stop(timeout=5.0)
        finally:
            for erl in erls:
                erl.stop()
            shutil.rmtree(workdir, ignore_errors=True)

    ratios: dict[str, Any] = {}
    for case in ("small", "binary_1kib"):
        base = throughput["erlang_to_erlang"].get(case, {})
        ratios[f"{case}.python_to_erlang_over_erlang_to_erlang"] = _ratio(
            throughput["python_to_erlang"].get(case, {}), base, "msgs_per_s")
        ratios[f"{case}.erlang_to_python_over_erlang_to_erlang"] = _ratio(
            throughput["erlang_to_python"].get(case, {}), base, "msgs_per_s")
    for key in ("python_erlang", "erlang_python"):
        ratios[f"rtt_p50.{key}_over_erlang_erlang"] = _ratio(
            latency.get(key, {}), latency.get("erlang_erlang", {}), "p50_us")
    value = ratios["small.python_to_erlang_over_erlang_to_erlang"]
    targets = [{
        "target": f"python -> erlang message throughput >= {TARGET_RATIO} x erlang -> erlang "
                  "(small messages, the same run)",
        "value": value,
        "met": None if value is None else value >= TARGET_RATIO,
    }]

    return {
        "benchmark": "interop",
        "units": {
            "msgs_per_s": "messages per second counted at the receiver (start marker to last "
                          "message), median over repeats (best_ and runs_ alongside)",
            "mb_per_s": "10^6 bytes per second of the messages' ETF encoding "
                        "(term_bytes_per_message each; distribution headers not counted)",
            "latency": "microseconds per round trip, timed by the initiating side "
                       "(nearest-rank percentiles)",
            "ratios": "the first over the second (throughput: above 1 is faster than the "
                      "baseline; latency: above 1 is slower)",
        },
        "environment": environment(),
        "erlang": erlang,
        "settings": {
            "quick": quick,
            "nodes": f"{py_name} (quicdist, carrier='tcp', this process), A = {a_name} and "
                     f"B = {b_name} (erl -name, tests/erl/quicdist_interop.erl); 127.0.0.1, "
                     "epmd, default TcpConfig and default erl settings",
            "small_messages": settings.small_messages,
            "binary_messages": settings.binary_messages,
            "repeats": settings.repeats,
            "rtt_count": settings.rtt_count,
            "rtt_warmup": settings.rtt_warmup,
            "rtt_message": f"{{From, I, <<{RTT_PAYLOAD} bytes>>}} -> {{echo, I, <<...>>}}",
            "timeout_per_run_s": settings.timeout,
            "wall_seconds": round(time.monotonic() - started, 1),
        },
        "throughput": throughput,
        "latency": latency,
        "ratios": ratios,
        "targets": targets,
        "errors": errors,
    }


# ---------------------------------------------------------------------------
# CLI helpers used by bench/__main__.py


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_message_arguments(parser)
    parser.add_argument("--repeats", type=_positive(int), default=None,
                        help="throughput runs per case and direction (default 3)")
    parser.add_argument("--rtt-count", type=_positive(int), default=None,
                        help="round trips measured per pair (default 2000)")
    add_timeout_argument(parser)


def settings_from_args(args: argparse.Namespace) -> Settings:
    return override(QUICK if args.quick else DEFAULT, args,
                    (("messages", "small_messages"), ("binary_messages", "binary_messages"),
                     ("repeats", "repeats"), ("rtt_count", "rtt_count"),
                     ("timeout", "timeout")))
