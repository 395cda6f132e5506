"""Client TLS: a proxy with a certificate (made at test time) serves libpq over TLS.

TLS is optional, as in PostgreSQL: sslmode=require gets TLS, sslmode=disable
still gets a plaintext session. Bytes sent after SSLRequest but before the
handshake are refused (CVE-2021-23214).
"""
from __future__ import annotations

import datetime
import ipaddress
import ssl

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proxy.wire import backend as be
from proxy.wire import startup as su

from .pgfixture import PASSWORDS, ProxyThread, client_dsn, proxy_settings
from . import tls_postgres
from .rawpg import RawClient, error_of, startup_packet


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pgveil test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    d = tmp_path_factory.mktemp("tls")
    (d / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "server.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    return d / "server.crt", d / "server.key"


@pytest.fixture(scope="module")
def tls_proxy(pg, cert_files):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*cert_files)
    p = ProxyThread(proxy_settings(pg, tls=ctx))
    yield p
    p.stop()


def test_sslmode_require(tls_proxy):
    with psycopg.connect(client_dsn(tls_proxy.port, "alice") + "?sslmode=require") as conn:
        assert conn.info.pgconn.ssl_in_use
        assert conn.execute("SELECT count(*), sum(id) FROM items").fetchone() == (500, 125250)
        assert conn.execute("SELECT name FROM items WHERE id = 7").fetchone() == ("item 7 ünï€ode",)


def test_sslmode_verify_full_trusts_the_certificate(tls_proxy, cert_files):
    dsn = client_dsn(tls_proxy.port) + f"?sslmode=verify-full&sslrootcert={cert_files[0]}"
    with psycopg.connect(dsn) as conn:
        assert conn.info.pgconn.ssl_in_use
        assert conn.execute("SELECT 'secret'").fetchone() == ("secret",)


def test_sslmode_disable_still_allowed(tls_proxy):
    with psycopg.connect(client_dsn(tls_proxy.port, "bob") + "?sslmode=disable") as conn:
        assert not conn.info.pgconn.ssl_in_use
        assert conn.execute("SELECT 2 * 21").fetchone() == (42,)


def test_sslmode_require_fails_without_tls_configured(proxy):
    with pytest.raises(psycopg.OperationalError, match="server does not support SSL"):
        psycopg.connect(client_dsn(proxy.port) + "?sslmode=require", connect_timeout=5)


def test_wrong_password_over_tls(tls_proxy):
    with pytest.raises(psycopg.OperationalError, match='password authentication failed for user "alice"'):
        psycopg.connect(client_dsn(tls_proxy.port, "alice", password="wrong") + "?sslmode=require")


def test_raw_tls_session(tls_proxy):
    with RawClient(tls_proxy.port) as c:
        c.send(su.SSLRequest().encode())
        assert c.recv_exact(1) == b"S"
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        c.sock = ctx.wrap_socket(c.sock)
        assert c.login("root", PASSWORDS["root"])[-1] == be.ReadyForQuery("I")
        assert c.query("SELECT 'over tls'")[1].values == (b"over tls",)


def test_plaintext_after_ssl_request_is_refused(tls_proxy):
    """CVE-2021-23214: a startup packet piggybacked on SSLRequest may be a man in the middle's."""
    with RawClient(tls_proxy.port) as c:
        c.send(su.SSLRequest().encode() + startup_packet("root"))
        assert c.recv_exact(1) == b"S"
        err = error_of(c.read_all())
        assert (err.get("S"), err.get("C"), err.get("M")) == ("FATAL", "08P01",
                                                             "received unencrypted data after SSL request")
        assert c.closed
    with psycopg.connect(client_dsn(tls_proxy.port) + "?sslmode=require") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_failed_handshake_leaves_the_proxy_serving(tls_proxy):
    with RawClient(tls_proxy.port) as c:
        c.send(su.SSLRequest().encode())
        assert c.recv_exact(1) == b"S"
        c.send(b"\x16\x03\x01\x00\x05hello-not-tls")
        assert c.wait_closed(5)
    with psycopg.connect(client_dsn(tls_proxy.port) + "?sslmode=require") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


# -- TLS towards the backend ------------------------------------------------------------------

@pytest.fixture(scope="module")
def backend_with_tls(cert_files):
    """A throwaway PostgreSQL with TLS on, from the system's packages (the embedded build has no TLS)."""
    server = tls_postgres.start(cert_files)
    if server is None:
        pytest.skip("no system PostgreSQL with TLS support (Debian: apt-get install postgresql)")
    yield server
    server.stop()


def _backend_ssl(dsn: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0]


def test_backend_link_uses_tls_when_configured(backend_with_tls, tmp_path):
    from proxy.config import parse_config
    from proxy.runner import backend_tls_context

    pg = backend_with_tls
    config = parse_config(f"backend: {{dsn: 'postgresql://{pg.service_user}@{pg.host}:{pg.port}/{pg.database}', "
                          "tls: {mode: require}}\n")
    ctx = backend_tls_context(config, pg.target())
    assert ctx is not None
    common = dict(target=pg.target(), backend_password=pg.service_password)
    with_tls = ProxyThread(proxy_settings(pg, backend_tls=ctx, **common))
    plain = ProxyThread(proxy_settings(pg, **common))
    try:
        assert _backend_ssl(client_dsn(with_tls.port, database=pg.database)) is True
        assert _backend_ssl(client_dsn(plain.port, database=pg.database)) is False
        with psycopg.connect(client_dsn(with_tls.port, database=pg.database)) as conn:
            assert conn.execute("SELECT count(*) FROM generate_series(1, 500)").fetchone() == (500,)
    finally:
        with_tls.stop()
        plain.stop()


def test_backend_tls_required_but_refused_fails_closed(pg):
    """sslmode=require towards a backend without TLS: the client gets an error, never a plaintext link."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    target = pg.target()
    p = ProxyThread(proxy_settings(pg, backend_tls=ctx, target=type(target)(target.host, target.port, target.user,
                                                                             target.database, "require")))
    try:
        import asyncio
        import asyncpg

        async def ssl_is_off():
            conn = await asyncpg.connect(pg.dsn())
            try:
                return await conn.fetchval("SHOW ssl") == "off"
            finally:
                await conn.close()

        if not asyncio.run(ssl_is_off()):
            pytest.skip("the test backend speaks TLS, so it cannot refuse it")
        with pytest.raises(psycopg.OperationalError, match="pgveil could not open a backend session"):
            psycopg.connect(client_dsn(p.port))
    finally:
        p.stop()
