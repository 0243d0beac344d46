"""TLS for the QUIC carrier: configuration, mutual verification, typed close errors.

Every handshake runs in memory (tests/quic_harness.py): no sockets, a
simulated clock. Certificates are made once per session by quicdist.certs.
"""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass

import pytest
from aioquic import tls as aioquic_tls
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    ProtocolNegotiated,
    StreamDataReceived,
)
from cryptography import x509
from OpenSSL import crypto

from quicdist.certs import CertPaths, make_ca, make_node_cert
from quicdist.errors import (
    CertificateError,
    ConfigurationError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    TLSHandshakeError,
)
from quicdist.tls import (
    ALPN,
    MutualTLSConnection,
    TLSConfig,
    closed_error,
    connection_closed_error,
    quic_configuration,
    verify_certificate_chain,
)

from .quic_harness import (
    C2S,
    S2C,
    Pair,
    Wire,
    client_and_server,
    drop_indices,
    reverse_batches,
)


CLIENT_NAME = "client@127.0.0.1"
SERVER_NAME = "server@127.0.0.1"


@dataclass(frozen=True)
class Certs:
    ca_a: CertPaths
    ca_b: CertPaths
    client_a: CertPaths
    server_a: CertPaths
    client_b: CertPaths
    server_b: CertPaths
    client_a_expired: CertPaths
    server_a_expired: CertPaths
    client_a_future: CertPaths


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> Certs:
    d = tmp_path_factory.mktemp("tls-certs")
    ca_a = make_ca(d, name="ca-a", common_name="CA A")
    ca_b = make_ca(d, name="ca-b", common_name="CA B")
    now = dt.datetime.now(dt.UTC)
    past = {"not_before": now - dt.timedelta(days=30), "not_after": now - dt.timedelta(days=1)}
    future = {"not_before": now + dt.timedelta(days=1), "not_after": now + dt.timedelta(days=30)}
    return Certs(
        ca_a=ca_a,
        ca_b=ca_b,
        client_a=make_node_cert(d, CLIENT_NAME, ca_a, file_name="client-a"),
        server_a=make_node_cert(d, SERVER_NAME, ca_a, file_name="server-a"),
        client_b=make_node_cert(d, CLIENT_NAME, ca_b, file_name="client-b"),
        server_b=make_node_cert(d, SERVER_NAME, ca_b, file_name="server-b"),
        client_a_expired=make_node_cert(d, CLIENT_NAME, ca_a, file_name="client-a-exp", **past),
        server_a_expired=make_node_cert(d, SERVER_NAME, ca_a, file_name="server-a-exp", **past),
        client_a_future=make_node_cert(d, CLIENT_NAME, ca_a, file_name="client-a-fut", **future),
    )


def tls_config(paths: CertPaths, ca: CertPaths | None, verify: str = "verify_peer") -> TLSConfig:
    return TLSConfig(str(paths.certfile), str(paths.keyfile),
                     None if ca is None else str(ca.certfile), verify)  # type: ignore[arg-type]


def handshake(client_conf: QuicConfiguration, server_conf: QuicConfiguration, *,
              client_cls: type[QuicConnection] = MutualTLSConnection,
              server_cls: type[QuicConnection] = MutualTLSConnection,
              wire: Wire | None = None) -> Pair:
    pair = client_and_server(client_conf, server_conf, client_cls=client_cls,
                             server_cls=server_cls, wire=wire)
    pair.run_until_idle(max_rounds=100)
    return pair


def mutual(client: TLSConfig, server: TLSConfig, **kwargs) -> Pair:
    return handshake(quic_configuration(client, is_client=True),
                     quic_configuration(server, is_client=False), **kwargs)


def subject(cert: x509.Certificate | None) -> str | None:
    return None if cert is None else cert.subject.rfc4514_string()


