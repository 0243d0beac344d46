"""A Node in this process against a scripted fake Erlang node (tests/raw_peer.py).

What PROTOCOL.md §8 says an OTP 25 node sends, sent byte for byte, and the
node's replies checked on the wire (byte-level where the layout matters);
then garbage frames and hostile handshakes, after which the node must still
work. "Nothing else was sent" is proven with a round trip
(:meth:`RawPeer.barrier`): the node answers in order on one stream, so
whatever it sent before that answer has arrived by then. No fixed sleeps:
state that no event announces is polled, always with a bound.
"""

from __future__ import annotations

import logging
import random
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from quicdist import Atom, ImproperList, Node, Pid, dist, encode
from quicdist.certs import make_dev_certs
from quicdist.errors import (
    AuthenticationError,
    MailboxClosed,
    QuicDistError,
    QuicDistTimeoutError,
)
from quicdist.flags import QUICDIST_FLAGS, DistFlag
from quicdist.handshake import digest
from quicdist.tls import TLSConfig
from tests.node_fixtures import wait_until
from tests.raw_peer import (
    TIMEOUT,
    RawPeer,
    ext_atom,
    ext_pid,
    ext_ref,
    ext_small_int,
    ext_tuple,
)


COOKIE = "wire-cookie"
NODE = "py@127.0.0.1"
LOGGER = "quicdist.node"

YES = Atom("yes")
NOPROC = Atom("noproc")
NORMAL = Atom("normal")
EXIT = Atom("EXIT")
#: A sequential-trace token as OTP writes it: {Flags, Label, Serial, From, LastCnt}.
TOKEN_FROM = Pid("erl@127.0.0.1", 7, 0, 0x5EED)
TOKEN = (0x1F, Atom("label"), 3, TOKEN_FROM, 2)


@dataclass(frozen=True)
class Certs:
    certfile: str
    keyfile: str
    cafile: str

    @property
    def tls(self) -> TLSConfig:
        return TLSConfig(self.certfile, self.keyfile, self.cafile, "verify_peer")


@pytest.fixture(scope="session")
def wire_certs(tmp_path_factory) -> Certs:
    made = make_dev_certs(tmp_path_factory.mktemp("node-wire-certs"), ["node"])
    return Certs(str(made["node"].certfile), str(made["node"].keyfile), str(made["ca"].certfile))


def make_node(certs: Certs, **kwargs) -> Node:
    name = kwargs.pop("name", NODE)
    options = dict(cookie=COOKIE, port=0, host="127.0.0.1", certfile=certs.certfile,
                   keyfile=certs.keyfile, cafile=certs.cafile, verify="verify_peer", dns=False)
    options.update(kwargs)
    return Node(name, **options).start()


@pytest.fixture
def node(wire_certs) -> Iterator[Node]:
    n = make_node(wire_certs)
    try:
        yield n
    finally:
        n.stop()


@pytest.fixture
def peer(node, wire_certs) -> Iterator[RawPeer]:
    p = RawPeer.connected(node.port, wire_certs.tls, node.name, cookie=COOKIE)
    try:
        yield p
    finally:
        p.close()


def pass_through(control: bytes, message: bytes | None = None) -> bytes:
    """A pass-through distribution message from hand-made ETF pieces."""
    return b"p\x83" + control + (b"" if message is None else b"\x83" + message)


def ext_list(*elements: bytes, tail: bytes = b"j") -> bytes:
    return b"l" + struct.pack(">I", len(elements)) + b"".join(elements) + tail


def gen_call_tag(ref) -> ImproperList:
    """OTP 25's gen:call tag: ``[alias | Mref]``."""
    return ImproperList([Atom("alias")], ref)


# --------------------------------------------------------------- handshake


def test_listener_sends_sok_then_challenge_as_separate_control_messages(node, wire_certs):
    peer = RawPeer.dial(node.port, wire_certs.tls, cookie=COOKIE)
    try:
        result = peer.handshake(node.name)
        chunks = peer.expect_control(3)
    finally:
        peer.close()
    assert chunks[0] == b"sok", chunks
    challenge = chunks[1]
    name = node.name.encode()
    assert len(challenge) == 1 + 8 + 4 + 4 + 2 + len(name) == 31
    flags, their_challenge, creation, length = struct.unpack(">QIIH", challenge[1:19])
    assert challenge[:1] == b"N" and challenge[19:] == name and length == len(name)
    assert creation == node.creation
    assert flags & DistFlag.PUBLISHED and flags & DistFlag.HANDSHAKE_23
    assert not flags & (DistFlag.DIST_HDR_ATOM_CACHE | DistFlag.FRAGMENTS)
    # The ack proves the node knows the cookie: MD5(cookie ++ our challenge).
    assert peer.hs is not None
    assert chunks[2] == b"a" + digest(peer.hs.challenge, COOKIE.encode())
    assert result.peer_name == node.name and result.peer_creation == node.creation
    # We offered what OTP 25 offers; the node agreed only to what it implements.
    assert not result.our_flags & (DistFlag.DIST_HDR_ATOM_CACHE | DistFlag.FRAGMENTS)


# ------------------------------------------------------------- net_adm:ping


def test_net_adm_ping_sequence_as_otp25_sends_it(node, peer):
    erl = peer.pid(1)
    ref = peer.ref()
    tag = gen_call_tag(ref)
    peer.send(dist.MonitorP(erl, Atom("net_kernel"), ref))
    peer.send(dist.RegSend(erl, Atom("net_kernel"),
                           (Atom("$gen_call"), (erl, tag), (Atom("is_auth"), Atom(peer.name)))))
    reply = peer.expect_received(lambda m: isinstance(m, dist.Send) and m.to_pid == erl)
    # {2, '', ErlPid} then {[alias | Ref], yes}: the improper-list tag round-trips exactly.
    assert reply.payload == pass_through(
        ext_tuple(ext_small_int(2), ext_atom(""), ext_pid(erl)),
        ext_tuple(ext_list(ext_atom("alias"), tail=ext_ref(ref)), ext_atom("yes")))
    assert peer.take_all() == [], "the reply must be the first and only message"
    peer.send(dist.DemonitorP(erl, Atom("net_kernel"), ref))
    before = peer.barrier()
    assert before == [], f"no MONITOR_P_EXIT (or anything else) for net_kernel: {before}"
    assert ref not in node._monitors, "DEMONITOR_P must remove the monitor"
    assert node.nodes() == [peer.name]


