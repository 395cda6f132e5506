"""What one relation reference means for one subject: a decision, or a refusal.

Besides the relation's own decision (rewrite.decide), threat 5 is handled
here: a view or materialized view that reads a governed table, a partition or
inheritance child of a governed table, and a parent whose children carry their
own policies are refused (fail closed), since a policy view on the object
named would not cover the rows it reaches.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from rewrite.catalog import Catalog, Relation
from rewrite.decide import TableDecision


@dataclass(frozen=True)
class Refusal:
    sqlstate: str
    message: str
    policy: str | None = None


def is_plain(d: TableDecision) -> bool:
    """Allowed with nothing to apply: the relation can be read as it is."""
    return (d.allowed and not d.denied_columns and not d.row_filters and d.minimization is None
            and not d.k_anonymity and d.dp is None and all(m.type == "none" for _, m in d.masks))


def _table_refusal(rel: Relation, d: TableDecision) -> Refusal | None:
    name = f"{rel.schema}.{rel.name}"
    if not d.allowed:
        if any(not p.satisfied for p in d.purposes):
            need = next(p for p in d.purposes if not p.satisfied)
            return Refusal("42501", f"permission denied for table {name}: acting under purpose "
                           f"{' or '.join(need.purposes)} is required (policy {need.policy})", need.policy)
        why = f"denied by policy {d.policy}" if d.policy else "no policy grants access"
        return Refusal("42501", f"permission denied for table {name}: {why}", d.policy)
    return None


def dp_refusal(rel: Relation, d: TableDecision) -> Refusal:
    """A DP table read anywhere but as the one table of an aggregate query (rewrite.dp takes those)."""
    return Refusal("0A000", f"table {rel.schema}.{rel.name} is under differential privacy (policy {d.dp.policy}): "
                   "only aggregate queries over it alone are answered", d.dp.policy)


class Governance:
    """Decisions per relation for one statement, with the dependency checks of threat 5."""

    def __init__(self, catalog: Catalog, decide_for: Callable[[Relation], TableDecision]) -> None:
        self.catalog = catalog
        self._decide_for = decide_for
        self._memo: dict[tuple[str, str], TableDecision] = {}

    def decision(self, rel: Relation) -> TableDecision:
        d = self._memo.get(rel.key)
        if d is None:
            d = self._memo[rel.key] = self._decide_for(rel)
        return d

    def _related(self, rel: Relation, step: Callable[[Relation], tuple]) -> list[Relation]:
        out, seen, todo = [], {rel.key}, list(step(rel))
        while todo:
            key = todo.pop()
            if key in seen:
                continue
            seen.add(key)
            other = self.catalog.get(*key)
            if other is not None and not other.is_system:
                out.append(other)
                todo.extend(step(other))
        return out

    def check(self, rel: Relation, inh: bool) -> tuple[TableDecision | None, Refusal | None]:
        """(decision, None) to read ``rel`` under its decision, or (None, refusal)."""
        if rel.is_system:
            return None, None  # the catalog gates' business
        d = self.decision(rel)
        refusal = _table_refusal(rel, d)
        if refusal is not None:
            return None, refusal
        name = f"{rel.schema}.{rel.name}"
        for anc in self._related(rel, lambda r: r.parents):
            if not is_plain(self.decision(anc)):
                return None, Refusal("42501", f"{name} is a partition or child of governed table "
                                     f"{anc.schema}.{anc.name}; query {anc.schema}.{anc.name} instead", self.decision(anc).policy)
        if inh:
            for child in self._related(rel, lambda r: self.catalog.children(r.key)):
                cd = self.decision(child)
                if not cd.allowed and cd.policy is None:
                    continue  # no policy of its own: the parent's view governs the child's rows
                if not is_plain(cd) and cd != d and not _same_policies(cd, d):
                    return None, Refusal("42501", f"{name} has partitions or children ({child.schema}.{child.name}) "
                                         "governed by their own policies; query them one by one", cd.policy)
        if rel.kind in ("view", "matview"):
            for dep in self._related(rel, lambda r: r.depends_on):
                if dep.kind not in ("view", "matview") and not is_plain(self.decision(dep)):
                    return None, Refusal("42501", f"{rel.kind} {name} reads governed table {dep.schema}.{dep.name}; "
                                         f"query {dep.schema}.{dep.name} itself", self.decision(dep).policy)
        return d, None


def _same_policies(a: TableDecision, b: TableDecision) -> bool:
    # A partition that inherits exactly its parent's treatment (same masks, same filters) is covered by the parent's view.
    return a.allowed == b.allowed and a.masks == b.masks and a.row_filters == b.row_filters and a.minimization == b.minimization \
        and a.k_anonymity == b.k_anonymity and a.denied_columns == b.denied_columns
