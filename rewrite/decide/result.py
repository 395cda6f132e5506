"""The decision objects: plain frozen dataclasses, no policy model inside.

The rewrite engine builds SQL from these; it never sees the policy config.
Every part names the policy it comes from, for denials and audit records.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Params = tuple[tuple[str, Any], ...]


@dataclass(frozen=True, slots=True)
class ColumnMask:
    """The mask one column gets: type (see policy-semantics.md), parameters, source policy.

    ``where``: mask only rows where this predicate holds. ``label``: the type's
    name where the policy came from (Ranger's MASK_SHOW_LAST_4, say).
    """

    type: str
    params: Params
    policy: str
    where: str | None = None
    label: str | None = None

    def param(self, name: str, default: Any = None) -> Any:
        return dict(self.params).get(name, default)


@dataclass(frozen=True, slots=True)
class RowFilter:
    """A filter rows must pass: kind match / where / time_window, params, source policy."""

    kind: str
    params: Params
    policy: str

    def param(self, name: str, default: Any = None) -> Any:
        return dict(self.params).get(name, default)


@dataclass(frozen=True, slots=True)
class Minimization:
    """Keep a stable ``percent`` sample chosen by a hash of ``key_column``."""

    percent: float
    key_column: str | None
    policy: str


@dataclass(frozen=True, slots=True)
class KAnonGroup:
    """Quasi-identifier columns anonymized together with group size ``k``."""

    k: int
    columns: tuple[str, ...]
    policy: str


@dataclass(frozen=True, slots=True)
class PurposeRequirement:
    """The session must act under one of ``purposes`` (or a sub-purpose)."""

    purposes: tuple[str, ...]
    policy: str
    satisfied: bool


@dataclass(frozen=True, slots=True)
class DPSettings:
    """Differential-privacy settings for the table."""

    epsilon: float
    latency_tolerance: float
    budget_epsilon: float | None
    budget_period: float | None
    bounds: tuple[tuple[str, float, float], ...]
    policy: str
    delta: float = 1e-6
    public_keys: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (column, values as text)
    max_rows_per_person: int = 1

    def bounds_of(self, column: str) -> tuple[float, float] | None:
        for c, lo, hi in self.bounds:
            if c == column:
                return lo, hi
        return None

    def public_values(self, column: str) -> tuple[str, ...] | None:
        for c, values in self.public_keys:
            if c == column:
                return values
        return None


@dataclass(frozen=True, slots=True)
class TableDecision:
    """What one subject may see of one table.

    ``allowed`` False means the query must fail (42501) with ``reason`` and
    ``policy`` (None when no policy grants access). ``denied_columns`` are
    (column, policy) pairs the subject may not read; ``masks`` (column,
    ColumnMask) pairs in column order; ``row_filters`` are ANDed.
    """

    schema: str
    table: str
    allowed: bool
    policy: str | None
    reason: str
    denied_columns: tuple[tuple[str, str | None], ...] = ()
    masks: tuple[tuple[str, ColumnMask], ...] = ()
    row_filters: tuple[RowFilter, ...] = ()
    minimization: Minimization | None = None
    k_anonymity: tuple[KAnonGroup, ...] = ()
    purposes: tuple[PurposeRequirement, ...] = ()
    dp: DPSettings | None = None
    unrestricted: bool = False

    def mask_for(self, column: str) -> ColumnMask | None:
        for name, mask in self.masks:
            if name == column:
                return mask
        return None
