"""Distribution messages (``quicdist.dist``): layouts, round trips, hostile input, OTP.

* ``CASES`` holds one message per operation (every ``Op``, the ``*_TT``
  forms included) and the PROTOCOL.md §8 captures, each with the control
  tuple and trailing term written out by hand from OTP's erl_dist_protocol
  page: our bytes must be exactly ``b"p" + encode(ctl) [+ encode(term)]``,
  and must decode back to the same message.
* With ``erl`` on PATH, OTP itself checks both directions in one run: it
  reads each of our payloads with ``binary_to_term`` and compares it with
  the same terms built in Erlang (and our bytes with its own
  ``term_to_binary(T, [{minor_version, 2}])``); and it writes each case for
  us to decode.
* Hostile payloads, and a hypothesis fuzz of random and mutated payloads:
  only ``DistMessageError`` (or a valid message) ever comes out.
"""

from __future__ import annotations

import dataclasses
import pickle
import shutil
import subprocess
import textwrap
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from quicdist import Atom, ImproperList, Pid, Reference, decode_from, encode
from quicdist.dist import (
    PAYLOAD_OPS,
    AliasSend,
    DemonitorP,
    DistMessageError,
    Exit,
    Exit2,
    GroupLeader,
    Link,
    MonitorP,
    MonitorPExit,
    NodeLink,
    Op,
    PayloadExit,
    PayloadExit2,
    PayloadMonitorPExit,
    RegSend,
    Send,
    SendSender,
    SpawnReply,
    SpawnRequest,
    Unlink,
    UnlinkId,
    UnlinkIdAck,
    decode_message,
    encode_message,
)
from quicdist.errors import EncodeError, LocalProtocolError, RemoteProtocolError


# ---------------------------------------------------------------------------
# Values shared with the Erlang side (its pid/ref/tok/msg functions)

EN = "erl@127.0.0.1"
PN = "py@127.0.0.1"
EPID = Pid(EN, 84, 0, 1700000000)
GL = Pid(EN, 70, 0, 1700000000)
PPID = Pid(PN, 1, 0, 3)
REF = Reference(EN, 1700000000, (158842, 3145728001, 2716057635))
PREF = Reference(PN, 3, (7, 8, 9))
TOK = (0, Atom("label"), 5, EPID, 4)
MSG = (Atom("hello"), [1, 2, 3], b"bin", {Atom("k"): 1.5}, [115, 116, 114])
ALIAS_TAG = ImproperList([Atom("alias")], REF)
NONE = object()  # no trailing term
U64_MAX = (1 << 64) - 1

