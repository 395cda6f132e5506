"""Checks that need the database catalog: does each mask fit its column's type?

Takes a plain mapping ``{"schema.table": {"column": "pg_type_name"}}`` (the
proxy's catalog module builds it) and returns ``file``-less messages naming
the policy; an unknown column named by a local mask is an error too, since
the mask would silently protect nothing.
"""
from __future__ import annotations

from typing import Any, Mapping

from .policies import policy_kind
from .targets import split_column

_TEXT = {"text", "varchar", "character varying", "char", "character", "bpchar", "name", "citext"}
_NUMBER = {"smallint", "integer", "bigint", "int2", "int4", "int8", "numeric", "decimal", "real", "double precision", "float4", "float8", "money"}
_TIME = {"date", "timestamp", "timestamptz", "timestamp without time zone", "timestamp with time zone", "time", "timetz"}

#: mask type -> type families it can apply to (None: any type)
FITS: dict[str, set[str] | None] = {
    "none": None, "null": None, "hash": None, "k_anonymize": None, "custom": None, "constant": None,
    "regex": _TEXT, "partial": _TEXT, "redact": _TEXT, "format_preserving": _TEXT | _NUMBER, "reversible": _TEXT,
    "round": _NUMBER | _TIME,
}


def _base(pg_type: str) -> str:
    t = pg_type.lower().strip()
    return t.split("(")[0].strip()


def mask_fits(mask_type: str, pg_type: str, unit: str | None = None) -> bool:
    allowed = FITS.get(mask_type)
    base = _base(pg_type)
    if allowed is None:
        return True
    if mask_type == "round":
        return base in (_TIME if unit else _NUMBER)
    return base in allowed


def check_catalog(config: Any, catalog: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Errors for masks that cannot apply to their columns' types, as `policies[i] (name): ...`."""
    tags_by_column: dict[tuple[str, str, str], set[str]] = {}
    for key, tags in config.tags.items():
        parts = key.split(".")
        if len(parts) == 3:
            tags_by_column.setdefault(tuple(parts), set()).update(tags)
        elif len(parts) == 2:
            for col in (catalog.get(key) or {}):
                tags_by_column.setdefault((parts[0], parts[1], col), set()).update(tags)
    out = []
    for i, policy in enumerate(config.policies):
        if policy_kind(policy) != "mask":
            continue
        body = policy.mask
        where = f"policies[{i}] ({policy.name})"
        columns: list[tuple[str, str, str]] = []
        if body.target_kind() == "columns":
            for name in body.column_names():
                s, t, c = split_column(name)
                if c not in (catalog.get(f"{s}.{t}") or {}):
                    out.append(f"{where}: column {s}.{t}.{c} does not exist")
                else:
                    columns.append((s, t, c))
        elif body.target_kind() == "tags":
            wanted = set(body.tag_names())
            columns = [k for k, tags in tags_by_column.items() if tags & wanted and k[2] in (catalog.get(f"{k[0]}.{k[1]}") or {})]
        actions = [body] if body.items is None else [it.otherwise or it for it in body.items]
        for s, t, c in columns:
            pg_type = catalog[f"{s}.{t}"][c]
            for a in actions:
                if a.type is not None and not mask_fits(a.type, pg_type, a.unit):
                    out.append(f"{where}: mask type {a.type} cannot apply to {s}.{t}.{c} of type {pg_type}")
    return out
