"""The shape cache (rewrite/shapes.py) gives exactly the verdict a full rewrite gives.

Every test learns a shape from one statement, then sends another statement of
the same shape and compares what the shape path answers with a full rewrite
of that statement (verdict kind, plan, SQLSTATE and message, and the parse
tree of the SQL, since the template keeps the analyst's spelling of each
literal where the full rewrite prints its own).
"""
from __future__ import annotations

import json
import random

import pytest
from pglast.parser import parse_sql_json

from rewrite import Allow, Deny, RewriteContext, Rewritten, clear_cache, rewrite_statements, shapes
from rewrite.catalog import Catalog, Column, Relation
from rewrite.decide import PolicySet
from rewrite.facade import _uncached

from .conftest import CONFIG, KEYS, load_config, subject
from .fixture_catalog import CATALOG

import yaml
from rewrite.policy import PolicyConfig


@pytest.fixture(autouse=True)
def _fresh():
    clear_cache()
    yield
    clear_cache()


def ctx_for(name: str = "alice", policies: PolicySet | None = None, catalog: Catalog = CATALOG) -> RewriteContext:
    config = load_config()
    return RewriteContext(subject(config, name), policies or PolicySet.from_config(config), catalog, KEYS,
                          ("public",), config.tags)


class Counter:
    """``full`` for shapes.rewrite_statements that counts full rewrites."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, sql, ctx):
        self.calls += 1
        return _uncached(sql, ctx)


def _tree(sql: str):
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if not k.endswith(("location", "stmt_len", "_list_start", "_list_end"))}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x
    return strip(json.loads(parse_sql_json(sql)))


def assert_same(got: list, want: list) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert type(g) is type(w), (g, w)
        if isinstance(w, Deny):
            assert g == w
        else:
            assert _tree(g.sql) == _tree(w.sql), (g.sql, w.sql)
        if isinstance(w, Rewritten):
            assert g.plan == w.plan


def via_shape(seed: str, sql: str, ctx: RewriteContext, learn_ctx: RewriteContext | None = None) -> tuple[list, bool]:
    """Learn ``seed``'s shape (in ``learn_ctx``), then answer ``sql`` through the shape path: (verdicts, templated)."""
    shapes.rewrite_statements(seed, learn_ctx or ctx, Counter())
    full = Counter()
    got = shapes.rewrite_statements(sql, ctx, full)
    return got, full.calls == 0


def check(seed: str, sql: str, ctx: RewriteContext | None = None, *, templated: bool | None = None,
          learn_ctx: RewriteContext | None = None) -> list:
    ctx = ctx or ctx_for()
    got, used = via_shape(seed, sql, ctx, learn_ctx)
    want = _uncached(sql, ctx)
    assert_same(got, want)
    if templated is not None:
        assert used is templated, (seed, sql, got)
    return got


CLAIM = "SELECT claim_id, amount FROM rw.claims WHERE claim_id = {}"
STATE = "SELECT claim_id FROM rw.claims WHERE state = {} LIMIT {}"


# --------------------------------------------------------------------------- the common case


def test_new_literal_reuses_the_rewrite():
    got = check(CLAIM.format(48213), CLAIM.format(7), templated=True)
    assert isinstance(got[0], Rewritten) and got[0].sql.endswith("WHERE claim_id = 7")
    assert got[0].sql == _uncached(CLAIM.format(7), ctx_for())[0].sql  # plain digits: the very same text


def test_through_the_facade_and_trailing_semicolon():
    ctx = ctx_for()
    first = rewrite_statements(CLAIM.format(1) + ";", ctx)
    second = rewrite_statements(CLAIM.format(2) + ";", ctx)
    assert_same(second, _uncached(CLAIM.format(2) + ";", ctx))
    assert first[0].plan == second[0].plan
    assert len(shapes._shapes) == 1 and isinstance(next(iter(shapes._shapes.values())), shapes.Template)


def test_allow_verdicts():
    check("SELECT 1, 'a', 2.5", "SELECT 2, 'it''s', 3.75", templated=True)
    got = check("SELECT 1 + 1", "SELECT 40 + 2", templated=True)
    assert got == [Allow("SELECT 40 + 2")]


