"""Cached policy views are spliced at tree positions: same SQL as printing the whole tree."""
from __future__ import annotations

import pglast

import pytest

from rewrite import RewriteContext, Rewritten, clear_cache, facade, rewrite_sql
from rewrite.analysis import splice
from rewrite.decide import PolicySet
from rewrite.engine.keys import StaticKeys

from .conftest import load_config, subject
from .fixture_catalog import CATALOG


def _ctx(name="alice"):
    config = load_config()
    return RewriteContext(subject(config, name), PolicySet.from_config(config), CATALOG, StaticKeys(b"k"),
                          ("public",), config.tags, gate=lambda r, c: None)


def test_spliced_text_equals_a_full_print():
    ctx = _ctx()
    clear_cache()
    sql = ("SELECT c.state, 'FROM rw.claims' AS t, p.name FROM rw.claims c JOIN rw.patients p "
           "ON p.patient_id = c.claim_id WHERE c.note = $1 OR c.x IN (SELECT x FROM rw.claims)")
    first = rewrite_sql(sql, ctx, use_cache=False)
    again = rewrite_sql(sql, ctx, use_cache=False)  # views now from the cache
    assert isinstance(first, Rewritten) and first.sql == again.sql
    assert "'FROM rw.claims' AS t" in first.sql  # user literals untouched
    assert_same_as_printed(sql, ctx)


def test_views_are_per_subject_and_decision():
    clear_cache()
    a = rewrite_sql("SELECT account_no FROM rw.claims", _ctx("alice"), use_cache=False)
    b = rewrite_sql("SELECT account_no FROM rw.claims", _ctx("bob"), use_cache=False)
    assert "Missouri" in a.sql and "Missouri" not in b.sql and "Ohio" in b.sql


# --------------------------------------------------------------------------- source splicing (analysis/splice.py)


def _printed(sql, ctx, monkeypatch=None):
    """The verdict with the whole tree printed by pglast (the splice path switched off)."""
    saved = facade._spliced
    facade._spliced = lambda *a: None
    try:
        return rewrite_sql(sql, ctx, use_cache=False)
    finally:
        facade._spliced = saved


def _tree(sql):
    return pglast.parse_sql(sql)


def assert_same_as_printed(sql, ctx, spliced: bool | None = None):
    used = []
    saved = facade._spliced

    def spy(*a):
        out = saved(*a)
        used.append(out is not None)
        return out

    facade._spliced = spy
    try:
        got = rewrite_sql(sql, ctx, use_cache=False)
    finally:
        facade._spliced = saved
    want = _printed(sql, ctx)
    assert type(got) is type(want)
    if isinstance(want, Rewritten):
        assert got.plan == want.plan
        assert _tree(got.sql) == _tree(want.sql), (got.sql, want.sql)
        if spliced is not None:
            assert any(used) is spliced, got.sql
    return got


SPLICED = [
    "SELECT claim_id FROM rw.claims",
    "SELECT claim_id FROM rw.claims AS c WHERE c.x = 1",
    "SELECT c.claim_id FROM rw.claims AS c(claim_id, a) JOIN rw.patients p ON p.patient_id = c.claim_id",
    "select count(*), MAX(amount), \"left\"(state, 1) from RW.CLAIMS where STATE = 'Ohio'",
    "SELECT claim_id FROM rw . claims, rw.open o WHERE o.id = claims.claim_id",
    "SELECT claim_id FROM claims",
    "SELECT (SELECT max(amount) FROM rw.claims WHERE x = t.id) FROM rw.open t",
    "WITH c AS (SELECT claim_id FROM rw.claims) SELECT * FROM c, rw.sink",
    "SELECT 'é', claim_id FROM rw.claims WHERE state = 'ü'",
    "SELECT a.claim_id FROM rw.claims a LEFT JOIN LATERAL (SELECT v FROM rw.open WHERE id = a.x) o ON true",
    "SELECT claim_id FROM rw.claims UNION ALL SELECT visit_id FROM rw.visits ORDER BY 1 LIMIT 3",
]

