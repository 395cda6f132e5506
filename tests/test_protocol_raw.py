"""The live proxy against a hostile or picky client on raw sockets.

Each test speaks bytes to a real proxy in front of a real PostgreSQL and
checks the exact reply (SQLSTATE and message), that the connection ends when it
must, and that the proxy keeps serving everyone else afterwards.
"""
from __future__ import annotations

import socket
import struct
import threading
import time

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.wire import backend as be
from proxy.wire import startup as su
from proxy.wire._fields import cstr, frame

from .pgfixture import PASSWORDS, ProxyThread, client_dsn, proxy_settings
from .rawpg import RawClient, ScramClient, error_of, password_message, startup_packet

MAX_MESSAGE = 4096


@pytest.fixture(scope="module")
def limited(pg):
    """A proxy allowing 5 connections and 4 kB messages."""
    p = ProxyThread(proxy_settings(pg, max_connections=5, max_message_size=MAX_MESSAGE))
    yield p
    p.stop()


@pytest.fixture(scope="module")
def impatient(pg):
    p = ProxyThread(proxy_settings(pg, auth_timeout=0.5))
    yield p
    p.stop()


def assert_works(port: int, user: str = "root") -> None:
    with psycopg.connect(client_dsn(port, user), connect_timeout=5) as conn:
        assert conn.execute("SELECT 40 + 2").fetchone() == (42,)


def fatal(messages: list, sqlstate: str, message: str | None = None) -> be.ErrorResponse:
    err = error_of(messages)
    assert err.get("S") == "FATAL" and err.get("C") == sqlstate, err
    if message is not None:
        assert err.get("M") == message, err
    return err


# -- before and during startup ---------------------------------------------------------------------


def test_garbage_before_startup_closes_only_that_connection(proxy):
    with psycopg.connect(client_dsn(proxy.port, "alice")) as bystander:
        bystander.execute("BEGIN")
        bystander.execute("SELECT 1")
        with RawClient(proxy.port) as c:
            c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            msgs = c.read_all()
            fatal(msgs, "08P01", "invalid length of startup packet: 1195725856")
            assert c.closed
        assert bystander.execute("SELECT 7").fetchone() == (7,)
        bystander.execute("COMMIT")


@pytest.mark.parametrize("header, message", [
    (b"\x7f\xff\xff\xff", "invalid length of startup packet: 2147483647"),
    (b"\xff\xff\xff\xff", "invalid length of startup packet: 4294967295"),
    (b"\x00\x00\x00\x03", "invalid length of startup packet: 3"),
    (b"\x00\x00\x00\x00", "invalid length of startup packet: 0"),
])
def test_bad_startup_length(proxy, header, message):
    with RawClient(proxy.port) as c:
        c.send(header + b"\x00\x03\x00\x00")
        fatal(c.read_all(), "08P01", message)
        assert c.closed


def test_startup_packet_over_10000_bytes(proxy):
    with RawClient(proxy.port) as c:
        c.send(struct.pack("!I", 10_001))  # refused from the length alone
        fatal(c.read_all(), "08P01", "invalid length of startup packet: 10001")
        assert c.closed


def test_startup_packet_of_10000_bytes_is_accepted(proxy):
    pad = "x" * (10_000 - 8 - len("user\0root\0database\0pgveil_test\0application_name\0") - 2)
    packet = startup_packet("root", application_name=pad)
    assert len(packet) == 10_000
    with RawClient(proxy.port) as c:
        c.send(packet)
        (msg,) = c.read_until(b"R")
        assert msg == be.Authentication.sasl(["SCRAM-SHA-256"])


def test_huge_declared_length_during_authentication(proxy):
    with RawClient(proxy.port) as c:
        c.send(startup_packet("root"))
        c.read_until(b"R")
        c.send(b"p\x7f\xff\xff\xff")  # the proxy must not wait for (or buffer) 2 GB
        err = fatal(c.read_all(timeout=3), "08P01")
        assert "over the limit of 65535" in err.get("M")
        assert c.closed


def test_length_below_4_during_authentication(proxy):
    with RawClient(proxy.port) as c:
        c.send(startup_packet("root"))
        c.read_until(b"R")
        c.send(b"p\x00\x00\x00\x03")
        fatal(c.read_all(), "08P01", "invalid message length 3 for message type b'p'")


