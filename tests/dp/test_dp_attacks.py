"""Attacks on the differentially private path, as a motivated analyst would run them, through ``pgveil serve``.

Every payload must leave no row-level value in any result, notice or error
text (no ``SECRETNAME`` the payload did not itself contain, no exact income or
age of the targeted person where a query singles them out), and must either be
refused with a clear error or be answered by a noisy aggregate within the
rules (thresholded groups, public keys, bounded values). The session must stay
usable after each one.

Classes: error oracles in WHERE, HAVING / ORDER BY / LIMIT side channels,
GROUP BY on (near-)unique columns, differencing, averaging by repetition and
rephrasing, budget bypass (transactions, pipelining, extended protocol, several
connections, threads), parameters, prepared statements, cursors, COPY, EXPLAIN,
CTEs, sub-queries, set operations, joins, LATERAL, views, functions, whole-row
and system columns, catalog functions and statistics, aggregates with FILTER /
DISTINCT / ORDER BY, window functions, grouping sets, other aggregates,
overflow, multi-statement strings, settings, and the backend's error messages.

A payload that reveals a real leak keeps its assertion and is marked ``# FINDING:``.
"""
from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable

import asyncpg
import psycopg
import pytest
import yaml

from ..pgfixture import scratch_dir
from ..proxyproc import ProxyProcess
from .conftest import DPProxy, dp_config, dp_env, pums_rows

ROWS = pums_rows()
BY_ID = {r[0]: r for r in ROWS}
_INCOMES = Counter(r[4] for r in ROWS)
# The targeted person: a unique, non-zero income (so an exact income in a result can only be theirs).
TARGET = next(r for r in ROWS if r[4] > 0 and _INCOMES[r[4]] == 1)
T_ID, T_AGE, T_SEX, T_EDUC, T_INCOME, T_MARRIED, T_REGION, T_NAME = TARGET
TRUE_SUM_INCOME = sum(r[4] for r in ROWS)
HUGE_BUDGET = 1_000_000.0

SECRET = re.compile(r"SECRETNAME\d{4}")
# Phrases of backend errors raised by the exact aggregate (they could quote a row's value).
BACKEND_PHRASES = ("invalid input syntax", "out of range", "division by zero", "pgveil_rows", "pgveil_rn",
                   "row_number", "GREATEST(", "LEAST(", "does not exist")
CLEAR_STATES = {"0A000", "42501", "42601", "42P10", "42P01", "42704", "22023", "25001", "26000", "XX000", "42883",
                "42803", "0LP01", "55000", "25006", "34000", "26000", "54001"}


# --------------------------------------------------------------------------- helpers


@dataclass
class Outcome:
    sql: str
    rows: list | None = None
    error: psycopg.Error | None = None
    notices: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    def text(self) -> str:
        """Everything the client saw: rows, column names, notices, the error with all its fields."""
        parts = [repr(self.rows), repr(self.names), *self.notices]
        if self.error is not None:
            parts.append(str(self.error))
            diag = self.error.diag
            for f in ("message_primary", "message_detail", "message_hint", "context", "internal_query",
                      "statement_position", "schema_name", "table_name", "column_name", "constraint_name"):
                v = getattr(diag, f, None)
                if v:
                    parts.append(str(v))
        return "\n".join(parts)


def attempt(conn: psycopg.Connection, sql: str, params: Any = None) -> Outcome:
    out = Outcome(sql)
    handler = lambda d: out.notices.append(f"{d.severity}: {d.message_primary} {d.message_detail or ''}")  # noqa: E731
    conn.add_notice_handler(handler)
    try:
        cur = conn.execute(sql, params)
        out.rows = cur.fetchall() if cur.description else []
        out.names = [d.name for d in cur.description or ()]
    except psycopg.Error as exc:
        out.error = exc
    finally:
        conn.remove_notice_handler(handler)
    return out


def assert_no_leak(out: Outcome | str, payload: str = "") -> None:
    text = out.text() if isinstance(out, Outcome) else out
    leaked = set(SECRET.findall(text)) - set(SECRET.findall(payload))
    assert not leaked, f"protected names reached the client: {sorted(leaked)[:5]} for {payload!r}"
    if "SECRETNAME" not in payload:
        assert "SECRETNAME" not in text, f"a protected name reached the client for {payload!r}"


def cells(rows) -> list:
    return [v for r in rows or () for v in r]


def assert_not_exact(out: Outcome, *exact) -> None:
    """No cell of the result equals an exact per-person value of the target."""
    for v in cells(out.rows):
        if isinstance(v, (int, float, Decimal)) and not isinstance(v, bool):
            for e in exact:
                assert Decimal(str(v)) != Decimal(str(e)), f"exact value {e} of the target in {out.sql!r}: {out.rows}"


def assert_clear_refusal(out: Outcome) -> None:
    assert out.error is not None, f"expected a refusal, got {out.rows!r} for {out.sql!r}"
    state = out.error.sqlstate
    msg = out.error.diag.message_primary or str(out.error)
    assert state in CLEAR_STATES, f"unexpected SQLSTATE {state}: {msg} for {out.sql!r}"
    assert len(msg) > 15, msg
    if state == "XX000":  # pgveil's own generic failure, never the backend's
        assert "pgveil" in msg or "differentially private" in msg, msg
    for phrase in BACKEND_PHRASES[3:]:
        assert phrase not in msg, f"internal SQL in the message: {msg}"


def assert_usable(conn: psycopg.Connection) -> None:
    assert conn.execute("SELECT 1").fetchone() == (1,)


def true_count(pred: Callable[[tuple], bool]) -> int:
    return sum(1 for r in ROWS if pred(r))


class AttackProxy(DPProxy):
    """A DPProxy whose config an attack scenario changes before the process starts."""

    def __init__(self, pg, mutate: Callable[[dict], None] | None = None, **kw) -> None:
        self.dir = scratch_dir()
        self.config = dp_config(pg, self.dir, **kw)
        if mutate is not None:
            mutate(self.config)
            (self.dir / "pgveil.yaml").write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.proc = ProxyProcess(self.dir / "pgveil.yaml", dp_env(pg))
        self.port = self.proc.port

    @property
    def log(self) -> list[str]:
        """The proxy's output (ProxyProcess drains it, so a full pipe never blocks the proxy)."""
        return self.proc.output


@pytest.fixture(scope="module")
def big(pg, pums_db):
    """A proxy with an effectively unlimited budget, for the payload list (budget tests start their own)."""
    import psycopg as pg_

    with pg_.connect(pg.dsn(), autocommit=True) as su:
        su.execute("ANALYZE public.pums")  # statistics exist: pg_stats / reltuples would now hold real values
    p = AttackProxy(pg, budget=HUGE_BUDGET)
    yield p
    p.stop()


@pytest.fixture
def conn(big):
    with big.connect() as c:
        yield c


# --------------------------------------------------------------------------- checkers for accepted answers


def one_count(lo: int, hi: int):
    def check(out: Outcome) -> None:
        assert len(out.rows) == 1 and len(out.rows[0]) >= 1, out.rows
        v = out.rows[0][0]
        assert isinstance(v, int) and lo <= v <= hi, (out.sql, v)
    return check


def no_rows(out: Outcome) -> None:
    assert out.rows == [], f"rare groups were released by {out.sql!r}: {out.rows[:5]}"


def scalar_rows(out: Outcome) -> None:
    assert len(out.rows) <= 1, out.rows


def public_sex_groups(out: Outcome) -> None:
    assert {r[0] for r in out.rows} <= {"F", "M"}, out.rows
    assert len(out.rows) <= 2


def frequent(*columns: int):
    """Every released group is a combination of the given table columns that at least 5 people share."""
    def check(out: Outcome) -> None:
        for r in out.rows:
            key = tuple(r[: len(columns)])
            n = true_count(lambda row: tuple(row[c] for c in columns) == key)
            assert n >= 5, f"group {key} (true count {n}) released by {out.sql!r}"
    return check


def bounded_sum(out: Outcome) -> None:
    (v,) = out.rows[0][:1]
    assert v is not None and -10_000_000 <= v <= 1000 * 500_000 + 10_000_000, v
    assert v != TRUE_SUM_INCOME, "the exact sum of incomes was released"