def assert_established(pair: Pair) -> None:
    for side in ("client", "server"):
        completed = pair.events(side, HandshakeCompleted)
        assert len(completed) == 1, side
        assert completed[0].alpn_protocol == ALPN
        assert [e.alpn_protocol for e in pair.events(side, ProtocolNegotiated)] == [ALPN]
        assert not pair.events(side, ConnectionTerminated), side
    assert connection_closed_error(pair.client) is None
    assert connection_closed_error(pair.server) is None


def assert_failed(pair: Pair, error: type[ConnectionClosed], alert: str, code: int, *,
                  refused_by: str) -> tuple[ConnectionClosed, ConnectionClosed]:
    """Both sides end terminated with the same typed error; ``refused_by`` closed it."""
    errors = {}
    for side, connection in (("client", pair.client), ("server", pair.server)):
        terminated = pair.events(side, ConnectionTerminated)
        assert len(terminated) == 1, f"{side} saw {pair.events(side)}"
        assert terminated[0].error_code == code
        exc = connection_closed_error(connection)
        assert type(exc) is error, f"{side}: {exc!r}"
        assert exc.error_code == code
        assert exc.reason.startswith(f"TLS alert {alert}: "), exc.reason
        assert exc.reason.endswith(terminated[0].reason_phrase)
        if isinstance(connection, MutualTLSConnection):
            assert exc.initiated_locally is (side == refused_by), side
        errors[side] = exc
    assert errors["client"].reason == errors["server"].reason
    return errors["client"], errors["server"]


# --------------------------------------------------------------------------
# Handshakes
# --------------------------------------------------------------------------

def test_verify_peer_both_ways_completes(certs):
    pair = mutual(tls_config(certs.client_a, certs.ca_a), tls_config(certs.server_a, certs.ca_a))
    assert_established(pair)
    assert pair.client.verify_peer and pair.server.verify_peer
    assert subject(pair.client.peer_certificate) == f"CN={SERVER_NAME}"
    assert subject(pair.server.peer_certificate) == f"CN={CLIENT_NAME}"
    assert pair.client.peer_certificate_chain == [] == pair.server.peer_certificate_chain
    assert pair.client.tls.alpn_negotiated == ALPN == pair.server.tls.alpn_negotiated


def test_on_event_hook_lets_a_layer_above_react(certs):
    # The harness hands each event to on_event as it is popped; output made
    # there (here: data on stream 0 once the handshake completes) moves in
    # the next round.
    seen = []

    def on_event(side, connection, event):
        seen.append((side, type(event).__name__))
        if side == "client" and isinstance(event, HandshakeCompleted):
            connection.send_stream_data(0, b"hello", end_stream=True)

    pair = client_and_server(
        quic_configuration(tls_config(certs.client_a, certs.ca_a), is_client=True),
        quic_configuration(tls_config(certs.server_a, certs.ca_a), is_client=False),
        client_cls=MutualTLSConnection, server_cls=MutualTLSConnection)
    pair.run_until_idle(on_event=on_event)
    assert_established(pair)
    received = pair.events("server", StreamDataReceived)
    assert b"".join(e.data for e in received) == b"hello" and received[-1].end_stream
    assert ("client", "HandshakeCompleted") in seen and ("server", "StreamDataReceived") in seen


def test_server_refuses_client_from_another_ca(certs):
    pair = mutual(tls_config(certs.client_b, certs.ca_a), tls_config(certs.server_a, certs.ca_a))
    client_error, server_error = assert_failed(
        pair, CertificateError, "unknown_ca", 0x100 + 48, refused_by="server")
    assert "unable to get local issuer certificate" in server_error.reason
    # What each side observed: the client finished its half of the handshake
    # (TLS 1.3: the server checks the client's certificate last), then got
    # the server's CONNECTION_CLOSE; the server never completed.
    assert [type(e) for e in pair.events("client")][:3] == [
        ProtocolNegotiated, HandshakeCompleted, ConnectionTerminated]
    assert not pair.events("server", HandshakeCompleted)
    assert not client_error.initiated_locally


