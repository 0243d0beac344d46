"""epmd, the Erlang Port Mapper Daemon: its protocol and a small blocking client.

Only the TCP carrier uses epmd (``Node(..., carrier="tcp")``); QUIC nodes
find each other without it (PROTOCOL.md §7). A TCP node registers its
listening port in the epmd of its own host and keeps that connection open
for as long as it runs (epmd forgets the name when the connection closes);
to dial ``alive@host`` a node asks the epmd on ``host`` for the port of
``alive``. This is OTP's ``erl_epmd`` behaviour; the message layouts are
those of OTP's "Distribution Protocol" page (erl_dist_protocol), all
integers big-endian, every request preceded by its 2-byte length::

    ALIVE2_REQ        'x' PortNo:2 NodeType:1 Protocol:1 HighestVersion:2
                          LowestVersion:2 Nlen:2 NodeName Elen:2 Extra
    ALIVE2_X_RESP     'v' Result:1 Creation:4      (epmd of OTP 23+)
    ALIVE2_RESP       'y' Result:1 Creation:2      (older epmd)
    PORT_PLEASE2_REQ  'z' NodeName
    PORT2_RESP        'w' Result:1, and when Result is 0: PortNo:2 NodeType:1
                          Protocol:1 HighestVersion:2 LowestVersion:2
                          Nlen:2 NodeName Elen:2 Extra
    NAMES_REQ         'n'  -> EpmdPortNo:4, then "name N at port P\\n" lines

Replies carry no length: epmd closes the connection after a PORT2_RESP or
a NAMES_RESP. The codec functions below are sans I/O (``encode_*`` return
the bytes to write, ``decode_*`` parse what was read and return None while
it is incomplete); :class:`EpmdClient` does the socket work, with a timeout
on every call.

The epmd port is ``ERL_EPMD_PORT`` from the environment when set (as for
``erl`` and ``epmd`` themselves), else 4369.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from .discovery import (
    ChainDiscovery,
    Discovery,
    StaticDiscovery,
    split_node_name,
    table_and_custom,
)
from .errors import (
    ConfigurationError,
    DiscoveryError,
    EpmdError,
    QuicDistTimeoutError,
)
from .sync.utils import Deadline


__all__ = [
    "ALIVE2_REQ",
    "ALIVE2_RESP",
    "ALIVE2_X_RESP",
    "DEFAULT_EPMD_PORT",
    "DIST_VERSION",
    "NAMES_REQ",
    "NODE_TYPE_HIDDEN",
    "NODE_TYPE_NORMAL",
    "PORT2_RESP",
    "PORT_PLEASE2_REQ",
    "PROTOCOL_TCP",
    "AliveResponse",
    "EpmdClient",
    "EpmdDiscovery",
    "EpmdRegistration",
    "NodeEntry",
    "decode_alive2_resp",
    "decode_names_resp",
    "decode_port2_resp",
    "encode_alive2_req",
    "encode_names_req",
    "encode_port_please2_req",
    "epmd_port",
    "tcp_discovery",
]

#: epmd's port unless ``ERL_EPMD_PORT`` says otherwise.
DEFAULT_EPMD_PORT = 4369

ALIVE2_REQ = ord("x")
ALIVE2_X_RESP = ord("v")
ALIVE2_RESP = ord("y")
PORT_PLEASE2_REQ = ord("z")
PORT2_RESP = ord("w")
NAMES_REQ = ord("n")

#: NodeType of an Erlang node (OTP registers every node, hidden or not, as 77).
NODE_TYPE_NORMAL = 77
#: NodeType of a hidden (C) node.
NODE_TYPE_HIDDEN = 72
#: Protocol 0: TCP/IPv4 (the only value epmd knows).
PROTOCOL_TCP = 0
#: The distribution version quicdist speaks (OTP 23+); registered as both
#: the highest and the lowest version.
DIST_VERSION = 6

#: epmd's limit on a node name (MAXSYMLEN).
_MAX_NAME_BYTES = 255
_IO_TIMEOUT = 5.0
#: A NAMES_RESP larger than this is not from epmd.
_MAX_NAMES_BYTES = 1 << 20

_T = TypeVar("_T")


def epmd_port(port: int | None = None) -> int:
    """``port`` if given, else ``ERL_EPMD_PORT`` from the environment, else 4369.

    Raises ConfigurationError for a value that is not a port number.
    """
    if port is None:
        text = os.environ.get("ERL_EPMD_PORT", "").strip()
        if not text:
            return DEFAULT_EPMD_PORT
        try:
            port = int(text)
        except ValueError:
            raise ConfigurationError(f"ERL_EPMD_PORT={text!r} is not a port number") from None
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigurationError(f"the epmd port must be in 1..65535, not {port!r}")
    return port


def _name_bytes(name: str) -> bytes:
    """The alive name as epmd stores it (validated: non-empty, no '@', <= 255 bytes)."""
    if not isinstance(name, str) or not name or "@" in name:
        raise ConfigurationError(
            f"an epmd name is the part of a node name before '@', not {name!r}")
    data = name.encode("utf-8")
    if len(data) > _MAX_NAME_BYTES or any(b < 0x21 for b in data):
        raise ConfigurationError(f"invalid epmd name {name!r}")
    return data


def _positive_timeout(timeout: object) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigurationError(f"timeout must be a positive number, not {timeout!r}")
    return float(timeout)


def _request(body: bytes) -> bytes:
    return struct.pack(">H", len(body)) + body


# ---------------------------------------------------------------------------
# Codec (sans I/O)


@dataclass(frozen=True)
class AliveResponse:
    """epmd's answer to ALIVE2_REQ: ``result`` 0 means registered.

    ``creation`` is 32 bits wide in an ALIVE2_X_RESP (``extended``), 16 in
    an ALIVE2_RESP.
    """

    result: int
    creation: int
    extended: bool


@dataclass(frozen=True)
class NodeEntry:
    """What epmd knows of a registered node (a PORT2_RESP with result 0)."""

    name: str
    port: int
    node_type: int
    protocol: int
    highest_version: int
    lowest_version: int
    extra: bytes = b""

    def speaks(self, version: int = DIST_VERSION) -> bool:
        """Whether the node accepts distribution ``version`` over TCP."""
        return (self.protocol == PROTOCOL_TCP
                and self.lowest_version <= version <= self.highest_version)


def encode_alive2_req(name: str, port: int, *, node_type: int = NODE_TYPE_NORMAL,
                      protocol: int = PROTOCOL_TCP, highest_version: int = DIST_VERSION,
                      lowest_version: int = DIST_VERSION, extra: bytes = b"") -> bytes:
    """ALIVE2_REQ registering ``name`` (the alive part) at ``port``, length included."""
    data = _name_bytes(name)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigurationError(f"port must be in 1..65535, not {port!r}")
    for what, value, limit in (("node_type", node_type, 0xFF), ("protocol", protocol, 0xFF),
                               ("highest_version", highest_version, 0xFFFF),
                               ("lowest_version", lowest_version, 0xFFFF)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
            raise ConfigurationError(f"{what} must be in 0..{limit}, not {value!r}")
    extra = bytes(extra)
    if len(extra) > 0xFFFF:
        raise ConfigurationError("extra is longer than 65535 bytes")
    body = (struct.pack(">BHBBHHH", ALIVE2_REQ, port, node_type, protocol, highest_version,
                        lowest_version, len(data))
            + data + struct.pack(">H", len(extra)) + extra)
    return _request(body)


def decode_alive2_resp(data: bytes) -> tuple[AliveResponse, int] | None:
    """Parse an ALIVE2_X_RESP or ALIVE2_RESP at the start of ``data``.

    Returns ``(response, bytes used)``, or None while ``data`` is too short.
    Raises EpmdError for anything else.
    """
    if not data:
        return None
    tag = data[0]
    if tag == ALIVE2_X_RESP:
        if len(data) < 6:
            return None
        result, creation = struct.unpack_from(">BI", data, 1)
        return AliveResponse(result, creation, True), 6
    if tag == ALIVE2_RESP:
        if len(data) < 4:
            return None
        result, creation = struct.unpack_from(">BH", data, 1)
        return AliveResponse(result, creation, False), 4
    raise EpmdError(f"epmd answered ALIVE2_REQ with {bytes(data[:16])!r}, "
                    "not an ALIVE2_X_RESP or ALIVE2_RESP")


def encode_port_please2_req(name: str) -> bytes:
    """PORT_PLEASE2_REQ asking for the port of ``name`` (the alive part), length included."""
    return _request(bytes([PORT_PLEASE2_REQ]) + _name_bytes(name))


def decode_port2_resp(data: bytes) -> tuple[NodeEntry | int, int] | None:
    """Parse a PORT2_RESP at the start of ``data``.

    Returns ``(entry, bytes used)`` when epmd knows the node, ``(result,
    bytes used)`` with epmd's non-zero result code when it does not, or None
    while ``data`` is too short. Raises EpmdError for anything else.
    """
    if len(data) < 2:
        return None
    if data[0] != PORT2_RESP:
        raise EpmdError(f"epmd answered PORT_PLEASE2_REQ with {bytes(data[:16])!r}, "
                        "not a PORT2_RESP")
    result = data[1]
    if result != 0:
        return result, 2
    if len(data) < 12:
        return None
    port, node_type, protocol, high, low, nlen = struct.unpack_from(">HBBHHH", data, 2)
    end = 12 + nlen
    if len(data) < end + 2:
        return None
    (elen,) = struct.unpack_from(">H", data, end)
    if len(data) < end + 2 + elen:
        return None
    try:
        name = bytes(data[12:end]).decode("utf-8")
    except UnicodeDecodeError:
        raise EpmdError("epmd sent a node name that is not UTF-8") from None
    extra = bytes(data[end + 2:end + 2 + elen])
    return NodeEntry(name, port, node_type, protocol, high, low, extra), end + 2 + elen


def encode_names_req() -> bytes:
    """NAMES_REQ, length included."""
    return _request(bytes([NAMES_REQ]))


def decode_names_resp(data: bytes) -> tuple[int, list[tuple[str, int]]]:
    """Parse a complete NAMES_RESP (everything epmd sent before closing).

    Returns epmd's port and the ``(name, port)`` of each registered node,
    in epmd's order. Lines that are not ``name N at port P`` are skipped,
    as OTP's ``erl_epmd`` does. Raises EpmdError if the port is missing.
    """
    if len(data) < 4:
        raise EpmdError("epmd closed before sending its NAMES_RESP")
    (port,) = struct.unpack_from(">I", data, 0)
    names: list[tuple[str, int]] = []
    for line in bytes(data[4:]).decode("utf-8", "replace").split("\n"):
        words = line.split(" ")
        if len(words) == 5 and words[0] == "name" and words[2:4] == ["at", "port"]:
            try:
                names.append((words[1], int(words[4])))
            except ValueError:
                continue
    return port, names


# ---------------------------------------------------------------------------
# Blocking client


class EpmdRegistration:
    """A name registered in epmd: registered while this object's connection is open.

    :meth:`close` (idempotent, any thread) closes the connection, and epmd
    forgets the name at once.
    """

    def __init__(self, sock: socket.socket, name: str, port: int, creation: int,
                 address: tuple[str, int]) -> None:
        self._sock: socket.socket | None = sock
        self._lock = threading.Lock()
        self.name = name
        self.port = port
        #: The creation epmd handed out (quicdist nodes use their own).
        self.creation = creation
        #: The epmd that holds the registration, ``(host, port)``.
        self.address = address

    @property
    def closed(self) -> bool:
        return self._sock is None

    def alive(self) -> bool:
        """Whether epmd still holds the connection (False once it closed it,
        e.g. because epmd was restarted: the name is then unregistered).

        Never blocks: a non-blocking peek at the socket.
        """
        with self._lock:
            sock = self._sock
            if sock is None:
                return False
            try:
                data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return True  # nothing to read: the connection is open
            except OSError:
                return False
            return bool(data)  # b"": epmd closed it

    def close(self) -> None:
        """Unregister: close the connection to epmd."""
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def __enter__(self) -> EpmdRegistration:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "registered"
        return f"<EpmdRegistration {self.name} port={self.port} {state}>"


class EpmdClient:
    """Talk to the epmd at ``host`` (default 127.0.0.1) on ``port``.

    ``port`` None means :func:`epmd_port` (``ERL_EPMD_PORT`` or 4369).
    Every call opens its own connection and is bounded by ``timeout``
    seconds (connect, write and read together).

    Errors: EpmdError (a DiscoveryError) when epmd cannot be reached,
    refuses, or does not speak its protocol; QuicDistTimeoutError (a
    TimeoutError) when it does not answer in time.
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None,
                 timeout: float = _IO_TIMEOUT) -> None:
        if not isinstance(host, str) or not host:
            raise ConfigurationError(f"epmd host must be a non-empty str, not {host!r}")
        self.timeout = _positive_timeout(timeout)
        self.host = host
        self.port = epmd_port(port)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def __repr__(self) -> str:
        return f"<EpmdClient {self.host}:{self.port}>"

    # ------------------------------------------------------------ requests

    def register(self, name: str, port: int, *, node_type: int = NODE_TYPE_NORMAL,
                 extra: bytes = b"") -> EpmdRegistration:
        """Register ``name`` (the alive part of a node name) as listening on ``port``.

        The returned registration holds the connection; the name stays
        registered until it is closed.

        Raises:
            EpmdError: epmd is unreachable, or refused (``result`` set: the
                name is most likely in use by another node).
            QuicDistTimeoutError: no answer within the timeout.
        """
        request = encode_alive2_req(name, port, node_type=node_type, extra=extra)
        deadline = Deadline(self.timeout)
        sock = self._open(deadline, name)
        try:
            self._send(sock, request, deadline, name)
            response, _ = self._reply(
                sock, deadline, name, decode_alive2_resp, "its ALIVE2 response",
                f"closed the connection without answering the registration of {name!r}")
            if response.result != 0:
                raise EpmdError(f"epmd at {self._where()} refused to register {name!r} "
                                f"(result {response.result}): the name is probably in use "
                                "by another node", name, response.result)
            sock.settimeout(None)
        except BaseException:
            sock.close()
            raise
        return EpmdRegistration(sock, name, port, response.creation, self.address)

    def port_please(self, name: str) -> NodeEntry:
        """What epmd knows of ``name`` (the alive part): its port, versions, type.

        Raises:
            EpmdError: epmd is unreachable, or does not know the name
                (``result`` set).
            QuicDistTimeoutError: no answer within the timeout.
        """
        request = encode_port_please2_req(name)
        deadline = Deadline(self.timeout)
        sock = self._open(deadline, name)
        with sock:
            self._send(sock, request, deadline, name)
            entry, _ = self._reply(
                sock, deadline, name, decode_port2_resp, "its PORT2 response",
                f"closed the connection in the middle of its answer about {name!r}")
        if isinstance(entry, int):
            raise EpmdError(f"no node named {name!r} is registered in epmd at "
                            f"{self._where()} (result {entry})", name, entry)
        return entry

    def names(self) -> list[tuple[str, int]]:
        """The ``(name, port)`` of every node registered in this epmd."""
        deadline = Deadline(self.timeout)
        sock = self._open(deadline, "")
        with sock:
            self._send(sock, encode_names_req(), deadline, "")
            buf = b""
            while True:
                chunk = self._recv(sock, deadline, "", "its NAMES response")
                if not chunk:
                    break
                buf += chunk
                if len(buf) > _MAX_NAMES_BYTES:
                    raise EpmdError(f"the NAMES response of {self._where()} is too long")
        _, names = decode_names_resp(buf)
        return names

    # ------------------------------------------------------------- plumbing

    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    def _open(self, deadline: Deadline, name: str) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=deadline.timeout())
        except TimeoutError:
            raise QuicDistTimeoutError(
                f"timed out connecting to epmd at {self._where()}") from None
        except ConnectionRefusedError:
            raise EpmdError(f"epmd is not running at {self._where()} (connection refused; "
                            "start it with `epmd -daemon`)", name) from None
        except OSError as exc:
            raise EpmdError(f"cannot reach epmd at {self._where()}: {exc}", name) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _send(self, sock: socket.socket, data: bytes, deadline: Deadline, name: str) -> None:
        try:
            sock.settimeout(deadline.timeout())
            sock.sendall(data)
        except TimeoutError:
            raise QuicDistTimeoutError(f"timed out writing to epmd at {self._where()}") from None
        except OSError as exc:
            raise EpmdError(f"writing to epmd at {self._where()} failed: {exc}", name) from exc

    def _reply(self, sock: socket.socket, deadline: Deadline, name: str,
               decode: Callable[[bytes], tuple[_T, int] | None], what: str,
               closed: str) -> tuple[_T, int]:
        """Read until ``decode`` parses a whole reply; ``closed`` ends the EpmdError
        raised if epmd closes the connection before that."""
        buf = b""
        while True:
            parsed = decode(buf)
            if parsed is not None:
                return parsed
            chunk = self._recv(sock, deadline, name, what)
            if not chunk:
                raise EpmdError(f"epmd at {self._where()} {closed}", name)
            buf += chunk

    def _recv(self, sock: socket.socket, deadline: Deadline, name: str, what: str) -> bytes:
        timeout = deadline.timeout()
        if timeout == 0.0:
            raise QuicDistTimeoutError(
                f"epmd at {self._where()} did not send {what} within {self.timeout:g} s")
        try:
            sock.settimeout(timeout)
            return sock.recv(4096)
        except TimeoutError:
            raise QuicDistTimeoutError(
                f"epmd at {self._where()} did not send {what} within {self.timeout:g} s"
            ) from None
        except OSError as exc:
            raise EpmdError(f"reading from epmd at {self._where()} failed: {exc}",
                            name) from exc