def not_target(out: Outcome) -> None:
    assert_not_exact(out, T_INCOME)


def avg_in_bounds(out: Outcome) -> None:
    assert len(out.rows) == 1
    assert all(v is None or 0 <= v <= 500000 for v in cells(out.rows)), out.rows


def nothing(out: Outcome) -> None:
    pass


# --------------------------------------------------------------------------- the payload list
#
# (id, sql, expectation, checker): "refuse" = a clear error; "accept" = a noisy aggregate that the checker
# accepts; "either" = a clear error or a noisy aggregate the checker accepts. Every payload: no leak.

X, A, N = T_INCOME, T_AGE, T_NAME
PAYLOADS = [
    # --- error oracles in WHERE: an error raised on one row would reveal that row
    ("div-income", f"SELECT count(*) FROM pums WHERE 1/(income - {X}) > 0", "refuse", None),
    ("div-age", f"SELECT count(*) FROM pums WHERE income / (age - {A}) = 0", "refuse", None),
    ("mod-zero", f"SELECT count(*) FROM pums WHERE mod(income, age - {A}) = 0", "refuse", None),
    ("numeric-div", f"SELECT count(*) FROM pums WHERE age::numeric / (income - {X}) > 1", "refuse", None),
    ("case-div", f"SELECT count(*) FROM pums WHERE CASE WHEN name = '{N}' THEN 1/0 ELSE 1 END = 1", "refuse", None),
    ("or-div", f"SELECT count(*) FROM pums WHERE age > 200 OR 1/(income - {X}) = 1", "refuse", None),
    ("not-div", f"SELECT count(*) FROM pums WHERE NOT (age = 1/(income - {X}))", "refuse", None),
    ("cast-int", "SELECT count(*) FROM pums WHERE name::int > 3", "refuse", None),
    ("cast-fn", "SELECT count(*) FROM pums WHERE CAST(name AS integer) = 1", "refuse", None),
    ("cast-date", "SELECT count(*) FROM pums WHERE to_date(name, 'YYYYMMDD') IS NULL", "refuse", None),
    ("cast-bool", "SELECT count(*) FROM pums WHERE region::boolean", "refuse", None),
    ("cast-smallint", "SELECT count(*) FROM pums WHERE income::smallint > 0", "refuse", None),
    ("regex", f"SELECT count(*) FROM pums WHERE name ~ '{N}'", "refuse", None),
    ("regex-bad", "SELECT count(*) FROM pums WHERE name ~ ('(' || region)", "refuse", None),
    ("regexp-match", "SELECT count(*) FROM pums WHERE regexp_match(name, '[') IS NULL", "refuse", None),
    ("similar", "SELECT count(*) FROM pums WHERE name SIMILAR TO '('", "refuse", None),
    ("like-trailing-escape", "SELECT count(*) FROM pums WHERE age = 40 AND name LIKE 'x\\'", "refuse", None),
    ("like-e-trailing-escape", "SELECT count(*) FROM pums WHERE name LIKE E'SECRET\\\\'", "refuse", None),
    ("like-escape-clause", "SELECT count(*) FROM pums WHERE name LIKE 'x' ESCAPE 'ab'", "refuse", None),
    ("like-column-pattern", "SELECT count(*) FROM pums WHERE 'abc' LIKE name", "refuse", None),
    ("like-row-pattern", "SELECT count(*) FROM pums WHERE name LIKE region", "refuse", None),
    ("array-subscript", "SELECT count(*) FROM pums WHERE (ARRAY[1, 2])[age] = 1", "refuse", None),
    ("array-split", "SELECT count(*) FROM pums WHERE (string_to_array(name, 'E'))[2] = 'x'", "refuse", None),
    ("array-any", "SELECT count(*) FROM pums WHERE age = ANY('{1,2}')", "refuse", None),
    ("overflow-mul", "SELECT count(*) FROM pums WHERE age * 100000000 > 0", "refuse", None),
    ("overflow-add", "SELECT count(*) FROM pums WHERE income + 2147483647 > 0", "refuse", None),
    ("overflow-square", "SELECT count(*) FROM pums WHERE income * income > 0", "refuse", None),
    ("overflow-power", "SELECT count(*) FROM pums WHERE power(age::float8, 1000) > 0", "refuse", None),
    ("sqrt-negative", f"SELECT count(*) FROM pums WHERE sqrt(age - {A}) > 0", "refuse", None),
    ("ln-zero", "SELECT count(*) FROM pums WHERE ln(income) > 0", "refuse", None),
    ("chr-range", "SELECT count(*) FROM pums WHERE chr(age * 100000) = 'x'", "refuse", None),
    ("substring-negative", f"SELECT count(*) FROM pums WHERE substring(name from 1 for age - {A}) = ''", "refuse", None),
    ("repeat-memory", "SELECT count(*) FROM pums WHERE repeat(name, income) = ''", "refuse", None),
    ("json-parse", "SELECT count(*) FROM pums WHERE ('{\"a\":' || name || '}')::jsonb ->> 'a' = 'x'", "refuse", None),
    ("jsonb-cast", "SELECT count(*) FROM pums WHERE name::jsonb IS NOT NULL", "refuse", None),
    ("jsonb-contains", f"SELECT count(*) FROM pums WHERE jsonb_build_object('n', name) @> '{{\"n\":\"{N}\"}}'", "refuse", None),
    ("xml-parse", "SELECT count(*) FROM pums WHERE xpath('/a', name::xml) IS NOT NULL", "refuse", None),
    ("current-setting", "SELECT count(*) FROM pums WHERE current_setting(name) IS NULL", "refuse", None),
    ("set-config", "SELECT count(*) FROM pums WHERE set_config('x.y', name, false) IS NOT NULL", "refuse", None),
    ("length-fn", "SELECT count(*) FROM pums WHERE length(name) > 0", "refuse", None),
    ("sleep", f"SELECT count(*) FROM pums WHERE pg_sleep(CASE WHEN income = {X} THEN 1 ELSE 0 END) IS NULL", "refuse", None),
    ("in-subquery", f"SELECT count(*) FROM pums WHERE age IN (SELECT age FROM pums WHERE name = '{N}')", "refuse", None),
    ("exists-error", "SELECT count(*) FROM pums WHERE EXISTS (SELECT 1 WHERE 1/0 = 1)", "refuse", None),
    ("row-compare", "SELECT count(*) FROM pums WHERE (age, educ) = (50, 3)", "refuse", None),
    ("distinct-from", "SELECT count(*) FROM pums WHERE age IS DISTINCT FROM 5", "refuse", None),
    ("is-true", "SELECT count(*) FROM pums WHERE married IS TRUE", "refuse", None),
    ("collate", "SELECT count(*) FROM pums WHERE name > 'S' COLLATE \"C\"", "refuse", None),
    ("between-symmetric", "SELECT count(*) FROM pums WHERE age BETWEEN SYMMETRIC 50 AND 40", "refuse", None),
    ("operator-syntax", "SELECT count(*) FROM pums WHERE age OPERATOR(pg_catalog./) 0 = 1", "refuse", None),
    ("numeric-literal", "SELECT count(*) FROM pums WHERE income > 1e400", "refuse", None),
    ("text-as-bool", "SELECT count(*) FROM pums WHERE region", "refuse", None),
    ("whole-row-where", "SELECT count(*) FROM pums WHERE pums IS NOT NULL", "refuse", None),
    ("whole-row-text", "SELECT count(*) FROM pums p WHERE p::text LIKE '%SECRET%'", "refuse", None),
    ("ctid-where", "SELECT count(*) FROM pums WHERE ctid = '(0,1)'", "refuse", None),
    ("xmin-where", "SELECT count(*) FROM pums WHERE xmin::text::int > 0", "refuse", None),
    ("tableoid-regclass", "SELECT count(*) FROM pums WHERE tableoid = 'pums'::regclass", "refuse", None),
    # Constant errors (the literal alone fails): the exact query fails, the message must be pgveil's own.
    ("const-bad-int", "SELECT count(*) FROM pums WHERE age = 'abc'", "refuse", None),
    ("const-bad-bool", "SELECT count(*) FROM pums WHERE married = 'maybe'", "refuse", None),
    ("const-bad-in", "SELECT count(*) FROM pums WHERE age IN (1, 'x')", "refuse", None),
    ("const-int-range", "SELECT count(*) FROM pums WHERE age = '99999999999'", "refuse", None),
    ("const-schema-type", "SELECT count(*) FROM pums WHERE age = '5'::public.int4", "refuse", None),

    # --- accepted WHERE shapes that single the target out: noisy, never the exact per-person value
    ("target-sum", f"SELECT sum(income) FROM pums WHERE person_id = {T_ID}", "accept", not_target),
    ("target-avg", f"SELECT avg(income) FROM pums WHERE name = '{N}'", "accept", not_target),
    ("target-avg-like", f"SELECT avg(income) FROM pums WHERE name LIKE '{N}'", "accept", not_target),
    ("target-sum-in", f"SELECT sum(income), count(*) FROM pums WHERE person_id IN ({T_ID}, {T_ID})", "accept", not_target),
    ("target-between", f"SELECT sum(income) FROM pums WHERE person_id BETWEEN {T_ID} AND {T_ID}", "accept", not_target),
    ("target-income-eq", f"SELECT count(*), avg(age) FROM pums WHERE income = {X}", "accept", one_count(0, 30)),
    ("target-unicode-ident", f"SELECT count(*), sum(income) FROM U&\"p\\0075ms\" WHERE U&\"n\\0061me\" = '{N}'",
     "accept", not_target),
    ("target-quoted", f'SELECT SUM("income") FROM "public"."pums" WHERE "name" = \'{N}\'', "accept", not_target),
    ("target-group-public", f"SELECT sex, count(*), sum(income) FROM pums WHERE person_id = {T_ID} GROUP BY sex",
     "accept", lambda o: (public_sex_groups(o), assert_not_exact(o, T_INCOME))),
    ("col-vs-col", "SELECT count(*) FROM pums WHERE name < region", "accept", one_count(900, 1100)),
    ("only", "SELECT count(*) FROM ONLY pums", "accept", one_count(900, 1100)),

    # --- HAVING / ORDER BY / LIMIT / OFFSET: post-processing of released values only
    ("having-div", "SELECT count(*) FROM pums HAVING 1/(count(*) - 1000) = 0", "either", scalar_rows),
    ("having-target", f"SELECT sex, count(*) FROM pums WHERE name = '{N}' GROUP BY sex HAVING count(*) > 0",
     "accept", public_sex_groups),
    ("having-unique", "SELECT name, count(*) FROM pums GROUP BY name HAVING count(*) >= 0", "accept", no_rows),
    ("having-max", "SELECT count(*) FROM pums HAVING max(income) > 0", "refuse", None),
    ("having-bool-or", f"SELECT count(*) FROM pums HAVING bool_or(name = '{N}')", "refuse", None),
    ("having-column", f"SELECT count(*) FROM pums HAVING income = {X}", "refuse", None),
    ("order-unique-limit", "SELECT name, count(*) FROM pums GROUP BY name ORDER BY name LIMIT 1", "accept", no_rows),
    ("order-count-offset", "SELECT person_id, count(*) FROM pums GROUP BY 1 ORDER BY 2 DESC OFFSET 0 LIMIT 5",
     "accept", no_rows),
    ("order-by-column", "SELECT count(*) FROM pums ORDER BY name", "refuse", None),
    ("order-by-error", f"SELECT count(*) FROM pums ORDER BY 1/(income - {X})", "refuse", None),
    ("order-by-alias", "SELECT count(*) AS name FROM pums ORDER BY name", "accept", one_count(900, 1100)),
    ("limit-subquery", "SELECT count(*) FROM pums LIMIT (SELECT 1)", "refuse", None),
    ("offset-subquery", f"SELECT count(*) FROM pums OFFSET (SELECT count(*) FROM pums WHERE name = '{N}')", "refuse", None),
    ("limit-expression", "SELECT count(*) FROM pums LIMIT 1 + 1", "refuse", None),
    ("with-ties", "SELECT count(*) FROM pums FETCH FIRST 1 ROW WITH TIES", "either", scalar_rows),
    ("post-div", "SELECT avg(income)::int / 0 FROM pums", "either", scalar_rows),
    ("post-cast-key", "SELECT name::int, count(*) FROM pums GROUP BY name", "either", no_rows),
    ("post-current-user", "SELECT count(*), current_user FROM pums", "either", scalar_rows),
    ("post-query-to-xml", "SELECT count(*), query_to_xml('select name from pums', true, true, '') FROM pums",
     "refuse", None),
    ("post-set-config", "SELECT count(*), set_config('pgveil.purpose', 'x', false) FROM pums", "refuse", None),

    # --- GROUP BY on unique or near-unique columns: rare keys must not show
    ("group-name", "SELECT name, count(*) FROM pums GROUP BY name", "accept", no_rows),
    ("group-key", "SELECT person_id, count(*) FROM pums GROUP BY person_id", "accept", no_rows),
    ("group-income", "SELECT income, count(*) FROM pums GROUP BY income", "accept", frequent(4)),
    ("group-age-income", "SELECT age, income, count(*) FROM pums GROUP BY age, income", "accept", frequent(1, 4)),
    ("group-name-public", "SELECT sex, name, count(*) FROM pums GROUP BY sex, name", "accept", no_rows),
    ("group-name-sum", "SELECT name, sum(income) FROM pums GROUP BY name", "accept", no_rows),
    ("group-name-avg", "SELECT name, avg(age) FROM pums GROUP BY name", "accept", no_rows),
    ("group-name-distinct", "SELECT name, count(DISTINCT person_id) FROM pums GROUP BY name", "accept", no_rows),
    ("group-name-distinct-self", "SELECT name, count(DISTINCT name) FROM pums GROUP BY name", "accept", no_rows),
    ("group-position", "SELECT name, count(*) FROM pums GROUP BY 1", "accept", no_rows),
    ("group-target", f"SELECT name, count(*) FROM pums WHERE person_id = {T_ID} GROUP BY name", "accept", no_rows),
    ("group-having-rare", "SELECT name, count(*) FROM pums GROUP BY name HAVING count(*) < 5", "accept", no_rows),
    ("group-all-columns", "SELECT person_id, age, sex, educ, income, married, region, name, count(*) FROM pums "
     "GROUP BY 1, 2, 3, 4, 5, 6, 7, 8", "accept", no_rows),
    ("group-expression", "SELECT lower(name), count(*) FROM pums GROUP BY lower(name)", "refuse", None),
    ("group-aggregate-position", "SELECT count(*) FROM pums GROUP BY 1", "refuse", None),
    ("group-rollup", "SELECT name, count(*) FROM pums GROUP BY ROLLUP (name)", "refuse", None),
    ("group-cube", "SELECT sex, count(*) FROM pums GROUP BY CUBE (sex, name)", "refuse", None),
    ("group-sets", "SELECT count(*) FROM pums GROUP BY GROUPING SETS ((name), ())", "refuse", None),
    ("group-empty", "SELECT count(*) FROM pums GROUP BY ()", "refuse", None),
    ("group-distinct", "SELECT count(*) FROM pums GROUP BY DISTINCT name", "refuse", None),
    ("grouping-fn", "SELECT grouping(sex), count(*) FROM pums GROUP BY sex", "refuse", None),
    ("distinct-on", "SELECT DISTINCT ON (name) count(*) FROM pums GROUP BY name", "refuse", None),
    ("select-distinct", "SELECT DISTINCT name FROM pums", "refuse", None),

    # --- aggregates: FILTER / DISTINCT / ORDER BY, other aggregates, window functions
    ("filter", f"SELECT count(*) FILTER (WHERE name = '{N}') FROM pums", "refuse", None),
    ("sum-distinct", "SELECT sum(DISTINCT income) FROM pums", "refuse", None),
    ("avg-distinct", "SELECT avg(DISTINCT income) FROM pums", "refuse", None),
    ("agg-order", "SELECT count(income ORDER BY name) FROM pums", "refuse", None),
    ("count-case", f"SELECT count(CASE WHEN name = '{N}' THEN 1 END) FROM pums", "refuse", None),
    ("count-null", "SELECT count(NULL) FROM pums", "refuse", None),
    ("sum-const", "SELECT sum(1) FROM pums", "refuse", None),
    ("sum-expr", "SELECT sum(income * 1000000000) FROM pums", "refuse", None),
    ("sum-text", "SELECT sum(name) FROM pums", "refuse", None),
    ("sum-unbounded", "SELECT sum(person_id) FROM pums", "refuse", None),
    ("nested-agg", "SELECT sum(count(*)) FROM pums", "refuse", None),
    ("count-distinct-name", "SELECT count(DISTINCT name) FROM pums", "accept", one_count(900, 1100)),
    ("count-all-name", "SELECT count(ALL name) FROM pums", "accept", one_count(900, 1100)),
    ("sum-huge", "SELECT sum(income) FROM pums", "accept", bounded_sum),
    ("sum-many", "SELECT sum(age), sum(income), avg(income), avg(age), count(*), count(DISTINCT income) FROM pums",
     "accept", lambda o: (assert_not_exact(o, TRUE_SUM_INCOME), scalar_rows(o))),
    ("avg-bounds", "SELECT avg(income) FROM pums WHERE income >= 400000", "accept", avg_in_bounds),
    ("min", "SELECT min(income) FROM pums", "refuse", None),
    ("max", "SELECT max(income) FROM pums", "refuse", None),
    ("max-name", "SELECT max(name) FROM pums", "refuse", None),
    ("percentile-cont", "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY income) FROM pums", "refuse", None),
    ("percentile-disc", "SELECT percentile_disc(0.99) WITHIN GROUP (ORDER BY income) FROM pums", "refuse", None),
    ("mode", "SELECT mode() WITHIN GROUP (ORDER BY name) FROM pums", "refuse", None),
    ("stddev", "SELECT stddev(income) FROM pums", "refuse", None),
    ("variance", "SELECT variance(age) FROM pums", "refuse", None),
    ("string-agg", "SELECT string_agg(name, ',') FROM pums", "refuse", None),
    ("array-agg", "SELECT array_agg(name) FROM pums", "refuse", None),
    ("json-agg", "SELECT json_agg(name) FROM pums", "refuse", None),
    ("jsonb-agg", "SELECT jsonb_agg(income) FROM pums", "refuse", None),
    ("json-object-agg", "SELECT json_object_agg(name, income) FROM pums", "refuse", None),
    ("json-agg-strict", "SELECT json_agg_strict(name), count(*) FROM pums", "refuse", None),
    ("jsonb-object-agg-unique", "SELECT jsonb_object_agg_unique(name, income), count(*) FROM pums", "refuse", None),
    ("json-agg-strict-group", "SELECT name, json_agg_strict(name), count(*) FROM pums GROUP BY name", "either", no_rows),
    ("xmlagg", "SELECT xmlagg(xmlelement(name x, name)) FROM pums", "refuse", None),
    ("bool-and", "SELECT bool_and(married) FROM pums", "refuse", None),
    ("bit-or", "SELECT bit_or(income) FROM pums", "refuse", None),
    ("any-value", "SELECT any_value(name) FROM pums", "refuse", None),
    ("regr-count", "SELECT regr_count(income, age) FROM pums", "refuse", None),
    ("range-agg", "SELECT range_agg(int4range(income, income + 1)) FROM pums", "refuse", None),
    ("window-count", "SELECT count(*) OVER (PARTITION BY name) FROM pums", "refuse", None),
    ("window-row-number", "SELECT count(*), row_number() OVER () FROM pums", "refuse", None),
    ("window-sum-over", "SELECT sum(count(*)) OVER () FROM pums", "refuse", None),
    ("window-named", "SELECT sum(income) OVER w FROM pums WINDOW w AS (ORDER BY name)", "refuse", None),
    ("window-first", "SELECT first_value(name) OVER (ORDER BY income) FROM pums", "refuse", None),
    ("window-lag", "SELECT lag(income) OVER () FROM pums", "refuse", None),
    ("schema-sum", "SELECT public.sum(income) FROM pums", "refuse", None),

    # --- row-level reads, whole rows, system columns, alternate syntax
    ("table", "TABLE pums", "refuse", None),
    ("only-star", "SELECT * FROM ONLY pums", "refuse", None),
    ("star", "SELECT * FROM pums WHERE person_id = 1", "refuse", None),
    ("row-name", "SELECT name FROM pums LIMIT 1", "refuse", None),
    ("row-unicode", "SELECT U&\"n\\0061me\" FROM pums", "refuse", None),
    ("row-upper", "SELECT NAME FROM PUBLIC.PUMS", "refuse", None),
    ("whole-row", "SELECT p FROM pums p", "refuse", None),
    ("whole-row-json", "SELECT to_jsonb(p) FROM pums p", "refuse", None),
    ("whole-row-field", "SELECT (p).name, count(*) FROM pums p GROUP BY 1", "refuse", None),
    ("functional-notation", "SELECT name(p), count(*) FROM pums p GROUP BY 1", "refuse", None),
    ("count-whole-row", "SELECT count(pums) FROM pums", "refuse", None),
    ("count-distinct-row", "SELECT count(DISTINCT pums) FROM pums", "refuse", None),
    ("count-star-alias", "SELECT count(p.*) FROM pums p", "refuse", None),
    ("alias-columns", "SELECT count(a) FROM pums AS p(a, b, c)", "refuse", None),
    ("ctid-count", "SELECT count(DISTINCT ctid) FROM pums", "refuse", None),
    ("ctid-group", "SELECT ctid, count(*) FROM pums GROUP BY ctid", "refuse", None),
    ("xmin-group", "SELECT xmin, count(*) FROM pums GROUP BY xmin", "refuse", None),
    ("tablesample", "SELECT count(*) FROM pums TABLESAMPLE BERNOULLI (100) REPEATABLE (1)", "refuse", None),
    ("for-update", "SELECT count(*) FROM pums FOR UPDATE", "refuse", None),
    ("select-into", "SELECT count(*) INTO TEMP leak FROM pums", "refuse", None),
    ("values-wrap", "VALUES ((SELECT count(*) FROM pums))", "refuse", None),

    # --- statements around the DP table
    ("explain", "EXPLAIN SELECT count(*) FROM pums", "refuse", None),
    ("explain-analyze", f"EXPLAIN (ANALYZE, COSTS OFF) SELECT count(*) FROM pums WHERE name = '{N}'", "refuse", None),
    ("explain-row", f"EXPLAIN SELECT * FROM pums WHERE income = {X}", "refuse", None),
    ("declare", "DECLARE c CURSOR FOR SELECT count(*) FROM pums", "refuse", None),
    ("declare-rows", "DECLARE c CURSOR WITH HOLD FOR SELECT name FROM pums", "refuse", None),
    ("copy-query", "COPY (SELECT count(*) FROM pums) TO STDOUT", "refuse", None),
    ("copy-table", "COPY pums TO STDOUT", "refuse", None),
    ("copy-program", "COPY pums TO PROGRAM 'cat'", "refuse", None),
    ("prepare", "PREPARE p AS SELECT count(*) FROM pums", "refuse", None),
    ("prepare-param", "PREPARE p2(text) AS SELECT count(*) FROM pums WHERE name = $1", "refuse", None),
    ("cte", "WITH t AS (SELECT * FROM pums) SELECT count(*) FROM t", "refuse", None),
    ("cte-materialized", "WITH t AS MATERIALIZED (SELECT name FROM pums) SELECT count(*) FROM t", "refuse", None),
    ("cte-dp-inside", "WITH c AS (SELECT count(*) FROM pums) SELECT * FROM c", "refuse", None),
    ("cte-shadow", "WITH pums AS (SELECT 1 AS age) SELECT count(*) FROM pums", "either", one_count(1, 1)),
    ("subquery-from", "SELECT count(*) FROM (SELECT name FROM pums) s", "refuse", None),
    ("subquery-dp-from", "SELECT * FROM (SELECT count(*) FROM pums) s", "refuse", None),
    ("subquery-scalar", "SELECT (SELECT count(*) FROM pums)", "refuse", None),
    ("subquery-target", "SELECT count(*), (SELECT max(name) FROM pums) FROM pums", "refuse", None),
    ("subquery-exists", f"SELECT 1 WHERE EXISTS (SELECT 1 FROM pums WHERE name = '{N}')", "refuse", None),
    ("subquery-items", "SELECT count(*) FROM items WHERE name IN (SELECT name FROM pums)", "refuse", None),
    ("union", "SELECT count(*) FROM pums UNION ALL SELECT count(*) FROM pums", "refuse", None),
    ("intersect", "SELECT count(*) FROM pums INTERSECT SELECT 1000", "refuse", None),
    ("except", "SELECT name FROM pums EXCEPT SELECT 'x'", "refuse", None),
    ("self-join", "SELECT count(*) FROM pums a JOIN pums b ON a.income = b.income", "refuse", None),
    ("join-items", "SELECT count(*) FROM pums, items", "refuse", None),
    ("cross-join-srf", "SELECT count(*) FROM pums CROSS JOIN generate_series(1, 10)", "refuse", None),
    ("natural-join", "SELECT count(*) FROM pums NATURAL JOIN items", "refuse", None),
    ("lateral", "SELECT count(*) FROM pums LEFT JOIN LATERAL (SELECT pums.name) x ON true", "refuse", None),
    ("lateral-srf", "SELECT count(*) FROM pums, LATERAL unnest(ARRAY[pums.name]) u", "refuse", None),
    ("rows-from", "SELECT count(*) FROM ROWS FROM (generate_series(1, 2)), pums", "refuse", None),
    ("pg-temp", "SELECT count(*) FROM pg_temp.pums", "refuse", None),
    ("create-temp-shadow", "CREATE TEMP TABLE pums AS SELECT 1 AS age", "refuse", None),
    ("create-view", "CREATE TEMP VIEW v AS SELECT * FROM pums", "refuse", None),
    ("create-table-as", "CREATE TABLE leak AS SELECT * FROM pums", "refuse", None),
    ("create-function", "CREATE FUNCTION f() RETURNS SETOF text LANGUAGE sql AS 'SELECT name FROM pums'", "refuse", None),
    ("do-block", "DO $$BEGIN RAISE EXCEPTION '%', (SELECT name FROM pums LIMIT 1); END$$", "refuse", None),
    ("update-returning", f"UPDATE pums SET age = age WHERE person_id = {T_ID} RETURNING name, income", "refuse", None),
    ("delete-returning", "DELETE FROM pums WHERE person_id = 1 RETURNING *", "refuse", None),
    ("insert-select", "INSERT INTO pums SELECT * FROM pums", "refuse", None),
    ("insert-unique", f"INSERT INTO pums VALUES ({T_ID}, 1, 'F', 1, 1, true, 'north', 'x')", "refuse", None),
    ("merge", "MERGE INTO pums USING pums s ON false WHEN NOT MATCHED THEN DO NOTHING", "refuse", None),

    # --- catalog: reading the table or its statistics by name
    ("regclass", "SELECT 'pums'::regclass::text", "either", nothing),
    ("ts-stat", "SELECT * FROM ts_stat('SELECT to_tsvector(name) FROM pums')", "refuse", None),
    ("ts-rewrite", "SELECT ts_rewrite('a'::tsquery, 'SELECT to_tsquery(name), to_tsquery(''b'') FROM pums')",
     "refuse", None),
    ("query-to-xml", "SELECT query_to_xml('SELECT name FROM pums', true, false, '')", "refuse", None),
    ("table-to-xml", "SELECT table_to_xml('pums', true, false, '')", "refuse", None),
    ("table-to-xml-regclass", "SELECT table_to_xml('pums'::regclass, true, false, '')", "refuse", None),
    ("schema-to-xml", "SELECT schema_to_xml('public', true, false, '')", "refuse", None),
    ("database-to-xml", "SELECT database_to_xml(true, false, '')", "refuse", None),
    ("cursor-to-xml", "SELECT cursor_to_xml('c', 10, true, false, '')", "refuse", None),
    ("currtid2", "SELECT currtid2('pums', '(0,1)')", "refuse", None),
    ("xpath-query", "SELECT xpath('//name/text()', query_to_xml('SELECT name FROM pums', true, false, ''))",
     "refuse", None),
    ("dblink", "SELECT * FROM dblink('dbname=pgveil_test', 'SELECT name FROM pums') AS t(n text)", "refuse", None),
    ("pg-read-file", "SELECT pg_read_file('base/1/1259')", "refuse", None),
    ("pg-read-binary", "SELECT pg_read_binary_file(pg_relation_filepath('pums'))", "refuse", None),
    ("lo-import", "SELECT lo_import('/etc/hostname')", "refuse", None),
    ("pg-stats", "SELECT most_common_vals::text, histogram_bounds::text FROM pg_stats WHERE tablename = 'pums'",
     "refuse", None),
    ("pg-statistic", "SELECT stavalues1::text FROM pg_statistic", "refuse", None),
    ("pg-stats-ext", "SELECT * FROM pg_stats_ext", "refuse", None),
    ("reltuples", "SELECT reltuples::int FROM pg_class WHERE oid = 'pums'::regclass", "either",
     lambda o: [v for v in cells(o.rows) if v is not None] == []),
    ("reltuples-whole-row", "SELECT to_jsonb(c)::text FROM pg_class c WHERE relname = 'pums'", "either",
     lambda o: all('"reltuples": 1000' not in str(v) for v in cells(o.rows))),
    ("n-live-tup", "SELECT n_live_tup, n_tup_ins FROM pg_stat_user_tables WHERE relname = 'pums'", "either",
     lambda o: [v for v in cells(o.rows) if v is not None] == []),
    ("pg-stat-all", "SELECT n_live_tup FROM pg_stat_all_tables WHERE relname = 'pums'", "refuse", None),
    ("relation-size", "SELECT pg_relation_size('pums')", "refuse", None),
    ("pg-stat-activity", "SELECT query FROM pg_stat_activity", "refuse", None),

    # --- multi-statement strings and settings
    ("multi-select", "SELECT count(*) FROM pums; SELECT 1", "refuse", None),
    ("multi-two-dp", "SELECT count(*) FROM pums WHERE age > 10; SELECT count(*) FROM pums WHERE age > 11",
     "refuse", None),
    ("multi-set-first", "SET statement_timeout = 0; SELECT count(*) FROM pums", "refuse", None),
    ("multi-set-after", "SELECT count(*) FROM pums; SET pgveil.purpose = ''", "refuse", None),
    ("multi-begin", "BEGIN; SELECT count(*) FROM pums; COMMIT", "refuse", None),
    ("multi-row-after", "SELECT 1; SELECT name FROM pums", "refuse", None),
    ("set-epsilon", "SET pgveil.epsilon = 100", "refuse", None),
    ("set-budget", "SET pgveil.budget TO 1000000", "refuse", None),
    ("set-latency", "SET pgveil.latency_tolerance = '0s'", "refuse", None),
    ("set-purpose-unknown", "SET pgveil.purpose = 'admin'", "refuse", None),
    ("set-config-pgveil", "SELECT set_config('pgveil.user', 'root', false)", "refuse", None),
    ("set-role", "SET ROLE postgres", "refuse", None),
    ("set-session-auth", "SET SESSION AUTHORIZATION postgres", "refuse", None),
    ("set-scs", "SET standard_conforming_strings = off", "refuse", None),
    ("set-search-path", "SET search_path = pg_temp, public", "refuse", None),
    ("reset-all", "RESET ALL", "either", nothing),
]


