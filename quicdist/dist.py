"""Distribution messages: the control messages of the Erlang distribution protocol.

Sans I/O: bytes in, dataclasses out, and back. One distribution message is
the payload of one frame on a data stream (PROTOCOL.md §4). Without the
atom-cache and fragment flags it is the *pass-through* form::

    112 ('p') | ControlMessage (ETF, starts with 131) | [Message (ETF)]

``encode_message(msg) -> bytes`` writes it and ``decode_message(payload)``
reads it. The layouts are OTP's ("Distribution Protocol", erl_dist_protocol,
section "Protocol between connected nodes"; operation numbers from
``erts/emulator/beam/dist.h``, ``enum dop``), and what the receiver checks
follows what ``erts_net_message`` in ``erts/emulator/beam/dist.c`` accepts.

Classes
=======

One frozen dataclass per control message, fields in OTP's tuple order. The
term that travels after the control tuple (a message, an exit reason, a
spawn argument list) is a field too.

===================================================================  ===========
class (fields in OTP's order)                                        operations
===================================================================  ===========
``Link(from_pid, to_pid)``                                           1
``Send(to_pid, message, trace_token=None)``                          2, 12
``Exit(from_pid, to_pid, reason, trace_token=None)``                 3, 13
``Unlink(from_pid, to_pid)`` (obsolete; OTP 26+ refuses it)          4
``NodeLink()``                                                       5
``RegSend(from_pid, to_name, message, trace_token=None)``            6, 16
``GroupLeader(from_pid, to_pid)``                                    7
``Exit2(from_pid, to_pid, reason, trace_token=None)``                8, 18
``MonitorP(from_pid, to_proc, ref)``                                 19
``DemonitorP(from_pid, to_proc, ref)``                               20
``MonitorPExit(from_proc, to_pid, ref, reason)``                     21
``SendSender(from_pid, to_pid, message, trace_token=None)``          22, 23
``PayloadExit(from_pid, to_pid, reason, trace_token=None)``          24, 25
``PayloadExit2(from_pid, to_pid, reason, trace_token=None)``         26, 27
``PayloadMonitorPExit(from_proc, to_pid, ref, reason)``              28
``SpawnRequest(req_id, from_pid, group_leader, mfa, opt_list,``      29, 30
``arg_list, trace_token=None)``
``SpawnReply(req_id, to_pid, flags, result, trace_token=None)``      31, 32
``AliasSend(from_pid, alias, message, trace_token=None)``            33, 34
``UnlinkId(id, from_pid, to_pid)``                                   35
``UnlinkIdAck(id, from_pid, to_pid)``                                36
===================================================================  ===========

Conventions
-----------
* **Trace tokens.** A ``*_TT`` operation is the same class as its plain
  operation, with the sequential-trace token in ``trace_token`` (any term,
  kept as decoded). ``trace_token=None`` means "no token": the plain
  operation is written. (The decoder never yields ``None`` for a term, so
  the two cannot be confused.) In the wire tuple the token sits after the
  other fields except in EXIT_TT / EXIT2_TT (``{13, From, To, Token,
  Reason}``); the dataclasses always put ``trace_token`` last.
* **Payload variants are their own classes** (``PayloadExit`` ...): the same
  event as ``Exit`` ..., but a different wire form that the sender chooses
  from the negotiated flags (DFLAG_EXIT_PAYLOAD).
* **Unused fields.** The ``Unused`` (old cookie) element of SEND and
  REG_SEND is not stored: it is written as the empty atom ``''`` and, as OTP
  does, not checked when read.
* ``.op`` of every message is its :class:`Op` (it depends on
  ``trace_token`` for the classes that have one).
* Atoms named ``true`` / ``false`` decode to ``True`` / ``False`` in
  :mod:`quicdist.etf`; where a control field must be an atom (a registered
  name, a module) they are given back as ``Atom('true')`` / ``Atom('false')``
  (the same bytes).

Checks
------
``decode_message`` checks the first byte, the tuple's arity, the type of
every field OTP types (pids where pids, references where references, atoms
or pids for monitor targets, integers in range), that a message term follows
exactly when the operation has one, and that nothing follows it. Every
failure raises :class:`DistMessageError` (carrying ``op`` when known), never
IndexError/TypeError/...

``encode_message`` checks the control fields the same way and raises
:class:`~quicdist.errors.LocalProtocolError` when one has the wrong type
(OTP would drop the connection on such a message). A plain ``str`` where
only an atom is valid (``to_name``, ``to_proc``, the MFA's module and
function, a SPAWN_REPLY error ``result``) is written as that atom. A
message, reason or argument that has no Erlang term raises
:class:`~quicdist.errors.EncodeError` from the term codec.

Not implemented (never advertised, so never received): the atom-cache
header form (131 68), fragments (131 69 / 131 70), and OTP 28's
ALTACT_SIG_SEND (operation 37); payloads in those forms raise :class:`DistMessageError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import Any, ClassVar, NoReturn, TypeAlias, TypeVar

from ._accel import decode_from, encode
from .errors import LocalProtocolError, RemoteProtocolError
from .terms import Atom, Pid, Reference


__all__ = [
    "PAYLOAD_OPS",
    "PASS_THROUGH",
    "AliasSend",
    "DemonitorP",
    "DistMessage",
    "DistMessageError",
    "Exit",
    "Exit2",
    "GroupLeader",
    "Link",
    "MonitorP",
    "MonitorPExit",
    "NodeLink",
    "Op",
    "PayloadExit",
    "PayloadExit2",
    "PayloadMonitorPExit",
    "RegSend",
    "Send",
    "SendSender",
    "SpawnReply",
    "SpawnRequest",
    "Unlink",
    "UnlinkId",
    "UnlinkIdAck",
    "decode_message",
    "encode_message",
]


PASS_THROUGH = 112
"""First byte of a pass-through distribution message (``'p'``)."""

_VERSION = 131
_DIST_HEADER = 68          # 131 68: normal header with an atom cache
_DIST_FRAG_HEADER = 69     # 131 69: first fragment
_DIST_FRAG_CONT = 70       # 131 70: following fragment
_U64_MAX = (1 << 64) - 1
_SPAWN_FLAGS_LIMIT = 1 << 27  # OTP refuses SPAWN_REPLY flags >= this

_T = TypeVar("_T")

_EMPTY = Atom("")
_TRUE = Atom("true")
_FALSE = Atom("false")


class Op(IntEnum):
    """Distribution operations (``DOP_*`` of ``erts/emulator/beam/dist.h``, OTP 25-27)."""

    LINK = 1
    SEND = 2
    EXIT = 3
    UNLINK = 4
    NODE_LINK = 5
    REG_SEND = 6
    GROUP_LEADER = 7
    EXIT2 = 8
    SEND_TT = 12
    EXIT_TT = 13
    REG_SEND_TT = 16
    EXIT2_TT = 18
    MONITOR_P = 19
    DEMONITOR_P = 20
    MONITOR_P_EXIT = 21
    SEND_SENDER = 22
    SEND_SENDER_TT = 23
    PAYLOAD_EXIT = 24
    PAYLOAD_EXIT_TT = 25
    PAYLOAD_EXIT2 = 26
    PAYLOAD_EXIT2_TT = 27
    PAYLOAD_MONITOR_P_EXIT = 28
    SPAWN_REQUEST = 29
    SPAWN_REQUEST_TT = 30
    SPAWN_REPLY = 31
    SPAWN_REPLY_TT = 32
    ALIAS_SEND = 33
    ALIAS_SEND_TT = 34
    UNLINK_ID = 35
    UNLINK_ID_ACK = 36


PAYLOAD_OPS: frozenset[Op] = frozenset({
    Op.SEND, Op.SEND_TT, Op.REG_SEND, Op.REG_SEND_TT, Op.SEND_SENDER, Op.SEND_SENDER_TT,
    Op.PAYLOAD_EXIT, Op.PAYLOAD_EXIT_TT, Op.PAYLOAD_EXIT2, Op.PAYLOAD_EXIT2_TT,
    Op.PAYLOAD_MONITOR_P_EXIT, Op.SPAWN_REQUEST, Op.SPAWN_REQUEST_TT,
    Op.ALIAS_SEND, Op.ALIAS_SEND_TT,
})
"""The operations whose control tuple is followed by a second term."""


class DistMessageError(RemoteProtocolError, ValueError):
    """A distribution message from the peer is malformed.

    Attributes:
        message: what is wrong.
        op: the :class:`Op` of the control message, or ``None`` when it is
            not known (bad first byte, undecodable or unknown control tuple).
    """

    def __init__(self, message: str, op: Op | None = None) -> None:
        super().__init__(message, op)
        self.message = message
        self.op = op

    def __str__(self) -> str:
        return self.message


# ---------------------------------------------------------------------------
# The messages

@dataclass(frozen=True, slots=True)
class Link:
    """``{1, FromPid, ToPid}``: ``from_pid`` links to ``to_pid``."""

    from_pid: Pid
    to_pid: Pid
    op: ClassVar[Op] = Op.LINK


@dataclass(frozen=True, slots=True)
class Send:
    """``{2, '', ToPid}`` + Message, or ``{12, '', ToPid, Token}`` + Message."""

    to_pid: Pid
    message: Any
    trace_token: Any = None

    @property
    def op(self) -> Op:
        return Op.SEND if self.trace_token is None else Op.SEND_TT


@dataclass(frozen=True, slots=True)
class Exit:
    """``{3, FromPid, ToPid, Reason}`` or ``{13, FromPid, ToPid, Token, Reason}``: a link broke."""

    from_pid: Pid
    to_pid: Pid
    reason: Any
    trace_token: Any = None

    @property
    def op(self) -> Op:
        return Op.EXIT if self.trace_token is None else Op.EXIT_TT


@dataclass(frozen=True, slots=True)
class Unlink:
    """``{4, FromPid, ToPid}``: the old unlink, refused by OTP 26+ (use :class:`UnlinkId`)."""

    from_pid: Pid
    to_pid: Pid
    op: ClassVar[Op] = Op.UNLINK


@dataclass(frozen=True, slots=True)
class NodeLink:
    """``{5}``: ancient, unused by OTP."""

    op: ClassVar[Op] = Op.NODE_LINK


@dataclass(frozen=True, slots=True)
class RegSend:
    """``{6, FromPid, '', ToName}`` + Message, or ``{16, FromPid, '', ToName, Token}`` + Message."""

    from_pid: Pid
    to_name: Atom
    message: Any
    trace_token: Any = None

    @property
    def op(self) -> Op:
        return Op.REG_SEND if self.trace_token is None else Op.REG_SEND_TT


@dataclass(frozen=True, slots=True)
class GroupLeader:
    """``{7, FromPid, ToPid}``: ``from_pid`` becomes the group leader of ``to_pid``."""

    from_pid: Pid
    to_pid: Pid
    op: ClassVar[Op] = Op.GROUP_LEADER


@dataclass(frozen=True, slots=True)
class Exit2:
    """``{8, FromPid, ToPid, Reason}`` or ``{18, FromPid, ToPid, Token, Reason}``: ``exit/2``."""

    from_pid: Pid
    to_pid: Pid
    reason: Any
    trace_token: Any = None

    @property
    def op(self) -> Op:
        return Op.EXIT2 if self.trace_token is None else Op.EXIT2_TT


@dataclass(frozen=True, slots=True)
class MonitorP:
    """``{19, FromPid, ToProc, Ref}``: ``from_pid`` monitors ``to_proc`` (a pid or a name)."""

    from_pid: Pid
    to_proc: Pid | Atom
    ref: Reference
    op: ClassVar[Op] = Op.MONITOR_P


@dataclass(frozen=True, slots=True)
class DemonitorP:
    """``{20, FromPid, ToProc, Ref}``: the monitor ``ref`` is removed."""

    from_pid: Pid
    to_proc: Pid | Atom
    ref: Reference
    op: ClassVar[Op] = Op.DEMONITOR_P


@dataclass(frozen=True, slots=True)
class MonitorPExit:
    """``{21, FromProc, ToPid, Ref, Reason}``: monitored ``from_proc`` (pid or name) is gone."""

    from_proc: Pid | Atom
    to_pid: Pid
    ref: Reference
    reason: Any
    op: ClassVar[Op] = Op.MONITOR_P_EXIT


@dataclass(frozen=True, slots=True)
class SendSender:
    """``{22, FromPid, ToPid}`` + Message, or ``{23, FromPid, ToPid, Token}`` + Message."""

    from_pid: Pid
    to_pid: Pid
    message: Any
    trace_token: Any = None

    @property
    def op(self) -> Op:
        return Op.SEND_SENDER if self.trace_token is None else Op.SEND_SENDER_TT


@dataclass(frozen=True, slots=True)
class PayloadExit:
    """``{24, FromPid, ToPid}`` + Reason, or ``{25, FromPid, ToPid, Token}`` + Reason."""

    from_pid: Pid
    to_pid: Pid
    reason: Any
    trace_token: Any = None

    @property
    def op(self) -> Op:
        return Op.PAYLOAD_EXIT if self.trace_token is None else Op.PAYLOAD_EXIT_TT


@dataclass(frozen=True, slots=True)
class PayloadExit2:
    """``{26, FromPid, ToPid}`` + Reason, or ``{27, FromPid, ToPid, Token}`` + Reason."""

    from_pid: Pid
    to_pid: Pid
    reason: Any
    trace_token: Any = None

    @property
    def op(self) -> Op:
        return Op.PAYLOAD_EXIT2 if self.trace_token is None else Op.PAYLOAD_EXIT2_TT


@dataclass(frozen=True, slots=True)
class PayloadMonitorPExit:
    """``{28, FromProc, ToPid, Ref}`` + Reason."""

    from_proc: Pid | Atom
    to_pid: Pid
    ref: Reference
    reason: Any
    op: ClassVar[Op] = Op.PAYLOAD_MONITOR_P_EXIT


@dataclass(frozen=True, slots=True)
class SpawnRequest:
    """``{29, ReqId, From, GroupLeader, {M, F, A}, OptList}`` + ArgList (``{30, ..., Token}``).

    ``mfa`` is ``(module, function, arity)``; ``opt_list`` and ``arg_list``
    are lists. ``req_id`` doubles as the monitor reference when ``monitor``
    is among the options.
    """

    req_id: Reference
    from_pid: Pid
    group_leader: Pid
    mfa: tuple[Atom, Atom, int]
    opt_list: list[Any]
    arg_list: list[Any]
    trace_token: Any = None

    @property
    def op(self) -> Op:
        return Op.SPAWN_REQUEST if self.trace_token is None else Op.SPAWN_REQUEST_TT


@dataclass(frozen=True, slots=True)
class SpawnReply:
    """``{31, ReqId, To, Flags, Result}`` or ``{32, ReqId, To, Flags, Result, Token}``.

    ``flags``: 1 = linked, 2 = monitored. ``result``: the new pid, or an
    atom naming the error.
    """

    req_id: Reference
    to_pid: Pid
    flags: int
    result: Pid | Atom
    trace_token: Any = None

    @property
    def op(self) -> Op:
        return Op.SPAWN_REPLY if self.trace_token is None else Op.SPAWN_REPLY_TT


@dataclass(frozen=True, slots=True)
class AliasSend:
    """``{33, FromPid, Alias}`` + Message, or ``{34, FromPid, Alias, Token}`` + Message."""

    from_pid: Pid
    alias: Reference
    message: Any
    trace_token: Any = None

    @property
    def op(self) -> Op:
        return Op.ALIAS_SEND if self.trace_token is None else Op.ALIAS_SEND_TT


@dataclass(frozen=True, slots=True)
class UnlinkId:
    """``{35, Id, FromPid, ToPid}``: unlink; ``id`` in 1..2**64-1, echoed by the ack."""

    id: int
    from_pid: Pid
    to_pid: Pid
    op: ClassVar[Op] = Op.UNLINK_ID


@dataclass(frozen=True, slots=True)
class UnlinkIdAck:
    """``{36, Id, FromPid, ToPid}``: acknowledges the UNLINK_ID ``id`` (``to_pid`` sent it)."""

    id: int
    from_pid: Pid
    to_pid: Pid
    op: ClassVar[Op] = Op.UNLINK_ID_ACK


DistMessage: TypeAlias = (
    Link | Send | Exit | Unlink | NodeLink | RegSend | GroupLeader | Exit2 | MonitorP
    | DemonitorP | MonitorPExit | SendSender | PayloadExit | PayloadExit2
    | PayloadMonitorPExit | SpawnRequest | SpawnReply | AliasSend | UnlinkId | UnlinkIdAck
)


# ---------------------------------------------------------------------------
# Decoding
#
# Each parser gets the control tuple ``t`` (its op already known), the
# payload, the offset just past the control tuple and the payload's length.
# ``_BAD`` is raised by the field checks and turned into DistMessageError
# with the op by decode_message, so the parsers stay short.

_Parser = Callable[[tuple[Any, ...], Any, int, int], DistMessage]


def _maker3(cls: type[_T]) -> Callable[[Any, Any, Any], _T]:
    """A constructor of ``cls`` (3 fields) that skips the frozen ``__init__``.

    A frozen dataclass sets each field through ``object.__setattr__``, which
    costs more than decoding a small control tuple; the decoder fills the
    slots through their descriptors instead (0.25 us less per message on
    CPython 3.11). The instances are ordinary, immutable instances of ``cls``.
    """
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    assert len(names) == 3, cls
    new = object.__new__
    s1, s2, s3 = (getattr(cls, name).__set__ for name in names)

    def make(v1: Any, v2: Any, v3: Any) -> _T:
        obj = new(cls)
        s1(obj, v1)
        s2(obj, v2)
        s3(obj, v3)
        return obj

    return make


def _maker4(cls: type[_T]) -> Callable[[Any, Any, Any, Any], _T]:
    """Like :func:`_maker3`, for 4 fields."""
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    assert len(names) == 4, cls
    new = object.__new__
    s1, s2, s3, s4 = (getattr(cls, name).__set__ for name in names)

    def make(v1: Any, v2: Any, v3: Any, v4: Any) -> _T:
        obj = new(cls)
        s1(obj, v1)
        s2(obj, v2)
        s3(obj, v3)
        s4(obj, v4)
        return obj

    return make


_new_send = _maker3(Send)
_new_reg_send = _maker4(RegSend)
_new_send_sender = _maker4(SendSender)
_new_alias_send = _maker4(AliasSend)
_new_monitor_p = _maker3(MonitorP)


class _Bad(Exception):
    """A field check failed (internal; becomes DistMessageError)."""


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _arity(t: tuple[Any, ...], n: int) -> NoReturn:
    raise _Bad(f"the control tuple has {len(t)} elements, expected {n}")


def _not(field: str, kind: str, value: Any) -> NoReturn:
    raise _Bad(f"{field} must be {kind}, got {_describe(value)}")


def _pid(field: str, value: Any) -> Pid:
    if type(value) is Pid:
        return value
    _not(field, "a pid", value)


def _ref(field: str, value: Any) -> Reference:
    if type(value) is Reference:
        return value
    _not(field, "a reference", value)


def _atom(field: str, value: Any) -> Atom:
    if type(value) is Atom:
        return value
    if type(value) is bool:
        return _TRUE if value else _FALSE
    _not(field, "an atom", value)


def _proc(field: str, value: Any) -> Pid | Atom:
    tv = type(value)
    if tv is Pid or tv is Atom:
        return value  # type: ignore[no-any-return]
    if tv is bool:
        return _TRUE if value else _FALSE
    _not(field, "a pid or an atom", value)


def _uint(field: str, value: Any, low: int, high: int) -> int:
    if type(value) is int and low <= value <= high:
        return value
    _not(field, f"an integer in {low}..{high}", value)


def _list(field: str, value: Any) -> list[Any]:
    if type(value) is list:
        return value
    _not(field, "a proper list", value)


def _payload(data: Any, pos: int, end: int) -> Any:
    """The term after the control tuple, which must end the payload."""
    if pos >= end:
        raise _Bad("the message term that must follow the control tuple is missing")
    try:
        term, stop = decode_from(data, pos)
    except ValueError as exc:  # DecodeError is a ValueError
        raise _Bad(f"the message term does not decode: {exc}") from None
    if stop != end:
        raise _Bad(f"{end - stop} trailing bytes after the message term")
    return term


def _nothing(pos: int, end: int) -> None:
    if pos != end:
        raise _Bad(f"{end - pos} bytes follow a control tuple that carries no message")


def _two_pids(cls: Callable[[Pid, Pid], DistMessage]) -> _Parser:
    """The parser of ``{Op, FromPid, ToPid}`` (LINK, UNLINK, GROUP_LEADER)."""
    def parse(t: tuple[Any, ...], data: Any, pos: int, end: int) -> DistMessage:
        if len(t) != 3:
            _arity(t, 3)
        _nothing(pos, end)
        return cls(_pid("FromPid", t[1]), _pid("ToPid", t[2]))
    return parse


_p_link = _two_pids(Link)
_p_unlink = _two_pids(Unlink)
_p_group_leader = _two_pids(GroupLeader)


def _p_send(t: tuple[Any, ...], data: Any, pos: int, end: int) -> DistMessage:
    if len(t) != 3:
        _arity(t, 3)
    to = t[2]
    if type(to) is not Pid:
        _not("ToPid", "a pid", to)
    return _new_send(to, _payload(data, pos, end), None)


def _p_send_tt(t: tuple[Any, ...], data: Any, pos: int, end: int) -> DistMessage:
    if len(t) != 4:
        _arity(t, 4)
    return Send(_pid("ToPid", t[2]), _payload(data, pos, end), t[3])


def _exit_pair(cls: Callable[[Pid, Pid, Any, Any], DistMessage]) -> tuple[_Parser, _Parser]:
    """The parsers of ``{Op, FromPid, ToPid, Reason}`` and of its ``_TT`` form
    ``{OpTT, FromPid, ToPid, Token, Reason}`` (EXIT, EXIT2)."""
    def plain(t: tuple[Any, ...], data: Any, pos: int, end: int) -> DistMessage:
        if len(t) != 4:
            _arity(t, 4)
        _nothing(pos, end)
        return cls(_pid("FromPid", t[1]), _pid("ToPid", t[2]), t[3], None)

    def traced(t: tuple[Any, ...], data: Any, pos: int, end: int) -> DistMessage:
        if len(t) != 5:
            _arity(t, 5)
        _nothing(pos, end)
        return cls(_pid("FromPid", t[1]), _pid("ToPid", t[2]), t[4], t[3])

    return plain, traced


_p_exit, _p_exit_tt = _exit_pair(Exit)
_p_exit2, _p_exit2_tt = _exit_pair(Exit2)


def _p_node_link(t: tuple[Any, ...], data: Any, pos: int, end: int) -> DistMessage:
    if len(t) != 1:
        _arity(t, 1)
    _nothing(pos, end)
    return NodeLink()


def _p_reg_send(t: tuple[Any, ...], data: Any, pos: int, end: int) -> DistMessage:
    if len(t) != 4:
        _arity(t, 4)
    frm = t[1]
    name = t[3]
    if type(frm) is not Pid:
        _not("FromPid", "a pid", frm)
    if type(name) is not Atom:
        name = _atom("ToName", name)
    return _new_reg_send(frm, name, _payload(data, pos, end), None)


def _p_reg_send_tt(t: tuple[Any, ...], data: Any, pos: int, end: int) -> DistMessage:
    if len(t) != 5:
        _arity(t, 5)
    return RegSend(_pid("FromPid", t[1]), _atom("ToName", t[3]),
                   _payload(data, pos, end), t[4])


def _p_monitor_p(t: tuple[Any, ...], data: Any, pos: int, end: int) -> DistMessage:
    if len(t) != 4:
        _arity(t, 4)
    _nothing(pos, end)
    frm, to, ref = t[1], t[2], t[3]
    if type(frm) is not Pid:
        _not("FromPid", "a pid", frm)
    if type(to) is not Atom and type(to) is not Pid:
        to = _proc("ToProc", to)
    if type(ref) is not Reference:
        _not("Ref", "a reference", ref)
    return _new_monitor_p(frm, to, ref)


def _p_demonitor_p(t: tuple[Any, ...], data: Any, pos: int, end: int) -> DistMessage:
    if len(t) != 4:
        _arity(t, 4)
    _nothing(pos, end)
    return DemonitorP(_pid("FromPid", t[1]), _proc("ToProc", t[2]), _ref("Ref", t[3]))


def _p_monitor_p_exit(t: tuple[Any, ...], data: Any, pos: int, end: int) -> DistMessage:
    if len(t) != 5:
        _arity(t, 5)
    _nothing(pos, end)
    return MonitorPExit(_proc("FromProc", t[1]), _pid("ToPid", t[2]), _ref("Ref", t[3]), t[4])


def _p_send_sender(t: tuple[Any, ...], data: Any, pos: int, end: int) -> DistMessage:
    if len(t) != 3:
        _arity(t, 3)
    frm, to = t[1], t[2]
    if type(frm) is not Pid:
        _not("FromPid", "a pid", frm)
    if type(to) is not Pid:
        _not("ToPid", "a pid", to)
    return _new_send_sender(frm, to, _payload(data, pos, end), None)


def _p_send_sender_tt(t: tuple[Any, ...], data: Any, pos: int, end: int) -> DistMessage:
    if len(t) != 4:
        _arity(t, 4)
    return SendSender(_pid("FromPid", t[1]), _pid("ToPid", t[2]), _payload(data, pos, end), t[3])


def _payload_exit_pair(cls: Callable[[Pid, Pid, Any, Any], DistMessage]
                       ) -> tuple[_Parser, _Parser]:
    """The parsers of ``{Op, FromPid, ToPid}`` + Reason and of its ``_TT`` form
    ``{OpTT, FromPid, ToPid, Token}`` + Reason (PAYLOAD_EXIT, PAYLOAD_EXIT2)."""
    def plain(t: tuple[Any, ...], data: Any, pos: int, end: int) -> DistMessage:
        if len(t) != 3:
            _arity(t, 3)
        return cls(_pid("FromPid", t[1]), _pid("ToPid", t[2]), _payload(data, pos, end), None)

    def traced(t: tuple[Any, ...], data: Any, pos: int, end: int) -> DistMessage:
        if len(t) != 4:
            _arity(t, 4)
        return cls(_pid("FromPid", t[1]), _pid("ToPid", t[2]), _payload(data, pos, end), t[3])

    return plain, traced


_p_payload_exit, _p_payload_exit_tt = _payload_exit_pair(PayloadExit)
_p_payload_exit2, _p_payload_exit2_tt = _payload_exit_pair(PayloadExit2)


def _p_payload_monitor_p_exit(t: tuple[Any, ...], data: Any, pos: int,
                              end: int) -> DistMessage:
    if len(t) != 4:
        _arity(t, 4)
    return PayloadMonitorPExit(_proc("FromProc", t[1]), _pid("ToPid", t[2]), _ref("Ref", t[3]),
                               _payload(data, pos, end))


def _mfa(value: Any) -> tuple[Atom, Atom, int]:
    if type(value) is not tuple or len(value) != 3:
        _not("{Module, Function, Arity}", "a 3-tuple", value)
    return (_atom("Module", value[0]), _atom("Function", value[1]),
            _uint("Arity", value[2], 0, 255))


def _p_spawn_request(t: tuple[Any, ...], data: Any, pos: int, end: int) -> DistMessage:
    if len(t) != 6:
        _arity(t, 6)
    return SpawnRequest(_ref("ReqId", t[1]), _pid("From", t[2]), _pid("GroupLeader", t[3]),
                        _mfa(t[4]), _list("OptList", t[5]),
                        _list("ArgList", _payload(data, pos, end)))


def _p_spawn_request_tt(t: tuple[Any, ...], data: Any, pos: int, end: int) -> DistMessage:
    if len(t) != 7:
        _arity(t, 7)
    return SpawnRequest(_ref("ReqId", t[1]), _pid("From", t[2]), _pid("GroupLeader", t[3]),
                        _mfa(t[4]), _list("OptList", t[5]),
                        _list("ArgList", _payload(data, pos, end)), t[6])


def _p_spawn_reply(t: tuple[Any, ...], data: Any, pos: int, end: int) -> DistMessage:
    if len(t) != 5:
        _arity(t, 5)
    _nothing(pos, end)
    return SpawnReply(_ref("ReqId", t[1]), _pid("To", t[2]),
                      _uint("Flags", t[3], 0, _SPAWN_FLAGS_LIMIT - 1), _proc("Result", t[4]))


def _p_spawn_reply_tt(t: tuple[Any, ...], data: Any, pos: int, end: int) -> DistMessage:
    if len(t) != 6:
        _arity(t, 6)
    _nothing(pos, end)
    return SpawnReply(_ref("ReqId", t[1]), _pid("To", t[2]),
                      _uint("Flags", t[3], 0, _SPAWN_FLAGS_LIMIT - 1), _proc("Result", t[4]),
                      t[5])


def _p_alias_send(t: tuple[Any, ...], data: Any, pos: int, end: int) -> DistMessage:
    if len(t) != 3:
        _arity(t, 3)
    frm, alias = t[1], t[2]
    if type(frm) is not Pid:
        _not("FromPid", "a pid", frm)
    if type(alias) is not Reference:
        _not("Alias", "a reference", alias)
    return _new_alias_send(frm, alias, _payload(data, pos, end), None)


def _p_alias_send_tt(t: tuple[Any, ...], data: Any, pos: int, end: int) -> DistMessage:
    if len(t) != 4:
        _arity(t, 4)
    return AliasSend(_pid("FromPid", t[1]), _ref("Alias", t[2]), _payload(data, pos, end), t[3])


def _unlink_id(cls: Callable[[int, Pid, Pid], DistMessage], low: int) -> _Parser:
    """The parser of ``{Op, Id, FromPid, ToPid}``, ``Id`` in ``low``..2**64-1
    (UNLINK_ID: 1, UNLINK_ID_ACK: 0)."""
    def parse(t: tuple[Any, ...], data: Any, pos: int, end: int) -> DistMessage:
        if len(t) != 4:
            _arity(t, 4)
        _nothing(pos, end)
        return cls(_uint("Id", t[1], low, _U64_MAX), _pid("FromPid", t[2]), _pid("ToPid", t[3]))
    return parse


_p_unlink_id = _unlink_id(UnlinkId, 1)
_p_unlink_id_ack = _unlink_id(UnlinkIdAck, 0)


_PARSERS: dict[int, _Parser] = {
    Op.LINK.value: _p_link,
    Op.SEND.value: _p_send,
    Op.EXIT.value: _p_exit,
    Op.UNLINK.value: _p_unlink,
    Op.NODE_LINK.value: _p_node_link,
    Op.REG_SEND.value: _p_reg_send,
    Op.GROUP_LEADER.value: _p_group_leader,
    Op.EXIT2.value: _p_exit2,
    Op.SEND_TT.value: _p_send_tt,
    Op.EXIT_TT.value: _p_exit_tt,
    Op.REG_SEND_TT.value: _p_reg_send_tt,
    Op.EXIT2_TT.value: _p_exit2_tt,
    Op.MONITOR_P.value: _p_monitor_p,
    Op.DEMONITOR_P.value: _p_demonitor_p,
    Op.MONITOR_P_EXIT.value: _p_monitor_p_exit,
    Op.SEND_SENDER.value: _p_send_sender,
    Op.SEND_SENDER_TT.value: _p_send_sender_tt,
    Op.PAYLOAD_EXIT.value: _p_payload_exit,
    Op.PAYLOAD_EXIT_TT.value: _p_payload_exit_tt,
    Op.PAYLOAD_EXIT2.value: _p_payload_exit2,
    Op.PAYLOAD_EXIT2_TT.value: _p_payload_exit2_tt,
    Op.PAYLOAD_MONITOR_P_EXIT.value: _p_payload_monitor_p_exit,
    Op.SPAWN_REQUEST.value: _p_spawn_request,
    Op.SPAWN_REQUEST_TT.value: _p_spawn_request_tt,
    Op.SPAWN_REPLY.value: _p_spawn_reply,
    Op.SPAWN_REPLY_TT.value: _p_spawn_reply_tt,
    Op.ALIAS_SEND.value: _p_alias_send,
    Op.ALIAS_SEND_TT.value: _p_alias_send_tt,
    Op.UNLINK_ID.value: _p_unlink_id,
    Op.UNLINK_ID_ACK.value: _p_unlink_id_ack,
}
assert len(_PARSERS) == len(Op)


def _bad_first_byte(data: Any) -> NoReturn:
    first = data[0]
    if first == _VERSION and len(data) > 1:
        second = data[1]
        if second == _DIST_HEADER:
            raise DistMessageError(
                "a distribution header with an atom cache (131 68): atom-cache headers "
                "are not negotiated on this connection")
        if second in (_DIST_FRAG_HEADER, _DIST_FRAG_CONT):
            raise DistMessageError(
                f"a fragmented distribution message (131 {second}): fragments are not "
                "negotiated on this connection")
    raise DistMessageError(
        f"unknown distribution message type {first} (only pass-through, 112, is "
        "negotiated)")


def decode_message(payload: bytes | bytearray | memoryview) -> DistMessage:
    """Read one pass-through distribution message (a frame's payload, not a tick).

    Raises:
        DistMessageError: the payload is not a well-formed distribution
            message (see the module docs for what is checked).
        TypeError: ``payload`` is not a bytes-like object.
    """
    data: Any = payload
    if type(data) is not bytes:
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1 or not view.c_contiguous:
            view = memoryview(view.tobytes())
        data = view
    end = len(data)
    if not end:
        raise DistMessageError("an empty distribution message (a tick has no payload at all)")
    if data[0] != PASS_THROUGH:
        _bad_first_byte(data)
    try:
        ctl, pos = decode_from(data, 1)
    except ValueError as exc:  # DecodeError is a ValueError
        raise DistMessageError(f"the control message does not decode: {exc}") from None
    if type(ctl) is not tuple or not ctl:
        raise DistMessageError(f"the control message is not a tuple: {_describe(ctl)}")
    number = ctl[0]
    parser = _PARSERS.get(number) if type(number) is int else None
    if parser is None:
        raise DistMessageError(f"unknown distribution operation {_describe(number)}")
    try:
        return parser(ctl, data, pos, end)
    except _Bad as exc:
        op = Op(number)
        raise DistMessageError(f"{op.name}: {exc}", op) from None


# ---------------------------------------------------------------------------
# Encoding


class _Misuse(Exception):
    """A control field of the wrong type (internal; becomes LocalProtocolError)."""


def _e_not(field: str, kind: str, value: Any) -> NoReturn:
    raise _Misuse(f"{field} must be {kind}, not {_describe(value)}")


def _e_pid(field: str, value: Any) -> Pid:
    if isinstance(value, Pid):
        return value
    _e_not(field, "a Pid", value)


def _e_ref(field: str, value: Any) -> Reference:
    if isinstance(value, Reference):
        return value
    _e_not(field, "a Reference", value)


def _e_atom(field: str, value: Any) -> Atom | bool:
    if isinstance(value, Atom) or type(value) is bool:
        return value
    if isinstance(value, str):
        return Atom(value)
    _e_not(field, "an Atom (or str)", value)


def _e_proc(field: str, value: Any) -> Pid | Atom | bool:
    if isinstance(value, (Pid, Atom)) or type(value) is bool:
        return value
    if isinstance(value, str):
        return Atom(value)
    _e_not(field, "a Pid or an Atom (or str)", value)


def _e_uint(field: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, int) and type(value) is not bool and low <= value <= high:
        return int(value)
    _e_not(field, f"an int in {low}..{high}", value)


def _e_list(field: str, value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    _e_not(field, "a list", value)


def _e_two_pids(op: int) -> Callable[[Any], bytes]:
    """The encoder of ``{Op, FromPid, ToPid}`` (LINK, UNLINK, GROUP_LEADER)."""
    def enc(m: Any) -> bytes:
        return b"p" + encode((op, _e_pid("from_pid", m.from_pid), _e_pid("to_pid", m.to_pid)))
    return enc


_e_link = _e_two_pids(Op.LINK.value)
_e_unlink = _e_two_pids(Op.UNLINK.value)
_e_group_leader = _e_two_pids(Op.GROUP_LEADER.value)


def _e_send(m: Any) -> bytes:
    to = m.to_pid
    if type(to) is not Pid:
        to = _e_pid("to_pid", to)
    token = m.trace_token
    if token is None:
        return b"p" + encode((2, _EMPTY, to)) + encode(m.message)
    return b"p" + encode((12, _EMPTY, to, token)) + encode(m.message)


def _e_exit_pair(op: int, op_tt: int) -> Callable[[Any], bytes]:
    """The encoder of ``{Op, FromPid, ToPid, Reason}`` or, with a token,
    ``{OpTT, FromPid, ToPid, Token, Reason}`` (EXIT, EXIT2)."""
    def enc(m: Any) -> bytes:
        frm, to = _e_pid("from_pid", m.from_pid), _e_pid("to_pid", m.to_pid)
        token = m.trace_token
        if token is None:
            return b"p" + encode((op, frm, to, m.reason))
        return b"p" + encode((op_tt, frm, to, token, m.reason))
    return enc


_e_exit = _e_exit_pair(Op.EXIT.value, Op.EXIT_TT.value)
_e_exit2 = _e_exit_pair(Op.EXIT2.value, Op.EXIT2_TT.value)


def _e_node_link(m: Any) -> bytes:
    return b"p" + encode((5,))


def _e_reg_send(m: Any) -> bytes:
    frm, name = m.from_pid, m.to_name
    if type(frm) is not Pid:
        frm = _e_pid("from_pid", frm)
    if type(name) is not Atom:
        name = _e_atom("to_name", name)
    token = m.trace_token
    if token is None:
        return b"p" + encode((6, frm, _EMPTY, name)) + encode(m.message)
    return b"p" + encode((16, frm, _EMPTY, name, token)) + encode(m.message)


def _e_monitor_p(m: Any) -> bytes:
    frm, to, ref = m.from_pid, m.to_proc, m.ref
    if type(frm) is not Pid:
        frm = _e_pid("from_pid", frm)
    if type(to) is not Atom and type(to) is not Pid:
        to = _e_proc("to_proc", to)
    if type(ref) is not Reference:
        ref = _e_ref("ref", ref)
    return b"p" + encode((19, frm, to, ref))


def _e_demonitor_p(m: Any) -> bytes:
    return b"p" + encode((20, _e_pid("from_pid", m.from_pid), _e_proc("to_proc", m.to_proc),
                          _e_ref("ref", m.ref)))


def _e_monitor_p_exit(m: Any) -> bytes:
    return b"p" + encode((21, _e_proc("from_proc", m.from_proc), _e_pid("to_pid", m.to_pid),
                          _e_ref("ref", m.ref), m.reason))


def _e_send_sender(m: Any) -> bytes:
    frm, to = m.from_pid, m.to_pid
    if type(frm) is not Pid:
        frm = _e_pid("from_pid", frm)
    if type(to) is not Pid:
        to = _e_pid("to_pid", to)
    token = m.trace_token
    if token is None:
        return b"p" + encode((22, frm, to)) + encode(m.message)
    return b"p" + encode((23, frm, to, token)) + encode(m.message)


def _e_payload_exit_pair(op: int, op_tt: int) -> Callable[[Any], bytes]:
    """The encoder of ``{Op, FromPid, ToPid}`` + Reason or, with a token,
    ``{OpTT, FromPid, ToPid, Token}`` + Reason (PAYLOAD_EXIT, PAYLOAD_EXIT2)."""
    def enc(m: Any) -> bytes:
        frm, to = _e_pid("from_pid", m.from_pid), _e_pid("to_pid", m.to_pid)
        token = m.trace_token
        if token is None:
            return b"p" + encode((op, frm, to)) + encode(m.reason)
        return b"p" + encode((op_tt, frm, to, token)) + encode(m.reason)
    return enc


_e_payload_exit = _e_payload_exit_pair(Op.PAYLOAD_EXIT.value, Op.PAYLOAD_EXIT_TT.value)
_e_payload_exit2 = _e_payload_exit_pair(Op.PAYLOAD_EXIT2.value, Op.PAYLOAD_EXIT2_TT.value)


def _e_payload_monitor_p_exit(m: Any) -> bytes:
    return b"p" + encode((28, _e_proc("from_proc", m.from_proc), _e_pid("to_pid", m.to_pid),
                          _e_ref("ref", m.ref))) + encode(m.reason)


def _e_mfa(value: Any) -> tuple[Any, Any, int]:
    if not isinstance(value, tuple) or len(value) != 3:
        _e_not("mfa", "a (module, function, arity) tuple", value)
    return (_e_atom("mfa module", value[0]), _e_atom("mfa function", value[1]),
            _e_uint("mfa arity", value[2], 0, 255))


def _e_spawn_request(m: Any) -> bytes:
    fields = (_e_ref("req_id", m.req_id), _e_pid("from_pid", m.from_pid),
              _e_pid("group_leader", m.group_leader), _e_mfa(m.mfa),
              _e_list("opt_list", m.opt_list))
    args = _e_list("arg_list", m.arg_list)
    token = m.trace_token
    if token is None:
        return b"p" + encode((29, *fields)) + encode(args)
    return b"p" + encode((30, *fields, token)) + encode(args)


def _e_spawn_reply(m: Any) -> bytes:
    fields = (_e_ref("req_id", m.req_id), _e_pid("to_pid", m.to_pid),
              _e_uint("flags", m.flags, 0, _SPAWN_FLAGS_LIMIT - 1),
              _e_proc("result", m.result))
    token = m.trace_token
    if token is None:
        return b"p" + encode((31, *fields))
    return b"p" + encode((32, *fields, token))


def _e_alias_send(m: Any) -> bytes:
    frm, alias = m.from_pid, m.alias
    if type(frm) is not Pid:
        frm = _e_pid("from_pid", frm)
    if type(alias) is not Reference:
        alias = _e_ref("alias", alias)
    token = m.trace_token
    if token is None:
        return b"p" + encode((33, frm, alias)) + encode(m.message)
    return b"p" + encode((34, frm, alias, token)) + encode(m.message)


def _e_unlink_id_of(op: int, low: int) -> Callable[[Any], bytes]:
    """The encoder of ``{Op, Id, FromPid, ToPid}``, ``id`` in ``low``..2**64-1
    (UNLINK_ID: 1, UNLINK_ID_ACK: 0)."""
    def enc(m: Any) -> bytes:
        return b"p" + encode((op, _e_uint("id", m.id, low, _U64_MAX),
                              _e_pid("from_pid", m.from_pid), _e_pid("to_pid", m.to_pid)))
    return enc


_e_unlink_id = _e_unlink_id_of(Op.UNLINK_ID.value, 1)
_e_unlink_id_ack = _e_unlink_id_of(Op.UNLINK_ID_ACK.value, 0)


_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    Link: _e_link,
    Send: _e_send,
    Exit: _e_exit,
    Unlink: _e_unlink,
    NodeLink: _e_node_link,
    RegSend: _e_reg_send,
    GroupLeader: _e_group_leader,
    Exit2: _e_exit2,
    MonitorP: _e_monitor_p,
    DemonitorP: _e_demonitor_p,
    MonitorPExit: _e_monitor_p_exit,
    SendSender: _e_send_sender,
    PayloadExit: _e_payload_exit,
    PayloadExit2: _e_payload_exit2,
    PayloadMonitorPExit: _e_payload_monitor_p_exit,
    SpawnRequest: _e_spawn_request,
    SpawnReply: _e_spawn_reply,
    AliasSend: _e_alias_send,
    UnlinkId: _e_unlink_id,
    UnlinkIdAck: _e_unlink_id_ack,
}


def encode_message(msg: DistMessage) -> bytes:
    """The pass-through payload of ``msg``: ``b"p" + control tuple [+ message term]``.

    Raises:
        LocalProtocolError: ``msg`` is not a distribution message, or one of
            its control fields has a type OTP would refuse.
        EncodeError: the message, reason, argument list or trace token has
            no Erlang term.
    """
    encoder = _ENCODERS.get(type(msg))
    if encoder is None:
        raise LocalProtocolError(
            f"not a distribution message: {type(msg).__name__} (expected one of "
            "the quicdist.dist classes)")
    try:
        return encoder(msg)
    except _Misuse as exc:
        raise LocalProtocolError(f"{type(msg).__name__}: {exc}") from None
