"""The sans-io wire codec, without I/O: round trips, framing limits, fuzzing.

Every message class encodes, frames and decodes back to itself; whatever a
decoder accepts re-encodes byte-exact (the proxy may decode and forward); and
arbitrary bytes make a decoder raise ProtocolViolation and nothing else, so a
hostile peer can never turn a parsing slip into a crash.
"""
from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.session import ClientDataReceived, Close, SendToClient, Session, SessionSettings
from proxy.auth import make_verifier
from proxy.wire import MessageBuffer, ProtocolViolation, StreamWalker
from proxy.wire import backend as be
from proxy.wire import frontend as fe
from proxy.wire import startup as su
from proxy.wire._fields import frame

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies -------------------------------------------------------------------

text = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40)
blob = st.binary(max_size=64)
maybe_blob = st.none() | blob
int16 = st.integers(-(2**15), 2**15 - 1)
int32 = st.integers(-(2**31), 2**31 - 1)
uint32 = st.integers(0, 2**32 - 1)
small = dict(max_size=6)

FRONTEND = {
    fe.Bind: st.builds(fe.Bind, text, text, st.tuples() | st.lists(int16, **small).map(tuple),
                       st.lists(maybe_blob, **small).map(tuple), st.lists(int16, **small).map(tuple)),
    fe.Close: st.builds(fe.Close, st.sampled_from("SP"), text),
    fe.Describe: st.builds(fe.Describe, st.sampled_from("SP"), text),
    fe.Execute: st.builds(fe.Execute, text, int32),
    fe.FunctionCall: st.builds(fe.FunctionCall, int32, st.lists(int16, **small).map(tuple),
                               st.lists(maybe_blob, **small).map(tuple), int16),
    fe.Parse: st.builds(fe.Parse, text, text, st.lists(uint32, **small).map(tuple)),
    fe.Query: st.builds(fe.Query, text),
    fe.PasswordMessage: st.builds(fe.PasswordMessage, blob),
    fe.Sync: st.just(fe.Sync()),
    fe.Flush: st.just(fe.Flush()),
    fe.Terminate: st.just(fe.Terminate()),
    fe.CopyData: st.builds(fe.CopyData, blob),
    fe.CopyDone: st.just(fe.CopyDone()),
    fe.CopyFail: st.builds(fe.CopyFail, text),
}

field_desc = st.builds(be.FieldDescription, text, uint32, int16, uint32, int16, int32, int16)
error_fields = st.lists(st.tuples(st.characters(min_codepoint=1, max_codepoint=255), text), max_size=6).map(tuple)

BACKEND = {
    be.Authentication: st.builds(be.Authentication, int32, blob),
    be.BackendKeyData: st.builds(be.BackendKeyData, uint32, st.binary(min_size=4, max_size=256)),
    be.ParameterStatus: st.builds(be.ParameterStatus, text, text),
    be.ReadyForQuery: st.builds(be.ReadyForQuery, st.sampled_from("ITE")),
    be.ErrorResponse: st.builds(be.ErrorResponse, error_fields),
    be.NoticeResponse: st.builds(be.NoticeResponse, error_fields),
    be.RowDescription: st.builds(be.RowDescription, st.lists(field_desc, **small).map(tuple)),
    be.DataRow: st.builds(be.DataRow, st.lists(maybe_blob, **small).map(tuple)),
    be.CommandComplete: st.builds(be.CommandComplete, text),
    be.ParameterDescription: st.builds(be.ParameterDescription, st.lists(uint32, **small).map(tuple)),
    be.CopyResponse: st.builds(be.CopyResponse, st.sampled_from([b"G", b"H", b"W"]), st.integers(0, 255),
                               st.lists(int16, **small).map(tuple)),
    be.NotificationResponse: st.builds(be.NotificationResponse, uint32, text, text),
    be.FunctionCallResponse: st.builds(be.FunctionCallResponse, maybe_blob),
    be.NegotiateProtocolVersion: st.builds(be.NegotiateProtocolVersion, int32, st.lists(text, **small).map(tuple)),
    be.CopyData: st.builds(be.CopyData, blob),
    **{cls: st.just(cls()) for cls in (be.ParseComplete, be.BindComplete, be.CloseComplete, be.NoData,
                                       be.PortalSuspended, be.EmptyQueryResponse, be.CopyDone)},
}