def _ids():
    seen = Counter(p[0] for p in PAYLOADS)
    dup = [k for k, n in seen.items() if n > 1]
    assert not dup, dup
    return [p[0] for p in PAYLOADS]


@pytest.mark.parametrize("name, sql, expect, check", PAYLOADS, ids=_ids())
def test_payload(conn, name, sql, expect, check):
    out = attempt(conn, sql)
    assert_no_leak(out, sql)
    assert_not_exact_if_targeted(out, sql)
    if expect == "refuse":
        assert_clear_refusal(out)
    elif expect == "accept":
        assert out.ok, f"{sql!r} was refused: {out.error}"
        check(out)
    else:
        if out.ok:
            check(out)
        elif out.error.sqlstate not in ("22012",):  # a post-processing error on released values is allowed
            assert_clear_refusal(out)
    assert_usable(conn)


def assert_not_exact_if_targeted(out: Outcome, sql: str) -> None:
    if out.rows and (f"person_id = {T_ID}" in sql or N in sql or str(X) in sql):
        assert_not_exact(out, T_INCOME)


NESTED = [
    "SELECT count(*) FROM pums WHERE " + "NOT " * 2000 + "married",
    "SELECT count(*) FROM pums WHERE " + "(" * 1500 + "age > 1" + ")" * 1500,
    "SELECT count(*) FROM pums WHERE " + " AND ".join(f"age <> {i}" for i in range(5000)),
    "SELECT count(*) FROM pums WHERE age IN (" + ", ".join(str(i) for i in range(20000)) + ")",
    "SELECT " + "abs(" * 800 + "count(*)" + ")" * 800 + " FROM pums",
    "SELECT 1 WHERE " + "NOT " * 2000 + "true",  # not even a DP statement
]