def test_wrong_password_and_unknown_user_look_the_same(proxy):
    def attempt(user: str) -> bytes:
        with RawClient(proxy.port) as c:
            c.send(startup_packet(user))
            c.read_until(b"R")
            scram = ScramClient("not the password")
            c.send(password_message(scram.initial_response()))
            (cont,) = c.read_until(b"R")
            c.send(password_message(scram.final(cont.data)))
            msgs = c.read_all()
            fatal(msgs, "28P01", f'password authentication failed for user "{user}"')
            err = error_of(msgs)
            return be.ErrorResponse(tuple((k, v.replace(user, "USER")) for k, v in err.fields)).encode()

    assert attempt("alice") == attempt("mallory")


def test_connection_flood_beyond_max_connections(limited):
    held = [RawClient(limited.port) for _ in range(5)]
    try:
        time.sleep(0.1)
        for _ in range(3):
            with RawClient(limited.port) as extra:
                extra.send(startup_packet("root"))  # refused after the startup packet, as PostgreSQL does
                fatal(extra.read_all(), "53300", "sorry, too many clients already")
                assert extra.closed
        with pytest.raises(psycopg.OperationalError, match="sorry, too many clients already"):
            psycopg.connect(client_dsn(limited.port) + "?sslmode=disable", connect_timeout=5)
    finally:
        for c in held:
            c.close()
    deadline = time.monotonic() + 5
    while True:  # the proxy notices the closes asynchronously
        try:
            assert_works(limited.port)
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_connection_limit_message_reaches_libpq_with_default_sslmode(limited):
    held = [RawClient(limited.port) for _ in range(5)]
    try:
        time.sleep(0.1)
        with pytest.raises(psycopg.OperationalError, match="sorry, too many clients already"):
            psycopg.connect(client_dsn(limited.port), connect_timeout=5)
    finally:
        for c in held:
            c.close()
        time.sleep(0.2)


def test_auth_timeout_drops_a_silent_client(impatient):
    start = time.monotonic()
    with RawClient(impatient.port) as c:
        msgs = c.read_all(timeout=5)
        elapsed = time.monotonic() - start
        fatal(msgs, "08006", "canceling authentication due to timeout")
        assert c.closed and 0.4 < elapsed < 4


def test_auth_timeout_drops_a_client_stalled_in_scram(impatient):
    with RawClient(impatient.port) as c:
        c.send(startup_packet("root"))
        assert c.read_until(b"R") == [be.Authentication.sasl(["SCRAM-SHA-256"])]
        fatal(c.read_all(timeout=5), "08006", "canceling authentication due to timeout")
        assert c.closed


def test_auth_timeout_spares_logged_in_sessions(impatient):
    with psycopg.connect(client_dsn(impatient.port)) as conn:
        time.sleep(0.8)
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_ssl_request_answered_n_then_plaintext_startup(proxy):
    with RawClient(proxy.port) as c:
        c.send(su.SSLRequest().encode())
        assert c.recv_exact(1) == b"N"
        ready = c.login("alice", PASSWORDS["alice"])
        assert ready[-1] == be.ReadyForQuery("I")
        assert c.query("SELECT 'plain'")[1].values == (b"plain",)


def test_gssenc_request_answered_n(proxy):
    with RawClient(proxy.port) as c:
        c.send(su.GSSENCRequest().encode())
        assert c.recv_exact(1) == b"N"
        assert c.login("bob", PASSWORDS["bob"])[-1] == be.ReadyForQuery("I")


def test_session_parameters_and_key_after_login(proxy):
    with RawClient(proxy.port) as c:
        msgs = c.login("alice", PASSWORDS["alice"], application_name="rawtest")
        params = {m.name: m.value for m in msgs if isinstance(m, be.ParameterStatus)}
        assert params["session_authorization"] == "alice"
        assert params["application_name"] == "rawtest"
        assert params["client_encoding"] == "UTF8"
        (key,) = [m for m in msgs if isinstance(m, be.BackendKeyData)]
        assert len(key.key) == 4 and key.pid > 0
        assert msgs[-1] == be.ReadyForQuery("I")


def test_protocol_3_2_raw(proxy):
    with RawClient(proxy.port) as c:
        c.login("root", PASSWORDS["root"], version=su.PROTOCOL_3_2, **{"_pq_.test_option": "1"})
        assert c.startup_replies == [be.NegotiateProtocolVersion(su.PROTOCOL_3_0, ("_pq_.test_option",)),
                                     be.Authentication.sasl(["SCRAM-SHA-256"])]
        reply = c.query("SELECT 'ok'")
        assert [type(m) for m in reply] == [be.RowDescription, be.DataRow, be.CommandComplete, be.ReadyForQuery]
        assert reply[1].values == (b"ok",)


