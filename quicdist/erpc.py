"""Calls from Erlang into Python: erpc spawn requests and the legacy ``rex`` forms.

On OTP 23+ ``rpc:call(PyNode, M, F, A)`` and ``erpc:call`` reach a node as a
SPAWN_REQUEST for ``{erpc, execute_call, 4}`` with the arguments ``[Ref, M,
F, A]`` and the option ``monitor``; ``rpc:cast`` / ``erpc:cast`` as one for
``{erpc, execute_cast, 3}`` (PROTOCOL.md §8). The node answers SPAWN_REPLY
with a fresh pid, runs the call on a worker thread and ends the "process"
with the reason erpc expects, carried by MONITOR_P_EXIT:

=============================  ==========================================
the Python function            the exit reason (what ``rpc:call`` returns)
=============================  ==========================================
returns ``V``                  ``{Ref, return, V}`` (``V``)
raises ``ErlangThrow(T)``      ``{Ref, throw, T}`` (``T``, as ``catch``)
raises ``ErlangExit(R)``       ``{Ref, exit, R}`` (``{badrpc, {'EXIT', R}}``)
raises ``ErlangError(R)``      ``{Ref, error, R, []}``
                               (``{badrpc, {'EXIT', {R, []}}}``)
raises anything else           ``{Ref, error, {python_exception, Class,
                               Message}, []}``
is not registered              ``{Ref, error, undef, [{M, F, A, []}]}``
=============================  ==========================================

Only functions registered with :meth:`quicdist.Node.register_module` can
run: a name is looked up in that table and nothing is ever imported. A
spawn request for any other function (a plain remote ``spawn``) is refused
with the error ``notsup``.

User code raises :class:`ErlangThrow`, :class:`ErlangExit` or
:class:`ErlangError` to choose the Erlang exception class, exactly as an
Erlang callee would with ``throw/1``, ``exit/1`` or ``error/1``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import dist
from .errors import EncodeError
from .terms import Atom, Pid


if TYPE_CHECKING:
    from .node import Node

__all__ = ["ErlangError", "ErlangExit", "ErlangThrow", "Outcome", "run_function"]

ERPC = Atom("erpc")
EXECUTE_CALL = Atom("execute_call")
EXECUTE_CAST = Atom("execute_cast")
_RETURN = Atom("return")
_THROW = Atom("throw")
_EXIT = Atom("exit")
_ERROR = Atom("error")
_UNDEF = Atom("undef")
_BADARG = Atom("badarg")
_NORMAL = Atom("normal")
_NOTSUP = Atom("notsup")
_MONITOR = Atom("monitor")
_LINK = Atom("link")
_PYTHON_EXCEPTION = Atom("python_exception")

#: ``(kind, *fields)``: ``("return", V)``, ``("throw", T)``, ``("exit", R)``
#: or ``("error", R, Stack)``, with the kinds as atoms.
Outcome = tuple[Any, ...]


class ErlangThrow(Exception):  # noqa: N818 (named after Erlang's exception class)
    """Raise from a registered function to ``throw(Value)`` to the Erlang caller."""

    def __init__(self, value: Any) -> None:
        super().__init__(value)
        self.value = value


class ErlangExit(Exception):  # noqa: N818
    """Raise from a registered function to ``exit(Reason)``."""

    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason


class ErlangError(Exception):
    """Raise from a registered function to ``error(Reason)``."""

    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason


def python_exception(exc: BaseException) -> tuple[Atom, Atom, bytes]:
    """The Erlang reason for a Python exception: ``{python_exception, Class, Message}``."""
    return (_PYTHON_EXCEPTION, Atom(type(exc).__name__[:255]),
            str(exc).encode("utf-8", "replace"))


def lookup(table: dict[str, Callable[..., Any]] | None, function: Any, arity: int
           ) -> Callable[..., Any] | None:
    """The callable registered as ``function/arity`` in ``table``, or None."""
    fn = None if table is None else table.get(str(function))
    if fn is None:
        return None
    try:
        inspect.signature(fn).bind(*range(arity))
    except TypeError:
        return None  # another arity: undef, as in Erlang
    except ValueError:
        pass  # no signature to inspect (some builtins): let the call decide
    return fn


def run_function(node: Node, module: Any, function: Any, args: Any) -> Outcome:
    """Run a registered function; its :data:`Outcome`. Never raises."""
    if not isinstance(args, list):
        return (_ERROR, _BADARG, [])
    fn = node._lookup_function(module, function, len(args))
    if fn is None:
        return (_ERROR, _UNDEF, [(module, function, args, [])])
    try:
        return (_RETURN, fn(*args))
    except ErlangThrow as exc:
        return (_THROW, exc.value)
    except ErlangExit as exc:
        return (_EXIT, exc.reason)
    except ErlangError as exc:
        return (_ERROR, exc.reason, [])
    except Exception as exc:
        return (_ERROR, python_exception(exc), [])


def rex_reply(outcome: Outcome) -> Any:
    """What the legacy ``rex`` server answers ``{call, M, F, A, GL}`` with."""
    kind = outcome[0]
    if kind == _RETURN or kind == _THROW:
        return outcome[1]
    if kind == _EXIT:
        return (Atom("badrpc"), (Atom("EXIT"), outcome[1]))
    return (Atom("badrpc"), (Atom("EXIT"), (outcome[1], outcome[2])))


def _encodable(msg: dist.DistMessage, fallback: Callable[[EncodeError], dist.DistMessage]
               ) -> dist.DistMessage:
    try:
        dist.encode_message(msg)
    except EncodeError as exc:
        return fallback(exc)
    return msg


def _options(opt_list: list[Any]) -> tuple[bool, bool]:
    """(monitor, link) from a spawn option list."""
    monitor = link = False
    for opt in opt_list:
        if opt == _MONITOR or (isinstance(opt, tuple) and opt and opt[0] == _MONITOR):
            monitor = True
        elif opt == _LINK:
            link = True
    return monitor, link


def handle_spawn_request(node: Node, peer: str, msg: dist.SpawnRequest) -> None:
    """Answer a SPAWN_REQUEST (on the connection's I/O thread; never blocks)."""
    monitor, link = _options(msg.opt_list)
    args = msg.arg_list
    call = msg.mfa == (ERPC, EXECUTE_CALL, 4) and len(args) == 4
    cast = msg.mfa == (ERPC, EXECUTE_CAST, 3) and len(args) == 3
    if not (call or cast):
        node._signal(peer, dist.SpawnReply(msg.req_id, msg.from_pid, 0, _NOTSUP))
        return
    pid = node._make_pid()
    flags = (1 if link else 0) | (2 if monitor else 0)
    node._signal(peer, dist.SpawnReply(msg.req_id, msg.from_pid, flags, pid))
    caller: Pid = msg.from_pid

    def finish(reason: Any) -> None:
        if monitor:
            down = _encodable(
                dist.MonitorPExit(pid, caller, msg.req_id, reason),
                lambda exc: dist.MonitorPExit(pid, caller, msg.req_id,
                                              _unencodable(args[0] if call else None, exc)))
            node._signal(peer, down)
        if link:
            node._signal(peer, _encodable(
                dist.Exit(pid, caller, reason),
                lambda exc: dist.Exit(pid, caller, _unencodable(None, exc))))

    if call:
        ref, module, function, fargs = args

        def job() -> None:
            finish((ref, *run_function(node, module, function, fargs)))
    else:
        module, function, fargs = args

        def job() -> None:
            outcome = run_function(node, module, function, fargs)
            finish(_NORMAL if outcome[0] == _RETURN else _cast_reason(outcome))

    if not node._submit(job):
        finish((args[0], _ERROR, Atom("shutdown"), []) if call else Atom("shutdown"))


def _cast_reason(outcome: Outcome) -> Any:
    if outcome[0] == _EXIT:
        return outcome[1]
    if outcome[0] == _THROW:
        return (Atom("nocatch"), outcome[1])
    return (outcome[1], outcome[2])


def _unencodable(ref: Any, exc: EncodeError) -> Any:
    """The exit reason sent when the real one has no Erlang term."""
    reason = python_exception(exc)
    if ref is None:
        return reason
    return (ref, _ERROR, reason, [])
