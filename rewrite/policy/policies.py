"""The five policy kinds and the tagged union that picks one by its key.

A policy entry is ``{name, priority, ..., <kind>: {...}}`` where ``<kind>`` is
exactly one of access, mask, row_filter, limit_to_purpose,
differential_privacy. The kind's body says what it targets and for whom.
"""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from .conditions import Who
from .durations import parse_duration
from .filters import FilterFields, FilterItem, has_filter
from .masks import MaskAction, MaskFields, has_mask_fields
from .model_base import Strict
from .targets import Target


class Grant(Strict):
    """An access item: who, and for which actions."""

    for_: Who = Field(alias="for", description="Who this item is for.")
    actions: list[str] | None = Field(None, description="Actions this item speaks for; the policy's actions when left out. `all` is every action.")


Items = Union[Who, list[Grant]]


class Access(Target):
    """May the subject read the table (or column) at all? Ranger's allow/deny model."""

    allowed_kinds: ClassVar[tuple[str, ...]] = ("tables", "columns", "tags", "resource")

    actions: list[str] = Field(["select"], description="Actions the items speak for (pgveil enforces select; others are kept for imported policies).")
    allow: Items | None = Field(None, description="Who is allowed.")
    allow_exceptions: Items | None = Field(None, description="Carve-outs from allow: these are not allowed by this policy.")
    deny: Items | None = Field(None, description="Who is denied.")
    deny_exceptions: Items | None = Field(None, description="Carve-outs from deny: these are not denied by this policy.")
    deny_all_else: bool = Field(False, description="Deny every subject this policy does not allow (Ranger's isDenyAllElse).")

    @model_validator(mode="after")
    def _has_items(self) -> "Access":
        if self.allow is None and self.deny is None and not self.deny_all_else:
            raise ValueError("an access policy needs allow, deny or deny_all_else")
        return self


class MaskItem(MaskFields):
    """One ordered mask item: `when` a condition holds, or `otherwise`."""

    when: Who | None = Field(None, description="The condition of this item; the first item that holds decides.")
    otherwise: MaskAction | None = Field(None, description="The closing item: the mask for everyone no earlier item matched.")
    where: str | None = Field(None, description="Mask only rows where this predicate on other columns holds.")

    @model_validator(mode="after")
    def _shape(self) -> "MaskItem":
        if (self.when is None) == (self.otherwise is None):
            raise ValueError("an item has either `when` (with a type) or `otherwise`")
        if self.when is not None and self.type is None:
            raise ValueError("a `when` item needs a mask type")
        if self.otherwise is not None and has_mask_fields(self):
            raise ValueError("put the mask of an `otherwise` item inside it: `otherwise: {type: ...}`")
        return self


class Mask(Target, MaskFields):
    """Which mask a column gets, for whom."""

    allowed_kinds: ClassVar[tuple[str, ...]] = ("columns", "tags", "resource")

    for_: Who | None = Field(None, alias="for", description="Who the mask applies to (flat form).")
    where: str | None = Field(None, description="Mask only rows where this predicate on other columns holds.")
    items: list[MaskItem] | None = Field(None, description="Ordered items; the first whose condition holds decides.")
    fallthrough: bool = Field(False, description="Without `otherwise`, subjects matching no item get no decision from this policy (Ranger's rule).")

    @model_validator(mode="after")
    def _form(self) -> "Mask":
        return _check_form(self, self.type is not None or has_mask_fields(self), "a mask type")


class RowFilter(Target, FilterFields):
    """Which rows the subject sees."""

    allowed_kinds: ClassVar[tuple[str, ...]] = ("tables", "tags", "resource")

    for_: Who | None = Field(None, alias="for", description="Who the filter applies to (flat form).")
    items: list[FilterItem] | None = Field(None, description="Ordered items; the first whose condition holds decides.")
    fallthrough: bool = Field(False, description="Without `otherwise`, subjects matching no item get no filter from this policy (Ranger's rule).")
    combine: Literal["and", "first"] = Field(
        "and", description="and: this policy's filter is ANDed with every other's (pgveil's rule); first: among `first` policies only the first with a matching item counts (Ranger's rule, set by the importer)."
    )

    @model_validator(mode="after")
    def _form(self) -> "RowFilter":
        return _check_form(self, has_filter(self), "a filter (match, where, time_window or minimize)")


def _check_form(body: Any, flat_given: bool, what: str) -> Any:
    if body.items is None:
        if body.for_ is None or not flat_given:
            raise ValueError(f"give {what} and `for`, or ordered `items`")
        return body
    if flat_given or body.for_ is not None:
        raise ValueError("with `items`, put conditions and settings inside the items")
    if not body.items:
        raise ValueError("`items` is empty")
    for item in body.items[:-1]:
        if item.otherwise is not None:
            raise ValueError("`otherwise` must be the last item")
    if body.items[-1].otherwise is None and not body.fallthrough:
        raise ValueError(
            "ordered items must end with `- otherwise:` (a subject matching no item would otherwise get no "
            "decision from this policy); add `otherwise: {type: none}` or set fallthrough: true to say so"
        )
    return body