@pytest.mark.parametrize("sql", NESTED, ids=["not-chain", "parens", "and-chain", "in-list", "nested-calls", "plain-not"])
def test_deeply_nested_statements_are_refused_without_killing_the_session(big, sql):
    with big.connect() as c:
        out = attempt(c, sql)
        assert_no_leak(out, sql)
        # FINDING (fixed): a statement nested a few hundred levels deep killed the session (a RecursionError
        # escaped from the fast parser); now parse_fast falls back to pglast and the façade denies 54001.
        assert out.error is None or out.error.sqlstate is not None, f"the session died: {out.error}"
        if out.error is not None:
            assert_clear_refusal(out)
        assert_usable(c)


def test_failing_exact_query_does_not_leak_the_backend_message(conn):
    """Constant errors reach the exact aggregate; the client must get pgveil's generic XX000, nothing of the backend."""
    for sql in ("SELECT count(*) FROM pums WHERE age = 'abc'",
                f"SELECT sum(income) FROM pums WHERE name = '{N}' AND married = 'maybe'",
                "SELECT count(*) FROM pums WHERE income IN (1, '99999999999')"):
        out = attempt(conn, sql)
        assert out.error is not None, sql
        text = out.text()
        assert out.error.sqlstate == "XX000", text
        for phrase in BACKEND_PHRASES:
            assert phrase not in text, f"backend message reached the client: {text}"
        assert "could not be computed" in text
        assert_no_leak(out, sql)
        assert_usable(conn)