@pytest.mark.parametrize("target", ["name", "pid"])
def test_monitor_p_on_missing_process_answers_noproc_at_once(node, peer, target):
    erl = peer.pid(3)
    ref = peer.ref()
    if target == "name":
        proc, ext_proc = Atom("no_such_server"), ext_atom("no_such_server")
    else:
        missing = Pid(node.name, 4242, 0, node.creation)
        proc, ext_proc = missing, ext_pid(missing)
    peer.send(dist.MonitorP(erl, proc, ref))
    got = peer.expect_received(lambda m: True)  # the very next message
    assert got.payload == pass_through(
        ext_tuple(ext_small_int(21), ext_proc, ext_pid(erl), ext_ref(ref), ext_atom("noproc")))
    assert got.message == dist.MonitorPExit(proc, erl, ref, NOPROC)
    assert ref not in node._monitors


def test_gen_server_call_to_missing_name_monitor_then_call(node, peer):
    # gen_server:call(Missing@Py, Req): MONITOR_P by name, REG_SEND; the node
    # must answer the monitor at once (the REG_SEND itself goes nowhere).
    erl = peer.pid(4)
    ref = peer.ref()
    peer.send(dist.MonitorP(erl, Atom("missing"), ref))
    peer.send(dist.RegSend(erl, Atom("missing"),
                           (Atom("$gen_call"), (erl, gen_call_tag(ref)), Atom("hello"))))
    assert peer.barrier() == [dist.MonitorPExit(Atom("missing"), erl, ref, NOPROC)]


# --------------------------------------------------------------- rex & co


def test_features_request_to_rex(node, peer):
    erl = peer.pid(5)
    peer.send(dist.RegSend(erl, Atom("rex"), (erl, Atom("features_request"))))
    reply = peer.expect(lambda m: isinstance(m, dist.Send) and m.to_pid == erl)
    message = reply.message
    assert isinstance(message, tuple) and len(message) == 3, message
    assert message[0] == Atom("features_reply") and type(message[0]) is Atom
    assert message[1] == Atom(node.name) and type(message[1]) is Atom
    assert isinstance(message[2], list), message


@pytest.mark.parametrize("server", ["net_kernel", "rex", "global_name_server"])
@pytest.mark.parametrize("alias_tag", [True, False], ids=["alias-tag", "ref-tag"])
def test_unknown_gen_call_gets_a_reply(node, peer, server, alias_tag):
    request = (Atom("no_such_request"), 1, b"x")
    tag, reply = peer.gen_call(server, request, alias_tag=alias_tag)
    # A well-formed {Tag, Reply}: gen_call matched the tag; the reply is an error term.
    assert isinstance(reply, tuple) and len(reply) == 2 and isinstance(reply[0], Atom), reply
    assert reply[0] in (Atom("error"), Atom("badrpc")), reply


def test_rex_call_runs_a_registered_python_function(node, peer):
    node.register_module("pymath", {"add": lambda a, b: a + b,
                                    "echo": lambda term: term,
                                    "fail": lambda: 1 / 0})
    call = Atom("call")
    user = Atom("user")
    _, value = peer.gen_call("rex", (call, Atom("pymath"), Atom("add"), [40, 2], user))
    assert value == 42
    term = (Atom("ok"), [1, 2, 3], b"bin", {Atom("k"): 1.5})
    _, value = peer.gen_call("rex", (call, Atom("pymath"), Atom("echo"), [term], user))
    assert value == term
    _, value = peer.gen_call("rex", (call, Atom("pymath"), Atom("fail"), [], user))
    assert value[0] == Atom("badrpc") and value[1][0] == EXIT, value


@pytest.mark.parametrize("mfa", [("nomod", "f", []), ("pymath", "nofun", [1]),
                                 ("pymath", "add", [1])], ids=["module", "function", "arity"])
def test_rex_call_of_an_unregistered_function_is_undef(node, peer, mfa):
    node.register_module("pymath", {"add": lambda a, b: a + b})
    module, function, args = mfa
    _, value = peer.gen_call("rex", (Atom("call"), Atom(module), Atom(function), args,
                                     Atom("user")))
    assert isinstance(value, tuple) and value[0] == Atom("badrpc"), value
    reason = value[1]
    assert reason[0] == EXIT and reason[1][0] == Atom("undef"), value


def _erpc_call(peer, mfa_args, opts=None):
    """Send an erpc:call spawn request; return (req_id, caller, res_ref, SpawnReply)."""
    erl = peer.pid(6)
    req = peer.ref()
    res = peer.ref()
    module, function, args = mfa_args
    peer.send(dist.SpawnRequest(req, erl, erl, (Atom("erpc"), Atom("execute_call"), 4),
                                [Atom("monitor")] if opts is None else opts,
                                [res, Atom(module), Atom(function), args]))
    reply = peer.expect(lambda m: isinstance(m, dist.SpawnReply))
    assert reply.req_id == req and reply.to_pid == erl
    return req, erl, res, reply


def _erpc_down(peer, req, erl, spawned):
    down = peer.expect(lambda m: isinstance(m, dist.MonitorPExit) and m.ref == req)
    assert down.from_proc == spawned and down.to_pid == erl
    return down.reason


