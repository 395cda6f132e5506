"""Who a policy item is for: conditions on the subject.

A condition lists users, groups, attribute values and purposes; every part that
is listed must hold (within one part, any listed value is enough). ``any_of``
adds an OR, which is how Ranger items ("these users or these groups or these
roles") are expressed; ``everyone`` is Ranger's ``public`` group.

The three forms an admin writes where a policy says who it is for (``for:``):
``everyone``, ``{everyone_except: <condition>}`` or a bare condition.
"""
from __future__ import annotations

from typing import Literal, Union

from pydantic import Field, model_validator

from .model_base import Strict


class Condition(Strict):
    """A condition on the subject; all listed parts must hold."""

    everyone: bool = Field(False, description="Holds for every subject (Ranger's `public` group).")
    users: list[str] | None = Field(None, description="The subject's user name is one of these.")
    groups: list[str] | None = Field(None, description="The subject is in at least one of these groups.")
    attributes: dict[str, list[str]] | None = Field(
        None, description="For every key, the subject has at least one of the listed values."
    )
    purposes: list[str] | None = Field(
        None, description="The session acts under one of these purposes or a sub-purpose of one (Research is met by Research.Marketing)."
    )
    any_of: list["Condition"] | None = Field(
        None, description="At least one of these conditions holds (an empty list never holds)."
    )

    @model_validator(mode="after")
    def _not_empty(self) -> "Condition":
        parts = (self.users, self.groups, self.attributes, self.purposes, self.any_of)
        if not self.everyone and all(p is None for p in parts):
            raise ValueError("an empty condition is ambiguous: write `everyone: true` or name users, groups, attributes or purposes")
        return self


class EveryoneExcept(Strict):
    """Applies to every subject that does not meet the condition."""

    everyone_except: Condition = Field(description="Subjects meeting this condition are left out.")


Who = Union[Literal["everyone"], EveryoneExcept, Condition]
"""The forms of `for:`: `everyone`, `{everyone_except: ...}` or a condition."""
