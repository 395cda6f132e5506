"""The C relay thread (proxy/_relay.c) of pass-through sessions, over real sockets.

First the core alone between two socketpairs standing for client and backend: bytes arrive
unchanged in both directions whatever the chunking, statements in flight are counted as the
Python walks count them, invalid lengths stop the pair before a byte of the bad message is
forwarded, backpressure bounds what it buffers, and every way a pair ends is reported. Then
through a live proxy: unrestricted sessions are really handed over and behave as before.
"""
from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from proxy.relay_thread import PairClosed, PairViolation, RelayThread
from proxy.wire import backend as be
from proxy.wire.framing import MessageBuffer, ProtocolViolation

from .pgfixture import ProxyThread, client_dsn, proxy_settings
from .polling import wait_until
from .speedups import c_module, skip_unless_built

_relay = c_module("proxy._relay")
pytestmark = skip_unless_built(_relay)

LIMIT = 1 << 20


def msg(tag: bytes, body: bytes = b"") -> bytes:
    return tag + struct.pack("!I", len(body) + 4) + body


def ready(status: bytes = b"I") -> bytes:
    return msg(b"Z", status)


class Rig:
    """A relay thread with one pair: ``client`` and ``backend`` are the far ends of its sockets."""

    def __init__(self, in_flight: int = 0, limit: int = LIMIT, client_sndbuf: int | None = None) -> None:
        self.relay = RelayThread(_relay.Core())
        self.client, near_client = socket.socketpair()
        near_backend, self.backend = socket.socketpair()
        if client_sndbuf is not None:  # how much the relay can hand the kernel for a client that does not read
            near_client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, client_sndbuf)
        for s in (near_client, near_backend):
            s.setblocking(False)
        self.owner = object()
        self.pair = self.relay.adopt(self.owner, os.dup(near_client.fileno()), os.dup(near_backend.fileno()),
                                     in_flight, "I", limit)
        near_client.close()
        near_backend.close()
        for s in (self.client, self.backend):
            s.settimeout(5)

    def events(self, timeout: float = 5.0) -> list:
        readable, _, _ = select.select([self.relay.notify_fd], [], [], timeout)
        return [what for owner, what in self.relay.events() if owner is self.owner] if readable else []

    def wait_for(self, kind, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for what in self.events(deadline - time.monotonic()):
                if isinstance(what, kind):
                    return what
        raise AssertionError(f"no {kind.__name__} event")

    def close(self) -> None:
        self.relay.stop()
        self.client.close()
        self.backend.close()


@pytest.fixture
def rig():
    r = Rig()
    yield r
    r.close()


def read_exactly(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, f"EOF after {len(out)} of {n} bytes"
        out += chunk
    return bytes(out)


def read_to_eof(sock: socket.socket) -> bytes:
    out = bytearray()
    while chunk := sock.recv(65536):
        out += chunk
    return bytes(out)


def fill(sock: socket.socket, data: bytes) -> int:
    """Send until the socket would block; how much went."""
    sock.setblocking(False)
    sent = 0
    try:
        while sent < len(data):
            sent += sock.send(data[sent:sent + 65536])
    except BlockingIOError:
        pass
    return sent


def send_in_pieces(sock: socket.socket, data: bytes, cuts: list[int]) -> None:
    start = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}) + [len(data)]:
        if cut > start:
            sock.sendall(data[start:cut])
            time.sleep(0.001)  # let the relay read each piece on its own
            start = cut


