"""quicdist.sync.utils.Wakeup: no wake-up is ever lost.

The I/O thread's pattern: ``select()`` on the wake-up, ``drain()``, then
look at what the wakers queued. A waker queues first, then calls
``wake()``. If a wake-up could be lost, the I/O thread would sleep in
``select()`` with work queued (a stalled connection until the next timer).
"""

from __future__ import annotations

import os
import queue
import selectors
import sys
import threading
import time

import pytest

from quicdist.sync.utils import Wakeup, open_fd_count


TIMEOUT = 10.0 * float(os.environ.get("QUICDIST_TESTS_TIMEOUT_FACTOR", "1"))
#: How long the consumer waits in one select(): a wake-up that comes takes
#: microseconds, so a select() that lasts this long with items queued means
#: the wake-up was lost.
SELECT_TIMEOUT = 2.0


@pytest.fixture
def wakeup():
    fds = open_fd_count()
    w = Wakeup()
    yield w
    w.close()
    assert open_fd_count() == fds


@pytest.fixture
def fine_switching():
    """Switch threads as often as CPython allows: more interleavings per run."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def test_producers_never_leave_the_consumer_asleep_with_work_queued(wakeup, fine_switching):
    producers, per_producer = 4, 5000
    total = producers * per_producer
    items: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
    start = threading.Barrier(producers + 1)

    def produce(k: int) -> None:
        start.wait(TIMEOUT)
        for i in range(per_producer):
            items.put((k, i))
            wakeup.wake()
            if i % 7 == 0:
                time.sleep(0)  # vary the interleavings (not synchronisation)

    threads = [threading.Thread(target=produce, args=(k,), name=f"producer-{k}", daemon=True)
               for k in range(producers)]
    for t in threads:
        t.start()
    selector = selectors.DefaultSelector()
    selector.register(wakeup, selectors.EVENT_READ)
    got: dict[int, list[int]] = {k: [] for k in range(producers)}
    received = 0
    selects = drains = 0
    lost: list[str] = []
    try:
        start.wait(TIMEOUT)
        deadline = time.monotonic() + 60.0
        while received < total:
            assert time.monotonic() < deadline, "the consumer made no progress"
            ready = selector.select(SELECT_TIMEOUT)
            selects += 1
            if ready:
                wakeup.drain()
                drains += 1
            elif not items.empty():
                lost.append(f"select() slept {SELECT_TIMEOUT} s with items queued after "
                            f"{received} of {total} items")
                break
            while True:
                try:
                    k, i = items.get_nowait()
                except queue.Empty:
                    break
                got[k].append(i)
                received += 1
    finally:
        for t in threads:
            t.join(TIMEOUT)
        selector.close()
    assert not lost, lost
    assert not any(t.is_alive() for t in threads)
    assert received == total
    assert all(got[k] == list(range(per_producer)) for k in got)
    assert 0 < drains <= selects
    # Wakes were coalesced: far fewer select() rounds than items.
    assert selects < total


def test_a_wake_during_drain_is_not_swallowed(wakeup):
    """The exact interleaving that loses a wake-up when drain() clears its flag
    before reading the bytes: a waker runs between the two steps.

    drain() reads the socket; here the first read lets a "producer" queue an
    item and call wake() right then. The consumer takes the item, then a
    second producer queues another and wakes: that wake must make the
    wake-up readable again.
    """
    items: list[str] = []

    class Interleaving:
        """The reader socket, with a producer running inside the first recv()."""

        def __init__(self, sock) -> None:
            self.sock = sock
            self.fired = False

        def recv(self, n: int) -> bytes:
            if not self.fired:
                self.fired = True
                items.append("during drain")
                wakeup.wake()
            return self.sock.recv(n)

        def __getattr__(self, name: str):
            return getattr(self.sock, name)

    selector = selectors.DefaultSelector()
    selector.register(wakeup, selectors.EVENT_READ)
    real = wakeup._reader
    try:
        items.append("first")
        wakeup.wake()
        assert selector.select(0), "a wake() must make the wake-up readable"
        wakeup._reader = Interleaving(real)
        wakeup.drain()
        wakeup._reader = real
        assert items == ["first", "during drain"]
        items.clear()  # the consumer takes both
        items.append("after drain")
        wakeup.wake()
        assert selector.select(SELECT_TIMEOUT / 4), \
            "wake() after drain() did not wake the consumer: the wake-up was lost"
    finally:
        wakeup._reader = real
        selector.close()


def test_wake_after_close_is_harmless():
    fds = open_fd_count()
    w = Wakeup()
    w.close()
    w.wake()
    w.close()
    assert open_fd_count() == fds
