"""Admin-written expressions (WHERE filters, conditional masks, custom masks) as trees.

Parsed once per text (cached) with PostgreSQL's grammar; every use works on a
deep copy. The pseudo-functions pgveil.user_name(), pgveil.user_groups(),
pgveil.user_attr(key) and pgveil.has_purpose(name) are replaced in the tree by
typed literals; Ranger macros inside string literals are substituted inside
the literal's value (rewrite.decide.macros). Nothing is spliced into text.
"""
from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any, Callable

from pglast import ast

from rewrite.decide import Subject
from rewrite.decide.macros import _MACRO, resolve
from rewrite.policy.expressions import _COL_PLACEHOLDER, parse_where

from . import build as b


class TemplateError(Exception):
    """An admin expression the engine cannot bind (unknown pseudo-function, non-literal argument)."""


@lru_cache(maxsize=4096)
def _parsed(text: str) -> ast.Node:
    return parse_where(text)


def parse_template(expr: str, placeholder: bool = False) -> ast.Node:
    text = expr.replace("{col}", _COL_PLACEHOLDER) if placeholder else expr
    return copy.deepcopy(_parsed(text))


def replace_nodes(node: Any, fn: Callable[[ast.Node], ast.Node | None], into_sublinks: bool = True) -> Any:
    """``node`` with every sub-node for which ``fn`` returns a replacement replaced (in place where possible)."""
    if isinstance(node, tuple):
        return tuple(replace_nodes(x, fn, into_sublinks) for x in node)
    if not isinstance(node, ast.Node):
        return node
    new = fn(node)
    if new is not None:
        return new
    if isinstance(node, ast.SubLink) and not into_sublinks:
        return node
    for name in node:
        child = getattr(node, name)
        if isinstance(child, (ast.Node, tuple)):
            setattr(node, name, replace_nodes(child, fn, into_sublinks))
    return node


def bind_column(tree: ast.Node, value: ast.Node | None, qualifier: str, columns: frozenset[str] | None = None) -> ast.Node:
    """Put ``value`` where {col} was; qualify bare column names outside sub-selects with ``qualifier``.

    Qualifying keeps an admin's column name from being captured by a column of
    the analyst's outer query when the view sits inside a sub-select.
    """
    def fn(n: ast.Node) -> ast.Node | None:
        if isinstance(n, ast.ColumnRef) and len(n.fields) == 1 and isinstance(n.fields[0], ast.String):
            name = n.fields[0].sval
            if name == _COL_PLACEHOLDER:
                return copy.deepcopy(value)
            if columns is None or name in columns:
                return b.col(qualifier, name)
        return None

    return replace_nodes(tree, fn, into_sublinks=False)


def _literal_arg(call: ast.FuncCall) -> str:
    args = call.args or ()
    if len(args) != 1 or not isinstance(args[0], ast.A_Const) or not isinstance(args[0].val, ast.String):
        raise TemplateError(f"pgveil.{call.funcname[-1].sval}() takes one string literal")
    return args[0].val.sval


def bind_subject(tree: ast.Node, s: Subject) -> ast.Node:
    """Replace the pgveil.* pseudo-functions by the subject's values as typed literals."""
    def fn(n: ast.Node) -> ast.Node | None:
        if not isinstance(n, ast.FuncCall):
            return None
        names = [x.sval for x in n.funcname]
        if len(names) != 2 or names[0] != "pgveil":
            return None
        fname = names[1]
        if fname == "user_name" and not n.args:
            return b.cast(b.const(s.user), "text")
        if fname == "user_groups" and not n.args:
            return b.text_array(sorted(s.groups))
        if fname == "user_attr":
            return b.text_array(sorted(s.attributes.get(_literal_arg(n), ())))
        if fname == "has_purpose":
            return b.const(_literal_arg(n) in s.purpose_closure)
        raise TemplateError(f"unknown pseudo-function pgveil.{fname}")

    return replace_nodes(tree, fn)


def subject_template(expr: str, s: Subject, qualifier: str, columns: frozenset[str]) -> ast.Node:
    """A WHERE template bound to a subject and a table: Ranger macros, pseudo-functions, qualified columns."""
    text = resolve(expr, s) if _MACRO.search(expr) else expr
    return bind_column(bind_subject(parse_template(text), s), None, qualifier, columns)
