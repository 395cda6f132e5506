"""Mask types and their parameters.

One model holds the type and every possible parameter; a validator checks that
only the parameters of the chosen type are given and that required ones are
there, so ``{type: round, pattern: x}`` is an error naming the stray key.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .expressions import check_template, parse_column_expr
from .model_base import Strict

MaskType = Literal[
    "none", "null", "constant", "hash", "regex", "partial", "redact", "round",
    "format_preserving", "reversible", "k_anonymize", "custom",
]

#: type -> (required params, optional params)
MASK_PARAMS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "none": (frozenset(), frozenset()),
    "null": (frozenset(), frozenset()),
    "constant": (frozenset({"value"}), frozenset()),
    "hash": (frozenset(), frozenset()),
    "regex": (frozenset({"pattern", "replacement"}), frozenset({"flags"})),
    "partial": (frozenset(), frozenset({"show_first", "show_last", "fill"})),
    "redact": (frozenset(), frozenset()),
    "round": (frozenset(), frozenset({"step", "unit"})),
    "format_preserving": (frozenset(), frozenset()),
    "reversible": (frozenset(), frozenset()),
    "k_anonymize": (frozenset({"k"}), frozenset()),
    "custom": (frozenset({"expr"}), frozenset()),
}
PARAM_NAMES = ("value", "pattern", "replacement", "flags", "show_first", "show_last", "fill", "step", "unit", "k", "expr")


class MaskFields(Strict):
    """A mask's type and parameters, all optional (the items form leaves them out)."""

    type: MaskType | None = Field(None, description="none, null, constant, hash, regex, partial, redact, round, format_preserving, reversible, k_anonymize, custom.")
    value: str | int | float | bool | None = Field(None, description="constant: the value shown instead.")
    pattern: str | None = Field(None, description="regex: a POSIX regular expression.")
    replacement: str | None = Field(None, description="regex: the replacement (\\1 refers to a group).")
    flags: str | None = Field(None, description="regex: regexp_replace flags, e.g. g or gi.")
    show_first: int | None = Field(None, ge=0, description="partial: characters kept at the start.")
    show_last: int | None = Field(None, ge=0, description="partial: characters kept at the end.")
    fill: str | None = Field(
        None, description="partial: the fill character (default *), or `class` to replace by character class (upper X, lower x, digit n) as Ranger does."
    )
    step: float | None = Field(None, gt=0, description="round: numbers to a multiple of this step.")
    unit: Literal["hour", "day", "month", "year"] | None = Field(None, description="round: dates and timestamps truncated to this unit.")
    k: int | None = Field(None, ge=2, description="k_anonymize: the least group size shown.")
    expr: str | None = Field(None, description="custom: an expression over {col}, e.g. left({col}, 2) || '***'.")
    label: str | None = Field(
        None, description="The mask type's name where the policy came from (e.g. Ranger's MASK_SHOW_LAST_4); informational."
    )

    @field_validator("fill")
    @classmethod
    def _fill(cls, v: str | None) -> str | None:
        if v is not None and v != "class" and len(v) != 1:
            raise ValueError("fill is one character or `class`")
        return v

    @field_validator("expr")
    @classmethod
    def _expr(cls, v: str | None) -> str | None:
        if v is not None:
            parse_column_expr(v)
            check_template(v.replace("{col}", "pgveil_masked_column"))
        return v

    @model_validator(mode="after")
    def _params_fit_type(self) -> "MaskFields":
        if self.type is None:
            return self
        required, optional = MASK_PARAMS[self.type]
        given = {p for p in PARAM_NAMES if getattr(self, p) is not None}
        stray = given - required - optional
        if stray:
            raise ValueError(f"mask type {self.type} takes no {', '.join(sorted(stray))}")
        missing = required - given
        if missing:
            raise ValueError(f"mask type {self.type} needs {', '.join(sorted(missing))}")
        if self.type == "round" and (self.step is None) == (self.unit is None):
            raise ValueError("round needs either step (numbers) or unit (dates and timestamps)")
        return self

    def params(self) -> tuple[tuple[str, object], ...]:
        """The given parameters as sorted (name, value) pairs."""
        return tuple((p, getattr(self, p)) for p in PARAM_NAMES if getattr(self, p) is not None)

    @classmethod
    def action_fields(cls) -> tuple[str, ...]:
        return ("type",) + PARAM_NAMES + ("label",)


class MaskAction(MaskFields):
    """A mask: its type and that type's parameters."""

    type: MaskType = Field(description="The mask type (see MaskFields).")


def has_mask_fields(m: MaskFields) -> bool:
    """Whether any type or parameter is set on ``m``."""
    return any(getattr(m, f) is not None for f in MaskAction.action_fields())
