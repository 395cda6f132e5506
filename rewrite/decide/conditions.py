"""Conditions compiled to plain functions of the Subject.

Compiling once per policy version keeps the per-decision cost to a few set
operations; a closure call is the cheapest dispatch CPython offers.
"""
from __future__ import annotations

from typing import Any, Callable

from rewrite.policy.conditions import Condition, EveryoneExcept

from .subject import Subject

Check = Callable[[Subject], bool]


def always(_s: Subject) -> bool:
    return True


def never(_s: Subject) -> bool:
    return False


def compile_condition(c: Condition) -> Check:
    """All listed parts must hold; `any_of` needs one of its conditions."""
    checks: list[Check] = []
    if c.users is not None:
        users = frozenset(c.users)
        checks.append(lambda s: s.user in users)
    if c.groups is not None:
        groups = frozenset(c.groups)
        checks.append(lambda s: not groups.isdisjoint(s.groups))
    if c.attributes is not None:
        wanted = tuple((k, frozenset(v)) for k, v in c.attributes.items())
        checks.append(lambda s: all(not vals.isdisjoint(s.attributes.get(k, ())) for k, vals in wanted))
    if c.purposes is not None:
        purposes = frozenset(c.purposes)
        checks.append(lambda s: not purposes.isdisjoint(s.purpose_closure))
    if c.any_of is not None:
        subs = tuple(compile_condition(x) for x in c.any_of)
        checks.append(lambda s: any(f(s) for f in subs))
    if not checks:
        return always if c.everyone else never
    if len(checks) == 1:
        return checks[0]
    first, rest = checks[0], tuple(checks[1:])
    return lambda s: first(s) and all(f(s) for f in rest)


def compile_who(who: Any) -> Check:
    """`everyone`, `{everyone_except: c}` or a condition."""
    if who == "everyone":
        return always
    if isinstance(who, EveryoneExcept):
        inner = compile_condition(who.everyone_except)
        return lambda s: not inner(s)
    if isinstance(who, Condition):
        return compile_condition(who)
    raise TypeError(f"not a condition: {who!r}")
