"""Node discovery: from a node name such as ``"alice@host"`` to a QUIC address.

The node asks a :class:`Discovery` object for the ``(host, port)`` of a node
name (PROTOCOL.md §7). :func:`default_discovery` builds the chain the node
uses; the methods are tried in this order and the first answer wins:

1. the static table (``nodes=``), when given: an exact node-name match;
2. the custom discovery object (``discovery=``), when given: any object with
   a ``lookup(node_name) -> (host, port)`` method;
3. DNS SRV (unless ``dns=False``): the ``_erlang-dist._quic.<domain>``
   records, ``<domain>`` being the host part of the node name; the record
   with the lowest priority wins, then the highest weight (a deterministic
   reading of RFC 2782); the target's trailing dot is stripped;
4. the fallback: the host part of the node name itself, if it resolves, on
   port 4433.

Every failure is a :class:`~quicdist.errors.DiscoveryError` whose message says
why; when the chain fails, its message lists why each method failed, and its
``__cause__`` is an :class:`ExceptionGroup` of the individual errors. A
method that raises anything other than ``DiscoveryError`` (a custom object
raising ``KeyError``, say) is reported as a ``DiscoveryError`` chained to the
original exception; ``KeyboardInterrupt``, ``SystemExit`` and other
non-``Exception`` exceptions pass through untouched.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
from dns.rdtypes.IN.SRV import SRV

from .errors import ConfigurationError, DiscoveryError


__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_SERVICE",
    "ChainDiscovery",
    "Discovery",
    "DnsSrvDiscovery",
    "HostDiscovery",
    "StaticDiscovery",
    "default_discovery",
    "split_node_name",
    "table_and_custom",
]

#: The port of the host fallback (and of quicdist's listener by default).
DEFAULT_PORT = 4433
#: The SRV service and protocol labels prepended to the node's domain.
DEFAULT_SERVICE = "_erlang-dist._quic"


@runtime_checkable
class Discovery(Protocol):
    """Anything that maps a node name to the ``(host, port)`` to dial.

    ``lookup`` raises :class:`~quicdist.errors.DiscoveryError` when it
    cannot find the node.
    """

    def lookup(self, node_name: str) -> tuple[str, int]: ...


def split_node_name(name: str) -> tuple[str, str]:
    """Split ``"alive@host"`` into ``("alive", "host")``.

    Raises DiscoveryError unless the name holds exactly one ``@`` with
    something on each side.
    """
    if not isinstance(name, str):
        raise DiscoveryError(f"node name must be a str, not {type(name).__name__}")
    if name.count("@") != 1:
        raise DiscoveryError(f"malformed node name {name!r}: expected exactly one '@'",
                             node=name)
    alive, host = name.split("@")
    if not alive or not host:
        raise DiscoveryError(
            f"malformed node name {name!r}: empty {'name' if not alive else 'host'} part",
            node=name)
    return alive, host


def _check_port(port: object, what: str) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigurationError(f"{what}: port must be an int in 1..65535, not {port!r}")
    return port


def _check_host(host: object, what: str) -> str:
    if not isinstance(host, str) or not host:
        raise ConfigurationError(f"{what}: host must be a non-empty str, not {host!r}")
    if any(c.isspace() or not c.isprintable() for c in host) or "@" in host:
        raise ConfigurationError(f"{what}: invalid host {host!r}")
    return host


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class StaticDiscovery:
    """A fixed table: node name -> ``(host, port)``.

    Entries are validated when added (ConfigurationError for a malformed node
    name, an empty or invalid host, a port outside 1..65535). ``add``,
    ``remove`` and ``lookup`` may be called from any thread.
    """

    label = "static table"

    def __init__(self, table: Mapping[str, tuple[str, int]] | None = None) -> None:
        self._lock = threading.Lock()
        self._table: dict[str, tuple[str, int]] = {}
        if table is None:
            return
        if not isinstance(table, Mapping):
            raise ConfigurationError(
                f"static discovery table must be a mapping, not {type(table).__name__}")
        for name, entry in table.items():
            if not isinstance(entry, tuple | list) or len(entry) != 2:
                raise ConfigurationError(
                    f"static discovery entry {name!r}: expected (host, port), got {entry!r}")
            self._table[self._check_name(name)] = self._check_entry(name, entry[0], entry[1])

    @staticmethod
    def _check_name(name: object) -> str:
        if not isinstance(name, str):
            raise ConfigurationError(f"static discovery: node name must be a str, not {name!r}")
        try:
            split_node_name(name)
        except DiscoveryError as exc:
            raise ConfigurationError(f"static discovery: {exc.message}") from None
        return name

    @staticmethod
    def _check_entry(name: str, host: object, port: object) -> tuple[str, int]:
        what = f"static discovery entry {name!r}"
        return _check_host(host, what), _check_port(port, what)

    def add(self, name: str, host: str, port: int) -> None:
        """Add or replace the address of ``name``."""
        entry = self._check_entry(self._check_name(name), host, port)
        with self._lock:
            self._table[name] = entry

    def remove(self, name: str) -> None:
        """Forget ``name`` (no error if it is not in the table)."""
        with self._lock:
            self._table.pop(name, None)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._table

    def __len__(self) -> int:
        with self._lock:
            return len(self._table)

    def lookup(self, node_name: str) -> tuple[str, int]:
        split_node_name(node_name)
        with self._lock:
            entry = self._table.get(node_name)
        if entry is None:
            raise DiscoveryError(f"node {node_name!r} is not in the static table",
                                 node=node_name)
        return entry


class DnsSrvDiscovery:
    """DNS SRV lookup of ``<service>.<domain>`` (``_erlang-dist._quic.example.com``).

    ``nameservers`` (IP addresses) replaces the system's resolver
    configuration; with ``None`` the system's (``/etc/resolv.conf``) is used.
    ``port`` is the nameservers' port; ``timeout`` bounds a whole lookup,
    retries included. Answers are cached for their TTL unless ``cache`` is
    false.

    Of the SRV records, the one with the lowest priority wins, then the one
    with the highest weight (then the smallest target name and port, so the
    choice is deterministic); records with the target ``"."`` (service not
    available) or port 0 are skipped. Node names whose host part is an IP
    address or ``localhost`` are not looked up (DiscoveryError at once).
    """

    label = "DNS SRV"

    def __init__(self, *, nameservers: list[str] | None = None, port: int = 53,
                 timeout: float = 2.0, service: str = DEFAULT_SERVICE,
                 cache: bool = True) -> None:
        _check_port(port, "DNS SRV discovery")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise ConfigurationError(
                f"DNS SRV discovery: timeout must be a positive number, not {timeout!r}")
        if not isinstance(service, str) or not service or service.endswith("."):
            raise ConfigurationError(f"DNS SRV discovery: invalid service {service!r}")
        if nameservers is not None and (isinstance(nameservers, str) or not nameservers):
            raise ConfigurationError(
                "DNS SRV discovery: nameservers must be a non-empty list of addresses, "
                f"not {nameservers!r}")
        self.service = service
        self.timeout = float(timeout)
        self._config_error: str | None = None
        try:
            resolver = dns.resolver.Resolver(configure=nameservers is None)
        except dns.exception.DNSException as exc:
            # No usable /etc/resolv.conf: every lookup fails with this reason.
            self._config_error = f"no DNS resolver configuration ({exc})"
            resolver = dns.resolver.Resolver(configure=False)
        if nameservers is not None:
            try:
                resolver.nameservers = list(nameservers)
            except (ValueError, TypeError) as exc:
                raise ConfigurationError(
                    f"DNS SRV discovery: invalid nameservers {nameservers!r}: {exc}") from None
        resolver.port = port
        resolver.timeout = self.timeout
        resolver.lifetime = self.timeout
        if cache:
            resolver.cache = dns.resolver.Cache()
        self._resolver = resolver

    def query_name(self, node_name: str) -> str:
        """The SRV owner name queried for ``node_name``."""
        return f"{self.service}.{split_node_name(node_name)[1].rstrip('.')}"

    def lookup(self, node_name: str) -> tuple[str, int]:
        _, host = split_node_name(node_name)
        qname = self.query_name(node_name)
        if _is_ip_literal(host):
            raise DiscoveryError(f"no SRV lookup for {node_name!r}: its host is an IP address",
                                 node=node_name)
        if host.rstrip(".").lower() == "localhost" or host.rstrip(".").lower().endswith(
                ".localhost"):
            raise DiscoveryError(f"no SRV lookup for {node_name!r}: its host is localhost",
                                 node=node_name)
        if self._config_error is not None:
            raise DiscoveryError(f"SRV {qname}: {self._config_error}", node=node_name)
        try:
            name = dns.name.from_text(qname)
            answer = self._resolver.resolve(name, dns.rdatatype.SRV, search=False)
            records = [r for r in answer if isinstance(r, SRV)]
        except dns.resolver.NXDOMAIN:
            raise DiscoveryError(f"SRV {qname}: no such domain (NXDOMAIN)",
                                 node=node_name) from None
        except dns.resolver.NoAnswer:
            raise DiscoveryError(f"SRV {qname}: no SRV records", node=node_name) from None
        except dns.exception.Timeout:
            raise DiscoveryError(f"SRV {qname}: timed out after {self.timeout:g} s",
                                 node=node_name) from None
        except dns.resolver.NoNameservers as exc:
            raise DiscoveryError(f"SRV {qname}: no nameserver answered ({exc})",
                                 node=node_name) from None
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            raise DiscoveryError(f"SRV {qname}: {type(exc).__name__}: {exc}",
                                 node=node_name) from exc
        return self._choose(node_name, qname, records)

    @staticmethod
    def _choose(node_name: str, qname: str, records: Iterable[SRV]) -> tuple[str, int]:
        usable = [(r.priority, -r.weight, r.target.to_text(omit_final_dot=True), r.port)
                  for r in records if r.target != dns.name.root and r.port != 0]
        if not usable:
            raise DiscoveryError(f"SRV {qname}: the service is not available there",
                                 node=node_name)
        _, _, target, port = min(usable)
        return target, port


class HostDiscovery:
    """The fallback: the host part of the node name, on a fixed port.

    The host must resolve (``socket.getaddrinfo``), else DiscoveryError.
    """

    label = "host"

    def __init__(self, port: int = DEFAULT_PORT) -> None:
        self.port = _check_port(port, "host discovery")

    def lookup(self, node_name: str) -> tuple[str, int]:
        _, host = split_node_name(node_name)
        try:
            socket.getaddrinfo(host, self.port, type=socket.SOCK_DGRAM)
        except (OSError, UnicodeError, ValueError) as exc:
            raise DiscoveryError(f"host {host!r} does not resolve ({exc})",
                                 node=node_name) from None
        return host, self.port


def _label(method: object) -> str:
    label = getattr(type(method), "label", None)
    return label if isinstance(label, str) else type(method).__name__


class ChainDiscovery:
    """Try each method in turn; the first one that answers wins.

    A method's DiscoveryError moves on to the next; any other ``Exception``
    (and a malformed answer) is turned into a DiscoveryError chained to it
    and moves on too. When every method failed, the DiscoveryError lists why
    each one did; its ``__cause__`` is an ExceptionGroup of those errors.
    """

    label = "chain"

    def __init__(self, *methods: Discovery) -> None:
        if not methods:
            raise ConfigurationError("ChainDiscovery needs at least one method")
        for method in methods:
            if not callable(getattr(method, "lookup", None)):
                raise ConfigurationError(
                    f"discovery method {method!r} has no lookup(node_name) method")
        self._methods = tuple(methods)

    @property
    def methods(self) -> tuple[Discovery, ...]:
        return self._methods

    @staticmethod
    def _call(method: Discovery, node_name: str) -> tuple[str, int]:
        try:
            result = method.lookup(node_name)
        except DiscoveryError:
            raise
        except Exception as exc:
            raise DiscoveryError(f"{type(exc).__name__}: {exc}", node=node_name) from exc
        if (not isinstance(result, tuple) or len(result) != 2
                or not isinstance(result[0], str) or not result[0]
                or isinstance(result[1], bool) or not isinstance(result[1], int)
                or not 0 < result[1] < 65536):
            raise DiscoveryError(f"returned an invalid address {result!r}", node=node_name)
        return result

    def lookup(self, node_name: str) -> tuple[str, int]:
        split_node_name(node_name)
        failures: list[DiscoveryError] = []
        for method in self._methods:
            try:
                return self._call(method, node_name)
            except DiscoveryError as exc:
                failures.append(exc)
        reasons = "; ".join(f"{_label(m)}: {e.message}" for m, e in zip(self._methods, failures,
                                                                          strict=True))
        raise DiscoveryError(f"cannot find node {node_name!r}: {reasons}",
                             node=node_name) from ExceptionGroup("discovery failures", failures)


def table_and_custom(nodes: Mapping[str, tuple[str, int]] | None,
                     discovery: Discovery | None) -> list[Discovery]:
    """The first methods of every carrier's chain: the static table, then a
    custom object (checked to have ``lookup``), each if given."""
    methods: list[Discovery] = []
    if nodes is not None:
        methods.append(StaticDiscovery(nodes))
    if discovery is not None:
        if not callable(getattr(discovery, "lookup", None)):
            raise ConfigurationError(
                f"discovery object {discovery!r} has no lookup(node_name) method")
        methods.append(discovery)
    return methods


def default_discovery(nodes: Mapping[str, tuple[str, int]] | None = None,
                      discovery: Discovery | None = None, *, dns: bool = True) -> Discovery:
    """The discovery chain a node uses (see the module docstring for the order).

    Args:
        nodes: a static table, node name -> (host, port), tried first.
        discovery: a custom object with ``lookup(node_name)``, tried next;
            exceptions other than DiscoveryError it raises are wrapped in one.
        dns: whether to look up DNS SRV records (with the system resolver).
    """
    methods = table_and_custom(nodes, discovery)
    if dns:
        methods.append(DnsSrvDiscovery())
    methods.append(HostDiscovery(DEFAULT_PORT))
    return ChainDiscovery(*methods)
