"""Turn validated policy models into CompiledPolicy objects."""
from __future__ import annotations

from typing import Any, Iterable

from rewrite.policy.durations import parse_duration
from rewrite.policy.filters import FILTER_KINDS
from rewrite.policy.policies import Grant, policy_kind
from rewrite.policy.targets import split_column, split_table

from .compiled import (
    CompiledAccess, CompiledDP, CompiledFilter, CompiledMask, CompiledPolicy, CompiledPurpose, FilterSpec, Item,
)
from .conditions import always, compile_who
from .resource import LevelMatcher, ResourceMatcher
from .result import ColumnMask, DPSettings


def _level(values: list[str]) -> LevelMatcher:
    return LevelMatcher(values)


def _resources(body: Any) -> tuple[ResourceMatcher, ...]:
    kind = body.target_kind()
    if kind == "tables":
        return tuple(ResourceMatcher([_level([s]), _level([t])]) for s, t in map(split_table, body.table_names()))
    if kind == "columns":
        return tuple(ResourceMatcher([_level([s]), _level([t]), _level([c])]) for s, t, c in map(split_column, body.column_names()))
    if kind == "resource":
        rs = body.resource if isinstance(body.resource, list) else [body.resource]
        return tuple(
            ResourceMatcher([LevelMatcher(lv.values, lv.exclude, lv.ignore_case) for lv in (r.schema_, r.table, r.column) if lv is not None])
            for r in rs
        )
    return ()


def _items(value: Any, default_actions: list[str]) -> tuple[Item, ...]:
    if value is None:
        return ()
    grants = value if isinstance(value, list) else [Grant(**{"for": value})]
    out = []
    for g in grants:
        actions = g.actions if g.actions is not None else default_actions
        out.append((compile_who(g.for_), None if "all" in actions else frozenset(actions)))
    return tuple(out)


def _validity(policy: Any) -> tuple[tuple[float, float], ...] | None:
    if not policy.validity:
        return None
    inf = float("inf")
    return tuple((v.start.timestamp() if v.start else -inf, v.end.timestamp() if v.end else inf) for v in policy.validity)


def _mask(action: Any, policy: str, where: str | None) -> ColumnMask:
    return ColumnMask(action.type, action.params(), policy, where, action.label)


def _filter_spec(f: Any) -> FilterSpec:
    for kind in FILTER_KINDS:
        v = getattr(f, kind)
        if v is None:
            continue
        if kind == "match":
            return FilterSpec("match", (("column", v.column), ("attribute", v.attribute)))
        if kind == "minimize":
            return FilterSpec("minimize", (("percent", v.percent),))
        if kind == "time_window":
            return FilterSpec("time_window", (("seconds", parse_duration(v)), ("window", v)))
        return FilterSpec("where", (("expr", v),))
    return FilterSpec("none", ())


def compile_policy(policy: Any, order: int) -> CompiledPolicy | None:
    """One compiled policy, or None for a disabled one."""
    if not policy.enabled:
        return None
    kind = policy_kind(policy)
    body = getattr(policy, kind)
    tags = body.tag_names()
    common = dict(
        name=policy.name, kind=kind, priority=1 if policy.priority == "override" else 0, order=order,
        tags=LevelMatcher(tags) if tags else None, resources=_resources(body), validity=_validity(policy),
    )
    if kind == "access":
        items = {f: _items(getattr(body, f), body.actions) for f in ("allow", "allow_exceptions", "deny", "deny_exceptions")}
        universe: set[str] = set()
        for f in ("allow", "deny", "allow_exceptions", "deny_exceptions"):
            for _, acts in items[f]:
                universe |= {"all"} if acts is None else acts
        if body.deny_all_else:
            universe |= set(body.actions)
        return CompiledAccess(**common, **items, deny_all_else=body.deny_all_else, universe=frozenset(universe))
    if kind == "mask":
        if body.items is None:
            pairs = ((compile_who(body.for_), _mask(body, policy.name, body.where)),)
        else:
            pairs = tuple(
                (compile_who(it.when), _mask(it, policy.name, it.where)) if it.when is not None
                else (always, _mask(it.otherwise, policy.name, it.where))
                for it in body.items
            )
        return CompiledMask(**common, items=pairs)
    if kind == "row_filter":
        if body.items is None:
            specs = ((compile_who(body.for_), _filter_spec(body)),)
        else:
            specs = tuple(
                (compile_who(it.when), _filter_spec(it)) if it.when is not None else (always, _filter_spec(it.otherwise))
                for it in body.items
            )
        return CompiledFilter(**common, items=specs, combine=body.combine)
    if kind == "limit_to_purpose":
        return CompiledPurpose(**common, applies=compile_who(body.for_), purposes=tuple(body.purposes))
    dp = body
    budget = dp.budget
    settings = DPSettings(
        dp.epsilon, parse_duration(dp.latency_tolerance),
        budget.epsilon if budget else None, parse_duration(budget.per) if budget else None,
        tuple((c, lo, hi) for c, (lo, hi) in dp.bounds.items()), policy.name, dp.delta,
        tuple((c, tuple(_key_text(v) for v in values)) for c, values in dp.public_keys.items()),
        dp.max_rows_per_person,
    )
    return CompiledDP(**common, applies=compile_who(dp.for_), settings=settings)


def _key_text(value: Any) -> str:
    """A public key value as PostgreSQL prints it in text (what the DP query's group keys are compared with)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def compile_policies(policies: Iterable[Any]) -> list[CompiledPolicy]:
    out = []
    for i, p in enumerate(policies):
        c = compile_policy(p, i)
        if c is not None:
            out.append(c)
    return out
