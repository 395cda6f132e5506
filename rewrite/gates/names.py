"""Names as PostgreSQL resolves them, read from parse-tree nodes.

The parser has already folded unquoted identifiers to lower case and decoded
``U&"..."`` escapes, so names here are compared exactly (``"PG_STATS"`` is not
``pg_stats``). Setting (GUC) names are the exception: PostgreSQL compares them
case-insensitively, so :func:`setting_key` lower-cases them.
"""
from __future__ import annotations

import re

from pglast import ast

CATALOG = "pg_catalog"
INFORMATION_SCHEMA = "information_schema"

#: Schemas no governed statement may name: the session's temp schema (where the
#: rewrite engine keeps per-session keys and policy views), TOAST, and a
#: pgveil-owned schema an administrator may create.
INTERNAL_SCHEMAS = frozenset({"pg_temp", "pg_toast", "pgveil", "pgveil_internal"})

#: Prefix of pgveil's own objects (pg_temp tables, views, functions).
INTERNAL_PREFIX = "pgveil_"

_SYSTEM_SCHEMA = re.compile(r"pg_(temp|toast|toast_temp)_\d+\Z")


def is_internal_schema(schema: str, extra: frozenset[str] = frozenset()) -> bool:
    """True for pg_temp, pg_toast, pg_temp_N, pg_toast_temp_N, pgveil schemas and ``extra``.

    Any other ``pg_``-prefixed schema except pg_catalog is reserved for the system
    and treated as internal too (fail closed for schemas future releases add).
    """
    if schema in INTERNAL_SCHEMAS or schema in extra or _SYSTEM_SCHEMA.match(schema):
        return True
    return schema.startswith("pg_") and schema != CATALOG


def is_internal_name(name: str) -> bool:
    return name.startswith(INTERNAL_PREFIX)


def strings(nodes) -> tuple[str, ...] | None:
    """The parts of a dotted name (``String`` nodes), or None if one part is not a string."""
    parts = []
    for node in nodes or ():
        if not isinstance(node, ast.String):
            return None
        parts.append(node.sval)
    return tuple(parts)


def split_qualified(parts: tuple[str, ...]) -> tuple[str | None, str] | None:
    """``(schema or None, name)`` of a 1-3 part name (``db.schema.name`` keeps schema.name)."""
    if not parts or len(parts) > 3:
        return None
    if len(parts) == 1:
        return None, parts[0]
    return parts[-2], parts[-1]


def setting_key(name: str) -> str:
    return name.lower()


def shown(name: str) -> str:
    """An identifier as it may appear in a message: bounded, printable."""
    clean = "".join(ch if ch.isprintable() else "?" for ch in name)
    return clean if len(clean) <= 63 else clean[:60] + "..."