def test_client_refuses_server_from_another_ca(certs):
    pair = mutual(tls_config(certs.client_a, certs.ca_a), tls_config(certs.server_b, certs.ca_a))
    assert_failed(pair, CertificateError, "unknown_ca", 0x100 + 48, refused_by="client")
    assert not pair.events("client", HandshakeCompleted)
    assert not pair.events("server", HandshakeCompleted)


@pytest.mark.parametrize(("which", "refused_by"), [
    ("client_a_expired", "server"),
    ("server_a_expired", "client"),
    ("client_a_future", "server"),
])
def test_certificate_outside_its_dates_is_refused(certs, which, refused_by):
    client = getattr(certs, which) if which.startswith("client") else certs.client_a
    server = getattr(certs, which) if which.startswith("server") else certs.server_a
    pair = mutual(tls_config(client, certs.ca_a), tls_config(server, certs.ca_a))
    client_error, _ = assert_failed(pair, CertificateError, "certificate_expired",
                                    0x100 + 45, refused_by=refused_by)
    assert "expired on" in client_error.reason or "not valid before" in client_error.reason


def raw_client_configuration(certs: Certs | None = None, *,
                             alpn: list[str] | None = None) -> QuicConfiguration:
    """A plain aioquic client configuration: no verification, optional certificate."""
    conf = QuicConfiguration(alpn_protocols=[ALPN] if alpn is None else alpn, is_client=True,
                             verify_mode=ssl.CERT_NONE)
    if certs is not None:
        conf.load_cert_chain(certs.client_a.certfile, certs.client_a.keyfile)
    return conf


def test_client_without_certificate_is_refused_by_verify_peer_server(certs):
    pair = handshake(raw_client_configuration(),
                     quic_configuration(tls_config(certs.server_a, certs.ca_a), is_client=False),
                     client_cls=QuicConnection)
    client_error, server_error = assert_failed(
        pair, CertificateError, "certificate_required", 0x100 + 116, refused_by="server")
    assert server_error.initiated_locally
    assert "the client sent no certificate" in client_error.reason
    assert pair.server.peer_certificate is None


def test_client_without_certificate_is_accepted_by_verify_none_server(certs):
    pair = handshake(raw_client_configuration(),
                     quic_configuration(tls_config(certs.server_a, None, "verify_none"),
                                        is_client=False),
                     client_cls=QuicConnection)
    assert_established(pair)
    assert pair.server.peer_certificate is None


@pytest.mark.parametrize("offered", [["h3"], ["h3", "hq-interop"]])
def test_server_refuses_a_client_without_the_erlang_dist_alpn(certs, offered):
    pair = handshake(raw_client_configuration(certs, alpn=offered),
                     quic_configuration(tls_config(certs.server_a, certs.ca_a), is_client=False),
                     client_cls=QuicConnection)
    client_error, server_error = assert_failed(
        pair, TLSHandshakeError, "no_application_protocol", 0x100 + 120, refused_by="server")
    assert not isinstance(client_error, CertificateError)
    assert "No common ALPN protocols" in server_error.reason


def test_client_refuses_a_server_that_negotiates_no_alpn(certs):
    server_conf = QuicConfiguration(is_client=False)  # plain aioquic, no ALPN at all
    server_conf.load_cert_chain(certs.server_a.certfile, certs.server_a.keyfile)
    pair = handshake(quic_configuration(tls_config(certs.client_a, certs.ca_a), is_client=True),
                     server_conf, server_cls=QuicConnection)
    assert_failed(pair, TLSHandshakeError, "no_application_protocol", 0x100 + 120,
                  refused_by="client")


