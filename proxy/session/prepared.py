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
    for keyword in _KEYWORDS:  # a plain loop: any() over a generator costs more than the search
        if keyword in lowered:
            break
    else:
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


_UNKNOWN = object()


class ProtocolStatements(dict):
    """Protocol-level statement name -> the context key it was prepared under.

    A dict that also knows the one key all its statements share, if they do
    (``shared_key``, worked out again after any change): while it equals the
    current context key, no Bind can name a stale statement.
    """

    __slots__ = ("_shared",)

    def __init__(self) -> None:
        super().__init__()
        self._shared = _UNKNOWN

    def shared_key(self) -> tuple | None:
        """The context key every statement here was prepared under; None if empty or mixed."""
        shared = self._shared
        if shared is _UNKNOWN:
            keys = set(self.values())
            shared = self._shared = next(iter(keys)) if len(keys) == 1 else None
        return shared

    def __setitem__(self, name, key) -> None:
        self._shared = _UNKNOWN
        super().__setitem__(name, key)

    def __delitem__(self, name) -> None:
        self._shared = _UNKNOWN
        super().__delitem__(name)

    def __ior__(self, other):
        self._shared = _UNKNOWN
        return super().__ior__(other)

    def pop(self, *args):
        self._shared = _UNKNOWN
        return super().pop(*args)

    def popitem(self):
        self._shared = _UNKNOWN
        return super().popitem()

    def clear(self) -> None:
        self._shared = _UNKNOWN
        super().clear()

    def update(self, *args, **kw) -> None:
        self._shared = _UNKNOWN
        super().update(*args, **kw)

    def setdefault(self, name, key=None):
        self._shared = _UNKNOWN
        return super().setdefault(name, key)


class PreparedTracker:
    def __init__(self) -> None:
        self.protocol = ProtocolStatements()
        self.sql: dict[str, tuple] = {}
        # Protocol-level statements' client text and parameter types: a Bind after a policy or purpose
        # change prepares the statement again from them (GovernedRelay), instead of refusing it.
        self.sources: dict[str, tuple[str, tuple[int, ...]]] = {}
        # Protocol-level statements holding a DP answer (session.dp_statements.DPStatement).
        self.dp: dict[str, object] = {}

    def forget(self, name: str) -> None:
        self.protocol.pop(name, None)
        self.sources.pop(name, None)
        self.dp.pop(name, None)

    def stale_in_sql(self, sql: str, key: tuple, ops: list | None = None) -> str | None:
        """The name of a stale statement ``sql`` would EXECUTE, or '?' when a name can't be read.

        ``ops``: ``sql_level_ops(sql)`` when the caller has it already.
        """
        for op, name in sql_level_ops(sql) if ops is None else ops:
            if op == "execute":
                if name is None:
                    return "?"
                if name in self.sql and self.sql[name] != key:
                    return name
        return None

    def after_sql(self, sql: str, key: tuple, ops: list | None = None) -> None:
        """Record what an allowed statement text prepares or deallocates (``ops`` as for stale_in_sql)."""
        for op, name in sql_level_ops(sql) if ops is None else ops:
            if op == "prepare" and name is not None:
                self.sql[name] = key
            elif op == "deallocate" and name is not None:
                self.sql.pop(name, None)
                self.forget(name)  # DEALLOCATE takes protocol-level statements too
            elif op == "deallocate_all":
                self.sql.clear()
                self.protocol.clear()  # DEALLOCATE ALL drops protocol-level statements too
                self.sources.clear()
                self.dp.clear()
