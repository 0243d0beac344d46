"""The exceptions quicdist raises on purpose.

Everything derives from :class:`QuicDistError`, so ``except QuicDistError``
catches every failure the library reports. Where a builtin exception already
names the kind of failure, the quicdist class also derives from it, so code
that catches ``ValueError``, ``TypeError`` or ``TimeoutError`` keeps working::

    QuicDistError(Exception)
    ├── ConfigurationError(QuicDistError, ValueError)   bad arguments or settings
    ├── TermError(QuicDistError)                        External Term Format problems
    │   ├── DecodeError(TermError, ValueError)          bytes that are not a valid term
    │   └── EncodeError(TermError, TypeError, ValueError)
    │                                                   a Python value with no Erlang term
    ├── ProtocolError(QuicDistError)                    the wire protocol was broken
    │   ├── LocalProtocolError                          ... by us (a bug or a misuse)
    │   └── RemoteProtocolError                         ... by the peer
    │       └── FrameError(RemoteProtocolError, ValueError)
    │                                                   a malformed or oversized frame
    ├── HandshakeError(QuicDistError)                   the distribution handshake failed
    │   └── AuthenticationError                         the cookies differ (digest mismatch)
    ├── ConnectionClosed(QuicDistError)                 the QUIC connection is gone
    │   ├── ConnectionClosedOK                          closed normally (either side)
    │   └── ConnectionClosedError                       closed by an error, timeout or loss
    │       └── TLSHandshakeError                       the TLS handshake failed
    │           └── CertificateError                    the peer's certificate was refused
    ├── NodeError(QuicDistError)                        node-level failures
    │   ├── NodeDown                                    the peer node is (or went) down
    │   │   └── NotConnected                            ... and could not be connected
    │   ├── MailboxClosed                               the mailbox exited (.reason)
    │   └── CallError                                   a call got an exit, not a reply (.reason)
    │       ├── NoProc(CallError, LookupError)          no such process or registered name
    │       └── RpcError                                a remote call failed (.reason)
    ├── DiscoveryError(QuicDistError)                   the node's address could not be found
    │   └── EpmdError                                   epmd refused, failed or is unreachable
    ├── StreamError(QuicDistError)                      one stream failed (others go on)
    │   ├── StreamReset                                 the peer reset it (.code)
    │   ├── StreamClosed                                used after close() or FIN
    │   └── NotOwner                                    used by a thread that does not own it
    └── QuicDistTimeoutError(QuicDistError, TimeoutError)
                                                        a blocking call ran out of time

Exceptions are plain data: they carry attributes, never log, and pickle
(their constructor arguments are kept in ``args``).
"""

from __future__ import annotations


__all__ = [
    "AuthenticationError",
    "CallError",
    "CertificateError",
    "ConfigurationError",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "DecodeError",
    "DiscoveryError",
    "EncodeError",
    "EpmdError",
    "FrameError",
    "HandshakeError",
    "LocalProtocolError",
    "MailboxClosed",
    "NoProc",
    "NodeDown",
    "NodeError",
    "NotConnected",
    "NotOwner",
    "ProtocolError",
    "QuicDistError",
    "QuicDistTimeoutError",
    "RemoteProtocolError",
    "RpcError",
    "StreamClosed",
    "StreamError",
    "StreamReset",
    "TLSHandshakeError",
    "TermError",
]


class QuicDistError(Exception):
    """Base class of every exception quicdist raises on purpose."""


class _Described(QuicDistError):
    """An error whose text is its message alone: the other constructor
    arguments stay in ``args`` (so it pickles) and in named attributes."""

    def __init__(self, message: str, *details: object) -> None:
        super().__init__(message, *details)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigurationError(QuicDistError, ValueError):
    """An argument or setting is invalid."""


class TermError(QuicDistError):
    """A term could not be converted between Python and the External Term Format."""


class DecodeError(TermError, ValueError):
    """The bytes are not a valid External Term Format term.

    Attributes:
        offset: position in the input where decoding failed (-1 if unknown).
    """

    def __init__(self, message: str, offset: int = -1) -> None:
        super().__init__(message, offset)
        self.message = message
        self.offset = offset

    def __str__(self) -> str:
        if self.offset >= 0:
            return f"{self.message} (at byte {self.offset})"
        return self.message


class EncodeError(TermError, TypeError, ValueError):
    """A Python value cannot be encoded as an Erlang term.

    Raised for values of an unsupported type (it is a ``TypeError``) and for
    values of a supported type that Erlang cannot represent, such as NaN, an
    atom longer than 255 characters or an integer beyond Erlang's limit (it is
    a ``ValueError``).
    """


class ProtocolError(QuicDistError):
    """The wire protocol was broken. Never raised itself: see the subclasses.

    ``error_code`` is the QUIC application error code quicdist closes the
    connection (or resets the stream) with when it meets this error.
    """

    error_code: int = 0x1


class LocalProtocolError(ProtocolError):
    """We tried something the protocol forbids (a misuse of the API)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids."""


class FrameError(RemoteProtocolError, ValueError):
    """A distribution frame was malformed or larger than the configured maximum."""

    error_code = 0x2


class HandshakeError(QuicDistError):
    """The distribution handshake (name, status, challenge, reply, ack) failed.

    Reported (``Handshake.error``, and raised by the blocking calls above it)
    for bytes that are not a valid handshake message, a peer that lacks a
    mandatory distribution flag, a refused status (``nok``, ``not_allowed``,
    ...), or a connection lost before the handshake completed.

    Attributes:
        stage: the handshake message being read or answered when it failed:
            ``"send_name"``, ``"status"``, ``"status_reply"``, ``"challenge"``,
            ``"complement"``, ``"challenge_reply"`` or ``"challenge_ack"``
            (empty if not known).
        peer: the peer's node name, once known (``None`` before that).
    """

    def __init__(self, message: str, stage: str = "", peer: str | None = None) -> None:
        super().__init__(message, stage, peer)
        self.message = message
        self.stage = stage
        self.peer = peer

    def __str__(self) -> str:
        where = f" [{self.stage}]" if self.stage else ""
        who = f" (peer {self.peer})" if self.peer else ""
        return f"{self.message}{where}{who}"


