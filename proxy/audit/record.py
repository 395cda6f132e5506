"""One audit record per statement, and the hash that stands in for its SQL.

The record is frozen so the writer thread can serialize it later without a copy:
nothing the event loop does afterwards can change what gets written.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, fields
from typing import Any, Iterable

DECISIONS = ("allowed", "rewritten", "denied", "error")
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode   # built once, not per call


def utc_now_iso() -> str:
    """Now as ISO-8601 UTC with milliseconds, e.g. ``2025-01-02T03:04:05.678Z``.

    One fixed width and a ``Z`` suffix, so timestamps sort as strings too.
    """
    now = time.time()
    second = int(now)
    if second != _second[0]:  # formatting the date and time once a second, not per statement
        _second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_second[1]}.{int((now - second) * 1000):03d}Z"


_second: list = [None, ""]


def hash_sql(sql: str, key: bytes | None = None) -> str:
    """Hex SHA-256 of the statement text (HMAC-SHA-256 when ``key`` is given).

    The hash lets an investigator match a record to a statement they already hold
    without the audit file holding the statement. A plain hash of a short statement
    with a literal in it can be confirmed by guessing (``... WHERE ssn = '...'``);
    passing a secret key closes that, at the price of needing the key to match.
    """
    data = sql.encode("utf-8", "surrogatepass")
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(key, data, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """What pgveil did with one statement. Field order is the JSON and Parquet order."""

    ts: str                      # ISO-8601 UTC with ms (utc_now_iso() when the statement arrived)
    user: str                    # the pgveil user (after authentication)
    client_addr: str | None      # "ip:port", or None for a Unix socket
    database: str
    purpose: str | None
    project: str | None
    session_id: str
    statement_kind: str          # SELECT, INSERT, SET, COPY, ...
    tables: tuple[str, ...]      # "schema.table"
    columns: tuple[str, ...]     # "schema.table.column"
    policies: tuple[str, ...]    # names of the policies (and gate rules) applied
    decision: str                # one of DECISIONS
    sqlstate: str | None         # for denied / error
    rows: int | None             # rows returned, when known
    duration_ms: float
    sql_hash: str                # hash_sql(statement text); never the text itself
    unrestricted: bool = False   # the user bypasses gates and data policies

    def __post_init__(self) -> None:
        # Accept any iterable (lists from callers) but store tuples: a frozen record
        # holding a list could still be mutated by the caller before it is written.
        for name in ("tables", "columns", "policies"):
            value = getattr(self, name)
            if type(value) is not tuple:
                object.__setattr__(self, name, tuple(value))
        if self.decision not in DECISIONS:
            raise ValueError(f"audit decision must be one of {DECISIONS}, not {self.decision!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (tuples as lists), in field order."""
        return {
            "ts": self.ts, "user": self.user, "client_addr": self.client_addr,
            "database": self.database, "purpose": self.purpose, "project": self.project,
            "session_id": self.session_id, "statement_kind": self.statement_kind,
            "tables": list(self.tables), "columns": list(self.columns),
            "policies": list(self.policies), "decision": self.decision,
            "sqlstate": self.sqlstate, "rows": self.rows, "duration_ms": self.duration_ms,
            "sql_hash": self.sql_hash, "unrestricted": self.unrestricted,
        }

    def to_json(self) -> str:
        """One JSON object on one line (no trailing newline)."""
        return _encode(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AuditRecord":
        """The inverse of :meth:`to_dict`; unknown keys are ignored (newer writers)."""
        names = _FIELD_NAMES
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def from_json(cls, line: str) -> "AuditRecord":
        return cls.from_dict(json.loads(line))

    @classmethod
    def for_statement(cls, sql: str, *, started: float, finished: float, key: bytes | None = None,
                      ts: str | None = None, tables: Iterable[str] = (), columns: Iterable[str] = (),
                      policies: Iterable[str] = (), **rest: Any) -> "AuditRecord":
        """Build a record from the statement text and ``time.perf_counter()`` readings.

        The text is hashed here and goes no further; everything else is passed through.
        """
        return cls(ts=ts or utc_now_iso(), tables=tables, columns=columns, policies=policies,
                   duration_ms=round((finished - started) * 1000.0, 3), sql_hash=hash_sql(sql, key), **rest)


_FIELD_NAMES = frozenset(f.name for f in fields(AuditRecord))