def test_erpc_call_returns_throws_exits_and_errors(node, peer):
    from quicdist.erpc import ErlangError, ErlangExit, ErlangThrow

    def throw(v):
        raise ErlangThrow(v)

    def exit_(r):
        raise ErlangExit(r)

    def error(r):
        raise ErlangError(r)

    def crash():
        raise KeyError("missing")

    node.register_module("py", {"add": lambda a, b: a + b, "throw": throw, "exit": exit_,
                                "error": error, "crash": crash})
    req, erl, res, reply = _erpc_call(peer, ("py", "add", [40, 2]))
    assert reply.flags == 2 and isinstance(reply.result, Pid) and reply.result.node == node.name
    assert _erpc_down(peer, req, erl, reply.result) == (res, Atom("return"), 42)
    req, erl, res, reply = _erpc_call(peer, ("py", "throw", [Atom("ball")]))
    assert _erpc_down(peer, req, erl, reply.result) == (res, Atom("throw"), Atom("ball"))
    req, erl, res, reply = _erpc_call(peer, ("py", "exit", [Atom("bye")]))
    assert _erpc_down(peer, req, erl, reply.result) == (res, Atom("exit"), Atom("bye"))
    req, erl, res, reply = _erpc_call(peer, ("py", "error", [Atom("badarith")]))
    assert _erpc_down(peer, req, erl, reply.result) == (res, Atom("error"), Atom("badarith"),
                                                        [])
    req, erl, res, reply = _erpc_call(peer, ("py", "crash", []))
    reason = _erpc_down(peer, req, erl, reply.result)
    assert reason[:2] == (res, Atom("error")) and reason[3] == []
    assert reason[2][:2] == (Atom("python_exception"), Atom("KeyError"))


@pytest.mark.parametrize("mfa", [("nomod", "f", []), ("py", "nofun", [1]), ("py", "add", [1])],
                         ids=["module", "function", "arity"])
def test_erpc_call_of_an_unregistered_function_is_undef(node, peer, mfa):
    node.register_module("py", {"add": lambda a, b: a + b})
    req, erl, res, reply = _erpc_call(peer, mfa)
    reason = _erpc_down(peer, req, erl, reply.result)
    module, function, args = mfa
    assert reason == (res, Atom("error"), Atom("undef"),
                      [(Atom(module), Atom(function), args, [])])


def test_erpc_call_with_an_unencodable_result_is_an_error(node, peer):
    node.register_module("py", {"obj": lambda: object()})
    req, erl, res, reply = _erpc_call(peer, ("py", "obj", []))
    reason = _erpc_down(peer, req, erl, reply.result)
    assert reason[:2] == (res, Atom("error"))
    assert reason[2][:2] == (Atom("python_exception"), Atom("EncodeError"))


def test_erpc_cast_runs_the_function_without_a_reply(node, peer):
    got = []
    done = threading.Event()

    def note(x):
        got.append(x)
        done.set()

    node.register_module("py", {"note": note})
    erl = peer.pid(6)
    req = peer.ref()
    peer.send(dist.SpawnRequest(req, erl, erl, (Atom("erpc"), Atom("execute_cast"), 3), [],
                                [Atom("py"), Atom("note"), [7]]))
    reply = peer.expect(lambda m: isinstance(m, dist.SpawnReply))
    assert reply.req_id == req and reply.flags == 0 and isinstance(reply.result, Pid)
    assert done.wait(10) and got == [7]


def test_plain_remote_spawn_is_refused_cleanly(node, peer):
    # spawn(PyNode, M, F, A) for anything but erpc: nothing runs, the
    # caller gets a SPAWN_REPLY with the error atom notsup, not silence.
    erl = peer.pid(6)
    ref = peer.ref()
    peer.send(dist.SpawnRequest(ref, erl, erl, (Atom("os"), Atom("cmd"), 1),
                                [Atom("monitor")], [[104, 105]]))
    reply = peer.expect(lambda m: isinstance(m, dist.SpawnReply))
    assert reply.req_id == ref and reply.to_pid == erl
    assert reply.result == Atom("notsup") and reply.flags == 0


def test_features_reply_names_erpc(node, peer):
    erl = peer.pid(7)
    peer.send(dist.RegSend(erl, Atom("rex"), (erl, Atom("features_request"))))
    reply = peer.expect(lambda m: isinstance(m, dist.Send) and m.to_pid == erl)
    assert reply.message == (Atom("features_reply"), Atom(node.name), [Atom("erpc")])


# ------------------------------------------------------------ links & exits


def test_link_to_a_missing_pid_answers_exit_noproc(node, peer):
    erl = peer.pid(10)
    missing = Pid(node.name, 9999, 0, node.creation)
    peer.send(dist.Link(erl, missing))
    got = peer.expect_received(lambda m: True)
    assert got.payload == pass_through(
        ext_tuple(ext_small_int(3), ext_pid(missing), ext_pid(erl), ext_atom("noproc")))


@pytest.mark.parametrize("unlink_id", [1, 2**64 - 1])
def test_unlink_id_is_acked_with_the_same_id(node, peer, unlink_id):
    mailbox = node.mailbox()
    erl = peer.pid(11)
    peer.send(dist.Link(erl, mailbox.pid))
    peer.send(dist.UnlinkId(unlink_id, erl, mailbox.pid))
    ack = peer.expect_received(lambda m: isinstance(m, dist.UnlinkIdAck))
    # {36, Id, FromPid, ToPid}: From is the unlinked process, To the one that asked.
    id_ext = (ext_small_int(unlink_id) if unlink_id < 256
              else b"n\x08\x00" + unlink_id.to_bytes(8, "little"))
    assert ack.payload == pass_through(
        ext_tuple(ext_small_int(36), id_ext, ext_pid(mailbox.pid), ext_pid(erl)))
    # Unlinked: an EXIT from erl is void, and the mailbox's exit tells erl nothing.
    peer.send(dist.Exit(erl, mailbox.pid, Atom("late")))
    assert peer.barrier() == []
    with pytest.raises(QuicDistTimeoutError):
        mailbox.receive(timeout=0)
    mailbox.close()
    assert peer.barrier() == []


def test_mailbox_exit_reaches_the_linked_peer(node, peer):
    mailbox = node.mailbox()
    erl = peer.pid(12)
    peer.send(dist.Link(erl, mailbox.pid))
    assert peer.barrier() == []
    mailbox.exit(Atom("boom"))
    got = peer.expect_received(lambda m: True)
    assert got.payload == pass_through(
        ext_tuple(ext_small_int(3), ext_pid(mailbox.pid), ext_pid(erl), ext_atom("boom")))


def test_mailbox_link_sends_link(node, peer):
    mailbox = node.mailbox()
    erl = peer.pid(13)
    mailbox.link(erl)
    got = peer.expect_received(lambda m: True)
    assert got.payload == pass_through(
        ext_tuple(ext_small_int(1), ext_pid(mailbox.pid), ext_pid(erl)))
    peer.send(dist.Exit(erl, mailbox.pid, Atom("bye")))
    assert mailbox.receive(TIMEOUT) == (EXIT, erl, Atom("bye"))


