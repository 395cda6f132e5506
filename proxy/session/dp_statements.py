"""Prepared statements that answer a DP query: refreshed when their answer is older than the tolerance.

A DP statement's answer is literal SQL, fixed when it is parsed. Drivers keep
prepared statements for a long time (asyncpg's statement cache, psycopg after
five runs, pgjdbc's prepareThreshold), so a Bind of a named DP statement whose
answer has outlived the table's latency tolerance (every Bind, at 0 s) gets a
new answer first: pgveil sends ``Close(S, name)`` and ``Parse(name, new SQL)``
right before the client's Bind. Their CloseComplete and ParseComplete are not
the client's, so ``Swallow`` drops exactly those two from the backend stream.

Which ones: within one sync group (the messages up to a Sync, Query or
FunctionCall) the backend answers in order, so the injected Parse's reply is
the k-th ParseComplete of the group, k = the Parse messages sent in that group
before it, itself included (likewise for Close). After an error the backend
skips to Sync: the injected messages then get no reply and the group's
ReadyForQuery ends the wait.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..wire.holding import Held

SWALLOW_TAGS = frozenset({b"1", b"3", b"Z"})


@dataclass
class DPStatement:
    plan: object  # rewrite.dp.DPPlan
    param_types: tuple[int, ...]
    expires: float  # clock() after which a Bind asks for a new answer
    unused: bool = True  # the answer of the Parse has not been bound yet: the first Bind takes it as it is

    def needs_answer(self, now: float) -> bool:
        if self.unused:
            self.unused = False
            return False
        return now >= self.expires


class Swallow:
    """Drops the CloseComplete and ParseComplete that pgveil's own Close + Parse cause.

    pgveil injects only before a Bind with no Parse or Close sent before it in its sync group (what
    drivers send for a prepared statement: Bind, Execute, Sync), so the injected pair gets the group's
    first CloseComplete and first ParseComplete. Which group that is, is counted from the backend's
    side: the session's unanswered Syncs and Queries (``in_flight``) are the ReadyForQuery messages to
    see before it. While a drop is pending, every CloseComplete, ParseComplete and ReadyForQuery is held
    so the groups can be followed.
    """

    def __init__(self) -> None:
        self._pc_in_group = False  # a Parse or Close went out in the client's current sync group
        self._ahead: list[int] = []  # per pending injection: ReadyForQuery messages still to come before its group
        self._seen: set[bytes] = set()  # reply tags seen in the group the backend is answering

    @property
    def pending(self) -> bool:
        return bool(self._ahead)

    def client_sent(self, tag: bytes) -> None:
        if tag in (b"S", b"Q", b"F"):
            self._pc_in_group = False
        elif tag in (b"P", b"C"):
            self._pc_in_group = True

    def client_sent_run(self, synced: bool) -> None:
        """``client_sent`` for a run of messages without Parse or Close; ``synced``: one of them was a Sync."""
        if synced:
            self._pc_in_group = False

    def lane_passed(self, parse_open: bool) -> None:
        """Messages the relay thread's lane passed (no Close there); ``parse_open``: a Parse went out after the last sync."""
        self._pc_in_group = parse_open

    @property
    def opens_group(self) -> bool:
        """No Parse or Close before the next message in its sync group (False when unsure: no injection)."""
        return not self._pc_in_group

    def inject(self, in_flight: int) -> None:
        """pgveil sends Close(S) + Parse now; ``in_flight`` groups sent before are not answered yet."""
        if not self._ahead:
            self._seen = set()
        self._ahead.append(in_flight)
        self._pc_in_group = True  # one injection per group: only the group's first replies are dropped

    def ready_passed(self, count: int) -> None:
        """ReadyForQuery messages that went through without being held (their header came before the drop)."""
        for _ in range(count):
            self._next_group()

    def _next_group(self) -> None:
        # An injection whose group ends here without both replies had them skipped after an error.
        self._ahead = [n - 1 for n in self._ahead if n > 0]
        self._seen = set()

    def filter(self, held: Held, walker) -> tuple[bytes | None, int | None]:
        """The bytes to pass for a held reply (None: drop it), and the ReadyForQuery status if it was one."""
        tag = held.data[:1]
        if tag == b"Z":
            self._next_group()
            if walker.count_rows:  # what the walker does for a ReadyForQuery it counts itself
                walker.rows_done.append(walker.rows_open)
                walker.rows_open = 0
            return held.data, held.data[5]
        first = tag not in self._seen
        self._seen.add(tag)
        if first and self._ahead and self._ahead[0] == 0:
            if tag == b"1":
                self._ahead.pop(0)  # the pair is complete: Close is answered before Parse
            return None, None
        return held.data, None
