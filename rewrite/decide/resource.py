"""Resource matching with Ranger's match types.

A request names a resource of depth 1 (schema), 2 (table) or 3 (column). A
policy resource matches it:
- SELF: same depth and every level matches;
- SELF_AND_ALL_DESCENDANTS: the policy is deeper but its extra levels are `*`
  (so `db=x; table=*; column=*` covers the schema x itself);
- DESCENDANT: the policy is deeper (it covers something inside the request);
  counts only for "any action" requests and table-level decisions, and a deny
  never applies through it;
- ANCESTOR: the policy is shallower. Ranger does not apply it: a policy covers
  its own depth only. (Tags are different: a table's tags apply to its columns.)
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

NONE, SELF, SELF_AND_ALL_DESCENDANTS, DESCENDANT, ANCESTOR = "NONE", "SELF", "SELF_AND_ALL_DESCENDANTS", "DESCENDANT", "ANCESTOR"


def _wildcard(value: str, ignore_case: bool) -> re.Pattern:
    body = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in value)
    return re.compile(f"^{body}$", re.I | re.S if ignore_case else re.S)


class LevelMatcher:
    """Values of one level: exact names, wildcard patterns, optional exclusion."""

    __slots__ = ("exact", "patterns", "exclude", "ignore_case", "match_any")

    def __init__(self, values: Iterable[str], exclude: bool = False, ignore_case: bool = True) -> None:
        values = list(values)
        self.ignore_case = ignore_case
        self.exclude = exclude
        self.match_any = "*" in values and not exclude
        wild = [v for v in values if "*" in v or "?" in v]
        fold = str.lower if ignore_case else str
        self.exact = frozenset(fold(v) for v in values if v not in wild)
        self.patterns = tuple(_wildcard(v, ignore_case) for v in wild)

    def matches(self, value: str | None) -> bool:
        if value is None:
            return False
        hit = self.match_any or (value.lower() if self.ignore_case else value) in self.exact or any(p.match(value) for p in self.patterns)
        return hit != self.exclude

    @property
    def is_literal(self) -> bool:
        """Exact names only (usable as an index key)."""
        return not self.patterns and not self.exclude and not self.match_any


class ResourceMatcher:
    """A policy resource: one LevelMatcher per level, schema first."""

    __slots__ = ("levels",)

    def __init__(self, levels: Sequence[LevelMatcher]) -> None:
        self.levels = tuple(levels)

    def match_type(self, request: Sequence[str | None]) -> str:
        depth, rdepth = len(self.levels), len(request)
        for i in range(min(depth, rdepth)):
            if not self.levels[i].matches(request[i]):
                return NONE
        if depth == rdepth:
            return SELF
        if depth > rdepth:
            if all(lv.match_any for lv in self.levels[rdepth:]):
                return SELF_AND_ALL_DESCENDANTS
            return DESCENDANT
        return ANCESTOR


def best(a: str, b: str) -> str:
    """The stronger of two resource match types (SELF over DESCENDANT over NONE)."""
    rank = {NONE: 0, ANCESTOR: 0, DESCENDANT: 1, SELF_AND_ALL_DESCENDANTS: 2, SELF: 2}
    return a if rank[a] >= rank[b] else b


#: How a tag reaches a request: on the resource itself, inherited from an
#: ancestor (a table's tag on its columns), or on something inside it.
TAG_RANK = {SELF: 0, ANCESTOR: 1, DESCENDANT: 2}


def best_tag(a: str, b: str) -> str:
    """The stronger of two tag match types: own tag over inherited over descendant."""
    return a if TAG_RANK.get(a, 9) <= TAG_RANK.get(b, 9) else b
