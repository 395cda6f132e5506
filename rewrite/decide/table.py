"""The table a decision is about: its name, its columns in order, and tags."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable


@dataclass(frozen=True, slots=True)
class ColumnInfo:
    """A column and the tags it carries (its own, not the table's)."""

    name: str
    tags: tuple[str, ...] = ()
    type: str | None = None


@dataclass(frozen=True)
class TableInfo:
    """A table: schema, name, columns in catalog order, the table's own tags.

    The hash is computed once: a TableInfo is a cache key on every decision.
    """

    schema: str
    name: str
    columns: tuple[ColumnInfo, ...] = ()
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))
        object.__setattr__(self, "tags", tuple(self.tags))
        object.__setattr__(self, "_hash", hash((self.schema, self.name, self.columns, self.tags)))

    def __hash__(self) -> int:
        return self._hash  # type: ignore[attr-defined]

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @classmethod
    def from_config(cls, config: Any, schema: str, name: str, columns: Iterable[str | tuple[str, str]]) -> "TableInfo":
        """Build from a PolicyConfig's `tags:` section and catalog column names (or (name, type) pairs)."""
        tags = config.tags
        cols = []
        for c in columns:
            cname, ctype = (c, None) if isinstance(c, str) else c
            ctags = tuple(tags.get(f"{schema}.{name}.{cname}", ()))
            if schema == "public":
                ctags += tuple(t for t in tags.get(f"{name}.{cname}", ()) if t not in ctags)
            cols.append(ColumnInfo(cname, ctags, ctype))
        ttags = tuple(tags.get(f"{schema}.{name}", ()))
        return cls(schema, name, tuple(cols), ttags)