def test_mailbox_unlink_sends_unlink_id_and_ignores_crossing_exit(node, peer):
    mailbox = node.mailbox()
    erl = peer.pid(23)
    mailbox.link(erl)
    assert peer.expect(lambda m: True) == dist.Link(mailbox.pid, erl)
    mailbox.unlink(erl)
    unlink = peer.expect(lambda m: True)
    assert isinstance(unlink, dist.UnlinkId), unlink
    assert (unlink.from_pid, unlink.to_pid) == (mailbox.pid, erl) and unlink.id > 0
    # erl exited before it saw the unlink: its EXIT crosses the UNLINK_ID and is void.
    peer.send(dist.Exit(erl, mailbox.pid, Atom("crossed")))
    peer.send(dist.UnlinkIdAck(unlink.id, erl, mailbox.pid))
    assert peer.barrier() == []
    with pytest.raises(QuicDistTimeoutError):
        mailbox.receive(timeout=0)
    mailbox.close()
    assert peer.barrier() == [], "no EXIT for a link that was removed"


@pytest.mark.parametrize("form", ["MONITOR_P_EXIT", "PAYLOAD_MONITOR_P_EXIT"])
@pytest.mark.parametrize("by", ["pid", "name"])
def test_mailbox_monitor_of_a_peer_process(node, peer, by, form):
    mailbox = node.mailbox()
    erl = peer.pid(24)
    target = erl if by == "pid" else ("srv", peer.name)
    ref = mailbox.monitor(target)
    proc = erl if by == "pid" else Atom("srv")
    assert peer.expect(lambda m: True) == dist.MonitorP(mailbox.pid, proc, ref)
    cls = dist.MonitorPExit if form == "MONITOR_P_EXIT" else dist.PayloadMonitorPExit
    peer.send(cls(proc, mailbox.pid, ref, Atom("gone")))
    down_object = erl if by == "pid" else (Atom("srv"), Atom(peer.name))
    assert mailbox.receive(TIMEOUT) == (Atom("DOWN"), ref, Atom("process"), down_object,
                                        Atom("gone"))
    # A demonitor after the DOWN sends nothing.
    mailbox.demonitor(ref)
    assert peer.barrier() == []


def test_mailbox_demonitor_sends_demonitor_p(node, peer):
    mailbox = node.mailbox()
    erl = peer.pid(25)
    ref = mailbox.monitor(erl)
    assert peer.expect(lambda m: True) == dist.MonitorP(mailbox.pid, erl, ref)
    mailbox.demonitor(ref)
    assert peer.expect(lambda m: True) == dist.DemonitorP(mailbox.pid, erl, ref)
    peer.send(dist.MonitorPExit(erl, mailbox.pid, ref, Atom("late")))
    assert peer.barrier() == []
    with pytest.raises(QuicDistTimeoutError):
        mailbox.receive(timeout=0)


def test_node_gen_call_and_ping_toward_the_peer(node, peer):
    """What the node sends when it calls a process of the peer: OTP's gen:call shape."""
    results: dict[str, object] = {}

    def call() -> None:
        try:
            results["ping"] = node.ping(peer.name, timeout=TIMEOUT)
        except BaseException as exc:  # reported below
            results["error"] = exc

    thread = threading.Thread(target=call, name="node-ping", daemon=True)
    thread.start()
    try:
        monitor = peer.expect(lambda m: isinstance(m, dist.MonitorP))
        assert monitor.to_proc == Atom("net_kernel") and type(monitor.to_proc) is Atom
        request = peer.expect(lambda m: isinstance(m, dist.RegSend))
        assert request.to_name == Atom("net_kernel")
        label, (caller, tag), body = request.message
        assert label == Atom("$gen_call") and caller == request.from_pid == monitor.from_pid
        assert body == (Atom("is_auth"), Atom(node.name))
        peer.send(dist.Send(caller, (tag, YES)))
        demonitor = peer.expect(lambda m: True)
        assert demonitor == dist.DemonitorP(caller, Atom("net_kernel"), monitor.ref)
    finally:
        thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert results == {"ping": "pong"}


def test_ticks_go_out_on_stream_0(wire_certs):
    node = make_node(wire_certs, net_ticktime=1.0)
    try:
        peer = RawPeer.connected(node.port, wire_certs.tls, node.name, cookie=COOKIE)
        try:
            handshake_chunks = len(peer.control_chunks)
            # A tick every net_ticktime/4: two within a second and a half.
            chunks = peer.expect_control(handshake_chunks + 2, timeout=1.5 + 1.0)
            assert all(c.strip(b"\x00") == b"" and c for c in chunks[handshake_chunks:]), chunks
            assert node.nodes() == [peer.name]
        finally:
            peer.close()
    finally:
        node.stop()


LINK_EXITS = {
    "EXIT": lambda f, t, r: dist.Exit(f, t, r),
    "EXIT_TT": lambda f, t, r: dist.Exit(f, t, r, TOKEN),
    "PAYLOAD_EXIT": lambda f, t, r: dist.PayloadExit(f, t, r),
    "PAYLOAD_EXIT_TT": lambda f, t, r: dist.PayloadExit(f, t, r, TOKEN),
}
EXIT2S = {
    "EXIT2": lambda f, t, r: dist.Exit2(f, t, r),
    "EXIT2_TT": lambda f, t, r: dist.Exit2(f, t, r, TOKEN),
    "PAYLOAD_EXIT2": lambda f, t, r: dist.PayloadExit2(f, t, r),
    "PAYLOAD_EXIT2_TT": lambda f, t, r: dist.PayloadExit2(f, t, r, TOKEN),
}


@pytest.mark.parametrize("op", sorted(LINK_EXITS))
def test_exit_from_the_peer_reaches_a_linked_mailbox(node, peer, op):
    mailbox = node.mailbox()
    erl = peer.pid(14)
    reason = (Atom("shutdown"), b"why")
    peer.send(dist.Link(erl, mailbox.pid))
    peer.send(LINK_EXITS[op](erl, mailbox.pid, reason))
    assert mailbox.receive(TIMEOUT) == (EXIT, erl, reason)
    # The link is gone: a second exit is void, and closing tells erl nothing.
    peer.send(LINK_EXITS[op](erl, mailbox.pid, reason))
    mailbox.close()
    assert peer.barrier() == []
    assert len(mailbox) == 0