_CLIENT_MESSAGES = st.lists(st.tuples(st.sampled_from(b"QSPBEDHdcf"), st.binary(max_size=300)), min_size=1, max_size=12)
_BACKEND_MESSAGES = st.lists(st.tuples(st.sampled_from(b"TDCZNAEs1"), st.binary(min_size=1, max_size=300)),
                             min_size=1, max_size=12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(client=_CLIENT_MESSAGES, backend=_BACKEND_MESSAGES, cuts=st.lists(st.integers(0, 5000), max_size=8))
def test_bytes_pass_unchanged_and_statements_are_counted(client, backend, cuts):
    r = Rig()
    try:
        upstream = b"".join(msg(bytes([t]), body) for t, body in client)
        syncs = sum(t in b"QSF" for t, _ in client)
        send_in_pieces(r.client, upstream, cuts)
        assert read_exactly(r.backend, len(upstream)) == upstream
        assert wait_until(lambda: r.pair.in_flight == syncs)
        downstream = b"".join(msg(bytes([t]), body) for t, body in backend)
        readies = [body[0] for t, body in backend if t == ord("Z")]
        send_in_pieces(r.backend, downstream, cuts)
        assert read_exactly(r.client, len(downstream)) == downstream
        assert wait_until(lambda: r.pair.in_flight == max(0, syncs - len(readies)))
        if readies:
            assert r.pair.transaction_status == chr(readies[-1])
    finally:
        r.close()


def _valid_prefix(data: bytes, limit: int, client: bool) -> tuple[int, str]:
    """The bytes of ``data`` the relay forwards (messages with valid headers, the last one's body perhaps
    cut short; not a partial header), and what ends them: "invalid" header, client "terminate", or "more"."""
    pos = 0
    while len(data) - pos >= 5:
        length = int.from_bytes(data[pos + 1:pos + 5], "big")
        if length < 4 or (client and length > limit):
            return pos, "invalid"
        if client and data[pos] == ord("X"):
            return min(pos + 1 + length, len(data)), "terminate"
        pos += 1 + length
    return min(pos, len(data)), "more"


_GARBAGE = st.one_of(st.binary(min_size=1, max_size=3000),  # and streams that start well, then go wrong
                     st.tuples(_CLIENT_MESSAGES, st.binary(max_size=40)).map(
                         lambda t: b"".join(msg(bytes([tag]), body) for tag, body in t[0]) + t[1]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=_GARBAGE, from_client=st.booleans(), cuts=st.lists(st.integers(0, 3000), max_size=5))
def test_garbage_from_either_side_forwards_only_valid_messages(garbage, from_client, cuts):
    """Whatever arrives: what is forwarded is the stream up to the first invalid header (nothing of that one)."""
    r = Rig(limit=1000)
    try:
        src, dst = (r.client, r.backend) if from_client else (r.backend, r.client)
        send_in_pieces(src, garbage, cuts)
        valid, end = _valid_prefix(garbage, 1000, from_client)
        if end == "invalid":
            assert r.wait_for(PairViolation).from_client == from_client
        dst.settimeout(2)
        assert read_exactly(dst, valid) == garbage[:valid]  # a partial last header waits for the rest
        if end == "terminate":
            assert read_to_eof(dst) == b""  # the Terminate ends the pair; nothing after it goes on
            return
        time.sleep(0.02)
        dst.setblocking(False)
        with pytest.raises(BlockingIOError):  # and not one byte more
            dst.recv(1)
    finally:
        r.close()


def test_a_large_stream_keeps_its_order_both_ways(rig):
    rows = b"".join(msg(b"D", struct.pack("!HI", 1, 8) + i.to_bytes(8, "big")) for i in range(200_000))
    answer = rows + ready()
    got = bytearray()
    reader = threading.Thread(target=lambda: got.extend(read_exactly(rig.client, len(answer))))
    reader.start()
    rig.client.sendall(msg(b"Q", b"SELECT ...\x00"))
    assert read_exactly(rig.backend, 16) == msg(b"Q", b"SELECT ...\x00")
    rig.backend.sendall(answer)
    reader.join(20)
    assert bytes(got) == answer
    assert wait_until(lambda: rig.pair.in_flight == 0)


def test_a_slow_reader_bounds_what_the_relay_takes(rig):
    """The backend reads nothing: the relay stops reading the client, whose sends then block."""
    stream = msg(b"d", b"x" * 65531) * 1024  # 64 MiB of CopyData
    rig.client.setblocking(False)
    sent = 0
    stalled_at = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sent < len(stream):
        try:
            sent += rig.client.send(stream[sent:sent + 65536])
        except BlockingIOError:
            if stalled_at == sent:
                break  # no progress over a pause: the relay is not reading
            stalled_at = sent
            time.sleep(0.2)
    assert stalled_at == sent, "the client could write without bound"
    assert sent < 16 * 1024 * 1024  # socket buffers and one relay buffer, not the stream
    assert read_exactly(rig.backend, sent) == stream[:sent]  # and all of it flows once read
    assert rig.events(0.2) == []


def test_terminate_ends_the_pair_after_forwarding_it(rig):
    rig.client.sendall(msg(b"S") + msg(b"X") + msg(b"Q", b"after terminate\x00"))
    assert read_to_eof(rig.backend) == msg(b"S") + msg(b"X")  # nothing after the Terminate, and no second one
    assert rig.wait_for(PairClosed) == PairClosed(cancel=True)  # the Sync was still unanswered
    assert read_to_eof(rig.client) == b""


def test_a_client_that_vanishes_mid_statement_is_reported_for_cancel(rig):
    rig.client.sendall(msg(b"Q", b"SELECT pg_sleep(30)\x00"))
    read_exactly(rig.backend, 25)
    rig.client.close()
    assert rig.wait_for(PairClosed) == PairClosed(cancel=True)
    assert read_to_eof(rig.backend) == msg(b"X")  # the backend session is ended cleanly


def test_an_idle_client_leaving_needs_no_cancel(rig):
    rig.client.sendall(msg(b"Q", b"SELECT 1\x00"))
    read_exactly(rig.backend, 14)
    rig.backend.sendall(msg(b"C", b"SELECT 1\x00") + ready())
    read_exactly(rig.client, 20)
    rig.client.shutdown(socket.SHUT_WR)
    assert rig.wait_for(PairClosed) == PairClosed(cancel=False)


@pytest.mark.parametrize("header, length", [(b"Q\x00\x00\x00\x02", 2), (b"P" + struct.pack("!I", LIMIT + 1), LIMIT + 1)])
def test_an_invalid_client_length_stops_the_pair_before_the_message(rig, header, length):
    rig.client.sendall(msg(b"S") + header + b"more bytes of the bad message")
    assert read_exactly(rig.backend, 5) == msg(b"S")
    violation = rig.wait_for(PairViolation)
    expected = MessageBuffer(LIMIT)
    expected.feed(header)
    with pytest.raises(ProtocolViolation) as exc:
        expected.take_messages()
    assert violation == PairViolation(True, str(exc.value))  # the event loop's own wording
    rig.pair.close(be.error("08P01", violation.message, severity="FATAL"))
    assert read_to_eof(rig.client) == be.error("08P01", violation.message, severity="FATAL")
    assert read_to_eof(rig.backend) == msg(b"X")  # nothing of the bad message, ever
    assert rig.wait_for(PairClosed) == PairClosed(cancel=False)


def test_an_invalid_backend_length_is_reported(rig):
    rig.backend.sendall(msg(b"N", b"notice\x00") + b"D\x00\x00\x00\x01")
    assert read_exactly(rig.client, 12) == msg(b"N", b"notice\x00")
    violation = rig.wait_for(PairViolation)
    assert violation == PairViolation(False, "invalid message length 1 from server")


def test_a_closing_backend_still_delivers_what_it_sent(rig):
    farewell = msg(b"E", b"SFATAL\x00C57P01\x00Mterminating\x00\x00")
    rig.backend.sendall(farewell)
    rig.backend.close()
    assert read_to_eof(rig.client) == farewell
    assert rig.wait_for(PairClosed) == PairClosed(cancel=False)


def test_close_sends_the_final_bytes_after_what_is_pending():
    """The client reads nothing while the backend floods: what the relay holds still goes first, and
    the final bytes start on a message boundary (the unsent part of an unfinished message is dropped)."""
    rig = Rig(client_sndbuf=4096)
    flood = b"".join(msg(b"N", b"%07d\x00" % i) for i in range(100_000))
    sent = fill(rig.backend, flood)
    assert sent > 64 * 1024  # more than the relay's buffer: it stopped reading the backend
    time.sleep(0.2)
    rig.pair.close(b"FINAL")
    got = read_to_eof(rig.client)
    assert got.endswith(b"FINAL")
    relayed = got[:-5]
    assert len(relayed) > 32 * 1024 and flood.startswith(relayed)  # a prefix on message boundaries
    assert len(relayed) % len(msg(b"N", b"0000000\x00")) == 0
    try:
        assert read_to_eof(rig.backend) == msg(b"X")
    except ConnectionResetError:  # closed with the rest of the flood unread: a reset may come first
        pass
    assert rig.wait_for(PairClosed) == PairClosed(cancel=False)
    rig.pair.close(b"again")  # a closed pair: nothing happens
    rig.close()


def test_a_backend_that_hangs_up_while_the_client_is_slow_loses_nothing(rig):
    """On a Unix socket the hang-up comes at once, while the relay is not reading that side."""
    answer = b"".join(msg(b"D", b"%010d\x00" % i) for i in range(300_000)) + msg(b"E", b"SFATAL\x00Mbye\x00\x00")
    sent = fill(rig.backend, answer)
    time.sleep(0.3)
    rig.backend.close()
    time.sleep(0.3)
    assert read_to_eof(rig.client) == answer[:sent]
    assert rig.wait_for(PairClosed) == PairClosed(cancel=False)


def test_close_while_a_terminate_drains_to_the_backend_still_ends_the_pair(rig):
    upstream = msg(b"d", b"x" * 8000) * 200 + msg(b"X")
    got = bytearray()

    def slow_backend():
        try:
            while chunk := rig.backend.recv(4096):
                got.extend(chunk)
                time.sleep(0.0005)
        except (ConnectionResetError, TimeoutError):
            pass

    reader = threading.Thread(target=slow_backend)
    reader.start()
    rig.client.sendall(upstream)
    assert read_to_eof(rig.client) == b""  # the relay took the Terminate and let the client go
    rig.pair.close(b"FINAL")  # while it still drains to the backend: nobody to send FINAL to
    assert rig.wait_for(PairClosed, 3) == PairClosed(cancel=False)
    reader.join(10)
    assert upstream.startswith(bytes(got))


def test_a_second_close_sends_nothing_more(rig):
    rig.pair.close(b"FINAL")
    rig.pair.close(b"AGAIN")
    assert read_to_eof(rig.client) == b"FINAL"
    assert rig.wait_for(PairClosed) == PairClosed(cancel=False)


def test_stop_closes_every_pair():
    r = Rig()
    try:
        r.relay.stop()
        assert read_to_eof(r.client) == b""
        assert read_to_eof(r.backend) == msg(b"X")
        with pytest.raises(RuntimeError, match="stopped"):
            a, b = socket.socketpair()
            r.relay.adopt(object(), a.detach(), b.detach(), 0, "I", LIMIT)
    finally:
        r.client.close()
        r.backend.close()


# -- through a live proxy ---------------------------------------------------------------


@pytest.fixture
def fresh_proxy(pg):
    p = ProxyThread(proxy_settings(pg))
    yield p
    p.stop()


def test_unrestricted_sessions_are_handed_to_the_relay_thread(fresh_proxy):
    relayed = lambda: fresh_proxy.call(lambda: len(fresh_proxy.proxy.relay_thread))  # noqa: E731
    with psycopg.connect(client_dsn(fresh_proxy.port), autocommit=True) as a, \
            psycopg.connect(client_dsn(fresh_proxy.port)) as b:
        assert relayed() == 2
        assert a.execute("SELECT 1, 'x'::text").fetchone() == (1, "x")
        b.execute("SELECT 1")
        assert b.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        in_tx = fresh_proxy.call(lambda: [c.pair.transaction_status for c in fresh_proxy.proxy.connections])
        assert sorted(in_tx) == ["I", "T"]
        with pytest.raises(psycopg.errors.DivisionByZero):
            a.execute("SELECT 1/0")
        assert a.execute("SELECT 2").fetchone() == (2,)
    assert wait_until(lambda: relayed() == 0 and fresh_proxy.call(lambda: len(fresh_proxy.proxy.connections)) == 0)


def test_shutdown_reaches_relayed_sessions(fresh_proxy):
    conn = psycopg.connect(client_dsn(fresh_proxy.port), autocommit=True)
    fresh_proxy.stop()
    with pytest.raises(psycopg.OperationalError, match="terminating connection due to administrator command"):
        conn.execute("SELECT 1")
    conn.close()


def test_an_oversized_message_of_a_relayed_session_is_refused(pg):
    p = ProxyThread(proxy_settings(pg, max_message_size=4096))
    try:
        with psycopg.connect(client_dsn(p.port), autocommit=True) as conn:
            assert p.call(lambda: len(p.proxy.relay_thread)) == 1
            with pytest.raises(psycopg.OperationalError, match="over the limit of 4096"):
                conn.execute("SELECT %s::text", ("y" * 5000,))
            assert p.call(lambda: len(p.proxy.connections)) in (0, 1)
        assert wait_until(lambda: p.call(lambda: len(p.proxy.connections)) == 0)
    finally:
        p.stop()
