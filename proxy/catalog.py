"""Schema introspection: read pg_catalog into a ``rewrite.catalog.Catalog``.

What it does: one round of catalog queries on a backend connection (as the
service role, so it sees what pgveil can read) and builds the immutable
Catalog the rewrite engine resolves names against.

What it must not touch: policies, rewriting. Temporary schemas of other
sessions (pg_temp_N, pg_toast_temp_N) are left out on purpose: nothing a
governed session may name lives there.
"""
from __future__ import annotations

import asyncpg

from rewrite.catalog import RELKINDS, Catalog, Column, Relation

_RELATIONS = """
SELECT c.oid::int8 AS oid, n.nspname AS schema, c.relname AS name, c.relkind::text AS kind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')
  AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
"""

_COLUMNS = """
SELECT a.attrelid::int8 AS oid, a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
       t.typname AS base
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_class c ON c.oid = a.attrelid
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
ORDER BY a.attrelid, a.attnum
"""

# Relations a view's rewrite rule reads (pg_depend from the rule to other relations).
_VIEW_DEPS = """
SELECT DISTINCT r.ev_class::int8 AS view, d.refobjid::int8 AS dep
FROM pg_rewrite r JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid <> r.ev_class
"""

_INHERITS = "SELECT inhrelid::int8 AS child, inhparent::int8 AS parent FROM pg_inherits"

_FUNCTIONS = "SELECT proname AS name, bool_and(proleakproof) AS leakproof FROM pg_proc GROUP BY proname"

_OPERATORS = """
SELECT o.oprname AS name, coalesce(l.typname, '') AS left, coalesce(r.typname, '') AS right, p.proleakproof AS leakproof
FROM pg_operator o JOIN pg_proc p ON p.oid = o.oprcode
LEFT JOIN pg_type l ON l.oid = o.oprleft LEFT JOIN pg_type r ON r.oid = o.oprright
"""


async def load_catalog(conn: asyncpg.Connection) -> Catalog:
    """Introspect the connected database into a Catalog."""
    database = await conn.fetchval("SELECT current_database()")
    schemas = {r["nspname"] for r in await conn.fetch("SELECT nspname FROM pg_namespace")}
    rels = await conn.fetch(_RELATIONS)
    cols: dict[int, list[Column]] = {}
    for r in await conn.fetch(_COLUMNS):
        cols.setdefault(r["oid"], []).append(Column(r["name"], r["type"], r["base"]))
    names = {r["oid"]: (r["schema"], r["name"]) for r in rels}
    deps: dict[int, set[tuple[str, str]]] = {}
    for r in await conn.fetch(_VIEW_DEPS):
        if r["dep"] in names:
            deps.setdefault(r["view"], set()).add(names[r["dep"]])
    parents: dict[int, list[tuple[str, str]]] = {}
    for r in await conn.fetch(_INHERITS):
        if r["parent"] in names:
            parents.setdefault(r["child"], []).append(names[r["parent"]])
    relations = [
        Relation(r["oid"], r["schema"], r["name"], RELKINDS[r["kind"]], tuple(cols.get(r["oid"], ())),
                 tuple(sorted(deps.get(r["oid"], ()))), tuple(parents.get(r["oid"], ())))
        for r in rels
    ]
    functions = {r["name"]: bool(r["leakproof"]) for r in await conn.fetch(_FUNCTIONS)}
    operators = {(r["name"], r["left"], r["right"]): bool(r["leakproof"]) for r in await conn.fetch(_OPERATORS)}
    schemas = {s for s in schemas if not s.startswith(("pg_temp_", "pg_toast_temp_"))}
    return Catalog.build(database, relations, schemas=frozenset(schemas), functions=functions, operators=operators)
