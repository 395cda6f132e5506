"""The governed relay's fast paths: the same bytes, refusals and bookkeeping as the general path.

A governed Session (sans-io, a hand-built catalog, no PostgreSQL) is driven two ways with the same
client messages: chunk by chunk, as the socket hands them over (``client_bytes`` for Bind/Describe/
Execute/Sync chunks, the in-place chunk relay for the rest), and one byte at a time, which always
takes the buffered general path. Both must send the backend exactly the same bytes and leave the
same state. Then the cases a fast path could get wrong on its own: a Bind of a statement prepared
under another policy, a reload between two Parses of the same text, partial and invalid messages,
Terminate, and a statement waiting for a DP answer in the middle of a chunk.
"""
from __future__ import annotations

import random
import re
import types

import pytest

from proxy.config import parse_config
from proxy.policy_state import PolicyHolder, PolicyState
from proxy.session import (BackendDataReceived, ClientDataReceived, Close, SendToBackend, SendToClient, Session,
                           SessionSettings)
from proxy.session.commands import AnswerDP
from proxy.session.events import DPAnswered
from proxy.session.governor import AskDP, Forward
from proxy.wire import MessageBuffer
from proxy.wire import backend as be
from proxy.wire import frontend as fe
from rewrite.catalog import Catalog, Column, Relation

from .test_session_playbook import DB, VERIFIERS, login

POLICIES = """
listen: {host: 127.0.0.1, port: 0}
backend: {dsn: "postgresql://svc@127.0.0.1:5432/appdb", password_env: PGVEIL_FASTPATH_PW}
keys: {master_key_env: PGVEIL_FASTPATH_KEY}
users:
  alice: {password_env: PGVEIL_FASTPATH_PW}
  bob: {password_env: PGVEIL_FASTPATH_PW}
tables:
  public.t: {key: id}
policies:
  - name: read-t
    access: {tables: [public.t, public.u], allow: {users: [alice, bob]}}
  - name: rows
    row_filter: {table: public.t, where: "id > 0", for: {users: [alice]}}
"""
MASK = """
  - name: hide-secret
    mask: {column: public.t.secret, type: constant, value: "-", for: {users: [alice]}}
"""

SELECT = "SELECT secret FROM t WHERE id = $1"
OTHER = "SELECT v FROM u WHERE v = $1"


def _catalog() -> Catalog:
    return Catalog.build(DB, [
        Relation(16001, "public", "t", "table", (Column("id", "integer", "int4"), Column("secret", "text", "text"))),
        Relation(16002, "public", "u", "table", (Column("v", "integer", "int4"),)),
    ], operators={(op, "int4", "int4"): True for op in ("=", ">", "<")})


def _state(monkeypatch, mask: bool) -> PolicyState:
    monkeypatch.setenv("PGVEIL_FASTPATH_PW", "pw")
    monkeypatch.setenv("PGVEIL_FASTPATH_KEY", "k" * 32)
    config = parse_config(POLICIES + (MASK if mask else ""))
    return PolicyState.build(config, {}, _catalog())


@pytest.fixture
def holder(monkeypatch):
    return PolicyHolder(_state(monkeypatch, mask=True))


_TOKEN = re.compile(rb"pgveil_refusal_[0-9a-f]{16}")


def same(data: bytes) -> bytes:
    """``data`` with refusal tokens (random, each unique) replaced by one placeholder."""
    return _TOKEN.sub(b"pgveil_refusal_<token>", data)


def session(holder) -> Session:
    s = Session(SessionSettings(database=DB, verifier_for=VERIFIERS.get, holder=holder), 4242, b"\xde\xad\xbe\xef")
    login(s, "alice")
    assert s.governed is not None
    return s


def feed(s: Session, data: bytes) -> bytes:
    """What the session sends the backend for one client chunk, by whichever path the server would take."""
    fast = s.client_bytes(data)
    if fast is not None:
        return fast
    return b"".join(c.data for c in s.handle(ClientDataReceived(data)) if isinstance(c, SendToBackend))


def feed_bytewise(s: Session, data: bytes) -> bytes:
    out = []
    for i in range(len(data)):
        out += [c.data for c in s.handle(ClientDataReceived(data[i:i + 1])) if isinstance(c, SendToBackend)]
    return b"".join(out)


def answer(s: Session, data: bytes) -> list:
    return s.handle(BackendDataReceived(data))


