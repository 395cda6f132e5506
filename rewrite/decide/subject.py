"""Who asks: a user, groups, attributes and the purposes the session acts under."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Iterable, Mapping


def purpose_closure(purposes: Iterable[str]) -> frozenset[str]:
    """Each purpose and all its ancestors: Research.Marketing gives {Research, Research.Marketing}.

    A rule requiring Research is met when Research is in the closure, which is
    the case for a session under any sub-purpose of Research and no other.
    """
    out: set[str] = set()
    for p in purposes:
        parts = p.split(".")
        out.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return frozenset(out)


@dataclass(frozen=True, eq=False)
class Subject:
    """A request's subject. Immutable; equal subjects have equal fingerprints."""

    user: str
    groups: frozenset[str] = frozenset()
    attributes: Mapping[str, frozenset[str]] = field(default_factory=dict)
    purposes: frozenset[str] = frozenset()
    unrestricted: bool = False
    fingerprint: str = field(init=False)
    purpose_closure: frozenset[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        groups = frozenset(self.groups)
        attrs = MappingProxyType({k: frozenset(v) for k, v in dict(self.attributes).items()})
        purposes = frozenset(self.purposes)
        object.__setattr__(self, "groups", groups)
        object.__setattr__(self, "attributes", attrs)
        object.__setattr__(self, "purposes", purposes)
        object.__setattr__(self, "purpose_closure", purpose_closure(purposes))
        canon = repr((self.user, sorted(groups), sorted((k, sorted(v)) for k, v in attrs.items()), sorted(purposes), self.unrestricted))
        object.__setattr__(self, "fingerprint", hashlib.sha256(canon.encode()).hexdigest()[:32])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Subject) and other.fingerprint == self.fingerprint

    def __hash__(self) -> int:
        return hash(self.fingerprint)