# --------------------------------------------------------------------------- literals that change the verdict


@pytest.mark.parametrize("seed, sql", [
    ("SELECT current_setting('application_name')", "SELECT current_setting('pgveil.x')"),
    ("SELECT current_setting('pgveil.x')", "SELECT current_setting('application_name')"),
    ("SELECT pg_catalog.current_setting('TimeZone')", "SELECT pg_catalog.current_setting('pgveil.key')"),
    ("SELECT current_setting('application_name', true)", "SELECT current_setting('my.secret', true)"),
    ("SELECT 'lower'::regproc", "SELECT 'pg_read_file'::regproc"),
    ("SELECT CAST('lower' AS regproc)", "SELECT CAST('pg_read_file' AS regproc)"),
    ("SELECT 'rw.claims'::regclass", "SELECT 'public.patients'::regclass"),
    ("SELECT 'rw.claims'::regclass::oid", "SELECT 'pgveil_keys'::regclass::oid"),
    ("SELECT to_regclass('rw.claims')", "SELECT to_regclass('pg_temp.pgveil_keys')"),
    ("SELECT ts_rewrite('a'::tsquery, 'a'::tsquery, 'b'::tsquery)",
     "SELECT ts_rewrite('a'::tsquery, 'SELECT 1'::tsquery, 'b'::tsquery)"),
    ("SELECT set_config('application_name', 'x', false)", "SELECT set_config('search_path', 'evil', false)"),
])
def test_constants_the_gates_read_are_never_templated(seed, sql):
    check(seed, sql, templated=False)
    assert all(v is shapes._NO_TEMPLATE for v in shapes._shapes.values())


@pytest.mark.parametrize("seed, sql", [
    ("SET application_name = 'a'", "SET application_name = 'b'"),
    ("SET statement_timeout = 5", "SET statement_timeout = 6"),
    ("SHOW TimeZone", "SHOW TimeZone"),
    ("COPY (SELECT claim_id FROM rw.claims WHERE claim_id = 1) TO STDOUT",
     "COPY (SELECT claim_id FROM rw.claims WHERE claim_id = 2) TO STDOUT"),
    ("COPY rw.claims TO '/tmp/a'", "COPY rw.claims TO '/etc/passwd'"),
    ("PREPARE p AS SELECT claim_id FROM rw.claims WHERE claim_id = 1", "PREPARE p AS SELECT claim_id FROM rw.claims WHERE claim_id = 2"),
    ("EXECUTE p(1)", "EXECUTE p(2)"),
    ("DECLARE c CURSOR FOR SELECT claim_id FROM rw.claims WHERE claim_id = 1",
     "DECLARE c CURSOR FOR SELECT claim_id FROM rw.claims WHERE claim_id = 2"),
    ("SELECT 1; SELECT 2", "SELECT 3; SELECT 4"),
])
def test_only_single_selects_are_templated(seed, sql):
    check(seed, sql, templated=False)


def test_denials_are_not_templated():
    check("SELECT pg_read_file('a')", "SELECT pg_read_file('b')", templated=False)
    check("SELECT claim_id FROM rw.nope WHERE claim_id = 1", "SELECT claim_id FROM rw.nope WHERE claim_id = 2",
          templated=False)


def test_a_literal_the_grammar_consumes_is_not_templated():
    # float(p) picks real or double precision: the constant disappears from the output
    check("SELECT CAST(claim_id AS float(10)) FROM rw.claims", "SELECT CAST(claim_id AS float(30)) FROM rw.claims",
          templated=False)
    check("SELECT CAST(claim_id AS float(30)) FROM rw.claims", "SELECT CAST(claim_id AS float(10)) FROM rw.claims",
          templated=False)


# --------------------------------------------------------------------------- spelling of literals


