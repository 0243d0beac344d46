"""A helper process of the test suite that talks in lines (not a test file).

:class:`LinePeer` runs ``python SCRIPT ARGS...`` from the repository root:
commands go to its stdin, one line at a time; a reader thread feeds its
stdout lines to a queue that :meth:`LinePeer.expect` waits on with a
timeout; its stderr is kept in a temporary file for failure messages.
:meth:`LinePeer.close` always ends it: ``quit``, then a kill if it does
not exit. tests/carrier_peer.py and tests/node_peer.py are such scripts.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from tests.node_fixtures import TIMEOUT


ROOT = Path(__file__).resolve().parents[1]


class LinePeer:
    """One line-talking helper process; ``label`` names it in messages."""

    def __init__(self, script: Path, argv: Sequence[str], label: str,
                 close_timeout: float = TIMEOUT) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        self.label = label
        self._close_timeout = close_timeout
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, str(script), *argv],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            text=True, env=env, cwd=str(ROOT))
        self.seen: list[str] = []
        self._lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._reader = threading.Thread(target=self._read, name=f"peer-{label}-stdout",
                                        daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-4000:]

    def expect(self, *words: str, timeout: float = TIMEOUT) -> list[str]:
        """The next line starting with one of ``words``, split (the lines
        before it go to ``seen``). AssertionError after ``timeout`` seconds
        or if the process ends first."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(remaining, 0.0))
            except queue.Empty:
                raise AssertionError(f"peer {self.label}: no {words} within {timeout} s; "
                                     f"saw {self.seen[-30:]}; stderr:\n{self.stderr()}") from None
            if line is None:
                raise AssertionError(f"peer {self.label} exited ({self.proc.poll()}) before "
                                     f"{words}; saw {self.seen[-30:]}; stderr:\n{self.stderr()}")
            self.seen.append(line)
            split = line.split()
            if split and split[0] in words:
                return split

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close(self) -> int | None:
        """Ask it to quit, kill it if it does not; return its exit status."""
        timeout = self._close_timeout
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.stdin.close()  # type: ignore[union-attr]
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._reader.join(timeout)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None and not pipe.closed:
                try:
                    pipe.close()
                except OSError:
                    pass
        self._stderr.close()
        return self.proc.returncode

