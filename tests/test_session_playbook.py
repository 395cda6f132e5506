"""Session playbooks: drive the sans-io Session with events, assert the commands.

No sockets: each test plays the client's bytes (and the server's reports) into a
Session and checks exactly what it orders, as mitmproxy's playbooks do.
"""
from __future__ import annotations

import base64

import pytest
from scramp import ScramClient as ScrampClient

from proxy.auth import fake_verifier, make_verifier
from proxy.session import (AuthTimedOut, BackendClosed, BackendConnected, BackendDataReceived, BackendFailed,
                           ClientClosed, ClientDataReceived, ClientTlsStarted, Close, ConnectBackend, ForwardCancel,
                           SendToBackend, SendToClient, Session, SessionSettings, StartClientTls, State)
from proxy.session.machine import MAX_AUTH_MESSAGE
from proxy.session.startup_params import PINNED
from proxy.wire import MessageBuffer
from proxy.wire import backend as be
from proxy.wire import frontend as fe
from proxy.wire import startup as su
from proxy.wire._fields import frame

from .rawpg import ScramClient, password_message, startup_packet

DB = "appdb"
PASSWORDS = {"alice": "alice-secret", "bob": "bob secret"}
VERIFIERS = {u: make_verifier(p) for u, p in PASSWORDS.items()}
CANCEL_PID, CANCEL_KEY = 4242, b"\xde\xad\xbe\xef"


def settings(**kw) -> SessionSettings:
    values = dict(database=DB, verifier_for=VERIFIERS.get)
    values.update(kw)
    return SessionSettings(**values)


def new_session(**kw) -> Session:
    return Session(settings(**kw), CANCEL_PID, CANCEL_KEY)


def client(session: Session, data: bytes) -> list:
    return session.handle(ClientDataReceived(data))


def decode_all(data: bytes) -> list:
    buf = MessageBuffer()
    buf.feed(data)
    messages, raw = buf.take_messages()
    assert raw == data, "trailing partial message"
    return [be.decode(t, b) for t, b in messages]


def sent(commands: list) -> list:
    """Every backend message the session sent to the client, decoded."""
    return [m for c in commands if isinstance(c, SendToClient) for m in decode_all(c.data)]


def assert_fatal(commands: list, sqlstate: str, message: str | None = None) -> be.ErrorResponse:
    assert isinstance(commands[-1], Close), commands
    assert isinstance(commands[-2], SendToClient)
    (err,) = decode_all(commands[-2].data)
    assert isinstance(err, be.ErrorResponse) and err.get("S") == "FATAL" and err.get("V") == "FATAL"
    assert err.get("C") == sqlstate, err
    if message is not None:
        assert err.get("M") == message
    return err


def authenticate(session: Session, user: str, password: str, database: str = DB, **params) -> list:
    """Startup and a libpq-style SCRAM exchange; returns the commands of the last step."""
    out = client(session, startup_packet(user, database, **params))
    assert sent(out)[-1] == be.Authentication.sasl(["SCRAM-SHA-256"])
    scram = ScramClient(password)
    (cont,) = sent(client(session, password_message(scram.initial_response())))
    assert cont.code == be.AUTH_SASL_CONTINUE
    server_first = cont.data.decode()
    assert server_first.startswith(f"r={scram.nonce}") and len(server_first.split(",")) == 3
    out = client(session, password_message(scram.final(cont.data)))
    session._test_scram = scram
    return out


def login(session: Session, user: str = "alice", parameters=None, **params) -> list:
    out = authenticate(session, user, PASSWORDS[user], **params)
    assert isinstance(out[-1], ConnectBackend)
    return session.handle(BackendConnected(parameters or [], be.BackendKeyData(99, b"\x00\x00\x00\x07"), []))


# -- startup and SCRAM ---------------------------------------------------------------------