def test_verify_none_accepts_certificates_from_any_ca(certs):
    pair = mutual(tls_config(certs.client_b, certs.ca_a, "verify_none"),
                  tls_config(certs.server_a, certs.ca_b, "verify_none"))
    assert_established(pair)
    assert not pair.client.verify_peer and not pair.server.verify_peer
    # The server still asked for (and got) the client's certificate.
    assert subject(pair.server.peer_certificate) == f"CN={CLIENT_NAME}"
    assert subject(pair.client.peer_certificate) == f"CN={SERVER_NAME}"


def test_verify_none_accepts_expired_certificates(certs):
    pair = mutual(tls_config(certs.client_a_expired, None, "verify_none"),
                  tls_config(certs.server_a_expired, None, "verify_none"))
    assert_established(pair)


def test_one_sided_verification(certs):
    # verify_peer server, verify_none client with a foreign server: only the
    # server verifies, and its own check passes.
    pair = mutual(tls_config(certs.client_a, None, "verify_none"),
                  tls_config(certs.server_b, certs.ca_a))
    assert_established(pair)


def test_server_name_is_never_checked_against_the_certificate(certs):
    client_conf = quic_configuration(tls_config(certs.client_a, certs.ca_a), is_client=True,
                                     server_name="not-the-host.example")
    pair = handshake(client_conf,
                     quic_configuration(tls_config(certs.server_a, certs.ca_a), is_client=False))
    assert_established(pair)


@pytest.mark.parametrize("wire", [
    pytest.param(lambda: Wire(drop=drop_indices(C2S, 0)), id="client-initial-lost"),
    pytest.param(lambda: Wire(drop=drop_indices(S2C, 0, 1)), id="server-flight-lost"),
    pytest.param(lambda: Wire(reorder=reverse_batches), id="reordered"),
])
def test_mutual_verification_survives_loss_and_reordering(certs, wire):
    good = mutual(tls_config(certs.client_a, certs.ca_a), tls_config(certs.server_a, certs.ca_a),
                  wire=wire())
    assert_established(good)
    assert good.wire.dropped or good.wire.reorder
    bad = mutual(tls_config(certs.client_b, certs.ca_a), tls_config(certs.server_a, certs.ca_a),
                 wire=wire())
    assert_failed(bad, CertificateError, "unknown_ca", 0x100 + 48, refused_by="server")


def test_error_is_available_before_the_closing_period_ends(certs):
    pair = client_and_server(
        quic_configuration(tls_config(certs.client_b, certs.ca_a), is_client=True),
        quic_configuration(tls_config(certs.server_a, certs.ca_a), is_client=False),
        client_cls=MutualTLSConnection, server_cls=MutualTLSConnection)
    pair.run_until_idle(until=lambda _: connection_closed_error(pair.server) is not None)
    # The server raised the alert: aioquic set its close event but reports
    # ConnectionTerminated only after the closing period (3 PTO).
    assert not pair.events("server", ConnectionTerminated)
    error = connection_closed_error(pair.server)
    assert isinstance(error, CertificateError) and error.initiated_locally
    pair.run_until_idle()
    assert connection_closed_error(pair.server).args == error.args
    assert len(pair.events("server", ConnectionTerminated)) == 1


def test_normal_close_and_idle_timeout_map_to_closed_errors(certs):
    pair = mutual(tls_config(certs.client_a, certs.ca_a), tls_config(certs.server_a, certs.ca_a))
    pair.client.close()
    pair.run_until_idle()
    client_error = connection_closed_error(pair.client)
    server_error = connection_closed_error(pair.server)
    assert type(client_error) is ConnectionClosedOK and client_error.initiated_locally
    assert type(server_error) is ConnectionClosedOK and not server_error.initiated_locally

    pair = mutual(tls_config(certs.client_a, certs.ca_a), tls_config(certs.server_a, certs.ca_a))
    pair.client.close(error_code=0x101, reason_phrase="going away")  # application code
    pair.run_until_idle()
    server_error = connection_closed_error(pair.server)
    assert type(server_error) is ConnectionClosedError
    assert server_error.reason == "application error 0x101: going away"

    pair = mutual(tls_config(certs.client_a, certs.ca_a), tls_config(certs.server_a, certs.ca_a))
    pair.run_until_idle(horizon=1000.0)
    for connection in (pair.client, pair.server):
        error = connection_closed_error(connection)
        assert type(error) is ConnectionClosedError and error.initiated_locally
        assert error.reason == "QUIC error INTERNAL_ERROR: Idle timeout"


