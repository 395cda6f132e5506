"""Which columns a statement can read through a policy view: the rest need not be in the view.

A policy view lists every column of its table, each under its mask (view.py), so that ``SELECT *``,
alias column lists and whole-row references see the masked row. For a statement that names its
columns, PostgreSQL still parses, analyses and plans every mask expression of every column, on each
execution of a simple-mode statement; a view of a wide table with many masks costs far more than
the statement. This pass finds the names a statement can possibly read a column by, so that the view
keeps only those columns.

It answers "all columns" (None) whenever it cannot be sure, on the parsed tree of the statement
before substitution:

- any ``*`` (``SELECT *``, ``t.*``, ``count(t.*)``, ``ROW(t.*)``, ``RETURNING *``);
- a possible whole-row reference: a column reference whose last name is the alias or the name of a
  governed table (``t``, ``to_jsonb(t)``, ``(t).c``, ``c(t)``, ``public.t``);
- a ``NATURAL`` join or ``JOIN ... USING`` (columns matched by name, not by reference);
- an aliased join (``(a JOIN b ON ...) AS j``): ``j(x, y)`` renames its views' columns by position,
  and ``j`` alone is the whole row of all of them.

Otherwise the names are every identifier of every column reference anywhere in the statement (each
part of ``a.b.c``, in every sub-select and CTE): a superset of the columns read through any view.
Per view, the caller also keeps all columns for an alias column list (positional), COPY, TABLESAMPLE
and k-anonymity. A column left out that a statement did read is a PostgreSQL error ("column does not
exist"), never a value: masks, filters and the fence proof are built on the table's own columns
inside the view and do not change.
"""
from __future__ import annotations

from typing import Any

from pglast import ast

from rewrite.analysis import RelationRef

from ..analysis.nodes import child_slots


def referenced_names(stmt: Any, refs: list[RelationRef]) -> frozenset[str] | None:
    """The identifiers ``stmt`` may read a column of a governed view by; None: keep every column."""
    whole_row = set()
    for ref in refs:
        rv = ref.rangevar
        whole_row.add(rv.relname)
        if rv.alias is not None:
            whole_row.add(rv.alias.aliasname)
    names: set[str] = set()
    stack = [stmt]
    while stack:
        node = stack.pop()
        if isinstance(node, (tuple, list)):
            stack.extend(node)
            continue
        if not isinstance(node, ast.Node):
            continue
        if isinstance(node, ast.A_Star):  # also (t).* and (composite).*
            return None
        if isinstance(node, ast.ColumnRef):
            fields = node.fields or ()
            for i, field in enumerate(fields):
                if isinstance(field, ast.A_Star):
                    return None
                if isinstance(field, ast.String):
                    if i == len(fields) - 1 and field.sval in whole_row:
                        return None
                    names.add(field.sval)
            continue
        if isinstance(node, ast.JoinExpr) and (node.isNatural or node.usingClause or node.alias is not None):
            return None  # a join alias reads its views' columns by position (j(a, b)) or as a whole row (j)
        for slot in child_slots(type(node)):
            child = getattr(node, slot, None)
            if isinstance(child, (ast.Node, tuple, list)):
                stack.append(child)
    return frozenset(names)
