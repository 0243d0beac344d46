"""A scripted fake Erlang node over the QUIC carrier (not a test file).

    peer = RawPeer.dial(node.port, tls, cookie="secret")    # QUIC + TLS only
    peer.handshake(node.name)                               # stream 0, as OTP does
    peer.send(dist.RegSend(peer.pid(1), Atom("net_kernel"), ...))
    reply = peer.expect(lambda m: isinstance(m, dist.Send))

The peer dials with :func:`quicdist.sync.connection.connect` without an event
handler, so every carrier event is queued and read here, on the test's own
thread, with a timeout on every wait. It drives
:class:`quicdist.handshake.Handshake` itself on stream 0 (``send_control``
for each message it returns), so a test can also skip the handshake, or send
anything at all on stream 0 instead, and it sends distribution payloads with
``Connection.send_dist``: well-formed messages (:meth:`RawPeer.send`) or any
bytes (:meth:`RawPeer.send_raw`). What the node sends back is kept raw
(:attr:`RawPeer.frames`, :attr:`RawPeer.control_chunks`) and decoded
(:meth:`RawPeer.expect`).
"""

from __future__ import annotations

import itertools
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from quicdist import dist
from quicdist.config import CarrierConfig
from quicdist.errors import ConnectionClosed, QuicDistTimeoutError
from quicdist.events import (
    ConnectionTerminated,
    ControlData,
    DistFrames,
    UserStreamData,
    UserStreamReset,
    UserStreamStopped,
)
from quicdist.flags import DistFlag
from quicdist.handshake import Handshake, HandshakeResult
from quicdist.sync.connection import Connection, connect
from quicdist.terms import Atom, ImproperList, Pid, Reference
from quicdist.tls import TLSConfig


__all__ = [
    "OTP25_FLAGS",
    "TIMEOUT",
    "RawPeer",
    "Received",
    "ext_atom",
    "ext_pid",
    "ext_ref",
    "ext_small_int",
    "ext_tuple",
]

TIMEOUT = 10.0 * float(os.environ.get("QUICDIST_TESTS_TIMEOUT_FACTOR", "1"))

#: What an OTP 25 node offers a visible peer (its default DFLAG_DIST_DEFAULT):
#: more than the node implements (atom cache, fragments, SPAWN...). The
#: handshake keeps only what both offer; the node must cope either way.
OTP25_FLAGS = int(
    DistFlag.PUBLISHED | DistFlag.EXTENDED_REFERENCES | DistFlag.DIST_MONITOR
    | DistFlag.FUN_TAGS | DistFlag.DIST_MONITOR_NAME | DistFlag.NEW_FUN_TAGS
    | DistFlag.EXTENDED_PIDS_PORTS | DistFlag.EXPORT_PTR_TAG | DistFlag.BIT_BINARIES
    | DistFlag.NEW_FLOATS | DistFlag.UNICODE_IO | DistFlag.DIST_HDR_ATOM_CACHE
    | DistFlag.SMALL_ATOM_TAGS | DistFlag.UTF8_ATOMS | DistFlag.MAP_TAG
    | DistFlag.BIG_CREATION | DistFlag.SEND_SENDER | DistFlag.BIG_SEQTRACE_LABELS
    | DistFlag.EXIT_PAYLOAD | DistFlag.FRAGMENTS | DistFlag.HANDSHAKE_23
    | DistFlag.UNLINK_ID | DistFlag.MANDATORY_25_DIGEST | DistFlag.SPAWN | DistFlag.V4_NC
    | DistFlag.ALIAS)


# ----------------------------------------------------- hand-made ETF pieces
# Written from the "External Term Format" page, independently of quicdist's
# encoder, so byte-level checks compare against the spec, not against itself.

def ext_atom(name: str) -> bytes:
    """SMALL_ATOM_UTF8_EXT (119), what OTP 25 writes for every short atom."""
    raw = name.encode("utf-8")
    assert len(raw) < 256
    return b"w" + bytes([len(raw)]) + raw