# --------------------------------------------------------------------------- parameters and protocols


def test_parameters_are_refused_in_every_protocol(big):
    with big.connect() as c:
        for sql, params in ((f"SELECT count(*) FROM pums WHERE name = %s", [N]),
                            ("SELECT sum(income) FROM pums WHERE person_id = %s", [T_ID]),
                            ("SELECT count(*) FROM pums WHERE income > %s LIMIT %s", [X, 1])):
            out = attempt(c, sql, params)
            assert out.error is not None and "literals" in str(out.error), out.text()
            assert_no_leak(out, N)
            assert_usable(c)
        # a client-side binding cursor inlines the literal: a noisy answer, never the exact income
        cur = psycopg.ClientCursor(c)
        cur.execute("SELECT sum(income) FROM pums WHERE person_id = %s", [T_ID])
        (v,) = cur.fetchone()
        assert v != T_INCOME

    async def go():
        a = await asyncpg.connect(big.dsn())
        try:
            for sql, args in (("SELECT count(*) FROM pums WHERE name = $1", (N,)),
                              ("SELECT avg(income) FROM pums WHERE person_id = $1::int", (T_ID,)),
                              ("SELECT count(*) FROM pums WHERE age > $1; SELECT 1", (3,))):
                with pytest.raises(asyncpg.PostgresError) as err:
                    await a.fetch(sql, *args)
                assert "SECRETNAME" not in str(err.value)
            # a prepared DP statement is answered once, and repeats that answer
            st = await a.prepare(f"SELECT sum(income) FROM pums WHERE name = '{N}'")
            first = await st.fetchval()
            assert first != T_INCOME
            assert [await st.fetchval() for _ in range(5)] == [first] * 5
            assert await a.fetchval("SELECT 1") == 1
        finally:
            await a.close()

    asyncio.run(go())


