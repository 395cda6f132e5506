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

    pgveil injects only before a Bind that opens its sync group (what drivers
    send for a prepared statement: Bind, Execute, Sync), so the injected pair is
    answered first in that group: the group's first CloseComplete and first
    ParseComplete are dropped. While that is pending, every CloseComplete,
    ParseComplete and ReadyForQuery is held so the groups can be followed.
    """

    def __init__(self) -> None:
        self._sent_in_group = 0  # client messages sent in the client's current sync group
        self._drop: set[int] = set()  # groups whose first CloseComplete + ParseComplete are pgveil's
        self._group_rx = 0  # the group the backend is answering
        self._seen: set[bytes] = set()  # reply tags already seen in that group

    @property
    def pending(self) -> bool:
        return bool(self._drop)

    def client_sent(self, tag: bytes) -> None:
        self._sent_in_group = 0 if tag in (b"S", b"Q", b"F") else self._sent_in_group + 1

    def client_sent_many(self, after_last_sync: int, synced: bool) -> None:
        """``client_sent`` for a run of messages: ``after_last_sync`` of them after its last Sync (if any)."""
        self._sent_in_group = after_last_sync if synced else self._sent_in_group + after_last_sync

    @property
    def opens_group(self) -> bool:
        """True when the next client message is the first of its sync group."""
        return self._sent_in_group == 0

    def inject(self, group: int, ready_received: int) -> None:
        """pgveil sends Close(S) + Parse at the start of ``group``; the backend has answered ``ready_received`` groups."""
        if not self._drop:
            self._group_rx, self._seen = ready_received, set()
        self._drop.add(group)

    def filter(self, held: Held, walker) -> tuple[bytes | None, int | None]:
        """The bytes to pass for a held reply (None: drop it), and the ReadyForQuery status if it was one."""
        tag = held.data[:1]
        if tag == b"Z":
            self._drop.discard(self._group_rx)  # an error before the injected pair: no reply came for it
            self._group_rx += 1
            self._seen = set()
            if walker.count_rows:  # what the walker does for a ReadyForQuery it counts itself
                walker.rows_done.append(walker.rows_open)
                walker.rows_open = 0
            return held.data, held.data[5]
        first = tag not in self._seen
        self._seen.add(tag)
        if first and self._group_rx in self._drop:
            if tag == b"1":
                self._drop.discard(self._group_rx)  # the pair is complete: Close is answered before Parse
            return None, None
        return held.data, None
