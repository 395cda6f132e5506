"""asyncpg introspection and a Metabase-style sync query set through a governed pgveil."""
from __future__ import annotations

import asyncio

import asyncpg

from ..clinic_fixture import CLINIC_PASSWORDS
from ..pgfixture import TEST_DB

# Metabase's PostgreSQL driver (sync): describe-database, describe-fields, describe-fks, table privileges.
MB_TABLES = """
SELECT n.nspname AS schema, c.relname AS name,
  CASE c.relkind WHEN 'r' THEN 'TABLE' WHEN 'p' THEN 'PARTITIONED TABLE' WHEN 'v' THEN 'VIEW' WHEN 'f' THEN 'FOREIGN TABLE'
                 WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE NULL END AS type,
  d.description AS description, stat.n_live_tup AS estimated_row_count
FROM pg_catalog.pg_class c
INNER JOIN pg_catalog.pg_namespace n ON c.relnamespace = n.oid
LEFT JOIN pg_catalog.pg_description d ON c.oid = d.objoid AND d.objsubid = 0 AND d.classoid = 'pg_class'::regclass
LEFT JOIN pg_stat_user_tables stat ON n.nspname = stat.schemaname AND c.relname = stat.relname
WHERE c.relnamespace = n.oid AND n.nspname !~ '^information_schema|catalog_history|pg_'
  AND c.relkind in ('r', 'p', 'v', 'f', 'm') AND n.nspname IN ('public')
ORDER BY 1, 2"""

MB_FIELDS = """
SELECT c.column_name AS name, c.udt_name AS "database-type", c.ordinal_position - 1 AS "database-position",
  c.table_schema AS "table-schema", c.table_name AS "table-name", pk.column_name IS NOT NULL AS "pk?",
  col_description(cast(cast(format('%I.%I', cast(c.table_schema AS text), cast(c.table_name AS text)) AS regclass) AS oid),
                  c.ordinal_position) AS "field-comment",
  ((column_default IS NULL) OR (lower(column_default) = 'null')) AND (is_nullable = 'NO')
    AND NOT (((column_default IS NOT NULL) AND (column_default LIKE '%nextval(%')) OR (is_identity <> 'NO')) AS "database-required"
FROM information_schema.columns AS c
LEFT JOIN (SELECT tc.table_schema, tc.table_name, kc.column_name FROM information_schema.table_constraints AS tc
  INNER JOIN information_schema.key_column_usage AS kc ON (tc.constraint_name = kc.constraint_name)
    AND (tc.table_schema = kc.table_schema) AND (tc.table_name = kc.table_name)
  WHERE tc.constraint_type = 'PRIMARY KEY') AS pk
  ON (c.table_schema = pk.table_schema) AND (c.table_name = pk.table_name) AND (c.column_name = pk.column_name)
WHERE c.table_schema !~ '^information_schema|catalog_history|pg_' AND c.table_schema IN ('public')
UNION ALL
SELECT pa.attname, pt.typname, pa.attnum - 1, pn.nspname, pc.relname, FALSE, NULL, FALSE
FROM pg_catalog.pg_class AS pc INNER JOIN pg_catalog.pg_namespace AS pn ON pn.oid = pc.relnamespace
INNER JOIN pg_catalog.pg_attribute AS pa ON pa.attrelid = pc.oid INNER JOIN pg_catalog.pg_type AS pt ON pt.oid = pa.atttypid
WHERE pc.relkind = 'm' AND pa.attnum >= 1 AND pn.nspname IN ('public')
ORDER BY 4, 5, 3"""

