"""Pydantic models of the policy part of a pgveil config.

Every model forbids unknown keys so a typo is an error, never a silently
ignored setting. Cross-references (unknown users, purposes, tags; duplicate
policy names) are checked after the fields, and reported with the location of
the offending key so the admin gets ``file:line: policies[3] (name): ...``.
"""
from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError
from typing_extensions import TypeAliasType

from .model_base import Strict
from .policies import Policy
from .references import reference_problems

__all__ = ["Strict", "User", "PolicyConfig", "Project", "TableMeta", "PurposeTree"]


class User(Strict):
    """A person or service that connects through pgveil."""

    password: str | None = Field(None, description="A SCRAM-SHA-256 verifier as printed by `pgveil passwd`.")
    password_env: str | None = Field(
        None,
        description="Name of an env var holding the password (plaintext, or a verifier if it starts with SCRAM-SHA-256$).",
    )
    groups: list[str] = Field(default_factory=list, description="Groups the user belongs to.")
    attributes: dict[str, list[str]] = Field(
        default_factory=dict, description="Attribute key to its set of values, e.g. office_location: [Ohio]."
    )
    purposes: list[str] = Field(default_factory=list, description="Purposes the user may act under.")
    unrestricted: bool = Field(False, description="Bypass gates and data policies (still audited).")

    @model_validator(mode="after")
    def _one_password_source(self) -> "User":
        if self.password is not None and self.password_env is not None:
            raise ValueError("give either password or password_env, not both")
        if self.password is None and self.password_env is None:
            raise ValueError("a user needs password (a SCRAM verifier) or password_env")
        if self.password is not None and not self.password.startswith("SCRAM-SHA-256$"):
            raise ValueError("password must be a SCRAM-SHA-256 verifier (run `pgveil passwd`); put plaintext in an env var")
        return self


PurposeTree = TypeAliasType("PurposeTree", "dict[str, PurposeTree | None]")


class TableMeta(Strict):
    """What pgveil needs to know about a table beyond the catalog."""

    key: str | None = Field(None, description="A stable key column; minimize samples by its hash.")
    event_time: str | None = Field(None, description="The event-time column time_window filters on.")


class Project(Strict):
    """A group of people working on some tables under some purposes."""

    description: str | None = Field(None, description="What the project is for.")
    members: list[str] = Field(default_factory=list, description="Users in the project.")
    tables: list[str] = Field(default_factory=list, description="Tables (schema.table) the project works on.")
    purposes: list[str] = Field(default_factory=list, description="Purposes acting under the project gives.")
    equalization: bool = Field(False, description="Every member sees each table as the least-entitled member would.")
    masked_joins: bool = Field(False, description="Hash masks in the project's tables share one salt, so they join.")


class PolicyConfig(Strict):
    """The policy part of a config: who the users are and what they may see."""

    users: dict[str, User] = Field(default_factory=dict, description="Users by login name.")
    purposes: PurposeTree = Field(default_factory=dict, description="The purpose hierarchy (nested mappings): Research: {Marketing: {}}.")
    tags: dict[str, list[str]] = Field(default_factory=dict, description="Tags on tables (schema.table) and columns (schema.table.column).")
    tables: dict[str, TableMeta] = Field(default_factory=dict, description="Table metadata: key column, event-time column.")
    projects: dict[str, Project] = Field(default_factory=dict, description="Projects: members, tables, purposes, settings.")
    policies: list[Policy] = Field(default_factory=list, description="Access, mask, row-filter, purpose and DP policies, in order.")

    @model_validator(mode="after")
    def _references(self) -> "PolicyConfig":
        problems = [(loc, msg) for level, loc, msg in reference_problems(self) if level == "error"]
        if problems:
            raise PydanticCustomError(
                "pgveil_references",
                "{summary}",
                {"summary": "; ".join(f"{'.'.join(map(str, loc))}: {m}" for loc, m in problems), "problems": problems},
            )
        return self
