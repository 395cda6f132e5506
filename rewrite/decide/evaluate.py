"""Ranger's evaluation rules, on one request: a resource, its tags, an action.

Access, one policy: a matching deny item not cancelled by a deny exception
denies; else a matching allow item not cancelled by an allow exception allows;
else deny_all_else denies; else no opinion. For an "any action" request the
policy is asked per action it names: it allows if some action is allowed and
denies only if every action is denied. A deny never applies through a
DESCENDANT match (the policy covers something inside the request).

Access, across policies: the highest priority with any opinion decides, tag and
resource policies pooled; within it deny beats allow; no opinion means deny.

Masks and row filters: policies in data order (override, tag before resource,
file order); within a policy the first item whose condition holds decides.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from .compiled import CompiledAccess, CompiledFilter, CompiledPolicy, Item
from .resource import ANCESTOR, DESCENDANT, NONE, TAG_RANK, best, best_tag
from .result import ColumnMask
from .subject import Subject

ALLOW, DENY = "allow", "deny"
Candidate = tuple[Any, str]  # (compiled policy, match type)


@dataclass(frozen=True, slots=True)
class AccessResult:
    """Allowed or not, the deciding policy (None: no policy had an opinion), and how it matched."""

    allowed: bool
    policy: str | None
    match_type: str = NONE

    @property
    def decided(self) -> bool:
        return self.policy is not None


def _hit(items: tuple[Item, ...], s: Subject, action: str) -> bool:
    for check, actions in items:
        if (actions is None or action in actions) and check(s):
            return True
    return False


def _one_action(p: CompiledAccess, s: Subject, action: str) -> str | None:
    if p.deny and _hit(p.deny, s, action) and not _hit(p.deny_exceptions, s, action):
        return DENY
    if p.allow and _hit(p.allow, s, action) and not _hit(p.allow_exceptions, s, action):
        return ALLOW
    if p.deny_all_else:
        return DENY
    return None


def policy_opinion(p: CompiledAccess, s: Subject, action: str | None, match_type: str) -> str | None:
    """ALLOW, DENY or None for one policy; ``action`` None means any action."""
    if action is not None:
        op = _one_action(p, s, action)
    else:
        ops = [_one_action(p, s, a) for a in p.universe]
        op = ALLOW if ALLOW in ops else DENY if ops and all(o == DENY for o in ops) else None
    if op == DENY and match_type == DESCENDANT:
        return None
    return op


def access_over(cands: Iterable[Candidate], s: Subject, action: str | None, now: float) -> AccessResult:
    """Pool the opinions of the candidate access policies."""
    top = -1
    opinions: list[tuple[str, CompiledAccess, str]] = []
    for p, mt in cands:
        if p.priority < top or (p.validity is not None and not p.active(now)):
            continue
        op = policy_opinion(p, s, action, mt)
        if op is None:
            continue
        if p.priority > top:
            top, opinions = p.priority, []
        opinions.append((op, p, mt))
    if not opinions:
        return AccessResult(False, None)
    denies = [(p, mt) for op, p, mt in opinions if op == DENY]
    if denies:
        p, mt = min(denies, key=lambda x: (x[0].is_tag, x[0].order))  # a resource deny names itself first
        return AccessResult(False, p.name, mt)
    p, mt = min(((p, mt) for _, p, mt in opinions), key=lambda x: (not x[0].is_tag, TAG_RANK.get(x[1], 0), x[0].order))  # tag allow first
    return AccessResult(True, p.name, mt)


def first_mask(cands: Iterable[Candidate], s: Subject, now: float) -> ColumnMask | None:
    """The first policy (in data order) with a matching item decides."""
    for p, _ in cands:
        if (p.validity is not None and not p.active(now)):
            continue
        for check, mask in p.items:
            if check(s):
                return mask
    return None


def filters_over(cands: Iterable[Candidate], s: Subject, now: float) -> list[tuple[CompiledFilter, Any]]:
    """Each `and` policy contributes its first matching item; of `first` policies only the first counts."""
    out = []
    first_taken = False
    for p, _ in cands:
        if (p.validity is not None and not p.active(now)) or (p.combine == "first" and first_taken):
            continue
        for check, spec in p.items:
            if check(s):
                out.append((p, spec))
                first_taken = first_taken or p.combine == "first"
                break
    return out


def candidates(policies: Sequence[CompiledPolicy], resource: Sequence[str | None], tags: Sequence[tuple[str, str]]) -> list[Candidate]:
    """Policies that match the resource or one of its tags, with the match type, in evaluation order.

    ``tags`` are (tag, SELF | ANCESTOR | DESCENDANT): a tag on the resource, on an
    ancestor (applies as if on the resource), or on something inside it. Order
    (for masks and filters): priority, tag before resource policies, tag
    policies reached through the resource's own tags before inherited ones,
    then file order.
    """
    out = []
    for p in policies:
        mt = NONE
        if p.tags is not None:
            for tag, tmt in tags:
                if p.tags.matches(tag):
                    mt = tmt if mt == NONE else best_tag(mt, tmt)
        else:
            for r in p.resources:
                mt = best(mt, r.match_type(resource))
            if mt == ANCESTOR:  # a resource policy covers its own depth only
                mt = NONE
        if mt != NONE:
            out.append((p, mt))
    out.sort(key=lambda c: (-c[0].priority, 0 if c[0].is_tag else 1, TAG_RANK.get(c[1], 0) if c[0].is_tag else 0, c[0].order))
    return out


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def evaluate_access(policy_set: Any, s: Subject, resource: Sequence[str | None], tags: Sequence[tuple[str, str]] = (),
                    action: str | None = "select", descendants: bool = False, now: float | None = None) -> AccessResult:
    """Access for one request. ``tags``: (tag, SELF|DESCENDANT); ``descendants``: count matches inside the resource too."""
    cands = candidates(policy_set.access, resource, tags)
    if action is not None and not descendants:
        cands = [(p, mt) for p, mt in cands if mt != DESCENDANT]
    return access_over(cands, s, action, _now(now))


def evaluate_mask(policy_set: Any, s: Subject, resource: Sequence[str | None], tags: Sequence[tuple[str, str]] = (),
                  now: float | None = None) -> ColumnMask | None:
    """The mask for one column (tags: the column's and its table's, as SELF)."""
    cands = [(p, mt) for p, mt in candidates(policy_set.masks, resource, tags) if mt != DESCENDANT]
    return first_mask(cands, s, _now(now))


def evaluate_row_filter(policy_set: Any, s: Subject, resource: Sequence[str | None], tags: Sequence[tuple[str, str]] = (),
                        now: float | None = None) -> list[tuple[str, Any]]:
    """(policy name, FilterSpec) pairs of the filters that apply to one table request."""
    cands = [(p, mt) for p, mt in candidates(policy_set.filters, resource, tags) if mt != DESCENDANT]
    return [(p.name, spec) for p, spec in filters_over(cands, s, _now(now))]
