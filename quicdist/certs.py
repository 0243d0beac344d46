"""Development certificates: a private CA and per-node certificates.

``python -m quicdist certs DIR`` writes ``ca.pem`` / ``ca-key.pem`` and, for
each node name, ``<name>.pem`` / ``<name>-key.pem`` signed by that CA, with
subject alternative names ``localhost``, ``127.0.0.1``, ``::1`` and the host
part of the node name. These are for tests and demos only: keys are written
unencrypted (mode 0600) and must never be committed.

Both TLS roles use the same kind of certificate (server and client
authentication usages), as every distribution node both dials and listens.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import ConfigurationError


__all__ = ["CertPaths", "make_ca", "make_node_cert", "make_dev_certs"]


@dataclass(frozen=True)
class CertPaths:
    """Where one certificate and its private key were written."""

    certfile: Path
    keyfile: Path


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_pair(out: Path, base: str, key: ec.EllipticCurvePrivateKey,
                cert: x509.Certificate) -> CertPaths:
    """Write ``<base>.pem`` and ``<base>-key.pem`` (the key first, mode 0600)."""
    base = _safe_name(base)
    paths = CertPaths(out / f"{base}.pem", out / f"{base}-key.pem")
    _write_key(paths.keyfile, key)
    paths.certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return paths


def _safe_name(name: str) -> str:
    if not name or any(c in name for c in "/\\\0") or name in (".", ".."):
        raise ConfigurationError(f"not usable as a file name: {name!r}")
    return name


def make_ca(
    directory: str | os.PathLike[str],
    *,
    name: str = "ca",
    common_name: str = "quicdist development CA",
    days: int = 3650,
) -> CertPaths:
    """Create a self-signed CA in ``directory`` as ``<name>.pem`` and ``<name>-key.pem``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return _write_pair(out, name, key, cert)


def _host_of(node_name: str) -> str | None:
    return node_name.split("@", 1)[1] if "@" in node_name else None


def make_node_cert(
    directory: str | os.PathLike[str],
    node_name: str,
    ca: CertPaths,
    *,
    file_name: str | None = None,
    days: int = 825,
    not_before: _dt.datetime | None = None,
    not_after: _dt.datetime | None = None,
) -> CertPaths:
    """Create a certificate for ``node_name`` signed by ``ca``.

    ``not_before`` / ``not_after`` override the validity window (tests use
    them to make expired or not-yet-valid certificates).
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    ca_key = serialization.load_pem_private_key(ca.keyfile.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(ca.certfile.read_bytes())
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ConfigurationError("the CA key must be an EC key made by make_ca()")
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    start = not_before or now - _dt.timedelta(minutes=5)
    end = not_after or now + _dt.timedelta(days=days)
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    host = _host_of(node_name)
    if host and host != "localhost":
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    if sans.count(sans[-1]) > 1:
        sans.pop()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                   ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return _write_pair(out, file_name or node_name, key, cert)


def make_dev_certs(
    directory: str | os.PathLike[str], node_names: list[str] | tuple[str, ...] = ("node",)
) -> dict[str, CertPaths]:
    """A CA plus one certificate per node name; returns ``{"ca": ..., name: ...}``."""
    ca = make_ca(directory)
    result = {"ca": ca}
    for name in node_names:
        result[name] = make_node_cert(directory, name, ca)
    return result
