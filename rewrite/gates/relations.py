"""The relation gate: which tables and views a governed statement may name.

Resolution as PostgreSQL does it with a pinned search_path: an unqualified name
is pg_catalog's if pg_catalog has it (pg_catalog is searched before user
schemas); any other unqualified ``pg_`` name is treated the same way (fail
closed for catalogs of later releases), so a user table called ``pg_x`` must
be schema-qualified. pg_catalog and information_schema relations must be on
the catalog allowlist; internal schemas and pgveil's own ``pgveil_*`` objects
(which live in pg_temp, searched first for unqualified names) are refused.
Everything else is a user relation: the rewrite engine's business.
"""
from __future__ import annotations

from pglast import ast

from .catalog_allowlist import ALLOWED_RELATIONS, PG_CATALOG_KNOWN, SERVABLE_EMPTY, SERVABLE_FILTERED
from .context import GateContext
from .names import CATALOG, INFORMATION_SCHEMA, is_internal_name, is_internal_schema, shown
from .verdict import Refusal, privilege

_CATALOGS = (CATALOG, INFORMATION_SCHEMA)


def resolve(rv: ast.RangeVar) -> tuple[str | None, str]:
    """``(schema, name)``; schema is None for an unqualified user relation."""
    name = rv.relname
    schema = rv.schemaname
    if schema is None and (name in PG_CATALOG_KNOWN or name.startswith("pg_")):
        return CATALOG, name
    return schema, name


def check_relation(rv: ast.RangeVar, ctx: GateContext) -> Refusal | None:
    schema, name = resolve(rv)
    display = shown(name if rv.schemaname is None else f"{rv.schemaname}.{name}")
    if is_internal_name(name):
        return privilege("relations: internal", f"relation {display} is internal to pgveil")
    if schema is None:
        return None
    if is_internal_schema(schema, ctx.internal_schemas):
        return privilege("relations: internal", f"relation {display} is in an internal schema and not allowed through pgveil")
    if schema in _CATALOGS and name not in ALLOWED_RELATIONS[schema]:
        if (schema, name) in ctx.served and ((schema, name) in SERVABLE_EMPTY or (schema, name) in SERVABLE_FILTERED):
            return None  # the caller replaces it by an empty (or filtered) relation of the same shape
        return privilege(
            "relations: catalog",
            f"relation {display} is not allowed through pgveil (catalog: statistics, activity, settings and "
            "credentials are not available to governed users)",
        )
    return None
