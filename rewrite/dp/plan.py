"""The plan of one DP answer: the exact aggregate to run and how to noise it.

Exact query (a tree; the table inside becomes the subject's policy view like in
any other statement, so masks and row filters apply first):

    SELECT t.g::text AS pgveil_g0, ...,
           count(*) AS pgveil_m0,                                  -- counts
           sum(LEAST(GREATEST(t.c, lo), hi)) AS pgveil_m1,            -- integer column, clamped
           sum(round(LEAST(GREATEST(t.x::numeric, lo), hi) * 100))    -- other numbers: fixed point
    FROM (SELECT ..., row_number() OVER (PARTITION BY key) AS pgveil_rn
          FROM schema.table WHERE <canonical WHERE>) AS t
    WHERE t.pgveil_rn <= max_rows_per_person                        -- only with a key
    GROUP BY t.g, ...

Epsilon split (fixed, documented in docs/dp.md): every distinct measurement
gets weight 1 per aggregate that uses it, except AVG, which splits its weight
over three (``AVG_SPLIT``): a rough sum and its count give a first noisy mean
m, then the sum *centered* on m, whose sensitivity is max(hi - m, m - lo)
instead of max(|lo|, |hi|), gives the answer m + centered / count. A GROUP BY
whose keys are not public and that has no count adds a hidden COUNT(*) of
weight 1 for the threshold. The query's epsilon is divided in proportion.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field

from pglast import ast
from pglast.enums import MinMaxOp

from rewrite.catalog import Relation
from rewrite.decide import DPSettings
from rewrite.engine import build as b

from .canonical import canonical
from .mechanism import release_threshold
from .query import AggCall, DPQuery, DPRefused

AVG_SPLIT = {"sum": 0.1, "count": 0.2, "centered_sum": 0.7}  # of one AVG's weight
FIXED_POINT = 100  # non-integer values are summed as integers of 1/100
MAX_PUBLIC_GROUPS = 10_000
_INTEGER_TYPES = frozenset({"int2", "int4", "int8"})
NUMBER_TYPES = _INTEGER_TYPES | {"numeric", "float4", "float8"}  # columns SUM / AVG take


@dataclass(frozen=True)
class Measure:
    """One noisy integer per group: ``kind`` count (column None: rows), count_distinct, sum or centered_sum.

    centered_sum is not read from the database: it is the exact sum minus
    center * count, the center coming from the noisy sum and count of the same
    column (``center_units``); its sensitivity is known only then (``centered_sensitivity``).
    """

    kind: str
    column: str | None
    sensitivity: int  # L1, in the integer units the exact query returns
    epsilon: float = 0.0
    fixed_point: int = 1  # the exact sum is in units of 1/fixed_point

    @property
    def is_count(self) -> bool:
        return self.kind in ("count", "count_distinct")

    @property
    def from_database(self) -> bool:
        return self.kind != "centered_sum"


@dataclass(frozen=True)
class Output:
    """One aggregate of the user's query, from its measurements (indexes into DPPlan.measures)."""

    call: AggCall
    value: int  # the sum or the count; AVG: the centered sum
    count: int | None = None  # AVG's denominator
    bounds: tuple[float, float] | None = None
    column_type: str | None = None  # the column's base type (SUM/AVG result types)
    rough: int | None = None  # AVG's rough sum (for the center)


@dataclass(frozen=True)
class DPPlan:
    policy: str
    table: str
    subject: str
    settings: DPSettings
    query: DPQuery
    group_types: tuple[str, ...]  # format_type of each group column
    measures: tuple[Measure, ...]
    outputs: tuple[Output, ...]
    threshold_measure: int | None  # which measure decides whether a group shows
    threshold: int | None
    public_groups: tuple[tuple[str | None, ...], ...] | None  # every group to show, when all keys are public
    people: int  # L: the most rows one person contributes (1 without a table key)
    exact_tree: ast.SelectStmt = field(repr=False, compare=False)
    exact_sql: str = ""
    cache_key: str = ""

    def finish(self, exact_sql: str) -> "DPPlan":
        """The plan with the exact SQL as the engine printed it (policy view inside) and its cache key."""
        spec = {
            "policy": self.policy, "table": self.table, "sql": exact_sql, "epsilon": self.settings.epsilon,
            "delta": self.settings.delta, "rows_per_person": self.settings.max_rows_per_person,
            "measures": [(m.kind, m.column, m.sensitivity, m.epsilon, m.fixed_point) for m in self.measures],
            "threshold": (self.threshold_measure, self.threshold), "public": self.public_groups,
        }
        key = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()
        return dataclasses.replace(self, exact_sql=exact_sql, cache_key=key)


