"""GateContext.served: catalog relations the rewrite engine substitutes (rewrite/engine/listings.py).

Without ``served`` the gates refuse them as before; with it, only the relations
whose substitute contract catalog_allowlist states are accepted.
"""
from __future__ import annotations

import pytest

from rewrite.engine.listings import SERVED
from rewrite.gates import GateContext, check_sql

PLAIN = GateContext()
ENGINE = GateContext(served=SERVED)


def verdict(sql, ctx):
    (v,) = check_sql(sql, ctx)
    return v


@pytest.mark.parametrize("sql", [
    "SELECT rolname FROM pg_roles",
    "SELECT polname FROM pg_catalog.pg_policy WHERE polrelid = 1",
    "SELECT stxname FROM pg_statistic_ext",
    "SELECT pubname FROM pg_publication p JOIN pg_publication_rel pr ON p.oid = pr.prpubid",
    "SELECT setting FROM pg_catalog.pg_settings WHERE name = 'max_index_keys'",
    "SELECT relname, n_live_tup FROM pg_stat_user_tables",
    "SELECT ci.reltuples, ci.relpages FROM pg_catalog.pg_class ci",
    "SELECT * FROM pg_class",
    "SELECT to_jsonb(c) FROM pg_class c",
])
def test_served_relations_pass_only_when_the_engine_substitutes_them(sql):
    assert verdict(sql, PLAIN) is not None
    assert verdict(sql, ENGINE) is None


@pytest.mark.parametrize("sql", [
    "SELECT rolpassword FROM pg_authid",
    "SELECT usename FROM pg_user",
    "SELECT stxdmcv FROM pg_statistic_ext_data",
    "SELECT most_common_vals FROM pg_stats",
    "SELECT query FROM pg_stat_activity",
    "SELECT n_live_tup FROM pg_stat_all_tables",
    "SELECT prosrc FROM pg_proc",
    "SELECT definition FROM pg_views",
    "SELECT ev_action FROM pg_rewrite",
])
def test_other_refusals_stay(sql):
    assert verdict(sql, ENGINE) is not None


def test_served_does_not_widen_beyond_the_contracts():
    anything = GateContext(served=frozenset({("pg_catalog", "pg_authid"), ("pg_catalog", "pg_proc")}))
    assert verdict("SELECT rolpassword FROM pg_authid", anything) is not None
    assert verdict("SELECT prosrc FROM pg_proc", anything) is not None


@pytest.mark.parametrize(("sql", "allowed"), [
    ("SELECT current_setting('default_table_access_method'::VARCHAR)", True),  # SQLAlchemy + client-side binding
    ("SELECT current_setting('max_index_keys'::pg_catalog.text)", True),
    ("SELECT current_setting('app.secret'::varchar)", False),
    ("SELECT current_setting('pgveil.purpose'::name)", False),
    ("SELECT current_setting('x'::varchar(3))", False),
    ("SELECT current_setting($1::varchar)", False),
    ("SELECT current_setting(('a' || 'b')::text)", False),
])
def test_current_setting_name_through_a_plain_cast(sql, allowed):
    assert (verdict(sql, PLAIN) is None) == allowed