# ---------------------------------------------------------------------------
# Discovery


class EpmdDiscovery:
    """Discovery for the TCP carrier: ask the epmd on the node's host.

    ``lookup("alive@host")`` sends PORT_PLEASE2_REQ for ``alive`` to the
    epmd at ``host`` and returns ``(host, port)``. A node that does not
    speak distribution version 6 over TCP is refused (EpmdError).
    """

    label = "epmd"

    def __init__(self, port: int | None = None, timeout: float = _IO_TIMEOUT) -> None:
        self.port = epmd_port(port)
        self.timeout = _positive_timeout(timeout)

    def lookup(self, node_name: str) -> tuple[str, int]:
        alive, host = split_node_name(node_name)
        try:
            entry = EpmdClient(host, self.port, self.timeout).port_please(alive)
        except QuicDistTimeoutError as exc:
            raise EpmdError(str(exc), node_name) from exc
        except ConfigurationError as exc:
            raise DiscoveryError(f"{node_name!r}: {exc}", node_name) from None
        except EpmdError as exc:
            raise EpmdError(exc.message, node_name, exc.result) from exc.__cause__
        if not entry.speaks(DIST_VERSION):
            raise EpmdError(
                f"{node_name} is registered in epmd with protocol {entry.protocol}, "
                f"distribution versions {entry.lowest_version}..{entry.highest_version}; "
                f"quicdist speaks version {DIST_VERSION} over TCP", node_name)
        return host, entry.port


def tcp_discovery(nodes: Mapping[str, tuple[str, int]] | None = None,
                  discovery: Discovery | None = None, *, epmd: bool = True,
                  epmd_port: int | None = None, epmd_timeout: float = _IO_TIMEOUT
                  ) -> Discovery:
    """The discovery chain of a TCP node: the static table, the custom object, epmd.

    A static entry gives the TCP ``(host, port)`` directly (epmd is not
    asked). Without epmd (``epmd=False``) only the table and the custom
    object are tried.
    """
    methods = table_and_custom(nodes, discovery)
    if epmd:
        methods.append(EpmdDiscovery(epmd_port, epmd_timeout))
    if not methods:
        methods.append(StaticDiscovery({}))
    return ChainDiscovery(*methods)
