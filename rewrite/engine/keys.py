"""Keyed hashes built from core functions, with the keys kept out of SQL text.

Design (docs/rewrite.md): the proxy creates, per backend session, a temporary
table ``pg_temp.pgveil_keys(table_oid oid, purpose text, ipad bytea, opad
bytea)`` and fills it with bound parameters, so no key ever appears in a
statement's text (pg_stat_activity, EXPLAIN VERBOSE, logs). Policy views read
the padded keys through scalar subqueries on that table. User SQL naming
pg_temp or pgveil_keys is refused by analysis (and by the gates).

HMAC-SHA256(K, m) = sha256((K xor opad) || sha256((K xor ipad) || m)), the
padded keys precomputed here (``padded_keys``) so the SQL needs only sha256().
pgcrypto is not needed.
"""
from __future__ import annotations

import hashlib
from typing import Protocol

from pglast import ast

from . import build as b

KEY_TABLE = ("pg_temp", "pgveil_keys")
KEY_TABLE_DDL = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS pg_temp.pgveil_keys "
    "(table_oid oid NOT NULL, purpose text NOT NULL, ipad bytea NOT NULL, opad bytea NOT NULL, "
    "PRIMARY KEY (table_oid, purpose))"
)
KEY_INSERT = "INSERT INTO pg_temp.pgveil_keys (table_oid, purpose, ipad, opad) VALUES ($1, $2, $3, $4)"

#: mask: hash masks; sample: minimization. Separate keys so a hash mask never reveals the sampling hash.
PURPOSES = ("mask", "sample")


class KeyProvider(Protocol):
    """Where table keys come from (the proxy generates and stores them)."""

    def key_for(self, table_oid: int, purpose: str) -> bytes: ...


class StaticKeys:
    """Keys derived from one master secret by HMAC: tests, and a simple proxy setup."""

    def __init__(self, master: bytes) -> None:
        self._master = master

    def key_for(self, table_oid: int, purpose: str) -> bytes:
        import hmac

        return hmac.new(self._master, f"{purpose}:{table_oid}".encode(), hashlib.sha256).digest()


def padded_keys(key: bytes) -> tuple[bytes, bytes]:
    """(K xor ipad, K xor opad) as HMAC-SHA256 defines them (64-byte blocks)."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return bytes(x ^ 0x36 for x in key), bytes(x ^ 0x5C for x in key)


def key_rows(keys: KeyProvider, table_oids: list[int]) -> list[tuple[int, str, bytes, bytes]]:
    """Rows for KEY_INSERT: every purpose of every governed table."""
    out = []
    for oid in table_oids:
        for purpose in PURPOSES:
            ipad, opad = padded_keys(keys.key_for(oid, purpose))
            out.append((oid, purpose, ipad, opad))
    return out


def _pad(oid: int, purpose: str, which: str) -> ast.SubLink:
    q = b.select([b.target(b.col("k", which))], [b.rangevar(*KEY_TABLE, alias="k")],
                 b.and_(b.op("=", b.col("k", "table_oid"), b.const(oid)), b.op("=", b.col("k", "purpose"), b.const(purpose))))
    return b.scalar_subquery(q)


def hmac_bytes(value: ast.Node, oid: int, purpose: str) -> ast.Node:
    """HMAC-SHA256 (bytea) of ``value::text`` in UTF-8, keyed per table and purpose."""
    message = b.func("convert_to", b.cast(value, "text"), b.const("UTF8"))
    inner = b.func("sha256", b.op("||", _pad(oid, purpose, "ipad"), message))
    return b.func("sha256", b.op("||", _pad(oid, purpose, "opad"), inner))


def hmac_hex(value: ast.Node, oid: int, purpose: str) -> ast.Node:
    return b.func("encode", hmac_bytes(value, oid, purpose), b.const("hex"))