def split_frames(data: bytes) -> list[tuple[bytes, bytes]]:
    buf = MessageBuffer()
    buf.feed(data)
    messages, raw = buf.take_messages()
    assert raw == data and len(buf) == 0
    return messages


# -- round trips ------------------------------------------------------------------------


def test_every_message_class_has_a_strategy():
    assert set(fe.MESSAGES.values()) == set(FRONTEND)
    assert set(be.MESSAGES.values()) | {be.CopyResponse} == set(BACKEND)


@pytest.mark.parametrize("cls", list(FRONTEND), ids=lambda c: c.__name__)
@FAST
@given(data=st.data())
def test_frontend_round_trip(cls, data):
    msg = data.draw(FRONTEND[cls])
    encoded = msg.encode()
    ((tag, body),) = split_frames(encoded)
    assert tag == msg.tag
    assert fe.decode(tag, body) == msg


@pytest.mark.parametrize("cls", list(BACKEND), ids=lambda c: c.__name__)
@FAST
@given(data=st.data())
def test_backend_round_trip(cls, data):
    msg = data.draw(BACKEND[cls])
    encoded = msg.encode()
    ((tag, body),) = split_frames(encoded)
    assert be.decode(tag, body) == msg


def test_counts_above_32767_are_unsigned_as_in_postgres():
    # PostgreSQL reads Int16 counts unsigned and allows up to 65535 bind parameters.
    params = tuple(b"x" for _ in range(40_000))
    bind = fe.Bind("", "s", (0,), params, (1,))
    ((tag, body),) = split_frames(bind.encode())
    assert fe.decode(tag, body) == bind
    parse = fe.Parse("s", "SELECT 1", tuple(range(40_000)))
    assert fe.decode(*split_frames(parse.encode())[0]) == parse
    desc = be.ParameterDescription(tuple(range(40_000)))
    assert be.decode(*split_frames(desc.encode())[0]) == desc


def test_several_messages_in_one_stream():
    msgs = [fe.Parse("", "SELECT $1", (23,)), fe.Bind("", "", (0,), (b"1",), (0,)), fe.Describe("P", ""),
            fe.Execute("", 0), fe.Sync()]
    frames = split_frames(b"".join(m.encode() for m in msgs))
    assert [fe.decode(t, b) for t, b in frames] == msgs


@pytest.mark.parametrize("tag", [b"!", b"~", b"\x00", b"\xff", b"z"])
def test_unknown_tags_pass_through_byte_exact(tag):
    body = b"\x00\x01whatever\xff\x00"
    raw = frame(tag, body)
    ((t, b),) = split_frames(raw)
    f, bk = fe.decode(t, b), be.decode(t, b)
    assert isinstance(f, fe.Unknown) and isinstance(bk, be.Unknown)
    assert f.encode() == raw and bk.encode() == raw


def test_error_response_fields():
    err = be.ErrorResponse.build("FATAL", "28P01", 'password authentication failed for user "x"', detail="d", hint="h")
    decoded = be.decode(*split_frames(err.encode())[0])
    assert decoded.get("S") == "FATAL" and decoded.get("C") == "28P01" and decoded.get("D") == "d"
    assert decoded.get("H") == "h" and decoded.get("P") is None
    assert be.error("08P01", "boom", severity="FATAL") == be.ErrorResponse.build("FATAL", "08P01", "boom").encode()


def test_authentication_sasl_mechanisms():
    msg = be.Authentication.sasl(["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"])
    assert msg.encode() == b"R\x00\x00\x00\x2a\x00\x00\x00\x0aSCRAM-SHA-256-PLUS\x00SCRAM-SHA-256\x00\x00"
    assert be.decode(*split_frames(msg.encode())[0]).sasl_mechanisms() == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]


