"""The threat classes of threats.md replayed through the wire, as an analyst would.

Each payload runs as alice (governed, acting under Research.Marketing) through
the simple protocol, the extended protocol, and where it fits a cursor or COPY.
Whatever happens (rows, notices, an error), no protected value may appear:
raw SSNs and emails (always masked for alice), and anything of the claims the
row filters hide from her (Ohio, over 10000, older than a year).
"""
from __future__ import annotations

import asyncio

import psycopg
import pytest

from .clinic_fixture import CLINIC_PASSWORDS, EXAMPLE, clinic_config, clinic_env, create_clinic
from .pgfixture import TEST_DB
from .proxyproc import ProxyProcess

pytestmark = pytest.mark.skipif(not EXAMPLE.exists(), reason="../shared/docs/pgveil.example.yaml is absent")

SECRETS = ["111-22-3333", "444-55-6666", "777-88-9999", "ann@example.com", "bob@example.com", "cy@example.com",
           "ACC-SECRET-2", "ACC-SECRET-3", "ACC-SECRET-5", "25000"]

PAYLOADS = [
    # 1. masking only the output
    "SELECT patient_id FROM patients WHERE ssn = '111-22-3333'",
    "SELECT ssn, count(*) FROM patients GROUP BY ssn",
    "SELECT email FROM patients ORDER BY email",
    "SELECT max(ssn), min(email), string_agg(ssn, ',') FROM patients",
    "SELECT a.ssn FROM patients a JOIN patients b ON a.ssn = b.ssn",
    "SELECT first_value(ssn) OVER (ORDER BY ssn) FROM patients",
    # 2. predicate push-down / error oracles
    "SELECT * FROM claims WHERE 1/(amount - 25000) > 0",
    "SELECT * FROM claims WHERE CASE WHEN state = 'Ohio' THEN 1/0 ELSE 1 END = 1",
    "SELECT * FROM claims WHERE account_no::int > 0",
    "SELECT * FROM patients WHERE ssn::int > 0",
    "SELECT * FROM claims c WHERE (SELECT 1/(c.amount - 25000)) = 1",
    "WITH x AS (SELECT * FROM claims) SELECT * FROM x WHERE 1/(amount-25000) = 1",
    # 3. whole-row and alternate syntax
    "SELECT p FROM patients p",
    "SELECT to_jsonb(p) FROM patients p",
    "SELECT row_to_json(p)::text FROM patients p",
    "SELECT (p).ssn FROM patients p",
    "SELECT ssn(p) FROM patients p",
    "SELECT p.* FROM patients AS p(a, b, c, d)",
    "TABLE patients",
    "SELECT * FROM ONLY patients",
    "SELECT * FROM patients TABLESAMPLE BERNOULLI (100)",
    "SELECT * FROM (VALUES (1)) v, LATERAL (SELECT ssn FROM patients) l",
    "SELECT (SELECT string_agg(ssn, ',') FROM patients)",
    "SELECT * FROM claims c1 WHERE EXISTS (SELECT 1 FROM claims c2 WHERE c2.amount > 20000)",
    "SELECT array_agg(c) FROM claims c",
    "SELECT * FROM ROWS FROM (jsonb_to_recordset((SELECT jsonb_agg(p) FROM patients p))) AS x(ssn text)",
    # 4. name resolution
    'SELECT "ssn" FROM "patients"',
    'SELECT SSN FROM PUBLIC.PATIENTS',
    'SELECT ssn FROM pgveil_test.public.patients',
    'SELECT U&"\\0073sn" FROM U&"\\0070atients"',
    "WITH patients AS (SELECT * FROM public.patients) SELECT ssn FROM patients",
    "SELECT ssn FROM pg_temp.patients",
    "WITH RECURSIVE r AS (SELECT ssn FROM patients UNION SELECT ssn FROM r) SELECT * FROM r",
    # 5. other objects over protected data
    "SELECT * FROM pg_catalog.pg_stats WHERE tablename = 'patients'",
    # 6. SQL hidden in strings
    "SELECT query_to_xml('SELECT ssn FROM patients', true, true, '')",
    "SELECT * FROM ts_stat('SELECT to_tsvector(ssn) FROM patients')",
    "SELECT table_to_xml('patients', true, true, '')",
    "SELECT xmlserialize(content query_to_xml('select * from claims', true, true, '') as text)",
    "DO $$ BEGIN RAISE NOTICE '%', (SELECT string_agg(ssn, ',') FROM patients); END $$",
    "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS 'SELECT ssn FROM patients LIMIT 1'",
    # 7. statistics, plans, monitoring
    "EXPLAIN SELECT * FROM claims WHERE amount > 20000",
    "EXPLAIN (ANALYZE, VERBOSE) SELECT * FROM patients",
    "SELECT query FROM pg_stat_activity",
    "SELECT reltuples FROM pg_class WHERE relname = 'claims'",
    "SELECT * FROM pg_stats",
    "SELECT most_common_vals::text FROM pg_stats WHERE attname = 'ssn'",
    # 8. files, programs, large objects, COPY
    "COPY patients TO '/tmp/x'",
    "COPY (SELECT ssn FROM patients) TO PROGRAM 'cat'",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT lo_import('/etc/passwd')",
    "SELECT * FROM pg_ls_dir('.')",
    # 9. session state
    "SET search_path = pg_temp, public",
    "SET ROLE postgres",
    "SET SESSION AUTHORIZATION postgres",
    "RESET ALL",
    "SELECT set_config('search_path', 'pg_temp', false)",
    "SET standard_conforming_strings = off",
    "SELECT set_config('pgveil.purpose', 'Fraud', false)",
    # 10. parser differentials
    "SELECT 'a\\' ; SELECT ssn FROM patients; --'",
    "SELECT $$ $$; SELECT ssn FROM patients; $$ $$",
    "SELECT /* /* nested */ ssn FROM patients */ 1",
    "SELECT E'\\'' , ssn FROM patients",
    # 11. protocol side doors (SQL level)
    "PREPARE q AS SELECT ssn FROM patients; EXECUTE q",
    "DECLARE c CURSOR FOR SELECT ssn, email FROM patients; FETCH ALL c",
    "SELECT 1; SELECT ssn FROM patients",
    # 12. writes used to read
    "UPDATE claims SET amount = amount RETURNING account_no",
    "INSERT INTO claims SELECT * FROM claims RETURNING *",
    "CREATE TABLE stolen AS SELECT * FROM patients",
    "SELECT * INTO stolen2 FROM patients",
    "DELETE FROM claims WHERE amount > 20000 RETURNING account_no",
    "WITH d AS (DELETE FROM claims RETURNING *) SELECT * FROM d",
    # 13. attacks on the masks
    "SELECT encode(sha256('111-22-3333'::bytea), 'hex')",
    "SELECT * FROM pg_temp.pgveil_keys",
    "SELECT * FROM pgveil_keys",
    # 14. fail-open: a user filter that compares with NULL attributes
    "SELECT count(*) FROM claims WHERE state IS NULL OR state IS NOT NULL",
]


