"""The relay of a governed session: statements judged, refusals placed in order.

Client side: every Query, Parse and FunctionCall goes through the Governor;
allowed statements go on (rewritten where policies apply). A refused statement
is replaced by a stand-in the backend rejects (an unknown keyword, unique per
refusal), so the backend's error lands exactly where the refused statement's
answer belongs, pipelining and transaction state included (threat 11).
Backend side: while a refusal is pending, ErrorResponses are held whole and the
stand-in's error is swapped for pgveil's own message; everything else passes.
"""
from __future__ import annotations

import secrets
import time

from rewrite import shapes

from ..wire import backend as be
from ..wire import frontend as fe
from ..wire._fields import frame
from ..wire.holding import Held, HoldingWalker
from .governor import AskDP, Forward, Governor, Refuse
from .dp_statements import SWALLOW_TAGS, DPStatement, Swallow
from .prepared import PreparedTracker, sql_level_ops

HOLD_ERRORS = frozenset({b"E"})
_TOKEN_PREFIX = "pgveil_refusal_"
# Parse messages whose decoding is kept per session (pgbench -M extended, drivers that re-Parse the
# unnamed statement): how many, and up to which body size.
_PARSE_CACHE_SIZE = 256
_PARSE_CACHE_BODY = 8192
#: Shapes of Query texts kept for the relay thread's lane (session/lane.py): how many.
RECENT_SHAPES = 32


class NeedsDP(Exception):
    """Raised by client_message: this statement waits for a DP answer (``plan``); feed it with answer_dp."""

    def __init__(self, plan) -> None:
        super().__init__("a differentially private answer is needed")
        self.plan = plan


def _encoded(entry: list, verdict: Forward) -> bytes:
    """The Parse a kept Parse entry sends under ``verdict``, encoded once per verdict object (the governor keeps them)."""
    if entry[2] is not verdict:
        msg = entry[0]
        entry[2], entry[3] = verdict, fe.Parse(msg.name, verdict.sql, msg.param_types).encode()
    return entry[3]


def _stale(name: str) -> Refuse:
    return Refuse("26000", f'prepared statement "{name}" was prepared under a different policy or purpose; '
                           "prepare it again")


