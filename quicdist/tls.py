"""TLS for the QUIC carrier: mutual certificate checks on top of aioquic.

The distribution carrier runs TLS 1.3 inside QUIC (RFC 9001) with the ALPN
``erlang-dist``, and **both** sides present a certificate: the node that
dials as well as the node that listens (PROTOCOL.md §1). aioquic on its own
never asks a client for a certificate and only verifies the server, so this
module adds the missing half without forking or vendoring aioquic:

- :class:`TLSConfig` names the node's certificate, key and CA, checks them
  once and keeps the loaded objects;
- :func:`quic_configuration` turns it into an aioquic ``QuicConfiguration``;
- :class:`MutualTLSConnection` is a ``QuicConnection`` whose TLS context
  always asks the client for a certificate and, with ``verify_peer``,
  verifies the peer's chain and validity dates in both directions, sending
  the matching TLS alert when it refuses one;
- :func:`closed_error` and :func:`connection_closed_error` turn a QUIC
  CONNECTION_CLOSE into the typed :class:`~quicdist.errors.ConnectionClosed`
  tree, on the side that raised a TLS alert as well as on the side that
  received it.

Node identity is **not** taken from the certificate: neither side checks a
host name (the client sends no ``server_name`` of its own, and a given one is
never compared with the certificate). A certificate only proves "signed by
our CA"; which node is on the other end is established by the distribution
handshake on stream 0, as in Erlang's own TLS distribution.

How this hooks into aioquic (1.7.x), and which private names it relies on —
they are why ``aioquic`` is pinned to ``>=1.7.2,<1.8`` and are checked at
import time so a renamed one fails loudly instead of skipping a check:

- ``QuicConnection._initialize`` (overridden: after aioquic built its
  ``tls.Context``, the context's class is swapped for a subclass) and
  ``QuicConnection._close_begin`` (overridden: records which side closed);
- ``QuicConnection._close_event``, ``_close_pending`` and ``_state``, read by
  :func:`connection_closed_error`;
- ``tls.Context._server_handle_certificate``,
  ``_server_handle_certificate_verify`` and
  ``_client_handle_certificate_verify`` (extended by the subclass), and its
  attributes ``_request_client_certificate``, ``_verify_mode``,
  ``_peer_certificate`` and ``_peer_certificate_chain``.

An alert raised inside the TLS context becomes, in aioquic's
``_handle_crypto_frame``, a ``QuicConnectionError`` with error code
``0x100 + alert`` and the alert's text as reason phrase; aioquic then closes
the connection with it, and the peer receives the same code and phrase.
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from aioquic import tls
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from aioquic.quic.events import ConnectionTerminated
from aioquic.quic.packet import QuicErrorCode
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from OpenSSL import crypto

from .errors import (
    CertificateError,
    ConfigurationError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    TLSHandshakeError,
)


if TYPE_CHECKING:  # annotations only; aioquic.buffer does not re-export it for mypy
    from aioquic._buffer import Buffer


__all__ = [
    "ALPN",
    "CERTIFICATE_ALERTS",
    "CRYPTO_ERROR",
    "MutualTLSConnection",
    "TLSConfig",
    "VerifyMode",
    "closed_error",
    "connection_closed_error",
    "quic_configuration",
    "verify_certificate_chain",
]

#: The only ALPN protocol the carrier offers and accepts.
ALPN: Final = "erlang-dist"

#: QUIC transport error code of a TLS alert ``x`` is ``CRYPTO_ERROR + x`` (RFC 9001 §4.8).
CRYPTO_ERROR: Final = int(QuicErrorCode.CRYPTO_ERROR)

#: TLS alerts that mean "your certificate was refused" (:class:`CertificateError`).
CERTIFICATE_ALERTS: Final = frozenset({
    tls.AlertDescription.bad_certificate,          # 42
    tls.AlertDescription.unsupported_certificate,  # 43
    tls.AlertDescription.certificate_revoked,      # 44
    tls.AlertDescription.certificate_expired,      # 45
    tls.AlertDescription.certificate_unknown,      # 46
    tls.AlertDescription.unknown_ca,               # 48
    tls.AlertDescription.access_denied,            # 49
    tls.AlertDescription.certificate_required,     # 116
})

VerifyMode = Literal["verify_none", "verify_peer"]
_VERIFY_MODES: Final = ("verify_none", "verify_peer")


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------

def _read(what: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read {what} {path!r}: {exc.strerror or exc}") from exc


def _load_certificates(what: str, path: str) -> list[x509.Certificate]:
    data = _read(what, path)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ConfigurationError(f"{what} {path!r} holds no valid PEM certificate") from exc
    if not certificates:  # pragma: no cover - cryptography raises on empty input
        raise ConfigurationError(f"{what} {path!r} holds no PEM certificate")
    return certificates


def _public_der(key: Any) -> bytes:
    der: bytes = key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


def _load_private_key(path: str) -> CertificateIssuerPrivateKeyTypes:
    data = _read("keyfile", path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:
        raise ConfigurationError(
            f"keyfile {path!r} is encrypted; quicdist needs an unencrypted key") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigurationError(f"keyfile {path!r} holds no valid PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
                      | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        raise ConfigurationError(
            f"keyfile {path!r}: a {type(key).__name__} cannot sign a TLS 1.3 handshake "
            "(use an EC, RSA, Ed25519 or Ed448 key)")
    return key


@dataclass(frozen=True)
class TLSConfig:
    """The node's certificate, private key and trusted CA, checked once.

    Both TLS roles use the same certificate: every node dials and listens.

    Args:
        certfile: PEM file with the node's certificate, optionally followed
            by intermediate CA certificates (sent to the peer as the chain).
        keyfile: PEM file with the certificate's private key (unencrypted).
        cafile: PEM file with the CA certificate(s) the peers' certificates
            must chain to. Required by ``verify_peer``.
        verify: ``"verify_peer"`` verifies the peer's certificate chain and
            validity dates in both directions (the listener refuses a dialer
            without a certificate); ``"verify_none"`` accepts any certificate
            (both sides still present one; upstream ``quic_dist`` 1.3.0 does
            this). No host name is checked in either mode: node identity
            comes from the distribution handshake.

    Raises:
        ConfigurationError: unknown ``verify`` value, ``verify_peer`` without
            ``cafile``, a missing or unreadable file, a file that is not PEM,
            an encrypted key, or a key that does not match the certificate.

    The files are read in ``__post_init__`` and never again; the loaded
    objects are kept in :attr:`certificate`, :attr:`certificate_chain`,
    :attr:`private_key`, :attr:`ca_certificates` and :attr:`cadata`, and are
    shared (read-only) by every connection made from this configuration.
    Paths may be given as ``os.PathLike``; they are stored as ``str``.
    """

    certfile: str
    keyfile: str
    cafile: str | None = None
    verify: VerifyMode = "verify_none"

    certificate: x509.Certificate = field(init=False, repr=False, compare=False)
    certificate_chain: tuple[x509.Certificate, ...] = field(
        init=False, repr=False, compare=False)
    private_key: CertificateIssuerPrivateKeyTypes = field(init=False, repr=False, compare=False)
    ca_certificates: tuple[x509.Certificate, ...] = field(init=False, repr=False, compare=False)
    #: The CA certificates as PEM bytes (what aioquic's ``cadata`` expects), or None.
    cadata: bytes | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.verify not in _VERIFY_MODES:
            raise ConfigurationError(
                f"verify must be 'verify_none' or 'verify_peer', not {self.verify!r}")
        for name in ("certfile", "keyfile", "cafile"):
            value = getattr(self, name)
            if value is None and name == "cafile":
                continue
            if not isinstance(value, str | os.PathLike):
                raise ConfigurationError(
                    f"{name} must be a path, not {type(value).__name__}")
            object.__setattr__(self, name, os.fspath(value))
        if self.verify == "verify_peer" and self.cafile is None:
            raise ConfigurationError(
                "verify_peer needs a cafile: the CA certificate(s) that sign the peers' "
                "certificates")

        certificates = _load_certificates("certfile", self.certfile)
        key = _load_private_key(self.keyfile)
        if _public_der(certificates[0].public_key()) != _public_der(key.public_key()):
            raise ConfigurationError(
                f"keyfile {self.keyfile!r} does not match the certificate in "
                f"certfile {self.certfile!r}")
        set_ = functools.partial(object.__setattr__, self)
        set_("certificate", certificates[0])
        set_("certificate_chain", tuple(certificates[1:]))
        set_("private_key", key)
        if self.cafile is None:
            set_("ca_certificates", ())
            set_("cadata", None)
        else:
            cas = _load_certificates("cafile", self.cafile)
            set_("ca_certificates", tuple(cas))
            set_("cadata", b"".join(c.public_bytes(serialization.Encoding.PEM) for c in cas))

    @property
    def verify_peer(self) -> bool:
        """True when the peer's certificate is verified (``verify == "verify_peer"``)."""
        return self.verify == "verify_peer"