A = Atom
CASES: dict[str, tuple[Any, tuple[Any, ...], Any]] = {
    "link": (Link(PPID, EPID), (1, PPID, EPID), NONE),
    "send": (Send(EPID, MSG), (2, A(""), EPID), MSG),
    "send_tt": (Send(EPID, MSG, TOK), (12, A(""), EPID, TOK), MSG),
    "exit": (Exit(PPID, EPID, (A("shutdown"), A("x"))),
             (3, PPID, EPID, (A("shutdown"), A("x"))), NONE),
    "exit_tt": (Exit(PPID, EPID, A("killed"), TOK), (13, PPID, EPID, TOK, A("killed")), NONE),
    "unlink": (Unlink(PPID, EPID), (4, PPID, EPID), NONE),
    "node_link": (NodeLink(), (5,), NONE),
    "reg_send": (RegSend(PPID, A("rex"), MSG), (6, PPID, A(""), A("rex")), MSG),
    "reg_send_tt": (RegSend(PPID, A("rex"), MSG, TOK), (16, PPID, A(""), A("rex"), TOK), MSG),
    "group_leader": (GroupLeader(EPID, PPID), (7, EPID, PPID), NONE),
    "exit2": (Exit2(PPID, EPID, A("kill")), (8, PPID, EPID, A("kill")), NONE),
    "exit2_tt": (Exit2(PPID, EPID, A("normal"), TOK), (18, PPID, EPID, TOK, A("normal")), NONE),
    "monitor_p_pid": (MonitorP(PPID, EPID, PREF), (19, PPID, EPID, PREF), NONE),
    "monitor_p_name": (MonitorP(EPID, A("net_kernel"), REF),
                       (19, EPID, A("net_kernel"), REF), NONE),
    "demonitor_p": (DemonitorP(EPID, A("net_kernel"), REF),
                    (20, EPID, A("net_kernel"), REF), NONE),
    "monitor_p_exit_noproc": (MonitorPExit(A("net_kernel"), EPID, REF, A("noproc")),
                              (21, A("net_kernel"), EPID, REF, A("noproc")), NONE),
    "monitor_p_exit_return": (MonitorPExit(PPID, EPID, REF, (PREF, A("return"), 42)),
                              (21, PPID, EPID, REF, (PREF, A("return"), 42)), NONE),
    "send_sender": (SendSender(PPID, EPID, MSG), (22, PPID, EPID), MSG),
    "send_sender_tt": (SendSender(PPID, EPID, MSG, TOK), (23, PPID, EPID, TOK), MSG),
    "payload_exit": (PayloadExit(PPID, EPID, (A("badarg"), [(A("m"), A("f"), 1, [])])),
                     (24, PPID, EPID), (A("badarg"), [(A("m"), A("f"), 1, [])])),
    "payload_exit_tt": (PayloadExit(PPID, EPID, A("normal"), TOK), (25, PPID, EPID, TOK),
                        A("normal")),
    "payload_exit2": (PayloadExit2(PPID, EPID, A("kill")), (26, PPID, EPID), A("kill")),
    "payload_exit2_tt": (PayloadExit2(PPID, EPID, (A("shutdown"), 1), TOK),
                         (27, PPID, EPID, TOK), (A("shutdown"), 1)),
    "payload_monitor_p_exit": (PayloadMonitorPExit(PPID, EPID, REF, (PREF, A("return"), 42)),
                               (28, PPID, EPID, REF), (PREF, A("return"), 42)),
    "spawn_request": (SpawnRequest(REF, EPID, GL, (A("erpc"), A("execute_call"), 4),
                                   [A("monitor")], [PREF, A("lists"), A("seq"), [1, 3]]),
                      (29, REF, EPID, GL, (A("erpc"), A("execute_call"), 4), [A("monitor")]),
                      [PREF, A("lists"), A("seq"), [1, 3]]),
    "spawn_request_tt": (SpawnRequest(REF, EPID, GL, (A("erpc"), A("execute_cast"), 3),
                                      [], [A("m"), A("f"), []], TOK),
                         (30, REF, EPID, GL, (A("erpc"), A("execute_cast"), 3), [], TOK),
                         [A("m"), A("f"), []]),
    "spawn_reply": (SpawnReply(REF, EPID, 2, PPID), (31, REF, EPID, 2, PPID), NONE),
    "spawn_reply_tt": (SpawnReply(REF, EPID, 0, A("badopt"), TOK),
                       (32, REF, EPID, 0, A("badopt"), TOK), NONE),
    "alias_send": (AliasSend(PPID, REF, MSG), (33, PPID, REF), MSG),
    "alias_send_tt": (AliasSend(PPID, REF, MSG, TOK), (34, PPID, REF, TOK), MSG),
    "unlink_id": (UnlinkId(U64_MAX, PPID, EPID), (35, U64_MAX, PPID, EPID), NONE),
    "unlink_id_ack": (UnlinkIdAck(1, EPID, PPID), (36, 1, EPID, PPID), NONE),
    # PROTOCOL.md §8: net_adm:ping, its reply, rpc's features_request answer.
    "is_auth_call": (RegSend(EPID, A("net_kernel"),
                             (A("$gen_call"), (EPID, ALIAS_TAG), (A("is_auth"), A(EN)))),
                     (6, EPID, A(""), A("net_kernel")),
                     (A("$gen_call"), (EPID, ALIAS_TAG), (A("is_auth"), A(EN)))),
    "is_auth_reply": (Send(EPID, (ALIAS_TAG, A("yes"))), (2, A(""), EPID),
                      (ALIAS_TAG, A("yes"))),
    "features_reply": (Send(EPID, (A("features_reply"), A(PN), [A("erpc")])),
                       (2, A(""), EPID), (A("features_reply"), A(PN), [A("erpc")])),
}

