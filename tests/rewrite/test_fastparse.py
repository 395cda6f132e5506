"""parse_fast builds exactly pglast's trees: on every SQL text of the test suite and on generated statements."""
from __future__ import annotations

import ast as pyast
from pathlib import Path

import pglast
import pytest
from hypothesis import given, settings, strategies as st

from rewrite.analysis.fastparse import parse_fast

TESTS = Path(__file__).resolve().parent.parent


def _corpus() -> list[str]:
    texts = []
    for f in sorted(TESTS.rglob("*.py")):
        for n in pyast.walk(pyast.parse(f.read_text())):
            if isinstance(n, pyast.Constant) and isinstance(n.value, str) and len(n.value) > 6:
                texts.append(n.value)
    for f in sorted(TESTS.rglob("*.sql")):
        texts += [line for line in f.read_text().splitlines() if line.strip()]
    out = []
    for t in dict.fromkeys(texts):
        try:
            pglast.parse_sql(t)
        except Exception:
            continue
        out.append(t)
    return out


CORPUS = _corpus()


def _same(sql: str) -> bool | None:
    got = parse_fast(sql)
    if got is None:
        return None
    ref = pglast.parse_sql(sql)
    return len(got) == len(ref) and all(a == b and a.stmt_len == b.stmt_len and a.stmt_location == b.stmt_location
                                        for a, b in zip(got, ref))


def test_corpus_is_large_and_mostly_fast():
    results = [_same(sql) for sql in CORPUS]
    assert len(CORPUS) > 1000
    assert False not in results
    assert results.count(True) > 0.98 * len(results)  # the rest falls back to pglast.parse_sql


def test_non_ascii_and_unknown_shapes_fall_back():
    assert parse_fast("SELECT 'é'") is None
    assert parse_fast("CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql AS 'select 1'") is None


def test_syntax_errors_raise_like_pglast():
    with pytest.raises(pglast.parser.ParseError):
        parse_fast("SELECT FROM WHERE")


_ident = st.sampled_from(["a", "b", "t.c", '"Quoted"', "x1", "pg_catalog.now()", "$1", "NULL", "'s'", "1.5", "42",
                          "true", "ARRAY[1,2]", "(1, 2)", "'{}'::jsonb", "a[1]", "a::text", "-3", "B'101'", "x'1F'"])
_op = st.sampled_from(["+", "-", "*", "/", "=", "<>", "<", ">=", "AND", "OR", "||", "LIKE", "IS DISTINCT FROM", "->>"])


@st.composite
def _expr(draw, depth=0):
    if depth > 2 or draw(st.booleans()):
        return draw(_ident)
    kind = draw(st.integers(0, 5))
    a, b = draw(_expr(depth + 1)), draw(_expr(depth + 1))
    if kind == 0:
        return f"({a} {draw(_op)} {b})"
    if kind == 1:
        return f"coalesce({a}, {b})"
    if kind == 2:
        return f"CASE WHEN {a} THEN {b} ELSE NULL END"
    if kind == 3:
        return f"{a} IN ({b}, {a})"
    if kind == 4:
        return f"(SELECT {a} FROM t WHERE {b} LIMIT 1)"
    return f"count(DISTINCT {a}) FILTER (WHERE {b}) OVER (PARTITION BY {a})"


@settings(max_examples=300, deadline=None)
@given(_expr(), _expr(), st.sampled_from(["", " GROUP BY 1", " ORDER BY 1 DESC NULLS LAST", " LIMIT 3 OFFSET 1",
                                          " FOR UPDATE", " UNION ALL SELECT 1"]))
def test_generated_statements(target, where, tail):
    sql = f"WITH w AS (SELECT 1) SELECT {target} AS v FROM t JOIN u USING (id) LEFT JOIN LATERAL f(1) g ON true WHERE {where}{tail}"
    try:
        pglast.parse_sql(sql)
    except pglast.parser.ParseError:
        return
    assert _same(sql) in (True, None)