MB_FKS = """
SELECT fk_ns.nspname, fk_table.relname, fk_column.attname, pk_ns.nspname, pk_table.relname, pk_column.attname
FROM pg_constraint c JOIN pg_class fk_table ON c.conrelid = fk_table.oid JOIN pg_namespace fk_ns ON c.connamespace = fk_ns.oid
JOIN pg_attribute fk_column ON c.conrelid = fk_column.attrelid AND c.conkey[1] = fk_column.attnum
JOIN pg_class pk_table ON c.confrelid = pk_table.oid JOIN pg_namespace pk_ns ON pk_table.relnamespace = pk_ns.oid
JOIN pg_attribute pk_column ON c.confrelid = pk_column.attrelid AND c.confkey[1] = pk_column.attnum
WHERE c.contype = 'f' AND fk_ns.nspname IN ('public')"""

MB_PRIVILEGES = """
with table_privileges as (
 select NULL as role, t.schemaname as schema, t.objectname as table,
   pg_catalog.has_table_privilege(current_user, '"' || t.schemaname || '"' || '.' || '"' || t.objectname || '"', 'SELECT') as select
 from (select schemaname, tablename as objectname from pg_catalog.pg_tables
       union select schemaname, viewname as objectname from pg_catalog.pg_views
       union select schemaname, matviewname as objectname from pg_catalog.pg_matviews) t
 where t.schemaname !~ '^pg_' and t.schemaname <> 'information_schema'
   and pg_catalog.has_schema_privilege(current_user, t.schemaname, 'USAGE'))
select t.schema, t.table from table_privileges t order by 1, 2"""


def run(port: int, user: str, body, purpose: str | None = None):
    async def go():
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user=user, password=CLINIC_PASSWORDS[user],
                                     database=TEST_DB, server_settings={"pgveil.purpose": purpose} if purpose else None)
        try:
            return await body(conn)
        finally:
            await conn.close()
    return asyncio.run(go())


def tables_of(rows) -> set[str]:
    return {r[1] for r in rows}


def test_metabase_sync_queries(bi_proxy):
    async def body(conn):
        return {name: await conn.fetch(q) for name, q in
                [("tables", MB_TABLES), ("fields", MB_FIELDS), ("fks", MB_FKS), ("privileges", MB_PRIVILEGES)]}

    root = run(bi_proxy.port, "root", body)
    assert tables_of(root["tables"]) >= {"patients", "claims", "visits", "items"}
    assert any(r["estimated_row_count"] for r in root["tables"])

    alice = run(bi_proxy.port, "alice", body)
    assert [(r["name"], r["estimated_row_count"]) for r in alice["tables"]] == [("claims", None)]  # no row counts
    assert {r["table-name"] for r in alice["fields"]} == {"claims"}
    # information_schema's constraint views show only tables the *backend role* has more than SELECT on
    # (PostgreSQL's rule): with the least-privileged service role, no primary keys there, for anyone
    assert [r["name"] for r in alice["fields"] if r["pk?"]] == []
    assert {r["table-name"] for r in root["fields"] if r["pk?"]} == {"events"}  # INSERT/DELETE granted on events
    assert alice["fks"] == []
    assert [tuple(r) for r in alice["privileges"]] == [("public", "claims")]

    erin = run(bi_proxy.port, "erin", body)
    assert erin == {"tables": [], "fields": [], "fks": [], "privileges": []}


def test_session_facts_bi_tools_ask_for(bi_proxy):
    async def body(conn):
        return (await conn.fetchval("SHOW server_version"), await conn.fetchval("SELECT current_schemas(false)::text[]"),
                await conn.fetchval("SELECT current_database()"), await conn.fetchval("SHOW TimeZone"),
                await conn.fetchval("SELECT version()"), await conn.fetchval("SELECT current_setting('max_index_keys')"))
    version, schemas, db, tz, full, keys = run(bi_proxy.port, "alice", body)
    assert version.split(".")[0].isdigit() and schemas == ["public"] and db == TEST_DB and tz and "PostgreSQL" in full
    assert keys == "32"


