"""set_config() follows the SET rules: only harmless settings, named by a constant."""
from __future__ import annotations

import pglast
import pytest

from rewrite.gates import GateContext, check_statement

CTX = GateContext()


def verdict(sql: str):
    return check_statement(pglast.parse_sql(sql)[0], CTX)


@pytest.mark.parametrize("sql", [
    "SELECT current_setting('jit') AS cur, set_config('jit', 'off', false) AS new",
    "SELECT set_config('jit', $1, false)",
    "SELECT pg_catalog.set_config('application_name', 'dash', true)",
    "SELECT set_config('statement_timeout'::text, '5s', false)",
    "SET jit = off",
])
def test_harmless_settings_allowed(sql):
    assert verdict(sql) is None


@pytest.mark.parametrize("sql", [
    "SELECT set_config('search_path', 'pg_temp,public', false)",
    "SELECT set_config('pgveil.purpose', 'Fraud', false)",
    "SELECT set_config('role', 'postgres', false)",
    "SELECT set_config($1, 'x', false)",
    "SELECT set_config(name, 'x', false) FROM (VALUES ('search_path')) v(name)",
    "SELECT set_config('jit' || '', 'off', false)",
    "SELECT set_config(VARIADIC ARRAY['jit', 'off', 'false'])",
    "SELECT set_config('standard_conforming_strings', 'off', false)",
    "SELECT set_config('SEARCH_PATH', 'x', false)",
    "SELECT set_config('session_authorization', 'postgres', true)",
])
def test_everything_else_refused(sql):
    refusal = verdict(sql)
    assert refusal is not None and refusal.sqlstate == "42501" and "set_config" in refusal.message
    assert "pg_temp" not in refusal.message and "Fraud" not in refusal.message