#: QuicConfiguration fields that quic_configuration() owns.
_OWNED_FIELDS: Final = frozenset({
    "alpn_protocols", "is_client", "verify_mode", "cadata", "cafile", "capath",
    "certificate", "certificate_chain", "private_key", "idle_timeout", "max_datagram_size",
})
#: Session resumption skips the certificate exchange, so it is refused.
_RESUMPTION_FIELDS: Final = frozenset({"session_ticket"})


def quic_configuration(
    tls_config: TLSConfig,
    *,
    is_client: bool,
    idle_timeout: float = 300.0,
    max_datagram_size: int = 1452,
    **extra: Any,
) -> QuicConfiguration:
    """An aioquic configuration for one side of a carrier connection.

    - ALPN is ``["erlang-dist"]`` and nothing else;
    - the certificate, its chain and key are loaded for both roles (the
      dialer presents a certificate too);
    - ``verify_mode`` is ``CERT_REQUIRED`` with ``verify_peer`` and
      ``CERT_NONE`` otherwise, and the CA certificates go in ``cadata``.
      :class:`MutualTLSConnection` reads both, for either role;
    - no host name is checked: ``server_name`` stays None unless given in
      ``extra``, and even then it is only sent as SNI, never compared with
      the server's certificate. The peer's node name is authenticated by the
      distribution handshake, not by the certificate.

    Use the result with :class:`MutualTLSConnection`: a plain aioquic
    ``QuicConnection`` would neither request nor verify a client certificate.

    Args:
        tls_config: the node's certificates.
        is_client: True for the dialing side.
        idle_timeout: QUIC idle timeout in seconds (upstream default 300).
        max_datagram_size: largest UDP payload (upstream uses 1452).
        **extra: other ``QuicConfiguration`` fields (``max_data``,
            ``max_stream_data``, ``quic_logger``, ``server_name``, ...).

    Raises:
        ConfigurationError: a bad ``idle_timeout`` or ``max_datagram_size``,
            or ``extra`` naming a field this function owns (ALPN, roles,
            certificates, verification) or a session ticket.
    """
    clash = sorted((_OWNED_FIELDS | _RESUMPTION_FIELDS) & extra.keys())
    if clash:
        raise ConfigurationError(
            f"quic_configuration() sets {', '.join(clash)} itself "
            "(session resumption is not supported: it would skip the certificate checks)")
    if not idle_timeout > 0:
        raise ConfigurationError(f"idle_timeout must be > 0 seconds, not {idle_timeout!r}")
    if max_datagram_size < SMALLEST_MAX_DATAGRAM_SIZE:
        raise ConfigurationError(
            f"max_datagram_size must be at least {SMALLEST_MAX_DATAGRAM_SIZE}, "
            f"not {max_datagram_size!r}")
    try:
        configuration = QuicConfiguration(
            alpn_protocols=[ALPN],
            is_client=is_client,
            idle_timeout=idle_timeout,
            max_datagram_size=max_datagram_size,
            verify_mode=ssl.CERT_REQUIRED if tls_config.verify_peer else ssl.CERT_NONE,
            cadata=tls_config.cadata,
            **extra,
        )
    except TypeError as exc:
        raise ConfigurationError(f"not a QuicConfiguration field: {exc}") from exc
    configuration.certificate = tls_config.certificate
    configuration.certificate_chain = list(tls_config.certificate_chain)
    configuration.private_key = tls_config.private_key
    return configuration