# The same terms, built in Erlang. '$none' marks "no trailing term".
ERLANG_CASES = r"""
expected(link) -> {{1, ppid(), epid()}, '$none'};
expected(send) -> {{2, '', epid()}, msg()};
expected(send_tt) -> {{12, '', epid(), tok()}, msg()};
expected(exit) -> {{3, ppid(), epid(), {shutdown, x}}, '$none'};
expected(exit_tt) -> {{13, ppid(), epid(), tok(), killed}, '$none'};
expected(unlink) -> {{4, ppid(), epid()}, '$none'};
expected(node_link) -> {{5}, '$none'};
expected(reg_send) -> {{6, ppid(), '', rex}, msg()};
expected(reg_send_tt) -> {{16, ppid(), '', rex, tok()}, msg()};
expected(group_leader) -> {{7, epid(), ppid()}, '$none'};
expected(exit2) -> {{8, ppid(), epid(), kill}, '$none'};
expected(exit2_tt) -> {{18, ppid(), epid(), tok(), normal}, '$none'};
expected(monitor_p_pid) -> {{19, ppid(), epid(), pref()}, '$none'};
expected(monitor_p_name) -> {{19, epid(), net_kernel, ref()}, '$none'};
expected(demonitor_p) -> {{20, epid(), net_kernel, ref()}, '$none'};
expected(monitor_p_exit_noproc) -> {{21, net_kernel, epid(), ref(), noproc}, '$none'};
expected(monitor_p_exit_return) -> {{21, ppid(), epid(), ref(), {pref(), return, 42}}, '$none'};
expected(send_sender) -> {{22, ppid(), epid()}, msg()};
expected(send_sender_tt) -> {{23, ppid(), epid(), tok()}, msg()};
expected(payload_exit) -> {{24, ppid(), epid()}, {badarg, [{m, f, 1, []}]}};
expected(payload_exit_tt) -> {{25, ppid(), epid(), tok()}, normal};
expected(payload_exit2) -> {{26, ppid(), epid()}, kill};
expected(payload_exit2_tt) -> {{27, ppid(), epid(), tok()}, {shutdown, 1}};
expected(payload_monitor_p_exit) -> {{28, ppid(), epid(), ref()}, {pref(), return, 42}};
expected(spawn_request) ->
    {{29, ref(), epid(), gl(), {erpc, execute_call, 4}, [monitor]}, [pref(), lists, seq, [1, 3]]};
expected(spawn_request_tt) ->
    {{30, ref(), epid(), gl(), {erpc, execute_cast, 3}, [], tok()}, [m, f, []]};
expected(spawn_reply) -> {{31, ref(), epid(), 2, ppid()}, '$none'};
expected(spawn_reply_tt) -> {{32, ref(), epid(), 0, badopt, tok()}, '$none'};
expected(alias_send) -> {{33, ppid(), ref()}, msg()};
expected(alias_send_tt) -> {{34, ppid(), ref(), tok()}, msg()};
expected(unlink_id) -> {{35, 18446744073709551615, ppid(), epid()}, '$none'};
expected(unlink_id_ack) -> {{36, 1, epid(), ppid()}, '$none'};
expected(is_auth_call) ->
    {{6, epid(), '', net_kernel},
     {'$gen_call', {epid(), [alias | ref()]}, {is_auth, 'erl@127.0.0.1'}}};
expected(is_auth_reply) -> {{2, '', epid()}, {[alias | ref()], yes}};
expected(features_reply) -> {{2, '', epid()}, {features_reply, 'py@127.0.0.1', [erpc]}}.
"""

ERLANG_MODULE = r"""
-module(quicdist_dist_check).
-export([main/1]).

pid(Node, Id, Serial, Creation) ->
    N = atom_to_binary(Node, utf8),
    binary_to_term(<<131, 88, 119, (byte_size(N)), N/binary, Id:32, Serial:32, Creation:32>>).
ref(Node, Creation, Ids) ->
    N = atom_to_binary(Node, utf8),
    IdBin = << <<I:32>> || I <- Ids >>,
    binary_to_term(<<131, 90, (length(Ids)):16, 119, (byte_size(N)), N/binary,
                     Creation:32, IdBin/binary>>).

epid() -> pid('erl@127.0.0.1', 84, 0, 1700000000).
gl() -> pid('erl@127.0.0.1', 70, 0, 1700000000).
ppid() -> pid('py@127.0.0.1', 1, 0, 3).
ref() -> ref('erl@127.0.0.1', 1700000000, [158842, 3145728001, 2716057635]).
pref() -> ref('py@127.0.0.1', 3, [7, 8, 9]).
tok() -> {0, label, 5, epid(), 4}.
msg() -> {hello, [1, 2, 3], <<"bin">>, #{k => 1.5}, "str"}.

t2b(T) -> term_to_binary(T, [{minor_version, 2}]).

ours(Ctl, '$none') -> <<112, (t2b(Ctl))/binary>>;
ours(Ctl, Msg) -> <<112, (t2b(Ctl))/binary, (t2b(Msg))/binary>>.

read_all(<<>>) -> [];
read_all(Bin) ->
    {T, Used} = binary_to_term(Bin, [used]),
    <<_:Used/binary, Rest/binary>> = Bin,
    [T | read_all(Rest)].

check({Name, Payload}) ->
    {Ctl, Msg} = expected(Name),
    Got = try
              <<112, Rest/binary>> = Payload,
              case read_all(Rest) of
                  [C] -> {C, '$none'};
                  [C, M] -> {C, M};
                  Other -> {too_many_terms, Other}
              end
          catch Class:Reason -> {Class, Reason}
          end,
    Same = (Got =:= {Ctl, Msg}),
    Exact = (Payload =:= ours(Ctl, Msg)),
    io:format("CHECK ~s ~s ~s~n", [Name, Same, Exact]),
    Same orelse io:format("GOT ~s ~0p~nWANT ~s ~0p~n", [Name, Got, Name, {Ctl, Msg}]),
    io:format("PAYLOAD ~s ~s~n", [Name, binary:encode_hex(ours(Ctl, Msg))]).

main(File) ->
    {ok, Bin} = file:read_file(File),
    lists:foreach(fun check/1, binary_to_term(Bin)),
    io:format("DONE~n").
"""