def test_startup_asks_for_scram():
    s = new_session()
    out = client(s, startup_packet("alice", DB))
    assert out == [SendToClient(be.Authentication.sasl(["SCRAM-SHA-256"]).encode())]
    assert s.state is State.SASL_INITIAL and s.user == "alice" and s.database == DB


def test_startup_split_byte_by_byte():
    s = new_session()
    packet = startup_packet("alice", DB)
    outs = [client(s, packet[i:i + 1]) for i in range(len(packet))]
    assert all(o == [] for o in outs[:-1])
    assert sent(outs[-1]) == [be.Authentication.sasl(["SCRAM-SHA-256"])]


def test_full_scram_exchange_with_empty_user_name():
    s = new_session()
    out = authenticate(s, "alice", PASSWORDS["alice"], application_name="psql", DateStyle="ISO")
    final, ok = sent(out)
    assert final.code == be.AUTH_SASL_FINAL
    assert final.data == b"v=" + base64.b64encode(s._test_scram.expected_server_signature)
    assert ok == be.Authentication.ok()
    # the client's own user and database never reach the backend as given
    assert out[-1] == ConnectBackend({"application_name": "psql", "DateStyle": "ISO", **PINNED})
    assert s.state is State.CONNECTING


def test_full_scram_exchange_with_scramp_client_naming_the_user():
    s = new_session()
    client(s, startup_packet("bob", DB))
    c = ScrampClient(["SCRAM-SHA-256"], "bob", PASSWORDS["bob"])
    first = c.get_client_first().encode()
    body = b"SCRAM-SHA-256\x00" + len(first).to_bytes(4, "big") + first
    (cont,) = sent(client(s, password_message(body)))
    c.set_server_first(cont.data.decode())
    out = client(s, password_message(c.get_client_final().encode()))
    final, ok = sent(out)
    c.set_server_final(final.data.decode())  # raises if the server signature is wrong
    assert ok.code == be.AUTH_OK and isinstance(out[-1], ConnectBackend)


def test_backend_connected_relays_parameters_with_our_identity_and_key():
    s = new_session()
    authenticate(s, "alice", PASSWORDS["alice"])
    params = [be.ParameterStatus("server_version", "18.1"), be.ParameterStatus("session_authorization", "pgveil_svc"),
              be.ParameterStatus("client_encoding", "UTF8")]
    notice = be.NoticeResponse.build("NOTICE", "00000", "hello").encode()
    out = s.handle(BackendConnected(params, be.BackendKeyData(777, b"\x01\x02\x03\x04"), [notice]))
    assert sent(out) == [
        be.NoticeResponse.build("NOTICE", "00000", "hello"),
        be.ParameterStatus("server_version", "18.1"),
        be.ParameterStatus("session_authorization", "alice"),
        be.ParameterStatus("client_encoding", "UTF8"),
        be.BackendKeyData(CANCEL_PID, CANCEL_KEY),  # ours, never the backend's
        be.ReadyForQuery("I"),
    ]
    assert s.state is State.READY


def _failed_login(verifier_for, user: str, password: str) -> bytes:
    s = new_session(verifier_for=verifier_for)
    out = authenticate(s, user, password)
    assert_fatal(out, "28P01", f'password authentication failed for user "{user}"')
    assert s.state is State.CLOSED
    return out[-2].data


def test_wrong_password_and_unknown_user_fail_identically():
    wrong_password = _failed_login(VERIFIERS.get, "alice", "guess")
    unknown_user = _failed_login({}.get, "alice", "guess")
    assert wrong_password == unknown_user
    assert _failed_login({}.get, "alice", PASSWORDS["alice"]) == wrong_password


def test_unknown_user_gets_a_stable_plausible_salt():
    def server_first(verifier_for):
        s = new_session(verifier_for=verifier_for)
        client(s, startup_packet("ghost", DB))
        (cont,) = sent(client(s, password_message(ScramClient("x").initial_response())))
        return dict(p.split("=", 1) for p in cont.data.decode().split(","))

    a, b = server_first({}.get), server_first({}.get)
    assert a["s"] == b["s"] and a["i"] == b["i"] == "4096" and len(base64.b64decode(a["s"])) == 16
    assert a["r"] != b["r"]  # the server nonce is fresh every time
    assert a["s"] == base64.b64encode(fake_verifier("ghost").salt).decode()