@pytest.mark.parametrize("literal", [
    "'it''s'", "'back\\slash'", "E'it\\'s'", "E'back\\\\slash\\n'", "E'\\x41\\u00e9'", "'$1'", "'$$'",
    "'-- not a comment'", "'; SELECT pg_read_file(''x'')'", "'/* x */'", "$$dollar 'quoted'$$",
    "$q$ $$ nested $1 ; -- $q$", "'pgvprobe0q918273645'", "'918273645'", "''", "'é ü 𝄞'",
    "'a'\n'b'", "'a' -- comment\n'b'", "E'\\''", "'\\'",
])
def test_strings(literal):
    got = check(STATE.format("'Missouri'", 5), STATE.format(literal, 5), templated=True)
    assert literal in got[0].sql  # the analyst's spelling, verbatim


def test_probe_like_text_elsewhere_in_the_statement():
    seed = "SELECT claim_id AS pgvprobe0q918273645 FROM rw.claims WHERE state = 'x' AND claim_id <> 918273645"
    check(seed, seed.replace("'x'", "'pgvprobe0q918273645'"))
    check(seed, seed.replace("918273645", "918265726").replace("'x'", "'pgvprobe1q918265726'"))


@pytest.mark.parametrize("literal", ["-5", "- 5", "-2147483648", "-9223372036854775808", "0", "007", "2147483647",
                                     "2147483648", "1e3", ".5", "1.", "-1.5e-3", "99999999999999999999999"])
def test_numbers(literal):
    check(CLAIM.format("-7"), CLAIM.format(literal))
    check(CLAIM.format("-7.5"), CLAIM.format(literal))
    check(CLAIM.format("7"), CLAIM.format(literal))


@pytest.mark.parametrize("literal", ["0x1F", "0o17", "0b101", "1_000", "0X1f"])
def test_newer_number_spellings_stay_in_the_key(literal):
    ctx = ctx_for()
    check(CLAIM.format("0x20"), CLAIM.format(literal), ctx)
    got = shapes.rewrite_statements(CLAIM.format(literal), ctx, Counter())
    assert literal not in got[0].sql  # never passed on in a spelling PostgreSQL 15 reads differently


def test_integer_and_numeric_literals_are_different_shapes():
    ctx = ctx_for()
    a = check(CLAIM.format(1), CLAIM.format(2), ctx)
    b = check(CLAIM.format(1), CLAIM.format("2.0"), ctx)
    assert a[0].plan.fence_lifted and not b[0].plan.fence_lifted  # int4 = numeric is not leakproof
    c = check(CLAIM.format("1.0"), CLAIM.format(3), ctx)
    assert c[0].plan.fence_lifted


def test_parameters_mixed_with_literals():
    seed = "SELECT claim_id FROM rw.claims WHERE claim_id = $1 AND state = 'x' AND x > 3 LIMIT $2"
    got = check(seed, seed.replace("'x'", "'$1'").replace("> 3", "> 40"), templated=True)
    assert "$1" in got[0].sql and "$2" in got[0].sql
    check(seed, seed.replace("$1", "$3"))  # another parameter number: another shape


def test_unicode_strings_are_never_shaped():
    seed = "SELECT claim_id FROM rw.claims WHERE state = U&'d\\0061t\\+000061' AND x = 1"
    check(seed, seed.replace("x = 1", "x = 2"), templated=False)
    seed = "SELECT claim_id FROM rw.claims WHERE state = U&'d!0061t' UESCAPE '!' AND x = 1"
    check(seed, seed.replace("'!'", "'\\'"), templated=False)
    assert not shapes._shapes


def test_bit_strings_stay_in_the_key():
    check("SELECT B'101', X'1F', 1", "SELECT B'101', X'1F', 2", templated=True)
    check("SELECT B'101', X'1F', 1", "SELECT B'111', X'1F', 2", templated=False)


def test_typed_literals_and_intervals():
    seed = "SELECT claim_id FROM rw.claims WHERE filed_at > now() - interval '1 day' AND filed_at < date '2030-01-01'"
    check(seed, seed.replace("'1 day'", "'20 years'").replace("'2030-01-01'", "'1999-12-31'"), templated=True)
    seed = "SELECT claim_id FROM rw.claims WHERE filed_at > now() - interval '1' day"
    check(seed, seed.replace("'1'", "'3'"))


