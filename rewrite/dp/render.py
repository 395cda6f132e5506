"""Released values as the SQL the backend runs instead of the user's query.

    SELECT <user's targets over pgveil_gN / pgveil_aN>
    FROM (VALUES ('F'::text, 512::bigint, '31544.2'::numeric), ...) AS pgveil_dp(pgveil_g0, pgveil_a0, pgveil_a1)
    [WHERE <user's HAVING>] [ORDER BY ...] [LIMIT ... OFFSET ...]

Only literals reach this statement, so HAVING, ORDER BY, LIMIT and any
arithmetic on the aggregates are post-processing of released values; the
result keeps PostgreSQL's column names and sensible types (COUNT bigint, SUM
and AVG numeric or double precision), in the simple and the extended protocol.
The tree is built from nodes and printed by pglast.
"""
from __future__ import annotations

from decimal import Decimal, localcontext

from pglast import ast
from pglast.enums import LimitOption, SetOperation

from rewrite.analysis.parse import print_node
from rewrite.engine import build as b

from .plan import DPPlan, Output, bound_units, center_units
from .release import Released

_FLOATS = frozenset({"float4", "float8"})


def _result_type(o: Output) -> str:
    if o.call.func in ("count", "count_distinct"):
        return "bigint"
    if o.column_type in _FLOATS:
        return "double precision"
    if o.call.func == "sum" and o.column_type in ("int2", "int4"):
        return "bigint"
    return "numeric"


def _value(plan: DPPlan, o: Output, noisy: list[int]) -> str | None:
    """The released aggregate as text, or None (SQL NULL)."""
    m = plan.measures[o.value]
    raw = noisy[o.value]
    if o.call.func in ("count", "count_distinct"):
        return str(max(0, raw))  # a count is never negative: post-processing
    with localcontext() as ctx:
        ctx.prec = 28
        total = Decimal(raw) / Decimal(m.fixed_point)
        if o.call.func == "sum":
            return str(total) if m.fixed_point > 1 else str(raw)
        count = noisy[o.count]
        if count < 1:
            return None  # no rows to average, as far as the noisy count can tell
        lo_u, hi_u = bound_units(m, o.bounds)
        center = center_units(noisy[o.rough], count, lo_u, hi_u)  # as release() computed it
        mean = (Decimal(center) + Decimal(raw) / Decimal(count)) / Decimal(m.fixed_point)
        lo, hi = o.bounds
        mean = min(max(mean, Decimal(str(lo))), Decimal(str(hi)))  # clamped values average inside the bounds
        return str(+mean)


def _literal(text: str | None, type_: str) -> ast.Node:
    return b.cast(b.const(text), type_)


def answer_sql(plan: DPPlan, released: Released) -> str:
    q = plan.query
    types = list(plan.group_types) + [_result_type(o) for o in plan.outputs]
    names = [f"pgveil_g{i}" for i in range(len(q.group_columns))] + [f"pgveil_a{i}" for i in range(len(plan.outputs))]
    rows = []
    for keys, noisy in released:
        values = list(keys) + [_value(plan, o, noisy) for o in plan.outputs]
        rows.append(tuple(_literal(v, t) for v, t in zip(values, types)))
    where = q.having
    if not rows:
        rows = [tuple(_literal(None, t) for t in types)]
        where = b.const(False) if where is None else b.and_(b.const(False), where)
    values = ast.SelectStmt(valuesLists=tuple(rows), limitOption=LimitOption.LIMIT_OPTION_DEFAULT,
                            op=SetOperation.SETOP_NONE)
    alias = ast.Alias(aliasname="pgveil_dp", colnames=tuple(b.s(n) for n in names))
    source = ast.RangeSubselect(lateral=False, subquery=values, alias=alias)
    stmt = b.select(q.targets, [source], where)
    stmt.sortClause = q.sort or None
    stmt.limitCount, stmt.limitOffset = q.limit_count, q.limit_offset
    stmt.limitOption = q.limit_option if q.limit_count is not None else LimitOption.LIMIT_OPTION_DEFAULT
    return print_node(stmt)