@pytest.fixture(scope="module")
def port(pg, tmp_path_factory):
    asyncio.run(create_clinic(pg))
    d = tmp_path_factory.mktemp("attacks")
    path = clinic_config(d / "pgveil.yaml", pg, d / "master.key", drop_policies=("dp-visits",))
    proc = ProxyProcess(path, clinic_env(pg))
    yield proc.port
    proc.stop()


def _connect(port, **kw):
    return psycopg.connect(host="127.0.0.1", port=port, dbname=TEST_DB, user="alice", password=CLINIC_PASSWORDS["alice"],
                           options="-c pgveil.purpose=Research.Marketing", autocommit=True, **kw)


def _run(conn, sql, *, extended: bool) -> str:
    seen: list[str] = []
    conn.add_notice_handler(lambda d: seen.append(f"{d.message_primary} {d.message_detail} {d.context}"))
    try:
        cur = conn.cursor()
        if extended:
            cur.execute(sql.split(";")[0] if ";" in sql and not sql.startswith(("SELECT 'a", "SELECT $$")) else sql,
                        prepare=True)
        else:
            cur.execute(sql)
        while True:
            if cur.description is not None:
                seen.append(repr(cur.fetchall()))
            if not cur.nextset():
                break
    except psycopg.Error as exc:
        seen.append(f"{type(exc).__name__} {exc} {exc.diag.message_detail} {exc.diag.context} {exc.diag.message_hint}")
    return "\n".join(seen)


def _assert_clean(output: str, sql: str) -> None:
    for secret in SECRETS:
        assert secret not in output, f"{secret!r} leaked by {sql!r}: {output[:500]}"


@pytest.mark.parametrize("sql", PAYLOADS)
def test_payload_simple_protocol(port, sql):
    with _connect(port) as conn:
        _assert_clean(_run(conn, sql, extended=False), sql)
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the session survives


@pytest.mark.parametrize("sql", PAYLOADS)
def test_payload_extended_protocol(port, sql):
    with _connect(port) as conn:
        _assert_clean(_run(conn, sql, extended=True), sql)


@pytest.mark.parametrize("sql", [p for p in PAYLOADS if p.startswith(("SELECT", "TABLE", "WITH"))][:30])
def test_payload_through_copy_and_cursor(port, sql):
    with _connect(port) as conn:
        out = []
        try:
            with conn.cursor().copy(f"COPY ({sql}) TO STDOUT") as copy:
                out += [bytes(b).decode(errors="replace") for b in copy]
        except psycopg.Error as exc:
            out.append(str(exc))
        conn.autocommit = False
        try:
            with conn.cursor(name="c1") as cur:
                cur.execute(sql)
                out.append(repr(cur.fetchall()))
        except psycopg.Error as exc:
            out.append(str(exc))
        conn.rollback()
        _assert_clean("\n".join(out), sql)


def test_function_call_message_is_refused(port):
    """The Function Call protocol message (libpq's PQfn) never reaches the backend for a governed user."""
    from proxy.wire import backend as be
    from proxy.wire.frontend import FunctionCall

    from .rawpg import RawClient

    with RawClient(port) as c:
        c.login("alice", CLINIC_PASSWORDS["alice"])
        c.send(FunctionCall(2624, (0,), (b"/etc/passwd",), 0).encode())  # 2624 = pg_read_file(text)
        msgs = c.read_until(b"Z")
        errors = [m for m in msgs if type(m) is be.ErrorResponse]
        assert errors and errors[0].get("C") == "42501" and "function call protocol" in errors[0].get("M")
        assert not any(type(m) is be.FunctionCallResponse for m in msgs)
        assert isinstance(msgs[-1], be.ReadyForQuery)
