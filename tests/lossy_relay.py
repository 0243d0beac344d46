"""A lossy, reordering UDP relay on 127.0.0.1, for carrier tests (not a test file).

    with LossyRelay(("127.0.0.1", listener.port), loss=0.05, reorder=0.05, seed=1) as relay:
        client = connect("127.0.0.1", relay.port, ...)
        ...
    relay.stats  # what was forwarded, dropped, held back

One thread moves datagrams between one client (whoever sends to
``relay.port`` first) and the target: client -> target through a socket of
its own, target -> client back out of the front socket. Each datagram is

* dropped with probability ``loss`` (a seeded ``random.Random`` per
  direction, one draw per datagram: the pattern of dropped indices is the
  same on every run), or else
* with probability ``reorder`` held back and released after the next
  ``1..max_delay`` datagrams of its direction went out (or after
  ``hold_timeout`` seconds if none come), so it arrives after later ones;
* otherwise forwarded at once.

:meth:`LossyRelay.rebind` moves the client -> target side to a new port
(a NAT rebinding: the target sees its peer's address change).

The thread waits in ``selectors`` with a bounded timeout, never blocks on a
socket, and :meth:`stop` (or leaving the ``with`` block) ends it and closes
every socket it opened.
"""

from __future__ import annotations

import random
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


__all__ = ["C2T", "T2C", "LossyRelay", "RelayStats"]

#: Directions: client to target, target to client.
C2T = "client->target"
T2C = "target->client"

_SELECT_TIMEOUT = 0.05
_READ_BATCH = 256


@dataclass
class RelayStats:
    """Per-direction counters (keys: C2T, T2C)."""

    received: dict[str, int] = field(default_factory=lambda: {C2T: 0, T2C: 0})
    forwarded: dict[str, int] = field(default_factory=lambda: {C2T: 0, T2C: 0})
    dropped: dict[str, int] = field(default_factory=lambda: {C2T: 0, T2C: 0})
    reordered: dict[str, int] = field(default_factory=lambda: {C2T: 0, T2C: 0})
    #: datagrams the kernel refused to send (buffer full): also lost
    send_errors: dict[str, int] = field(default_factory=lambda: {C2T: 0, T2C: 0})

    def total(self, name: str) -> int:
        counts: dict[str, int] = getattr(self, name)
        return sum(counts.values())

    def __str__(self) -> str:
        return " ".join(f"{name}={getattr(self, name)}" for name in
                        ("received", "forwarded", "dropped", "reordered", "send_errors"))


@dataclass
class _Held:
    data: bytes
    release_after: int  # forwarded count of its direction at which it goes out
    deadline: float