# --------------------------------------------------------------------------
# Certificate verification
# --------------------------------------------------------------------------

def _alert(description: tls.AlertDescription, message: str) -> tls.Alert:
    """A ``tls.Alert`` carrying ``description``, for aioquic to send.

    aioquic only reads ``.description`` (and ``str()``) of the alert it
    catches. It has subclasses for some descriptions and none for others
    (unknown_ca, certificate_required, ...); for those the description is
    set on the instance rather than defining new exception classes: these
    never leave aioquic's handshake code, the user sees the typed
    :class:`~quicdist.errors.CertificateError` built from the close.
    """
    cls = _ALERT_CLASSES.get(description)
    if cls is not None:
        return cls(message)
    alert = tls.Alert(message)
    alert.description = description
    return alert


_ALERT_CLASSES: Final[dict[tls.AlertDescription, type[tls.Alert]]] = {
    cls.description: cls
    for cls in (tls.AlertBadCertificate, tls.AlertCertificateExpired,
                tls.AlertHandshakeFailure, tls.AlertInternalError,
                tls.AlertNoApplicationProtocol, tls.AlertUnsupportedCertificate)
}

# OpenSSL X509_V_ERR_* codes -> TLS alert, after OpenSSL's own
# ssl_verify_alarm_type(), except that "not yet valid" is certificate_expired
# (RFC 8446 §6.2: "expired or is not currently valid"), as aioquic does.
_A = tls.AlertDescription
_VERIFY_ERROR_ALERTS: Final[dict[int, tls.AlertDescription]] = {
    2: _A.unknown_ca,                # unable to get issuer certificate
    9: _A.certificate_expired,       # certificate is not yet valid
    10: _A.certificate_expired,      # certificate has expired
    12: _A.certificate_expired,      # CRL has expired
    18: _A.unknown_ca,               # self-signed certificate
    19: _A.unknown_ca,               # self-signed certificate in chain
    20: _A.unknown_ca,               # unable to get local issuer certificate
    21: _A.unknown_ca,               # unable to verify the first certificate
    22: _A.unknown_ca,               # certificate chain too long
    23: _A.certificate_revoked,      # certificate revoked
    24: _A.unknown_ca,               # invalid CA certificate
    25: _A.unknown_ca,               # path length constraint exceeded
    26: _A.unsupported_certificate,  # unsupported certificate purpose
    27: _A.bad_certificate,          # certificate not trusted
    28: _A.bad_certificate,          # certificate rejected
}
del _A