@pytest.mark.parametrize("body, sqlstate, message", [
    (b"SCRAM-SHA-1\x00\x00\x00\x00\x05n,,ab", "08P01", "client selected an invalid SASL authentication mechanism"),
    (b"SCRAM-SHA-256\x00\xff\xff\xff\xff", "08P01", "client selected an invalid SASL authentication mechanism"),
    (b"SCRAM-SHA-256\x00\x00\x00\x00\x03n,,", "08P01", "malformed SCRAM message"),
    (b"SCRAM-SHA-256\x00\x00\x00\x00\x0bn,,n=,rabcd", "08P01", "malformed SCRAM message"),
    (b"SCRAM-SHA-256\x00\x00\x00\x00\x10p=tls-unique,,n=", "08P01", None),
    (b"SCRAM-SHA-256\x00\x00\x00\x00\x05", "08P01", "message body shorter than its fields"),
])
def test_malformed_sasl_initial_response(body, sqlstate, message):
    s = new_session()
    client(s, startup_packet("alice", DB))
    assert_fatal(client(s, password_message(body)), sqlstate, message)


def test_tampered_final_message_fails_as_a_wrong_password():
    s = new_session()
    client(s, startup_packet("alice", DB))
    scram = ScramClient(PASSWORDS["alice"])
    (cont,) = sent(client(s, password_message(scram.initial_response())))
    final = scram.final(cont.data).replace(b"c=biws", b"c=eSws")  # claims channel binding
    assert_fatal(client(s, password_message(final)), "28P01", 'password authentication failed for user "alice"')


def test_wrong_database_is_refused_only_after_authentication():
    s = new_session()
    out = authenticate(s, "alice", PASSWORDS["alice"], database="other")
    assert_fatal(out, "3D000", 'database "other" does not exist')
    assert not any(isinstance(c, ConnectBackend) for c in out)
    # with a wrong password the database is not even looked at
    s = new_session()
    assert_fatal(authenticate(s, "alice", "nope", database="other"), "28P01")


def test_database_defaults_to_user_name():
    s = new_session()
    client(s, su.StartupMessage(su.PROTOCOL_3_0, {"user": "alice"}).encode())
    assert s.database == "alice"


def test_startup_without_user():
    s = new_session()
    out = client(s, su.StartupMessage(su.PROTOCOL_3_0, {"database": DB}).encode())
    assert_fatal(out, "28000", "no PostgreSQL user name specified in startup packet")


@pytest.mark.parametrize("value", ["database", "true", "on", "1", "yes"])
def test_replication_is_refused(value):
    out = client(new_session(), startup_packet("alice", DB, replication=value))
    assert_fatal(out, "42501", "replication connections are not supported through pgveil")


def test_replication_false_is_a_normal_session():
    s = new_session()
    out = authenticate(s, "alice", PASSWORDS["alice"], replication="false")
    assert out[-1] == ConnectBackend(dict(PINNED))


def test_message_other_than_sasl_during_auth():
    s = new_session()
    client(s, startup_packet("alice", DB))
    assert_fatal(client(s, fe.Query("SELECT 1").encode()), "08P01", "expected SASL response, got message type b'Q'")


def test_oversized_message_before_authentication_is_refused_at_once():
    # Before login a client may not make the proxy buffer max_message_size bytes.
    s = new_session()
    client(s, startup_packet("alice", DB))
    out = client(s, b"p" + (MAX_AUTH_MESSAGE + 1).to_bytes(4, "big"))
    err = assert_fatal(out, "08P01")
    assert "over the limit of 65535" in err.get("M")


