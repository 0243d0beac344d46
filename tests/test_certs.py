"""The development-certificate tool."""

from __future__ import annotations

import datetime as dt
import stat
import subprocess
import sys

import pytest
from cryptography import x509
from OpenSSL import crypto

from quicdist.certs import make_ca, make_dev_certs, make_node_cert
from quicdist.errors import ConfigurationError


def _verify(ca_pem: bytes, cert_pem: bytes) -> None:
    store = crypto.X509Store()
    store.add_cert(crypto.X509.from_cryptography(x509.load_pem_x509_certificate(ca_pem)))
    ctx = crypto.X509StoreContext(
        store, crypto.X509.from_cryptography(x509.load_pem_x509_certificate(cert_pem)))
    ctx.verify_certificate()


def test_dev_certs_chain_to_their_ca(tmp_path):
    made = make_dev_certs(tmp_path, ["a@127.0.0.1", "b@localhost"])
    ca = made["ca"].certfile.read_bytes()
    for name in ("a@127.0.0.1", "b@localhost"):
        paths = made[name]
        _verify(ca, paths.certfile.read_bytes())
        cert = x509.load_pem_x509_certificate(paths.certfile.read_bytes())
        assert cert.subject.rfc4514_string() == f"CN={name}"
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "localhost" in sans.get_values_for_type(x509.DNSName)
        assert stat.S_IMODE(paths.keyfile.stat().st_mode) == 0o600


def test_other_ca_does_not_verify(tmp_path):
    one = make_dev_certs(tmp_path / "one", ["n"])
    other = make_ca(tmp_path / "other")
    with pytest.raises(crypto.X509StoreContextError):
        _verify(other.certfile.read_bytes(), one["n"].certfile.read_bytes())


def test_expired_certificate(tmp_path):
    ca = make_ca(tmp_path)
    now = dt.datetime.now(dt.UTC)
    old = make_node_cert(tmp_path, "old", ca, not_before=now - dt.timedelta(days=10),
                         not_after=now - dt.timedelta(days=1))
    with pytest.raises(crypto.X509StoreContextError, match="expired"):
        _verify(ca.certfile.read_bytes(), old.certfile.read_bytes())


def test_refuses_path_like_names(tmp_path):
    ca = make_ca(tmp_path)
    with pytest.raises(ConfigurationError):
        make_node_cert(tmp_path, "../escape", ca)


def test_cli_writes_certificates(tmp_path):
    out = subprocess.run([sys.executable, "-m", "quicdist", "certs", str(tmp_path), "--node", "x",
                          "--node", "y@127.0.0.1"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for name in ("ca.pem", "ca-key.pem", "x.pem", "x-key.pem", "y@127.0.0.1.pem"):
        assert (tmp_path / name).exists()
    _verify((tmp_path / "ca.pem").read_bytes(), (tmp_path / "x.pem").read_bytes())