@pytest.mark.parametrize("op", sorted(LINK_EXITS))
def test_link_exit_with_reason_kill_is_just_a_message(node, peer, op):
    # Only exit/2 (EXIT2) with 'kill' is untrappable; a linked process that
    # exited with reason 'kill' sends an ordinary, trappable EXIT.
    mailbox = node.mailbox()
    erl = peer.pid(26)
    peer.send(dist.Link(erl, mailbox.pid))
    peer.send(LINK_EXITS[op](erl, mailbox.pid, Atom("kill")))
    assert mailbox.receive(TIMEOUT) == (EXIT, erl, Atom("kill"))
    assert not mailbox.closed


@pytest.mark.parametrize("op", sorted(LINK_EXITS))
def test_exit_without_a_link_is_void(node, peer, op):
    mailbox = node.mailbox()
    erl = peer.pid(15)
    peer.send(LINK_EXITS[op](erl, mailbox.pid, Atom("nolink")))
    assert peer.barrier() == []
    with pytest.raises(QuicDistTimeoutError):
        mailbox.receive(timeout=0)
    assert not mailbox.closed


@pytest.mark.parametrize("op", sorted(EXIT2S))
def test_exit2_from_the_peer_arrives_as_an_exit_message(node, peer, op):
    mailbox = node.mailbox()
    erl = peer.pid(16)
    peer.send(EXIT2S[op](erl, mailbox.pid, Atom("please_stop")))
    assert mailbox.receive(TIMEOUT) == (EXIT, erl, Atom("please_stop"))
    assert not mailbox.closed


@pytest.mark.parametrize("op", sorted(EXIT2S))
def test_exit2_kill_ends_the_mailbox_with_killed(node, peer, op):
    mailbox = node.mailbox("victim")
    erl = peer.pid(17)
    watcher = peer.pid(18)
    ref = peer.ref()
    peer.send(dist.Link(erl, mailbox.pid))
    peer.send(dist.MonitorP(watcher, mailbox.pid, ref))
    peer.send(EXIT2S[op](erl, mailbox.pid, Atom("kill")))
    signals = peer.barrier()
    assert mailbox.closed and mailbox.exit_reason == Atom("killed")
    with pytest.raises(MailboxClosed):
        mailbox.receive(timeout=0)
    # Links and monitors hear 'killed' (not 'kill'), and the name is free.
    assert dist.Exit(mailbox.pid, erl, Atom("killed")) in signals, signals
    assert dist.MonitorPExit(mailbox.pid, watcher, ref, Atom("killed")) in signals, signals
    assert node.whereis("victim") is None


@pytest.mark.parametrize("by", ["pid", "name"])
def test_monitor_p_on_a_mailbox_fires_normal_on_close(node, peer, by):
    mailbox = node.mailbox("watched")
    erl = peer.pid(19)
    ref = peer.ref()
    target = mailbox.pid if by == "pid" else Atom("watched")
    peer.send(dist.MonitorP(erl, target, ref))
    assert peer.barrier() == []
    mailbox.close()
    got = peer.expect_received(lambda m: True)
    ext_target = ext_pid(mailbox.pid) if by == "pid" else ext_atom("watched")
    assert got.payload == pass_through(
        ext_tuple(ext_small_int(21), ext_target, ext_pid(erl), ext_ref(ref), ext_atom("normal")))


def test_demonitor_p_stops_the_monitor(node, peer):
    mailbox = node.mailbox()
    erl = peer.pid(20)
    ref = peer.ref()
    peer.send(dist.MonitorP(erl, mailbox.pid, ref))
    peer.send(dist.DemonitorP(erl, mailbox.pid, ref))
    assert peer.barrier() == []
    mailbox.close()
    assert peer.barrier() == [], "no MONITOR_P_EXIT after DEMONITOR_P"


# ------------------------------------------------------------------- sends


def _message(kind: str) -> object:
    return (Atom("msg"), kind.encode(), 12345678901234567890, [1, 2, 3], b"\x00bin",
            {Atom("k"): [1.5, -2]}, ImproperList([1], Atom("tail")))


SENDS = {
    "SEND": lambda n, mb, erl, m: dist.Send(mb.pid, m),
    "SEND_TT": lambda n, mb, erl, m: dist.Send(mb.pid, m, TOKEN),
    "REG_SEND": lambda n, mb, erl, m: dist.RegSend(erl, Atom("inbox"), m),
    "REG_SEND_TT": lambda n, mb, erl, m: dist.RegSend(erl, Atom("inbox"), m, TOKEN),
    "SEND_SENDER": lambda n, mb, erl, m: dist.SendSender(erl, mb.pid, m),
    "SEND_SENDER_TT": lambda n, mb, erl, m: dist.SendSender(erl, mb.pid, m, TOKEN),
    "ALIAS_SEND": lambda n, mb, erl, m: dist.AliasSend(erl, mb.alias(), m),
    "ALIAS_SEND_TT": lambda n, mb, erl, m: dist.AliasSend(erl, mb.alias(), m, TOKEN),
}


@pytest.mark.parametrize("op", list(SENDS))
def test_every_send_form_reaches_the_mailbox(node, peer, op):
    mailbox = node.mailbox("inbox")
    erl = peer.pid(21)
    messages = [(_message(op), i) for i in range(3)]
    for m in messages:
        peer.send(SENDS[op](node, mailbox, erl, m))
    assert [mailbox.receive(TIMEOUT) for _ in messages] == messages


def test_send_to_an_unaliased_or_dead_target_is_dropped(node, peer):
    mailbox = node.mailbox()
    erl = peer.pid(22)
    alias = mailbox.alias()
    assert mailbox.unalias(alias)
    peer.send(dist.AliasSend(erl, alias, "after unalias"))
    peer.send(dist.Send(Pid(node.name, 777, 0, node.creation), "nobody"))
    peer.send(dist.RegSend(erl, Atom("nobody_here"), "nobody"))
    peer.send(dist.Send(mailbox.pid, b"last"))
    assert mailbox.receive(TIMEOUT) == b"last"
    assert peer.barrier() == []
    assert node.nodes() == [peer.name]


