"""Parsing and printing, both by pglast (PostgreSQL's own grammar)."""
from __future__ import annotations

import pglast
from pglast import ast
from pglast.stream import RawStream


class ParseFailure(Exception):
    """The text does not parse as PostgreSQL SQL (or printing produced text that does not)."""


def parse_statements(sql: str) -> list[tuple[ast.RawStmt, str]]:
    """Each statement's tree with its own source text (for caching and Allow verdicts)."""
    try:
        stmts = pglast.parse_sql(sql)
    except pglast.parser.ParseError as exc:
        raise ParseFailure(str(exc)) from None
    raw = sql.encode("utf-8")  # stmt_location/stmt_len are byte offsets
    out = []
    for s in stmts:
        start = s.stmt_location or 0
        end = start + s.stmt_len if s.stmt_len else len(raw)
        out.append((s, raw[start:end].decode("utf-8").strip()))
    return out


def print_node(node: ast.Node) -> str:
    return RawStream()(node)


def reparse_check(sql: str) -> None:
    """The final SQL must parse to exactly one statement (threat 10: parser differentials)."""
    try:
        stmts = pglast.parse_sql(sql)
    except pglast.parser.ParseError as exc:
        raise ParseFailure(f"rewritten SQL does not parse: {exc}") from None
    if len(stmts) != 1:
        raise ParseFailure("rewritten SQL is not exactly one statement")
