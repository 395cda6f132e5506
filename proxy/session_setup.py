"""What pgveil runs on a governed backend session before the client's first statement.

The per-table keys of hash masks and sampling go into a temporary table as
bound parameters (binary bytea), so no key is ever part of any SQL text the
client could read back through activity views, logs or EXPLAIN.
"""
from __future__ import annotations

from rewrite.catalog import Catalog
from rewrite.engine.keys import KEY_INSERT, KEY_TABLE_DDL, KeyProvider, key_rows

from .wire import frontend as fe

_OID, _TEXT, _BYTEA = 26, 25, 17


def key_table_rows(catalog: Catalog | None, keys: KeyProvider) -> list:
    """The rows of pg_temp.pgveil_keys for every user relation of the catalog (KEY_INSERT's parameters)."""
    oids = sorted(rel.oid for rel in (catalog.relations.values() if catalog else ()) if not rel.is_system)
    return key_rows(keys, oids) if oids else []


def key_setup(catalog: Catalog | None, keys: KeyProvider) -> tuple[bytes, int]:
    """The setup messages and the number of ReadyForQuery they produce."""
    rows = key_table_rows(catalog, keys)
    parts = [fe.Query(KEY_TABLE_DDL).encode()]
    if not rows:
        return parts[0], 1
    parts.append(fe.Parse("", KEY_INSERT, (_OID, _TEXT, _BYTEA, _BYTEA)).encode())
    for oid, purpose, ipad, opad in rows:
        parts.append(fe.Bind("", "", (0, 0, 1, 1), (str(oid).encode(), purpose.encode(), ipad, opad), ()).encode())
        parts.append(fe.Execute("", 0).encode())
    parts.append(fe.Sync().encode())
    return b"".join(parts), 2