def messages(data: bytes) -> list:
    buf = MessageBuffer()
    buf.feed(data)
    msgs, raw = buf.take_messages()
    assert raw == data
    return [fe.decode(t, b) for t, b in msgs]


def parse(name: str, sql: str) -> bytes:
    return fe.Parse(name, sql, ()).encode()


def bind(stmt: str, value: bytes = b"1", portal: str = "") -> bytes:
    return fe.Bind(portal, stmt, (0,), (value,), (0,)).encode()


READY = be.ReadyForQuery("I").encode()
DESCRIBE, EXECUTE, SYNC, FLUSH = (fe.Describe("P", "").encode(), fe.Execute("", 0).encode(), fe.Sync().encode(),
                                  fe.Flush().encode())


def state_of(s: Session) -> tuple:
    g = s.governed
    return (s.in_flight, g.syncs_sent, dict(g.prepared.protocol), dict(g.prepared.sql),
            sorted((group, err) for group, err in g._refusals.values()), len(s._client_buf), g.swallow._pc_in_group, list(g.swallow._ahead),
            dict(g.prepared.sources))


# -- the same bytes and state either way ---------------------------------------------------------------


def _pieces(rnd: random.Random) -> list[bytes]:
    return [
        parse("s1", SELECT), parse("", SELECT), parse("s2", OTHER), parse("", "SELECT * FROM nowhere"),
        parse("s3", "SELECT 1; SELECT 2"), bind("s1", str(rnd.randint(1, 99)).encode()), bind("s2"), bind(""),
        bind("unknown"), DESCRIBE, EXECUTE, SYNC, FLUSH, fe.Close("S", "s2").encode(), fe.Close("P", "").encode(),
        fe.Query(f"SELECT secret FROM t WHERE id = {rnd.randint(1, 10**6)}").encode(),
        fe.Query("PREPARE q AS SELECT secret FROM t").encode(), fe.Query("EXECUTE q").encode(),
        fe.Query("SELECT pg_read_file('/etc/passwd')").encode(),
    ]


@pytest.mark.parametrize("seed", range(40))
def test_chunks_relay_as_the_buffered_path_does(holder, seed):
    rnd = random.Random(seed)
    fast, slow = session(holder), session(holder)
    for _ in range(12):
        chunk = b"".join(rnd.choice(_pieces(rnd)) for _ in range(rnd.randint(1, 6)))
        assert same(feed(fast, chunk)) == same(feed_bytewise(slow, chunk))
        assert state_of(fast) == state_of(slow)


def test_prepared_mode_chunks_take_the_raw_path(holder):
    s, other = session(holder), session(holder)
    judged = s.client_bytes(parse("s1", SELECT) + SYNC)  # a leading Parse is judged in place
    assert judged == feed_bytewise(other, parse("s1", SELECT) + SYNC) and b"'-'" in judged  # masked
    assert state_of(s) == state_of(other)
    assert s.client_bytes(bind("s1") + parse("s2", OTHER) + SYNC) is None  # a Parse after a Bind: in order
    # Binds in a later sync group than the Parse's: the general path (a DP statement's answer may be stale there)
    assert s.client_bytes(parse("s1", SELECT) + bind("s1") + SYNC + bind("s1") + EXECUTE + SYNC) is None
    assert s.client_bytes(parse("s1", SELECT) + bind("s1") + EXECUTE + SYNC) is not None
    chunk = bind("s1", b"7") + DESCRIBE + EXECUTE + SYNC
    syncs, in_flight = s.governed.syncs_sent, s.in_flight
    assert s.client_bytes(chunk) == chunk
    assert (s.governed.syncs_sent, s.in_flight) == (syncs + 1, in_flight + 1)


# -- a Bind never skips the policy check ----------------------------------------------------------------


