"""Built-in calls of governed statements are printed pg_catalog-qualified (gates' known gap 1).

On the real server: a function in public named like a built-in. With an exact
signature tie (public.lower(text)) the pinned search_path already picks
pg_catalog (it is implicitly first); with a better-matching signature
(public.lower(varchar) for a varchar argument) PostgreSQL picks the user
function, so the pinned path alone is not enough. The rewritten statement
calls pg_catalog.lower either way.
"""
from __future__ import annotations

import pytest

from rewrite import Allow, Rewritten, rewrite_sql
from rewrite.gates import GateContext

SHADOWS = """
CREATE FUNCTION public.lower(text) RETURNS text LANGUAGE sql AS $$ SELECT 'PWNED' $$;
CREATE FUNCTION public.lower(varchar) RETURNS text LANGUAGE sql AS $$ SELECT 'PWNED' $$;
"""


@pytest.fixture
def shadowed(db):
    db.run(db.conn.execute(SHADOWS))
    db.run(db.conn.execute("SET search_path = public"))  # what the proxy pins
    yield db
    db.run(db.conn.execute("DROP FUNCTION public.lower(text); DROP FUNCTION public.lower(varchar); RESET search_path"))


def test_the_capture_is_real(shadowed):
    """Without qualification a better-matching user function wins over the built-in."""
    assert shadowed.fetch("SELECT lower('ABC'::text)")[0][0] == "abc"  # exact tie: pg_catalog first
    assert shadowed.fetch("SELECT lower('ABC'::varchar)")[0][0] == "PWNED"  # better match: public wins


@pytest.mark.parametrize("sql", [
    "SELECT lower(name) FROM rw.patients ORDER BY patient_id LIMIT 1",  # a masked column
    "SELECT lower(name::varchar) FROM rw.patients ORDER BY patient_id LIMIT 1",
    "SELECT lower(v::varchar) FROM rw.open ORDER BY id LIMIT 1",
    "SELECT lower('ABC'::varchar)",  # no governed table at all
])
def test_governed_statements_call_the_builtin(shadowed, ctx_for, sql):
    v = rewrite_sql(sql, ctx_for("alice"))
    assert isinstance(v, Rewritten), v
    assert "pg_catalog.lower(" in v.sql
    value = shadowed.fetch(v.sql)[0][0]
    assert value != "PWNED"


def test_unrestricted_users_are_left_alone(ctx_for):
    assert isinstance(rewrite_sql("SELECT lower('ABC'::varchar)", ctx_for("root")), Allow)


def test_admin_listed_user_function_resolves_along_the_path(db, config, policies):
    from rewrite import RewriteContext

    from .conftest import KEYS, subject

    gctx = GateContext(search_path=("public",), extra_functions=frozenset({("public", "lower")}))
    ctx = RewriteContext(subject(config, "alice"), policies, db.catalog, KEYS, ("public",), config.tags,
                         gate=lambda raw, c: None, gate_context=gctx)
    v = rewrite_sql("SELECT lower('ABC'::varchar), upper('a')", ctx, use_cache=False)
    assert "pg_catalog.upper(" in v.sql and "pg_catalog.lower(" not in v.sql
