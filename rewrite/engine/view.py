"""The policy view of one table for one subject: a subquery with the table's columns.

Shape (k-anonymity adds the inner level; OFFSET 0 is the fence, see fence.py):

    SELECT <mask(c1)> AS c1, ..., <mask(cn)> AS cn
    FROM [ONLY] schema.t [TABLESAMPLE ...]
    WHERE <row filters AND minimization>
    [OFFSET 0]

    SELECT ... CASE WHEN t.pgveil_k0 >= k THEN t.zip END AS zip ...
    FROM (SELECT t.c1, ..., count(*) OVER (PARTITION BY t.zip, t.birth_year) AS pgveil_k0
          FROM schema.t WHERE <filters>) AS t

Same column names, order and count as the table, so ``SELECT *``, alias column
lists and whole-row references (``t``, ``to_jsonb(t)``, ``(t).c``) all see
the masked row; or, for a statement that provably reads only some columns by
name (pruning.py), only those, in the table's order. Inside, columns are
qualified by the table's own name.
"""
from __future__ import annotations

from dataclasses import dataclass

from pglast import ast

from rewrite.catalog import Relation
from rewrite.decide import Subject, TableDecision

from . import build as b
from .filters import filter_expr, minimize_expr
from .masks import mask_expr


@dataclass
class PolicyView:
    query: ast.SelectStmt
    row_dependent: bool  # rows are filtered or counted: outer predicates need the fence
    windowed: bool  # k-anonymity: never lift the fence
    masked: frozenset[str]  # columns whose values differ from the table's
    policies: tuple[str, ...]


def _kanon_count(cols: tuple[str, ...], q: str) -> ast.FuncCall:
    window = ast.WindowDef(partitionClause=tuple(b.col(q, c) for c in cols), frameOptions=1040)
    return ast.FuncCall(funcname=(b.s("pg_catalog"), b.s("count")), agg_star=True, over=window)


def build_view(rel: Relation, d: TableDecision, subject: Subject, inh: bool = True,
               sample: ast.RangeTableSample | None = None, only: frozenset[str] | None = None) -> PolicyView:
    """The view; ``only``: the columns it lists (None: all; masks of the others still count in ``masked``)."""
    q = rel.name
    base: ast.Node = b.rangevar(rel.schema, rel.name, inh=inh)
    if sample is not None:
        base = ast.RangeTableSample(relation=base, method=sample.method, args=sample.args, repeatable=sample.repeatable)
    preds = [filter_expr(f, rel, subject, q) for f in d.row_filters]
    if d.minimization is not None:
        preds.append(minimize_expr(d.minimization, rel, q))
    where = b.and_(*preds) if preds else None
    columns = frozenset(c.name for c in rel.columns)
    denied = {c for c, _ in d.denied_columns}
    groups = {c: (i, g.k) for i, g in enumerate(d.k_anonymity) for c in g.columns}
    policies = {p for _, p in d.denied_columns if p} | {f.policy for f in d.row_filters}
    policies |= {m.policy for _, m in d.masks if m.type != "none"} | {g.policy for g in d.k_anonymity}
    if d.minimization is not None:
        policies.add(d.minimization.policy)

    if d.k_anonymity:
        inner_targets = [b.target(b.col(q, c.name), c.name) for c in rel.columns]
        inner_targets += [b.target(_kanon_count(g.columns, q), f"pgveil_k{i}") for i, g in enumerate(d.k_anonymity)]
        inner = b.select(inner_targets, [base], where)
        from_: ast.Node = ast.RangeSubselect(lateral=False, subquery=inner, alias=ast.Alias(aliasname=q))
        where = None
    else:
        from_ = base

    targets, masked = [], set()
    for c in rel.columns:
        raw = b.col(q, c.name)
        if c.name in denied:
            # A column the subject may not read shows as NULL of its type (see docs/rewrite.md).
            expr: ast.Node | None = b.cast(b.const(None), c.type)
        elif c.name in groups:
            i, k = groups[c.name]
            expr = b.case(b.op(">=", b.col(q, f"pgveil_k{i}"), b.const(int(k))), raw, None)
        else:
            m = d.mask_for(c.name)
            expr = mask_expr(raw, c, m, rel.oid, q, columns, subject) if m is not None else None
        if expr is not None:
            masked.add(c.name)
        if only is None or c.name in only:
            targets.append(b.target(expr if expr is not None else raw, c.name))
    query = b.select(targets, [from_], where)
    row_dependent = bool(d.row_filters or d.minimization is not None or d.k_anonymity)
    return PolicyView(query, row_dependent, bool(d.k_anonymity), frozenset(masked), tuple(sorted(policies)))