def strict(a: Any, b: Any) -> bool:
    """Equal as Erlang terms and as Python types (True is not 1, Atom is not str)."""
    if type(a) is not type(b):
        return False
    if dataclasses.is_dataclass(a):
        return all(strict(getattr(a, f.name), getattr(b, f.name))
                   for f in dataclasses.fields(a))
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(strict(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            strict(ka, kb) and strict(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True))
    if isinstance(a, ImproperList):
        return strict(a.elements, b.elements) and strict(a.tail, b.tail)
    return bool(a == b)


def expected_bytes(ctl: tuple[Any, ...], term: Any) -> bytes:
    return b"p" + encode(ctl) + (b"" if term is NONE else encode(term))


# ---------------------------------------------------------------------------
# Operation numbers and the case table


def test_op_numbers_are_otps():
    # erts/emulator/beam/dist.h, enum dop (OTP 25-27), and erl_dist_protocol.
    assert {op.name: op.value for op in Op} == {
        "LINK": 1, "SEND": 2, "EXIT": 3, "UNLINK": 4, "NODE_LINK": 5, "REG_SEND": 6,
        "GROUP_LEADER": 7, "EXIT2": 8, "SEND_TT": 12, "EXIT_TT": 13, "REG_SEND_TT": 16,
        "EXIT2_TT": 18, "MONITOR_P": 19, "DEMONITOR_P": 20, "MONITOR_P_EXIT": 21,
        "SEND_SENDER": 22, "SEND_SENDER_TT": 23, "PAYLOAD_EXIT": 24, "PAYLOAD_EXIT_TT": 25,
        "PAYLOAD_EXIT2": 26, "PAYLOAD_EXIT2_TT": 27, "PAYLOAD_MONITOR_P_EXIT": 28,
        "SPAWN_REQUEST": 29, "SPAWN_REQUEST_TT": 30, "SPAWN_REPLY": 31, "SPAWN_REPLY_TT": 32,
        "ALIAS_SEND": 33, "ALIAS_SEND_TT": 34, "UNLINK_ID": 35, "UNLINK_ID_ACK": 36,
    }


def test_cases_cover_every_op_and_payload_ops_are_the_ones_with_a_term():
    assert {msg.op for msg, _, _ in CASES.values()} == set(Op)
    for name, (msg, ctl, term) in CASES.items():
        assert ctl[0] == msg.op, name
        assert (term is not NONE) == (msg.op in PAYLOAD_OPS), name


def test_erlang_table_has_every_case():
    names = {line.split("(")[1].split(")")[0] for line in ERLANG_CASES.split("\n")
             if line.startswith("expected(")}
    assert names == set(CASES)


# ---------------------------------------------------------------------------
# Layout and round trip


@pytest.mark.parametrize("name", CASES)
def test_encode_is_exactly_the_documented_layout(name):
    msg, ctl, term = CASES[name]
    payload = encode_message(msg)
    assert payload == expected_bytes(ctl, term)
    got_ctl, pos = decode_from(payload, 1)
    assert strict(got_ctl, ctl)
    if term is NONE:
        assert pos == len(payload)
    else:
        got, end = decode_from(payload, pos)
        assert end == len(payload) and strict(got, term)


@pytest.mark.parametrize("name", CASES)
def test_round_trip(name):
    msg = CASES[name][0]
    payload = encode_message(msg)
    for data in (payload, bytearray(payload), memoryview(payload),
                 memoryview(b"xx" + payload + b"yy")[2:-2]):
        back = decode_message(data)
        assert strict(back, msg), (back, msg)
        assert back.op == msg.op
    assert encode_message(back) == payload


def test_messages_are_frozen_slotted_values():
    msg = CASES["send"][0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.to_pid = PPID  # type: ignore[misc]
    assert not hasattr(msg, "__dict__")
    back = decode_message(encode_message(msg))  # built by the decoder's fast constructor
    assert back == msg
    hashable = decode_message(encode_message(Send(EPID, (A("ok"), 1))))
    assert hash(hashable) == hash(Send(EPID, (A("ok"), 1)))
    assert strict(pickle.loads(pickle.dumps(back)), msg)
    assert repr(back) == repr(msg)
    assert dataclasses.replace(back, to_pid=PPID) == Send(PPID, MSG)
    with pytest.raises(dataclasses.FrozenInstanceError):
        back.message = 1  # type: ignore[misc]
    assert hash(CASES["monitor_p_name"][0]) == hash(MonitorP(EPID, A("net_kernel"), REF))
    assert Send(EPID, 1).op is Op.SEND and Send(EPID, 1, TOK).op is Op.SEND_TT
    assert Link.op is Op.LINK


def test_gen_call_alias_tag_round_trips_exactly():
    # PROTOCOL.md §8: the [alias | Ref] tag is an improper list and must come
    # back as one, byte for byte.
    msg, _, term = CASES["is_auth_call"]
    back = decode_message(encode_message(msg))
    assert isinstance(back, RegSend) and back.to_name == "net_kernel"
    tag = back.message[1][1]
    assert isinstance(tag, ImproperList) and tag.elements == (A("alias"),) and tag.tail == REF
    reply = Send(back.from_pid, (tag, A("yes")))
    assert encode_message(reply) == expected_bytes(*CASES["is_auth_reply"][1:])


def test_spawn_request_for_rpc_decodes_to_its_fields():
    # PROTOCOL.md §8: rpc:call is a SPAWN_REQUEST of erpc:execute_call/4 with
    # [Res, M, F, A] as payload; the argument list [1, 3] travels as STRING_EXT.
    payload = (b"p" + encode((29, REF, EPID, GL, (A("erpc"), A("execute_call"), 4),
                              [A("monitor")]))
               + encode([PREF, A("lists"), A("seq"), [1, 3]]))
    assert b"k\x00\x02\x01\x03" in payload
    msg = decode_message(payload)
    assert isinstance(msg, SpawnRequest) and msg.op is Op.SPAWN_REQUEST
    assert msg.req_id == REF and msg.from_pid == EPID and msg.group_leader == GL
    assert strict(msg.mfa, (A("erpc"), A("execute_call"), 4))
    assert strict(msg.opt_list, [A("monitor")])
    assert strict(msg.arg_list, [PREF, A("lists"), A("seq"), [1, 3]])
    assert msg.trace_token is None


def test_atom_true_and_false_as_names_come_back_as_atoms():
    payload = b"p" + encode((6, PPID, A(""), True)) + encode(1)
    msg = decode_message(payload)
    assert isinstance(msg, RegSend) and type(msg.to_name) is Atom and msg.to_name == "true"
    assert encode_message(msg) == payload
    mon = decode_message(b"p" + encode((19, PPID, False, REF)))
    assert isinstance(mon, MonitorP) and type(mon.to_proc) is Atom and mon.to_proc == "false"


def test_unused_cookie_field_is_not_checked_like_otp():
    # OTP ignores the Unused element of SEND / REG_SEND; we write '' and read anything.
    msg = decode_message(b"p" + encode((2, A("cookie"), EPID)) + encode(1))
    assert strict(msg, Send(EPID, 1))
    msg = decode_message(b"p" + encode((6, PPID, 7, A("rex"))) + encode(1))
    assert strict(msg, RegSend(PPID, A("rex"), 1))


# ---------------------------------------------------------------------------
# Encoding misuse


def test_plain_str_is_written_as_an_atom_where_only_an_atom_fits():
    assert encode_message(RegSend(PPID, "rex", 1)) == encode_message(RegSend(PPID, A("rex"), 1))
    assert (encode_message(MonitorP(PPID, "net_kernel", REF))
            == encode_message(MonitorP(PPID, A("net_kernel"), REF)))
    req = SpawnRequest(REF, EPID, GL, ("erpc", "execute_call", 4), [], [])
    back = decode_message(encode_message(req))
    assert isinstance(back, SpawnRequest) and type(back.mfa[0]) is Atom


@pytest.mark.parametrize("msg", [
    Send("not a pid", 1),
    Send(EPID.node, 1),
    RegSend(PPID, 42, 1),
    RegSend(REF, A("rex"), 1),
    MonitorP(PPID, (1, 2), REF),
    MonitorP(PPID, A("x"), EPID),
    MonitorPExit(REF, EPID, REF, A("noproc")),
    AliasSend(PPID, EPID, 1),
    SpawnRequest(REF, EPID, GL, (A("m"), A("f")), [], []),
    SpawnRequest(REF, EPID, GL, (A("m"), A("f"), -1), [], []),
    SpawnRequest(REF, EPID, GL, (A("m"), A("f"), True), [], []),
    SpawnRequest(REF, EPID, GL, (A("m"), A("f"), 0), (), []),
    SpawnRequest(REF, EPID, GL, (A("m"), A("f"), 0), [], (1,)),
    SpawnReply(REF, EPID, 1 << 27, PPID),
    SpawnReply(REF, EPID, 0, REF),
    UnlinkId(0, PPID, EPID),
    UnlinkId(1 << 64, PPID, EPID),
    UnlinkIdAck(-1, PPID, EPID),
    Link(PPID, None),
    Exit(None, EPID, A("normal")),
], ids=repr)
def test_wrong_control_field_types_are_a_local_protocol_error(msg):
    with pytest.raises(LocalProtocolError):
        encode_message(msg)


def test_encode_rejects_what_is_not_a_message():
    for bad in (None, (2, A(""), EPID), "send", Op.SEND):
        with pytest.raises(LocalProtocolError, match="not a distribution message"):
            encode_message(bad)


def test_unencodable_message_term_is_an_encode_error():
    with pytest.raises(EncodeError):
        encode_message(Send(EPID, {1, 2}))
    with pytest.raises(EncodeError):
        encode_message(Exit(PPID, EPID, float("nan")))


# ---------------------------------------------------------------------------
# Hostile input


def _p(*terms: Any) -> bytes:
    return b"p" + b"".join(encode(t) for t in terms)


SEND_OK = _p((2, A(""), EPID), 1)
HOSTILE: dict[str, tuple[bytes, Op | None, str]] = {
    "empty": (b"", None, "empty"),
    "atom cache header": (b"\x83D\x00", None, "atom-cache headers"),
    "fragment header": (b"\x83E" + bytes(20), None, "fragments"),
    "fragment continuation": (b"\x83F" + bytes(20), None, "fragments"),
    "unknown type byte": (b"q" + SEND_OK[1:], None, "unknown distribution message type 113"),
    "bare version byte": (b"\x83", None, "unknown distribution message type 131"),
    "only p": (b"p", None, "does not decode"),
    "truncated control": (SEND_OK[:10], None, "does not decode"),
    "control not a tuple": (_p([2, A(""), EPID], 1), None, "not a tuple"),
    "empty control tuple": (_p(()), None, "not a tuple"),
    "unknown op": (_p((99, A(""), EPID), 1), None, "unknown distribution operation 99"),
    "op 0": (_p((0,)), None, "unknown distribution operation"),
    "op 9 (gap)": (_p((9, PPID, EPID)), None, "unknown distribution operation 9"),
    "op 37": (_p((37, 0, PPID, EPID)), None, "unknown distribution operation 37"),
    "op negative": (_p((-2, A(""), EPID), 1), None, "unknown distribution operation"),
    "op bignum": (_p((2**70, A(""), EPID), 1), None, "unknown distribution operation"),
    "op is an atom": (_p((A("send"), A(""), EPID), 1), None, "unknown distribution operation"),
    "op is true": (_p((True, PPID, EPID)), None, "unknown distribution operation"),
    "op is a float": (_p((2.0, A(""), EPID), 1), None, "unknown distribution operation"),
    "send arity 4": (_p((2, A(""), EPID, 1), 1), Op.SEND, "3"),
    "send arity 2": (_p((2, A("")), 1), Op.SEND, "expected 3"),
    "send_tt arity 3": (_p((12, A(""), EPID), 1), Op.SEND_TT, "expected 4"),
    "node_link arity 2": (_p((5, 1)), Op.NODE_LINK, "expected 1"),
    "spawn_request arity 7": (_p((29, REF, EPID, GL, (A("m"), A("f"), 0), [], 1), []),
                              Op.SPAWN_REQUEST, "expected 6"),
    "send to an atom": (_p((2, A(""), A("rex")), 1), Op.SEND, "ToPid must be a pid"),
    "reg_send to a pid": (_p((6, PPID, A(""), EPID), 1), Op.REG_SEND,
                          "ToName must be an atom"),
    "reg_send to a binary": (_p((6, PPID, A(""), b"rex"), 1), Op.REG_SEND,
                             "ToName must be an atom"),
    "reg_send from an atom": (_p((6, A("x"), A(""), A("rex")), 1), Op.REG_SEND,
                              "FromPid must be a pid"),
    "link from a ref": (_p((1, REF, EPID)), Op.LINK, "FromPid"),
    "monitor_p target a tuple": (_p((19, EPID, (A("rex"), A(EN)), REF)), Op.MONITOR_P,
                                 "ToProc must be a pid or an atom"),
    "monitor_p ref a pid": (_p((19, EPID, A("rex"), EPID)), Op.MONITOR_P,
                            "Ref must be a reference"),
    "monitor_p_exit from a ref": (_p((21, REF, EPID, REF, A("noproc"))), Op.MONITOR_P_EXIT,
                                  "FromProc"),
    "alias_send alias a pid": (_p((33, PPID, EPID), 1), Op.ALIAS_SEND, "Alias"),
    "spawn_request mfa 2-tuple": (_p((29, REF, EPID, GL, (A("m"), A("f")), []), []),
                                  Op.SPAWN_REQUEST, "3-tuple"),
    "spawn_request mfa list": (_p((29, REF, EPID, GL, [A("m"), A("f"), 0], []), []),
                               Op.SPAWN_REQUEST, "3-tuple"),
    "spawn_request arity negative": (_p((29, REF, EPID, GL, (A("m"), A("f"), -1), []), []),
                                     Op.SPAWN_REQUEST, "Arity"),
    "spawn_request module a binary": (_p((29, REF, EPID, GL, (b"m", A("f"), 0), []), []),
                                      Op.SPAWN_REQUEST, "Module"),
    "spawn_request opts improper": (_p((29, REF, EPID, GL, (A("m"), A("f"), 0),
                                        ImproperList([A("monitor")], A("x"))), []),
                                    Op.SPAWN_REQUEST, "OptList"),
    "spawn_request args not a list": (_p((29, REF, EPID, GL, (A("m"), A("f"), 0), []),
                                         (1, 2)), Op.SPAWN_REQUEST, "ArgList"),
    "spawn_request req_id a pid": (_p((29, EPID, EPID, GL, (A("m"), A("f"), 0), []), []),
                                   Op.SPAWN_REQUEST, "ReqId"),
    "spawn_reply flags too big": (_p((31, REF, EPID, 1 << 27, PPID)), Op.SPAWN_REPLY, "Flags"),
    "spawn_reply flags true": (_p((31, REF, EPID, True, PPID)), Op.SPAWN_REPLY, "Flags"),
    "spawn_reply result a ref": (_p((31, REF, EPID, 0, REF)), Op.SPAWN_REPLY, "Result"),
    "unlink_id id 0": (_p((35, 0, PPID, EPID)), Op.UNLINK_ID, "Id"),
    "unlink_id id 2**64": (_p((35, 1 << 64, PPID, EPID)), Op.UNLINK_ID, "Id"),
    "unlink_id_ack id negative": (_p((36, -1, PPID, EPID)), Op.UNLINK_ID_ACK, "Id"),
    "trailing garbage after message": (SEND_OK + b"\x00", Op.SEND, "1 trailing bytes"),
    "two message terms": (SEND_OK + encode(2), Op.SEND, "trailing bytes"),
    "garbage after a control-only op": (_p((1, PPID, EPID)) + b"\x83", Op.LINK,
                                        "carries no message"),
    "message after a control-only op": (_p((19, EPID, A("rex"), REF), 1), Op.MONITOR_P,
                                        "carries no message"),
    "reason after exit (not payload_exit)": (_p((3, PPID, EPID, A("x")), A("x")), Op.EXIT,
                                             "carries no message"),
    "send without message": (_p((2, A(""), EPID)), Op.SEND, "missing"),
    "payload_exit without reason": (_p((24, PPID, EPID)), Op.PAYLOAD_EXIT, "missing"),
    "spawn_request without args": (_p((29, REF, EPID, GL, (A("m"), A("f"), 0), [])),
                                   Op.SPAWN_REQUEST, "missing"),
    "message undecodable": (_p((2, A(""), EPID)) + b"\x83\xff", Op.SEND, "does not decode"),
    "message truncated": (SEND_OK[:-1], Op.SEND, "does not decode"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_payload_raises_dist_message_error(name):
    payload, op, text = HOSTILE[name]
    with pytest.raises(DistMessageError) as info:
        decode_message(payload)
    err = info.value
    assert err.op is op
    assert text in str(err)
    assert isinstance(err, RemoteProtocolError) and isinstance(err, ValueError)
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is DistMessageError and again.op is op and str(again) == str(err)


def test_every_truncation_of_every_case_raises():
    for name, (msg, _, _) in CASES.items():
        payload = encode_message(msg)
        for cut in range(len(payload)):
            with pytest.raises(DistMessageError):
                decode_message(payload[:cut])
        assert strict(decode_message(payload), msg), name


def test_non_bytes_input_is_a_type_error():
    with pytest.raises(TypeError):
        decode_message("p")  # type: ignore[arg-type]


def test_any_byte_buffer_format_reads_as_bytes():
    import array
    payload = encode_message(CASES["send"][0])
    for fmt in ("b", "c"):
        view = memoryview(payload).cast(fmt)
        assert strict(decode_message(view), CASES["send"][0])
    assert strict(decode_message(array.array("b", payload)), CASES["send"][0])


def test_all_names_exist():
    from quicdist import dist
    for name in dist.__all__:
        assert hasattr(dist, name), name


# ---------------------------------------------------------------------------
# Fuzz: only DistMessageError, or a message that re-encodes to itself


def _accepts(payload: bytes) -> None:
    try:
        msg = decode_message(payload)
    except DistMessageError:
        return
    again = decode_message(encode_message(msg))
    assert strict(again, msg), (payload, msg, again)


_names = st.sampled_from([A(""), A("rex"), A("net_kernel"), A("x"), True, False])
_leaves = st.one_of(
    st.sampled_from([EPID, PPID, GL, REF, PREF, TOK, A(""), A("rex"), [], ALIAS_TAG]),
    st.integers(-3, 40), st.integers(-(2**65), 2**65), _names,
    st.binary(max_size=6), st.floats(allow_nan=False, allow_infinity=False),
)
_terms = st.recursive(
    _leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.lists(inner, max_size=4).map(tuple)),
    max_leaves=10,
)
FUZZ = settings(max_examples=250, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow])
VALID_PAYLOADS = [encode_message(msg) for msg, _, _ in CASES.values()]


@FUZZ
@given(st.binary(max_size=64))
def test_fuzz_random_bytes(data):
    _accepts(data)
    _accepts(b"p" + data)
    _accepts(b"p\x83" + data)


@FUZZ
@given(st.sampled_from(VALID_PAYLOADS), st.data())
def test_fuzz_mutated_bytes(payload, data):
    buf = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "cut"]))
        i = data.draw(st.integers(0, max(0, len(buf) - 1)))
        if not buf:
            break
        if kind == "flip":
            buf[i] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set":
            buf[i] = data.draw(st.integers(0, 255))
        elif kind == "insert":
            buf[i:i] = data.draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete":
            del buf[i]
        else:
            del buf[i:]
    _accepts(bytes(buf))