def _weights(aggs: tuple[AggCall, ...]) -> list[tuple[tuple[str, str | None], float]]:
    weights: dict[tuple[str, str | None], float] = {}
    for a in aggs:
        if a.func == "avg":
            for kind, share in AVG_SPLIT.items():
                weights[(kind, a.column)] = weights.get((kind, a.column), 0.0) + share
        else:
            kind = "count_distinct" if a.func == "count_distinct" else a.func
            weights[(kind, a.column)] = weights.get((kind, a.column), 0.0) + 1.0
    return list(weights.items())


def _column_base(rel: Relation, column: str) -> str:
    c = rel.column(column)
    return c.base if c is not None else ""


def _fixed_point(rel: Relation, column: str, bounds: tuple[float, float]) -> int:
    integral = all(float(v).is_integer() for v in bounds)
    return 1 if _column_base(rel, column) in _INTEGER_TYPES and integral else FIXED_POINT


def _public_groups(settings: DPSettings, groups: tuple[str, ...]) -> tuple[tuple[str | None, ...], ...] | None:
    lists = [settings.public_values(g) for g in groups]
    if not groups or any(v is None for v in lists):
        return None
    size = math.prod(len(v) for v in lists)
    if size > MAX_PUBLIC_GROUPS:
        raise DPRefused(f"the public keys of {', '.join(groups)} make {size} groups; at most {MAX_PUBLIC_GROUPS} are answered")
    out: list[tuple[str | None, ...]] = [()]
    for values in lists:
        out = [prefix + (v,) for prefix in out for v in values]
    return tuple(out)


def plan_query(q: DPQuery, settings: DPSettings, subject: str, key_column: str | None) -> DPPlan:
    """Measurements, epsilon split, threshold and the exact-query tree for ``q`` under ``settings``."""
    rel = q.relation
    people = settings.max_rows_per_person if key_column else 1
    weighted = _weights(q.aggregates)
    public = _public_groups(settings, q.group_columns)
    if q.group_columns and public is None and not any(kind in ("count", "count_distinct") for (kind, _), _w in weighted):
        weighted.append((("count", None), 1.0))  # the threshold needs a count
    total = sum(w for _, w in weighted)

    measures: list[Measure] = []
    index: dict[tuple[str, str | None], int] = {}
    for (kind, column), w in weighted:
        eps = settings.epsilon * w / total
        if kind in ("sum", "centered_sum"):
            bounds = settings.bounds_of(column)
            if bounds is None:
                raise DPRefused(f"SUM/AVG of {column} needs bounds for {column} in policy {settings.policy}")
            if _column_base(rel, column) not in NUMBER_TYPES:
                raise DPRefused(f"SUM/AVG need a numeric column; {column} is {_column_base(rel, column)}")
            fp = _fixed_point(rel, column, bounds)
            sens = people * int(math.ceil(max(abs(bounds[0]), abs(bounds[1])) * fp))
            measures.append(Measure(kind, column, max(sens, 1), eps, fp))  # centered: an upper bound until released
        else:
            measures.append(Measure(kind, column, people, eps))
        index[(kind, column)] = len(measures) - 1

    outputs = []
    for a in q.aggregates:
        base = _column_base(rel, a.column) if a.column else None
        if a.func == "avg":
            outputs.append(Output(a, index[("centered_sum", a.column)], index[("count", a.column)],
                                  settings.bounds_of(a.column), base, rough=index[("sum", a.column)]))
        elif a.func == "sum":
            outputs.append(Output(a, index[("sum", a.column)], None, settings.bounds_of(a.column), base))
        else:
            outputs.append(Output(a, index[("count_distinct" if a.func == "count_distinct" else "count", a.column)]))

    threshold_measure = threshold = None
    if q.group_columns and public is None:
        counts = [i for i, m in enumerate(measures) if m.is_count]
        threshold_measure = next((i for i in counts if measures[i].column is None), counts[0])
        m = measures[threshold_measure]
        threshold = release_threshold(m.sensitivity, m.epsilon, settings.delta)

    group_types = tuple(rel.column(g).type for g in q.group_columns)
    tree = _exact_tree(q, measures, key_column, settings)
    return DPPlan(settings.policy, f"{rel.schema}.{rel.name}", subject, settings, q, group_types, tuple(measures),
                  tuple(outputs), threshold_measure, threshold, public, people, tree)


