"""The threaded layer: I/O threads, connections, the listener, outboxes."""

from __future__ import annotations

from .connection import Connection, connect
from .listener import Listener
from .outbox import FrameOutbox, StreamOutbox


__all__ = ["Connection", "FrameOutbox", "Listener", "StreamOutbox", "connect"]
