"""The C shape key (rewrite/_fastkey.c) gives exactly what ``shapes._fast_tokens`` gives.

The Python function is the reference the shape cache's soundness argument is written for
(rewrite/shapes.py), so the C one must agree on every text: random texts over an alphabet
of the characters its rules look at (quotes, doubled quotes, comments, digits, dots,
exponents, names, blanks, newlines), statements of the pgbench and BI kind, and broken
ones (unterminated strings and identifiers). Skipped where the module was not built,
unless PGVEIL_REQUIRE_SPEEDUPS is set (CI).
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from rewrite import shapes

from ..speedups import c_module, skip_unless_built

_fastkey = c_module("rewrite._fastkey")
fast_tokens = _fastkey.fast_tokens if _fastkey is not None else None
pytestmark = skip_unless_built(_fastkey)

PIECES = ["SELECT", " ", "a", "t1", "x_9", "e", "E", "1", "0", "007", "42", "2147483647", "2147483648", "9999999999",
          "1.5", ".5", "1.", "1e5", "1e", "1E+3", "1e-", "'", "''", "'abc'", "'it''s'", '"', '""', '"id"', '"a""b"',
          "--", "-- c\n", "-", "\n", "\r", "\t", "\f", "\v", ".", ",", "(", ")", "=", ";", "&", "&'", "U&", "/", "*",
          "$", "$1", "\\", "\x00", "_", "b'1'"]

STATEMENTS = [
    "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
    "SELECT * FROM claims WHERE state = 'CA' AND amount > 100.50 LIMIT 10",
    "select count(*) from t where d >= '2024-01-01' and n in (1, 2, 3)",
    'SELECT "weird ""name""" FROM t WHERE x = -5 -- trailing comment',
    "SELECT 'unterminated FROM t",
    'SELECT "unterminated FROM t',
    "SELECT 'a''",
    "SELECT 1e10, 1.5e-3, .25, 00012",
    "SELECT 'x'\n'y'",
    "SELECT e'x'",
]


def _agree(sql: str) -> None:
    c = fast_tokens(sql)
    if c is NotImplemented:
        assert not sql.isascii()
        return
    assert c == shapes._fast_tokens(sql), sql


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=14).map("".join))
def test_random_texts_agree(sql):
    _agree(sql)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=40))
def test_any_ascii_agrees(sql):
    _agree(sql)


@pytest.mark.parametrize("sql", STATEMENTS)
def test_statements_agree(sql):
    _agree(sql)


def test_values_a_bug_would_change():
    key, slots = fast_tokens("SELECT a FROM t WHERE x = 42 AND s = 'v' AND f = 1.5")
    assert key == "SELECT a FROM t WHERE x = \0I\0 AND s = \0S\0 AND f = \0F\0"
    assert slots == [("ICONST", 26, 28), ("SCONST", 37, 40), ("FCONST", 49, 52)]
    assert fast_tokens("SELECT 'it''s'")[1] == [("SCONST", 7, 14)]
    assert fast_tokens("SELECT 1 /* c */") is None  # gives up: scan() decides
    assert fast_tokens("SELECT é, 1") is NotImplemented
    assert fast_tokens("SELECT t1 FROM t") is None  # no slot
    with pytest.raises(TypeError):
        fast_tokens(b"SELECT 1")
