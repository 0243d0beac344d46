"""The distribution handshake, version 6 (OTP 23+), sans I/O.

:class:`Handshake` runs either side of the handshake that opens every
distribution connection (PROTOCOL.md section 3; OTP's ``dist_util.erl``)::

    dialer                                   listener
      send_name        'N' Flags Creation Name  ->
                  <-  's' status                   status
                  <-  'N' Flags Challenge Creation Name   challenge
      challenge_reply  'r' Challenge Digest      ->
                  <-  'a' Digest                   challenge_ack

It owns no socket, thread or clock: bytes go in with :meth:`Handshake.receive`
exactly as they arrived, in any chunking, and the messages to send come out
as a list, each its own ``bytes``. **Write each as its own write** (its own
STREAM frame on QUIC): the Erlang side hands "whatever is buffered" to its
handshake code, so two messages glued into one write break it.

Over QUIC stream 0 the handshake is *unframed* (no length prefix), so message
boundaries come from the layouts alone:

* fixed headers and the 2-byte NameLen give the size of ``'N'``, ``'r'``,
  ``'a'``, ``'c'`` and ``named:`` messages;
* a status text (``'s'`` then ``ok``, ``ok_simultaneous``, ``nok``,
  ``not_allowed``, ``alive``, ``true``, ``false``) has no length: the texts
  are matched as they arrive. Only ``ok`` is a prefix of another text
  (``ok_simultaneous``), so after ``s o k`` the parser waits for one more
  byte: ``_`` continues ``ok_simultaneous``; anything else (in practice the
  ``'N'`` of the challenge that always follows) ends ``ok`` and is parsed as
  the next message. A lone ``sok`` is therefore not acted on until the next
  byte arrives, which costs nothing: the listener always sends its challenge
  right after ``sok``;
* the old ``'n'`` send_name (OTP 22 and older, still accepted by OTP 25.3+)
  has no NameLen: its name runs to the end of the message. The peer sends
  nothing more until it hears from us, so the name is taken to be every
  byte received so far, as soon as that forms a valid node name. Over a
  framed carrier (TCP) feed one frame per :meth:`~Handshake.receive` call;
  over QUIC this is the same assumption the Erlang receiver makes. The
  limit: an old name cut where its first part is already valid (``a@ho`` |
  ``st``) is taken short, and the rest then fails as the next message. The
  ``'N'`` form, which every OTP 23+ node sends, has no such limit.

Statuses: ``ok`` and ``ok_simultaneous`` go on; ``nok`` and ``not_allowed``
end the handshake (the listener sends the status, then nothing); ``alive``
(the listener already has a connection to the dialer) is answered by the
dialer with ``strue`` (go on) or ``sfalse`` (give up); ``named:`` assigns a
name to a dialer that asked for one with NAME_ME.

Everything received is validated (tags, sizes, names, flags, digests) and
every failure becomes a :class:`~quicdist.errors.HandshakeError` (or its
subclass :class:`~quicdist.errors.AuthenticationError` for a cookie
mismatch) recorded in :attr:`Handshake.error`; :meth:`Handshake.receive`
never raises on bad input (only on misuse: :class:`LocalProtocolError`),
and after a failure it sends nothing more.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, NoReturn

from .errors import (
    AuthenticationError,
    ConfigurationError,
    HandshakeError,
    LocalProtocolError,
)
from .flags import QUICDIST_FLAGS, QUICDIST_REQUIRED, DistFlag, expand, missing


__all__ = [
    "MAX_BUFFER",
    "MAX_NAME_BYTES",
    "STATUSES",
    "Handshake",
    "HandshakeResult",
    "digest",
    "valid_node_name",
]

#: Longest node name, in bytes of UTF-8 (an atom holds at most 255 characters).
MAX_NAME_BYTES: Final = 255
#: Most bytes buffered while a message is incomplete. Every valid handshake
#: message is under 300 bytes, so only garbage can reach this.
MAX_BUFFER: Final = 64 * 1024
#: The statuses a listener can answer a send_name with (``accept``'s results).
STATUSES: Final = ("ok", "ok_simultaneous", "nok", "not_allowed", "alive")

Role = Literal["dialer", "listener"]

_U64_MAX: Final = (1 << 64) - 1
_U32_MAX: Final = (1 << 32) - 1

_SEND_NAME: Final = struct.Struct(">QIH")  # after 'N': Flags Creation NameLen
_OLD_SEND_NAME: Final = struct.Struct(">HI")  # after 'n': Version Flags
_CHALLENGE: Final = struct.Struct(">QIIH")  # after 'N': Flags Challenge Creation NameLen
_COMPLEMENT: Final = struct.Struct(">II")  # after 'c': FlagsHigh Creation
_U32: Final = struct.Struct(">I")
_U16: Final = struct.Struct(">H")
_DIGEST_SIZE: Final = 16

# Status texts after 's', longest first (so that "ok_simultaneous" is tried
# before "ok"). "named:" is handled apart: it has a body.
_STATUS_TEXTS: Final = (b"ok_simultaneous", b"not_allowed", b"alive", b"nok", b"ok")
_NAMED: Final = b"named:"
_REPLY_TEXTS: Final = (b"true", b"false")

# net_kernel's rules: the part before '@' is [0-9A-Za-z_-]+ (valid_name_head),
# the host is printable Latin-1 without spaces ([!-ÿ], validate_hostname);
# dist_util requires exactly one '@' with both parts non-empty.
_ALIVE_RE: Final = re.compile(r"[0-9A-Za-z_\-]+")
_HOST_RE: Final = re.compile(r"[!-?A-\xff]+")  # '!'..'\xff' without '@'
_NAME_PREFIX_RE: Final = re.compile(r"[0-9A-Za-z_\-]*(@[!-?A-\xff]*)?")

_TAGS: Final = {
    ord("N"): "'N' (send_name / challenge)",
    ord("n"): "'n' (old send_name)",
    ord("s"): "'s' (status)",
    ord("c"): "'c' (complement)",
    ord("r"): "'r' (challenge_reply)",
    ord("a"): "'a' (challenge_ack)",
}


def digest(challenge: int, cookie: bytes) -> bytes:
    """The 16-byte handshake digest: MD5 of the cookie, then the challenge in decimal.

    Args:
        challenge: the 32-bit challenge being answered.
        cookie: the shared cookie, as bytes (OTP uses the atom's characters,
            which must be Latin-1).

    Raises:
        ConfigurationError: if ``challenge`` is not a 32-bit unsigned integer.
    """
    if not isinstance(challenge, int) or isinstance(challenge, bool) or not (
        0 <= challenge <= _U32_MAX
    ):
        raise ConfigurationError(f"challenge must be in 0..2**32-1, got {challenge!r}")
    return hashlib.md5(bytes(cookie) + str(challenge).encode("ascii")).digest()


def valid_node_name(name: object) -> bool:
    """Whether ``name`` is a valid node name: ``alive@host``.

    The rules of OTP's net_kernel and dist_util: exactly one ``@``; the part
    before it non-empty and made of ``[0-9A-Za-z_-]``; the host non-empty
    and made of printable Latin-1 without spaces (``!`` to ``ÿ``); at most
    255 bytes in UTF-8.
    """
    if not isinstance(name, str) or len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return False
    alive, at, host = name.partition("@")
    return bool(at) and _ALIVE_RE.fullmatch(alive) is not None and (
        _HOST_RE.fullmatch(host) is not None
    )


def _valid_host(host: str) -> bool:
    return len(host.encode("utf-8")) <= MAX_NAME_BYTES and _HOST_RE.fullmatch(host) is not None


@dataclass(frozen=True)
class HandshakeResult:
    """What a completed handshake agreed on.

    Attributes:
        peer_name: the peer's node name.
        peer_flags: the flags the peer sent (with the ``'c'`` complement's
            high word for an old-style peer), not expanded.
        peer_creation: the peer's creation (for its pids, ports, refs).
        our_flags: the negotiated flags: ours and the peer's, both expanded
            (:func:`quicdist.flags.expand`), ANDed, as OTP's ``adjust_flags``
            does. These are the features the connection may use.
        our_name: our node name (assigned by the listener for a NAME_ME dialer).
        our_creation: our creation (assigned by the listener for NAME_ME).
        leftover: bytes received after the last handshake message: they
            belong to the next layer (ticks, or distribution frames over TCP).
    """

    peer_name: str
    peer_flags: DistFlag
    peer_creation: int
    our_flags: DistFlag
    our_name: str
    our_creation: int
    leftover: bytes


class _Abort(Exception):
    """Internal: stop the handshake with ``error``, after sending ``farewell``."""

    def __init__(self, error: HandshakeError, farewell: list[bytes] | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.farewell = farewell or []


class Handshake:
    """One side of the distribution handshake (version 6), as a state machine.

    Args:
        role: ``"dialer"`` (the side that connects: sends its name first) or
            ``"listener"`` (the side that accepts).
        node_name: our node name, ``alive@host`` (a bare host for a dialer
            that asks to be named: ``flags`` with ``DistFlag.NAME_ME``).
        cookie: the shared secret; a ``str`` is encoded as Latin-1, as OTP
            encodes a cookie atom.
        creation: our 32-bit creation.
        flags: the flags we advertise (default :data:`QUICDIST_FLAGS`; add
            ``DistFlag.PUBLISHED`` for a visible node).
        peer_name: dialer only, required: the node we dial. The listener's
            challenge must carry exactly this name.
        accept: listener only: called with the dialer's name and flags once
            its send_name is valid, returns the status to send (one of
            :data:`STATUSES`; default always ``"ok"``). ``"nok"`` and
            ``"not_allowed"`` refuse the connection; ``"alive"`` says we
            already have a connection to that node, and the dialer answers
            whether its attempt is still wanted.
        alive: dialer only: called when the listener answers ``alive``;
            return True to keep this attempt (the default), False to give up.
        challenge: our 32-bit challenge (tests); default a random one from
            :mod:`secrets`.
        required: flags the peer must offer (after expanding
            MANDATORY_25_DIGEST); default :data:`QUICDIST_REQUIRED`.
        max_buffer: most bytes held while a message is incomplete (the
            messages themselves bound this to under 300 bytes; a smaller
            value makes valid handshakes fail).

    Raises:
        ConfigurationError: for an invalid argument.

    Not thread-safe: one owner (the I/O thread) drives it.
    """

    def __init__(
        self,
        role: Role,
        *,
        node_name: str,
        cookie: bytes | str,
        creation: int,
        flags: int = QUICDIST_FLAGS,
        peer_name: str | None = None,
        accept: Callable[[str, int], str] | None = None,
        alive: Callable[[], bool] | None = None,
        challenge: int | None = None,
        required: int = QUICDIST_REQUIRED,
        max_buffer: int = MAX_BUFFER,
    ) -> None:
        if role not in ("dialer", "listener"):
            raise ConfigurationError(f"role must be 'dialer' or 'listener', not {role!r}")
        self._role: Role = role
        for what, value, top in (
            ("flags", flags, _U64_MAX),
            ("required", required, _U64_MAX),
            ("creation", creation, _U32_MAX),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
                raise ConfigurationError(f"{what} must be in 0..{top:#x}, got {value!r}")
        name_me = bool(flags & DistFlag.NAME_ME)
        if name_me and role == "listener":
            raise ConfigurationError("NAME_ME is for a dialer that asks to be named")
        if name_me:
            if not _valid_host(node_name):
                raise ConfigurationError(
                    f"with NAME_ME, node_name must be a host name, got {node_name!r}")
        elif not valid_node_name(node_name):
            raise ConfigurationError(f"invalid node name {node_name!r} (expected alive@host)")
        if isinstance(cookie, str):
            try:
                cookie = cookie.encode("latin-1")
            except UnicodeEncodeError:
                raise ConfigurationError(
                    "a cookie must be Latin-1 (OTP cannot hash other characters)") from None
        if not isinstance(cookie, bytes | bytearray | memoryview):
            raise ConfigurationError(f"cookie must be bytes or str, not {type(cookie).__name__}")
        if role == "dialer":
            if peer_name is None:
                raise ConfigurationError("a dialer needs peer_name: the node it dials")
            if not valid_node_name(peer_name):
                raise ConfigurationError(f"invalid peer node name {peer_name!r}")
            if accept is not None:
                raise ConfigurationError("accept is for the listener")
        else:
            if peer_name is not None:
                raise ConfigurationError("peer_name is for the dialer (the listener learns it)")
            if alive is not None:
                raise ConfigurationError("alive is for the dialer")
        if challenge is None:
            challenge = secrets.randbits(32)
        elif not isinstance(challenge, int) or isinstance(challenge, bool) or not (
            0 <= challenge <= _U32_MAX
        ):
            raise ConfigurationError(f"challenge must be in 0..2**32-1, got {challenge!r}")
        if not isinstance(max_buffer, int) or isinstance(max_buffer, bool) or max_buffer < 1:
            raise ConfigurationError(f"max_buffer must be a positive int, got {max_buffer!r}")

        self._node_name = node_name
        self._name_bytes = node_name.encode("utf-8")
        self._cookie = bytes(cookie)
        self._creation = creation
        self._flags = flags
        self._required = required
        self._peer_name = peer_name
        self._accept = accept
        self._alive = alive
        self._challenge = challenge
        self._max_buffer = max_buffer

        self._buf = bytearray()
        # The message awaited next; also the 'stage' of errors. "start": the
        # dialer has not started; "done" / "failed": terminal.
        self._state = "start" if role == "dialer" else "send_name"
        self._status: str | None = None
        self._peer_flags = 0
        self._peer_creation: int | None = None
        self._old_peer = False  # sent the old 'n' send_name: a 'c' follows
        self._negotiated = DistFlag(0)
        self._error: HandshakeError | None = None
        self._result: HandshakeResult | None = None

    # ------------------------------------------------------------------
    # Public state

    @property
    def role(self) -> Role:
        """``"dialer"`` or ``"listener"``."""
        return self._role

    @property
    def stage(self) -> str:
        """The message awaited next (``"status"``, ``"challenge_reply"``...),
        or ``"start"``, ``"done"``, ``"failed"``."""
        return self._state

    @property
    def done(self) -> bool:
        """True once the handshake completed; :attr:`result` is then set."""
        return self._state == "done"

    @property
    def failed(self) -> bool:
        """True once the handshake failed; :attr:`error` says why."""
        return self._state == "failed"

    @property
    def error(self) -> HandshakeError | None:
        """Why the handshake failed (None unless :attr:`failed`)."""
        return self._error

    @property
    def result(self) -> HandshakeResult | None:
        """What the handshake agreed on (None until :attr:`done`)."""
        return self._result

    @property
    def status(self) -> str | None:
        """The status received (dialer) or sent (listener), once known.

        ``"named:"`` for a name assigned by the listener.
        """
        return self._status

    @property
    def challenge(self) -> int:
        """Our challenge (the number the peer must hash with the cookie)."""
        return self._challenge

    def __repr__(self) -> str:
        peer = self._peer_name or "?"
        return f"<Handshake {self._role} {self._node_name} <-> {peer}: {self._state}>"

    # ------------------------------------------------------------------
    # Driving it

    def start(self) -> list[bytes]:
        """Begin the handshake; returns the messages to send.

        The dialer sends its send_name; the listener sends nothing first
        (calling this is optional for it).

        Raises:
            LocalProtocolError: if the dialer was already started.
        """
        if self._role == "listener":
            return []
        if self._state != "start":
            raise LocalProtocolError("the handshake was already started")
        self._state = "status"
        return [b"N" + _SEND_NAME.pack(self._flags, self._creation, len(self._name_bytes))
                + self._name_bytes]

    def receive(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Feed bytes from the peer, as they arrived; returns the messages to send.

        Any chunking works: several messages in one call, one message over
        many calls. Send each returned item as its own write (its own STREAM
        frame), in order, and never join two of them.

        Afterwards check :attr:`done` (then :attr:`result`, whose
        ``leftover`` holds any bytes that followed the handshake) and
        :attr:`failed` (then :attr:`error`; the items returned by the failing
        call, such as a ``not_allowed`` status, are still to be sent, and
        nothing is sent after them). After a failure, input is ignored.

        Raises:
            LocalProtocolError: called before :meth:`start` (dialer) or after
                the handshake completed.
        """
        if self._state == "failed":
            return []
        if self._state == "done":
            raise LocalProtocolError(
                "the handshake is done: later bytes belong to the next layer")
        if self._state == "start":
            raise LocalProtocolError("call start() before receive()")
        self._buf += data
        out: list[bytes] = []
        try:
            while self._state not in ("done", "failed"):
                step = self._step()
                if step is None:
                    break
                out.extend(step)
            if self._state not in ("done", "failed") and len(self._buf) > self._max_buffer:
                self._abort(f"{len(self._buf)} bytes without a complete {self._state} "
                            f"message (limit {self._max_buffer})")
        except _Abort as abort:
            self._state = "failed"
            self._error = abort.error
            self._buf.clear()
            out.extend(abort.farewell)
        return out

    def receive_eof(self) -> None:
        """The peer closed the connection (or stream 0): fail unless done.

        A dialer that sees the connection close right after its
        challenge_reply reports :class:`AuthenticationError`: that is how
        OTP refuses a wrong digest (it logs "Invalid challenge reply" and
        closes without a word).
        """
        if self._state in ("done", "failed"):
            return
        stage = self._state
        error: HandshakeError
        if self._role == "dialer" and stage == "challenge_ack":
            error = AuthenticationError(
                "the peer closed the connection after our challenge_reply: it refused "
                "our digest (the cookies differ)", stage, self._peer_name)
        else:
            pending = f" ({len(self._buf)} bytes of an incomplete message)" if self._buf else ""
            error = HandshakeError(
                f"the peer closed the connection before the handshake completed{pending}",
                stage, self._peer_name)
        self._state = "failed"
        self._error = error
        self._buf.clear()

    # ------------------------------------------------------------------
    # Internals

    def _abort(self, message: str, farewell: list[bytes] | None = None, *,
               auth: bool = False) -> NoReturn:
        cls = AuthenticationError if auth else HandshakeError
        raise _Abort(cls(message, self._state, self._peer_name), farewell)

    def _expect_tag(self, *tags: str) -> int | None:
        """The first byte, if it is one of ``tags``; None if nothing buffered."""
        if not self._buf:
            return None
        tag = self._buf[0]
        if chr(tag) not in tags:
            what = _TAGS.get(tag, f"unknown tag {tag} ({bytes([tag])!r})")
            wanted = " or ".join(repr(t) for t in tags)
            self._abort(f"expected {wanted} for {self._state}, got {what}")
        return tag

    def _decode_name(self, raw: bytes | bytearray, *, host_only: bool = False) -> str:
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._abort(f"node name is not UTF-8: {bytes(raw[:64])!r}")
        ok = _valid_host(name) if host_only else valid_node_name(name)
        if not ok:
            self._abort(f"invalid node name {name[:300]!r}")
        return name

    def _take(self, n: int) -> bytes:
        chunk = bytes(self._buf[:n])
        del self._buf[:n]
        return chunk

    def _finish(self, peer_name: str) -> None:
        assert self._peer_creation is not None
        self._result = HandshakeResult(
            peer_name=peer_name,
            peer_flags=DistFlag(self._peer_flags),
            peer_creation=self._peer_creation,
            our_flags=self._negotiated,
            our_name=self._node_name,
            our_creation=self._creation,
            leftover=bytes(self._buf),
        )
        self._buf.clear()
        self._state = "done"

    def _check_flags(self, flags: int, mask: int = _U64_MAX, *, refuse: bool = False) -> None:
        """Abort if the peer lacks a required flag; ``refuse``: say not_allowed first."""
        lacking = missing(flags, self._required & mask)
        if lacking:
            names = "|".join(f.name or hex(f.value) for f in lacking)
            farewell = None
            if refuse:
                self._status = "not_allowed"
                farewell = [b"snot_allowed"]
            self._abort(f"peer lacks mandatory flags {names} (sent {flags:#x})", farewell)

    def _step(self) -> list[bytes] | None:
        """Parse one message of the awaited kind; None if it is incomplete."""
        state = self._state
        if state == "status":
            return self._on_status()
        if state == "challenge":
            return self._on_challenge()
        if state == "challenge_ack":
            return self._on_challenge_ack()
        if state == "send_name":
            return self._on_send_name()
        if state == "status_reply":
            return self._on_status_reply()
        if state == "complement":
            return self._on_complement()
        if state == "challenge_reply":
            return self._on_challenge_reply()
        raise AssertionError(f"unexpected state {state}")  # pragma: no cover

    # Dialer ------------------------------------------------------------

    def _on_status(self) -> list[bytes] | None:
        if self._expect_tag("s") is None:
            return None
        body = bytes(self._buf[1:1 + len(_STATUS_TEXTS[0]) + 1])
        if body.startswith(_NAMED):
            return self._on_named()
        text: bytes | None = None
        for candidate in _STATUS_TEXTS:
            if body.startswith(candidate):
                text = candidate
                break
        if text == b"ok" and len(body) == 2:
            return None  # "ok" or the start of "ok_simultaneous": wait for one more byte
        if text == b"ok" and body[2:3] == b"_":
            text = None  # "ok_..." that is not (yet) "ok_simultaneous"
        if text is None:
            if any(c.startswith(body) for c in (*_STATUS_TEXTS, _NAMED)):
                return None
            self._abort(f"unknown status {body!r}")
        del self._buf[:1 + len(text)]
        status = text.decode("ascii")
        self._status = status
        if status in ("ok", "ok_simultaneous"):
            self._state = "challenge"
            return []
        if status == "alive":
            keep = True if self._alive is None else bool(self._alive())
            reply = b"strue" if keep else b"sfalse"
            if not keep:
                self._abort("the listener already has a connection to us ('alive') "
                            "and we answered false", [reply])
            self._state = "challenge"
            return [reply]
        if status == "nok":
            self._abort("the listener refused: 'nok' (it is connecting to us itself "
                        "and its attempt wins)")
        self._abort("the listener refused: 'not_allowed' (it does not accept our "
                    "node, or we lack flags it needs)")

    def _on_named(self) -> list[bytes] | None:
        head = 1 + len(_NAMED)
        if len(self._buf) < head + 2:
            return None
        (length,) = _U16.unpack_from(self._buf, head)
        if not 0 < length <= MAX_NAME_BYTES:
            self._abort(f"named: status with a name of {length} bytes "
                        f"(1..{MAX_NAME_BYTES})")
        if len(self._buf) < head + 2 + length + 4:
            return None
        name = self._decode_name(self._buf[head + 2:head + 2 + length])
        (creation,) = _U32.unpack_from(self._buf, head + 2 + length)
        if not self._flags & DistFlag.NAME_ME:
            self._abort("the listener named us ('named:') but we did not ask (NAME_ME)")
        if name.partition("@")[2] != self._node_name:
            self._abort(f"the listener named us {name!r}, not on our host {self._node_name!r}")
        del self._buf[:head + 2 + length + 4]
        self._status = "named:"
        self._node_name = name
        self._creation = creation
        self._state = "challenge"
        return []

    def _on_challenge(self) -> list[bytes] | None:
        if self._expect_tag("N") is None:
            return None
        head = 1 + _CHALLENGE.size
        if len(self._buf) < head:
            return None
        flags, challenge, creation, length = _CHALLENGE.unpack_from(self._buf, 1)
        if not 0 < length <= MAX_NAME_BYTES:
            self._abort(f"challenge with a name of {length} bytes (1..{MAX_NAME_BYTES})")
        if len(self._buf) < head + length:
            return None
        name = self._decode_name(self._buf[head:head + length])
        if name != self._peer_name:
            self._abort(f"we dialed {self._peer_name!r} but {name!r} answered")
        del self._buf[:head + length]
        self._check_flags(flags)
        self._peer_flags = flags
        self._peer_creation = creation
        self._negotiated = expand(self._flags) & expand(flags)
        self._state = "challenge_ack"
        return [b"r" + _U32.pack(self._challenge) + digest(challenge, self._cookie)]

    def _on_challenge_ack(self) -> list[bytes] | None:
        if self._expect_tag("a") is None:
            return None
        if len(self._buf) < 1 + _DIGEST_SIZE:
            return None
        received = self._take(1 + _DIGEST_SIZE)[1:]
        if not hmac.compare_digest(received, digest(self._challenge, self._cookie)):
            self._abort("wrong digest in challenge_ack: the cookies differ", auth=True)
        assert self._peer_name is not None
        self._finish(self._peer_name)
        return []

    # Listener ----------------------------------------------------------

    def _on_send_name(self) -> list[bytes] | None:
        tag = self._expect_tag("N", "n")
        if tag is None:
            return None
        if tag == ord("N"):
            head = 1 + _SEND_NAME.size
            if len(self._buf) < head:
                return None
            flags, creation, length = _SEND_NAME.unpack_from(self._buf, 1)
            if not 0 < length <= MAX_NAME_BYTES:
                self._abort(f"send_name with a name of {length} bytes (1..{MAX_NAME_BYTES})")
            if len(self._buf) < head + length:
                return None
            raw = self._take(head + length)[head:]
            self._peer_creation = creation
            mask = _U64_MAX
        else:
            # Old form: 'n' Version:2 Flags:4 Name, the name up to the end of
            # what was received (see the module docstring).
            head = 1 + _OLD_SEND_NAME.size
            if len(self._buf) < head:
                return None
            _version, flags = _OLD_SEND_NAME.unpack_from(self._buf, 1)
            raw = bytes(self._buf[head:])
            if len(raw) > MAX_NAME_BYTES:
                self._abort(f"old send_name with a name over {MAX_NAME_BYTES} bytes")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = None  # maybe a character cut in two: judged below
            if text is None or not valid_node_name(text):
                prefix = raw.decode("utf-8", "ignore")
                if _NAME_PREFIX_RE.fullmatch(prefix) is None:
                    self._abort(f"invalid node name {raw[:300]!r}")
                return None
            del self._buf[:]
            self._old_peer = True
            mask = _U32_MAX  # the high word comes in the complement
        if flags & DistFlag.NAME_ME:
            # A dynamic name: the dialer sent only its host. Not supported.
            self._peer_name = self._decode_name(raw, host_only=True)
            self._status = "not_allowed"
            self._abort("the dialer asks to be named (NAME_ME): not supported",
                        [b"snot_allowed"])
        self._peer_name = self._decode_name(raw)
        self._peer_flags = flags
        self._check_flags(flags, mask, refuse=True)
        status = "ok" if self._accept is None else self._accept(self._peer_name, flags)
        if status not in STATUSES:
            self._state = "failed"
            self._error = HandshakeError(f"accept() returned {status!r}", "send_name",
                                         self._peer_name)
            raise LocalProtocolError(
                f"accept() must return one of {', '.join(STATUSES)}; got {status!r}")
        self._status = status
        reply = b"s" + status.encode("ascii")
        if status in ("nok", "not_allowed"):
            self._state = "status"
            self._abort(f"we refused the dialer: {status!r}", [reply])
        if status == "alive":
            self._state = "status_reply"
            return [reply]
        return [reply, self._challenge_message()]

    def _challenge_message(self) -> bytes:
        self._state = "complement" if self._old_peer else "challenge_reply"
        return (b"N" + _CHALLENGE.pack(self._flags, self._challenge, self._creation,
                                       len(self._name_bytes)) + self._name_bytes)

    def _on_status_reply(self) -> list[bytes] | None:
        if self._expect_tag("s") is None:
            return None
        body = bytes(self._buf[1:6])
        for text in _REPLY_TEXTS:
            if body.startswith(text):
                del self._buf[:1 + len(text)]
                if text == b"false":
                    self._abort("the dialer answered false to 'alive': it no longer "
                                "wants this connection")
                return [self._challenge_message()]
        if any(text.startswith(body) for text in _REPLY_TEXTS):
            return None
        self._abort(f"expected 'true' or 'false' after 'alive', got {body!r}")

    def _on_complement(self) -> list[bytes] | None:
        if self._expect_tag("c") is None:
            return None
        if len(self._buf) < 1 + _COMPLEMENT.size:
            return None
        high, creation = _COMPLEMENT.unpack(self._take(1 + _COMPLEMENT.size)[1:])
        self._peer_flags |= high << 32
        self._peer_creation = creation
        self._check_flags(self._peer_flags)
        self._state = "challenge_reply"
        return []

    def _on_challenge_reply(self) -> list[bytes] | None:
        if self._expect_tag("r") is None:
            return None
        size = 1 + 4 + _DIGEST_SIZE
        if len(self._buf) < size:
            return None
        message = self._take(size)
        (their_challenge,) = _U32.unpack_from(message, 1)
        if not hmac.compare_digest(message[5:], digest(self._challenge, self._cookie)):
            self._abort("wrong digest in challenge_reply: the cookies differ", auth=True)
        self._negotiated = expand(self._flags) & expand(self._peer_flags)
        assert self._peer_name is not None
        ack = b"a" + digest(their_challenge, self._cookie)
        self._finish(self._peer_name)
        return [ack]