class AuthenticationError(HandshakeError):
    """The peer's digest does not match: the two nodes' cookies differ.

    The listener detects it in the dialer's challenge_reply, the dialer in
    the listener's challenge_ack (or, against Erlang, which closes without a
    word, by the connection closing right after its challenge_reply).
    """


class ConnectionClosed(QuicDistError):
    """The QUIC connection is closed; operations on it fail with this.

    Attributes:
        error_code: the QUIC or application error code of the close (0: none).
        reason: the reason phrase, or a description of what happened.
        initiated_locally: True when this side closed it.
    """

    def __init__(self, reason: str = "connection closed", error_code: int = 0,
                 initiated_locally: bool = False) -> None:
        super().__init__(reason, error_code, initiated_locally)
        self.reason = reason
        self.error_code = error_code
        self.initiated_locally = initiated_locally

    def __str__(self) -> str:
        side = "locally" if self.initiated_locally else "by the peer"
        code = f", code 0x{self.error_code:x}" if self.error_code else ""
        return f"{self.reason} (closed {side}{code})"


class ConnectionClosedOK(ConnectionClosed):
    """The connection was closed normally, by either side."""


class ConnectionClosedError(ConnectionClosed):
    """The connection ended abnormally: protocol error, idle timeout, lost peer."""


class TLSHandshakeError(ConnectionClosedError):
    """The TLS 1.3 handshake inside QUIC failed (ALPN, alert, protocol)."""


class CertificateError(TLSHandshakeError):
    """A certificate was refused: unknown CA, expired, missing, unparsable."""


class NodeError(QuicDistError):
    """A failure at the level of nodes and processes."""


class NodeDown(NodeError, _Described):
    """The peer node is down, or went down while the call waited.

    Attributes:
        node: the peer's node name.
    """

    def __init__(self, message: str, node: str = "") -> None:
        super().__init__(message, node)
        self.node = node


class NotConnected(NodeDown):
    """The peer node is not connected and could not be connected."""


class MailboxClosed(NodeError, _Described):
    """The mailbox has exited; ``reason`` is its exit reason (an Erlang term)."""

    def __init__(self, message: str, reason: object = None) -> None:
        super().__init__(message, reason)
        self.reason = reason


class CallError(NodeError, _Described):
    """A call (``gen_call``, ``rpc``) ended with an exit instead of a reply.

    Attributes:
        reason: the Erlang exit reason (a term).
    """

    def __init__(self, message: str, reason: object = None) -> None:
        super().__init__(message, reason)
        self.reason = reason


class NoProc(CallError, LookupError):
    """The target process or registered name does not exist (Erlang's ``noproc``)."""


class RpcError(CallError):
    """A remote call failed; ``reason`` is the Erlang reason (from ``{badrpc, Reason}``
    or the exception the callee raised)."""


class DiscoveryError(_Described):
    """The node's address could not be found.

    Raised by the node discovery (:mod:`quicdist.discovery`): the node is
    not in the static table, its DNS SRV query failed (NXDOMAIN, no answer,
    timeout), or its host name does not resolve. The message says why; when
    several methods were tried in turn it lists why each one failed.

    Attributes:
        node: the node name looked up ("" if not known).
    """

    def __init__(self, message: str, node: str = "") -> None:
        super().__init__(message, node)
        self.node = node


class EpmdError(DiscoveryError):
    """epmd (the Erlang Port Mapper Daemon, TCP carrier only) did not help.

    Raised by :mod:`quicdist.epmd`: epmd is not running or not reachable,
    it answered with an error (a name already registered, a node it does
    not know), or it sent something that is not its protocol. Looking a
    node up is discovery, so this is a :class:`DiscoveryError`.

    Attributes:
        node: the node (or alive) name concerned ("" if none).
        result: epmd's non-zero result code, when it sent one (else None).
    """

    def __init__(self, message: str, node: str = "", result: int | None = None) -> None:
        super().__init__(message, node)
        self.args = (message, node, result)
        self.result = result


class StreamError(_Described):
    """One stream failed; the connection and its other streams go on.

    Attributes:
        stream_id: the QUIC stream id (-1 if not known).
    """

    def __init__(self, message: str, stream_id: int = -1) -> None:
        super().__init__(message, stream_id)
        self.stream_id = stream_id


class StreamReset(StreamError):
    """The peer reset the stream (RESET_STREAM); ``code`` is its error code."""

    def __init__(self, message: str, stream_id: int = -1, code: int = 0) -> None:
        super().__init__(message, stream_id)
        self.args = (message, stream_id, code)
        self.code = code


class StreamClosed(StreamError):
    """The stream was used after it was closed (locally, or the peer's FIN was read)."""


class NotOwner(StreamError):
    """A stream operation came from a thread that does not own the stream.

    A user stream belongs to one owner, a thread or a
    :class:`~quicdist.Mailbox` (:meth:`quicdist.StreamRef.controlling_process`
    hands it over); only the owner may send, receive, close or reset it.
    """


class QuicDistTimeoutError(QuicDistError, TimeoutError):
    """A blocking call did not complete within its timeout.

    Attributes:
        bytes_written: for a write that timed out part-way, how many bytes
            were queued before it gave up (0 otherwise).
    """

    bytes_written: int = 0
