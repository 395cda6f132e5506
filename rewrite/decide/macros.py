"""Subject values for the Ranger macros in imported filter and mask expressions.

Ranger writes ``dept = '${{USER.dept}}'`` and ``owner = '{USER}'``. pgveil
accepts such macros only inside string literals (checked at load time) and
substitutes them in the parsed tree, inside the literal's value, so a user's
attribute can never become SQL text: the result is printed by pglast from the
tree. ``{col}`` in custom mask expressions stands for the masked column.
"""
from __future__ import annotations

import re

from pglast import ast
from pglast.stream import RawStream

from rewrite.policy.expressions import _COL_PLACEHOLDER, parse_where

from .subject import Subject

_MACRO = re.compile(r"\$\{\{\s*USER\.([A-Za-z0-9_.\-]+)\s*\}\}|\{USER\}")


def _value(m: re.Match, s: Subject) -> str:
    if m.group(0) == "{USER}":
        return s.user
    return ",".join(sorted(s.attributes.get(m.group(1), ())))


def _walk(node: object, s: Subject) -> None:
    if isinstance(node, ast.A_Const) and isinstance(node.val, ast.String):
        node.val.sval = _MACRO.sub(lambda m: _value(m, s), node.val.sval)
        return
    if isinstance(node, (list, tuple)):
        for x in node:
            _walk(x, s)
        return
    if isinstance(node, ast.Node):
        for name in node:
            _walk(getattr(node, name), s)


def resolve(expr: str, s: Subject) -> str:
    """``expr`` with macros replaced by the subject's values, printed by PostgreSQL's grammar.

    ``{col}`` is kept as ``{col}`` for the caller to bind to the column.
    """
    tree = parse_where(expr.replace("{col}", _COL_PLACEHOLDER))
    _walk(tree, s)
    return normalize_tree(tree)


def normalize_tree(tree: ast.Node) -> str:
    return RawStream()(tree).replace(_COL_PLACEHOLDER, "{col}")


def normalize(expr: str) -> str:
    """An expression as pglast prints it (for comparing expressions written differently)."""
    return normalize_tree(parse_where(expr.replace("{col}", _COL_PLACEHOLDER)))
