"""Pydantic models of the policy part of a pgveil config.

Every model forbids unknown keys so a typo is an error, never a silently
ignored setting.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    """Base for config models: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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


class PolicyConfig(Strict):
    """The policy part of a config: who the users are and what they may see."""

    users: dict[str, User] = Field(default_factory=dict, description="Users by login name.")
    purposes: dict[str, Any] = Field(default_factory=dict, description="The purpose hierarchy (nested mappings).")
    tags: dict[str, list[str]] = Field(default_factory=dict, description="Tags on tables (schema.table) and columns (schema.table.column).")
    tables: dict[str, dict[str, Any]] = Field(default_factory=dict, description="Table metadata: key column, event-time column.")
    projects: dict[str, Any] = Field(default_factory=dict, description="Projects: members, tables, purposes, settings.")
    policies: list[dict[str, Any]] = Field(default_factory=list, description="Access, mask, row-filter, purpose and DP policies.")