def test_named_cursor_and_asyncpg_cursor(big):
    with big.connect() as c:
        with pytest.raises(psycopg.Error) as err:
            with c.transaction():
                cur = c.cursor(name="leak")
                cur.execute("SELECT name FROM pums")
                cur.fetchall()
        assert_no_leak(str(err.value))
        assert_usable(c)

    async def go():
        a = await asyncpg.connect(big.dsn())
        try:
            async with a.transaction():
                rows = [tuple(r) async for r in a.cursor(f"SELECT sum(income) FROM pums WHERE person_id = {T_ID}")]
            assert len(rows) == 1 and rows[0][0] != T_INCOME
            with pytest.raises(asyncpg.PostgresError):
                async with a.transaction():
                    [r async for r in a.cursor("SELECT name FROM pums")]
        finally:
            await a.close()

    asyncio.run(go())


def test_cache_is_shared_but_not_averaged_across_users(big):
    sql = f"SELECT sum(income) FROM pums WHERE income >= {X}"
    with big.connect() as a, big.connect("ben") as b:
        va = a.execute(sql).fetchone()
        vb = b.execute(sql).fetchone()
        assert va == vb  # one answer for every subject who sees the same rows: no fresh noise by switching user


# --------------------------------------------------------------------------- differencing and averaging


def test_differencing_is_noisy_and_rephrasings_hit_the_cache(pg, pums_db):
    """sum(all) - sum(all but the target) must not give the target's income; rephrasings must not buy fresh noise."""
    p = DPProxy(pg, budget=2.0)
    try:
        with p.connect() as c:
            (total,) = c.execute("SELECT sum(income) FROM pums").fetchone()
            (without,) = c.execute(f"SELECT sum(income) FROM pums WHERE person_id <> {T_ID}").fetchone()
            assert total - without != T_INCOME
            assert total != TRUE_SUM_INCOME
            # the same two questions, rephrased and repeated: the same answers, no charge
            for sql in ["SELECT sum(income) FROM pums", "select SUM(income) from PUMS", "SELECT sum(p.income) FROM pums p",
                        "SELECT sum(income) AS s FROM public.pums ORDER BY 1 LIMIT 5",
                        "SELECT sum(income) + 0 FROM pums"] * 5:
                assert c.execute(sql).fetchone()[0] == total, sql
            for sql in [f"SELECT sum(income) FROM pums WHERE {T_ID} <> person_id",
                        f"SELECT sum(income) FROM pums WHERE NOT person_id = {T_ID}",
                        f"SELECT sum(income) FROM pums WHERE pums.person_id <> {T_ID}",
                        f"SELECT sum(income) FROM pums WHERE person_id NOT IN ({T_ID})",
                        f"SELECT sum(income) FROM pums WHERE person_id NOT IN ({T_ID}, {T_ID})",
                        f"SELECT sum(income) FROM pums WHERE (person_id <> {T_ID} AND person_id <> {T_ID})",
                        f"SELECT sum(income) FROM pums WHERE person_id <> {T_ID} OR person_id <> {T_ID}"] * 5:
                assert c.execute(sql).fetchone()[0] == without, sql
            # budget spent exactly twice: the next new question is refused
            out = attempt(c, f"SELECT sum(income) FROM pums WHERE person_id <> {T_ID} AND age >= 0")
            assert out.error is not None and out.error.sqlstate == "42501", out.text()
            assert "privacy budget exhausted" in str(out.error)
            assert_no_leak(out)
    finally:
        p.stop()