def test_password_message_views():
    body = b"SCRAM-SHA-256\x00" + struct.pack("!i", 5) + b"n,,ab"
    assert fe.PasswordMessage(body).sasl_initial() == ("SCRAM-SHA-256", b"n,,ab")
    assert fe.PasswordMessage(b"SCRAM-SHA-256\x00\xff\xff\xff\xff").sasl_initial() == ("SCRAM-SHA-256", None)
    assert fe.PasswordMessage(b"secret\x00").password() == "secret"
    for bad in (b"SCRAM-SHA-256\x00\x00\x00\x00\x09abc", b"SCRAM", b"SCRAM-SHA-256\x00\xff\xff\xff\xfe"):
        with pytest.raises(ProtocolViolation):
            fe.PasswordMessage(bad).sasl_initial()
    with pytest.raises(ProtocolViolation):
        fe.PasswordMessage(b"secret\x00trailing").password()


def test_decoders_reject_truncated_and_trailing_bytes():
    for msg in (fe.Bind("p", "s", (1,), (b"abc", None), (0,)), fe.Parse("s", "SELECT 1", (23, 25)),
                fe.Execute("", 10), be.RowDescription((be.FieldDescription("a", 1, 2, 23, 4, -1, 0),)),
                be.DataRow((b"1", None)), be.NegotiateProtocolVersion(0, ("_pq_.x",))):
        ((tag, body),) = split_frames(msg.encode())
        decode = fe.decode if isinstance(msg, (fe.Bind, fe.Parse, fe.Execute)) else be.decode
        for cut in range(len(body)):
            with pytest.raises(ProtocolViolation):
                decode(tag, body[:cut])
        with pytest.raises(ProtocolViolation):
            decode(tag, body + b"\x00")


# -- startup packets -----------------------------------------------------------------------


def take_startup(data: bytes):
    buf = MessageBuffer()
    buf.feed(data)
    body = buf.take_startup()
    assert body is not None and len(buf) == 0
    return su.decode(body)


def test_startup_message_round_trip():
    msg = su.StartupMessage(su.PROTOCOL_3_0, {"user": "alice", "database": "db", "application_name": "é"})
    assert take_startup(msg.encode()) == msg
    assert msg.major == 3 and msg.minor == 0


def test_protocol_3_2_startup():
    msg = take_startup(su.StartupMessage(su.PROTOCOL_3_2, {"user": "u", "_pq_.opt": "1"}).encode())
    assert (msg.major, msg.minor) == (3, 2) and msg.params == {"user": "u", "_pq_.opt": "1"}


def test_ssl_gssenc_and_cancel_requests():
    assert su.SSLRequest().encode() == b"\x00\x00\x00\x08\x04\xd2\x16\x2f"
    assert su.GSSENCRequest().encode() == b"\x00\x00\x00\x08\x04\xd2\x16\x30"
    assert take_startup(su.SSLRequest().encode()) == su.SSLRequest()
    assert take_startup(su.GSSENCRequest().encode()) == su.GSSENCRequest()
    cancel = su.CancelRequest(4711, b"\x01\x02\x03\x04")
    assert cancel.encode() == b"\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x12\x67\x01\x02\x03\x04"
    assert take_startup(cancel.encode()) == cancel
    long_key = su.CancelRequest(1, bytes(range(32)))  # protocol 3.2 keys are up to 256 bytes
    assert take_startup(long_key.encode()) == long_key


@pytest.mark.parametrize("body, message", [
    (struct.pack("!I", 80877103) + b"x", "trailing"),
    (struct.pack("!II", 80877102, 1) + b"abc", "cancel key"),
    (struct.pack("!II", 80877102, 1) + bytes(257), "cancel key"),
    (struct.pack("!I", 2 << 16) + b"user\x00u\x00\x00", "unsupported frontend protocol 2.0"),
    (struct.pack("!I", 4 << 16) + b"user\x00u\x00\x00", "unsupported frontend protocol 4.0"),
    (struct.pack("!I", 3 << 16) + b"user\x00u\x00", "unterminated"),
    (struct.pack("!I", 3 << 16) + b"user\x00u\x00user\x00v\x00\x00", "duplicate startup parameter"),
    (struct.pack("!I", 3 << 16) + b"user\x00\xff\x00\x00", "UTF-8"),
    (struct.pack("!I", 3 << 16) + b"user\x00u\x00\x00junk", "trailing"),
    (b"\x00\x03", "shorter"),
])
def test_bad_startup_bodies(body, message):
    with pytest.raises(ProtocolViolation, match=message):
        su.decode(body)


