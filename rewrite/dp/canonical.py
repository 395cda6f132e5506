"""Canonical WHERE trees: equivalent predicates written differently become one tree.

The answer cache is keyed by the exact query pgveil builds, so the WHERE it
puts there must not depend on how the analyst spelled it. Normalized here
(on the parse tree, never on text): column references lose their table
qualifier; ``literal op column`` becomes ``column op' literal``; BETWEEN
becomes ``>= AND <=``; IN lists are sorted and deduplicated; nested AND / OR
are flattened, their arguments sorted and deduplicated; NOT of a comparison
becomes the negated comparison. What is left unnormalized (arithmetic
identities, ``age > 39`` against ``age >= 40``) costs budget like any new query.
"""
from __future__ import annotations

from typing import Any

from pglast import ast
from pglast.enums import A_Expr_Kind, BoolExprType

from rewrite.analysis.parse import print_node
from rewrite.engine import build as b

_FLIP = {"=": "=", "<>": "<>", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_NEGATE = {"=": "<>", "<>": "=", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}


def _key(node: Any) -> str:
    return print_node(node)


def _column(ref: ast.ColumnRef) -> ast.ColumnRef:
    return ast.ColumnRef(fields=(ref.fields[-1],))


def _bool(op: BoolExprType, args: list) -> Any:
    flat = []
    for a in args:
        if isinstance(a, ast.BoolExpr) and a.boolop == op:
            flat.extend(a.args)
        else:
            flat.append(a)
    unique = {_key(a): a for a in flat}
    items = [unique[k] for k in sorted(unique)]
    return items[0] if len(items) == 1 else ast.BoolExpr(boolop=op, args=tuple(items))


def canonical(node: Any) -> Any:
    """A normalized copy of a WHERE tree (the proof in predicates.py has accepted it)."""
    if isinstance(node, ast.ColumnRef):
        return _column(node)
    if isinstance(node, ast.BoolExpr):
        args = [canonical(a) for a in node.args]
        if node.boolop == BoolExprType.NOT_EXPR:
            inner = args[0]
            if isinstance(inner, ast.A_Expr) and inner.kind == A_Expr_Kind.AEXPR_OP and inner.name[0].sval in _NEGATE:
                return b.op(_NEGATE[inner.name[0].sval], inner.lexpr, inner.rexpr)
            return ast.BoolExpr(boolop=node.boolop, args=(inner,))
        return _bool(node.boolop, args)
    if isinstance(node, ast.NullTest):
        return ast.NullTest(arg=canonical(node.arg), nulltesttype=node.nulltesttype)
    if isinstance(node, ast.A_Expr):
        op = node.name[0].sval
        left, right = canonical(node.lexpr), canonical(node.rexpr) if not isinstance(node.rexpr, tuple) else tuple(
            canonical(x) for x in node.rexpr)
        if node.kind == A_Expr_Kind.AEXPR_OP and op in _FLIP:
            if not isinstance(left, ast.ColumnRef) and isinstance(right, ast.ColumnRef):
                left, right, op = right, left, _FLIP[op]
            return b.op(op, left, right)
        if node.kind == A_Expr_Kind.AEXPR_BETWEEN:
            return _bool(BoolExprType.AND_EXPR, [b.op(">=", left, right[0]), b.op("<=", left, right[1])])
        if node.kind == A_Expr_Kind.AEXPR_NOT_BETWEEN:
            return _bool(BoolExprType.OR_EXPR, [b.op("<", left, right[0]), b.op(">", left, right[1])])
        if node.kind == A_Expr_Kind.AEXPR_IN:
            unique = {_key(x): x for x in right}
            values = tuple(unique[k] for k in sorted(unique))
            if len(values) == 1:
                return b.op(op, left, values[0])
            return ast.A_Expr(kind=node.kind, name=node.name, lexpr=left, rexpr=values)
        return ast.A_Expr(kind=node.kind, name=node.name, lexpr=left, rexpr=right)
    if isinstance(node, ast.TypeCast):
        return ast.TypeCast(arg=canonical(node.arg), typeName=node.typeName)
    return node
