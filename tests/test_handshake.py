"""The handshake state machine (quicdist.handshake) and the flags (quicdist.flags).

Pure tests: bytes in, bytes out. A dialer and a listener talk to each other
in memory over simulated unframed streams, in every chunking; each side is
replayed against a recorded transcript split at every pair of points;
statuses, cookies and hostile input are checked message by message; golden
bytes pin the wire format (digests computed by OTP's ``erlang:md5``).
tests/test_handshake_otp.py runs the same state machine against a real OTP.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from quicdist.errors import (
    AuthenticationError,
    ConfigurationError,
    HandshakeError,
    LocalProtocolError,
    QuicDistError,
)
from quicdist.flags import (
    MANDATORY_25,
    MANDATORY_26,
    QUICDIST_FLAGS,
    QUICDIST_OPTIONAL_FLAGS,
    QUICDIST_REQUIRED,
    DistFlag,
    expand,
    missing,
)
from quicdist.handshake import (
    MAX_NAME_BYTES,
    Handshake,
    HandshakeResult,
    digest,
    valid_node_name,
)


COOKIE = b"secret"
D_NAME = "dialer@host.example"
L_NAME = "listener@127.0.0.1"
D_CREATION = 0x11111111
L_CREATION = 0x22222222
D_CHALLENGE = 0x12345678  # 305419896
L_CHALLENGE = 0xCAFEBABE  # 3405691582: above 2**31, printed unsigned
# erlang:md5(["secret" | integer_to_list(C)]) on OTP 25.
OTP_DIGESTS = {
    305419896: bytes.fromhex("1F4D9B4E53CADC3999BCDB386A23C240"),
    3405691582: bytes.fromhex("52D44ECB249CB4AF5680121FFB96E958"),
    0: bytes.fromhex("175EC77A7F63082590987D0D8B051AFF"),
    4294967295: bytes.fromhex("5DFD181E69AA587CC812EB333E6536B6"),
}
TICK = b"\x00\x00\x00\x00"
D_NAME_B = D_NAME.encode()
L_NAME_B = L_NAME.encode()


def dialer(**kw) -> Handshake:
    args = dict(node_name=D_NAME, cookie=COOKIE, creation=D_CREATION, peer_name=L_NAME,
                challenge=D_CHALLENGE)
    args.update(kw)
    return Handshake("dialer", **args)


def listener(**kw) -> Handshake:
    args = dict(node_name=L_NAME, cookie=COOKIE, creation=L_CREATION, challenge=L_CHALLENGE)
    args.update(kw)
    return Handshake("listener", **args)


def whole(data: bytes) -> list[bytes]:
    return [data]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))]


def converse(d: Handshake, lst: Handshake, split_d=whole, split_l=whole,
             extra_to_d: bytes = b"", extra_to_l: bytes = b"", rounds: int = 10,
             after: dict | None = None):
    """Run both sides over in-memory streams until neither has bytes in flight.

    ``split_x`` cuts the bytes in flight toward x into the chunks x receives
    (a stream keeps no message boundaries). ``extra_to_x`` is appended to
    the last bytes x receives, as the next layer's bytes. Returns the
    messages each side sent, as lists. Chunks that arrive after a side is
    done are not fed to it (they belong to the next layer): they are
    collected in ``after["dialer"]`` / ``after["listener"]``.
    """
    if after is None:
        after = {}
    after.update(dialer=b"", listener=b"")
    d_sent = d.start()
    l_sent: list[bytes] = []
    to_l, to_d = b"".join(d_sent), b""
    for _ in range(rounds):
        if not to_l and not to_d:
            break
        if to_l:
            out = []
            chunk_src = to_l + (extra_to_l if d.done or d.failed else b"")
            for chunk in split_l(chunk_src):
                if lst.done:
                    after["listener"] += chunk
                    continue
                out += lst.receive(chunk)
            to_l = b""
            l_sent += out
            to_d = b"".join(out)
        if to_d:
            out = []
            chunk_src = to_d + (extra_to_d if lst.done or lst.failed else b"")
            for chunk in split_d(chunk_src):
                if d.done:
                    after["dialer"] += chunk
                    continue
                out += d.receive(chunk)
            to_d = b""
            d_sent += out
            to_l = b"".join(out)
    else:
        pytest.fail("conversation did not settle")
    return d_sent, l_sent


def transcript():
    d, lst = dialer(), listener()
    d_sent, l_sent = converse(d, lst)
    assert d.done and lst.done
    return d_sent, l_sent


def feed(hs: Handshake, chunks) -> list[bytes]:
    out: list[bytes] = []
    if hs.role == "dialer" and hs.stage == "start":
        out += hs.start()
    for chunk in chunks:
        if hs.done:
            break
        out += hs.receive(chunk)
    return out


def send_name(flags=QUICDIST_FLAGS, creation=D_CREATION, name=D_NAME_B,
              length=None) -> bytes:
    return (b"N" + struct.pack(">QIH", flags, creation, len(name) if length is None else length)
            + name)


def challenge(flags=QUICDIST_FLAGS, chal=L_CHALLENGE, creation=L_CREATION,
              name=L_NAME_B, length=None) -> bytes:
    return (b"N" + struct.pack(">QIIH", flags, chal, creation,
                               len(name) if length is None else length) + name)


def reply(cookie=COOKIE, chal=D_CHALLENGE, answered=L_CHALLENGE) -> bytes:
    return b"r" + struct.pack(">I", chal) + digest(answered, cookie)


def ack(cookie=COOKIE, answered=D_CHALLENGE) -> bytes:
    return b"a" + digest(answered, cookie)


def assert_failed(hs: Handshake, stage: str, cls=HandshakeError, match: str = ""):
    assert hs.failed and not hs.done, hs
    assert type(hs.error) is cls, repr(hs.error)
    assert hs.error.stage == stage, repr(hs.error)
    assert match in str(hs.error), str(hs.error)
    assert hs.result is None
    assert hs.receive(b"anything more") == []  # nothing is sent after a failure


# ---------------------------------------------------------------------------
# Flags


def test_flag_values_are_those_of_dist_hrl():
    # lib/kernel/include/dist.hrl (OTP 25.2 and master), erts dist.h.
    expected = {
        "PUBLISHED": 0x01, "ATOM_CACHE": 0x02, "EXTENDED_REFERENCES": 0x04,
        "DIST_MONITOR": 0x08, "FUN_TAGS": 0x10, "DIST_MONITOR_NAME": 0x20,
        "HIDDEN_ATOM_CACHE": 0x40, "NEW_FUN_TAGS": 0x80, "EXTENDED_PIDS_PORTS": 0x100,
        "EXPORT_PTR_TAG": 0x200, "BIT_BINARIES": 0x400, "NEW_FLOATS": 0x800,
        "UNICODE_IO": 0x1000, "DIST_HDR_ATOM_CACHE": 0x2000, "SMALL_ATOM_TAGS": 0x4000,
        "UTF8_ATOMS": 0x10000, "MAP_TAG": 0x20000, "BIG_CREATION": 0x40000,
        "SEND_SENDER": 0x80000, "BIG_SEQTRACE_LABELS": 0x100000, "EXIT_PAYLOAD": 0x400000,
        "FRAGMENTS": 0x800000, "HANDSHAKE_23": 0x1000000, "UNLINK_ID": 0x2000000,
        "MANDATORY_25_DIGEST": 0x4000000, "SPAWN": 1 << 32, "NAME_ME": 2 << 32,
        "V4_NC": 4 << 32, "ALIAS": 8 << 32, "LOCAL_EXT": 0x10 << 32,
        "ALTACT_SIG": 0x20 << 32,
    }
    assert {f.name: f.value for f in DistFlag} == expected


def test_flag_sets():
    assert MANDATORY_25 == 0x1070F94  # OTP 25.2 erts_internal:get_dflags() mandatory
    assert MANDATORY_26 == DistFlag.V4_NC | DistFlag.UNLINK_ID
    assert QUICDIST_REQUIRED == MANDATORY_25 | MANDATORY_26
    assert QUICDIST_FLAGS == 0x407070FBC
    assert QUICDIST_FLAGS == (
        DistFlag.EXTENDED_REFERENCES | DistFlag.DIST_MONITOR | DistFlag.FUN_TAGS
        | DistFlag.DIST_MONITOR_NAME | DistFlag.NEW_FUN_TAGS | DistFlag.EXTENDED_PIDS_PORTS
        | DistFlag.EXPORT_PTR_TAG | DistFlag.BIT_BINARIES | DistFlag.NEW_FLOATS
        | DistFlag.UTF8_ATOMS | DistFlag.MAP_TAG | DistFlag.BIG_CREATION
        | DistFlag.HANDSHAKE_23 | DistFlag.UNLINK_ID | DistFlag.MANDATORY_25_DIGEST
        | DistFlag.V4_NC)
    for absent in (DistFlag.DIST_HDR_ATOM_CACHE, DistFlag.FRAGMENTS, DistFlag.SEND_SENDER,
                   DistFlag.PUBLISHED, DistFlag.NAME_ME):
        assert not QUICDIST_FLAGS & absent
    assert QUICDIST_OPTIONAL_FLAGS == DistFlag.SEND_SENDER
    assert not missing(QUICDIST_FLAGS)


def test_expand_and_missing():
    assert expand(DistFlag.MANDATORY_25_DIGEST) == MANDATORY_25 | DistFlag.MANDATORY_25_DIGEST
    assert expand(DistFlag.FUN_TAGS) == DistFlag.FUN_TAGS
    assert missing(DistFlag.MANDATORY_25_DIGEST) == MANDATORY_26
    assert missing(DistFlag.MANDATORY_25_DIGEST, MANDATORY_25) == 0
    assert missing(0, MANDATORY_25) == MANDATORY_25
    # Unknown bits survive.
    assert DistFlag(1 << 63 | 1).value == 1 << 63 | 1


# ---------------------------------------------------------------------------
# Helpers: digest, names


def test_digest_matches_otp():
    for chal, expected in OTP_DIGESTS.items():
        assert digest(chal, COOKIE) == expected
        assert digest(chal, COOKIE) == hashlib.md5(COOKIE + str(chal).encode()).digest()
    for bad in (-1, 1 << 32, True, 1.0):
        with pytest.raises(ConfigurationError):
            digest(bad, COOKIE)


@pytest.mark.parametrize("name", [
    "a@b", "node_1-x@127.0.0.1", "n@host.example.org", "n@::1", "n@[::1]", "N@H",
    "n@h\xe9te", "a" * 100 + "@" + "h" * 154,
])
def test_valid_node_names(name):
    assert valid_node_name(name)


@pytest.mark.parametrize("name", [
    "", "@", "a@", "@b", "ab", "a@b@c", "a b@c", "a@b c", "a.b@c", "a+b@c", "a@b\n",
    "a@b\x00", "\xe9@b", "a@h\u0100", "a" * 100 + "@" + "h" * 155, b"a@b", None, 5,
])
def test_invalid_node_names(name):
    assert not valid_node_name(name)


# ---------------------------------------------------------------------------
# Golden bytes


def test_golden_bytes():
    d_sent, l_sent = transcript()
    assert d_sent == [
        bytes.fromhex("4e 00000004 07070fbc 11111111 0013") + b"dialer@host.example",
        bytes.fromhex("72 12345678 52d44ecb249cb4af5680121ffb96e958"),
    ]
    assert l_sent == [
        b"sok",
        bytes.fromhex("4e 00000004 07070fbc cafebabe 22222222 0012") + b"listener@127.0.0.1",
        bytes.fromhex("61 1f4d9b4e53cadc3999bcdb386a23c240"),
    ]


def test_results():
    d, lst = dialer(), listener()
    converse(d, lst, extra_to_d=TICK, extra_to_l=b"")
    assert d.result == HandshakeResult(
        peer_name=L_NAME, peer_flags=DistFlag(QUICDIST_FLAGS), peer_creation=L_CREATION,
        our_flags=expand(QUICDIST_FLAGS), our_name=D_NAME, our_creation=D_CREATION,
        leftover=TICK)
    assert lst.result == HandshakeResult(
        peer_name=D_NAME, peer_flags=DistFlag(QUICDIST_FLAGS), peer_creation=D_CREATION,
        our_flags=expand(QUICDIST_FLAGS), our_name=L_NAME, our_creation=L_CREATION,
        leftover=b"")
    assert d.status == lst.status == "ok"
    assert d.error is None and lst.error is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.result.peer_name = "x@y"


def test_negotiated_flags_are_the_intersection():
    ours = QUICDIST_FLAGS | DistFlag.PUBLISHED | DistFlag.SEND_SENDER
    # An OTP-27-like peer: the digest alone stands for MANDATORY_25.
    theirs = (DistFlag.MANDATORY_25_DIGEST | MANDATORY_26 | DistFlag.PUBLISHED
              | DistFlag.SPAWN | DistFlag.DIST_MONITOR)
    d, lst = dialer(flags=ours), listener(flags=theirs)
    converse(d, lst)
    assert d.done and lst.done
    expected = (MANDATORY_25 | MANDATORY_26 | DistFlag.MANDATORY_25_DIGEST
                | DistFlag.PUBLISHED | DistFlag.DIST_MONITOR)
    assert d.result.our_flags == lst.result.our_flags == expected
    assert d.result.peer_flags == theirs  # as sent, not expanded
    assert lst.result.peer_flags == ours


# ---------------------------------------------------------------------------
# Chunking


def test_conversation_in_every_chunking_style():
    expected = transcript()
    for split_d in (whole, bytewise):
        for split_l in (whole, bytewise):
            d, lst = dialer(), listener()
            after: dict = {}
            got = converse(d, lst, split_d, split_l, extra_to_d=TICK * 3, after=after)
            assert got == expected
            assert d.done and lst.done
            assert d.result.leftover + after["dialer"] == TICK * 3
            if split_d is whole:
                assert d.result.leftover == TICK * 3


def test_every_two_split_points_for_each_side():
    """Each side, fed its recorded input cut at every pair of points (so some
    calls carry two messages and some none), sends the same messages."""
    d_sent, l_sent = transcript()
    tail = b"\x00\x00\x00\x05pnext"
    for role, stream, expected in (
        ("dialer", b"".join(l_sent) + tail, d_sent),
        ("listener", b"".join(d_sent) + tail, l_sent),
    ):
        n = len(stream)
        for i in range(n + 1):
            for j in range(i, n + 1):
                hs = dialer() if role == "dialer" else listener()
                out = hs.start()
                chunks = [stream[:i], stream[i:j], stream[j:]]
                while chunks and not hs.done:
                    out += hs.receive(chunks.pop(0))
                assert hs.done, (role, i, j, hs.error)
                assert out == expected, (role, i, j)
                # The bytes after the last message are the next layer's: the
                # leftover, then the chunks that came after done.
                assert hs.result.leftover + b"".join(chunks) == tail, (role, i, j)


def test_byte_by_byte_keeps_every_message_separate():
    d_sent, l_sent = transcript()
    hs = listener()
    outs = [hs.receive(stream_byte) for stream_byte in bytewise(b"".join(d_sent))]
    non_empty = [o for o in outs if o]
    # 'sok' and the challenge leave together, as two items; 'a' alone.
    assert non_empty == [l_sent[:2], l_sent[2:]]


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_random_chunkings(data):
    def splitter(stream: bytes) -> list[bytes]:
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
        pieces, last = [], 0
        for cut in cuts + [len(stream)]:
            pieces.append(stream[last:cut])
            last = cut
        return pieces

    extra = data.draw(st.binary(max_size=20))
    d, lst = dialer(), listener()
    after: dict = {}
    got = converse(d, lst, splitter, splitter, extra_to_d=extra, after=after)
    assert got == transcript()
    assert d.done and lst.done
    assert d.result.leftover + after["dialer"] == extra


# ---------------------------------------------------------------------------
# The status texts and the "ok" prefix rule


def test_ok_waits_for_the_next_byte():
    d = dialer()
    d.start()
    assert d.receive(b"sok") == []
    assert d.stage == "status" and d.status is None  # "ok" or "ok_simultaneous"?
    out = d.receive(challenge()[:1])
    assert out == [] and d.status == "ok" and d.stage == "challenge"
    assert d.receive(challenge()[1:]) == [reply()]


def test_ok_simultaneous_byte_by_byte():
    d = dialer()
    d.start()
    for byte in bytewise(b"sok_simultaneous"):
        assert d.status is None  # undecided until the last byte
        assert d.receive(byte) == []
        assert not d.failed
    assert d.status == "ok_simultaneous"
    assert d.receive(challenge()) == [reply()]
    assert d.status == "ok_simultaneous"


def test_ok_simultaneous_is_decided_without_a_following_byte():
    d = dialer()
    d.start()
    d.receive(b"sok_simultaneous")
    assert d.status == "ok_simultaneous" and d.stage == "challenge"


def test_ok_then_garbage():
    d = dialer()
    d.start()
    d.receive(b"sokX")
    assert_failed(d, "challenge", match="expected 'N'")
    d = dialer()
    d.start()
    d.receive(b"sok_simultaneouz")
    assert_failed(d, "status", match="unknown status")


@pytest.mark.parametrize("status", ["ok", "ok_simultaneous"])
def test_listener_statuses_that_go_on(status):
    d, lst = dialer(), listener(accept=lambda name, flags: status)
    d_sent, l_sent = converse(d, lst, bytewise, bytewise)
    assert d.done and lst.done
    assert l_sent[0] == b"s" + status.encode()
    assert d.status == lst.status == status


@pytest.mark.parametrize("status", ["nok", "not_allowed"])
def test_refusals(status):
    seen = []
    lst = listener(accept=lambda name, flags: seen.append((name, flags)) or status)
    d = dialer()
    d_sent, l_sent = converse(d, lst, bytewise, bytewise)
    assert seen == [(D_NAME, QUICDIST_FLAGS)]
    assert l_sent == [b"s" + status.encode()]  # the status, then nothing
    assert lst.status == d.status == status
    assert_failed(lst, "status", match="we refused")
    assert_failed(d, "status", match=f"'{status}'")


def test_alive_answered_true():
    d, lst = dialer(), listener(accept=lambda name, flags: "alive")
    d_sent, l_sent = converse(d, lst, bytewise, whole)
    assert d.done and lst.done
    assert l_sent[0] == b"salive" and l_sent[1][:1] == b"N"
    assert d_sent[1] == b"strue"
    assert d.status == lst.status == "alive"


def test_alive_answered_false():
    asked = []
    d = dialer(alive=lambda: asked.append(1) or False)
    lst = listener(accept=lambda name, flags: "alive")
    d_sent, l_sent = converse(d, lst)
    assert asked == [1]
    assert d_sent[1:] == [b"sfalse"] and l_sent == [b"salive"]
    assert_failed(d, "status", match="answered false")
    assert_failed(lst, "status_reply", match="answered false")


def test_alive_reply_garbage():
    lst = listener(accept=lambda name, flags: "alive")
    assert lst.receive(send_name()) == [b"salive"]
    assert lst.receive(b"st") == []
    lst.receive(b"rue?")  # "strue" then '?' where 'r' should be
    assert_failed(lst, "challenge_reply", match="unknown tag")
    lst = listener(accept=lambda name, flags: "alive")
    lst.receive(send_name())
    lst.receive(b"smaybe")
    assert_failed(lst, "status_reply", match="'true' or 'false'")


def test_accept_must_return_a_known_status():
    lst = listener(accept=lambda name, flags: "yes")
    with pytest.raises(LocalProtocolError):
        lst.receive(send_name())
    assert lst.failed


def test_named_status():
    d = dialer(node_name="host.example", flags=QUICDIST_FLAGS | DistFlag.NAME_ME)
    (sent,) = d.start()
    assert sent.endswith(b"\x00\x0chost.example")
    name = b"dyn_7@host.example"
    named = b"snamed:" + struct.pack(">H", len(name)) + name + struct.pack(">I", 77)
    out = feed(d, bytewise(named + challenge() + ack()))
    assert out == [reply()]
    assert d.done and d.status == "named:"
    assert d.result.our_name == "dyn_7@host.example" and d.result.our_creation == 77


def test_named_status_unasked_or_for_another_host():
    name = b"dyn_7@host.example"
    named = b"snamed:" + struct.pack(">H", len(name)) + name + struct.pack(">I", 77)
    d = dialer()
    feed(d, [named])
    assert_failed(d, "status", match="did not ask")
    d = dialer(node_name="other.example", flags=QUICDIST_FLAGS | DistFlag.NAME_ME)
    feed(d, [named])
    assert_failed(d, "status", match="not on our host")
    d = dialer(node_name="host.example", flags=QUICDIST_FLAGS | DistFlag.NAME_ME)
    feed(d, [b"snamed:\x00\x00"])
    assert_failed(d, "status", match="0 bytes")


def test_listener_refuses_a_dynamic_name():
    lst = listener()
    out = lst.receive(send_name(flags=QUICDIST_FLAGS | DistFlag.NAME_ME, name=b"somehost"))
    assert out == [b"snot_allowed"]
    assert_failed(lst, "send_name", match="NAME_ME")


# ---------------------------------------------------------------------------
# Cookies


def test_wrong_cookie_detected_by_the_listener():
    d, lst = dialer(cookie=b"other"), listener()
    d_sent, l_sent = converse(d, lst)
    assert [m[:1] for m in l_sent] == [b"s", b"N"]  # no 'a'
    assert_failed(lst, "challenge_reply", AuthenticationError, "cookies differ")
    assert lst.error.peer == D_NAME
    assert isinstance(lst.error, HandshakeError) and isinstance(lst.error, QuicDistError)
    # The dialer waits for an ack that never comes; the close tells it.
    assert d.stage == "challenge_ack"
    d.receive_eof()
    assert_failed(d, "challenge_ack", AuthenticationError, "refused our digest")


def test_wrong_cookie_detected_by_the_dialer():
    d = dialer()
    out = feed(d, [b"sok" + challenge()])
    assert out[1:] == [reply()]
    d.receive(ack(cookie=b"other"))
    assert_failed(d, "challenge_ack", AuthenticationError, "cookies differ")
    assert d.error.peer == L_NAME


def test_str_cookie_is_latin1():
    d, lst = dialer(cookie="caf\xe9"), listener(cookie=b"caf\xe9")
    converse(d, lst)
    assert d.done and lst.done
    with pytest.raises(ConfigurationError):
        dialer(cookie="\u20ac")


# ---------------------------------------------------------------------------
# The old 'n' send_name and the 'c' complement


def old_send_name(flags=int(QUICDIST_FLAGS) & 0xFFFFFFFF, name=D_NAME_B) -> bytes:
    return b"n" + struct.pack(">HI", 5, flags) + name


def complement(high=int(QUICDIST_FLAGS) >> 32, creation=D_CREATION) -> bytes:
    return b"c" + struct.pack(">II", high, creation)


def test_old_send_name_and_complement():
    lst = listener()
    out = lst.receive(old_send_name())
    assert [m[:1] for m in out] == [b"s", b"N"]
    assert lst.stage == "complement"
    out = feed(lst, bytewise(complement() + reply()))
    assert out == [ack()]
    assert lst.done
    assert lst.result.peer_flags == QUICDIST_FLAGS
    assert lst.result.peer_creation == D_CREATION


def test_old_send_name_waits_for_a_complete_name():
    lst = listener()
    for part in (b"n", b"\x00\x05", b"\x07\x07\x0f\xbc", b"dialer", b"@"):
        assert lst.receive(part) == []
        assert lst.stage == "send_name" and not lst.failed
    out = lst.receive(b"host.example")
    assert len(out) == 2 and lst.result is None
    assert lst.stage == "complement"


def test_old_send_name_checks():
    lst = listener()
    lst.receive(old_send_name(flags=int(MANDATORY_25) & ~int(DistFlag.MAP_TAG)))
    assert lst.status == "not_allowed"
    assert_failed(lst, "send_name", match="MAP_TAG")
    # The high word is checked after the complement.
    lst = listener()
    lst.receive(old_send_name())
    lst.receive(complement(high=0))
    assert_failed(lst, "complement", match="V4_NC")
    lst = listener()
    lst.receive(old_send_name(name=b"bad name@x"))
    assert_failed(lst, "send_name", match="invalid node name")
    lst = listener()
    lst.receive(old_send_name(name=b"a" * 300))
    assert_failed(lst, "send_name", match="over 255")
    lst = listener()
    lst.receive(old_send_name())
    lst.receive(b"x" * 9)
    assert_failed(lst, "complement", match="expected 'c'")


# ---------------------------------------------------------------------------
# Hostile input


DIALER_CASES = [
    # (bytes after start, stage, message fragment)
    (b"xyz", "status", "expected 's'"),
    (b"\x00\x00\x00\x00", "status", "expected 's'"),
    (b"sbogus", "status", "unknown status"),
    (b"sOK", "status", "unknown status"),
    (b"sok" + b"Z" * 40, "challenge", "unknown tag"),
    (b"sok" + challenge(length=0, name=b""), "challenge", "0 bytes"),
    (b"sok" + challenge(length=0xFFFF, name=b""), "challenge", "65535 bytes"),
    (b"sok" + challenge(length=300, name=b"x" * 300), "challenge", "300 bytes"),
    (b"sok" + challenge(name=b"other@127.0.0.1"), "challenge", "answered"),
    (b"sok" + challenge(name=b"no_at_sign"), "challenge", "invalid node name"),
    (b"sok" + challenge(name=b"\xff\xfe@x"), "challenge", "not UTF-8"),
    (b"sok" + challenge(flags=0), "challenge", "lacks mandatory flags"),
    (b"sok" + challenge(flags=MANDATORY_25), "challenge", "V4_NC"),
    (b"sok" + challenge() + b"r" * 17, "challenge_ack", "expected 'a'"),
    # A challenge whose NameLen is too short: a shorter name ("listener@127.0.").
    (b"sok" + challenge(length=len(L_NAME) - 3), "challenge", "answered"),
    (b"sok" + challenge(length=len(L_NAME) - 9), "challenge", "invalid node name"),
    # Truncated, then garbage inside the name.
    (b"sok" + challenge()[:25] + b"\x00" * 40, "challenge", "invalid node name"),
]


@pytest.mark.parametrize("split", [whole, bytewise], ids=["whole", "bytewise"])
@pytest.mark.parametrize("stream, stage, match", DIALER_CASES)
def test_hostile_bytes_toward_the_dialer(stream, stage, match, split):
    d = dialer()
    out = feed(d, split(stream))
    assert_failed(d, stage, match=match)
    assert all(m[:1] in (b"N", b"r") for m in out)


LISTENER_CASES = [
    (b"GET / HTTP/1.1\r\n\r\n", "send_name", "unknown tag"),
    (b"\x00\x10" + send_name(), "send_name", "unknown tag"),  # a TCP length prefix
    (b"s" + send_name(), "send_name", "'s' (status)"),
    (send_name(length=0, name=b""), "send_name", "0 bytes"),
    (send_name(length=0xFFFF, name=b""), "send_name", "65535 bytes"),
    (send_name(length=256, name=b"a" * 256), "send_name", "256 bytes"),
    (send_name(name=b"a@" + b"b" * 254), "send_name", "256 bytes"),
    (send_name(name=b"nohost@"), "send_name", "invalid node name"),
    (send_name(name=b"\xc3@x"), "send_name", "not UTF-8"),
    # A send_name that is too long: its tail becomes the next "message".
    (send_name() + b"extra", "challenge_reply", "expected 'r'"),
    # One that is too short: its tail is garbage where 'r' should be.
    (send_name(length=len(D_NAME) - 5), "challenge_reply", "expected 'r'"),
    (send_name() + b"r" + b"\x00" * 20, "challenge_reply", "cookies differ"),
    (send_name() + b"a" * 21, "challenge_reply", "expected 'r'"),
]


@pytest.mark.parametrize("split", [whole, bytewise], ids=["whole", "bytewise"])
@pytest.mark.parametrize("stream, stage, match", LISTENER_CASES)
def test_hostile_bytes_toward_the_listener(stream, stage, match, split):
    lst = listener()
    feed(lst, split(stream))
    cls = AuthenticationError if "cookies" in match else HandshakeError
    assert_failed(lst, stage, cls, match)


def test_listener_tells_a_peer_without_mandatory_flags():
    for flags in (0, MANDATORY_25, QUICDIST_FLAGS & ~DistFlag.UNLINK_ID):
        lst = listener()
        out = lst.receive(send_name(flags=flags))
        assert out == [b"snot_allowed"]
        assert lst.status == "not_allowed"
        assert_failed(lst, "send_name", match="peer lacks mandatory flags")
    # The digest flag alone stands for MANDATORY_25.
    lst = listener()
    out = lst.receive(send_name(flags=DistFlag.MANDATORY_25_DIGEST | MANDATORY_26))
    assert [m[:1] for m in out] == [b"s", b"N"]
    # A listener may ask for less.
    lst = listener(required=MANDATORY_25)
    out = lst.receive(send_name(flags=MANDATORY_25))
    assert [m[:1] for m in out] == [b"s", b"N"]


def test_dialer_lacking_flags_meets_a_listener():
    d, lst = dialer(flags=MANDATORY_25), listener()
    d_sent, l_sent = converse(d, lst)
    assert l_sent == [b"snot_allowed"]
    assert_failed(lst, "send_name", match="UNLINK_ID")
    assert_failed(d, "status", match="not_allowed")


def test_buffer_limit():
    lst = listener(max_buffer=16)
    lst.receive(send_name()[:17])
    assert_failed(lst, "send_name", match="limit 16")
    # Complete messages in one call are not limited, only what waits.
    lst = listener(max_buffer=16)
    out = lst.receive(send_name() + reply() + TICK * 1000)
    assert lst.done and len(out) == 3 and lst.result.leftover == TICK * 1000


def test_a_megabyte_of_garbage_fails_at_once():
    d = dialer()
    d.start()
    d.receive(b"s" + b"\x00" * 1_000_000)
    assert_failed(d, "status", match="unknown status")


def test_eof_at_every_stage():
    d_sent, l_sent = transcript()
    stream = b"".join(l_sent)
    for i in range(len(stream)):
        d = dialer()
        feed(d, [stream[:i]])
        stage = d.stage
        d.receive_eof()
        cls = AuthenticationError if stage == "challenge_ack" else HandshakeError
        assert_failed(d, stage, cls)
    stream = b"".join(d_sent)
    for i in range(len(stream)):
        lst = listener()
        feed(lst, [stream[:i]])
        stage = lst.stage
        lst.receive_eof()
        assert_failed(lst, stage, HandshakeError, "closed the connection")
    d, lst = dialer(), listener()
    converse(d, lst)
    d.receive_eof()  # after done: nothing happens
    assert d.done


# ---------------------------------------------------------------------------
# Fuzz: random and mutated streams, in random chunks


def chunked(data, stream: bytes) -> list[bytes]:
    sizes = data.draw(st.lists(st.integers(0, 64), max_size=20))
    pieces, pos = [], 0
    for size in sizes:
        pieces.append(stream[pos:pos + size])
        pos += size
    pieces.append(stream[pos:])
    return pieces


def run_hostile(hs: Handshake, pieces) -> None:
    """Only progress or HandshakeError: nothing else may escape."""
    if hs.role == "dialer":
        hs.start()
    for piece in pieces:
        if hs.done:
            break
        was_failed = hs.failed
        out = hs.receive(piece)
        assert all(isinstance(m, bytes) and m for m in out)
        if was_failed:
            assert out == []
    if hs.failed:
        assert isinstance(hs.error, HandshakeError)
        assert hs.error.stage
    elif hs.done:
        assert isinstance(hs.result, HandshakeResult)
    hs.receive_eof()
    assert hs.done or isinstance(hs.error, HandshakeError)


PREFIXES = [b"", b"N", b"n", b"s", b"sok", b"sok_", b"salive", b"snamed:", b"r", b"a", b"c",
            b"N\x00\x00\x00\x04\x07\x07\x0f\xbc"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), role=st.sampled_from(["dialer", "listener"]),
       prefix=st.sampled_from(PREFIXES), body=st.binary(max_size=300))
def test_fuzz_random_streams(data, role, prefix, body):
    hs = dialer() if role == "dialer" else listener(accept=lambda n, f: data.draw(
        st.sampled_from(["ok", "ok_simultaneous", "nok", "not_allowed", "alive"])))
    run_hostile(hs, chunked(data, prefix + body))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), role=st.sampled_from(["dialer", "listener"]))
def test_fuzz_mutated_transcripts(data, role):
    d_sent, l_sent = transcript()
    stream = bytearray(b"".join(l_sent if role == "dialer" else d_sent))
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = data.draw(st.integers(0, max(0, len(stream) - 1)))
        if kind == "flip" and stream:
            stream[pos] ^= data.draw(st.integers(1, 255))
        elif kind == "insert":
            stream[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del stream[pos:pos + data.draw(st.integers(1, 8))]
        else:
            del stream[pos:]
    hs = dialer() if role == "dialer" else listener()
    run_hostile(hs, chunked(data, bytes(stream)))


# ---------------------------------------------------------------------------
# API misuse and configuration


def test_misuse():
    d = dialer()
    with pytest.raises(LocalProtocolError):
        d.receive(b"sok")
    d.start()
    with pytest.raises(LocalProtocolError):
        d.start()
    d, lst = dialer(), listener()
    assert lst.start() == []
    converse(d, lst)
    with pytest.raises(LocalProtocolError):
        d.receive(TICK)
    assert "done" in repr(d)


@pytest.mark.parametrize("kwargs", [
    dict(role="talker"),
    dict(node_name="nohost"),
    dict(node_name="a" * 200 + "@" + "b" * 60),
    dict(creation=-1), dict(creation=1 << 32), dict(creation=True),
    dict(flags=1 << 64), dict(flags=-1),
    dict(challenge=1 << 32), dict(challenge=-1),
    dict(cookie=1234),
    dict(max_buffer=0),
    dict(peer_name=None), dict(peer_name="bad"),
    dict(accept=lambda n, f: "ok"),
    dict(node_name="a@b", flags=QUICDIST_FLAGS | DistFlag.NAME_ME),
])
def test_dialer_configuration_errors(kwargs):
    args = dict(role="dialer", node_name=D_NAME, cookie=COOKIE, creation=1, peer_name=L_NAME)
    args.update(kwargs)
    role = args.pop("role")
    with pytest.raises(ConfigurationError):
        Handshake(role, **args)


@pytest.mark.parametrize("kwargs", [
    dict(peer_name=L_NAME),
    dict(alive=lambda: True),
    dict(flags=QUICDIST_FLAGS | DistFlag.NAME_ME),
])
def test_listener_configuration_errors(kwargs):
    with pytest.raises(ConfigurationError):
        Handshake("listener", node_name=L_NAME, cookie=COOKIE, creation=1, **kwargs)


def test_random_challenges_differ():
    challenges = [Handshake("listener", node_name=L_NAME, cookie=COOKIE, creation=1).challenge
                  for _ in range(3)]
    assert all(0 <= c < 1 << 32 for c in challenges)
    assert len(set(challenges)) > 1  # fails with probability 2**-64


def test_name_limit_is_255_bytes():
    assert MAX_NAME_BYTES == 255
    name = "n@" + "h" * 253
    assert valid_node_name(name)
    d = dialer(node_name=name)
    lst = listener()
    converse(d, lst)
    assert lst.done and lst.result.peer_name == name


def test_errors_pickle():
    import pickle

    err = AuthenticationError("bad", "challenge_ack", "x@y")
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is AuthenticationError
    assert (copy.message, copy.stage, copy.peer) == ("bad", "challenge_ack", "x@y")
    assert str(copy) == "bad [challenge_ack] (peer x@y)"


def test_sans_io_purity():
    """Importing the handshake pulls in no socket, thread, selector or clock."""
    code = ("import sys; before = set(sys.modules); "
            "import quicdist.handshake, quicdist.flags; "
            "print(sorted(m for m in ('socket', 'threading', 'selectors', 'time', 'queue') "
            "if m in set(sys.modules) - before))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]", out