def test_count_differencing_is_noisy_over_many_targets(big):
    """count(all) - count(all but X) over 40 targets: not always exactly 1 (noise is there)."""
    with big.connect() as c:
        (total,) = c.execute("SELECT count(*) FROM pums WHERE age >= 0").fetchone()
        diffs = []
        for pid in range(100, 140):
            (w,) = c.execute(f"SELECT count(*) FROM pums WHERE person_id <> {pid}").fetchone()
            diffs.append(total - w)
        assert Counter(diffs)[1] < len(diffs), "every difference was exact: no noise"
        ages = []
        for pid in range(200, 210):
            (v,) = c.execute(f"SELECT avg(age) FROM pums WHERE person_id = {pid}").fetchone()
            ages.append(v is not None and Decimal(v) == BY_ID[pid][1])
        assert not all(ages), "the exact age of every targeted person was released"


def test_averaging_by_rephrasing_stops_at_the_budget(pg, pums_db):
    """Equivalent questions pgveil does not canonicalize each cost budget; averaging them is capped."""
    p = DPProxy(pg, budget=4.0)
    rephrasings = [f"SELECT sum(income) FROM pums WHERE person_id = {T_ID}",
                   f"SELECT sum(income) FROM pums WHERE person_id >= {T_ID} AND person_id <= {T_ID}",
                   f"SELECT sum(income) FROM pums WHERE person_id > {T_ID - 1} AND person_id < {T_ID + 1}",
                   f"SELECT sum(income) FROM pums WHERE person_id = {T_ID} AND age >= 0",
                   f"SELECT sum(income) FROM pums WHERE person_id = {T_ID} AND age <= 1000",
                   f"SELECT sum(income) FROM pums WHERE person_id = {T_ID} AND income >= 0",
                   f"SELECT sum(income) FROM pums WHERE person_id = {T_ID} AND name LIKE '%'",
                   f"SELECT sum(income) FROM pums WHERE person_id = {T_ID} AND name IS NOT NULL",
                   f"SELECT sum(income) FROM pums WHERE name = '{N}'",
                   f"SELECT sum(income) FROM pums WHERE name = '{N}' AND person_id = {T_ID}"]
    try:
        answers, refused = [], 0
        with p.connect() as c:
            for sql in rephrasings:
                out = attempt(c, sql)
                assert_no_leak(out, sql)
                if out.ok:
                    answers.append(out.rows[0][0])
                else:
                    assert out.error.sqlstate == "42501" and "privacy budget exhausted" in str(out.error), out.text()
                    refused += 1
        assert len(answers) <= 4 and refused >= len(rephrasings) - 4
        assert T_INCOME not in answers
    finally:
        p.stop()


def test_zero_latency_prepared_statements_are_recharged_not_free(pg, pums_db):
    """At 0 s every Bind of a named DP statement is re-answered (docs/dp.md): each is charged; past the cap it fails."""
    p = DPProxy(pg, budget=4.0, latency="0s")
    sql = f"SELECT sum(income) FROM pums WHERE person_id = {T_ID}"
    try:
        with p.connect(prepare_threshold=0) as prepared:
            values, errors = [], []
            for _ in range(7):
                out = attempt(prepared, sql)
                assert_no_leak(out, sql)
                if out.ok:
                    values.append(out.rows[0][0])
                else:
                    errors.append(out.error)
            assert len(values) == 4, (values, [str(e) for e in errors])
            assert all(e.sqlstate == "42501" and "privacy budget exhausted" in str(e) for e in errors)
            assert T_INCOME not in values and len(set(values)) > 1
            assert_usable(prepared)
        with p.connect() as c:
            out = attempt(c, sql)
            assert out.error is not None and out.error.sqlstate == "42501"
    finally:
        p.stop()


def test_prepared_repeats_within_the_tolerance_are_free(pg, pums_db):
    p = DPProxy(pg, budget=1.0)
    sql = f"SELECT sum(income) FROM pums WHERE person_id = {T_ID}"
    try:
        with p.connect(prepare_threshold=0) as prepared, p.connect() as plain:
            values = [prepared.execute(sql).fetchone()[0] for _ in range(10)]
            values += [plain.execute(sql).fetchone()[0] for _ in range(10)]
            assert len(set(values)) == 1 and values[0] != T_INCOME
    finally:
        p.stop()


# --------------------------------------------------------------------------- budget bypass


def _distinct_queries(n: int, base: int = 0) -> list[str]:
    return [f"SELECT count(*) FROM pums WHERE age >= {20 + base + i}" for i in range(n)]


def test_transaction_rollback_does_not_refund(pg, pums_db):
    p = DPProxy(pg, budget=3.0)
    try:
        with p.connect() as c:
            c.autocommit = False
            for sql in _distinct_queries(3):
                c.execute(sql).fetchone()
            c.rollback()
            c.execute("SAVEPOINT s")
            out = attempt(c, _distinct_queries(1, base=10)[0])
            assert out.error is not None and out.error.sqlstate == "42501", out.text()
            c.rollback()
        with p.connect() as c2:
            out = attempt(c2, _distinct_queries(1, base=20)[0])
            assert out.error is not None and out.error.sqlstate == "42501", out.text()
    finally:
        p.stop()


def test_aborted_transaction_does_not_spend_budget_on_answers_never_delivered(pg, pums_db):
    """In a failed transaction the answer cannot reach the client; spending the budget for it wastes it."""
    p = DPProxy(pg, budget=2.0, latency="0s")
    try:
        with p.connect() as c:
            c.autocommit = False
            with pytest.raises(psycopg.Error):
                c.execute("SELECT 1/0")
            states = []
            for sql in _distinct_queries(3):
                out = attempt(c, sql)
                assert out.error is not None  # the transaction is aborted: nothing is answered
                assert_no_leak(out, sql)
                states.append(out.error.sqlstate)
            c.rollback()
            c.autocommit = True
            answered = sum(attempt(c, sql).ok for sql in _distinct_queries(2, base=30))
            # FINDING (fixed in f1bdb75 while this suite was written): (budget, not privacy) every DP statement sent
            # inside an aborted transaction was computed and charged although the backend rejected its answer
            # (states were ['25P02', '25P02', '42501']); at latency 0s the loss was permanent.
            assert answered == 2, f"budget spent on answers an aborted transaction never delivered: {states}"
    finally:
        p.stop()


@pytest.mark.xfail(strict=True, reason="known limitation (docs/dp.md, Budget): a DP statement behind an error in the "
                   "same pipelined sync group is charged although the backend skips it")
def test_pipeline_after_an_error_does_not_spend_budget_on_skipped_statements(pg, pums_db):
    """After an error the backend skips the rest of the sync group; pgveil should not pay for answers it skips."""
    p = DPProxy(pg, budget=2.0, latency="0s")
    try:
        with p.connect() as c:
            with pytest.raises(psycopg.Error):
                with c.pipeline():
                    c.execute("SELECT 1/0")
                    for sql in _distinct_queries(2):
                        c.execute(sql)
            assert_usable(c)
            answered = sum(attempt(c, sql).ok for sql in _distinct_queries(2, base=30))
            # FINDING: (budget, not privacy) the f1bdb75 fix looks at the transaction status of the last
            # ReadyForQuery, but within one pipelined sync group the backend skips every message after an error
            # while pgveil has already computed and charged the DP answers of the Parse messages behind it (they
            # arrive before the error does). Same class as above; proxy/session/governed.py _judge. Fix idea: charge
            # when the answer is actually delivered is not possible (the exact query must run first), so compute
            # DP answers lazily: hold the DP statement until the backend has answered the earlier messages of its
            # group (no ErrorResponse seen), i.e. suspend on the group's earlier replies before AskDP.
            assert answered == 2, "budget spent on DP statements the backend skipped after an error in the pipeline"
    finally:
        p.stop()


def test_pipeline_cannot_overspend(pg, pums_db):
    p = DPProxy(pg, budget=3.0)
    try:
        with p.connect() as c:
            results = []
            try:
                with c.pipeline():
                    cursors = [c.execute(sql) for sql in _distinct_queries(6)]
                    for cur in cursors:
                        try:
                            results.append(("ok", cur.fetchall()))
                        except psycopg.Error as exc:
                            results.append(("err", exc))
            except psycopg.Error as exc:
                results.append(("err", exc))
            ok = [r for r in results if r[0] == "ok"]
            assert len(ok) <= 3, results
            for kind, value in results:
                if kind == "err":
                    assert_no_leak(str(value))
            assert_usable(c)
            out = attempt(c, _distinct_queries(1, base=40)[0])
            assert out.error is not None and out.error.sqlstate == "42501"
    finally:
        p.stop()