class LimitToPurpose(Target):
    """The covered tables can only be read under one of these purposes."""

    allowed_kinds: ClassVar[tuple[str, ...]] = ("tables", "tags", "resource")

    purposes: list[str] = Field(min_length=1, description="Purposes (or their sub-purposes) a session must act under.")
    for_: Who = Field(alias="for", description="Who the limit applies to.")


class Budget(Strict):
    """A privacy budget per subject and table."""

    epsilon: float = Field(gt=0, description="Total epsilon a subject may spend per period.")
    per: str = Field(description="The period, e.g. `1 day`.")

    @field_validator("per")
    @classmethod
    def _per(cls, v: str) -> str:
        if parse_duration(v) <= 0:
            raise ValueError("the budget period must be positive")
        return v


class DifferentialPrivacy(Target):
    """Only noisy aggregates over the table, within a budget."""

    allowed_kinds: ClassVar[tuple[str, ...]] = ("tables",)

    epsilon: float = Field(gt=0, description="Epsilon spent per answer.")
    latency_tolerance: str = Field("0s", description="How long a noisy answer is reused; 0s = no caching.")
    budget: Budget | None = Field(None, description="Per-subject budget; unlimited when left out.")
    bounds: dict[str, tuple[float, float]] = Field(default_factory=dict, description="Column value bounds [low, high] used to calibrate noise.")
    delta: float = Field(1e-6, gt=0, lt=0.01, description="Probability bound of the group-key release (threshold); "
                         "only GROUP BY answers whose keys are not public spend it.")
    public_keys: dict[str, list[str | int | float | bool]] = Field(
        default_factory=dict, description="GROUP BY columns whose values are public, with those values: answers list "
        "exactly these groups (noisy zeros included) and need no threshold.")
    max_rows_per_person: int = Field(1, ge=1, le=1000, description="Rows one person (the table's `key` in `tables:`) "
                                     "may contribute to an answer; more are left out. Without a key every row is a person.")
    for_: Who = Field(alias="for", description="Who the DP rule applies to.")

    @field_validator("latency_tolerance")
    @classmethod
    def _latency(cls, v: str) -> str:
        parse_duration(v)
        return v

    @field_validator("bounds")
    @classmethod
    def _bounds(cls, v: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for col, (lo, hi) in v.items():
            if lo > hi:
                raise ValueError(f"bounds of {col}: low {lo} is above high {hi}")
        return v


class Validity(Strict):
    """A time window in which a policy is in force (Ranger's validity schedule)."""

    start: datetime | None = Field(None, description="In force from (inclusive).")
    end: datetime | None = Field(None, description="In force until (exclusive).")


class PolicyBase(Strict):
    """Fields every policy has."""

    name: str = Field(min_length=1, description="A unique name; shown in denials and audit records.")
    description: str | None = Field(None, description="Why the policy exists.")
    priority: Literal["normal", "override"] = Field("normal", description="override policies are evaluated before normal ones.")
    enabled: bool = Field(True, description="A disabled policy is ignored.")
    validity: list[Validity] | None = Field(None, description="In force only within one of these windows.")


class AccessPolicy(PolicyBase):
    access: Access = Field(description="An access policy.")


class MaskPolicy(PolicyBase):
    mask: Mask = Field(description="A column mask policy.")


class RowFilterPolicy(PolicyBase):
    row_filter: RowFilter = Field(description="A row filter policy.")


class LimitToPurposePolicy(PolicyBase):
    limit_to_purpose: LimitToPurpose = Field(description="A purpose limitation.")


class DifferentialPrivacyPolicy(PolicyBase):
    differential_privacy: DifferentialPrivacy = Field(description="A differential privacy policy.")


KINDS = ("access", "mask", "row_filter", "limit_to_purpose", "differential_privacy")


def _policy_kind(value: Any) -> str | None:
    keys = value.keys() if isinstance(value, dict) else [k for k in KINDS if getattr(value, k, None) is not None]
    present = [k for k in KINDS if k in keys]
    return present[0] if len(present) == 1 else None


Policy = Annotated[
    Union[
        Annotated[AccessPolicy, Tag("access")],
        Annotated[MaskPolicy, Tag("mask")],
        Annotated[RowFilterPolicy, Tag("row_filter")],
        Annotated[LimitToPurposePolicy, Tag("limit_to_purpose")],
        Annotated[DifferentialPrivacyPolicy, Tag("differential_privacy")],
    ],
    Discriminator(
        _policy_kind,
        custom_error_type="policy_kind",
        custom_error_message="a policy needs exactly one of: access, mask, row_filter, limit_to_purpose, differential_privacy",
    ),
]


def policy_kind(policy: PolicyBase) -> str:
    """Which of the five kinds ``policy`` is."""
    return next(k for k in KINDS if hasattr(policy, k))


def policy_body(policy: PolicyBase) -> Any:
    return getattr(policy, policy_kind(policy))
