"""Serving ``gen_server`` calls and casts from a Python mailbox.

An Erlang ``gen_server:call({Name, PyNode}, Request)`` sends
``{'$gen_call', {From, Tag}, Request}`` to the registered name and waits for
``{Tag, Reply}`` at ``From``; ``gen_server:cast`` sends ``{'$gen_cast',
Request}`` (PROTOCOL.md §8). :class:`GenServer` runs that loop on a thread::

    def handle_call(request, caller):
        return ("ok", request)          # the reply

    with GenServer(node, "py_server", handle_call=handle_call) as server:
        ...                             # Erlang: gen_server:call({py_server, 'py@host'}, hi)

The tag is echoed exactly as it came, including OTP 24+'s ``[alias | Ref]``
improper-list tag, so the caller's ``receive {Tag, Reply}`` matches. The
reply is sent to the caller's pid (which an alias-tagged caller also
accepts). ``handle_call`` may return :data:`NOREPLY` and answer later with
:func:`reply`. If a handler raises, the server exits with the reason
``{python_exception, Class, Message}``, as a gen_server crashes: callers
waiting on it get their monitor's exit, linked processes the EXIT.

Calling the other way is :meth:`quicdist.Node.gen_call` /
:meth:`quicdist.Node.gen_cast`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .erpc import python_exception
from .errors import MailboxClosed
from .terms import Atom, Pid


if TYPE_CHECKING:
    from .mailbox import Mailbox
    from .node import Node

__all__ = ["NOREPLY", "GenServer", "reply"]

logger = logging.getLogger("quicdist.gen")

GEN_CALL = Atom("$gen_call")
GEN_CAST = Atom("$gen_cast")


class _NoReply:
    def __repr__(self) -> str:
        return "NOREPLY"


#: Returned by ``handle_call``: do not answer now (answer later with :func:`reply`).
NOREPLY: Any = _NoReply()

Caller = tuple[Pid, Any]


def parse_call(message: Any) -> tuple[Caller, Any] | None:
    """``('$gen_call', (From, Tag), Request)`` -> ``((From, Tag), Request)``, else None.

    Any tag term is accepted: a Reference, OTP 24+'s ``[alias | Ref]``,
    multi_call's ``{Ref, Node}``...
    """
    if (isinstance(message, tuple) and len(message) == 3 and message[0] == GEN_CALL
            and isinstance(message[1], tuple) and len(message[1]) == 2
            and isinstance(message[1][0], Pid)):
        return (message[1][0], message[1][1]), message[2]
    return None


def reply(sender: Mailbox | Node, caller: Caller, value: Any) -> None:
    """Answer a ``gen_server`` call: send ``{Tag, Value}`` to the caller's pid."""
    pid, tag = caller
    sender.send(pid, (tag, value))


class GenServer:
    """A thread that serves ``'$gen_call'`` and ``'$gen_cast'`` messages of one mailbox.

    Args:
        node: the node the server lives on.
        name: the registered name (None: reachable by pid only).
        handle_call: ``handle_call(request, caller) -> reply`` (or NOREPLY).
        handle_cast: ``handle_cast(request)``; casts are dropped without one.
        handle_info: ``handle_info(message)`` for any other message.
        max_messages: the mailbox's bound (see :class:`quicdist.Mailbox`).
    """

    def __init__(
        self,
        node: Node,
        name: str | None = None,
        *,
        handle_call: Callable[[Any, Caller], Any],
        handle_cast: Callable[[Any], None] | None = None,
        handle_info: Callable[[Any], None] | None = None,
        max_messages: int | None = None,
    ) -> None:
        self.node = node
        self.mailbox = node.mailbox(name, max_messages=max_messages)
        self._handle_call = handle_call
        self._handle_cast = handle_cast
        self._handle_info = handle_info
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"quicdist-gen-{name or self.mailbox.pid.id}")
        self._thread.start()

    @property
    def pid(self) -> Pid:
        return self.mailbox.pid

    @property
    def exit_reason(self) -> Any:
        """Why the server stopped (None while it runs)."""
        return self.mailbox.exit_reason

    def stop(self, timeout: float | None = 5.0) -> None:
        """End the server (reason ``normal``) and wait for its thread."""
        self.mailbox.close()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def __enter__(self) -> GenServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        mailbox = self.mailbox
        while True:
            try:
                message = mailbox.receive()
            except MailboxClosed:
                return
            try:
                self._dispatch(message)
            except Exception as exc:
                logger.exception("gen_server %s crashed", mailbox.name or mailbox.pid)
                mailbox.exit(python_exception(exc))
                return

    def _dispatch(self, message: Any) -> None:
        call = parse_call(message)
        if call is not None:
            caller, request = call
            answer = self._handle_call(request, caller)
            if answer is not NOREPLY:
                reply(self.mailbox, caller, answer)
        elif isinstance(message, tuple) and len(message) == 2 and message[0] == GEN_CAST:
            if self._handle_cast is not None:
                self._handle_cast(message[1])
        elif self._handle_info is not None:
            self._handle_info(message)