class LossyRelay:
    """Relay UDP between a client and ``target``, losing and reordering some datagrams.

    Args:
        target: the (host, port) the client's datagrams go to.
        loss: probability of dropping each datagram (0..1).
        reorder: probability of holding a (not dropped) datagram back.
        max_delay: a held datagram goes out after 1..max_delay later ones.
        hold_timeout: ...or after this many seconds at most.
        seed: seeds the random generators (one per direction).
        max_held: at most this many datagrams held per direction (the oldest
            goes out first when full).
    """

    def __init__(self, target: tuple[str, int], *, loss: float = 0.0, reorder: float = 0.0,
                 max_delay: int = 3, hold_timeout: float = 0.01, seed: int = 0,
                 max_held: int = 16, host: str = "127.0.0.1") -> None:
        if not (0.0 <= loss < 1.0 and 0.0 <= reorder < 1.0):
            raise ValueError("loss and reorder are probabilities in [0, 1)")
        if max_delay < 1 or max_held < 1:
            raise ValueError("max_delay and max_held must be >= 1")
        self.target = target
        self.loss = loss
        self.reorder = reorder
        self.max_delay = max_delay
        self.hold_timeout = hold_timeout
        self.max_held = max_held
        self.stats = RelayStats()
        self._rng = {C2T: random.Random(f"{seed}/c2t"), T2C: random.Random(f"{seed}/t2c")}
        self._held: dict[str, list[_Held]] = {C2T: [], T2C: []}
        self._client: Any = None
        self._stop = threading.Event()
        self._rebind = threading.Event()
        #: how many times the target-side socket was replaced (see rebind())
        self.rebinds = 0
        self._host = host
        # Notified after every datagram handled (see wait_for()).
        self._changed = threading.Condition()
        self._front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for sock in (self._front, self._back):
                for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                    sock.setsockopt(socket.SOL_SOCKET, option, 4 * 1024 * 1024)
                sock.setblocking(False)
            self._front.bind((host, 0))
            self._back.bind((host, 0))
        except BaseException:
            self._front.close()
            self._back.close()
            raise
        self.port: int = self._front.getsockname()[1]
        self._thread = threading.Thread(target=self._run, name=f"lossy-relay-{self.port}",
                                        daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def wait_for(self, predicate: Callable[[RelayStats], bool], timeout: float) -> bool:
        """Block until ``predicate(stats)`` holds (re-checked after every datagram)."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self.stats), timeout)

    def rebind(self, timeout: float = 5.0) -> int:
        """Send to the target from a new port from now on, as a NAT that
        rebinds does: the target sees the client at a new address. Returns
        the new port once the relay uses it."""
        done = self.rebinds + 1
        self._rebind.set()
        if not self.wait_for(lambda _stats: self.rebinds >= done, timeout):
            raise RuntimeError("the relay did not rebind")
        port: int = self._back.getsockname()[1]
        return port

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread (within about 50 ms) and close the sockets. Idempotent."""
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError("the relay thread did not stop")

    def __enter__(self) -> LossyRelay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        try:
            selector.register(self._front, selectors.EVENT_READ, C2T)
            selector.register(self._back, selectors.EVENT_READ, T2C)
            while not self._stop.is_set():
                if self._rebind.is_set():
                    self._rebind.clear()
                    self._new_back(selector)
                for key, _ in selector.select(self._wait()):
                    self._read(key.fileobj, key.data)  # type: ignore[arg-type]
                self._release_expired(time.monotonic())
                with self._changed:
                    self._changed.notify_all()
        finally:
            selector.close()
            self._front.close()
            self._back.close()

    def _new_back(self, selector: selectors.BaseSelector) -> None:
        back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        back.setblocking(False)
        back.bind((self._host, 0))
        selector.unregister(self._back)
        self._back.close()
        self._back = back
        selector.register(back, selectors.EVENT_READ, T2C)
        self.rebinds += 1

    def _wait(self) -> float:
        deadlines = [h.deadline for held in self._held.values() for h in held]
        if not deadlines:
            return _SELECT_TIMEOUT
        return min(max(min(deadlines) - time.monotonic(), 0.0), _SELECT_TIMEOUT)

    def _read(self, sock: socket.socket, direction: str) -> None:
        for _ in range(_READ_BATCH):
            try:
                data, addr = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # ICMP error from an earlier send
            if direction == C2T:
                if self._client is None:
                    self._client = addr
                elif addr != self._client:
                    continue  # one client only
            elif (addr[0], addr[1]) != (self.target[0], self.target[1]):
                continue  # not from the target
            self._relay(direction, data)

    def _relay(self, direction: str, data: bytes) -> None:
        stats = self.stats
        stats.received[direction] += 1
        rng = self._rng[direction]
        if rng.random() < self.loss:
            stats.dropped[direction] += 1
            return
        if rng.random() < self.reorder:
            held = self._held[direction]
            if len(held) >= self.max_held:
                self._send(direction, held.pop(0).data)
            held.append(_Held(data, stats.forwarded[direction] + rng.randint(1, self.max_delay),
                              time.monotonic() + self.hold_timeout))
            stats.reordered[direction] += 1
            return
        self._send(direction, data)
        self._release_due(direction)

    def _release_due(self, direction: str) -> None:
        held = self._held[direction]
        forwarded = self.stats.forwarded
        while True:
            due = [h for h in held if h.release_after <= forwarded[direction]]
            if not due:
                return
            for h in due:
                held.remove(h)
                self._send(direction, h.data)

    def _release_expired(self, now: float) -> None:
        for direction, held in self._held.items():
            for h in [h for h in held if h.deadline <= now]:
                held.remove(h)
                self._send(direction, h.data)

    def _send(self, direction: str, data: bytes) -> None:
        try:
            if direction == C2T:
                self._back.sendto(data, self.target)
            elif self._client is not None:
                self._front.sendto(data, self._client)
            else:
                return
        except OSError:  # buffer full, or nobody listens: lost
            self.stats.send_errors[direction] += 1
            return
        self.stats.forwarded[direction] += 1