def test_full_message_size_applies_after_authentication():
    s = new_session(max_message_size=1_000_000)
    login(s)
    big = fe.Query("SELECT '" + "x" * 200_000 + "'").encode()
    assert client(s, big) == [SendToBackend(big)]
    out = client(s, b"Q" + (1_000_001).to_bytes(4, "big"))
    assert "over the limit of 1000000" in assert_fatal(out, "08P01").get("M")


# -- TLS, GSSAPI, cancel, protocol versions -----------------------------------------------------


def test_ssl_request_without_tls_is_answered_n_and_startup_continues():
    s = new_session()
    out = client(s, su.SSLRequest().encode() + startup_packet("alice", DB))
    assert out[0] == SendToClient(b"N")
    assert decode_all(out[1].data) == [be.Authentication.sasl(["SCRAM-SHA-256"])]


def test_ssl_request_with_tls_starts_tls():
    s = new_session(tls_available=True)
    assert client(s, su.SSLRequest().encode()) == [SendToClient(b"S"), StartClientTls()]
    assert s.state is State.TLS_HANDSHAKE
    assert s.handle(ClientTlsStarted()) == []
    assert s.tls
    assert sent(client(s, startup_packet("alice", DB))) == [be.Authentication.sasl(["SCRAM-SHA-256"])]
    # a second SSLRequest inside TLS is declined, not nested
    s2 = new_session(tls_available=True)
    client(s2, su.SSLRequest().encode())
    s2.handle(ClientTlsStarted())
    assert client(s2, su.SSLRequest().encode()) == [SendToClient(b"N")]


@pytest.mark.parametrize("split", [False, True])
def test_plaintext_bytes_after_ssl_request_are_refused(split):
    """CVE-2021-23214: bytes buffered before the TLS handshake may come from a man in the middle."""
    s = new_session(tls_available=True)
    injected = fe.Query("SELECT 1").encode()
    if split:
        assert client(s, su.SSLRequest().encode()) == [SendToClient(b"S"), StartClientTls()]
        out = client(s, injected)
    else:
        out = client(s, su.SSLRequest().encode() + injected)
        assert out[:2] == [SendToClient(b"S"), StartClientTls()]
    assert_fatal(out, "08P01", "received unencrypted data after SSL request")
    assert s.handle(ClientTlsStarted()) == []  # closed: nothing more happens


def test_gssenc_request_is_declined():
    s = new_session()
    out = client(s, su.GSSENCRequest().encode() + startup_packet("alice", DB))
    assert out[0] == SendToClient(b"N") and sent(out[1:]) == [be.Authentication.sasl(["SCRAM-SHA-256"])]


def test_cancel_request_is_forwarded_and_closed():
    s = new_session()
    out = client(s, su.CancelRequest(1234, b"\x00\x01\x02\x03").encode())
    assert out == [ForwardCancel(1234, b"\x00\x01\x02\x03"), Close("cancel request")]
    assert s.state is State.CLOSED
    assert client(s, startup_packet("alice", DB)) == []


def test_protocol_3_2_is_negotiated_down_to_3_0():
    s = new_session()
    out = client(s, startup_packet("alice", DB, version=su.PROTOCOL_3_2))
    assert sent(out) == [be.NegotiateProtocolVersion(su.PROTOCOL_3_0, ()), be.Authentication.sasl(["SCRAM-SHA-256"])]


def test_protocol_options_are_reported_unrecognized_and_not_forwarded():
    s = new_session()
    out = client(s, startup_packet("alice", DB, **{"_pq_.compression": "on", "application_name": "x"}))
    assert sent(out)[0] == be.NegotiateProtocolVersion(su.PROTOCOL_3_0, ("_pq_.compression",))
    scram = ScramClient(PASSWORDS["alice"])
    (cont,) = sent(client(s, password_message(scram.initial_response())))
    out = client(s, password_message(scram.final(cont.data)))
    assert out[-1] == ConnectBackend({"application_name": "x", **PINNED})


