"""The subject-independent part of a decision, computed once per table and policy version.

For one table it lists, in evaluation order, the policies that can apply to
the table and to each column, with their match types, and binds filters to the
table's metadata (key column, event-time column). A decision then only
evaluates conditions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .compiled import CompiledFilter
from .evaluate import Candidate, candidates
from .resource import ANCESTOR, DESCENDANT, SELF
from .result import Minimization, RowFilter
from .table import TableInfo


@dataclass(eq=False, slots=True)
class TablePlan:
    table: TableInfo
    access: list[Candidate]
    column_access: dict[str, list[Candidate]]  # only columns with column-level candidates
    masks: list[tuple[str, list[Candidate]]]  # (column, candidates) for columns with any
    filters: list[tuple[CompiledFilter, tuple]]  # (policy, ((check, bound filter), ...))
    purposes: list[Candidate]
    column_purposes: dict[str, list[Candidate]]
    dp: list[Candidate]


def _bind(spec: Any, policy: str, meta: Any) -> Any:
    """A FilterSpec made concrete for one table."""
    params = spec.params
    if spec.kind == "minimize":
        return Minimization(dict(params)["percent"], getattr(meta, "key", None), policy)
    if spec.kind == "time_window":
        return RowFilter("time_window", params + (("column", getattr(meta, "event_time", None)),), policy)
    return RowFilter(spec.kind, params, policy)


def build_plan(ps: Any, t: TableInfo) -> TablePlan:
    table_res = (t.schema, t.name)
    self_tags = [(tag, SELF) for tag in t.tags]
    desc_tags = [(tag, DESCENDANT) for c in t.columns for tag in c.tags]
    access = candidates(ps.access, table_res, self_tags + desc_tags)
    column_access: dict[str, list[Candidate]] = {}
    masks: list[tuple[str, list[Candidate]]] = []
    column_purposes: dict[str, list[Candidate]] = {}
    table_purposes = candidates(ps.purposes, table_res, self_tags)
    table_purpose_ids = {id(p) for p, _ in table_purposes}
    for c in t.columns:
        res = (t.schema, t.name, c.name)
        tags = [(tag, SELF) for tag in c.tags] + [(tag, ANCESTOR) for tag in t.tags]
        ca = candidates(ps.access, res, tags)
        if ca:
            column_access[c.name] = ca
        cm = [x for x in candidates(ps.masks, res, tags) if x[1] != DESCENDANT]
        if cm:
            masks.append((c.name, cm))
        cp = [x for x in candidates(ps.purposes, res, tags) if id(x[0]) not in table_purpose_ids]
        if cp:
            column_purposes[c.name] = cp
    meta = ps.table_meta.get((t.schema, t.name))
    filters = []
    for p, mt in candidates(ps.filters, table_res, self_tags):
        if mt == DESCENDANT:
            continue
        filters.append((p, tuple((check, _bind(spec, p.name, meta)) for check, spec in p.items)))
    dp = [x for x in candidates(ps.dps, table_res, self_tags) if x[1] != DESCENDANT]
    return TablePlan(t, access, column_access, masks, filters, table_purposes, column_purposes, dp)
