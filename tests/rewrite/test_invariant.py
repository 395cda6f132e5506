"""Property: generated queries over governed tables never return a sentinel.

For alice every raw value a mask hides and every row a filter removes carries
SECRET (see conftest). Queries are built from pieces that reach the data in
different ways (whole rows, JSON, aggregates, joins, sub-selects, CTEs, set
operations, error-raising predicates); the rows, the error text and notices
are checked.
"""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .test_attacks import assert_clean

TABLES = {
    "rw.patients": ["patient_id", "ssn", "name", "email", "zip", "birth_year", "note"],
    "rw.claims": ["claim_id", "account_no", "country", "state", "amount", "x"],
    "rw.vault": ["id", "secret"],
}
TEXT_COLS = {"ssn", "name", "email", "zip", "note", "account_no", "country", "state", "secret"}


@st.composite
def select_list(draw, alias, cols):
    kind = draw(st.sampled_from(["star", "cols", "row", "json", "agg", "func"]))
    if kind == "star":
        return "*"
    if kind == "row":
        return alias
    if kind == "json":
        return f"to_jsonb({alias})::text"
    picked = draw(st.lists(st.sampled_from(cols), min_size=1, max_size=3, unique=True))
    if kind == "agg":
        return ", ".join(f"string_agg({alias}.{c}::text, '|')" for c in picked)
    if kind == "func":
        return ", ".join(f"{c}({alias})" for c in picked)
    return ", ".join(f"{alias}.{c}" for c in picked)


@st.composite
def predicate(draw, alias, cols):
    c = draw(st.sampled_from(cols))
    kind = draw(st.sampled_from(["none", "eq", "like", "cast", "div", "notnull", "sub"]))
    if kind == "none":
        return ""
    if kind == "eq":
        return f" WHERE {alias}.{c}::text = 'SECRET-ROW-3'"
    if kind == "like":
        return f" WHERE {alias}.{c}::text LIKE '%SECRET%'"
    if kind == "cast":
        return f" WHERE {alias}.{c}::text::int > 0"
    if kind == "div":
        return f" WHERE 1 / (length({alias}.{c}::text) - 12) = 0"
    if kind == "notnull":
        return f" WHERE {alias}.{c} IS NOT NULL"
    return f" WHERE {alias}.{c}::text IN (SELECT {c}::text FROM {draw(st.sampled_from([t for t, cs in TABLES.items() if c in cs]))})"


@st.composite
def query(draw):
    table = draw(st.sampled_from(sorted(TABLES)))
    cols = TABLES[table]
    alias = draw(st.sampled_from(["t", "patients", "x"]))
    base = f"SELECT {draw(select_list(alias, cols))} FROM {table} {alias}{draw(predicate(alias, cols))}"
    wrap = draw(st.sampled_from(["plain", "sub", "cte", "union", "lateral", "scalar", "order"]))
    if wrap == "sub":
        return f"SELECT * FROM ({base}) s"
    if wrap == "cte":
        return f"WITH q AS ({base}) SELECT * FROM q"
    if wrap == "union":
        return f"SELECT to_jsonb(u)::text FROM ({base}) u UNION ALL SELECT to_jsonb(v)::text FROM ({base}) v"
    if wrap == "lateral":
        return f"SELECT l.* FROM (VALUES (1)) v(n), LATERAL ({base}) l"
    if wrap == "scalar":
        return f"SELECT (SELECT string_agg(z::text, ',') FROM ({base}) z)"
    if wrap == "order":
        c = draw(st.sampled_from(cols))
        return f"SELECT * FROM ({base}) o ORDER BY 1 LIMIT 50" if c in TEXT_COLS else f"{base} LIMIT 50"
    return base


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sql=query())
def test_generated_queries_never_leak(db, run_as, sql):
    try:
        assert_clean(db, run_as, sql)
    except PermissionError as exc:  # a denial is fine; its message must not leak either
        assert "SECRET" not in str(exc)
