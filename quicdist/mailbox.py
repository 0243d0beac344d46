"""The Python "process": a pid, a message queue, links and monitors.

A :class:`Mailbox` is made by :meth:`quicdist.Node.mailbox`. Any thread may
send to it or receive from it; ``receive`` blocks with a timeout and can
pick the first message that matches a predicate (Erlang's selective
receive).

Exit and monitor signals arrive as messages, as for an Erlang process that
traps exits:

* ``(Atom('EXIT'), FromPid, Reason)`` when a linked process exits (reason
  ``noconnection`` when its node went down) or an exit signal is sent to it;
* ``(Atom('DOWN'), Ref, Atom('process'), Target, Reason)`` when a monitored
  process exits (``noproc`` if it did not exist, ``noconnection`` when its
  node went down).

A mailbox holds at most ``max_messages`` undelivered messages (default
100 000). One more makes it exit with reason ``mailbox_overflow``, like an
Erlang process killed by its ``max_heap_size``: links and monitors are told,
and the owner's next receive raises :class:`~quicdist.errors.MailboxClosed`.
Memory stays bounded and nothing is dropped silently.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import MailboxClosed, QuicDistTimeoutError
from .sync.utils import Deadline
from .terms import Atom, Pid, Reference


if TYPE_CHECKING:
    from .node import Node

__all__ = ["DEFAULT_MAX_MESSAGES", "Mailbox"]

DEFAULT_MAX_MESSAGES = 100_000

EXIT = Atom("EXIT")
DOWN = Atom("DOWN")
PROCESS = Atom("process")
NORMAL = Atom("normal")
OVERFLOW = Atom("mailbox_overflow")


class Mailbox:
    """A process of a Python node (thread-safe).

    Attributes:
        pid: its process identifier, valid across the cluster.
        name: its registered name on this node, or None.
    """

    def __init__(self, node: Node, pid: Pid, name: str | None,
                 max_messages: int = DEFAULT_MAX_MESSAGES) -> None:
        self.node = node
        self.pid = pid
        self.name = name
        self._max = max_messages
        self._queue: deque[Any] = deque()
        # Guards _queue, _exit_reason and _on_taken; receivers wait on it.
        self._cond = threading.Condition(threading.Lock())
        self._exit_reason: Any = None
        # id(message) -> what to call once a receiver took it (or it was
        # dropped with the mailbox): the user-stream layer's receive credit.
        self._on_taken: dict[int, Callable[[], None]] = {}

    # ------------------------------------------------------------ receiving

    def receive(self, timeout: float | None = None,
                match: Callable[[Any], bool] | None = None) -> Any:
        """The oldest message (or the oldest one ``match`` accepts).

        Blocks up to ``timeout`` seconds (None: forever, 0: do not wait).
        Messages ``match`` rejects stay queued, in order.

        Raises:
            QuicDistTimeoutError (a TimeoutError): nothing (matching) came in time.
            MailboxClosed: the mailbox exited (closed, overflowed).
        """
        message, hook = self._take(Deadline(timeout), match)
        if hook is not None:
            hook()  # without the lock held
        return message

    def _take(self, deadline: Deadline, match: Callable[[Any], bool] | None
              ) -> tuple[Any, Callable[[], None] | None]:
        """The message and its ``on_taken`` hook, both taken under one lock."""
        with self._cond:
            scanned = 0
            while True:
                queue = self._queue
                if match is None:
                    if queue:
                        return self._with_hook(queue.popleft())
                else:
                    for index in range(scanned, len(queue)):
                        if match(queue[index]):
                            message = queue[index]
                            del queue[index]
                            return self._with_hook(message)
                    scanned = len(queue)
                if self._exit_reason is not None:
                    raise MailboxClosed(f"mailbox {self.pid!r} exited: {self._exit_reason!r}",
                                        self._exit_reason)
                remaining = deadline.timeout()
                if remaining == 0.0:
                    raise QuicDistTimeoutError(f"no message for {self.pid!r} in time")
                self._cond.wait(remaining)

    def _with_hook(self, message: Any) -> tuple[Any, Callable[[], None] | None]:
        on_taken = self._on_taken  # the lock is held
        return message, on_taken.pop(id(message), None) if on_taken else None

    def __len__(self) -> int:
        """Messages waiting."""
        with self._cond:
            return len(self._queue)

    @property
    def closed(self) -> bool:
        return self._exit_reason is not None

    @property
    def exit_reason(self) -> Any:
        """Why the mailbox exited (None while it lives)."""
        return self._exit_reason

    def _deliver(self, message: Any, on_taken: Callable[[], None] | None = None) -> bool:
        """Queue ``message`` (any thread; never blocks). False if the mailbox is gone.

        ``on_taken`` is called (without any lock held) once a receiver took
        the message, or when the mailbox exits with it still queued; never
        when this returns False.
        """
        with self._cond:
            if self._exit_reason is not None:
                return False
            if len(self._queue) < self._max:
                self._queue.append(message)
                if on_taken is not None:
                    self._on_taken[id(message)] = on_taken
                self._cond.notify()
                return True
        self.node._process_exit(self, OVERFLOW)
        return False

    def _mark_exited(self, reason: Any) -> bool:
        """Record the exit; True the first time. Wakes every receiver."""
        with self._cond:
            if self._exit_reason is not None:
                return False
            self._exit_reason = reason
            self._queue.clear()  # a dead process's messages are gone (memory stays bounded)
            self._cond.notify_all()
            hooks = list(self._on_taken.values())
            self._on_taken.clear()
        for hook in hooks:  # messages never received count as taken (dropped)
            hook()
        return True

    # -------------------------------------------------------------- sending

    def send(self, dest: Any, message: Any, *, raise_nodedown: bool = False) -> None:
        """Send ``message`` to a Pid, a registered name on this node, ``(name, node)``
        or an alias Reference.

        Like Erlang's ``!``: never waits for the receiver, connects to the
        node first when needed, and drops the message if that node cannot be
        reached, unless ``raise_nodedown`` asks for :class:`NodeDown`. Blocks
        only while the connection's send buffer is full (up to the node's
        ``send_timeout``).

        Raises:
            NoProc: ``dest`` is a bare name no process here is registered as.
            EncodeError: ``message`` has no Erlang term (nothing is sent).
            NodeDown: with ``raise_nodedown``, the node cannot be reached.
        """
        self.node._send(self.pid, dest, message, raise_nodedown=raise_nodedown)

    def alias(self) -> Reference:
        """A new alias of this process: messages sent to the reference arrive here."""
        self._check_alive()
        return self.node._alias(self)

    def unalias(self, ref: Reference) -> bool:
        """Deactivate an alias; True if it was active."""
        return self.node._unalias(self, ref)

    # ------------------------------------------------------ links, monitors

    def link(self, pid: Pid) -> None:
        """Link to ``pid``: each side hears ``('EXIT', Pid, Reason)`` when the other exits."""
        self._check_alive()
        self.node._link(self, pid)

    def unlink(self, pid: Pid) -> None:
        """Remove the link to ``pid`` (no-op if there is none)."""
        self._check_alive()
        self.node._unlink(self, pid)

    def monitor(self, target: Pid | str | tuple[str, str]) -> Reference:
        """Monitor a Pid, a local registered name or ``(name, node)``.

        Returns the monitor reference; ``('DOWN', Ref, 'process', Target,
        Reason)`` arrives when the target exits (at once with ``noproc`` if it
        does not exist).
        """
        self._check_alive()
        return self.node._monitor(self, target)

    def demonitor(self, ref: Reference) -> None:
        """Cancel the monitor ``ref`` (no-op if it already fired)."""
        self.node._demonitor(self, ref)

    def send_exit(self, pid: Pid, reason: Any) -> None:
        """Erlang's ``exit(Pid, Reason)``: send an exit signal to another process.

        A mailbox receives it as ``('EXIT', From, Reason)`` (mailboxes trap
        exits), except reason ``kill``, which ends it with ``killed``. An
        Erlang process that does not trap exits dies unless ``reason`` is
        ``normal``.
        """
        self._check_alive()
        self.node._exit_signal(self.pid, pid, reason)

    def exit(self, reason: Any = NORMAL) -> None:
        """End this process with ``reason``: linked processes and monitors are told."""
        self.node._process_exit(self, reason)

    def close(self) -> None:
        """``exit('normal')``. Idempotent."""
        self.exit(NORMAL)

    def _check_alive(self) -> None:
        if self._exit_reason is not None:
            raise MailboxClosed(f"mailbox {self.pid!r} exited: {self._exit_reason!r}",
                                self._exit_reason)

    def __enter__(self) -> Mailbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        name = f" {self.name}" if self.name else ""
        state = " exited" if self.closed else ""
        return f"<Mailbox {self.pid!r}{name}{state}>"