# --------------------------------------------------------------------------
# verify_certificate_chain
# --------------------------------------------------------------------------

def _load(paths: CertPaths) -> x509.Certificate:
    return x509.load_pem_x509_certificate(paths.certfile.read_bytes())


def _store(*cas: CertPaths) -> crypto.X509Store:
    store = crypto.X509Store()
    for ca in cas:
        store.add_cert(crypto.X509.from_cryptography(_load(ca)))
    return store


@pytest.mark.parametrize(("leaf", "trusted", "alert"), [
    ("client_a", "ca_a", None),
    ("client_b", "ca_a", aioquic_tls.AlertDescription.unknown_ca),
    ("ca_b", "ca_a", aioquic_tls.AlertDescription.unknown_ca),  # self-signed
    ("client_a_expired", "ca_a", aioquic_tls.AlertDescription.certificate_expired),
    ("client_a_future", "ca_a", aioquic_tls.AlertDescription.certificate_expired),
])
def test_verify_certificate_chain(certs, leaf, trusted, alert):
    certificate = _load(getattr(certs, leaf))
    store = _store(getattr(certs, trusted))
    if alert is None:
        verify_certificate_chain(certificate, [], store)
        return
    with pytest.raises(aioquic_tls.Alert) as info:
        verify_certificate_chain(certificate, [], store)
    assert info.value.description == alert
    assert str(info.value).startswith("certificate refused: ")


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------

def test_tls_config_loads_everything_once(certs):
    config = TLSConfig(certs.client_a.certfile, certs.client_a.keyfile,  # type: ignore[arg-type]
                       certs.ca_a.certfile, "verify_peer")  # type: ignore[arg-type]
    assert config.certfile == str(certs.client_a.certfile)  # PathLike stored as str
    assert config.verify_peer
    assert config.certificate == _load(certs.client_a)
    assert config.certificate_chain == ()
    assert config.ca_certificates == (_load(certs.ca_a),)
    assert config.cadata == certs.ca_a.certfile.read_bytes()
    assert "private_key" not in repr(config)
    assert config == TLSConfig(str(certs.client_a.certfile), str(certs.client_a.keyfile),
                               str(certs.ca_a.certfile), "verify_peer")
    assert not tls_config(certs.client_a, None, "verify_none").verify_peer


def test_tls_config_certfile_with_a_chain(certs, tmp_path):
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(certs.client_a.certfile.read_bytes() + certs.ca_a.certfile.read_bytes())
    config = TLSConfig(str(bundle), str(certs.client_a.keyfile))
    assert config.certificate_chain == (_load(certs.ca_a),)
    conf = quic_configuration(config, is_client=True)
    assert conf.certificate_chain == [_load(certs.ca_a)]