def ext_pid(pid: Pid) -> bytes:
    """NEW_PID_EXT (88): node atom, ID:4, Serial:4, Creation:4."""
    return b"X" + ext_atom(str(pid.node)) + struct.pack(">III", pid.id, pid.serial,
                                                        pid.creation)


def ext_ref(ref: Reference) -> bytes:
    """NEWER_REFERENCE_EXT (90): Len:2, node atom, Creation:4, ID:4 * Len."""
    return (b"Z" + struct.pack(">H", len(ref.ids)) + ext_atom(str(ref.node))
            + struct.pack(">I", ref.creation) + b"".join(struct.pack(">I", i) for i in ref.ids))


def ext_small_int(n: int) -> bytes:
    assert 0 <= n < 256
    return b"a" + bytes([n])


def ext_tuple(*elements: bytes) -> bytes:
    assert len(elements) < 256
    return b"h" + bytes([len(elements)]) + b"".join(elements)


# ------------------------------------------------------------------- peer

@dataclass(frozen=True)
class Received:
    """One distribution message from the node: its raw payload and its decoding."""

    payload: bytes
    message: dist.DistMessage | None  # None: the payload did not decode
    error: str | None = None


class RawPeer:
    """A fake node that dialed a :class:`quicdist.Node` (one connection, one thread).

    Not thread-safe: the test thread alone reads events (``next_event``).
    """

    def __init__(self, connection: Connection, *, name: str, cookie: bytes | str,
                 creation: int, flags: int) -> None:
        self.conn = connection
        self.name = name
        self.cookie = cookie
        self.creation = creation
        self.flags = flags
        #: ControlData chunks received on stream 0, exactly as they came.
        self.control_chunks: list[bytes] = []
        #: Every distribution payload received, in order.
        self.frames: list[bytes] = []
        #: Why the connection ended, once it did.
        self.terminated: ConnectionClosed | None = None
        #: User-stream events (data, resets, stops), in order.
        self.user_events: list[UserStreamData | UserStreamReset | UserStreamStopped] = []
        self.handshake_result: HandshakeResult | None = None
        self._inbox: list[Received] = []
        self._ids = itertools.count(1)
        self._hs: Handshake | None = None
        self._before_send: Callable[[bytes], None] | None = None

    # ------------------------------------------------------------- set-up

    @classmethod
    def dial(cls, port: int, tls: TLSConfig, *, cookie: bytes | str, name: str = "erl@127.0.0.1",
             creation: int = 0x5EED, flags: int = OTP25_FLAGS, host: str = "127.0.0.1",
             config: CarrierConfig | None = None, timeout: float = TIMEOUT) -> RawPeer:
        """QUIC + TLS to ``host:port`` (no distribution handshake yet)."""
        connection = connect(host, port, tls=tls, config=config, timeout=timeout,
                             on_event=None, name=f"raw-{name}")
        return cls(connection, name=name, cookie=cookie, creation=creation, flags=flags)

    @classmethod
    def connected(cls, port: int, tls: TLSConfig, node_name: str, *, cookie: bytes | str,
                  **kwargs: Any) -> RawPeer:
        """Dial and complete the handshake with the node ``node_name``."""
        peer = cls.dial(port, tls, cookie=cookie, **kwargs)
        try:
            peer.handshake(node_name)
        except BaseException:
            peer.close()
            raise
        return peer

    def handshake(self, node_name: str, timeout: float = TIMEOUT,
                  before_send: Callable[[bytes], None] | None = None) -> HandshakeResult:
        """Run the dialer's side of the handshake on stream 0 (AssertionError if it fails).

        ``before_send`` is called with each handshake message just before it
        is sent (to slip something in between).
        """
        self._before_send = before_send
        hs = self._hs = Handshake("dialer", node_name=self.name, cookie=self.cookie,
                                  creation=self.creation, flags=self.flags, peer_name=node_name)
        for message in hs.start():
            self._send_handshake(message)
        deadline = time.monotonic() + timeout
        while not hs.done:
            if hs.failed:
                raise AssertionError(f"handshake failed: {hs.error}")
            if self.terminated is not None:
                hs.receive_eof()
                raise AssertionError(f"connection closed during the handshake: "
                                     f"{self.terminated!r} ({hs.error})")
            if not self._pump(deadline):
                raise AssertionError(f"handshake not done within {timeout} s "
                                     f"(stage {hs.stage}); got {self.control_chunks!r}")
        self.handshake_result = hs.result
        return hs.result  # type: ignore[return-value]

    def _send_handshake(self, message: bytes) -> None:
        if self._before_send is not None:
            self._before_send(message)
        self.conn.send_control(message)

    @property
    def hs(self) -> Handshake | None:
        """The handshake state machine, once :meth:`handshake` started it."""
        return self._hs

    # -------------------------------------------------------------- terms

    def pid(self, n: int = 1) -> Pid:
        """A pid of this fake node."""
        return Pid(self.name, n, 0, self.creation)

    def ref(self) -> Reference:
        """A new reference of this fake node (OTP 25 makes 3-word refs)."""
        n = next(self._ids)
        return Reference(self.name, self.creation, [n, 0x1234, 0xABCD])

    # ------------------------------------------------------------ sending

    def send(self, msg: dist.DistMessage) -> None:
        self.conn.send_dist(dist.encode_message(msg), timeout=TIMEOUT)

    def send_raw(self, payload: bytes) -> None:
        """Any bytes as one distribution frame (the carrier adds the length)."""
        self.conn.send_dist(payload, timeout=TIMEOUT)

    def send_control(self, data: bytes) -> None:
        self.conn.send_control(data)

    # ---------------------------------------------------------- receiving

    def _pump(self, deadline: float) -> bool:
        """Handle one event; False if none came before ``deadline``."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            event = self.conn.next_event(remaining)
        except QuicDistTimeoutError:
            return False
        if isinstance(event, ControlData):
            self.control_chunks.append(event.data)
            hs = self._hs
            if hs is not None and not hs.done and not hs.failed:
                for message in hs.receive(event.data):
                    self._send_handshake(message)
        elif isinstance(event, DistFrames):
            for payload in event.frames:
                payload = bytes(payload)
                self.frames.append(payload)
                try:
                    self._inbox.append(Received(payload, dist.decode_message(payload)))
                except ValueError as exc:
                    self._inbox.append(Received(payload, None, str(exc)))
        elif isinstance(event, ConnectionTerminated):
            self.terminated = event.error
        elif isinstance(event, UserStreamData | UserStreamReset | UserStreamStopped):
            self.user_events.append(event)
        return True

    def expect_user_event(self, match: Callable[[Any], bool], timeout: float = TIMEOUT) -> Any:
        """The first user-stream event ``match`` accepts (it and those before it are taken)."""
        deadline = time.monotonic() + timeout
        while True:
            for index, event in enumerate(self.user_events):
                if match(event):
                    del self.user_events[:index + 1]
                    return event
            if self.terminated is not None or not self._pump(deadline):
                raise AssertionError(f"no matching user-stream event within {timeout} s "
                                     f"({self.terminated!r}); got {self.user_events!r}")

    def expect_received(self, match: Callable[[dist.DistMessage], bool],
                        timeout: float = TIMEOUT) -> Received:
        """The first message not yet taken that ``match`` accepts (it is taken)."""
        deadline = time.monotonic() + timeout
        scanned = 0
        while True:
            for index in range(scanned, len(self._inbox)):
                item = self._inbox[index]
                if item.message is not None and match(item.message):
                    del self._inbox[index]
                    return item
            scanned = len(self._inbox)
            if self.terminated is not None:
                raise AssertionError(f"connection closed ({self.terminated!r}); "
                                     f"unmatched: {self.pending()}")
            if not self._pump(deadline):
                raise AssertionError(f"no matching message within {timeout} s; "
                                     f"unmatched: {self.pending()}")

    def expect(self, match: Callable[[dist.DistMessage], bool],
               timeout: float = TIMEOUT) -> dist.DistMessage:
        item = self.expect_received(match, timeout)
        assert item.message is not None
        return item.message

    def pending(self) -> list[dist.DistMessage | None]:
        """Messages received and not taken by :meth:`expect` (they stay)."""
        return [item.message for item in self._inbox]

    def take_all(self) -> list[dist.DistMessage | None]:
        """Every message received and not taken yet (they are taken)."""
        items, self._inbox = self._inbox, []
        return [item.message for item in items]

    def expect_closed(self, timeout: float = TIMEOUT) -> ConnectionClosed:
        deadline = time.monotonic() + timeout
        while self.terminated is None:
            if not self._pump(deadline):
                raise AssertionError(f"the connection is still open after {timeout} s")
        return self.terminated

    def expect_control(self, count: int, timeout: float = TIMEOUT) -> list[bytes]:
        """Wait until ``count`` control chunks have arrived; returns them all."""
        deadline = time.monotonic() + timeout
        while len(self.control_chunks) < count:
            if self.terminated is not None or not self._pump(deadline):
                raise AssertionError(f"{len(self.control_chunks)} control chunks, wanted "
                                     f"{count}: {self.control_chunks!r}")
        return self.control_chunks

    # ------------------------------------------------------ conversations

    def gen_call(self, to_name: str, request: Any, *, alias_tag: bool = True,
                 timeout: float = TIMEOUT, n: int = 1) -> tuple[Any, Any]:
        """REG_SEND ``{'$gen_call', {Pid, Tag}, Request}`` and wait for ``{Tag, Reply}``.

        The tag is OTP 25's ``[alias | Ref]`` (an improper list) or a bare ref.
        Returns ``(tag, reply)``.
        """
        me = self.pid(n)
        ref = self.ref()
        tag = ImproperList([Atom("alias")], ref) if alias_tag else ref
        self.send(dist.RegSend(me, Atom(to_name),
                               (Atom("$gen_call"), (me, tag), request)))
        reply = self.expect(lambda m: isinstance(m, dist.Send) and m.to_pid == me
                            and isinstance(m.message, tuple) and len(m.message) == 2
                            and m.message[0] == tag, timeout)
        assert isinstance(reply, dist.Send)
        return tag, reply.message[1]

    def barrier(self, timeout: float = TIMEOUT) -> list[dist.DistMessage | None]:
        """A net_kernel is_auth round trip; returns what arrived before its answer.

        Everything the node sent before the answer is in order before it on
        the same stream, so this proves what the node sent meanwhile (without
        sleeping). Messages after the answer stay for later.
        """
        me = self.pid(999)
        ref = self.ref()
        self.send(dist.RegSend(me, Atom("net_kernel"),
                               (Atom("$gen_call"), (me, ref), (Atom("is_auth"),
                                                               Atom(self.name)))))

        def is_answer(item: Received) -> bool:
            m = item.message
            return (isinstance(m, dist.Send) and m.to_pid == me
                    and m.message == (ref, Atom("yes")))

        deadline = time.monotonic() + timeout
        while True:
            for index, item in enumerate(self._inbox):
                if is_answer(item):
                    before = self._inbox[:index]
                    del self._inbox[:index + 1]
                    return [i.message for i in before]
            if self.terminated is not None or not self._pump(deadline):
                raise AssertionError(f"no is_auth answer within {timeout} s "
                                     f"({self.terminated!r}); got {self.pending()}")

    def close(self) -> None:
        self.conn.close(reason="raw peer done", timeout=5.0)
