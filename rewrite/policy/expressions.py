"""Admin-written SQL expressions, parsed once at load time with PostgreSQL's parser.

A WHERE template must be exactly one boolean expression: it is parsed as the
WHERE clause of ``SELECT 1 WHERE (...)`` and the tree is checked to be that and
nothing else, so text such as ``true) UNION SELECT ... WHERE (true`` is refused
rather than smuggled into a rewritten statement.
"""
from __future__ import annotations

import re

import pglast
from pglast import ast

_COL_PLACEHOLDER = "pgveil_masked_column"
_RANGER_MACRO = re.compile(r"\$\{\{[^}]*\}\}|\{USER\}")


def parse_where(expr: str) -> ast.Node:
    """The parse tree of a boolean expression; ValueError if it is not exactly one."""
    if not isinstance(expr, str) or not expr.strip():
        raise ValueError("an expression must be non-empty text")
    try:
        stmts = pglast.parse_sql(f"SELECT 1 WHERE ({expr}\n)")
    except pglast.parser.ParseError as exc:
        raise ValueError(f"expression does not parse: {exc}") from None
    if len(stmts) != 1:
        raise ValueError("expression must be a single expression, not several statements")
    stmt = stmts[0].stmt
    if (
        not isinstance(stmt, ast.SelectStmt)
        or stmt.op != pglast.enums.SetOperation.SETOP_NONE
        or stmt.fromClause
        or stmt.groupClause
        or stmt.havingClause
        or stmt.withClause
        or stmt.sortClause
        or stmt.limitCount is not None
        or stmt.whereClause is None
        or len(stmt.targetList or ()) != 1
    ):
        raise ValueError("expression must be one boolean expression (no set operations or clauses)")
    return stmt.whereClause


def parse_column_expr(expr: str) -> ast.Node:
    """Parse a custom mask expression in which ``{col}`` stands for the column."""
    if "{col}" not in expr:
        raise ValueError("a custom mask expression must use {col} for the masked column")
    return parse_where(expr.replace("{col}", _COL_PLACEHOLDER))


def check_template(expr: str) -> str:
    """Validate a WHERE template; Ranger macros inside string literals are allowed."""
    parse_where(expr)
    for m in _RANGER_MACRO.finditer(expr):
        before = expr[: m.start()]
        if before.count("'") % 2 == 0:
            raise ValueError(f"macro {m.group(0)} must sit inside a quoted string literal")
    return expr
