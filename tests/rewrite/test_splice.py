"""Cached policy views are spliced at tree positions: same SQL as printing the whole tree."""
from __future__ import annotations

import pglast

from rewrite import RewriteContext, Rewritten, clear_cache, rewrite_sql
from rewrite.analysis import print_node
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
    assert print_node(pglast.parse_sql(first.sql)[0].stmt) == first.sql  # what pglast prints for that tree
    assert "'FROM rw.claims' AS t" in first.sql  # user literals untouched


def test_views_are_per_subject_and_decision():
    clear_cache()
    a = rewrite_sql("SELECT account_no FROM rw.claims", _ctx("alice"), use_cache=False)
    b = rewrite_sql("SELECT account_no FROM rw.claims", _ctx("bob"), use_cache=False)
    assert "Missouri" in a.sql and "Missouri" not in b.sql and "Ohio" in b.sql
