"""Helpers for the gate tests: run the gates on SQL text, find literal values."""
from __future__ import annotations

import pglast
from pglast import ast

from rewrite.gates import GateContext, Refusal
from rewrite.gates.statements import check_sql, first_refusal

GOVERNED = GateContext()


def refusal_of(sql: str, ctx: GateContext = GOVERNED) -> Refusal | None:
    return first_refusal(check_sql(sql, ctx))


def literal_values(sql: str) -> set[str]:
    """Every constant in ``sql`` (as decoded by the parser, and as raw token text), 3+ chars."""
    found: set[str] = set()
    try:
        tokens = pglast.parser.scan(sql)
    except pglast.parser.ParseError:  # unterminated literal: everything after a quote is literal
        tokens = ()
        found.update(part for part in sql.split("'")[1:])
    for tok in tokens:
        if tok.name.endswith("CONST"):
            raw = sql[tok.start:tok.end + 1]
            found.add(raw)
            found.add(raw.strip("'$"))
    try:
        stmts = pglast.parse_sql(sql)
    except pglast.parser.ParseError:
        stmts = ()
    _collect(stmts, found)
    return {v for v in found if len(v) >= 3}


def _collect(value, found: set[str]) -> None:
    if isinstance(value, (tuple, list)):
        for item in value:
            _collect(item, found)
    elif isinstance(value, ast.A_Const):
        val = value.val
        for attr in ("sval", "ival", "fval", "bsval"):
            if val is not None and getattr(val, attr, None) is not None:
                found.add(str(getattr(val, attr)))
    elif isinstance(value, ast.Node):
        for slot in type(value).__slots__:
            item = getattr(value, slot, None)
            if slot in ("filename", "payload") and isinstance(item, str):
                found.add(item)
            _collect(item, found)
