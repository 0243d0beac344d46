"""Shared helpers for tests that run quicdist nodes in-process on 127.0.0.1.

- ``tmp_certs``: a session-scoped fixture writing development certificates
  to a temporary directory: a CA and a node certificate it signs, plus a
  second, unrelated CA and a "stranger" certificate signed by it.
- :class:`DictDiscovery`: a discovery object backed by a dict that tests
  fill in once the nodes' ports are known (nodes listen on port 0).
- :func:`make_node`: a node on 127.0.0.1, port 0, no DNS, ``verify_peer``
  with the dev certificates, started unless ``start=False``.
- :func:`wait_until`: bounded polling, for the few states no event reports.
- :func:`tls_config` / :func:`dev_tls`: ``verify_peer`` TLS configurations
  from development certificates (for the carrier-level tests).

Import the fixture into a test module with
``from tests.node_fixtures import tmp_certs  # noqa: F401``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from quicdist import Mailbox, Node
from quicdist.certs import CertPaths, make_ca, make_node_cert
from quicdist.errors import DiscoveryError
from quicdist.tls import TLSConfig


__all__ = [
    "COOKIE",
    "HOST",
    "TIMEOUT",
    "DevCerts",
    "DictDiscovery",
    "dev_tls",
    "make_node",
    "quicdist_threads",
    "send_in_order",
    "tls_config",
    "tmp_certs",
    "wait_until",
]

#: Generous bound for anything that should happen "soon" (scaled on slow CI).
TIMEOUT = 10.0 * float(os.environ.get("QUICDIST_TESTS_TIMEOUT_FACTOR", "1"))
#: The cookie every test node gets unless told otherwise.
COOKIE = "quicdist-test-cookie"
HOST = "127.0.0.1"


@dataclass(frozen=True)
class DevCerts:
    """Development certificates in ``directory``.

    ``node`` is signed by ``ca``; ``stranger`` is signed by ``other_ca``,
    which the nodes made by :func:`make_node` do not trust.
    """

    directory: Path
    ca: CertPaths
    node: CertPaths
    other_ca: CertPaths
    stranger: CertPaths


@pytest.fixture(scope="session")
def tmp_certs(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    """A CA, a node certificate it signs, and a certificate of another CA."""
    directory = tmp_path_factory.mktemp("node-certs")
    ca = make_ca(directory)
    other_ca = make_ca(directory / "other", common_name="an unrelated CA")
    return DevCerts(
        directory=directory,
        ca=ca,
        node=make_node_cert(directory, "node@127.0.0.1", ca),
        other_ca=other_ca,
        stranger=make_node_cert(directory / "other", "stranger@127.0.0.1", other_ca),
    )


class DictDiscovery:
    """``lookup(node_name)`` from a dict filled in after the nodes started.

    Thread-safe; an unknown name raises DiscoveryError like any discovery
    method.
    """

    def __init__(self, table: dict[str, tuple[str, int]] | None = None) -> None:
        self._lock = threading.Lock()
        self.table: dict[str, tuple[str, int]] = dict(table or {})

    def add(self, node: Node | str, port: int | None = None, host: str = HOST) -> None:
        """Record a started node (its name and port), or ``name`` at ``port``."""
        if isinstance(node, Node):
            name, port = node.name, node.port
        else:
            name = node
        assert port is not None
        with self._lock:
            self.table[name] = (host, port)

    def remove(self, name: str) -> None:
        with self._lock:
            self.table.pop(name, None)

    def lookup(self, node_name: str) -> tuple[str, int]:
        with self._lock:
            entry = self.table.get(node_name)
        if entry is None:
            raise DiscoveryError(f"{node_name!r} is not in the test table", node=node_name)
        return entry


def make_node(tmp_certs: DevCerts, name: str, *, start: bool = True,
              stranger: bool = False, **kw: Any) -> Node:
    """A node named ``name`` on 127.0.0.1 (any free port), ``verify_peer``, no DNS.

    Every keyword argument of :class:`quicdist.Node` can be overridden.
    ``stranger=True`` gives it the certificate of the untrusted CA (it
    still trusts the usual CA). When ``kw`` holds a ``discovery`` that is a
    :class:`DictDiscovery`, the started node is added to it.

    The caller stops the node (in a ``finally`` or a fixture).
    """
    certs = tmp_certs.stranger if stranger else tmp_certs.node
    options: dict[str, Any] = {
        "cookie": COOKIE,
        "port": 0,
        "host": HOST,
        "certfile": str(certs.certfile),
        "keyfile": str(certs.keyfile),
        "cafile": str(tmp_certs.ca.certfile),
        "verify": "verify_peer",
        "dns": False,
        "connect_timeout": 5.0,
    }
    options.update(kw)
    node = Node(name, **options)
    if start:
        node.start()
        discovery = options.get("discovery")
        if isinstance(discovery, DictDiscovery):
            discovery.add(node)
    return node


def wait_until(predicate: Callable[[], Any], timeout: float = TIMEOUT,
               what: str = "the condition") -> Any:
    """Poll ``predicate`` every 10 ms until it is truthy; its value.

    Only for states that no event, message or join can report. Raises
    AssertionError after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        pause.wait(0.01)


def quicdist_threads() -> set[threading.Thread]:
    """The live threads quicdist started (their names start with ``quicdist``)."""
    return {t for t in threading.enumerate() if t.name.startswith("quicdist")}


def tls_config(cert: CertPaths, ca: CertPaths, verify: str = "verify_peer") -> TLSConfig:
    """``cert`` (and its key) presented, peers checked against ``ca``."""
    return TLSConfig(str(cert.certfile), str(cert.keyfile), str(ca.certfile), verify)


def dev_tls(directory: str | os.PathLike[str], *names: str) -> tuple[TLSConfig, ...]:
    """A new CA in ``directory`` and, for each node name, a certificate it signs."""
    ca = make_ca(directory)
    return tuple(tls_config(make_node_cert(directory, name, ca), ca) for name in names)


def send_in_order(sender: Mailbox, receiver: Mailbox, count: int) -> None:
    """``sender`` sends 0..count-1 to ``receiver`` from another thread; they
    arrive all and in order (each receive and the join bounded by TIMEOUT)."""
    def send_all() -> None:
        for i in range(count):
            sender.send(receiver.pid, i)

    thread = threading.Thread(target=send_all, daemon=True, name="test-sender")
    thread.start()
    try:
        got = [receiver.receive(TIMEOUT) for _ in range(count)]
    finally:
        thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert got == list(range(count))
