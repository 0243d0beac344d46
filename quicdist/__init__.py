"""quicdist: a Python node of the Erlang distribution protocol, carried over QUIC."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import errors
from ._accel import USING_EXTENSION
from .erpc import ErlangError, ErlangExit, ErlangThrow
from .etf import decode, decode_from, encode
from .terms import (
    Atom,
    BitBinary,
    ExportFun,
    ImproperList,
    LocalFun,
    Map,
    Pid,
    Port,
    Reference,
)


if TYPE_CHECKING:
    from .gen import GenServer
    from .mailbox import Mailbox
    from .node import Node
    from .streams import Acceptor, StreamRef

__version__ = "0.1.0"

# The node layer (threads, sockets) loads on first use, so that the codec and
# the sans-I/O cores (quicdist.handshake, quicdist.dist...) import without it.
_LAZY = {
    "Acceptor": "streams",
    "GenServer": "gen",
    "Mailbox": "mailbox",
    "Node": "node",
    "StreamRef": "streams",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'quicdist' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value

__all__ = [
    "USING_EXTENSION",
    "Acceptor",
    "Atom",
    "BitBinary",
    "ErlangError",
    "ErlangExit",
    "ErlangThrow",
    "ExportFun",
    "GenServer",
    "ImproperList",
    "LocalFun",
    "Mailbox",
    "Map",
    "Node",
    "Pid",
    "Port",
    "Reference",
    "StreamRef",
    "__version__",
    "decode",
    "decode_from",
    "encode",
    "errors",
]
