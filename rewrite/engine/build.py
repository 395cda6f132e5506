"""Small constructors for pglast AST nodes: the engine's only way to make SQL.

Every literal goes in as an A_Const value and every name as a String node, so
pglast's printer does the quoting; nothing here formats SQL text.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterable

from pglast import ast
from pglast.enums import A_Expr_Kind, BoolExprType, NullTestType, SubLinkType


def s(name: str) -> ast.String:
    return ast.String(sval=name)


def col(*names: str) -> ast.ColumnRef:
    return ast.ColumnRef(fields=tuple(s(n) for n in names))


def const(value: Any) -> ast.A_Const:
    if value is None:
        return ast.A_Const(isnull=True)
    if isinstance(value, bool):
        return ast.A_Const(val=ast.Boolean(boolval=value))
    if isinstance(value, int) and -(2**31) <= value < 2**31:
        return ast.A_Const(val=ast.Integer(ival=value))
    if isinstance(value, (int, float)):
        return ast.A_Const(val=ast.Float(fval=repr(value) if isinstance(value, float) else str(value)))
    return ast.A_Const(val=ast.String(sval=str(value)))


@lru_cache(maxsize=1024)
def typename(name: str) -> ast.TypeName:
    """A TypeName from a type as format_type prints it (``numeric(10,2)``, ``text[]``): parsed, not spliced.

    Cached and shared between trees: no pass mutates TypeName nodes.
    """
    from pglast import parse_sql

    tree = parse_sql(f"SELECT NULL::{name}")  # name comes from pg_catalog.format_type, not from users
    return tree[0].stmt.targetList[0].val.typeName


def cast(expr: ast.Node, type_: str | ast.TypeName) -> ast.TypeCast:
    tn = typename(type_) if isinstance(type_, str) else type_
    return ast.TypeCast(arg=expr, typeName=tn)


def func(name: str, *args: ast.Node, schema: str | None = "pg_catalog", **kw: Any) -> ast.FuncCall:
    names = (s(schema), s(name)) if schema else (s(name),)
    return ast.FuncCall(funcname=names, args=tuple(args) or None, **kw)


def op(name: str, left: ast.Node | None, right: ast.Node) -> ast.A_Expr:
    # OPERATOR(pg_catalog.=) would be safest against user operators, but governed
    # sessions cannot create operators (gates) and the printer keeps plain names readable.
    return ast.A_Expr(kind=A_Expr_Kind.AEXPR_OP, name=(s(name),), lexpr=left, rexpr=right)


def and_(*args: ast.Node) -> ast.Node:
    args = tuple(a for a in args if a is not None)
    if len(args) == 1:
        return args[0]
    return ast.BoolExpr(boolop=BoolExprType.AND_EXPR, args=args)


def or_(*args: ast.Node) -> ast.Node:
    return ast.BoolExpr(boolop=BoolExprType.OR_EXPR, args=tuple(args))


def case(cond: ast.Node, then: ast.Node, else_: ast.Node | None) -> ast.CaseExpr:
    return ast.CaseExpr(args=(ast.CaseWhen(expr=cond, result=then),), defresult=else_)


def is_not_false(expr: ast.Node) -> ast.BooleanTest:
    from pglast.enums import BoolTestType

    return ast.BooleanTest(arg=expr, booltesttype=BoolTestType.IS_NOT_FALSE)


def is_null(expr: ast.Node) -> ast.NullTest:
    return ast.NullTest(arg=expr, nulltesttype=NullTestType.IS_NULL)


def text_array(values: Iterable[str]) -> ast.TypeCast:
    """ARRAY['a', 'b']::text[] (ARRAY[]::text[] when empty)."""
    arr = ast.A_ArrayExpr(elements=tuple(const(str(v)) for v in values) or None)
    return cast(arr, "text[]")


def target(expr: ast.Node, name: str | None = None) -> ast.ResTarget:
    return ast.ResTarget(val=expr, name=name)


def rangevar(schema: str, name: str, inh: bool = True, alias: str | None = None) -> ast.RangeVar:
    return ast.RangeVar(schemaname=schema, relname=name, inh=inh, relpersistence="p",
                        alias=ast.Alias(aliasname=alias) if alias else None)


def select(targets: Iterable[ast.ResTarget], from_: Iterable[ast.Node], where: ast.Node | None = None) -> ast.SelectStmt:
    from pglast.enums import LimitOption, SetOperation

    return ast.SelectStmt(targetList=tuple(targets), fromClause=tuple(from_), whereClause=where,
                          limitOption=LimitOption.LIMIT_OPTION_DEFAULT, op=SetOperation.SETOP_NONE)


def scalar_subquery(query: ast.SelectStmt) -> ast.SubLink:
    return ast.SubLink(subLinkType=SubLinkType.EXPR_SUBLINK, subselect=query)


def offset0(query: ast.SelectStmt) -> ast.SelectStmt:
    """OFFSET 0: PostgreSQL neither flattens this subquery nor pushes outer quals into it (the fence)."""
    from pglast.enums import LimitOption

    query.limitOffset = const(0)
    query.limitOption = LimitOption.LIMIT_OPTION_COUNT
    return query


def replace_child(parent: Any, attr: str, index: int | None, new: ast.Node) -> None:
    """Put ``new`` where ``parent.attr`` (or its ``index``-th item) was; pglast nodes keep tuples."""
    if index is None:
        setattr(parent, attr, new)
    else:
        items = list(getattr(parent, attr))
        items[index] = new
        setattr(parent, attr, tuple(items))