def test_unsupported_protocol_major():
    out = client(new_session(), startup_packet("alice", DB, version=2 << 16))
    assert_fatal(out, "08P01", "unsupported frontend protocol 2.0")


@pytest.mark.parametrize("data, message", [
    (b"\x00\x00\x00\x04", "invalid length of startup packet: 4"),
    (b"\x00\x00\x27\x11", "invalid length of startup packet: 10001"),
    (b"GET / HTTP/1.1\r\n", "invalid length of startup packet: 1195725856"),
])
def test_garbage_before_startup(data, message):
    assert_fatal(client(new_session(), data), "08P01", message)


# -- relay: in-flight accounting -------------------------------------------------------------------


def test_query_and_ready_for_query_counting():
    s = new_session()
    login(s)
    q = fe.Query("SELECT 1").encode()
    assert client(s, q) == [SendToBackend(q)]
    assert s.in_flight == 1
    reply = (be.RowDescription((be.FieldDescription("?column?", 0, 0, 23, 4, -1, 0),)).encode()
             + be.DataRow((b"1",)).encode() + be.CommandComplete("SELECT 1").encode() + be.ReadyForQuery("T").encode())
    cut = len(reply) - 5  # the ReadyForQuery header arrives, its status byte not yet
    assert s.handle(BackendDataReceived(reply[:cut])) == [SendToClient(reply[:cut])]
    assert s.in_flight == 1
    assert s.handle(BackendDataReceived(reply[cut:])) == [SendToClient(reply[cut:])]
    assert s.in_flight == 0 and s.transaction_status == "T"


def test_extended_pipeline_counts_syncs():
    s = new_session()
    login(s)
    batch = b"".join(m.encode() for m in (
        fe.Parse("", "SELECT $1", (23,)), fe.Bind("", "", (), (b"1",), ()), fe.Execute("", 0), fe.Sync(),
        fe.Bind("", "", (), (b"2",), ()), fe.Execute("", 0), fe.Sync(), fe.Flush()))
    # a pipeline split mid-message forwards whole messages only
    out1 = client(s, batch[:30])
    out2 = client(s, batch[30:])
    forwarded = b"".join(c.data for c in out1 + out2 if isinstance(c, SendToBackend))
    assert forwarded == batch and s.in_flight == 2
    z = be.ReadyForQuery("I").encode()
    s.handle(BackendDataReceived(be.ErrorResponse.build("ERROR", "22P02", "bad").encode() + z))
    assert s.in_flight == 1
    for i in range(len(z)):  # the second ReadyForQuery byte by byte
        s.handle(BackendDataReceived(z[i:i + 1]))
    assert s.in_flight == 0


def test_function_call_is_in_flight_until_its_ready_for_query():
    s = new_session()
    login(s)
    client(s, fe.FunctionCall(1598, (), (), 0).encode() + fe.Query("SELECT 2").encode())
    assert s.in_flight == 2
    s.handle(BackendDataReceived(be.FunctionCallResponse(b"x").encode() + be.ReadyForQuery("I").encode()))
    assert s.in_flight == 1  # the query is still running


def test_messages_pipelined_before_backend_is_ready_are_relayed_after():
    s = new_session()
    authenticate(s, "alice", PASSWORDS["alice"])
    q = fe.Query("SELECT 1").encode()
    assert client(s, q) == []  # held while the backend session opens
    out = s.handle(BackendConnected([], None, []))
    assert sent(out[:1])[-1] == be.ReadyForQuery("I")
    assert out[1:] == [SendToBackend(q)] and s.in_flight == 1


def test_unknown_message_type_is_forwarded_byte_exact():
    s = new_session()
    login(s)
    odd = frame(b"!", b"\x00\xffhello")
    assert client(s, odd) == [SendToBackend(odd)]