@FUZZ
@given(st.sampled_from(list(CASES.values())), st.data())
def test_fuzz_mutated_control_tuples(case, data):
    _, ctl, term = case
    fields = list(ctl)
    kind = data.draw(st.sampled_from(["replace", "replace", "drop", "add", "op", "term"]))
    if kind == "replace":
        fields[data.draw(st.integers(0, len(fields) - 1))] = data.draw(_terms)
    elif kind == "drop":
        del fields[data.draw(st.integers(0, len(fields) - 1))]
    elif kind == "add":
        fields.insert(data.draw(st.integers(0, len(fields))), data.draw(_terms))
    elif kind == "op":
        fields[0] = data.draw(st.integers(-1, 40))
    else:
        term = data.draw(st.one_of(st.just(NONE), _terms))
    payload = b"p" + encode(tuple(fields))
    if term is not NONE:
        payload += encode(term)
    _accepts(payload)


# ---------------------------------------------------------------------------
# OTP: both directions, one erl run


ERL = shutil.which("erl")
ERLC = shutil.which("erlc")


@pytest.fixture(scope="module")
def otp(tmp_path_factory):
    if ERL is None or ERLC is None:
        pytest.skip("SKIPPED LOUDLY: erl/erlc not on PATH, the OTP cross-check of the "
                    "distribution messages did not run (install erlang-nox)")
    tmp = tmp_path_factory.mktemp("dist_otp")
    src = tmp / "quicdist_dist_check.erl"
    src.write_text(textwrap.dedent(ERLANG_MODULE) + ERLANG_CASES, encoding="utf-8")
    subprocess.run([ERLC, "-o", str(tmp), str(src)], check=True, capture_output=True,
                   timeout=60)
    cases = tmp / "cases.etf"
    cases.write_bytes(encode([(A(name), encode_message(msg))
                              for name, (msg, _, _) in CASES.items()]))
    proc = subprocess.run(
        [ERL, "-noshell", "-pa", str(tmp), "-eval",
         f'quicdist_dist_check:main("{cases}"), halt().'],
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0 and "DONE" in proc.stdout, proc.stdout + proc.stderr
    checks: dict[str, tuple[str, str]] = {}
    payloads: dict[str, bytes] = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if parts and parts[0] == "CHECK":
            checks[parts[1]] = (parts[2], parts[3])
        elif parts and parts[0] == "PAYLOAD":
            payloads[parts[1]] = bytes.fromhex(parts[2])
    return checks, payloads, proc.stdout


@pytest.mark.erl
def test_otp_reads_our_payloads_as_the_expected_terms(otp):
    checks, _, out = otp
    assert set(checks) == set(CASES), out
    wrong = {name: c for name, c in checks.items() if c[0] != "true"}
    assert not wrong, out


@pytest.mark.erl
def test_our_payloads_are_byte_identical_to_otps_encoding(otp):
    checks, _, out = otp
    inexact = sorted(name for name, c in checks.items() if c[1] != "true")
    assert not inexact, out


@pytest.mark.erl
def test_we_read_otps_payloads_as_the_expected_messages(otp):
    _, payloads, out = otp
    assert set(payloads) == set(CASES), out
    for name, payload in payloads.items():
        msg = decode_message(payload)
        assert strict(msg, CASES[name][0]), (name, msg)