def test_bind_of_a_statement_prepared_under_another_policy_is_prepared_again(holder, monkeypatch):
    """A stale Bind never passes as it is: the general path judges the statement again (and re-prepares it)."""
    s = session(holder)
    sent = messages(feed(s, parse("s1", SELECT) + SYNC))
    assert "'-'" in sent[0].query  # masked
    answer(s, b"1\x00\x00\x00\x04" + READY)
    ok = bind("s1") + DESCRIBE + EXECUTE + SYNC
    assert s.client_bytes(ok) == ok
    answer(s, b"2\x00\x00\x00\x04" + be.CommandComplete("SELECT 0").encode() + READY)
    holder.swap(_state(monkeypatch, mask=False))  # a reload: the mask is gone
    chunk = bind("s1") + DESCRIBE + EXECUTE + SYNC
    assert s.client_bytes(chunk) is None
    out = messages(feed(s, chunk))
    assert [type(m) for m in out] == [fe.Close, fe.Parse, fe.Bind, fe.Describe, fe.Execute, fe.Sync]
    assert out[1].name == "s1" and "'-'" not in out[1].query  # rewritten under the new policy
    shown = [m for c in answer(s, b"3\x00\x00\x00\x04" + b"1\x00\x00\x00\x04" + b"2\x00\x00\x00\x04"
                                  + be.CommandComplete("SELECT 0").encode() + READY)
             if isinstance(c, SendToClient) for m in _backend_messages(c.data)]
    assert [type(m).__name__ for m in shown][-2:] == ["CommandComplete", "ReadyForQuery"]
    assert not any(type(m).__name__ in ("CloseComplete", "ParseComplete") for m in shown)
    assert s.client_bytes(ok) == ok  # prepared under the current policy now: the fast path again


def test_stale_bind_refused_under_the_new_policy(holder, monkeypatch):
    s = session(holder)
    feed(s, parse("s1", SELECT) + SYNC)
    answer(s, b"1\x00\x00\x00\x04" + READY)
    monkeypatch.setenv("PGVEIL_FASTPATH_PW", "pw")
    config = parse_config(POLICIES.replace("allow: {users: [alice, bob]}", "allow: {users: [bob]}"))
    holder.swap(PolicyState.build(config, {}, _catalog()))
    chunk = bind("s1") + DESCRIBE + EXECUTE + SYNC
    assert s.client_bytes(chunk) is None
    out = messages(feed(s, chunk))
    assert isinstance(out[0], fe.Parse) and out[0].query.startswith("pgveil_refusal_")  # fails in the Bind's place
    assert [type(m) for m in out[1:]] == [fe.Describe, fe.Execute, fe.Sync]
    token = out[0].query
    err = be.error("42601", f'syntax error at or near "{token}"')
    shown = [m for c in answer(s, err + READY) if isinstance(c, SendToClient) for m in _backend_messages(c.data)]
    assert shown[0].get("C") not in (None, "42601") and token not in (shown[0].get("M") or "")
    assert isinstance(shown[1], be.ReadyForQuery)
    assert s.client_bytes(chunk) is None  # still not current: every Bind of it goes to the general path


def test_stale_bind_among_current_ones_takes_the_general_path(holder, monkeypatch):
    s = session(holder)
    feed(s, parse("s1", SELECT) + SYNC)
    holder.swap(_state(monkeypatch, mask=False))
    feed(s, parse("s2", SELECT) + SYNC)  # prepared under the new policy
    chunk = bind("s2") + EXECUTE + bind("s1") + EXECUTE + SYNC
    assert s.client_bytes(chunk) is None
    out = messages(feed(s, chunk))
    assert isinstance(out[0], fe.Bind) and out[0].statement == "s2"
    assert not isinstance(out[2], fe.Bind)  # s1 is not bound as it was: prepared again or refused


def test_context_key_follows_purpose_and_reload(holder, monkeypatch):
    s = session(holder)
    g = s.governed.governor
    k1 = g.context_key()
    assert g.context_key() is k1  # cached
    holder.swap(_state(monkeypatch, mask=True))  # same policies, new snapshot: same key, recomputed
    k2 = g.context_key()
    assert k2 == k1
    holder.swap(_state(monkeypatch, mask=False))
    assert g.context_key() != k1
    k3 = g.context_key()
    g.purpose = "Research"  # as choose() sets it: another subject
    assert g.context_key()[0] != k3[0]
    g.purpose = None
    assert g.context_key() == k3


# -- Parse: judged every time, even with its encoding kept ------------------------------------------------


def test_parse_is_judged_again_after_a_reload(holder, monkeypatch):
    s = session(holder)
    first = messages(feed(s, parse("", SELECT) + SYNC))[0].query
    again = messages(feed(s, parse("", SELECT) + SYNC))[0].query
    assert first == again and "'-'" in first
    holder.swap(_state(monkeypatch, mask=False))
    after = messages(feed(s, parse("", SELECT) + SYNC))[0].query
    assert after != first and "'-'" not in after
    holder.swap(_state(monkeypatch, mask=True))
    assert messages(feed(s, parse("", SELECT) + SYNC))[0].query == first


