"""Scaffolding shared by the process-based suites: ``carrier``, ``node``, ``streams``, ``interop``.

Failure types, the nearest-rank RTT summary, the environment block, the
helper processes (``python -m bench.<suite> serve ...``: start, ready line,
stderr tail, stop, exit when the benchmark goes away), progress printing and
the command-line / ``Settings`` plumbing. Nothing here measures anything.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import selectors
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar


ROOT = Path(__file__).resolve().parent.parent

_S = TypeVar("_S")
_P = TypeVar("_P", bound="ChildProcess")


class CorrectnessError(AssertionError):
    """What arrived is not what was sent: a bug, never an outcome."""


class BenchFailure(Exception):
    """A run could not complete (timeout, closed connection, node down, a helper process died)."""


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _payload(size: int) -> bytes:
    return b"x" * size


def _term_bytes(n: int, size: int) -> int:
    """ETF bytes of the N messages {msg, I, <<Size bytes>>}, I = 0..N-1 (exact)."""
    import quicdist

    msg = quicdist.Atom("msg")
    small = len(quicdist.encode((msg, 0, _payload(size))))  # SMALL_INTEGER_EXT below 256
    large = len(quicdist.encode((msg, 256, _payload(size))))  # INTEGER_EXT from 256 on
    return small * min(n, 256) + large * max(0, n - 256)


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def left(self, what: str) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise BenchFailure(f"{what}: not done within {self.seconds} s")
        return left


# ---------------------------------------------------------------------------
# Statistics


def _round(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _rtt_summary(samples: list[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    return {
        "count": len(ordered),
        "p50_us": _round(percentile(ordered, 50)),
        "p90_us": _round(percentile(ordered, 90)),
        "p99_us": _round(percentile(ordered, 99)),
        "min_us": _round(ordered[0]),
        "mean_us": _round(statistics.fmean(ordered)),
        "max_us": _round(ordered[-1]),
    }


# ---------------------------------------------------------------------------
# Environment and progress


def base_environment() -> dict[str, Any]:
    """``bench etf``'s environment block without its list of alternative codecs."""
    from . import etf

    env = etf.environment()
    env.pop("alternatives", None)
    return env


def node_environment() -> dict[str, Any]:
    """:func:`base_environment` plus whether this process uses the compiled extension."""
    import quicdist

    env = base_environment()
    env["quicdist_using_extension"] = quicdist.USING_EXTENSION
    return env


def progress_printer(progress: bool, prefix: str = "") -> Callable[[str], None]:
    """``say(text)``: one line on stderr (``prefix`` first) when ``progress`` is on."""
    def say(text: str) -> None:
        if progress:
            print(f"{prefix}{text}", file=sys.stderr, flush=True)
    return say


# ---------------------------------------------------------------------------
# Helper processes: the side that serves (python -m bench.<suite> serve ...)


def _exit_when_parent_goes(lifetime: float) -> None:
    """Exit as soon as stdin closes (the benchmark ended or died), or after ``lifetime``."""
    def watch_stdin() -> None:
        # os.read on the descriptor, not sys.stdin: a daemon thread blocked
        # inside a buffered reader makes interpreter shutdown abort.
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os._exit(0)

    threading.Thread(target=watch_stdin, name="bench-parent-watch", daemon=True).start()
    timer = threading.Timer(lifetime, lambda: os._exit(3))
    timer.daemon = True
    timer.start()


def _announce(**ports: Any) -> None:
    """The one ready line the measuring process waits for (see :meth:`ChildProcess._read_ready`)."""
    from quicdist import _accel

    line = json.dumps({"ready": True, **ports, "pid": os.getpid(),
                       "compiled_extension_used": _accel.USING_EXTENSION})
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def peer_server_parser(prog: str, local_name: str, send_timeout: float, lifetime: float
                       ) -> argparse.ArgumentParser:
    """The options a node suite's ``serve`` takes (what its peer process is given)."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--local-port", type=int, required=True,
                        help=f"the UDP port of {local_name} (the measuring node)")
    parser.add_argument("--fresh", type=int, default=0,
                        help="extra idle nodes fresh0..freshN-1 (connection setup)")
    parser.add_argument("--send-timeout", type=float, default=send_timeout)
    parser.add_argument("--lifetime", type=float, default=lifetime)
    return parser


# ---------------------------------------------------------------------------
# Helper processes: the measuring side


class ChildProcess:
    """``python -m <module> ...`` in its own process; always ended by :meth:`stop` (use ``with``).

    Its stdin is a pipe that is only ever closed (it exits then), its stdout
    carries one JSON ready line, its stderr goes to a file for
    :meth:`stderr_tail`.
    """

    who = "child"  # in stderr_tail: "; <who> stderr: ..."

    def _spawn(self, args: list[str], stderr_path: str) -> None:
        self._stderr_path = stderr_path
        self._stderr = open(self._stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", *args],
                cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=self._stderr)
        except BaseException:
            self._stderr.close()
            raise
        self.pid = self.proc.pid

    def _read_ready(self, timeout: float, late: Callable[[], BaseException],
                    exited: Callable[[int | None], BaseException]) -> dict[str, Any]:
        """The ready line, decoded; ``late()`` or ``exited(status)`` is raised instead."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise late()
                if sel.select(left):
                    chunk = os.read(fd, 4096)
                    if not chunk:
                        try:
                            status = self.proc.wait(timeout=2.0)
                        except subprocess.TimeoutExpired:
                            status = None
                        raise exited(status)
                    buf += chunk
        return json.loads(buf.split(b"\n", 1)[0])

    def stderr_tail(self, limit: int = 600) -> str:
        try:
            self._stderr.flush()
            with open(self._stderr_path, "rb") as f:
                text = f.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""
        return f"; {self.who} stderr: {text[-limit:]}" if text else ""

    def stop(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # the child exits when its stdin closes
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5.0)
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self._stderr.close()

    def __enter__(self: _P) -> _P:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------
# Command line (bench/__main__.py) and Settings


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError("must be > 0")
        return value
    return parse


def add_message_arguments(parser: argparse.ArgumentParser) -> None:
    """``--quick``, ``--messages`` and ``--binary-messages`` (the message-count suites)."""
    parser.add_argument("--quick", action="store_true",
                        help="small counts, one repeat (smoke runs, noisy numbers)")
    parser.add_argument("--messages", type=_positive(int), default=None,
                        help="small messages per throughput run (default 200000)")
    parser.add_argument("--binary-messages", type=_positive(int), default=None,
                        help="1 KiB messages per throughput run (default 50000)")


def add_timeout_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=_positive(float), default=None,
                        help="seconds one run of one scenario may take (default 120)")


def override(base: _S, args: argparse.Namespace, fields: Iterable[tuple[str, str]],
             **changes: Any) -> _S:
    """``base`` (a Settings) with ``changes`` and each ``args.<attr>`` given (not None) as
    ``<field>``, for every ``(attr, field)`` in ``fields``."""
    for attr, field in fields:
        value = getattr(args, attr)
        if value is not None:
            changes[field] = value
    return replace(base, **changes)  # type: ignore[type-var]
