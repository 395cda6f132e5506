"""Decisions that are not plain allow/refuse: markers, contexts, fail-closed paths."""
from __future__ import annotations

import pglast
import pytest
from pglast import ast

from rewrite.gates import GateContext, INTERNAL_SCHEMAS, ProxySetting, Refusal, check_statement
from rewrite.gates.function_allowlist import PG_CATALOG_FUNCTIONS
from rewrite.gates.function_denylist import denied_category
from rewrite.gates.statements import check_all, check_sql
from rewrite.gates.walker import QueryWalker

from .helpers import GOVERNED, refusal_of


@pytest.mark.parametrize(("sql", "expected"), [
    ("SET pgveil.purpose = 'Research.Marketing'", ProxySetting("set", "pgveil.purpose", "Research.Marketing")),
    ("SET pgveil.project TO clinic", ProxySetting("set", "pgveil.project", "clinic")),
    ("SET LOCAL pgveil.purpose = 'R'", ProxySetting("set", "pgveil.purpose", "R", True)),
    ('SET "PGVEIL.PURPOSE" = \'R\'', ProxySetting("set", "pgveil.purpose", "R")),
    ("SET pgveil.purpose TO DEFAULT", ProxySetting("set", "pgveil.purpose", None)),
    ("RESET pgveil.project", ProxySetting("reset", "pgveil.project")),
    ("SHOW pgveil.purpose", ProxySetting("show", "pgveil.purpose")),
])
def test_pgveil_settings_are_markers_for_everyone(sql, expected):
    stmt = pglast.parse_sql(sql)[0]
    assert check_statement(stmt, GOVERNED) == expected
    assert check_statement(stmt, GateContext(governed=False)) == expected


def test_pgveil_setting_with_a_list_is_refused():
    assert refusal_of("SET pgveil.purpose = 'a', 'b'").sqlstate == "42501"


def test_raw_stmt_and_inner_stmt_are_the_same():
    raw = pglast.parse_sql("SELECT pg_read_file('x')")[0]
    assert check_statement(raw, GOVERNED) == check_statement(raw.stmt, GOVERNED)


def test_refusal_names_the_rule():
    refusal = refusal_of("SELECT pg_read_file('/etc/passwd')")
    assert refusal == Refusal("42501", "function pg_read_file() is not allowed through pgveil (files)",
                              "functions: files")


def test_config_allowlist_admits_user_functions():
    ctx = GateContext(extra_functions=frozenset({("public", "fiscal_quarter"), ("analytics", "score")}))
    assert refusal_of("SELECT fiscal_quarter(day) FROM items", ctx) is None
    assert refusal_of("SELECT public.fiscal_quarter(day) FROM items", ctx) is None
    assert refusal_of("SELECT analytics.score(id) FROM items", ctx) is None
    assert refusal_of("SELECT score(id) FROM items", ctx) is not None  # analytics is not on the search_path
    assert refusal_of("SELECT other.fiscal_quarter(day) FROM items", ctx) is not None
    assert refusal_of("SELECT fiscal_quarter(day) FROM items") is not None


def test_config_allowlist_cannot_reach_internal_schemas():
    ctx = GateContext(extra_functions=frozenset({("pg_temp", "pgveil_key")}))
    assert refusal_of("SELECT pg_temp.pgveil_key()", ctx) is not None


def test_extra_settings_and_internal_schemas():
    ctx = GateContext(extra_settings=frozenset({"work_mem"}), internal_schemas=frozenset({"vault"}))
    assert refusal_of("SET work_mem = '64MB'", ctx) is None
    assert refusal_of("SELECT * FROM vault.keys", ctx) is not None
    assert refusal_of("SELECT * FROM vault.keys") is None  # a user schema unless configured


def test_internal_schemas_constant():
    assert {"pg_temp", "pg_toast"} <= INTERNAL_SCHEMAS


def test_each_statement_of_a_string_gets_a_verdict():
    verdicts = check_sql("SELECT 1; SELECT pg_ls_dir('.'); SHOW timezone", GOVERNED)
    assert verdicts[0] is None and isinstance(verdicts[1], Refusal) and verdicts[2] is None


def test_check_all_accepts_parsed_statements():
    assert check_all(pglast.parse_sql("BEGIN; SELECT 1; COMMIT"), GOVERNED) == (None, None, None)


def test_parse_errors_do_not_echo_text():
    (refusal,) = check_sql("SELECT 'secret_value", GOVERNED)
    assert refusal.sqlstate == "42601" and "secret" not in refusal.message


def test_unknown_node_type_in_a_query_fails_closed():
    stmt = pglast.parse_sql("SELECT 1")[0].stmt
    stmt.targetList[0].val = ast.SubPlan()  # a planner node no parse tree holds
    refusal = QueryWalker(GOVERNED).run(stmt)
    assert refusal is not None and refusal.sqlstate == "0A000"


def test_unknown_statement_fails_closed():
    assert check_statement(ast.Query(), GOVERNED).sqlstate == "0A000"


def test_allowlist_and_denylist_are_disjoint():
    assert not {n for n in PG_CATALOG_FUNCTIONS if denied_category(n)}


@pytest.mark.parametrize("sql", [
    "SELECT current_user", "SELECT session_user", "SELECT current_setting('TimeZone')",
    "SELECT 'pg_authid'::regclass", "SELECT 'x'::text COLLATE \"C\"", "SELECT ROW(1, 2)",
])
def test_decided_allowances(sql):
    assert refusal_of(sql) is None


def test_user_table_named_like_a_catalog_must_be_qualified():
    assert refusal_of("SELECT * FROM pg_my_table") is not None
    assert refusal_of("SELECT * FROM public.pg_my_table") is None
