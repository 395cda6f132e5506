"""Which prepared statements were rewritten under which policy and purpose.

A statement prepared under one policy (or purpose) must not run after that
changed: its SQL was rewritten for the old one. Protocol-level statements
(Parse/Bind/Close) and SQL-level ones (PREPARE/EXECUTE/DEALLOCATE, found with
PostgreSQL's own lexer) are tracked by name; using a stale one is refused and
the client prepares it again.
"""
from __future__ import annotations

from pglast import parser as pg_parser

_NAME_KINDS = frozenset({"NO_KEYWORD", "UNRESERVED_KEYWORD", "COL_NAME_KEYWORD", "TYPE_FUNC_NAME_KEYWORD",
                         "RESERVED_KEYWORD"})


def _name(sql: str, token) -> str | None:
    """The identifier a token names, folded as PostgreSQL does; None when unsure."""
    text = sql[token.start:token.end + 1]
    if token.kind not in _NAME_KINDS:
        return None
    if text.startswith('"') and text.endswith('"') and len(text) >= 2:
        return text[1:-1].replace('""', '"')
    if text.isidentifier() or text.replace("$", "").isidentifier():
        return text.lower()
    return None  # U&"..." and friends: don't guess


_KEYWORDS = ("prepare", "execute", "deallocate", "discard")


def sql_level_ops(sql: str) -> list[tuple[str, str | None]]:
    """(op, name) per PREPARE / EXECUTE / DEALLOCATE statement in ``sql``; op 'deallocate_all' has no name."""
    lowered = sql.lower()
    if not any(k in lowered for k in _KEYWORDS):
        return []  # keywords are never escaped: without these letters there is no such statement
    try:
        tokens = list(pg_parser.scan(sql))
    except Exception:
        return []
    ops: list[tuple[str, str | None]] = []
    start = True
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t.name in ("SQL_COMMENT", "C_COMMENT"):
            i += 1
            continue
        if t.name == "ASCII_59":  # ';'
            start = True
        elif start:
            start = False
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            if t.name in ("PREPARE", "EXECUTE") and nxt is not None:
                ops.append((t.name.lower(), _name(sql, nxt)))
            elif t.name == "DISCARD" and nxt is not None and nxt.name == "ALL":
                ops.append(("deallocate_all", None))  # DISCARD ALL deallocates every prepared statement
            elif t.name == "DEALLOCATE" and nxt is not None:
                if nxt.name == "PREPARE":
                    nxt = tokens[i + 2] if i + 2 < len(tokens) else None
                if nxt is not None and nxt.name == "ALL":
                    ops.append(("deallocate_all", None))
                elif nxt is not None:
                    ops.append(("deallocate", _name(sql, nxt)))
        i += 1
    return ops


class PreparedTracker:
    def __init__(self) -> None:
        self.protocol: dict[str, tuple] = {}
        self.sql: dict[str, tuple] = {}
        # Protocol-level statements' client text and parameter types: a Bind after a policy or purpose
        # change prepares the statement again from them (GovernedRelay), instead of refusing it.
        self.sources: dict[str, tuple[str, tuple[int, ...]]] = {}

    def forget(self, name: str) -> None:
        self.protocol.pop(name, None)
        self.sources.pop(name, None)

    def stale_in_sql(self, sql: str, key: tuple) -> str | None:
        """The name of a stale statement ``sql`` would EXECUTE, or '?' when a name can't be read."""
        for op, name in sql_level_ops(sql):
            if op == "execute":
                if name is None:
                    return "?"
                if name in self.sql and self.sql[name] != key:
                    return name
        return None

    def after_sql(self, sql: str, key: tuple) -> None:
        """Record what an allowed statement text prepares or deallocates."""
        for op, name in sql_level_ops(sql):
            if op == "prepare" and name is not None:
                self.sql[name] = key
            elif op == "deallocate" and name is not None:
                self.sql.pop(name, None)
                self.forget(name)  # DEALLOCATE takes protocol-level statements too
            elif op == "deallocate_all":
                self.sql.clear()
                self.protocol.clear()  # DEALLOCATE ALL drops protocol-level statements too
                self.sources.clear()
