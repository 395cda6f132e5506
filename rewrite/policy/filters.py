"""Row filter kinds: match, where, time_window, minimize."""
from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from .conditions import Who
from .durations import parse_duration
from .expressions import check_template
from .model_base import Strict


class Match(Strict):
    """Keep rows whose column value is one of the subject's values for an attribute."""

    column: str = Field(description="The column compared.")
    attribute: str = Field(description="The subject attribute; a subject without it sees no rows.")


class Minimize(Strict):
    """Keep a stable sample of rows chosen by a hash of the table's key column."""

    percent: float = Field(gt=0, le=100, description="Share of rows kept.")


FILTER_KINDS = ("match", "where", "time_window", "minimize")


class FilterFields(Strict):
    """At most one filter kind; none at all means `no filter` (a real decision)."""

    match: Match | None = Field(None, description="Attribute match: state = ANY(user's office_location).")
    where: str | None = Field(None, description="A Postgres boolean expression; may call pgveil.user_name(), pgveil.user_groups(), pgveil.user_attr('KEY'), pgveil.has_purpose('NAME').")
    time_window: str | None = Field(None, description="Rows whose event-time column is within this duration of now, e.g. 365 days.")
    minimize: Minimize | None = Field(None, description="A stable N% sample.")

    @field_validator("where")
    @classmethod
    def _where(cls, v: str | None) -> str | None:
        return None if v is None else check_template(v)

    @field_validator("time_window")
    @classmethod
    def _window(cls, v: str | None) -> str | None:
        if v is not None and parse_duration(v) <= 0:
            raise ValueError("time_window must be positive")
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> "FilterFields":
        given = [k for k in FILTER_KINDS if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one filter kind, not {', '.join(given)} (write several policies to AND them)")
        return self


def has_filter(f: FilterFields) -> bool:
    return any(getattr(f, k) is not None for k in FILTER_KINDS)


class FilterItem(FilterFields):
    """One ordered row-filter item: `when` a condition holds, or `otherwise`."""

    when: Who | None = Field(None, description="The condition of this item; the first item that holds decides.")
    otherwise: FilterFields | None = Field(None, description="The closing item: the filter for everyone else ({} = no filter).")

    @model_validator(mode="after")
    def _shape(self) -> "FilterItem":
        if (self.when is None) == (self.otherwise is None):
            raise ValueError("an item has either `when` or `otherwise`")
        if self.otherwise is not None and has_filter(self):
            raise ValueError("put the filter of an `otherwise` item inside it")
        return self
