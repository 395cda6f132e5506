"""PolicySet (compiled policies of one version, with caches) and ``decide``."""
from __future__ import annotations

import bisect
import hashlib
import time
from typing import Any, Iterable

from rewrite.policy.targets import split_table

from .compile import compile_policies
from .compiled import CompiledAccess, CompiledDP, CompiledFilter, CompiledMask, CompiledPurpose
from .evaluate import access_over, first_mask
from .plan import TablePlan, build_plan
from .resource import DESCENDANT
from .result import KAnonGroup, Minimization, PurposeRequirement, RowFilter, TableDecision
from .subject import Subject
from .table import TableInfo

_MAX_CACHE = 100_000


class PolicySet:
    """Policies compiled once per version; table plans and decisions are cached here.

    Build a new PolicySet when the config changes: the old caches go with the old object.
    """

    def __init__(self, policies: Iterable[Any], table_meta: dict | None = None, version: str | None = None) -> None:
        compiled = compile_policies(policies)
        order = sorted(compiled, key=lambda p: p.data_order())
        self.access = [p for p in compiled if isinstance(p, CompiledAccess)]
        self.masks = [p for p in order if isinstance(p, CompiledMask)]
        self.filters = [p for p in order if isinstance(p, CompiledFilter)]
        self.purposes = [p for p in order if isinstance(p, CompiledPurpose)]
        self.dps = [p for p in order if isinstance(p, CompiledDP)]
        self.table_meta = {split_table(k): v for k, v in (table_meta or {}).items()}
        self.version = version or hashlib.sha256(repr([(p.name, p.kind, p.order) for p in compiled]).encode()).hexdigest()[:16]
        edges = sorted({e for p in compiled for w in (p.validity or ()) for e in w if abs(e) != float("inf")})
        self._edges = edges
        self._plans: dict[TableInfo, TablePlan] = {}
        self._decisions: dict[tuple, TableDecision] = {}

    @classmethod
    def from_config(cls, config: Any, version: str | None = None) -> "PolicySet":
        """Compile a validated PolicyConfig (or proxy Config)."""
        if version is None:
            dump = config.model_dump_json(include={"policies", "tables", "purposes"}, by_alias=True)
            version = hashlib.sha256(dump.encode()).hexdigest()[:16]
        return cls(config.policies, config.tables, version)

    def plan(self, table: TableInfo) -> TablePlan:
        plan = self._plans.get(table)
        if plan is None:
            plan = self._plans[table] = build_plan(self, table)
        return plan

    def epoch(self, now: float) -> int:
        """Which validity interval ``now`` is in: decisions are cached per interval."""
        return bisect.bisect_right(self._edges, now) if self._edges else 0

    def next_edge(self, now: float) -> float:
        """When the interval ``now`` is in ends (a validity window opens or closes); inf if never."""
        at = bisect.bisect_right(self._edges, now)
        return self._edges[at] if at < len(self._edges) else float("inf")

    def clear_cache(self) -> None:
        self._decisions.clear()


def decide(ps: PolicySet, s: Subject, table: TableInfo, now: float | None = None, use_cache: bool = True) -> TableDecision:
    """What ``s`` may see of ``table`` under the policies in ``ps``."""
    if now is None:
        now = time.time() if ps._edges else 0.0
    key = (s.fingerprint, table, ps.version, ps.epoch(now) if ps._edges else 0)
    if use_cache:
        hit = ps._decisions.get(key)
        if hit is not None:
            return hit
    d = _decide(ps, s, table, now)
    if use_cache:
        if len(ps._decisions) >= _MAX_CACHE:
            ps._decisions.clear()
        ps._decisions[key] = d
    return d


def _denied(t: TableInfo, policy: str | None, reason: str, purposes: tuple = ()) -> TableDecision:
    return TableDecision(t.schema, t.name, False, policy, reason, purposes=purposes)


def _decide(ps: PolicySet, s: Subject, t: TableInfo, now: float) -> TableDecision:
    if s.unrestricted:
        return TableDecision(t.schema, t.name, True, None, "unrestricted user", unrestricted=True)
    plan = ps.plan(t)
    acc = access_over(plan.access, s, "select", now)
    if not acc.allowed:
        why = f"denied by policy {acc.policy}" if acc.policy else "no policy grants access"
        return _denied(t, acc.policy, why)

    purposes = []
    for p, _ in plan.purposes:
        if (p.validity is None or p.active(now)) and p.applies(s):
            ok = not s.purpose_closure.isdisjoint(p.purposes)
            purposes.append(PurposeRequirement(p.purposes, p.name, ok))
            if not ok:
                return _denied(t, p.name, f"requires purpose {' or '.join(p.purposes)} (policy {p.name})", tuple(purposes))

    denied: list[tuple[str, str | None]] = []
    for col, cands in plan.column_access.items():
        r = access_over(cands, s, "select", now)
        if r.policy is not None and not r.allowed:
            denied.append((col, r.policy))
    if acc.match_type == DESCENDANT:  # table allowed only through policies on some of its columns
        covered = {c for c, cands in plan.column_access.items() if access_over(cands, s, "select", now).allowed}
        denied += [(c.name, None) for c in t.columns if c.name not in covered and all(c.name != d for d, _ in denied)]
    for col, cands in plan.column_purposes.items():
        for p, _ in cands:
            if (p.validity is None or p.active(now)) and p.applies(s) and s.purpose_closure.isdisjoint(p.purposes):
                denied.append((col, p.name))
                break
    denied_names = {c for c, _ in denied}

    masks = []
    kanon: dict[str, list] = {}
    for col, cands in plan.masks:
        if col in denied_names:
            continue
        m = first_mask(cands, s, now)
        if m is not None:
            masks.append((col, m))
            if m.type == "k_anonymize":
                kanon.setdefault(m.policy, [m.param("k"), []])[1].append(col)

    filters: list[RowFilter] = []
    minimization = None
    first_taken = False
    for p, items in plan.filters:
        if (p.validity is not None and not p.active(now)) or (p.combine == "first" and first_taken):
            continue
        for check, bound in items:
            if check(s):
                first_taken = first_taken or p.combine == "first"
                if isinstance(bound, Minimization):
                    if minimization is None or bound.percent < minimization.percent:
                        minimization = bound
                elif bound.kind == "match":
                    values = tuple(sorted(s.attributes.get(bound.param("attribute"), ())))
                    kind = "match" if values else "false"  # no attribute value: no rows, never all rows
                    filters.append(RowFilter(kind, bound.params + (("values", values),), bound.policy))
                elif bound.kind != "none":
                    filters.append(bound)
                break

    dp = None
    for p, _ in plan.dp:
        if (p.validity is None or p.active(now)) and p.applies(s):
            dp = p.settings
            break
    return TableDecision(
        t.schema, t.name, True, acc.policy, f"allowed by policy {acc.policy}",
        denied_columns=tuple(denied), masks=tuple(masks), row_filters=tuple(filters), minimization=minimization,
        k_anonymity=tuple(KAnonGroup(k, tuple(cols), pol) for pol, (k, cols) in kanon.items()),
        purposes=tuple(purposes), dp=dp,
    )