# ----------------------------------------------------------------- garbage


def _garbage(mailbox_pid: Pid, erl: Pid) -> dict[str, bytes]:
    send_ctl = encode((2, Atom(""), mailbox_pid))
    return {
        "random": random.Random(7).randbytes(64),
        "p-only": b"p",
        "p-truncated-control": b"p" + send_ctl[:-3],
        "p-truncated-message": b"p" + send_ctl + encode((Atom("a"), b"xyz"))[:-2],
        "not-pass-through": b"\x83" + send_ctl[1:],
        "atom-cache-header": b"\x83D\x00",
        "fragment-header": b"\x83E" + b"\x00" * 16,
        "unknown-op": b"p" + encode((99, Atom(""), mailbox_pid)),
        "negative-op": b"p" + encode((-2, Atom(""), mailbox_pid)) + encode("x"),
        "wrong-arity": b"p" + encode((2, Atom(""), mailbox_pid, Atom("extra"))) + encode("x"),
        "wrong-arity-short": b"p" + encode((2, Atom(""))) + encode("x"),
        "wrong-field-type": b"p" + encode((2, Atom(""), Atom("not_a_pid"))) + encode("x"),
        "missing-message": b"p" + send_ctl,
        "trailing-bytes": b"p" + send_ctl + encode("x") + b"\x00\x01",
        "control-not-a-tuple": b"p" + encode([2, Atom(""), mailbox_pid]) + encode("x"),
        "empty-tuple": b"p" + encode(()),
        "huge-list-length": b"p\x83l\xff\xff\xff\xff",
        "deep-nesting": b"p\x83" + b"h\x01" * 50_000 + b"a\x01",
        "deep-message": b"p" + send_ctl + b"\x83" + b"l\x00\x00\x00\x01" * 50_000 + b"j",
        "link-to-an-atom": b"p" + encode((1, erl, Atom("x"))),
        "unlink-id-zero": b"p" + encode((35, 0, erl, mailbox_pid)),
    }


GARBAGE_CASES = sorted(_garbage(Pid("a@b", 1), Pid("a@b", 2)))


@pytest.mark.parametrize("case", GARBAGE_CASES)
def test_garbage_frames_are_dropped_and_the_connection_keeps_working(node, peer, case,
                                                                     caplog):
    caplog.set_level(logging.DEBUG, logger="quicdist")
    mailbox = node.mailbox()
    erl = peer.pid(30)
    payload = _garbage(mailbox.pid, erl)[case]
    peer.send(dist.Send(mailbox.pid, b"before"))
    peer.send_raw(payload)
    peer.send(dist.Send(mailbox.pid, b"after"))
    assert peer.barrier() == [], "garbage must not be answered"
    assert [mailbox.receive(TIMEOUT), mailbox.receive(TIMEOUT)] == [b"before", b"after"]
    assert node.nodes() == [peer.name]
    assert peer.terminated is None
    _, reply = peer.gen_call("net_kernel", (Atom("is_auth"), Atom(peer.name)))
    assert reply == YES
    failed = [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.ERROR]
    assert not failed, [r.getMessage() for r in failed]
    dropped = [r for r in caplog.records if r.name == LOGGER and "malformed" in r.getMessage()]
    assert dropped, "a dropped frame is logged"


def test_garbage_on_stream_0_after_the_handshake_is_ignored(node, peer):
    mailbox = node.mailbox()
    peer.send_control(b"\x00\x00\x00\x00")  # a tick
    peer.send_control(b"this is not a tick")
    peer.send(dist.Send(mailbox.pid, b"still here"))
    assert mailbox.receive(TIMEOUT) == b"still here"
    assert peer.barrier() == []
    assert node.nodes() == [peer.name]


# ------------------------------------------------------- hostile handshakes


def _send_name(name: bytes, flags: int = int(QUICDIST_FLAGS | DistFlag.PUBLISHED)) -> bytes:
    return b"N" + struct.pack(">QIH", flags, 1234, len(name)) + name


HOSTILE = {
    # case: (what to send on stream 0, substring of the logged reason)
    "garbage": (b"GET / HTTP/1.1\r\n\r\n", "expected 'N' or 'n'"),
    "random-bytes": (b"N" + random.Random(3).randbytes(300), "handshake"),
    "invalid-name": (_send_name(b"no at sign"), "invalid node name"),
    "invalid-name-two-ats": (_send_name(b"a@b@c"), "invalid node name"),
    "name-not-utf8": (_send_name(b"a@\xff\xfe"), "node name"),
    "zero-length-name": (_send_name(b""), "name of 0 bytes"),
    "missing-flags": (_send_name(b"old@127.0.0.1", int(DistFlag.PUBLISHED)),
                      "lacks mandatory flags"),
    "own-name": (_send_name(NODE.encode()), "refused"),
}


def _assert_healthy(node: Node, certs: Certs) -> None:
    """A well-behaved peer connects and talks after the hostile one."""
    good = RawPeer.connected(node.port, certs.tls, node.name, cookie=COOKIE, name="good@127.0.0.1")
    try:
        assert good.barrier() == []
        assert node.nodes() == ["good@127.0.0.1"]
    finally:
        good.close()


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_handshake_is_closed_logged_and_harmless(node, wire_certs, case, caplog):
    caplog.set_level(logging.INFO, logger="quicdist")
    data, reason = HOSTILE[case]
    bad = RawPeer.dial(node.port, wire_certs.tls, cookie=COOKIE)
    try:
        bad.send_control(data)
        bad.expect_closed(TIMEOUT)
    finally:
        bad.close()
    assert node.nodes() == []
    warnings = [r.getMessage() for r in caplog.records
                if r.name == LOGGER and r.levelno >= logging.WARNING]
    assert any("handshake" in m and reason in m for m in warnings), warnings
    wait_until(lambda: not node._all and not node._accepting, what="the failed attempt forgotten")
    _assert_healthy(node, wire_certs)