def test_parse_refused_after_a_reload_that_removes_access(holder, monkeypatch):
    s = session(holder)
    assert "'-'" in messages(feed(s, parse("", SELECT) + SYNC))[0].query
    monkeypatch.setenv("PGVEIL_FASTPATH_PW", "pw")
    config = parse_config(POLICIES.replace("allow: {users: [alice, bob]}", "allow: {users: [bob]}"))
    holder.swap(PolicyState.build(config, {}, _catalog()))
    assert messages(feed(s, parse("", SELECT) + SYNC))[0].query.startswith("pgveil_refusal_")


# -- framing ------------------------------------------------------------------------------------------------


def test_partial_message_at_the_end_of_a_chunk_waits_for_the_rest(holder):
    s, ref = session(holder), session(holder)
    data = parse("s1", SELECT) + bind("s1") + EXECUTE + SYNC + fe.Query("SELECT 1").encode()
    for cut in range(1, len(data)):
        s, ref = session(holder), session(holder)
        assert same(feed(s, data[:cut]) + feed(s, data[cut:])) == same(feed_bytewise(ref, data))
        assert state_of(s) == state_of(ref)


def test_invalid_length_in_a_chunk_is_fatal_before_anything_is_judged(holder):
    s = session(holder)
    bad = fe.Query("SELECT 1").encode() + b"S\x00\x00\x00\x02"
    out = s.handle(ClientDataReceived(bad))
    assert not any(isinstance(c, SendToBackend) for c in out)
    assert isinstance(out[-1], Close)
    assert s.governed.syncs_sent == 0


def test_terminate_in_a_chunk(holder):
    s = session(holder)
    out = s.handle(ClientDataReceived(parse("", SELECT) + SYNC + fe.Terminate().encode() + SYNC))
    sent = messages(b"".join(c.data for c in out if isinstance(c, SendToBackend)))
    assert [type(m) for m in sent] == [fe.Parse, fe.Sync, fe.Terminate]
    assert isinstance(out[-1], Close)


# -- a statement waiting for a DP answer in the middle of a chunk -----------------------------------------


def test_dp_statement_mid_chunk_holds_the_rest_in_order(holder, monkeypatch):
    s = session(holder)
    g = s.governed.governor
    real = g.judge

    plan = types.SimpleNamespace(cache_key="dp-plan")

    def judge(sql, **kw):
        return AskDP(plan) if sql == "SELECT dp" else real(sql, **kw)

    monkeypatch.setattr(g, "judge", judge)
    chunk = bind("x") + EXECUTE + fe.Query("SELECT dp").encode() + fe.Query("SELECT 1").encode()
    out = s.handle(ClientDataReceived(chunk))
    assert isinstance(out[-1], AnswerDP)
    sent = messages(b"".join(c.data for c in out if isinstance(c, SendToBackend)))
    assert [type(m) for m in sent] == [fe.Bind, fe.Execute]
    assert s.client_bytes(SYNC) is None  # suspended: nothing overtakes the held statements
    out = s.handle(DPAnswered(plan, Forward("SELECT 42")))
    sent = messages(b"".join(c.data for c in out if isinstance(c, SendToBackend)))
    assert [m.sql for m in sent[:2]] == ["SELECT 42", "SELECT 1"]


def _backend_messages(data: bytes) -> list:
    buf = MessageBuffer()
    buf.feed(data)
    msgs, _ = buf.take_messages()
    return [be.decode(t, b) for t, b in msgs]


# -- the backend direction ----------------------------------------------------------------------------------



def test_fast_backend_path_counts_ready_for_query_for_the_relay(holder):
    s = session(holder)
    feed(s, parse("s1", SELECT) + SYNC)
    assert s.backend_bytes(b"1\x00\x00\x00\x04" + READY)
    for _ in range(5):
        chunk = bind("s1") + EXECUTE + SYNC
        assert s.client_bytes(chunk) == chunk
        assert s.backend_bytes(b"2\x00\x00\x00\x04" + be.CommandComplete("SELECT 0").encode() + READY)
    assert s.governed.ready_received == s.governed.syncs_sent == 6
    assert s.in_flight == 0