def test_information_schema_and_pg_views(bi_proxy):
    queries = {
        "tables": "SELECT table_schema, table_name FROM information_schema.tables "
                  "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 2",
        "columns": "SELECT table_schema, table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'",
        "constraints": "SELECT tc.table_schema, tc.table_name, kcu.column_name FROM information_schema.table_constraints tc "
                       "JOIN information_schema.key_column_usage kcu USING (constraint_schema, constraint_name) "
                       "WHERE tc.table_schema = 'public'",
        "pg_tables": "SELECT schemaname, tablename FROM pg_tables WHERE schemaname = 'public'",
        "pg_indexes": "SELECT schemaname, tablename FROM pg_indexes WHERE schemaname = 'public'",
        "types": "SELECT n.nspname, t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                 "WHERE n.nspname = 'public'",
        "schemata": "SELECT schema_name, schema_name FROM information_schema.schemata",
    }

    async def body(conn):
        return {k: tables_of(await conn.fetch(q)) for k, q in queries.items()}

    alice = run(bi_proxy.port, "alice", body)
    for k in ("tables", "columns", "pg_tables", "pg_indexes"):
        assert alice[k] == {"claims"}, k
    assert alice["constraints"] == set()  # backend-role rule: only tables it has more than SELECT on (events)
    assert alice["types"] == {"claims", "_claims"}  # row types of hidden tables (and their arrays) are left out
    assert not any(s.startswith("pg_temp") or s.startswith("pg_toast_temp") for s in alice["schemata"])
    purposed = run(bi_proxy.port, "alice", body, purpose="Research.Marketing")
    assert purposed["tables"] == {"claims", "patients"}
    erin = run(bi_proxy.port, "erin", body)
    assert all(not v for k, v in erin.items() if k != "schemata")
    root = run(bi_proxy.port, "root", body)
    assert root["tables"] >= {"patients", "claims", "visits", "items", "events"}
    assert root["constraints"] == {"events"}


def test_row_estimates_are_null_and_other_catalog_refusals_stay(bi_proxy):
    async def body(conn):
        est = await conn.fetchrow("SELECT c.relname, c.reltuples, c.relpages FROM pg_class c WHERE c.relname = 'claims'")
        settings = await conn.fetch("SELECT name FROM pg_settings WHERE name LIKE 'pgveil.%' OR name = 'max_index_keys'")
        errors = []
        for q in ("SELECT rolname, rolsuper FROM pg_roles", "SELECT polname FROM pg_policy",
                  "SELECT n_live_tup FROM pg_stat_user_tables", "SELECT usename FROM pg_user",
                  "SELECT relname FROM pg_class TABLESAMPLE SYSTEM (50)"):
            try:
                errors.append((q, [tuple(r) for r in await conn.fetch(q)]))
            except asyncpg.PostgresError as exc:
                errors.append((q, exc.sqlstate))
        return est, settings, errors

    est, settings, results = run(bi_proxy.port, "alice", body, purpose="Research.Marketing")
    assert tuple(est) == ("claims", None, None)
    assert [r["name"] for r in settings] == ["max_index_keys"]  # built-in settings only, never pgveil.* or custom ones
    assert results == [
        ("SELECT rolname, rolsuper FROM pg_roles", []),          # served empty
        ("SELECT polname FROM pg_policy", []),                   # served empty
        ("SELECT n_live_tup FROM pg_stat_user_tables", [(None,), (None,)]),  # claims, patients: counters NULL
        ("SELECT usename FROM pg_user", "42501"),                # still refused
        ("SELECT relname FROM pg_class TABLESAMPLE SYSTEM (50)", "0A000"),  # pgveil cannot filter it there
    ]


def test_asyncpg_type_introspection_works(bi_proxy):
    # asyncpg runs set_config('jit', ...) around introspecting a type it has no codec for (name[] here);
    # set_config of a harmless setting is allowed, like SET
    async def body(conn):
        return await conn.fetchval("SELECT current_schemas(false)"), await conn.fetchval("SELECT 1")
    assert run(bi_proxy.port, "alice", body) == (["public"], 1)
