"""What a policy protects: tables, columns, tags, or a Ranger-style resource.

Local targets name tables (``schema.table``, schema ``public`` when omitted) or
columns (``schema.table.column``); ``*`` and ``?`` are wildcards. Global targets
name tags and follow them to every table or column carrying them, now and later.
The structured ``resource`` form is Ranger's (values per level, ``exclude`` to
invert a level); the Ranger importer writes it, admins rarely need it.
"""
from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from .model_base import Strict


class Level(Strict):
    """Values for one level of a resource (schema, table or column)."""

    values: list[str] = Field(description="Names; `*` matches any run of characters, `?` one character.")
    exclude: bool = Field(False, description="Match every name except these (Ranger's isExcludes).")
    ignore_case: bool = Field(True, description="Compare names case-insensitively (Ranger's default).")


class Resource(Strict):
    """A Ranger-style resource: a schema level, optionally a table and a column level.

    A policy applies at its own depth: a schema-only resource covers the schema,
    not its tables (Ranger's rule), unless lower levels are written as `*`.
    """

    schema_: Level = Field(alias="schema", description="Schema names (a Hive database maps to a schema).")
    table: Level | None = Field(None, description="Table names.")
    column: Level | None = Field(None, description="Column names (needs `table`).")

    @model_validator(mode="after")
    def _contiguous(self) -> "Resource":
        if self.column is not None and self.table is None:
            raise ValueError("a resource with a column level needs a table level")
        return self


_KINDS = {
    "table": "tables", "tables": "tables", "column": "columns", "columns": "columns",
    "tag": "tags", "tags": "tags", "resource": "resource",
}


class Target(Strict):
    """Exactly one way of naming what the policy covers."""

    table: str | None = Field(None, description="One table, `schema.table`.")
    tables: list[str] | None = Field(None, description="Tables, `schema.table` each.")
    column: str | None = Field(None, description="One column, `schema.table.column`.")
    columns: list[str] | None = Field(None, description="Columns, `schema.table.column` each.")
    tag: str | None = Field(None, description="A tag: the policy follows it (global policy).")
    tags: list[str] | None = Field(None, description="Tags: the policy follows each of them (global policy).")
    resource: Resource | list[Resource] | None = Field(None, description="A Ranger-style resource with per-level values (or several: Ranger's additionalResources).")

    #: target kinds ("tables", "columns", "tags", "resource") a policy type accepts
    allowed_kinds: ClassVar[tuple[str, ...]] = ("tables", "columns", "tags", "resource")

    @model_validator(mode="after")
    def _exactly_one_target(self) -> "Target":
        given = [k for k in _KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            what = ", ".join(sorted(set(_KINDS)))
            raise ValueError(f"name exactly one target ({what}); got {', '.join(given) or 'none'}")
        kind = _KINDS[given[0]]
        if kind not in self.allowed_kinds:
            raise ValueError(f"`{given[0]}` is not a target this policy type takes (use one of: {', '.join(self.allowed_kinds)})")
        for name in self.table_names() if kind == "tables" else ():
            if not 1 <= name.count(".") + 1 <= 2 or "" in name.split("."):
                raise ValueError(f"table {name!r}: write schema.table or table")
        for name in self.column_names() if kind == "columns" else ():
            if not 2 <= name.count(".") + 1 <= 3 or "" in name.split("."):
                raise ValueError(f"column {name!r}: write schema.table.column or table.column")
        return self

    def target_kind(self) -> str:
        """One of tables, columns, tags, resource."""
        return next(_KINDS[k] for k in _KINDS if getattr(self, k) is not None)

    def table_names(self) -> list[str]:
        return [self.table] if self.table is not None else list(self.tables or [])

    def column_names(self) -> list[str]:
        return [self.column] if self.column is not None else list(self.columns or [])

    def tag_names(self) -> list[str]:
        return [self.tag] if self.tag is not None else list(self.tags or [])


def split_table(name: str) -> tuple[str, str]:
    """`schema.table` or `table` (schema public) into its parts."""
    parts = name.split(".")
    return ("public", parts[0]) if len(parts) == 1 else (parts[0], parts[1])


def split_column(name: str) -> tuple[str, str, str]:
    """`schema.table.column` or `table.column` (schema public) into its parts."""
    parts = name.split(".")
    return ("public", parts[0], parts[1]) if len(parts) == 2 else (parts[0], parts[1], parts[2])