def test_extended_protocol_cannot_overspend(pg, pums_db):
    p = DPProxy(pg, budget=3.0)
    try:
        with p.connect(prepare_threshold=0) as c:
            ok = 0
            for sql in _distinct_queries(5):
                ok += attempt(c, sql).ok
            assert ok == 3

        async def go():
            a = await asyncpg.connect(p.dsn())
            try:
                for sql in _distinct_queries(3, base=10):
                    with pytest.raises(asyncpg.InsufficientPrivilegeError):
                        await a.fetch(sql)
            finally:
                await a.close()

        asyncio.run(go())
    finally:
        p.stop()


def test_several_connections_share_one_budget(pg, pums_db):
    p = DPProxy(pg, budget=3.0)
    try:
        ok = 0
        for sql in _distinct_queries(6):
            with p.connect() as c:
                ok += attempt(c, sql).ok
        assert ok == 3
    finally:
        p.stop()


def _threaded(p: DPProxy, sqls: list[str]) -> list[Outcome]:
    outs: list[Outcome | None] = [None] * len(sqls)
    barrier = threading.Barrier(len(sqls))

    def run(i: int) -> None:
        with p.connect() as c:
            barrier.wait()
            outs[i] = attempt(c, sqls[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(sqls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(o is not None for o in outs)
    return outs  # type: ignore[return-value]


def test_concurrent_sessions_cannot_overspend(pg, pums_db):
    p = DPProxy(pg, budget=4.0)
    try:
        outs = _threaded(p, _distinct_queries(12))
        ok = [o for o in outs if o.ok]
        assert len(ok) == 4, [o.text()[:80] for o in outs]
        for o in outs:
            assert_no_leak(o)
            if not o.ok:
                assert o.error.sqlstate == "42501"
    finally:
        p.stop()


def test_concurrent_same_question_is_answered_once(pg, pums_db):
    """12 sessions ask the same question at once with a budget of 1: one charge, one answer for all."""
    p = DPProxy(pg, budget=1.0)
    try:
        outs = _threaded(p, [f"SELECT sum(income) FROM pums WHERE person_id = {T_ID}"] * 12)
        assert all(o.ok for o in outs), [o.text()[:120] for o in outs if not o.ok]
        assert len({o.rows[0][0] for o in outs}) == 1
        assert outs[0].rows[0][0] != T_INCOME
    finally:
        p.stop()


def test_concurrent_fresh_noise_is_capped(pg, pums_db):
    p = DPProxy(pg, budget=3.0, latency="0s")
    try:
        outs = _threaded(p, [f"SELECT sum(income) FROM pums WHERE person_id = {T_ID}"] * 10)
        ok = [o for o in outs if o.ok]
        assert len(ok) == 3, [o.text()[:80] for o in outs]
        assert T_INCOME not in [o.rows[0][0] for o in ok]
    finally:
        p.stop()


def test_settings_do_not_change_epsilon_or_budget(pg, pums_db):
    p = DPProxy(pg, budget=2.0)
    try:
        with p.connect() as c:
            for sql in ("SET pgveil.epsilon = 100", "SET pgveil.budget = 1000", "RESET ALL", "SET pgveil.purpose = ''",
                        "SET application_name = 'x'", "SELECT set_config('pgveil.epsilon', '100', false)"):
                out = attempt(c, sql)
                assert_no_leak(out)
                assert_usable(c)
            for sql in _distinct_queries(2):
                assert attempt(c, sql).ok
            out = attempt(c, _distinct_queries(1, base=30)[0])
            assert out.error is not None and "costs epsilon 1," in str(out.error) and "of 2 per" in str(out.error)
    finally:
        p.stop()


def test_other_user_name_spellings_do_not_get_a_fresh_budget(pg, pums_db):
    p = DPProxy(pg, budget=1.0)
    try:
        with p.connect() as c:
            assert attempt(c, _distinct_queries(1)[0]).ok
        for user in ("ANA", "Ana", "ana ", '"ana"', "ana\u200b"):
            try:
                c = psycopg.connect(host="127.0.0.1", port=p.port, dbname="pgveil_test", user=user, password="ana-pw",
                                    autocommit=True)
            except psycopg.OperationalError:
                continue
            with c:
                out = attempt(c, _distinct_queries(1, base=5)[0])
                assert not out.ok, f"user {user!r} got a budget of its own"
    finally:
        p.stop()


# --------------------------------------------------------------------------- objects over the DP table


ATTACK_OBJECTS = """
DROP SCHEMA IF EXISTS attack CASCADE;
CREATE SCHEMA attack;
CREATE VIEW attack.pums_v AS SELECT * FROM public.pums;
CREATE VIEW attack.pums_names AS SELECT person_id, name, income FROM public.pums;
CREATE VIEW attack.pums_counts AS SELECT name, count(*) AS n FROM public.pums GROUP BY name;
CREATE MATERIALIZED VIEW attack.pums_mv AS SELECT name, income FROM public.pums;
CREATE TABLE attack.pums_child () INHERITS (public.pums);
INSERT INTO attack.pums_child VALUES (9999, 40, 'F', 10, 123457, true, 'north', 'SECRETNAME9999');
CREATE FUNCTION attack.leak() RETURNS SETOF text LANGUAGE sql AS 'SELECT name FROM public.pums';
CREATE FUNCTION attack.income_of(text) RETURNS int LANGUAGE sql AS 'SELECT income FROM public.pums WHERE name = $1';
GRANT USAGE ON SCHEMA attack TO {svc};
GRANT SELECT ON ALL TABLES IN SCHEMA attack TO {svc};
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA attack TO {svc};
"""


@pytest.fixture
def objects_proxy(pg, pums_db):
    with psycopg.connect(pg.dsn(), autocommit=True) as su:
        su.execute(ATTACK_OBJECTS.format(svc=pg.service_user))

    def grant(config: dict) -> None:  # an admin grants analysts the views and the child, unaware of the DP table
        for pol in config["policies"]:
            if "access" in pol:
                pol["access"]["tables"] += ["attack.pums_v", "attack.pums_names", "attack.pums_counts",
                                            "attack.pums_mv", "attack.pums_child"]

    p = AttackProxy(pg, mutate=grant, budget=HUGE_BUDGET)
    try:
        yield p
    finally:
        p.stop()
        with psycopg.connect(pg.dsn(), autocommit=True) as su:
            su.execute("DROP SCHEMA IF EXISTS attack CASCADE")


OBJECT_PAYLOADS = [
    "SELECT name, income FROM attack.pums_v",
    "SELECT count(*) FROM attack.pums_v",
    f"SELECT income FROM attack.pums_names WHERE name = '{N}'",
    "SELECT * FROM attack.pums_counts",
    "SELECT name FROM attack.pums_mv",
    "SELECT name, income FROM attack.pums_child",
    "SELECT count(*) FROM attack.pums_child",
    "SELECT * FROM attack.leak()",
    f"SELECT attack.income_of('{N}')",
    "SELECT count(*) FROM pums p JOIN attack.pums_v v USING (person_id)",
    "SELECT name FROM pums WHERE person_id = 9999",
]


def test_views_children_and_functions_over_the_dp_table(objects_proxy):
    with objects_proxy.connect() as c:
        for sql in OBJECT_PAYLOADS:
            out = attempt(c, sql)
            assert_no_leak(out, sql)
            assert_not_exact(out, T_INCOME, 123457)
            assert_clear_refusal(out)
            assert_usable(c)
        # the parent still answers with noise (the child's rows are governed by the parent's DP policy)
        out = attempt(c, "SELECT count(*) FROM pums WHERE person_id = 9999")
        assert out.ok and out.rows[0][0] < 20, out.text()


def test_payload_count():
    assert len(PAYLOADS) + len(OBJECT_PAYLOADS) >= 60


def test_proxy_log_holds_no_row_values(big):
    """The server-side log (exact-query failures are logged with the backend's message) names no other person."""
    text = "".join(big.log)
    leaked = set(SECRET.findall(text)) - {T_NAME}
    assert not leaked, sorted(leaked)[:5]