PRINTED = [
    "SELECT claim_id FROM ONLY rw.claims",
    "SELECT claim_id FROM rw.claims *",
    "SELECT claim_id FROM rw.claims -- a comment",
    "SELECT claim_id /* a comment */ FROM rw.claims",
    "SELECT claim_id FROM rw.claims WHERE x = 0x1F",
    "SELECT claim_id FROM rw.claims WHERE x = 1_000",
    "SELECT rw.claims.claim_id FROM rw.claims",
    "SELECT claim_id FROM rw.claims TABLESAMPLE SYSTEM (10)",
    "COPY rw.claims TO STDOUT",
    "SELECT claim_id FROM U&\"rw\".claims",
]


@pytest.mark.parametrize("sql", SPLICED)
def test_spliced_statements_parse_to_the_printed_tree(sql):
    clear_cache()
    assert_same_as_printed(sql, _ctx(), spliced=True)


@pytest.mark.parametrize("sql", PRINTED)
def test_what_the_splice_does_not_handle_is_printed(sql):
    clear_cache()
    assert_same_as_printed(sql, _ctx(), spliced=False)


def test_two_statements_each_spliced():
    clear_cache()
    ctx = _ctx()
    got = rewrite_sql("SELECT 'é' FROM rw.claims; SELECT v FROM rw.open WHERE id = 2", ctx, use_cache=False)
    want = _printed("SELECT 'é' FROM rw.claims; SELECT v FROM rw.open WHERE id = 2", ctx)
    assert _tree(got.sql) == _tree(want.sql)


def test_verification_rejects_any_difference():
    raw = pglast.parse_sql("SELECT a FROM (SELECT) AS c WHERE x = 1")[0]
    assert splice.verified("SELECT a FROM (SELECT) AS c WHERE x = 1", raw.stmt)
    for other in ("SELECT a FROM (SELECT) AS c WHERE x = 2", "SELECT a FROM (SELECT) AS d WHERE x = 1",
                  "SELECT a FROM (SELECT 1) AS c WHERE x = 1", "SELECT a FROM (SELECT) AS c WHERE x = '1'",
                  "SELECT a FROM (SELECT) AS c WHERE x = 1.0", "SELECT a FROM (SELECT) AS c WHERE x = 1 LIMIT 1",
                  "SELECT a FROM (SELECT) AS c WHERE x = 1; SELECT 1", "SELECT DISTINCT a FROM (SELECT) AS c WHERE x = 1",
                  "SELECT a FROM LATERAL (SELECT) AS c WHERE x = 1", "SELECT a FROM (SELECT) AS c(a) WHERE x = 1",
                  "SELECT a FROM (SELECT) AS c WHERE x = 1 FOR UPDATE", "SELECT a FROM (SELECT) AS c WHERE x = -1",
                  "SELECT a FROM (SELECT) AS c WHERE x = $1", "SELECT a FROM (SELECT) AS c WHERE", "nonsense"):
        assert not splice.verified(other, raw.stmt), other


def test_a_wrong_edit_falls_back_to_the_printer(monkeypatch):
    clear_cache()
    ctx = _ctx()
    real = splice.relation_edit
    monkeypatch.setattr(splice, "relation_edit", lambda sql, rv, view: real(sql, rv, view) and splice.Edit(
        rv.location, rv.location, "(SELECT) AS x, " if view else ""))
    sql = "SELECT claim_id FROM rw.claims WHERE claim_id = 1"
    got = rewrite_sql(sql, ctx, use_cache=False)
    assert got.sql == _printed(sql, ctx).sql


def test_statement_texts_with_non_ascii_characters():
    from rewrite.analysis import parse_statements

    texts = [t for _, t in parse_statements("SELECT 'éé' AS a; SELECT '日本' ; SELECT 1")]
    assert texts == ["SELECT 'éé' AS a", "SELECT '日本'", "SELECT 1"]
