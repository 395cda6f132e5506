"""The tree walker: visits every node of a query and applies the node-level gates.

Each node type it may meet in a readable query is listed in ``_KNOWN`` with
its check (or none). Any other node type is refused (fail closed): statement
nodes nested in a query (data-modifying CTEs), DDL fragments, and whatever a
later pglast adds. Checks run on every node wherever it sits: target list,
WHERE, JOIN, GROUP BY, ORDER BY, window definitions, FILTER, LATERAL, CTEs,
sub-queries, casts, subscripts, VALUES lists, function arguments.
"""
from __future__ import annotations

from pglast import ast

from rewrite.analysis.nodes import child_slots

from .context import GateContext
from .functions import check_function, check_operator
from .names import CATALOG, is_internal_schema, shown, split_qualified, strings
from .relations import check_relation
from .sensitive import SensitiveColumns
from .verdict import Refusal, privilege, unsupported

_WRITES = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)
_SAMPLING_METHODS = frozenset({"bernoulli", "system"})


class _Refused(Exception):
    def __init__(self, refusal: Refusal) -> None:
        self.refusal = refusal


def write_refusal(kind: str) -> Refusal:
    # Hook: when policies may allow writes, a write whose target is in
    # GateContext.writable_tables goes on to the walker instead (docs/gates.md).
    return privilege("writes", f"{kind} is not allowed through pgveil: governed users are read-only (writes)")


class QueryWalker:
    """Walk one statement's query trees; ``run`` returns the first refusal or None."""

    def __init__(self, ctx: GateContext) -> None:
        self.ctx = ctx
        self.sensitive = SensitiveColumns(ctx.served)

    def run(self, *roots) -> Refusal | None:
        try:
            for root in roots:
                self._visit(root)
            return self.sensitive.verdict()
        except _Refused as exc:
            return exc.refusal

    def _visit(self, value) -> None:
        if value is None or isinstance(value, (str, int, float, bool)):
            return
        if isinstance(value, (tuple, list)):
            for item in value:
                self._visit(item)
            return
        if not isinstance(value, ast.Node):
            raise _Refused(unsupported("syntax", "this construct is not supported by pgveil (syntax)"))
        check = _KNOWN.get(type(value))
        if check is None:
            raise _Refused(_unknown(value))
        if check is not _PLAIN:
            refusal = check(self, value)
            if refusal is not None:
                raise _Refused(refusal)
        for slot in child_slots(type(value)):
            self._visit(getattr(value, slot, None))


def _unknown(node: ast.Node) -> Refusal:
    if isinstance(node, _WRITES):
        return write_refusal(type(node).__name__.removesuffix("Stmt").upper())
    return unsupported("syntax", f"{type(node).__name__} is not supported inside a query through pgveil (syntax)")


def _plain(walker: QueryWalker, node) -> None:
    return None


_PLAIN = _plain


def _select(walker: QueryWalker, node: ast.SelectStmt) -> Refusal | None:
    if node.intoClause is not None:
        return write_refusal("SELECT INTO")
    if node.lockingClause:
        return privilege("writes", "row locks (FOR UPDATE/SHARE) are not allowed through pgveil (writes)")
    walker.sensitive.select(node)
    return None


def _cte(walker: QueryWalker, node: ast.CommonTableExpr) -> Refusal | None:
    if isinstance(node.ctequery, _WRITES):
        return write_refusal("a data-modifying WITH query")
    return None


def _func(walker: QueryWalker, node: ast.FuncCall) -> Refusal | None:
    return check_function(node, walker.ctx)


def _operator(walker: QueryWalker, node: ast.A_Expr) -> Refusal | None:
    return check_operator(node, walker.ctx)


def _relation(walker: QueryWalker, node: ast.RangeVar) -> Refusal | None:
    refusal = check_relation(node, walker.ctx)
    if refusal is None:
        walker.sensitive.relation(node)
    return refusal


def _column(walker: QueryWalker, node: ast.ColumnRef) -> None:
    walker.sensitive.column(node)


def _indirection(walker: QueryWalker, node: ast.A_Indirection) -> None:
    walker.sensitive.indirection(node)


def _join(walker: QueryWalker, node: ast.JoinExpr) -> None:
    walker.sensitive.join(node)


def _type(walker: QueryWalker, node: ast.TypeName) -> Refusal | None:
    parts = strings(node.names)
    split = split_qualified(parts) if parts else None
    if split is None or node.pct_type:
        return unsupported("types", "this type name form is not supported by pgveil (types)")
    schema, name = split
    if schema is not None and schema != CATALOG and is_internal_schema(schema, walker.ctx.internal_schemas):
        return privilege("types", f"type {shown(schema + '.' + name)} is in an internal schema (types)")
    return None


def _sample(walker: QueryWalker, node: ast.RangeTableSample) -> Refusal | None:
    parts = strings(node.method)
    split = split_qualified(parts) if parts else None
    if split and split[0] in (None, CATALOG) and split[1] in _SAMPLING_METHODS:
        return None
    return privilege("functions", "only TABLESAMPLE BERNOULLI and SYSTEM are allowed through pgveil (functions)")


def _column_def(walker: QueryWalker, node: ast.ColumnDef) -> Refusal | None:
    # Only column definition lists of functions (AS t(a int)) reach here; DDL never does.
    if node.raw_default is not None or node.cooked_default is not None or node.constraints:
        return unsupported("syntax", "column defaults are not supported inside a query (syntax)")
    return None


_KNOWN = {
    ast.SelectStmt: _select, ast.CommonTableExpr: _cte, ast.FuncCall: _func, ast.A_Expr: _operator,
    ast.RangeVar: _relation, ast.ColumnRef: _column, ast.A_Indirection: _indirection,
    ast.JoinExpr: _join, ast.TypeName: _type, ast.RangeTableSample: _sample,
    ast.ColumnDef: _column_def,
}
for _cls in (
    ast.ResTarget, ast.A_Star, ast.A_Const, ast.String, ast.Integer, ast.Float, ast.Boolean,
    ast.BitString, ast.ParamRef, ast.BoolExpr, ast.NullTest, ast.BooleanTest, ast.CaseExpr,
    ast.CaseWhen, ast.CoalesceExpr, ast.MinMaxExpr, ast.RowExpr, ast.A_ArrayExpr, ast.A_Indices,
    ast.SubLink, ast.TypeCast, ast.CollateClause, ast.SQLValueFunction, ast.NamedArgExpr,
    ast.WindowDef, ast.SortBy, ast.GroupingSet, ast.GroupingFunc, ast.WithClause,
    ast.CTESearchClause, ast.CTECycleClause, ast.RangeSubselect, ast.RangeFunction, ast.Alias,
    ast.RangeTableFunc, ast.RangeTableFuncCol, ast.XmlExpr, ast.XmlSerialize,
    ast.JsonObjectConstructor, ast.JsonArrayConstructor, ast.JsonArrayQueryConstructor,
    ast.JsonAggConstructor, ast.JsonObjectAgg, ast.JsonArrayAgg, ast.JsonKeyValue,
    ast.JsonValueExpr, ast.JsonOutput, ast.JsonReturning, ast.JsonFormat, ast.JsonIsPredicate,
    ast.JsonParseExpr, ast.JsonScalarExpr, ast.JsonSerializeExpr, ast.JsonFuncExpr,
    ast.JsonArgument, ast.JsonBehavior, ast.JsonTable, ast.JsonTableColumn,
    ast.JsonTablePathSpec,
):
    _KNOWN[_cls] = _PLAIN
