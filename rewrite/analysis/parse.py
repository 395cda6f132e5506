"""Parsing and printing, both by pglast (PostgreSQL's own grammar)."""
from __future__ import annotations

import pglast
from pglast import ast
from pglast.stream import RawStream

from .fastparse import parse_fast


class ParseFailure(Exception):
    """The text does not parse as PostgreSQL SQL (or printing produced text that does not)."""


def parse_statements(sql: str) -> list[tuple[ast.RawStmt, str]]:
    """Each statement's tree with its own source text (for caching and Allow verdicts)."""
    try:
        stmts = parse_fast(sql)  # the same trees as pglast.parse_sql, built faster; None: use pglast
        if stmts is None:
            stmts = pglast.parse_sql(sql)
    except pglast.parser.ParseError as exc:
        raise ParseFailure(str(exc)) from None
    out = []
    for s in stmts:  # pglast gives stmt_location/stmt_len in characters of the str
        start = s.stmt_location or 0
        end = start + s.stmt_len if s.stmt_len else len(sql)
        out.append((s, sql[start:end].strip()))
    return out


def print_node(node: ast.Node) -> str:
    return RawStream()(node)


class _SplicingStream(RawStream):
    """A pglast printer that writes pre-printed text where it meets given placeholder nodes.

    The placeholders are nodes of the tree being printed (found by identity), so
    the text lands exactly where that node would have been printed: the
    substitution happens at a tree position, never by searching statement text.
    """

    def __init__(self, texts: dict[int, str]) -> None:
        super().__init__()
        self._texts = texts

    def print_node(self, node, is_name=False, is_symbol=False):  # noqa: D401 (pglast's signature)
        text = self._texts.get(id(node))
        if text is not None:
            self.write(text)
            return
        super().print_node(node, is_name, is_symbol)


def print_spliced(node: ast.Node, splices: dict[int, tuple[ast.Node, str]]) -> str:
    """Print ``node``; each placeholder (``splices``: id -> (placeholder node, text)) prints as its text.

    The placeholder objects are held in ``splices`` so their ids stay valid while printing.
    """
    if not splices:
        return print_node(node)
    return _SplicingStream({k: text for k, (_, text) in splices.items()})(node)


def reparse_check(sql: str) -> None:
    """The final SQL must parse to exactly one statement (threat 10: parser differentials).

    Uses PostgreSQL's parser in C (pglast.parser.split with the parser): it
    fails on any syntax error and gives the statement boundaries, without
    building Python trees (about 10 µs instead of ~0.5 ms for a BI query).
    """
    try:
        stmts = pglast.parser.split(sql, with_parser=True)
    except pglast.parser.ParseError as exc:
        raise ParseFailure(f"rewritten SQL does not parse: {exc}") from None
    if len(stmts) != 1:
        raise ParseFailure("rewritten SQL is not exactly one statement")
