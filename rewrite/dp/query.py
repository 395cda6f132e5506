"""Read a statement over a DP table as an aggregate query pgveil can bound, or refuse it.

Accepted: one SELECT over the DP table alone, whose targets, HAVING and ORDER BY
are expressions over COUNT(*), COUNT(col), COUNT(DISTINCT col), SUM(col),
AVG(col) and GROUP BY columns; WHERE of predicates proved error-free (an
error raised by one row would reveal it without noise: see ``predicates``);
GROUP BY plain columns (or target positions); LIMIT / OFFSET constants.

The result, ``DPQuery``, holds the aggregates found (deduplicated, in order of
appearance) and the user's targets, HAVING and ORDER BY rewritten to read
released columns instead: ``pgveil_aN`` for the N-th aggregate, ``pgveil_gN``
for the N-th group column. Those expressions later run on literal values only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pglast import ast
from pglast.enums import A_Expr_Kind, MinMaxOp, SetOperation

from rewrite.catalog import Catalog, Relation
from rewrite.engine import build as b

from .predicates import where_is_error_free

ALLOWED = ("on a differentially private table pgveil runs only aggregate queries: SELECT of COUNT(*), COUNT(col), "
           "COUNT(DISTINCT col), SUM(col), AVG(col) FROM that one table [WHERE ...] [GROUP BY columns] "
           "[HAVING ...] [ORDER BY ...] [LIMIT n]")
DP_AGGREGATES = frozenset({"count", "sum", "avg"})
# Aggregates PostgreSQL has that pgveil cannot bound (yet): refused by name with a clear message.
OTHER_AGGREGATES = frozenset({
    "min", "max", "stddev", "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp", "array_agg",
    "string_agg", "json_agg", "jsonb_agg", "json_object_agg", "jsonb_object_agg", "xmlagg", "bool_and", "bool_or",
    "every", "bit_and", "bit_or", "bit_xor", "percentile_cont", "percentile_disc", "mode", "corr", "covar_pop",
    "covar_samp", "regr_avgx", "regr_avgy", "regr_count", "regr_intercept", "regr_r2", "regr_slope", "regr_sxx",
    "regr_sxy", "regr_syy", "range_agg", "range_intersect_agg", "any_value", "rank", "dense_rank", "percent_rank",
    "cume_dist", "row_number", "ntile", "lag", "lead", "first_value", "last_value", "nth_value", "grouping",
    "json_objectagg", "json_arrayagg",
})
# Node types a post-processing expression may contain (they run on released values only).
_POST_NODES = (ast.A_Expr, ast.BoolExpr, ast.TypeCast, ast.CaseExpr, ast.CaseWhen, ast.CoalesceExpr, ast.MinMaxExpr,
               ast.NullTest, ast.BooleanTest)
_LOCATION_FIELDS = frozenset({"location", "rexpr_list_start", "rexpr_list_end"})


class DPRefused(Exception):
    """The statement cannot run on a DP table; ``str(exc)`` is the message for the user."""

    def __init__(self, message: str, sqlstate: str = "0A000") -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@dataclass(frozen=True)
class AggCall:
    """One aggregate the user asked for: ``func`` is count, count_distinct, sum or avg; column None is ``*``."""

    func: str
    column: str | None


@dataclass
class DPQuery:
    relation: Relation
    inh: bool
    where: Any  # the user's WHERE (original tree), or None
    group_columns: tuple[str, ...]
    aggregates: tuple[AggCall, ...]
    targets: tuple[ast.ResTarget, ...]  # over pgveil_aN / pgveil_gN, each named as PostgreSQL would name it
    having: Any
    sort: tuple[ast.SortBy, ...]
    limit_count: Any
    limit_offset: Any
    limit_option: Any


def _names(ref: ast.ColumnRef) -> list[str] | None:
    if not all(isinstance(f, ast.String) for f in ref.fields):
        return None
    return [f.sval for f in ref.fields]


class _Reader:
    def __init__(self, rel: Relation, alias: str) -> None:
        self.rel = rel
        self.alias = alias
        self.groups: list[str] = []
        self.aggs: list[AggCall] = []

    def column(self, ref: ast.ColumnRef) -> str:
        names = _names(ref)
        if names is None:
            raise DPRefused(f"SELECT * and whole-row references are not allowed; {ALLOWED}")
        if len(names) == 2 and names[0] == self.alias or len(names) == 1:
            if self.rel.column(names[-1]) is not None:
                return names[-1]
        raise DPRefused(f'column "{".".join(names)}" is not a column of {self.rel.schema}.{self.rel.name}')

    def aggregate(self, call: ast.FuncCall, name: str) -> AggCall:
        if call.over is not None:
            raise DPRefused(f"window functions are not allowed on a differentially private table; {ALLOWED}")
        if call.agg_filter is not None or call.agg_order or call.agg_within_group or call.func_variadic:
            raise DPRefused(f"{name.upper()} with FILTER, ORDER BY or WITHIN GROUP is not supported; {ALLOWED}")
        if call.agg_star:
            return AggCall("count", None)
        args = call.args or ()
        if len(args) != 1:
            raise DPRefused(f"{name.upper()} takes one column here; {ALLOWED}")
        arg = args[0]
        if name == "count" and not call.agg_distinct and isinstance(arg, ast.A_Const) and not arg.isnull:
            return AggCall("count", None)  # COUNT(1) counts rows, as COUNT(*)
        if not isinstance(arg, ast.ColumnRef):
            raise DPRefused(f"the argument of {name.upper()} must be a column of the table; {ALLOWED}")
        column = self.column(arg)
        if call.agg_distinct:
            if name != "count":
                raise DPRefused(f"{name.upper()}(DISTINCT ...) is not supported; COUNT(DISTINCT col) is")
            return AggCall("count_distinct", column)
        return AggCall(name, column)

    def post(self, node: Any) -> Any:
        """A copy of ``node`` reading released columns; refuses anything that is not post-processing."""
        if isinstance(node, tuple):
            return tuple(self.post(x) for x in node)
        if not isinstance(node, ast.Node):
            return node
        if isinstance(node, ast.FuncCall):
            name = node.funcname[-1].sval.lower()
            schema = node.funcname[0].sval.lower() if len(node.funcname) == 2 else "pg_catalog"
            if schema == "pg_catalog" and name in DP_AGGREGATES and (node.agg_star or node.args):
                agg = self.aggregate(node, name)
                if agg not in self.aggs:
                    self.aggs.append(agg)
                return b.col(f"pgveil_a{self.aggs.index(agg)}")
            if name in OTHER_AGGREGATES or node.over is not None or node.agg_star or node.agg_filter is not None:
                raise DPRefused(f"{name.upper()} is not supported on a differentially private table (pgveil cannot "
                                f"bound its sensitivity); {ALLOWED}")
            return _copy(node, self.post)
        if isinstance(node, ast.ColumnRef):
            column = self.column(node)
            if column not in self.groups:
                raise DPRefused(f'column "{column}" must appear in the GROUP BY clause or be used in an aggregate')
            return b.col(f"pgveil_g{self.groups.index(column)}")
        if isinstance(node, ast.SubLink):
            raise DPRefused(f"sub-queries are not allowed in a query on a differentially private table; {ALLOWED}")
        if isinstance(node, ast.ParamRef):
            raise DPRefused("parameters ($n) are not supported in queries on a differentially private table; "
                            "write the values as literals")
        if isinstance(node, (ast.A_Const, ast.TypeName, ast.String, ast.Integer, ast.Float, ast.Boolean)):
            return node
        if isinstance(node, _POST_NODES):
            return _copy(node, self.post)
        raise DPRefused(f"{type(node).__name__} is not supported in a query on a differentially private table; {ALLOWED}")


def _copy(node: ast.Node, convert) -> ast.Node:
    return type(node)(**{k: convert(getattr(node, k)) for k in node if k not in _LOCATION_FIELDS})


def _has_param(node: Any) -> bool:
    if isinstance(node, ast.ParamRef):
        return True
    if isinstance(node, tuple):
        return any(_has_param(x) for x in node)
    if isinstance(node, ast.Node):
        return any(_has_param(getattr(node, k)) for k in node)
    return False


def _figure_colname(node: Any) -> str:
    """The column name PostgreSQL gives an unnamed target (FigureColname)."""
    if isinstance(node, ast.ColumnRef):
        last = node.fields[-1]
        return last.sval if isinstance(last, ast.String) else "?column?"
    if isinstance(node, ast.FuncCall):
        return node.funcname[-1].sval
    if isinstance(node, ast.TypeCast):
        inner = _figure_colname(node.arg)
        return inner if inner != "?column?" else node.typeName.names[-1].sval
    if isinstance(node, ast.CaseExpr):
        return "case"
    if isinstance(node, ast.CoalesceExpr):
        return "coalesce"
    if isinstance(node, ast.MinMaxExpr):
        return "greatest" if node.op == MinMaxOp.IS_GREATEST else "least"
    if isinstance(node, ast.A_Expr) and node.kind == A_Expr_Kind.AEXPR_NULLIF:
        return "nullif"
    return "?column?"


def read_query(stmt: Any, rel: Relation, catalog: Catalog) -> DPQuery:
    """Describe ``stmt`` (a RawStmt's statement) as a DP query over ``rel``; raises DPRefused."""
    if not isinstance(stmt, ast.SelectStmt):
        raise DPRefused(f"{type(stmt).__name__.removesuffix('Stmt').upper()} is not allowed on a differentially "
                        f"private table; {ALLOWED}", "42501")
    if stmt.op != SetOperation.SETOP_NONE or stmt.valuesLists:
        raise DPRefused(f"set operations are not allowed on a differentially private table; {ALLOWED}")
    for attr, what in (("withClause", "WITH"), ("intoClause", "SELECT INTO"), ("lockingClause", "FOR UPDATE/SHARE"),
                       ("windowClause", "WINDOW"), ("distinctClause", "DISTINCT")):
        if getattr(stmt, attr):
            raise DPRefused(f"{what} is not allowed in a query on a differentially private table; {ALLOWED}")
    if stmt.groupDistinct:
        raise DPRefused(f"GROUP BY DISTINCT is not allowed; {ALLOWED}")
    from_ = stmt.fromClause or ()
    if len(from_) != 1 or not isinstance(from_[0], ast.RangeVar):
        raise DPRefused(f"a differentially private table cannot be joined or combined with other tables; {ALLOWED}")
    rv = from_[0]
    if rv.alias is not None and rv.alias.colnames:
        raise DPRefused("column aliases on a differentially private table are not supported")
    reader = _Reader(rel, rv.alias.aliasname if rv.alias else rv.relname)

    targets_in = stmt.targetList or ()
    for item in stmt.groupClause or ():
        if isinstance(item, ast.A_Const) and isinstance(item.val, ast.Integer):
            pos = item.val.ival
            if not 1 <= pos <= len(targets_in):
                raise DPRefused(f"GROUP BY position {pos} is not in select list", "42P10")
            item = targets_in[pos - 1].val
        if not isinstance(item, ast.ColumnRef):
            raise DPRefused(f"GROUP BY takes columns of the table on a differentially private table; {ALLOWED}")
        column = reader.column(item)
        if column not in reader.groups:
            reader.groups.append(column)

    if stmt.whereClause is not None:
        if _has_param(stmt.whereClause):
            raise DPRefused("parameters ($n) are not supported in queries on a differentially private table; "
                            "write the values as literals")
        where_is_error_free(stmt.whereClause, rel, reader.alias, catalog)  # raises DPRefused

    targets = []
    for t in targets_in:
        if isinstance(t.val, ast.ColumnRef) and isinstance(t.val.fields[-1], ast.A_Star):
            raise DPRefused(f"SELECT * is not allowed on a differentially private table; {ALLOWED}")
        targets.append(ast.ResTarget(val=reader.post(t.val), name=t.name or _figure_colname(t.val)))
    having = reader.post(stmt.havingClause) if stmt.havingClause is not None else None
    aliases = {t.name for t in targets_in if t.name}
    sort = []
    for s in stmt.sortClause or ():
        n = s.node
        keep = (isinstance(n, ast.A_Const) and isinstance(n.val, ast.Integer)) or (
            isinstance(n, ast.ColumnRef) and len(n.fields) == 1 and isinstance(n.fields[0], ast.String)
            and n.fields[0].sval in aliases)
        sort.append(ast.SortBy(node=n if keep else reader.post(n), sortby_dir=s.sortby_dir,
                               sortby_nulls=s.sortby_nulls, useOp=s.useOp))
    for limit in (stmt.limitCount, stmt.limitOffset):
        if limit is not None and not isinstance(limit, ast.A_Const):
            raise DPRefused("LIMIT and OFFSET must be constants on a differentially private table")
    if not reader.aggs:
        raise DPRefused(f"row-level queries are not allowed on a differentially private table; {ALLOWED}", "42501")
    return DPQuery(rel, bool(rv.inh), stmt.whereClause, tuple(reader.groups), tuple(reader.aggs), tuple(targets),
                   having, tuple(sort), stmt.limitCount, stmt.limitOffset, stmt.limitOption)