@pytest.mark.parametrize("length", [0, 3, 4, 7, 10_001, 2**31, 2**32 - 1])
def test_startup_length_limits(length):
    buf = MessageBuffer()
    buf.feed(struct.pack("!I", length) + b"\x00\x03\x00\x00")
    with pytest.raises(ProtocolViolation, match=f"invalid length of startup packet: {length}"):
        buf.take_startup()


def test_startup_packet_of_exactly_10000_bytes_is_accepted():
    pad = "x" * (10_000 - 4 - 4 - len("user\0u\0options\0") - 2)
    packet = su.StartupMessage(su.PROTOCOL_3_0, {"user": "u", "options": pad}).encode()
    assert len(packet) == 10_000
    assert take_startup(packet).params["options"] == pad


# -- MessageBuffer -------------------------------------------------------------------------


def test_message_over_the_limit_is_refused_from_its_header():
    buf = MessageBuffer(max_message_size=100)
    buf.feed(b"Q" + struct.pack("!I", 101))  # the body never needs to arrive
    with pytest.raises(ProtocolViolation, match="over the limit of 100"):
        buf.take_messages()
    ok = MessageBuffer(max_message_size=100)
    ok.feed(frame(b"Q", bytes(96)))  # length field 100: exactly the limit
    assert ok.take_messages()[0] == [(b"Q", bytes(96))]


@pytest.mark.parametrize("length", [0, 1, 3])
def test_message_length_below_4_is_refused(length):
    buf = MessageBuffer()
    buf.feed(b"Q" + struct.pack("!I", length))
    with pytest.raises(ProtocolViolation, match=f"invalid message length {length}"):
        buf.take_messages()


def test_huge_declared_length_is_refused_without_waiting_for_the_body():
    buf = MessageBuffer()
    buf.feed(b"d\xff\xff\xff\xff")
    with pytest.raises(ProtocolViolation):
        buf.take_messages()


def test_messages_fed_byte_by_byte():
    msgs = [fe.Query("SELECT 1"), fe.Sync(), fe.CopyData(b"\x00" * 300), fe.Terminate()]
    stream = b"".join(m.encode() for m in msgs)
    buf = MessageBuffer()
    got, raws = [], b""
    for i in range(len(stream)):
        buf.feed(stream[i:i + 1])
        messages, raw = buf.take_messages()
        got += messages
        raws += raw
        if i + 1 < len(stream):
            assert len(buf) + len(raws) == i + 1
    assert [fe.decode(t, b) for t, b in got] == msgs and raws == stream and len(buf) == 0


def test_startup_fed_byte_by_byte_then_messages():
    startup = su.StartupMessage(su.PROTOCOL_3_0, {"user": "u"}).encode()
    stream = startup + fe.Query("x").encode()
    buf = MessageBuffer()
    bodies = []
    for i in range(len(startup)):
        buf.feed(stream[i:i + 1])
        body = buf.take_startup()
        if body is not None:
            bodies.append(body)
    assert len(bodies) == 1 and su.decode(bodies[0]).params == {"user": "u"}
    buf.feed(stream[len(startup):])
    assert buf.take_messages()[0] == [(b"Q", b"x\x00")]


# -- StreamWalker ----------------------------------------------------------------------------

BACKEND_STREAM = b"".join(m.encode() for m in [
    be.RowDescription((be.FieldDescription("a", 0, 0, 23, 4, -1, 0),)),
    be.DataRow((b"1",)), be.DataRow((b"x" * 70,)), be.CommandComplete("SELECT 2"),
    be.ReadyForQuery("I"), be.ParseComplete(), be.BindComplete(), be.NoData(),
    be.ErrorResponse.build("ERROR", "42P01", "nope"), be.ReadyForQuery("E"),
    be.CommandComplete("BEGIN"), be.ReadyForQuery("T"), be.Unknown(b"Z", b""), be.CopyData(b""),
])
EXPECTED = [(b"T", None), (b"D", None), (b"D", None), (b"C", None), (b"Z", ord("I")), (b"1", None), (b"2", None),
            (b"n", None), (b"E", None), (b"Z", ord("E")), (b"C", None), (b"Z", ord("T")), (b"Z", None), (b"d", None)]