def test_order_by_positions_limit_offset():
    seed = "SELECT claim_id, amount FROM rw.claims ORDER BY 2 DESC, 1 LIMIT 10 OFFSET 3"
    check(seed, "SELECT claim_id, amount FROM rw.claims ORDER BY 1 DESC, 2 LIMIT 1 OFFSET 0", templated=True)


# --------------------------------------------------------------------------- context


def test_two_subjects_do_not_share():
    alice, bob = ctx_for("alice"), ctx_for("bob")
    sql = STATE.format("'Ohio'", 3)
    got = check(STATE.format("'Missouri'", 5), sql, bob, learn_ctx=alice, templated=False)
    assert "Ohio" in got[0].sql and "Florida" in got[0].sql  # bob's own row filter
    assert "'Missouri'" not in got[0].sql.split("WHERE state")[0]
    dana = ctx_for("dana")  # admins: no row filters
    check(STATE.format("'Missouri'", 5), sql, dana, learn_ctx=alice, templated=False)


def test_policy_change_does_not_share():
    config = yaml.safe_load(CONFIG)
    for p in config["policies"]:
        if p["name"] == "small-claims":
            p["row_filter"]["where"] = "amount < 5"
    changed = PolicySet.from_config(PolicyConfig.model_validate(config))
    before, after = ctx_for(), ctx_for(policies=changed)
    got = check(CLAIM.format(1), CLAIM.format(2), after, learn_ctx=before, templated=False)
    assert "amount < 5" in got[0].sql


def test_catalog_change_does_not_share():
    rels = [r if r.name != "claims" else Relation(r.oid, r.schema, r.name, r.kind, r.columns + (Column("y", "text", "text"),))
            for r in CATALOG.relations.values()]
    changed = Catalog.build(CATALOG.database, rels, operators=dict(CATALOG.operators))
    assert changed.version != CATALOG.version
    whole_row = "SELECT to_jsonb(c) FROM rw.claims c WHERE claim_id = {}"  # the view lists every column
    got = check(whole_row.format(1), whole_row.format(2), ctx_for(catalog=changed), learn_ctx=ctx_for(), templated=False)
    assert "claims.y AS y" in got[0].sql


def test_unrestricted_and_gates_off_do_not_share():
    config = load_config()
    gated = ctx_for()
    ungated = RewriteContext(gated.subject, gated.policies, CATALOG, KEYS, ("public",), config.tags, gate=lambda r, c: None)
    check("SELECT pg_read_file('a') FROM rw.claims WHERE claim_id = 1",
          "SELECT pg_read_file('a') FROM rw.claims WHERE claim_id = 2", ungated, learn_ctx=gated, templated=False)


# --------------------------------------------------------------------------- many values


SHAPES = [
    CLAIM, STATE,
    "SELECT c.state, count(*) FROM rw.claims c JOIN rw.patients p ON p.patient_id = c.claim_id "
    "WHERE c.amount > {} AND c.state IN ({}, 'Ohio') GROUP BY 1 HAVING count(*) > 1",
    "SELECT name, email FROM rw.patients WHERE patient_id BETWEEN {} AND 10 AND note LIKE {}",
    "SELECT v FROM rw.open WHERE id = {} UNION ALL SELECT {}",
    "SELECT (SELECT max(amount) FROM rw.claims WHERE x = {}) AS m, coalesce({}, 'z')",
]


def _literal(rng: random.Random) -> str:
    kind = rng.randrange(6)
    if kind == 0:
        return str(rng.randrange(-10**6, 10**6))
    if kind == 1:
        return f"{rng.randrange(10**4)}.{rng.randrange(100)}"
    chars = "ab'\\$;-/*\n é1%_"
    s = "".join(rng.choice(chars) for _ in range(rng.randrange(8)))
    if kind == 2:
        return "'" + s.replace("'", "''") + "'"
    if kind == 3:
        return "E'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if kind == 4:
        return "$x$" + s + "$x$"
    return "''"