def bound_units(m: Measure, bounds: tuple[float, float]) -> tuple[int, int]:
    """The bounds in the measure's integer units (outward rounded)."""
    return math.floor(bounds[0] * m.fixed_point), math.ceil(bounds[1] * m.fixed_point)


def center_units(rough_sum: int, count: int, lo: int, hi: int) -> int:
    """The center of an AVG's centered sum: the noisy rough mean, clamped to the bounds (all in units)."""
    if count < 1:
        return (lo + hi) // 2
    return min(max(round(rough_sum / count), lo), hi)


def centered_sensitivity(m: Measure, people: int, center: int, lo: int, hi: int) -> int:
    return max(1, people * max(hi - center, center - lo))


def _clamped(expr: ast.Node, lo: float, hi: float) -> ast.Node:
    low = ast.MinMaxExpr(op=MinMaxOp.IS_GREATEST, args=(expr, b.const(_number(lo))))
    return ast.MinMaxExpr(op=MinMaxOp.IS_LEAST, args=(low, b.const(_number(hi))))


def _number(v: float) -> int | float:
    return int(v) if float(v).is_integer() else float(v)


def _measure_expr(m: Measure, settings: DPSettings) -> ast.Node:
    if m.kind == "count" and m.column is None:
        return b.func("count", agg_star=True)
    column = b.col("pgveil_rows", m.column)
    if m.kind in ("count", "count_distinct"):
        return b.func("count", column, agg_distinct=m.kind == "count_distinct")
    lo, hi = settings.bounds_of(m.column)
    if m.fixed_point == 1:
        return b.func("sum", _clamped(column, lo, hi))
    scaled = b.op("*", _clamped(b.cast(column, "numeric"), lo, hi), b.const(m.fixed_point))
    return b.func("sum", b.func("round", scaled))


def _exact_tree(q: DPQuery, measures: list[Measure], key_column: str | None, settings: DPSettings) -> ast.SelectStmt:
    rel = q.relation
    needed = list(dict.fromkeys([*q.group_columns, *(m.column for m in measures if m.column)]))
    inner_targets = [b.target(b.col(rel.name, c), c) for c in needed]
    if key_column:
        window = ast.WindowDef(partitionClause=(b.col(rel.name, key_column),), frameOptions=1040)
        rn = b.func("row_number", over=window)
        inner_targets.append(b.target(rn, "pgveil_rn"))
    if not inner_targets:
        inner_targets.append(b.target(b.const(1), "pgveil_one"))
    where = canonical(q.where) if q.where is not None else None
    if where is not None:
        where = _qualify(where, rel.name)
    inner = b.select(inner_targets, [b.rangevar(rel.schema, rel.name, inh=q.inh)], where)
    rows = ast.RangeSubselect(lateral=False, subquery=inner, alias=ast.Alias(aliasname="pgveil_rows"))
    targets = [b.target(b.cast(b.col("pgveil_rows", g), "text"), f"pgveil_g{i}") for i, g in enumerate(q.group_columns)]
    targets += [b.target(_measure_expr(m, settings), f"pgveil_m{i}") for i, m in enumerate(measures) if m.from_database]
    outer_where = None
    if key_column:
        outer_where = b.op("<=", b.col("pgveil_rows", "pgveil_rn"), b.const(settings.max_rows_per_person))
    outer = b.select(targets, [rows], outer_where)
    if q.group_columns:
        outer.groupClause = tuple(b.col("pgveil_rows", g) for g in q.group_columns)
    return outer


def _qualify(node, table: str):
    """Column references of the canonical WHERE, qualified by the table's own name (its alias inside)."""
    if isinstance(node, ast.ColumnRef):
        return ast.ColumnRef(fields=(b.s(table), node.fields[-1]))
    if isinstance(node, tuple):
        return tuple(_qualify(x, table) for x in node)
    if isinstance(node, ast.Node):
        return type(node)(**{k: _qualify(getattr(node, k), table) for k in node})
    return node