def test_terminate_forwards_and_closes():
    s = new_session()
    login(s)
    x = fe.Terminate().encode()
    assert client(s, x) == [SendToBackend(x), Close("client terminated")]
    assert s.state is State.CLOSED
    assert s.handle(BackendDataReceived(be.ReadyForQuery("I").encode())) == []


def test_length_below_4_after_login():
    s = new_session()
    login(s)
    assert_fatal(client(s, b"Q\x00\x00\x00\x02"), "08P01", "invalid message length 2 for message type b'Q'")


def test_backend_stream_with_bad_length_is_refused():
    s = new_session()
    login(s)
    assert_fatal(s.handle(BackendDataReceived(b"Z\x00\x00\x00\x00")), "08P01")


# -- other events ---------------------------------------------------------------------------------


def test_auth_timeout_before_login_and_not_after():
    s = new_session()
    client(s, startup_packet("alice", DB))
    assert_fatal(s.handle(AuthTimedOut()), "08006", "canceling authentication due to timeout")
    s = new_session()
    login(s)
    assert s.handle(AuthTimedOut()) == []


def test_backend_failure_while_connecting():
    s = new_session()
    authenticate(s, "alice", PASSWORDS["alice"])
    err = assert_fatal(s.handle(BackendFailed("connection refused")), "08006")
    assert err.get("M") == "pgveil could not open a backend session: connection refused"


def test_backend_closed_and_client_closed():
    s = new_session()
    login(s)
    assert s.handle(BackendClosed()) == [Close("backend closed the connection")]
    s = new_session()
    client(s, startup_packet("alice", DB))
    assert s.handle(ClientClosed()) == [Close("client closed the connection")]
    assert s.handle(ClientClosed()) == []


def test_tls_started_out_of_turn_is_a_protocol_violation():
    s = new_session()
    login(s)
    assert_fatal(s.handle(ClientTlsStarted()), "08P01")


# -- startup parameters: pinned settings, refused options ------------------------------------

@pytest.mark.parametrize("params, sqlstate, fragment", [
    ({"options": "-c search_path=evil"}, "42501", "search_path"),
    ({"options": "-csearch_path=evil,public"}, "42501", "search_path"),
    ({"options": "--role=postgres"}, "42501", "role"),
    ({"options": "-c session_authorization=postgres"}, "42501", "session_authorization"),
    ({"options": "-c standard_conforming_strings=off"}, "42501", "standard_conforming_strings"),
    ({"options": "-c application_name=ok -c backslash_quote=on"}, "42501", "backslash_quote"),
    ({"options": "-E"}, "42501", "-E"),
    ({"search_path": "evil"}, "42501", "search_path"),
    ({"SEARCH_PATH": "evil"}, "42501", "SEARCH_PATH"),
    ({"client_encoding": "SJIS"}, "22023", "SJIS"),
    ({"options": "-c client_encoding=BIG5"}, "22023", "BIG5"),
])
def test_startup_settings_that_change_parsing_or_security_are_refused(params, sqlstate, fragment):
    s = new_session()
    out = client(s, startup_packet("alice", DB, **params))
    (err,) = sent(out[:1])
    assert err.get("C") == sqlstate and fragment in err.get("M")
    assert out[-1] == Close(err.get("M")) and s.state is State.CLOSED


def test_harmless_startup_settings_pass_and_pgveil_ones_are_mirrored():
    s = new_session()
    out = authenticate(s, "alice", PASSWORDS["alice"], client_encoding="UTF8",
                       options=r"-c DateStyle=ISO,\ MDY -c pgveil.purpose=Research.Marketing --statement-timeout=5s")
    # pgveil.* settings are the proxy's; the backend only gets a placeholder copy so SHOW can answer
    options = PINNED["options"] + " -c pgveil.purpose=Research.Marketing"
    assert out[-1] == ConnectBackend({"DateStyle": "ISO, MDY", "statement_timeout": "5s", **PINNED, "options": options})
    assert s.context_choice == {"pgveil.purpose": "Research.Marketing"}