@pytest.mark.parametrize(("change", "message"), [
    ({"certfile": "/nonexistent/cert.pem"}, "cannot read certfile '/nonexistent/cert.pem'"),
    ({"keyfile": "/nonexistent/key.pem"}, "cannot read keyfile '/nonexistent/key.pem'"),
    ({"cafile": "/nonexistent/ca.pem"}, "cannot read cafile '/nonexistent/ca.pem'"),
    ({"cafile": None}, "verify_peer needs a cafile"),
    ({"verify": "verify_maybe"}, "verify must be 'verify_none' or 'verify_peer', not"),
    ({"verify": "CERT_REQUIRED"}, "verify must be"),
    ({"keyfile": "other-key"}, "does not match the certificate"),
    ({"certfile": "key-as-cert"}, "holds no valid PEM certificate"),
    ({"keyfile": "cert-as-key"}, "holds no valid PEM private key"),
    ({"cafile": "key-as-ca"}, "cafile"),
    ({"certfile": 42}, "certfile must be a path, not int"),
])
def test_tls_config_validation(certs, change, message):
    arguments = {"certfile": str(certs.client_a.certfile), "keyfile": str(certs.client_a.keyfile),
                 "cafile": str(certs.ca_a.certfile), "verify": "verify_peer"}
    aliases = {"other-key": str(certs.server_a.keyfile), "key-as-cert": str(certs.client_a.keyfile),
               "cert-as-key": str(certs.client_a.certfile), "key-as-ca": str(certs.ca_a.keyfile)}
    arguments.update({k: aliases.get(v, v) if isinstance(v, str) else v
                      for k, v in change.items()})
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(")) as info:
        TLSConfig(**arguments)
    assert isinstance(info.value, ValueError)


def test_tls_config_refuses_an_encrypted_key(certs, tmp_path):
    from cryptography.hazmat.primitives import serialization
    key = serialization.load_pem_private_key(certs.client_a.keyfile.read_bytes(), None)
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(ConfigurationError, match="is encrypted"):
        TLSConfig(str(certs.client_a.certfile), str(encrypted))


@pytest.mark.parametrize("is_client", [True, False])
@pytest.mark.parametrize("verify", ["verify_none", "verify_peer"])
def test_quic_configuration(certs, is_client, verify):
    config = tls_config(certs.client_a, certs.ca_a, verify)
    conf = quic_configuration(config, is_client=is_client, max_data=16 << 20)
    assert conf.alpn_protocols == ["erlang-dist"]
    assert conf.is_client is is_client
    assert conf.idle_timeout == 300.0 and conf.max_datagram_size == 1452
    assert conf.max_data == 16 << 20
    assert conf.certificate is config.certificate and conf.private_key is config.private_key
    assert conf.verify_mode == (ssl.CERT_REQUIRED if verify == "verify_peer" else ssl.CERT_NONE)
    assert conf.cadata == config.cadata and conf.cafile is None
    assert conf.server_name is None


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"alpn_protocols": ["h3"]}, "sets alpn_protocols itself"),
    ({"verify_mode": ssl.CERT_NONE}, "sets verify_mode itself"),
    ({"session_ticket": object()}, "session resumption is not supported"),
    ({"max_datagram_size": 1000}, "at least 1200"),
    ({"idle_timeout": 0}, "idle_timeout must be > 0"),
    ({"no_such_field": 1}, "not a QuicConfiguration field"),
])
def test_quic_configuration_refuses(certs, kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        quic_configuration(tls_config(certs.client_a, certs.ca_a), is_client=True, **kwargs)


def test_mutual_tls_connection_refuses_unfit_configurations(certs):
    good = quic_configuration(tls_config(certs.client_a, certs.ca_a), is_client=True)
    MutualTLSConnection(configuration=good)

    with pytest.raises(ConfigurationError, match="speaks ALPN 'erlang-dist' only"):
        MutualTLSConnection(configuration=raw_client_configuration(certs, alpn=["h3"]))
    with pytest.raises(ConfigurationError, match="no certificate or private key"):
        MutualTLSConnection(configuration=raw_client_configuration())
    verifying = raw_client_configuration(certs)
    verifying.verify_mode = ssl.CERT_REQUIRED
    with pytest.raises(ConfigurationError, match="needs CA certificates"):
        MutualTLSConnection(configuration=verifying)
    with pytest.raises(ConfigurationError, match="session resumption"):
        MutualTLSConnection(configuration=good, session_ticket_handler=lambda ticket: None)


def test_raw_configuration_with_a_cafile_verifies(certs):
    client = raw_client_configuration(certs)
    client.verify_mode = ssl.CERT_REQUIRED
    client.load_verify_locations(cafile=str(certs.ca_b.certfile))
    pair = handshake(client,
                     quic_configuration(tls_config(certs.server_a, certs.ca_a), is_client=False))
    assert_failed(pair, CertificateError, "unknown_ca", 0x100 + 48, refused_by="client")


# --------------------------------------------------------------------------
# closed_error
# --------------------------------------------------------------------------

@pytest.mark.parametrize(("alert", "name"), [
    (42, "bad_certificate"),
    (43, "unsupported_certificate"),
    (44, "certificate_revoked"),
    (45, "certificate_expired"),
    (46, "certificate_unknown"),
    (48, "unknown_ca"),
    (49, "access_denied"),
    (116, "certificate_required"),
])
def test_closed_error_certificate_alerts(alert, name):
    for locally in (True, False):
        error = closed_error(0x100 + alert, "certificate refused: because", locally)
        assert type(error) is CertificateError
        assert error.reason == f"TLS alert {name}: certificate refused: because"
        assert error.error_code == 0x100 + alert
        assert error.initiated_locally is locally
        side = "locally" if locally else "by the peer"
        assert str(error) == (f"TLS alert {name}: certificate refused: because "
                              f"(closed {side}, code 0x{0x100 + alert:x})")


@pytest.mark.parametrize(("code", "expected_type", "reason"), [
    (0x100 + 40, TLSHandshakeError, "TLS alert handshake_failure: why"),
    (0x100 + 120, TLSHandshakeError, "TLS alert no_application_protocol: why"),
    (0x100 + 10, TLSHandshakeError, "TLS alert unexpected_message: why"),
    (0x100 + 51, TLSHandshakeError, "TLS alert decrypt_error: why"),
    (0x100 + 70, TLSHandshakeError, "TLS alert protocol_version: why"),
    (0x100 + 109, TLSHandshakeError, "TLS alert missing_extension: why"),
    (0x100 + 0, TLSHandshakeError, "TLS alert close_notify: why"),
    (0x100 + 200, TLSHandshakeError, "TLS alert 0xc8: why"),          # unassigned alert
    (0x1FF, TLSHandshakeError, "TLS alert 0xff: why"),
    (0x0, ConnectionClosedOK, "why"),
    (0x1, ConnectionClosedError, "QUIC error INTERNAL_ERROR: why"),
    (0xA, ConnectionClosedError, "QUIC error PROTOCOL_VIOLATION: why"),
    (0xC, ConnectionClosedError, "QUIC error APPLICATION_ERROR: why"),
    (0x200, ConnectionClosedError, "QUIC error 0x200: why"),
    (0x12345, ConnectionClosedError, "QUIC error 0x12345: why"),
])
def test_closed_error_other_codes(code, expected_type, reason):
    error = closed_error(code, "why", False)
    assert type(error) is expected_type
    assert error.reason == reason
    assert error.error_code == code
    assert not error.initiated_locally


def test_closed_error_without_reason_and_application_codes():
    assert closed_error(0x130, "", True).reason == "TLS alert unknown_ca"
    assert closed_error(0x1, "", True).reason == "QUIC error INTERNAL_ERROR"
    assert closed_error(0, "", True).reason == "connection closed"
    # Application codes are never TLS alerts, even in 0x100..0x1ff.
    error = closed_error(0x130, "bye", False, application=True)
    assert type(error) is ConnectionClosedError
    assert error.reason == "application error 0x130: bye"
    assert type(closed_error(0, "", False, application=True)) is ConnectionClosedOK
    assert closed_error(7, "", False, application=True).reason == "application error 0x7"


def test_connection_closed_error_is_none_while_open(certs):
    assert connection_closed_error(
        MutualTLSConnection(configuration=quic_configuration(
            tls_config(certs.client_a, certs.ca_a), is_client=True))) is None
