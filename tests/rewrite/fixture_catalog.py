"""A hand-built catalog for the SQL fixture files (no database needed)."""
from __future__ import annotations

from rewrite.catalog import Catalog, Column, Relation


def _c(name: str, type_: str, base: str | None = None) -> Column:
    return Column(name, type_, base or type_)


CATALOG = Catalog.build("pgveil_test", [
    Relation(9001, "rw", "patients", "table", (
        _c("patient_id", "integer", "int4"), _c("ssn", "text"), _c("name", "text"), _c("email", "text"),
        _c("zip", "text"), _c("birth_year", "integer", "int4"), _c("note", "text"))),
    Relation(9002, "rw", "claims", "table", (
        _c("claim_id", "integer", "int4"), _c("account_no", "text"), _c("country", "text"), _c("state", "text"),
        _c("amount", "numeric"), _c("filed_at", "timestamp with time zone", "timestamptz"), _c("x", "integer", "int4"))),
    Relation(9003, "rw", "visits", "table", (
        _c("visit_id", "integer", "int4"), _c("client_ip", "text"), _c("cost", "numeric"),
        _c("visited_at", "timestamp with time zone", "timestamptz"))),
    Relation(9004, "rw", "open", "table", (_c("id", "integer", "int4"), _c("v", "text"))),
    Relation(9005, "rw", "sink", "table", (_c("id", "integer", "int4"), _c("v", "text"))),
    Relation(9006, "rw", "vault", "table", (_c("id", "integer", "int4"), _c("secret", "text"))),
    Relation(11, "pg_catalog", "pg_class", "table", (_c("oid", "oid"), _c("relname", "name"))),
], operators={(op, t, t): True for op in ("=", "<", "<=", ">", ">=", "<>") for t in ("int4", "int8", "text")})