def test_skipped_refusal_is_forgotten_after_fast_path_traffic(holder):
    """A refusal whose stand-in the backend skipped (an earlier error in its group) ends at its ReadyForQuery."""
    s = session(holder)
    feed(s, parse("s1", SELECT) + SYNC)
    s.backend_bytes(b"1\x00\x00\x00\x04" + READY)
    for _ in range(3):
        assert s.client_bytes(bind("s1") + EXECUTE + SYNC) is not None
        assert s.backend_bytes(b"2\x00\x00\x00\x04" + be.CommandComplete("SELECT 0").encode() + READY)
    out = messages(feed(s, bind("nope") + EXECUTE + parse("", "SELECT * FROM nowhere") + SYNC))
    assert out[2].query.startswith("pgveil_refusal_") and s.governed.pending
    # the backend fails the Bind of the unknown statement and skips the rest up to the Sync
    answer(s, be.error("26000", 'prepared statement "nope" does not exist') + READY)
    assert not s.governed.pending  # back on the fast path


def test_protocol_statements_know_their_shared_key():
    from proxy.session.prepared import ProtocolStatements

    p = ProtocolStatements()
    assert p.shared_key() is None
    p["a"] = ("k1",)
    assert p.shared_key() == ("k1",)
    p["b"] = ("k1",)
    assert p.shared_key() == ("k1",)
    p["c"] = ("k2",)
    assert p.shared_key() is None
    for change in (lambda: p.pop("c"), lambda: p.update(d=("k3",)), lambda: p.setdefault("e", ("k3",)),
                   lambda: p.__delitem__("a"), lambda: p.__ior__({"f": ("k4",)}), lambda: p.popitem(), p.clear):
        before = dict(p)
        change()
        keys = set(p.values())
        assert p.shared_key() == (next(iter(keys)) if len(keys) == 1 else None), (before, dict(p))


def test_malformed_bind_takes_the_general_path(holder):
    s = session(holder)
    bad = b"B\x00\x00\x00\x08abcd" + SYNC  # no string terminators
    assert s.client_bytes(bad) is None
    feed(s, parse("s1", SELECT) + SYNC)
    assert s.client_bytes(bad) is None
    out = s.handle(ClientDataReceived(bad))
    assert isinstance(out[-1], Close)  # the decoder's ProtocolViolation: FATAL


# -- audited sessions: the same records either way ------------------------------------------------------


def _audited_session(monkeypatch, user: str, records: list) -> Session:
    monkeypatch.setenv("PGVEIL_FASTPATH_PW", "pw")
    monkeypatch.setenv("PGVEIL_FASTPATH_KEY", "k" * 32)
    config = parse_config(POLICIES.replace("bob: {password_env: PGVEIL_FASTPATH_PW}",
                                           "bob: {password_env: PGVEIL_FASTPATH_PW, unrestricted: true}") + MASK)
    holder = PolicyHolder(PolicyState.build(config, {}, _catalog()))
    s = Session(SessionSettings(database=DB, verifier_for=VERIFIERS.get, holder=holder, audit=records.append,
                                clock=lambda: 0.0), 4242, b"\xde\xad\xbe\xef")
    login(s, user)
    assert (s.governed is not None) == (user == "alice") and s.audit is not None
    return s


def _comparable(records: list) -> list:
    return [{k: v for k, v in r.to_dict().items() if k != "ts"} for r in records]


@pytest.mark.parametrize("user", ["alice", "bob"])
@pytest.mark.parametrize("seed", range(15))
def test_audited_chunks_record_as_the_buffered_path_does(monkeypatch, user, seed):
    rnd = random.Random(seed)
    fast_records, slow_records = [], []
    fast, slow = _audited_session(monkeypatch, user, fast_records), _audited_session(monkeypatch, user, slow_records)
    for _ in range(10):
        chunk = b"".join(rnd.choice(_pieces(rnd)) for _ in range(rnd.randint(1, 6)))
        assert same(feed(fast, chunk)) == same(feed_bytewise(slow, chunk))
        assert fast.in_flight == slow.in_flight
        rows = be.DataRow([b"1"]).encode() * rnd.randint(0, 2)
        for s in (fast, slow):
            for _ in range(s.in_flight):
                answer(s, rows + READY)
        assert _comparable(fast_records) == _comparable(slow_records)
    assert fast_records  # the chunks held statements
