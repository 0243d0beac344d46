"""quicdist: a Python node of the Erlang distribution protocol, carried over QUIC."""

from __future__ import annotations

from . import errors
from ._accel import USING_EXTENSION
from .etf import decode, decode_from, encode
from .mailbox import Mailbox
from .node import Node
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


__version__ = "0.1.0"

__all__ = [
    "USING_EXTENSION",
    "Atom",
    "BitBinary",
    "ExportFun",
    "ImproperList",
    "LocalFun",
    "Mailbox",
    "Map",
    "Node",
    "Pid",
    "Port",
    "Reference",
    "__version__",
    "decode",
    "decode_from",
    "encode",
    "errors",
]
