"""For an unrestricted user, every result through the proxy equals the direct result.

Compared with real drivers (psycopg text and binary, asyncpg binary) on the
column names, type OIDs and rows of a range of queries and types.
"""
from __future__ import annotations

import asyncio

import asyncpg
import psycopg
import pytest

QUERIES = [
    "SELECT * FROM items ORDER BY id",
    "SELECT id, name, price FROM items WHERE id BETWEEN 10 AND 20 ORDER BY id",
    "SELECT count(*), sum(price), avg(ratio), max(created), min(day) FROM items",
    "SELECT active, count(*) FROM items GROUP BY active ORDER BY active",
    "SELECT tags, doc, blob, uid, span FROM items WHERE id % 97 = 1 ORDER BY id",
    "SELECT 1 AS one, NULL::text AS nothing, 'a''b' AS quoted, E'tab\\there' AS esc, '€'::text AS euro",
    "SELECT generate_series(1, 3) AS g, now() IS NOT NULL AS t",
    "VALUES (1, 'a'), (2, NULL)",
    "SELECT * FROM items WHERE false",
]


def _psycopg_rows(dsn, sql, binary):
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.cursor(binary=binary)
        cur.execute(sql)
        cols = [(d.name, d.type_code) for d in cur.description]
        return cols, cur.fetchall()


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
@pytest.mark.parametrize("sql", QUERIES)
def test_psycopg_same_results(proxy_dsn, direct_dsn, sql, binary):
    assert _psycopg_rows(proxy_dsn, sql, binary) == _psycopg_rows(direct_dsn, sql, binary)


async def _asyncpg_rows(dsn, sql):
    conn = await asyncpg.connect(dsn)
    try:
        stmt = await conn.prepare(sql)
        cols = [(a.name, a.type.oid) for a in stmt.get_attributes()]
        return cols, [tuple(r) for r in await stmt.fetch()]
    finally:
        await conn.close()


@pytest.mark.parametrize("sql", QUERIES)
def test_asyncpg_same_results(proxy_dsn, direct_dsn, sql):
    async def both():
        return await _asyncpg_rows(proxy_dsn, sql), await _asyncpg_rows(direct_dsn, sql)

    via_proxy, direct = asyncio.run(both())
    assert via_proxy == direct
    if "FROM items ORDER BY id" in sql:
        assert len(via_proxy[1]) == 500


def test_psycopg_parameters_and_named_statements(proxy_dsn):
    with psycopg.connect(proxy_dsn, autocommit=True, prepare_threshold=0) as conn:
        for i in (3, 4, 5):  # prepare_threshold=0: named server-side statements, reused
            row = conn.execute("SELECT id, name FROM items WHERE id = %s", (i,)).fetchone()
            assert row == (i, f"item {i}")
        rows = conn.execute("SELECT id FROM items WHERE id = ANY(%s) ORDER BY id", ([7, 8, 9],)).fetchall()
        assert rows == [(7,), (8,), (9,)]


def test_psycopg_pipeline_mode(proxy_dsn):
    with psycopg.connect(proxy_dsn, autocommit=True) as conn:
        with conn.pipeline():
            curs = [conn.execute("SELECT %s::int * 2", (i,)) for i in range(50)]
        assert [c.fetchone()[0] for c in curs] == [i * 2 for i in range(50)]


def test_multi_statement_simple_query(proxy_dsn):
    with psycopg.connect(proxy_dsn, autocommit=True) as conn:
        cur = conn.cursor()
        cur.execute("SELECT 1; SELECT 2 AS two, 'b'; SELECT id FROM items WHERE id < 3 ORDER BY id")
        results = [cur.fetchall()]
        while cur.nextset():
            results.append(cur.fetchall())
        assert results == [[(1,)], [(2, "b")], [(1,), (2,)]]


def test_error_then_session_still_usable(proxy_dsn):
    with psycopg.connect(proxy_dsn) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        conn.rollback()
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT * FROM no_such_table")
        conn.rollback()
        assert conn.execute("SELECT 42").fetchone() == (42,)


def test_transaction_states(proxy_dsn):
    with psycopg.connect(proxy_dsn) as conn:
        conn.execute("SELECT 1")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_notices_are_relayed(proxy_dsn):
    notices = []
    with psycopg.connect(proxy_dsn, autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute("DO $$ BEGIN RAISE NOTICE 'hello from the backend'; END $$")
    assert notices == ["hello from the backend"]


def test_listen_notify_between_two_sessions(proxy_dsn):
    with psycopg.connect(proxy_dsn, autocommit=True) as listener, psycopg.connect(proxy_dsn, autocommit=True) as sender:
        listener.execute("LISTEN pgveil_chan")
        sender.execute("NOTIFY pgveil_chan, 'payload-1'")
        got = next(listener.notifies(timeout=5))
        assert (got.channel, got.payload) == ("pgveil_chan", "payload-1")


def test_copy_to_stdout(proxy_dsn, direct_dsn):
    def copy(dsn):
        with psycopg.connect(dsn) as conn, conn.cursor() as cur:
            with cur.copy("COPY (SELECT id, name, price FROM items ORDER BY id) TO STDOUT") as copy:
                return b"".join(bytes(b) for b in copy)

    data = copy(proxy_dsn)
    assert data == copy(direct_dsn)
    assert data.count(b"\n") == 500


def test_parameter_status_and_identity(proxy_dsn):
    with psycopg.connect(proxy_dsn, autocommit=True) as conn:
        assert conn.info.parameter_status("server_version")
        assert conn.info.parameter_status("standard_conforming_strings") == "on"
        assert conn.info.parameter_status("session_authorization") == "root"
        assert conn.info.backend_pid > 0