class GovernedRelay:
    def __init__(self, governor: Governor, clock=time.monotonic) -> None:
        self.governor = governor
        self.clock = clock
        # token -> (sync group it belongs to, ErrorResponse to show instead)
        self._refusals: dict[str, tuple[int, bytes]] = {}
        self.syncs_sent = 0
        self.ready_received = 0
        self.last_forward: Forward | None = None
        self.audit = None  # a StatementAudit when the audit is on
        self.prepared = PreparedTracker()
        self._dp_answer: tuple[object, Forward | Refuse] | None = None  # (plan, answer) for the statement that raised NeedsDP
        self._dp_plan = None  # the plan of the DP answer _judge returned last
        self.dp_statements: dict[str, DPStatement] = self.prepared.dp  # forgotten with their statements
        self.swallow = Swallow()
        self._parses: dict[bytes, list] = {}  # Parse body -> [message, SQL-level ops, last verdict, its encoding]
        self.in_flight = 0  # the session's unanswered Syncs/Queries, set before each client_message
        # Shape key -> a Query text of that shape forwarded lately, most recent last: what a lane may pass.
        self.recent_shapes: dict[str, str] = {}

    def answer_dp(self, plan, verdict: Forward | Refuse) -> None:
        self._dp_answer = (plan, verdict)

    def drop_answer(self) -> None:
        """After the suspended messages ran: an answer no statement took (judged otherwise after a reload) is void."""
        self._dp_answer = None

    def _take_answer(self, plan) -> Forward | Refuse | None:
        """The answer computed for ``plan``; a leftover for another plan (a reload in between) is dropped."""
        pending, self._dp_answer = self._dp_answer, None
        if pending is None or pending[0] != plan:
            return None
        return pending[1]

    def _judge(self, sql: str, transaction_status: str, single: bool = False, ops: list | None = None) -> Forward | Refuse:
        """The verdict on ``sql``; ``ops``: its ``sql_level_ops``, if known (a stale EXECUTE is refused first)."""
        if ops is None:
            ops = sql_level_ops(sql)
        verdict = (ops and self._stale_sql(sql, ops)) or self.governor.judge(sql, transaction_status=transaction_status,
                                                                             single=single)
        if isinstance(verdict, AskDP):
            if transaction_status == "E":  # the backend would reject the answer: spend no budget on it
                self._dp_plan = None
                return Refuse("25P02", "current transaction is aborted, commands ignored until end of transaction "
                                       "block (no differentially private answer was computed)")
            answer = self._take_answer(verdict.plan)
            if answer is None:
                raise NeedsDP(verdict.plan)
            self._dp_plan = verdict.plan
            return answer
        self._dp_plan = None
        return verdict

    @property
    def pending(self) -> bool:
        return bool(self._refusals) or self.swallow.pending

    def can_leave(self) -> bool:
        """Nothing here waits on the backend's answers or on time: a lane may relay the session for a while.

        No refusal or dropped reply pending, no DP statement (its Binds may need new answers), no
        audit (every statement is recorded here), and a catalog to judge against.
        """
        return (self.audit is None and not self._refusals and not self.swallow.pending and not self.dp_statements
                and self._dp_answer is None and self.governor.holder.current.catalog is not None)

    # -- client to backend ---------------------------------------------------------------

    def client_message(self, tag: bytes, body: bytes, transaction_status: str) -> bytes | None:
        """The bytes to send the backend for one client message; None: the message as received.

        NeedsDP: ask again once answered.
        """
        out = self._client_message(tag, body, transaction_status)
        self.swallow.client_sent(tag)
        return out

    def _client_message(self, tag: bytes, body: bytes, transaction_status: str) -> bytes | None:
        if tag == b"Q":
            sql = fe.query_sql(body)
            ops = sql_level_ops(sql)
            verdict = self._judge(sql, transaction_status, ops=ops)
            if isinstance(verdict, Forward):
                if ops:
                    self.prepared.after_sql(sql, self.governor.context_key(), ops)
                if self.audit is None:  # an audited session never goes to a lane: no key to compute
                    self._remember_shape(sql)
                out = fe.query_message(verdict.sql)
            else:
                out = self._stand_in_query(verdict)
            self._note(sql, verdict)
            self.syncs_sent += 1
            return out
        if tag == b"P":
            return self._parse(body, transaction_status)
        if tag == b"F":
            refusal = Refuse("42501", "the function call protocol is not allowed through pgveil")
            self._note("-- FunctionCall message", refusal)
            self.syncs_sent += 1
            return self._stand_in_query(refusal)
        if tag == b"B":
            statement = fe.bind_statement(body)
            prepared_under = self.prepared.protocol.get(statement)
            if prepared_under is None:  # SQL-level PREPARE shares the namespace: a Bind may name it too
                prepared_under = self.prepared.sql.get(statement)
            if prepared_under is not None and prepared_under != self.governor.context_key():
                source = self.prepared.sources.get(statement)
                if source is not None and transaction_status != "E" and self.swallow.opens_group:
                    return self._reprepared_bind(statement, source, body, transaction_status)
                refusal = _stale(statement or "(unnamed)")
                self._note(f"-- Bind of {statement or '(unnamed)'}", refusal)
                return fe.Parse("", self._register(refusal), ()).encode()  # fails in the Bind's place
            dp = self.dp_statements.get(statement)
            # needs_answer first: whatever else holds, this Bind uses the Parse's answer if it is the first
            if dp is not None and dp.needs_answer(self.clock()) and transaction_status != "E" and self.swallow.opens_group:
                return self._refreshed_bind(statement, dp, body)
            if self.audit is not None:
                self.audit.bound(self.syncs_sent, statement)
        elif tag == b"C":
            close = fe.Close.decode(body)
            if close.kind == "S":
                self.prepared.forget(close.name)
                if self.audit is not None:
                    self.audit.forget(close.name)
        elif tag == b"S":
            self.syncs_sent += 1
        return None

    def _parse(self, body: bytes, transaction_status: str) -> bytes:
        """A Parse: judged every time; its decoding and the encoding of a verdict are kept per message body."""
        entry = self._parses.get(body)
        if entry is None:
            msg = fe.Parse.decode(body)
            entry = [msg, sql_level_ops(msg.query), None, b""]  # message, its SQL-level ops, verdict, encoded for it
            if len(body) <= _PARSE_CACHE_BODY:
                if len(self._parses) >= _PARSE_CACHE_SIZE:
                    self._parses.clear()
                self._parses[body] = entry
        msg, ops = entry[0], entry[1]
        verdict = self._judge(msg.query, transaction_status, single=True, ops=ops)
        self._note(msg.query, verdict, statement=msg.name)
        self.dp_statements.pop(msg.name, None)
        if not isinstance(verdict, Forward):
            return fe.Parse(msg.name, self._register(verdict), msg.param_types).encode()
        if msg.name:  # what a Bind after a policy change prepares again
            self.prepared.sources[msg.name] = (msg.query, msg.param_types)
        key = self.governor.context_key()
        self.prepared.protocol[msg.name] = key
        if ops:
            self.prepared.after_sql(msg.query, key, ops)
        if self._dp_plan is not None and msg.name:
            self.dp_statements[msg.name] = DPStatement(self._dp_plan, msg.param_types, self._dp_expiry(self._dp_plan))
        return _encoded(entry, verdict)

    def _remember_shape(self, sql: str) -> None:
        shape = shapes.fast_shape(sql)
        if shape is None:
            return  # no lane could pass it
        recent = self.recent_shapes
        if recent.pop(shape, None) is None and len(recent) >= RECENT_SHAPES:
            del recent[next(iter(recent))]
        recent[shape] = sql

    def lane_parses(self, limit: int) -> list[tuple[bytes, bytes]]:
        """(Parse body, the Parse message sent for it) that may be sent again without Python, newest first.

        Only where sending it again changes nothing here: its verdict is kept by the governor (a
        Forward, no SQL-level PREPARE/EXECUTE), and its statement is already prepared under the
        current context from the same text.
        """
        governor, prepared = self.governor, self.prepared
        key = governor.context_key()
        out = []
        for body, entry in reversed(self._parses.items()):
            msg, ops = entry[0], entry[1]
            if ops or prepared.protocol.get(msg.name) != key:
                continue
            if msg.name and prepared.sources.get(msg.name) != (msg.query, msg.param_types):
                continue  # the name was prepared from another text: this Parse would change what a re-prepare uses
            verdict = governor.known(msg.query, True)
            if type(verdict) is not Forward:
                continue
            out.append((body, _encoded(entry, verdict)))
            if len(out) >= limit:
                break
        return out

    def binds_current(self, data: bytes, spans: list[int]) -> bool:
        """Whether the Bind messages in ``data`` (whole messages, ``spans``: start, end, start, end...) pass as they are.

        Read-only: the check ``client_message`` makes for a Bind (its statement was not
        prepared under another policy context), so that a chunk of Binds, Describes,
        Executes and Syncs can be forwarded without taking the messages apart. False
        when one is stale or cannot be read, or when a DP statement is prepared (its
        Binds may need a new answer): then ``client_message`` decides.
        """
        if self.dp_statements:
            return False
        protocol, sql_level = self.prepared.protocol, self.prepared.sql
        key = None
        # Every statement prepared under the current context (or none prepared): no name can be stale.
        # SQL-level PREPAREs share the namespace (a Bind may name one) and are checked one by one.
        check = bool(protocol) or bool(sql_level)
        if check:
            key = self.governor.context_key()
            check = bool(sql_level) or protocol.shared_key() != key
        find = data.find
        for i in range(0, len(spans), 2):
            pos, end = spans[i], spans[i + 1]
            # the portal name (usually empty), then the statement name
            portal_end = pos + 5 if end > pos + 5 and data[pos + 5] == 0 else find(b"\x00", pos + 5, end)
            name_end = find(b"\x00", portal_end + 1, end) if portal_end >= 0 else -1
            if name_end < 0:
                return False  # malformed: the full decoder reports it
            if not check:
                continue
            name = data[portal_end + 1:name_end].decode("utf-8", "replace")
            prepared_under = protocol.get(name)
            if prepared_under is None:
                prepared_under = sql_level.get(name)
            if prepared_under is not None:
                if key is None:
                    key = self.governor.context_key()
                if prepared_under != key:
                    return False
        return True

    def _dp_expiry(self, plan) -> float:
        return self.clock() + plan.settings.latency_tolerance

    def _refreshed_bind(self, name: str, dp: DPStatement, body: bytes) -> bytes:
        """The Bind of a DP statement whose answer is too old: a new answer first (NeedsDP), then re-parse it."""
        answer = self._take_answer(dp.plan)
        if answer is None:
            raise NeedsDP(dp.plan)
        if isinstance(answer, Refuse):  # e.g. the budget is spent: the Bind fails, the old answer is not reused
            self._note(f"-- Bind of DP statement {name}", answer)
            return fe.Parse("", self._register(answer), ()).encode()
        self._note(f"-- Bind of DP statement {name}", answer)
        dp.expires = self._dp_expiry(dp.plan)
        self.swallow.inject(self.in_flight)
        return (fe.Close("S", name).encode() + fe.Parse(name, answer.sql, dp.param_types).encode()
                + frame(b"B", body))

    def _reprepared_bind(self, name: str, source: tuple[str, tuple[int, ...]], body: bytes, status: str) -> bytes:
        """A Bind of a statement prepared under another policy or purpose: judged again now, prepared again.

        Like PostgreSQL re-planning a cached statement after DDL, the client keeps its statement; pgveil
        sends Close + Parse of the new rewrite before the Bind (their replies are dropped, see
        dp_statements.Swallow). A refusal under the new policy fails in the Bind's place.
        """
        query, param_types = source
        verdict = self._judge(query, status, single=True)  # NeedsDP for a DP statement: asked, then here again
        self._note(query, verdict, statement=name)
        if self.audit is not None:
            self.audit.bound(self.syncs_sent, name)  # this Bind is the one the new Parse's record covers
        self.dp_statements.pop(name, None)
        if not isinstance(verdict, Forward):
            return fe.Parse("", self._register(verdict), ()).encode()
        self.prepared.protocol[name] = self.governor.context_key()
        if self._dp_plan is not None:
            self.dp_statements[name] = DPStatement(self._dp_plan, param_types, self._dp_expiry(self._dp_plan), unused=False)
        self.swallow.inject(self.in_flight)
        return fe.Close("S", name).encode() + fe.Parse(name, verdict.sql, param_types).encode() + frame(b"B", body)

    def _stale_sql(self, sql: str, ops: list) -> Refuse | None:
        name = self.prepared.stale_in_sql(sql, self.governor.context_key(), ops)
        return None if name is None else _stale(name)

    def _note(self, sql: str, verdict, statement: str | None = None) -> None:
        """Remember the verdict and open its audit record; ``statement``: the name a Parse prepares."""
        self.last_forward = verdict if isinstance(verdict, Forward) else None
        if self.audit is not None:
            if isinstance(verdict, Forward):
                decision, sqlstate = ("rewritten" if verdict.policies else "allowed"), None
                tables, policies = verdict.tables, verdict.policies
            else:
                decision, sqlstate, tables, policies = "denied", verdict.sqlstate, (), ()
            fields = dict(decision=decision, sqlstate=sqlstate, tables=tables, policies=policies,
                          purpose=self.governor.purpose, project=self.governor.project)
            if statement is None:
                self.audit.begin(self.syncs_sent, sql, **fields)
            elif isinstance(verdict, Forward):
                self.audit.parsed(self.syncs_sent, statement, sql, **fields)
            else:
                self.audit.refused_parse(self.syncs_sent, statement, sql, **fields)

    def _register(self, refusal: Refuse) -> str:
        token = _TOKEN_PREFIX + secrets.token_hex(8)
        error = be.error(refusal.sqlstate, refusal.message)
        self._refusals[token] = (self.syncs_sent, error)
        return token

    def _stand_in_query(self, refusal: Refuse) -> bytes:
        return fe.Query(self._register(refusal)).encode()

    # -- backend to client ---------------------------------------------------------------

    def backend_data(self, walker: HoldingWalker, data: bytes) -> tuple[bytes, int, int | None]:
        """Bytes for the client, with stand-in errors replaced; plus ReadyForQuery count and last status."""
        swallowing = self.swallow.pending
        hold = HOLD_ERRORS if self._refusals else frozenset()
        pieces, count, status = walker.split(data, hold | SWALLOW_TAGS if swallowing else hold)
        if swallowing and count:
            self.swallow.ready_passed(count)  # only a ReadyForQuery begun before the hold can pass unheld
        out = []
        for piece in pieces:
            if not isinstance(piece, Held):
                out.append(piece)
            elif piece.data[:1] == b"E":
                out.append(self._resolve(piece.data))
            else:  # only while swallowing: CloseComplete, ParseComplete, ReadyForQuery
                passed, ready = self.swallow.filter(piece, walker)
                if passed is not None:
                    out.append(passed)
                if ready is not None:
                    count, status = count + 1, ready
        if count:
            self.ready_received += count
            # A refusal whose stand-in was skipped (an earlier error in the same
            # pipeline) will never come back: forget it at its ReadyForQuery.
            for token, (group, _err) in list(self._refusals.items()):
                if group < self.ready_received:
                    del self._refusals[token]
        return b"".join(out), count, status

    def _resolve(self, message: bytes) -> bytes:
        error = be.ErrorResponse.decode(message[5:])
        text = error.get(be.MESSAGE) or ""
        if _TOKEN_PREFIX in text:
            for token, (_group, replacement) in list(self._refusals.items()):
                if token in text:
                    del self._refusals[token]
                    return replacement
        return message
