"""Policies compiled for evaluation: matchers, condition functions, prebuilt results.

Everything that does not depend on the subject is computed here once per
policy version, so a decision only calls condition functions and walks lists.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .conditions import Check
from .resource import LevelMatcher, ResourceMatcher

ActionSet = frozenset[str] | None  # None: every action ("all")
Item = tuple[Check, ActionSet]


@dataclass(eq=False, slots=True)
class CompiledPolicy:
    """Fields common to every kind."""

    name: str
    kind: str
    priority: int  # 1 override, 0 normal
    order: int
    tags: LevelMatcher | None  # a global (tag) policy
    resources: tuple[ResourceMatcher, ...]  # a local policy (any of these)
    validity: tuple[tuple[float, float], ...] | None = None

    @property
    def is_tag(self) -> bool:
        return self.tags is not None

    def active(self, now: float) -> bool:
        return self.validity is None or any(s <= now < e for s, e in self.validity)

    def data_order(self) -> tuple:
        """Masks, filters and the rest: override first, tag before resource, then file order."""
        return (-self.priority, 0 if self.is_tag else 1, self.order)


@dataclass(eq=False, slots=True)
class CompiledAccess(CompiledPolicy):
    allow: tuple[Item, ...] = ()
    allow_exceptions: tuple[Item, ...] = ()
    deny: tuple[Item, ...] = ()
    deny_exceptions: tuple[Item, ...] = ()
    deny_all_else: bool = False
    universe: frozenset[str] = frozenset()  # actions named by any item ("all" for every-action items)


@dataclass(eq=False, slots=True)
class CompiledMask(CompiledPolicy):
    items: tuple[tuple[Check, Any], ...] = ()  # (condition, ColumnMask)


@dataclass(eq=False, slots=True)
class FilterSpec:
    """A filter before it is bound to a table (time_window and minimize need table metadata)."""

    kind: str  # match, where, time_window, minimize, none
    params: tuple[tuple[str, Any], ...]


@dataclass(eq=False, slots=True)
class CompiledFilter(CompiledPolicy):
    items: tuple[tuple[Check, FilterSpec], ...] = ()
    combine: str = "and"  # "and": every policy's filter holds; "first": Ranger's first policy decides


@dataclass(eq=False, slots=True)
class CompiledPurpose(CompiledPolicy):
    applies: Check = field(default=lambda s: False)
    purposes: tuple[str, ...] = ()


@dataclass(eq=False, slots=True)
class CompiledDP(CompiledPolicy):
    applies: Check = field(default=lambda s: False)
    settings: Any = None  # DPSettings


Factory = Callable[..., CompiledPolicy]