def test_protocol_3_2_with_libpq(proxy):
    if psycopg.pq.version() < 180000:
        pytest.skip("libpq before 18 has no max_protocol_version")
    with psycopg.connect(client_dsn(proxy.port) + "?max_protocol_version=3.2") as conn:
        assert conn.info.pgconn.full_protocol_version == 30000  # negotiated down
        assert conn.execute("SELECT 'ok'").fetchone() == ("ok",)


# -- after login -------------------------------------------------------------------------------------


def test_message_over_max_message_size_after_login(limited):
    with RawClient(limited.port) as c:
        c.login("root", PASSWORDS["root"])
        at_limit = "SELECT '" + "x" * (MAX_MESSAGE - 14) + "'"
        assert len(frame(b"Q", cstr(at_limit))) == MAX_MESSAGE + 1
        reply = c.query(at_limit)
        assert isinstance(reply[-1], be.ReadyForQuery) and len(reply[1].values[0]) == MAX_MESSAGE - 14
        c.send(frame(b"Q", cstr(at_limit + " ")))
        err = fatal(c.read_all(), "08P01")
        assert f"over the limit of {MAX_MESSAGE}" in err.get("M")
        assert c.closed
    assert_works(limited.port)


def test_huge_declared_length_after_login(proxy):
    with RawClient(proxy.port) as c:
        c.login("root", PASSWORDS["root"])
        c.send(b"Q\x7f\xff\xff\xff")
        err = fatal(c.read_all(timeout=3), "08P01")
        assert "over the limit" in err.get("M")


def test_unknown_message_type_reaches_the_backend(proxy):
    with RawClient(proxy.port) as c:
        c.login("root", PASSWORDS["root"])
        c.send(frame(b"!", b"hello"))
        msgs = c.read_all()
        err = fatal(msgs, "08P01")
        assert err.get("M") == "invalid frontend message type 33"  # PostgreSQL's own words, relayed
        assert c.closed


def test_cancel_request_with_wrong_key_is_harmless(proxy):
    with psycopg.connect(client_dsn(proxy.port)) as conn:
        key = conn.pgconn.backend_pid
        result: list = []
        t = threading.Thread(target=lambda: result.append(conn.execute("SELECT pg_sleep(0.4), 'done'").fetchone()))
        t.start()
        time.sleep(0.1)
        for pid, secret in ((key, b"\x00\x00\x00\x00"), (key + 1, b"\x01\x02\x03\x04"), (0, bytes(256))):
            with RawClient(proxy.port) as c:
                c.send(su.CancelRequest(pid, secret).encode())
                assert c.read_all() == [] and c.closed  # no reply, as PostgreSQL
        t.join(5)
        assert result == [("", "done")]


def test_cancel_request_with_the_right_key_cancels(proxy):
    with psycopg.connect(client_dsn(proxy.port)) as conn:
        timer = threading.Timer(0.2, conn.cancel_safe)
        timer.start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(5)")
        timer.join()
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)


# -- live fuzz -----------------------------------------------------------------------------------------

LIVE = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)


def _drain(c: RawClient) -> list:
    try:
        c.sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    try:
        return c.read_all(timeout=3)
    except Exception:  # noqa: BLE001 - garbage replies are fine; the proxy staying up is what matters
        return []


@LIVE
@given(data=st.binary(min_size=1, max_size=300))
def test_live_fuzz_before_startup(proxy, data):
    with RawClient(proxy.port) as c:
        c.send(data)
        msgs = _drain(c)
        assert c.wait_closed(3) or c.closed
        for m in msgs:
            if isinstance(m, be.ErrorResponse):
                assert m.get("S") == "FATAL" and m.get("C") in ("08P01", "28000", "42501"), m
    assert_works(proxy.port)


@LIVE
@given(data=st.binary(min_size=1, max_size=300))
def test_live_fuzz_after_login(proxy, data):
    with RawClient(proxy.port) as c:
        c.login("alice", PASSWORDS["alice"])
        try:
            c.send(data)
        except OSError:
            pass
        _drain(c)
        assert c.wait_closed(3) or c.closed
    assert_works(proxy.port)