def walk(chunks) -> list:
    walker = StreamWalker(b"Z")
    events = []
    for c in chunks:
        events += walker.feed(c)
    return events


def test_walker_whole_stream():
    assert walk([BACKEND_STREAM]) == EXPECTED


def test_walker_chopped_at_every_offset():
    s = BACKEND_STREAM
    for i in range(len(s) + 1):
        assert walk([s[:i], s[i:]]) == EXPECTED, i


def test_walker_chopped_at_every_pair_of_offsets():
    s = (be.DataRow((b"abc",)).encode() + be.ReadyForQuery("T").encode() + b"C\x00\x00\x00\x05x"
         + be.ReadyForQuery("E").encode())
    expected = walk([s])
    assert [e for e in expected if e[0] == b"Z"] == [(b"Z", ord("T")), (b"Z", ord("E"))]
    for i in range(len(s) + 1):
        for j in range(i, len(s) + 1):
            assert walk([s[:i], s[i:j], s[j:]]) == expected, (i, j)


def test_walker_byte_by_byte():
    assert walk([BACKEND_STREAM[i:i + 1] for i in range(len(BACKEND_STREAM))]) == EXPECTED


@FAST
@given(st.lists(st.integers(0, len(BACKEND_STREAM)), max_size=12))
def test_walker_random_chunking(cuts):
    cuts = sorted(set(cuts))
    bounds = [0, *cuts, len(BACKEND_STREAM)]
    assert walk([BACKEND_STREAM[a:b] for a, b in zip(bounds, bounds[1:])]) == EXPECTED


def ready_counts(chunks) -> tuple[int, list[int]]:
    """ready_count over chunks: total ReadyForQuery count and the status after each chunk with one."""
    walker = StreamWalker(b"Z")
    total, statuses = 0, []
    for c in chunks:
        n, status = walker.ready_count(c)
        total += n
        if n:
            statuses.append(status)
    return total, statuses


def test_ready_count_agrees_with_feed_at_every_split():
    s = BACKEND_STREAM
    for i in range(len(s) + 1):
        for j in range(i, len(s) + 1, 7):
            total, statuses = ready_counts([s[:i], s[i:j], s[j:]])
            assert total == 3, (i, j)  # Unknown(b"Z", b"") has no status byte and is not counted
            assert statuses[-1] == ord("T"), (i, j)


def test_ready_count_mixed_with_feed_keeps_alignment():
    walker = StreamWalker(b"Z")
    s = BACKEND_STREAM
    half = len(s) // 2
    first = walker.feed(s[:half])
    n, status = walker.ready_count(s[half:])
    assert sum(1 for t, f in first if t == b"Z" and f is not None) + n == 3 and status == ord("T")


def test_walker_refuses_length_below_4():
    with pytest.raises(ProtocolViolation):
        StreamWalker().feed(b"Z\x00\x00\x00\x03")


# -- fuzz: decoders raise ProtocolViolation and nothing else ------------------------------------

ALL_TAGS = sorted({*fe.MESSAGES, *be.MESSAGES, *be.COPY_RESPONSE_TAGS})


def _only_protocol_violation(fn, *args):
    try:
        return fn(*args)
    except ProtocolViolation:
        return None


@settings(max_examples=250, deadline=None)
@given(tag=st.sampled_from(ALL_TAGS), body=st.binary(max_size=80))
def test_fuzz_decoders(tag, body):
    for decode in (fe.decode, be.decode):
        msg = _only_protocol_violation(decode, tag, body)
        if msg is not None:
            # whatever a decoder accepts re-encodes byte-exact
            assert msg.encode() == frame(tag, body)
    pm = fe.PasswordMessage(body)
    _only_protocol_violation(pm.sasl_initial)
    _only_protocol_violation(pm.password)
    auth = _only_protocol_violation(be.Authentication.decode, body)
    if auth is not None:
        _only_protocol_violation(auth.sasl_mechanisms)