@functools.lru_cache(maxsize=32)
def _trust_store(cadata: bytes) -> crypto.X509Store:
    # Built once per distinct CA bundle and shared: an X509_STORE is only
    # read while verifying (OpenSSL locks it), and nobody adds to it later.
    store = crypto.X509Store()
    _add_pem(store, cadata)
    return store


def _add_pem(store: crypto.X509Store, cadata: bytes) -> None:
    for certificate in x509.load_pem_x509_certificates(cadata):
        store.add_cert(crypto.X509.from_cryptography(certificate))


def _build_trust_store(configuration: QuicConfiguration) -> crypto.X509Store:
    if configuration.cafile is None and configuration.capath is None:
        if configuration.cadata is None:
            raise ConfigurationError(
                "peer verification needs CA certificates (cadata, cafile or capath); "
                "build the configuration with quic_configuration()")
        return _trust_store(configuration.cadata)
    # Raw aioquic configurations naming files: read them per connection.
    store = crypto.X509Store()
    if configuration.cadata is not None:
        _add_pem(store, configuration.cadata)
    try:
        store.load_locations(configuration.cafile, configuration.capath)
    except crypto.Error as exc:
        raise ConfigurationError(
            f"cannot load CA certificates from {configuration.cafile or configuration.capath!r}"
        ) from exc
    return store


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _stamp(moment: _dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def verify_certificate_chain(
    certificate: x509.Certificate,
    chain: list[x509.Certificate] | tuple[x509.Certificate, ...],
    store: crypto.X509Store,
) -> None:
    """Verify a peer certificate's validity dates and its chain to ``store``.

    No host name or node name is checked (see the module docstring).

    Args:
        certificate: the peer's end-entity certificate.
        chain: the intermediate certificates the peer sent after it.
        store: the trusted CA certificates.

    Raises:
        aioquic.tls.Alert: with the description the peer should receive:
            ``certificate_expired`` (outside its validity dates),
            ``unknown_ca`` (does not chain to a trusted CA),
            ``certificate_revoked``, ``unsupported_certificate`` or
            ``bad_certificate`` (anything else OpenSSL refuses).
    """
    now = _utcnow()
    if now < certificate.not_valid_before_utc:
        raise _alert(tls.AlertDescription.certificate_expired,
                     "certificate refused: not valid before "
                     f"{_stamp(certificate.not_valid_before_utc)}")
    if now > certificate.not_valid_after_utc:
        raise _alert(tls.AlertDescription.certificate_expired,
                     f"certificate refused: expired on {_stamp(certificate.not_valid_after_utc)}")
    context = crypto.X509StoreContext(
        store,
        crypto.X509.from_cryptography(certificate),
        [crypto.X509.from_cryptography(c) for c in chain],
    )
    try:
        context.verify_certificate()
    except crypto.X509StoreContextError as exc:
        code = exc.errors[0] if exc.errors else -1
        description = _VERIFY_ERROR_ALERTS.get(code, tls.AlertDescription.bad_certificate)
        raise _alert(description, f"certificate refused: {exc.args[0]}") from exc


class _MutualTLSContext(tls.Context):
    """aioquic's TLS context plus the client-certificate half of mutual TLS.

    Never constructed: :meth:`MutualTLSConnection._initialize` swaps an
    existing ``tls.Context``'s ``__class__`` to this one (see there why), so
    it adds methods and class-level defaults only, no ``__init__``.

    aioquic's own client-side check (``_verify_mode != CERT_NONE``) is turned
    off on swapped contexts and replaced by :func:`verify_certificate_chain`
    in both roles, so both directions send the same precise alerts
    (aioquic sends bad_certificate for an unknown CA) and no host name is
    ever checked.
    """

    _quicdist_verify_peer: bool = False
    _quicdist_store: crypto.X509Store | None = None

    def _quicdist_check_peer(self) -> None:
        if not self._quicdist_verify_peer:
            return
        if self._peer_certificate is None:  # pragma: no cover - aioquic refuses empty ones
            raise _alert(tls.AlertDescription.certificate_required,
                         "certificate required: the peer sent no certificate")
        assert self._quicdist_store is not None
        verify_certificate_chain(self._peer_certificate, self._peer_certificate_chain,
                                 self._quicdist_store)

    # server: the client's Certificate message (may be empty).
    def _server_handle_certificate(self, input_buf: Buffer) -> None:
        super()._server_handle_certificate(input_buf)
        if self._quicdist_verify_peer and self._peer_certificate is None:
            raise _alert(tls.AlertDescription.certificate_required,
                         "certificate required: the client sent no certificate")

    # server: the client's CertificateVerify (aioquic checks the signature,
    # i.e. that the client holds the key; we then check the chain).
    def _server_handle_certificate_verify(self, input_buf: Buffer) -> None:
        super()._server_handle_certificate_verify(input_buf)
        self._quicdist_check_peer()

    # client: the server's CertificateVerify (signature checked by aioquic,
    # whose chain check is off because _verify_mode is CERT_NONE).
    def _client_handle_certificate_verify(self, input_buf: Buffer) -> None:
        super()._client_handle_certificate_verify(input_buf)
        self._quicdist_check_peer()


def _check_aioquic() -> None:
    """Fail at import if aioquic no longer has what the hooks rely on.

    Without this, a renamed private method would silently stop being
    called and a certificate would go unverified.
    """
    missing = [f"QuicConnection.{name}" for name in ("_initialize", "_close_begin")
               if not callable(getattr(QuicConnection, name, None))]
    missing += [f"tls.Context.{name}" for name in (
        "_server_handle_certificate", "_server_handle_certificate_verify",
        "_client_handle_certificate_verify") if not callable(getattr(tls.Context, name, None))]
    probe = tls.Context(is_client=False)
    missing += [f"tls.Context().{name}" for name in (
        "_request_client_certificate", "_verify_mode", "_peer_certificate",
        "_peer_certificate_chain", "alpn_cb") if not hasattr(probe, name)]
    if missing:  # pragma: no cover - only with an unsupported aioquic
        raise ImportError(
            "quicdist.tls does not support this aioquic version (missing "
            f"{', '.join(missing)}); install aioquic>=1.7.2,<1.8")


_check_aioquic()


# --------------------------------------------------------------------------
# The connection
# --------------------------------------------------------------------------

class MutualTLSConnection(QuicConnection):
    """A ``QuicConnection`` that authenticates both ends with certificates.

    Same constructor and sans-I/O API as aioquic's ``QuicConnection``; use a
    configuration from :func:`quic_configuration`. Compared with aioquic:

    - as server it always sends a CertificateRequest, so the client's
      certificate is seen (:attr:`peer_certificate`) even with verify_none;
    - with ``verify_mode`` other than ``CERT_NONE`` (verify_peer), in either
      role, the peer's chain and dates are verified against the
      configuration's CA certificates, and a client that sends no
      certificate is refused with ``certificate_required``; the failing
      side closes with QUIC error ``0x100 + alert``;
    - no host name is checked (``server_name``, if set, is SNI only);
    - the negotiated ALPN must be ``erlang-dist`` (aioquic already refuses
      a ClientHello without it with ``no_application_protocol``; this also
      holds the client to it);
    - it records which side began the close, for
      :func:`connection_closed_error`.

    Raises:
        ConfigurationError: at construction, for a configuration whose ALPN
            is not exactly ``["erlang-dist"]``, that lacks a certificate or
            private key, that asks for session resumption (a resumed
            handshake skips the certificate exchange), or that wants
            verification without CA certificates.
    """

    def __init__(self, *, configuration: QuicConfiguration, **kwargs: Any) -> None:
        if configuration.alpn_protocols != [ALPN]:
            raise ConfigurationError(
                f"the carrier speaks ALPN {ALPN!r} only, this configuration offers "
                f"{configuration.alpn_protocols!r}; build it with quic_configuration()")
        if configuration.certificate is None or configuration.private_key is None:
            raise ConfigurationError(
                "both sides of a carrier connection present a certificate: the "
                "configuration has no certificate or private key")
        if (configuration.session_ticket is not None
                or kwargs.get("session_ticket_fetcher") is not None
                or kwargs.get("session_ticket_handler") is not None):
            raise ConfigurationError(
                "session resumption is not supported: a resumed TLS handshake "
                "skips the certificate checks")
        mode = configuration.verify_mode
        if mode is None:  # aioquic's defaults: the client verifies, the server does not
            mode = ssl.CERT_REQUIRED if configuration.is_client else ssl.CERT_NONE
        self._quicdist_verify_peer = mode != ssl.CERT_NONE
        self._quicdist_store = (_build_trust_store(configuration)
                                if self._quicdist_verify_peer else None)
        self._quicdist_close_initiator: bool | None = None
        super().__init__(configuration=configuration, **kwargs)

    @property
    def verify_peer(self) -> bool:
        """True when the peer's certificate is verified."""
        return self._quicdist_verify_peer

    @property
    def peer_certificate(self) -> x509.Certificate | None:
        """The certificate the peer presented (None before it arrives, or if it sent none).

        Set as soon as the peer's Certificate message is parsed, so after a
        refused handshake it is the refused certificate: only a completed
        handshake (with verify_peer) means it was verified.
        """
        context = getattr(self, "tls", None)
        return None if context is None else context._peer_certificate

    @property
    def peer_certificate_chain(self) -> list[x509.Certificate]:
        """The intermediate certificates the peer sent after its own."""
        context = getattr(self, "tls", None)
        return [] if context is None else list(context._peer_certificate_chain)

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        # aioquic builds its tls.Context inside _initialize() and offers no
        # factory hook. Rather than copy _initialize() (a fork of ~80 lines)
        # or patch the module-global tls.Context (process-wide, not
        # thread-safe), the context just built is re-classed as a subclass
        # that only adds methods: aioquic's whole initialisation stays as is,
        # and the change is local to this connection.
        context = self.tls
        context.__class__ = _MutualTLSContext
        assert isinstance(context, _MutualTLSContext)
        context._quicdist_verify_peer = self._quicdist_verify_peer
        context._quicdist_store = self._quicdist_store
        # We verify the server ourselves (no host name, precise alerts).
        context._verify_mode = ssl.CERT_NONE
        # aioquic marks this "for test purposes only"; it is what makes a
        # server send a CertificateRequest (RFC 8446 §4.3.2).
        context._request_client_certificate = not self.configuration.is_client
        # Hold the negotiated ALPN to erlang-dist in both roles. alpn_cb runs
        # inside tls.handle_message(), so an Alert here is sent to the peer.
        negotiated: Callable[[str], None] | None = context.alpn_cb

        def check_alpn(protocol: str) -> None:
            if protocol != ALPN:
                raise _alert(tls.AlertDescription.no_application_protocol,
                             f"ALPN {protocol!r} negotiated, {ALPN!r} required")
            if negotiated is not None:
                negotiated(protocol)

        context.alpn_cb = check_alpn

    def _close_begin(self, is_initiator: bool, now: float) -> None:
        if self._quicdist_close_initiator is None:
            self._quicdist_close_initiator = is_initiator
        super()._close_begin(is_initiator, now)


# --------------------------------------------------------------------------
# CONNECTION_CLOSE -> typed errors
# --------------------------------------------------------------------------

def _alert_name(alert: int) -> str:
    try:
        return tls.AlertDescription(alert).name
    except ValueError:
        return f"0x{alert:02x}"


def _quic_error_name(error_code: int) -> str:
    try:
        return QuicErrorCode(error_code).name
    except ValueError:
        return f"0x{error_code:x}"


def closed_error(
    error_code: int,
    reason: str,
    initiated_locally: bool,
    *,
    application: bool = False,
) -> ConnectionClosed:
    """The typed error for a QUIC CONNECTION_CLOSE.

    =====================================  =================================
    ``error_code``                         error
    =====================================  =================================
    0 (NO_ERROR)                           :class:`ConnectionClosedOK`
    0x100 + a certificate alert (42, 43,   :class:`CertificateError`
    44, 45, 46, 48, 49, 116)
    0x100 + any other alert (40, 120, ...) :class:`TLSHandshakeError`
    anything else                          :class:`ConnectionClosedError`
    =====================================  =================================

    The message names the alert or QUIC error in words and ends with the
    reason phrase, e.g. ``"TLS alert unknown_ca: certificate refused: unable
    to get local issuer certificate"``.

    Args:
        error_code: the close's error code (aioquic
            ``ConnectionTerminated.error_code``).
        reason: its reason phrase (``ConnectionTerminated.reason_phrase``).
        initiated_locally: True when this side closed the connection.
        application: True for an application close (an APPLICATION_CLOSE
            frame, aioquic's ``frame_type is None``): its codes are the
            application's, never TLS alerts; 0 is still a normal close.

    Returns:
        The exception, to raise or to store (it is not raised here).
    """
    if error_code == QuicErrorCode.NO_ERROR:
        return ConnectionClosedOK(reason or "connection closed", 0, initiated_locally)
    if application:
        message = f"application error 0x{error_code:x}"
        return ConnectionClosedError(f"{message}: {reason}" if reason else message,
                                     error_code, initiated_locally)
    if CRYPTO_ERROR <= error_code < CRYPTO_ERROR + 0x100:
        alert = error_code - CRYPTO_ERROR
        message = f"TLS alert {_alert_name(alert)}"
        cls = CertificateError if alert in CERTIFICATE_ALERTS else TLSHandshakeError
        return cls(f"{message}: {reason}" if reason else message, error_code, initiated_locally)
    message = f"QUIC error {_quic_error_name(error_code)}"
    return ConnectionClosedError(f"{message}: {reason}" if reason else message,
                                 error_code, initiated_locally)


def _initiated_locally(quic: QuicConnection) -> bool:
    recorded: bool | None = getattr(quic, "_quicdist_close_initiator", None)
    if recorded is not None:
        return recorded
    if quic._close_pending:          # close() called, CONNECTION_CLOSE not yet sent
        return True
    if quic._state == QuicConnectionState.DRAINING:  # the peer's CONNECTION_CLOSE
        return False
    # CLOSING, or TERMINATED without a closing period (idle timeout, no
    # viable path, no common version): all local decisions. A plain
    # QuicConnection that drained a peer's close and then terminated cannot
    # be told apart here; MutualTLSConnection records it in _close_begin().
    return True


def connection_closed_error(quic: QuicConnection) -> ConnectionClosed | None:
    """The typed error for a connection that is closing or closed, else None.

    Call it after aioquic returned a ``ConnectionTerminated`` event, or any
    time earlier: it reads aioquic's ``_close_event``, which is set as soon
    as the close begins — when this side raised a TLS alert (the event
    itself only comes after the closing period, 3 PTO later) or when the
    peer's CONNECTION_CLOSE arrived (draining).

    Works with any ``QuicConnection``; ``initiated_locally`` is exact for a
    :class:`MutualTLSConnection`, a best guess from the state otherwise.
    """
    event: ConnectionTerminated | None = quic._close_event
    if event is None:
        return None
    return closed_error(event.error_code, event.reason_phrase, _initiated_locally(quic),
                        application=event.frame_type is None)