def test_refusals_are_sent_as_a_status_before_closing(node, wire_certs):
    bad = RawPeer.dial(node.port, wire_certs.tls, cookie=COOKIE)
    try:
        bad.send_control(_send_name(b"old@127.0.0.1", int(DistFlag.PUBLISHED)))
        bad.expect_closed(TIMEOUT)
    finally:
        bad.close()
    assert bad.control_chunks == [b"snot_allowed"]


def test_wrong_cookie_is_refused_logged_and_harmless(node, wire_certs, caplog):
    caplog.set_level(logging.INFO, logger="quicdist")
    bad = RawPeer.dial(node.port, wire_certs.tls, cookie="not-the-cookie")
    try:
        with pytest.raises(AssertionError, match="closed during the handshake"):
            bad.handshake(node.name)
        assert bad.hs is not None and isinstance(bad.hs.error, AuthenticationError)
        # OTP's way: no challenge_ack, the connection just closes.
        assert bad.control_chunks[0] == b"sok" and len(bad.control_chunks) == 2
    finally:
        bad.close()
    assert node.nodes() == []
    warnings = [r.getMessage() for r in caplog.records
                if r.name == LOGGER and r.levelno >= logging.WARNING]
    assert any("erl@127.0.0.1" in m and "cookie" in m for m in warnings), warnings
    wait_until(lambda: not node._all and not node._accepting, what="the failed attempt forgotten")
    # The same name with the right cookie is welcome.
    good = RawPeer.connected(node.port, wire_certs.tls, node.name, cookie=COOKIE)
    try:
        assert good.barrier() == []
        assert node.nodes() == [good.name]
    finally:
        good.close()


def test_silent_dialer_is_closed_within_connect_timeout(wire_certs, caplog):
    caplog.set_level(logging.INFO, logger="quicdist")
    connect_timeout = 1.0
    node = make_node(wire_certs, connect_timeout=connect_timeout)
    try:
        silent = RawPeer.dial(node.port, wire_certs.tls, cookie=COOKIE)
        start = time.monotonic()
        try:
            # The ticker checks once a second at most: allow that, and some slack.
            silent.expect_closed(connect_timeout + 1.0 + 2.0)
            took = time.monotonic() - start
        finally:
            silent.close()
        assert took >= connect_timeout * 0.5, took
        warnings = [r.getMessage() for r in caplog.records
                    if r.name == LOGGER and r.levelno >= logging.WARNING]
        assert any("handshake" in m for m in warnings), warnings
        _assert_healthy(node, wire_certs)
    finally:
        node.stop()


def test_frames_before_a_failed_handshake_are_never_delivered(node, wire_certs):
    """An unauthenticated peer's messages must not reach a mailbox."""
    mailbox = node.mailbox("target")
    bad = RawPeer.dial(node.port, wire_certs.tls, cookie="not-the-cookie")

    def slip_in(message: bytes) -> None:
        if message[:1] == b"r":  # just before the (wrong) challenge_reply
            bad.send(dist.Send(mailbox.pid, b"forged"))
            bad.send(dist.RegSend(bad.pid(1), Atom("target"), b"forged"))
            bad.send(dist.Exit2(bad.pid(1), mailbox.pid, Atom("kill")))

    try:
        with pytest.raises(AssertionError, match="closed during the handshake"):
            bad.handshake(node.name, before_send=slip_in)
    finally:
        bad.close()
    # Whatever the node did with the early frames, a good peer's message
    # comes first and alone.
    good = RawPeer.connected(node.port, wire_certs.tls, node.name, cookie=COOKIE)
    try:
        good.send(dist.Send(mailbox.pid, b"genuine"))
        assert mailbox.receive(TIMEOUT) == b"genuine"
        assert good.barrier() == []
    finally:
        good.close()
    assert not mailbox.closed
    with pytest.raises(QuicDistTimeoutError):
        mailbox.receive(timeout=0)


def test_unauthenticated_data_before_the_handshake_is_bounded(node, wire_certs):
    """A dialer that sent send_name but not its challenge_reply streams data.

    The node may close the connection or stop reading, but must not buffer
    an unbounded amount for a peer that has not proven it knows the cookie
    (node.Node(...) defaults to verify_none: anyone can get this far).
    """
    limit = 8 * 1024 * 1024
    total = 32 * 1024 * 1024
    bad = RawPeer.dial(node.port, wire_certs.tls, cookie=COOKIE)
    try:
        bad.send_control(_send_name(b"flood@127.0.0.1"))
        bad.expect_control(2)  # sok, challenge: the node waits for our reply now
        blob = b"p" + bytes(1024 * 1024 - 1)

        def held() -> int:
            with node._lock:
                conns = list(node._all)
            return sum(len(f) for c in conns for event in list(c.early) for f in event.frames)

        peak = 0
        sent = 0
        while sent < total and bad.terminated is None:
            try:
                bad.conn.send_dist(blob, timeout=2.0)
            except (QuicDistError, TimeoutError):  # the node closed, or stopped reading
                break
            sent += len(blob)
            peak = max(peak, held())
            assert peak <= limit, f"the node holds {peak} bytes from an unauthenticated peer"
        # Let what was sent arrive (the node reads as fast as it can).
        settle = time.monotonic() + 2.0
        while time.monotonic() < settle and bad.terminated is None:
            bad._pump(min(settle, time.monotonic() + 0.05))
            peak = max(peak, held())
            assert peak <= limit, f"the node holds {peak} bytes from an unauthenticated peer"
    finally:
        bad.close()
    assert node.nodes() == []
    _assert_healthy(node, wire_certs)


def test_rex_call_with_an_unencodable_result_still_answers(node, peer):
    node.register_module("pyobj", {"thing": lambda: object(), "aset": lambda: {1, 2}})
    for function in ("thing", "aset"):
        _, value = peer.gen_call("rex", (Atom("call"), Atom("pyobj"), Atom(function), [],
                                         Atom("user")), timeout=3.0)
        assert isinstance(value, tuple) and value[0] == Atom("badrpc"), value


