"""The allowlists against a real PostgreSQL catalog: no typos, nothing dangerous, nothing unclassified."""
from __future__ import annotations

import asyncio

import asyncpg
import pytest

from rewrite.gates.catalog_allowlist import ALLOWED_RELATIONS, PG_CATALOG_KNOWN, SENSITIVE_COLUMNS
from rewrite.gates.function_allowlist import INFORMATION_SCHEMA_FUNCTIONS, NOT_IN_PG_PROC, PG_CATALOG_FUNCTIONS
from rewrite.gates.function_denylist import DENIED_NAMES, denied_category
from rewrite.gates.functions import PG_CATALOG_OPERATORS
from rewrite.gates.sensitive import _COLUMNS_NAMED_LIKE_FUNCTIONS
from rewrite.gates.settings import CHANGEABLE_SETTINGS

#: Allowed functions that are volatile (side effects or changing results), each vetted.
VETTED_VOLATILE = frozenset({
    "array_sample", "array_shuffle", "clock_timestamp", "gen_random_uuid", "pg_is_in_recovery",
    "pg_partition_ancestors", "pg_partition_tree", "pg_sleep", "pg_sleep_for", "pg_sleep_until",
    "random", "random_normal", "setseed", "timeofday", "ts_rewrite", "uuidv4", "uuidv7",
})
#: Denylisted names that belong to extensions, not to pg_catalog.
EXTENSION_NAMES = frozenset(n for n in DENIED_NAMES["runs SQL given as text"] if n.startswith("dblink"))


@pytest.fixture(scope="module")
def catalog(pg):
    async def load():
        conn = await asyncpg.connect(pg.dsn())
        try:
            procs = await conn.fetch(
                "SELECT proname, provolatile, prosecdef FROM pg_proc WHERE pronamespace = 'pg_catalog'::regnamespace")
            info_procs = await conn.fetch(
                "SELECT proname FROM pg_proc WHERE pronamespace = 'information_schema'::regnamespace")
            rels = await conn.fetch(
                "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname IN ('pg_catalog', 'information_schema') AND c.relkind IN ('r', 'v', 'm', 'p', 'f')")
            ops = await conn.fetch("SELECT DISTINCT oprname FROM pg_operator WHERE oprnamespace = 'pg_catalog'::regnamespace")
            cols = await conn.fetch(
                "SELECT n.nspname, c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE a.attnum > 0 AND NOT a.attisdropped "
                "AND n.nspname IN ('pg_catalog', 'information_schema')")
            settings = await conn.fetch("SELECT name FROM pg_settings")
            version = await conn.fetchval("SHOW server_version_num")
        finally:
            await conn.close()
        return procs, info_procs, rels, ops, cols, settings, int(version)

    procs, info_procs, rels, ops, cols, settings, version = asyncio.run(load())
    return {
        "procs": {r["proname"] for r in procs},
        "volatile": {r["proname"] for r in procs if r["provolatile"] == "v"},
        "secdef": {r["proname"] for r in procs if r["prosecdef"]},
        "info_procs": {r["proname"] for r in info_procs},
        "rels": {(r["nspname"], r["relname"]) for r in rels},
        "ops": {r["oprname"] for r in ops},
        "cols": {(r["nspname"], r["relname"], r["attname"]) for r in cols},
        "settings": {r["name"].lower() for r in settings},
        "version": version,
    }


def _needs_18(catalog):
    if catalog["version"] < 180000:
        pytest.skip("the allowlists are classified against PostgreSQL 18")


def test_every_allowed_function_exists(catalog):
    _needs_18(catalog)
    missing = PG_CATALOG_FUNCTIONS - NOT_IN_PG_PROC - catalog["procs"]
    assert not missing
    assert not INFORMATION_SCHEMA_FUNCTIONS - catalog["info_procs"]


def test_every_denied_function_exists(catalog):
    _needs_18(catalog)
    names = frozenset().union(*DENIED_NAMES.values()) - EXTENSION_NAMES
    assert not names - catalog["procs"]


def test_no_dangerous_function_is_allowed(catalog):
    assert not {n for n in catalog["procs"] | PG_CATALOG_FUNCTIONS if denied_category(n) and n in PG_CATALOG_FUNCTIONS}


def test_allowed_volatile_functions_are_vetted(catalog):
    _needs_18(catalog)
    assert (PG_CATALOG_FUNCTIONS & catalog["volatile"]) <= VETTED_VOLATILE


def test_no_security_definer_function_is_allowed(catalog):
    assert not PG_CATALOG_FUNCTIONS & catalog["secdef"]


def test_every_allowed_relation_exists(catalog):
    for schema, names in ALLOWED_RELATIONS.items():
        assert not {n for n in names if (schema, n) not in catalog["rels"]}, schema


def test_every_catalog_relation_is_classified(catalog):
    _needs_18(catalog)
    real = {name for schema, name in catalog["rels"] if schema == "pg_catalog"}
    assert PG_CATALOG_KNOWN <= real
    # The statistics families are refused as a whole; every other relation is listed.
    assert {n for n in real - PG_CATALOG_KNOWN if not n.startswith(("pg_stat_", "pg_statio_"))} == set()
    assert all(n.startswith("pg_") for n in real)  # so the pg_ prefix rule resolves them all


def test_operator_symbols_match(catalog):
    _needs_18(catalog)
    assert catalog["ops"] == PG_CATALOG_OPERATORS


def test_sensitive_columns_exist_and_no_column_is_taken_for_a_function(catalog):
    for (schema, rel), cols in SENSITIVE_COLUMNS.items():
        real = {c for s, r, c in catalog["cols"] if (s, r) == (schema, rel)}
        if catalog["version"] >= 180000:
            assert cols <= real, (rel, cols - real)
        assert (real & PG_CATALOG_FUNCTIONS) <= _COLUMNS_NAMED_LIKE_FUNCTIONS, rel


def test_changeable_settings_exist(catalog):
    assert CHANGEABLE_SETTINGS <= catalog["settings"]
