"""Per-statement audit records of one session, sans-io.

A record is opened when a statement is judged (a Query's text, or a Parse) and
closed when the backend's ReadyForQuery for its sync group arrives, with the
rows the backend returned in that group and the elapsed time. Statements of
one sync group (several Parse/Execute before one Sync) share the group's rows:
they go to the group's last statement. Nothing of the SQL text is kept but its
hash, and no parameter or row value is ever seen here.

A prepared statement executed again (a Bind with no Parse of its own: drivers'
statement caches, ``pgbench -M prepared``) is a statement too: the first Bind
after a Parse belongs to the Parse's record, every later Bind of that statement
opens a record of its own, with the decision its Parse got.
"""
from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from pglast import parser as pg_parser

from ..audit import AuditRecord, hash_sql, utc_now_iso


# A plain first word, read as PostgreSQL's lexer reads it: ASCII blanks, then an identifier
# not followed by what would make it part of a longer token (E'..', U&'..', a non-ASCII letter).
_FIRST_WORD = re.compile(r"[ \t\n\r\f]*([A-Za-z_][A-Za-z0-9_$]*+)(?![\x80-\U0010ffff'\"&])").match


def statement_kind(sql: str) -> str:
    """The first keyword of the statement (SELECT, SET, COPY, ...), comments skipped."""
    plain = _FIRST_WORD(sql)
    if plain is not None:  # the usual text: no scan (it builds an object per token of the whole text)
        return plain.group(1).upper()
    try:
        for token in pg_parser.scan(sql):
            if token.name not in ("SQL_COMMENT", "C_COMMENT"):
                return sql[token.start:token.end + 1].upper()
    except Exception:  # unparseable text: the statement itself is refused elsewhere
        pass
    return "UNKNOWN"


def _decision(*, decision: str, sqlstate: str | None = None, tables=(), policies=(), purpose: str | None = None,
              project: str | None = None) -> dict:
    """The fields of a record that say what pgveil decided, and under which purpose or project."""
    return dict(decision=decision, sqlstate=sqlstate, tables=tuple(tables), policies=tuple(policies), purpose=purpose,
                project=project)


@dataclass
class _Open:
    group: int
    started: float
    fields: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SessionInfo:
    user: str
    client_addr: str | None
    database: str
    session_id: str
    unrestricted: bool


class StatementAudit:
    def __init__(self, sink: Callable[[AuditRecord], None], clock: Callable[[], float], info: SessionInfo) -> None:
        self._sink = sink
        self._clock = clock
        self._info = info
        self._open: deque[_Open] = deque()
        self._ready = 0  # ReadyForQuery messages seen
        # statement name -> [kind, SQL hash, decision fields of its Parse, whether its Parse's record awaits a Bind]
        self._prepared: dict[str, list] = {}

    def begin(self, group: int, sql: str, **decision) -> None:
        self._open_record(group, statement_kind(sql), hash_sql(sql), _decision(**decision))

    def _open_record(self, group: int, kind: str, sql_hash: str, decision: dict) -> None:
        info = self._info
        self._open.append(_Open(group, self._clock(), dict(
            ts=utc_now_iso(), user=info.user, client_addr=info.client_addr, database=info.database,
            session_id=info.session_id, unrestricted=info.unrestricted, statement_kind=kind, columns=(),
            sql_hash=sql_hash, **decision)))

    def parsed(self, group: int, name: str, sql: str, **decision) -> None:
        """A Parse: its record opens now; the first Bind of ``name`` after it belongs to it."""
        # what a later Bind's record repeats, kind and hash included (not computed again per execution)
        entry = [statement_kind(sql), hash_sql(sql), _decision(**decision), True]
        self._open_record(group, *entry[:3])
        self._prepared[name] = entry

    def refused_parse(self, group: int, name: str, sql: str, **decision) -> None:
        """A refused Parse: recorded; ``name`` no longer names a statement pgveil let through."""
        self.begin(group, sql, **decision)
        self._prepared.pop(name, None)

    def bound(self, group: int, name: str) -> None:
        """A Bind of ``name``: a record of its own unless it is the first one after the Parse."""
        entry = self._prepared.get(name)
        if entry is None:
            return  # not prepared through pgveil's sight (the backend refuses it)
        if entry[3]:
            entry[3] = False
            return
        self._open_record(group, entry[0], entry[1], entry[2])

    def forget(self, name: str | None = None) -> None:
        """Close of a statement (None: DISCARD ALL / DEALLOCATE ALL)."""
        if name is None:
            self._prepared.clear()
        else:
            self._prepared.pop(name, None)

    def ready(self, rows_per_group: list[int]) -> None:
        """ReadyForQuery messages arrived; ``rows_per_group`` holds each one's DataRow count."""
        now = self._clock()
        for rows in rows_per_group:
            group = self._ready
            self._ready += 1
            closing = []
            while self._open and self._open[0].group <= group:
                closing.append(self._open.popleft())
            for i, rec in enumerate(closing):
                counted = i == len(closing) - 1 and rec.fields["decision"] != "denied"
                self._sink(AuditRecord(rows=rows if counted else None, duration_ms=round((now - rec.started) * 1000, 3),
                                       **rec.fields))

    def close(self) -> None:
        """The session ended: statements still open are recorded without rows."""
        now = self._clock()
        while self._open:
            rec = self._open.popleft()
            self._sink(AuditRecord(rows=None, duration_ms=round((now - rec.started) * 1000, 3), **rec.fields))