def test_same_name_reconnecting_replaces_the_old_connection(node, wire_certs):
    """A restarted peer dials again before its old connection timed out ('alive')."""
    old = RawPeer.connected(node.port, wire_certs.tls, node.name, cookie=COOKIE, creation=1)
    new = None
    try:
        mailbox = node.mailbox()
        erl = old.pid(1)
        mailbox.link(erl)
        ref = mailbox.monitor(erl)
        assert old.expect(lambda m: True) == dist.Link(mailbox.pid, erl)
        assert old.expect(lambda m: True) == dist.MonitorP(mailbox.pid, erl, ref)
        old.send(dist.MonitorP(erl, mailbox.pid, old.ref()))
        assert old.barrier() == []
        new = RawPeer.dial(node.port, wire_certs.tls, cookie=COOKIE, creation=2)
        new.handshake(node.name)
        assert new.control_chunks[0] == b"salive"  # answered strue by the Handshake
        old.expect_closed(TIMEOUT)
        # Everything that went over the old connection is gone: noconnection, at once.
        got = {mailbox.receive(TIMEOUT), mailbox.receive(TIMEOUT)}
        assert got == {(EXIT, erl, Atom("noconnection")),
                       (Atom("DOWN"), ref, Atom("process"), erl, Atom("noconnection"))}
        assert node.nodes() == [new.name]
        # The old peer's monitor of the mailbox went with it: closing tells nobody.
        mailbox.close()
        assert new.barrier() == []
    finally:
        old.close()
        if new is not None:
            new.close()


# ------------------------------------------------- the node as the dialer


@pytest.fixture
def raw_listener(wire_certs):
    from quicdist.sync import Listener

    listener = Listener("127.0.0.1", 0, tls=wire_certs.tls)
    try:
        yield listener
    finally:
        listener.stop()


def _accept_send_name(listener) -> tuple[object, bytes]:
    from quicdist.events import ControlData

    connection = listener.accept(timeout=TIMEOUT)
    deadline = time.monotonic() + TIMEOUT
    while True:
        event = connection.next_event(max(deadline - time.monotonic(), 0.01))
        if isinstance(event, ControlData):
            return connection, event.data


@pytest.mark.parametrize("answer", ["silence", "garbage-status", "wrong-name", "nok"])
def test_node_dialing_a_hostile_listener_fails_cleanly(wire_certs, raw_listener, answer,
                                                       caplog):
    caplog.set_level(logging.INFO, logger="quicdist")
    connect_timeout = 1.5
    target = "x@127.0.0.1"
    node = make_node(wire_certs, connect_timeout=connect_timeout,
                     nodes={target: ("127.0.0.1", raw_listener.port)})
    results: dict[str, object] = {}

    def dial() -> None:
        start = time.monotonic()
        results["ok"] = node.connect(target)
        results["took"] = time.monotonic() - start

    thread = threading.Thread(target=dial, name="node-dial", daemon=True)
    try:
        thread.start()
        connection, send_name = _accept_send_name(raw_listener)
        assert send_name[:1] == b"N" and send_name.endswith(node.name.encode())
        if answer == "garbage-status":
            connection.send_control(b"sWHAT?")
        elif answer == "wrong-name":
            other = b"y@127.0.0.1"
            connection.send_control(b"sok")
            connection.send_control(b"N" + struct.pack(">QIIH", int(QUICDIST_FLAGS), 1, 2,
                                                       len(other)) + other)
        elif answer == "nok":
            connection.send_control(b"snok")
        thread.join(connect_timeout + 3.0)
        assert not thread.is_alive(), "connect() did not return"
    finally:
        node.stop()
        thread.join(TIMEOUT)
    assert results["ok"] is False
    assert results["took"] <= connect_timeout + 1.5, results
    assert node.nodes() == []
    if answer != "nok":  # 'nok' means "wait for my own attempt": not an error to log
        warnings = [r.getMessage() for r in caplog.records
                    if r.name == LOGGER and r.levelno >= logging.WARNING]
        assert any(target in m for m in warnings), warnings


def test_stream_and_message_that_overtake_the_challenge_ack_are_kept(wire_certs,
                                                                      raw_listener):
    """A listener may open a stream and send a message right after its
    challenge_ack, on other streams; if they arrive first (a lost packet),
    the dialing node keeps them until the ack instead of refusing them."""
    from quicdist.events import ControlData
    from quicdist.handshake import Handshake

    target = "x@127.0.0.1"
    node = make_node(wire_certs, nodes={target: ("127.0.0.1", raw_listener.port)})
    acceptor = node.accept_streams(target)
    box = node.mailbox("box")
    results: dict[str, object] = {}
    thread = threading.Thread(target=lambda: results.setdefault("ok", node.connect(target)),
                              name="node-dial", daemon=True)
    try:
        thread.start()
        connection, send_name = _accept_send_name(raw_listener)
        hs = Handshake("listener", node_name=target, cookie=COOKIE, creation=7)
        for message in hs.receive(send_name):
            connection.send_control(message)
        deadline = time.monotonic() + TIMEOUT
        ack: list[bytes] = []
        while not ack:
            event = connection.next_event(max(deadline - time.monotonic(), 0.01))
            if isinstance(event, ControlData):
                ack = hs.receive(event.data)
        assert hs.done
        # Before the ack: a user stream with data and FIN, and a message.
        _, outbox = connection.open_stream(priority=64)
        outbox.write(b"before the ack", fin=True, timeout=TIMEOUT)
        sender = Pid(target, 1, 0, 7)
        connection.send_dist(dist.encode_message(dist.RegSend(sender, Atom("box"),
                                                              Atom("early"))))
        # Both reach the node before the ack (no event says so: poll, bounded).
        dialing = node._dialing[target]

        def kinds() -> set[str]:
            return {type(e).__name__ for e in list(dialing.early)}

        wait_until(lambda: {"DistFrames", "UserStreamData"} <= kinds(),
                   what="the stream and the message held before the ack")
        seen = kinds()
        assert {"DistFrames", "UserStreamData"} <= seen, seen
        for message in ack:
            connection.send_control(message)
        thread.join(TIMEOUT)
        assert results.get("ok") is True
        assert box.receive(TIMEOUT) == Atom("early")
        stream = acceptor.accept(timeout=TIMEOUT)
        stream.settimeout(TIMEOUT)
        assert b"".join(stream) == b"before the ack"
    finally:
        node.stop()
        thread.join(TIMEOUT)