def test_random_literals():
    rng = random.Random(20261123)
    ctx = ctx_for()
    for _ in range(300):
        template = rng.choice(SHAPES)
        n = template.count("{}")
        sql = template.format(*(_literal(rng) for _ in range(n)))
        got = shapes.rewrite_statements(sql, ctx, Counter())
        assert_same(got, _uncached(sql, ctx))
    assert any(isinstance(v, shapes.Template) for v in shapes._shapes.values())


# --------------------------------------------------------------------------- the fast key (regular expression)


def _scan_key(sql: str):
    try:
        return shapes._tokens(sql)
    except Exception:
        return None


@pytest.mark.parametrize("sql", [
    CLAIM.format(7), STATE.format("'it''s'", 5), "SELECT 'a', \"x'y\" -- 'c' 5\n, 1.5e3, .5, 007, 2147483648",
    "SELECT t1.c2, a.b FROM t1 WHERE x = 00002147483647 AND y = 2147483647 AND z = 0 AND w = 0.",
])
def test_fast_key_is_the_scan_key(sql):
    assert shapes._fast_tokens(sql) is not None
    assert shapes._fast_tokens(sql) == shapes._tokens(sql)


@pytest.mark.parametrize("sql", [
    "SELECT E'a'", "SELECT B'1'", "SELECT X'1F'", "SELECT N'a'", "SELECT U&'a'", "SELECT u&\"a\" FROM t WHERE x = 1",
    "SELECT 'a'\n'b'", "SELECT 'a' -- c\n'b'", "SELECT 'a' 'b'", "SELECT 'a'\r'b'", "SELECT 'a\\'", "SELECT $$a$$",
    "SELECT $1, 2", "SELECT /* 'a' */ 1", "SELECT 0x1F", "SELECT 1_000", "SELECT 1e", "SELECT 1.5.5", "SELECT 1..2",
    "SELECT 5a", "SELECT 'a", "SELECT \"a", "SELECT 1\0", "SELECT interval'1 day'", "SELECT 'a'b", "SELECT 1'a'",
    "SELECT é'a'", "SELECT 1é",
])
def test_fast_key_gives_up_where_it_cannot_read_like_postgresql(sql):
    assert shapes._fast_tokens(sql) is None


def test_fast_key_never_disagrees_with_the_scanner():
    """Whenever the regular expression answers, PostgreSQL's scanner gives the very same key and slots."""
    rng = random.Random(4)
    pieces = ["'", "''", '"', "--", "\n", " ", "\t", "1", "0", "9", ".", "e", "E", "+", "-", "a", "_", "$", "é", "x",
              "/", "*", "(", ")", ",", "::", "'ab'", "12", "3.5", "SELECT ", " FROM t", "\\", "&", "U", "\r", ";"]
    answered = 0
    for _ in range(60000):
        sql = "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 14)))
        fast = shapes._fast_tokens(sql)
        if fast is None:
            continue
        answered += 1
        assert fast == _scan_key(sql), repr(sql)
    assert answered > 500


def test_fast_key_hit_is_the_full_rewrite():
    ctx = ctx_for()
    seed = STATE.format("'Missouri'", 5)
    assert shapes._fast_tokens(seed) is not None
    for literal in ("'x''y'", "'--'", "'\"'", "'\n'", "''", "'é'"):
        sql = STATE.format(literal, 12)
        assert shapes._fast_tokens(sql) is not None, literal
        got = check(seed, sql, ctx, templated=True)
        assert literal in got[0].sql


def test_fast_hit_checks_the_clients_statement():
    ctx = ctx_for()
    seed = CLAIM.format(1)
    shapes.rewrite_statements(seed, ctx, Counter())
    # same key text as a learned shape, but not one statement: the shape path must not answer it
    sql = CLAIM.format(2) + "; SELECT 1"
    assert shapes._fast_tokens(sql)[0] != shapes._fast_tokens(seed)[0]
    full = Counter()
    got = shapes.rewrite_statements(sql, ctx, full)
    assert_same(got, _uncached(sql, ctx))