@settings(max_examples=250, deadline=None)
@given(tag=st.sampled_from(ALL_TAGS), n=st.integers(0, 6), parts=st.lists(
    st.sampled_from([b"\x00", b"\xff\xff", b"\x7f\xff", b"\x80\x00", b"\xff\xff\xff\xff", b"\x00\x00\x00\x01",
                     b"\x00\x01", b"S", b"P", b"a\x00", b"\xc3\x28\x00", b"\xff"]), max_size=10))
def test_fuzz_decoders_structured(tag, n, parts):
    """Field-shaped garbage (counts, -1 lengths, bad UTF-8) reaches deeper than random bytes."""
    body = b"".join(parts)
    for decode in (fe.decode, be.decode):
        msg = _only_protocol_violation(decode, tag, body)
        if msg is not None:
            assert msg.encode() == frame(tag, body)


@settings(max_examples=250, deadline=None)
@given(body=st.one_of(
    st.binary(max_size=60),
    st.builds(lambda code, rest: struct.pack("!I", code) + rest,
              st.sampled_from([80877102, 80877103, 80877104, 3 << 16, (3 << 16) | 2, 0, 2 << 16]),
              st.binary(max_size=40)),
))
def test_fuzz_startup_decoder(body):
    msg = _only_protocol_violation(su.decode, body)
    if msg is not None and not isinstance(msg, su.StartupMessage):
        assert msg.encode()[4:] == body


@settings(max_examples=250, deadline=None)
@given(st.binary(max_size=200), st.integers(1, 64))
def test_fuzz_message_buffer_and_walker(data, step):
    buf = MessageBuffer(max_message_size=1000)
    walker = StreamWalker(b"Z")
    for i in range(0, len(data), step):
        chunk = data[i:i + step]
        buf.feed(chunk)
        _only_protocol_violation(buf.take_messages)
        if _only_protocol_violation(walker.feed, chunk) is None:
            walker = StreamWalker(b"Z")


# -- fuzz: a fresh Session never raises ----------------------------------------------------------

_VERIFIER = make_verifier("pw")
_SETTINGS = SessionSettings(database="db", verifier_for={"u": _VERIFIER}.get)


def _check_session(chunks: list[bytes], allowed_codes: set[str]) -> None:
    session = Session(_SETTINGS, 1, b"\x00\x00\x00\x01")
    out = []
    for chunk in chunks:
        out += session.handle(ClientDataReceived(chunk))
    closes = [i for i, c in enumerate(out) if isinstance(c, Close)]
    if not closes:
        return
    assert closes == [len(out) - 1], out  # Close is the last command, given once
    last = out[-2]
    assert isinstance(last, SendToClient)
    ((tag, body),) = split_frames(last.data)
    err = be.decode(tag, body)
    assert isinstance(err, be.ErrorResponse) and err.get("S") == "FATAL"
    assert err.get("C") in allowed_codes, err


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=50), min_size=1, max_size=4))
def test_fuzz_session_arbitrary_bytes(chunks):
    _check_session(chunks, {"08P01", "28000"})  # 28000: a valid packet without a user


_STARTUP = su.StartupMessage(su.PROTOCOL_3_0, {"user": "u", "database": "db"}).encode()
_SASL_OK_PREFIX = frame(b"p", b"SCRAM-SHA-256\x00")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=40), st.sampled_from([
    _STARTUP, su.SSLRequest().encode(), su.GSSENCRequest().encode(), fe.Query("x").encode(), fe.Sync().encode(),
    frame(b"p", b"SCRAM-SHA-256\x00\x00\x00\x00\x0bn,,n=,r=abc"), frame(b"p", b"c=biws,r=abc,p=AAAA"),
    b"p\x00\x00\x00", b"p\x7f\xff\xff\xff"])), min_size=1, max_size=5))
def test_fuzz_session_plausible_streams(chunks):
    """Valid pieces mixed with garbage reach the auth states; failures there are 08P01 or 28P01."""
    _check_session(chunks, {"08P01", "28000", "28P01"})
