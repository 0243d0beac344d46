"""Helpers for tests that run a real Erlang/OTP node (``erl -name``) beside quicdist.

- :data:`REQUIRES_ERL`: the marks of such a test module: the ``erl`` marker,
  and :data:`NEEDS_ERL`, a skip with a loud reason when ``erl``/``erlc``/
  ``epmd`` are missing (``make test`` installs erlang-nox; a skip means
  nothing was checked against OTP).
- :func:`ensure_epmd` / the ``epmd`` fixture: an epmd on 127.0.0.1
  (``ERL_EPMD_PORT`` or 4369), started with ``epmd -daemon`` when none runs.
- :class:`ErlNode` / the ``erl_node`` fixture: one ``erl -name NAME
  -setcookie COOKIE -noinput -eval SCRIPT`` whose output is collected by a
  thread (never blocks the pipe); :meth:`ErlNode.wait_for` waits, bounded,
  for a line. Every node has a bounded lifetime (it halts itself after
  ``lifetime`` seconds) and is killed, with its process group, at the end
  of the test.
- :func:`compile_erl`: ``erlc`` a helper module into a directory (for
  ``-pa``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


ERL = shutil.which("erl")
ERLC = shutil.which("erlc")
EPMD = shutil.which("epmd")
HAVE_ERL = ERL is not None and ERLC is not None and EPMD is not None

#: Skip (loudly) when erl, erlc or epmd is missing.
NEEDS_ERL = pytest.mark.skipif(
    not HAVE_ERL,
    reason="erl/erlc/epmd not found: install erlang-nox (make test does this) -- "
           "this is NOT checked against a real OTP node",
)
#: ``pytestmark = REQUIRES_ERL`` for a module that needs a real OTP throughout.
REQUIRES_ERL = [pytest.mark.erl, NEEDS_ERL]

HOST = "127.0.0.1"
FACTOR = float(os.environ.get("QUICDIST_TESTS_TIMEOUT_FACTOR", "1"))
#: Bound for an erl node to start, print something, or halt.
ERL_TIMEOUT = 20.0 * FACTOR


def epmd_port() -> int:
    return int(os.environ.get("ERL_EPMD_PORT", "4369"))


def ensure_epmd() -> int:
    """Make sure an epmd runs on 127.0.0.1; its port. (It stays, as erl leaves it.)"""
    port = epmd_port()
    try:
        socket.create_connection((HOST, port), timeout=1).close()
        return port
    except OSError:
        pass
    assert EPMD is not None
    subprocess.run([EPMD, "-daemon"], check=False, timeout=10)
    deadline = time.monotonic() + 5
    while True:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return port
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail("epmd did not start")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def epmd() -> int:
    """An epmd on 127.0.0.1; its port."""
    return ensure_epmd()


def unique(prefix: str) -> str:
    """A fresh alive name: ``prefix_<random hex>``."""
    return f"{prefix}_{secrets.token_hex(4)}"


def erl_atom(text: str) -> str:
    """``text`` as a quoted Erlang atom."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class ErlNode:
    """One ``erl -name`` node running ``script`` (an -eval expression sequence).

    The node halts itself after ``lifetime`` seconds whatever the script
    does; :meth:`close` kills it (and its process group) at once.
    """

    def __init__(self, name: str, cookie: str, script: str, *,
                 lifetime: float = 60.0, code_paths: list[Path] | None = None,
                 extra_args: list[str] | None = None) -> None:
        assert ERL is not None
        self.name = name
        watchdog = f"spawn(fun() -> timer:sleep({int(lifetime * 1000)}), halt(3) end), "
        args = [ERL, "-name", name, "-setcookie", cookie, "-noinput"]
        for path in code_paths or []:
            args += ["-pa", str(path)]
        args += list(extra_args or [])
        args += ["-eval", watchdog + script]
        env = dict(os.environ, ERL_CRASH_DUMP_SECONDS="0", ERL_CRASH_DUMP=os.devnull)
        self.proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self._cond = threading.Condition()
        self._lines: list[str] = []
        self._eof = False
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name=f"test-erl-output-{name}")
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

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self._lines)

    def wait_for(self, prefix: str, timeout: float = ERL_TIMEOUT) -> str:
        """The first output line starting with ``prefix`` (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self._lines:
                    if line.startswith(prefix):
                        return line
                if self._eof:
                    pytest.fail(f"erl {self.name} exited before printing {prefix!r}:\n"
                                f"{self.output_locked()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"erl {self.name} did not print {prefix!r} within "
                                f"{timeout:g} s:\n{self.output_locked()}")
                self._cond.wait(left)

    def output_locked(self) -> str:
        return "\n".join(self._lines)

    def wait(self, timeout: float = ERL_TIMEOUT) -> int:
        """Wait for erl to halt; its exit status."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.close()
            pytest.fail(f"erl {self.name} did not halt within {timeout:g} s:\n{self.output}")

    def close(self) -> None:
        """Kill erl and its process group (idempotent)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def erl_node() -> Iterator[type[ErlNode]]:
    """``erl_node(name, cookie, script, ...)`` starts an :class:`ErlNode`; all are
    killed at the end of the test."""
    started: list[ErlNode] = []

    class Tracked(ErlNode):
        def __init__(self, *args: object, **kw: object) -> None:
            super().__init__(*args, **kw)  # type: ignore[arg-type]
            started.append(self)

    try:
        yield Tracked
    finally:
        for node in started:
            node.close()


def compile_erl(source: Path, outdir: Path) -> Path:
    """``erlc -o outdir source``; returns ``outdir`` (for ``code_paths``)."""
    assert ERLC is not None
    done = subprocess.run([ERLC, "-o", str(outdir), str(source)], capture_output=True,
                          timeout=ERL_TIMEOUT)
    if done.returncode != 0:
        pytest.fail(f"erlc {source.name} failed ({done.returncode}):\n"
                    f"{done.stdout.decode(errors='replace')}{done.stderr.decode(errors='replace')}")
    return outdir
