"""The Session: applies events to the state and returns commands.

The hot path is ``READY`` + client or backend data. Client bytes are cut into
whole messages (size-limited) and forwarded as received; backend bytes are
forwarded as received while a ``StreamWalker`` notes each ReadyForQuery, so the
session always knows whether a statement is in flight.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from struct import Struct
from typing import Callable

from ..auth import AuthFailed, ScramExchange, Verifier
from ..policy_state import PolicyHolder
from ..wire import MessageBuffer, ProtocolViolation, backend as be, frontend as fe, startup as st
from ..wire._fields import frame
from ..wire.holding import HoldingWalker
from ..wire.walk import client_syncs, governed_syncs, tag_table
from . import commands as cmd
from . import startup_params
from ..audit import AuditRecord
from .auditing import SessionInfo, StatementAudit
from .governed import GovernedRelay, NeedsDP
from .governor import ContextError, Governor
from . import events as ev
from .states import TRANSITIONS, State

_HEADER = Struct("!cI")
_READY = State.READY
# Client messages the relay must look at itself rather than forward blindly.
_INSPECTED_TABLE = tag_table(stop=b"X")
# ... and for a governed session: every statement and the function-call protocol; Binds and a
# leading Parse are judged in place (Session._governed_bytes).
_GOVERNED_TABLE = tag_table(stop=b"XQFC", note=b"BP")
_PARSE = ord("P")


def _first_sync(data: bytes) -> int:
    """Where the first Sync of a chunk of whole, valid messages starts (its length if none)."""
    pos, size = 0, len(data)
    while pos < size:
        tag, length = _HEADER.unpack_from(data, pos)
        if tag == b"S":
            return pos
        pos += 1 + length
    return size
# ... and for an audited ungoverned session: statements are recorded, and each sync message
# closes an audit group (Session._audited_bytes).
_AUDITED_TABLE = tag_table(stop=b"X", note=b"QPSFBC")
_QUERY, _SYNC, _FUNCTION_CALL, _BIND, _CLOSE = ord("Q"), ord("S"), ord("F"), ord("B"), ord("C")
# Client messages each answered by one ReadyForQuery.
_SYNC_TAGS = frozenset({b"Q", b"S", b"F"})

# Startup parameters that never reach the backend as given: pgveil sets them itself.
_RESERVED_PARAMS = frozenset({"user", "database", "replication"})

# Largest message a client may send before it has authenticated (PostgreSQL's
# PG_MAX_AUTH_TOKEN_LENGTH): the full limit would let every unauthenticated
# connection make the proxy buffer up to max_message_size bytes.
MAX_AUTH_MESSAGE = 65535


def _escape_option(value: str) -> str:
    """Escape a value for libpq's ``options`` (backslash before spaces and backslashes)."""
    return value.replace("\\", "\\\\").replace(" ", "\\ ")


@dataclass(frozen=True)
class SessionSettings:
    database: str  # the backend database; the only name clients may connect to
    verifier_for: Callable[[str], Verifier | None]  # None: unknown user (same failure as a wrong password)
    tls_available: bool = False
    max_message_size: int = 64 * 1024 * 1024
    # The policy in force. None only for a bare wire relay (wire-level tests and
    # benchmarks): then nothing is governed.
    holder: PolicyHolder | None = None
    audit: Callable[[AuditRecord], None] | None = None  # where per-statement records go (None: no audit)
    clock: Callable[[], float] = time.monotonic


class Session:
    """State of one client connection, from startup to close."""

    def __init__(self, settings: SessionSettings, cancel_pid: int, cancel_key: bytes,
                 refusal: tuple[str, str] | None = None, peer: str | None = None) -> None:
        self.peer = peer
        self.settings = settings
        # (sqlstate, message) to answer the startup packet with, e.g. when over the
        # connection limit: like PostgreSQL, SSL/GSS requests and cancels are still
        # handled first, so clients see the real reason.
        self.refusal = refusal
        self.state = State.STARTUP
        self.cancel_pid = cancel_pid
        self.cancel_key = cancel_key
        self.user: str | None = None
        self.database: str | None = None
        self.startup_params: dict[str, str] = {}  # what the backend session starts with
        self.context_choice: dict[str, str] = {}  # pgveil.purpose / pgveil.project asked at startup
        self.tls = False
        self.in_flight = 0  # Query/Sync/FunctionCall messages sent and not yet answered by ReadyForQuery
        self.transaction_status = "I"
        self._client_buf = MessageBuffer(min(settings.max_message_size, MAX_AUTH_MESSAGE))
        self._walker = HoldingWalker()
        self._inspected_table = _INSPECTED_TABLE
        self.governed: GovernedRelay | None = None
        self.audit: StatementAudit | None = None
        self._syncs_sent = 0  # Query/Sync/FunctionCall messages sent (audit groups of ungoverned sessions)
        self._scram: ScramExchange | None = None
        # Client messages waiting for a DP answer (the first one asked for it); None: not suspended.
        self._held: list | None = None

    # -- dispatch -------------------------------------------------------------

    def handle(self, event) -> list:
        """Apply one event; return the commands it calls for."""
        if self.state is State.CLOSED:
            return []
        try:
            if type(event) is ev.ClientDataReceived:
                return self._client_data(event.data)
            if type(event) is ev.BackendDataReceived:
                return self._backend_data(event.data)
            handler = _HANDLERS.get(type(event))
            if handler is None:
                raise TypeError(f"unknown event {event!r}")
            return handler(self, event)
        except ProtocolViolation as exc:
            return self._fatal("08P01", str(exc))
        except AuthFailed as exc:
            return self._fatal(exc.sqlstate, str(exc))

    def _goto(self, state: State) -> None:
        if state not in TRANSITIONS[self.state]:
            raise ProtocolViolation(f"unexpected message in state {self.state.value}")
        self.state = state

    def _fatal(self, sqlstate: str, message: str) -> list:
        self.state = State.CLOSED
        return [cmd.SendToClient(be.error(sqlstate, message, severity="FATAL")), cmd.Close(message)]

    # -- client bytes -----------------------------------------------------------

    def _client_data(self, data: bytes) -> list:
        buf = self._client_buf
        if self.governed is not None and self.state is State.READY and not buf.pending and self._held is None:
            return self._relay_governed_chunk(data)
        buf.feed(data)
        if self.state is State.READY:
            return self._relay_client() if self._held is None else []
        out: list = []
        while self.state not in (State.READY, State.CLOSED, State.CONNECTING, State.TLS_HANDSHAKE):
            step = self._startup_step() if self.state is State.STARTUP else self._auth_step()
            if step is None:
                break
            out += step
        if self.state is State.TLS_HANDSHAKE and len(buf):
            # Bytes sent after SSLRequest but before the handshake could be injected
            # by a man in the middle (CVE-2021-23214): refuse them.
            return out + self._fatal("08P01", "received unencrypted data after SSL request")
        return out

    def _startup_step(self) -> list | None:
        body = self._client_buf.take_startup()
        if body is None:
            return None
        msg = st.decode(body)
        if isinstance(msg, st.SSLRequest):
            if self.tls or not self.settings.tls_available:
                return [cmd.SendToClient(b"N")]
            self._goto(State.TLS_HANDSHAKE)
            return [cmd.SendToClient(b"S"), cmd.StartClientTls()]
        if isinstance(msg, st.GSSENCRequest):
            return [cmd.SendToClient(b"N")]
        if isinstance(msg, st.CancelRequest):
            self.state = State.CLOSED
            return [cmd.ForwardCancel(msg.pid, msg.key), cmd.Close("cancel request")]
        return self._on_startup(msg)

    def _on_startup(self, msg: st.StartupMessage) -> list:
        if self.refusal is not None:
            return self._fatal(*self.refusal)
        params = msg.params
        user = params.get("user")
        if not user:
            return self._fatal("28000", "no PostgreSQL user name specified in startup packet")
        if "replication" in params and params["replication"].lower() not in ("false", "off", "no", "0"):
            return self._fatal("42501", "replication connections are not supported through pgveil")
        self.user = user
        self.database = params.get("database") or user
        try:
            choice = startup_params.choose(
                {k: v for k, v in params.items() if k not in _RESERVED_PARAMS and not k.startswith("_pq_.")})
        except startup_params.StartupRefused as exc:
            return self._fatal(exc.sqlstate, str(exc))
        self.startup_params = choice.backend_params
        self.context_choice = choice.pgveil
        out: list = []
        unknown_options = tuple(k for k in params if k.startswith("_pq_."))
        if msg.minor > 0 or unknown_options:
            out.append(cmd.SendToClient(be.NegotiateProtocolVersion(st.PROTOCOL_3_0, unknown_options).encode()))
        self._scram = ScramExchange(user, self.settings.verifier_for(user))
        self._goto(State.SASL_INITIAL)
        out.append(cmd.SendToClient(be.Authentication.sasl(["SCRAM-SHA-256"]).encode()))
        return out

    def _auth_step(self) -> list | None:
        messages, _ = self._take_one()
        if messages is None:
            return None
        tag, body = messages
        if tag != b"p":
            raise ProtocolViolation(f"expected SASL response, got message type {tag!r}")
        msg = fe.PasswordMessage.decode(body)
        assert self._scram is not None
        if self.state is State.SASL_INITIAL:
            mechanism, payload = msg.sasl_initial()
            server_first = self._scram.client_first(mechanism, payload)
            self._goto(State.SASL_CONTINUE)
            return [cmd.SendToClient(be.Authentication(be.AUTH_SASL_CONTINUE, server_first).encode())]
        server_final = self._scram.client_final(msg.data)
        self._scram = None
        if self.database != self.settings.database:
            return self._fatal("3D000", f'database "{self.database}" does not exist')
        params = dict(self.startup_params)
        governed = self._govern_if_needed()
        if isinstance(governed, list):
            return governed
        self._start_audit(governed)
        for name, value in self.context_choice.items():  # mirrored as placeholder settings for SHOW
            params["options"] = params.get("options", "") + f" -c {name}={_escape_option(value)}"
        self._goto(State.CONNECTING)
        self._client_buf.max_message_size = self.settings.max_message_size
        return [
            cmd.SendToClient(be.Authentication(be.AUTH_SASL_FINAL, server_final).encode() + be.Authentication.ok().encode()),
            cmd.ConnectBackend(params, governed=governed),
        ]

    def _start_audit(self, governed: bool) -> None:
        if self.settings.audit is None:
            return
        info = SessionInfo(self.user, self.peer, self.database, f"{self.cancel_pid:x}", not governed)
        self.audit = StatementAudit(self.settings.audit, self.settings.clock, info)
        self._walker.count_rows = True
        if self.governed is not None:
            self.governed.audit = self.audit
        else:
            self._inspected_table = _AUDITED_TABLE

    def _govern_if_needed(self) -> bool | list:
        """Set up governance for a user the policy restricts; a list is a FATAL to send."""
        holder = self.settings.holder
        if holder is None:
            return False
        user = holder.current.config.users.get(self.user)
        if user is not None and user.unrestricted:
            return False
        governor = Governor(holder, self.user)
        for name, value in self.context_choice.items():
            try:
                governor.choose(name, value)
            except ContextError as exc:
                return self._fatal(exc.sqlstate, str(exc))
        self.governed = GovernedRelay(governor)
        self._inspected_table = _GOVERNED_TABLE
        return True

    def _take_one(self):
        """During auth, exactly one message is expected at a time."""
        messages, _raw = self._client_buf.take_messages() if len(self._client_buf) else ([], b"")
        if not messages:
            return None, None
        if len(messages) > 1:
            raise ProtocolViolation("unexpected extra messages during authentication")
        return messages[0], None

    def _relay_client(self) -> list:
        messages, raw = self._client_buf.take_messages()
        if not messages:
            return []
        if self.governed is not None:
            return self._relay_governed(messages)
        out: list = [cmd.SendToBackend(raw)]
        for tag, body in messages:
            if self.audit is not None and tag != b"X":
                self._audit_message(*self._audit_step(tag, body))
                continue
            if tag in _SYNC_TAGS:
                self._syncs_sent += 1
                self.in_flight += 1
            elif tag == b"X":
                out += self._leave("client terminated")
                break
        return out

    def _relay_governed(self, messages) -> list:
        pieces = []
        out: list = []
        for i, (tag, body) in enumerate(messages):
            if tag == b"X":
                pieces.append(frame(tag, body))
                out = self._leave("client terminated")
                break
            try:
                self.governed.in_flight = self.in_flight
                piece = self.governed.client_message(tag, body, self.transaction_status)
            except NeedsDP as need:
                # Suspend: later messages wait (in order) until the answer is in (DPAnswered).
                self._held = list(messages[i:])
                out = [cmd.AnswerDP(need.plan)]
                break
            if tag in _SYNC_TAGS:
                self.in_flight += 1
            pieces.append(frame(tag, body) if piece is None else piece)
        return [cmd.SendToBackend(b"".join(pieces)), *out] if pieces else out

    def _relay_governed_chunk(self, data: bytes) -> list:
        """``_relay_client`` + ``_relay_governed`` for a chunk that starts on a message boundary, in place.

        The same steps in the same order, without copying the chunk into the buffer: each
        message still goes to ``client_message``, and runs of messages it leaves as they are
        go on as slices of ``data`` instead of being framed again. Only the bytes after the
        last whole message are buffered.
        """
        unpack = _HEADER.unpack_from
        limit = self._client_buf.max_message_size
        size = len(data)
        pos = 0
        spans = []
        while size - pos >= 5:  # validate every header first, as take_messages does
            tag, length = unpack(data, pos)
            if length < 4 or length > limit:
                self._client_buf.feed(data)
                return self._relay_client()  # raises the ProtocolViolation take_messages gives
            end = pos + 1 + length
            if end > size:
                break
            spans.append((tag, pos, end))
            pos = end
        if pos < size:
            self._client_buf.feed(data[pos:] if pos else data)
        governed = self.governed
        pieces: list = []
        out: list = []
        run = 0  # start of the bytes not yet in pieces
        for i, (tag, start, end) in enumerate(spans):
            if tag != b"X":
                try:
                    governed.in_flight = self.in_flight
                    piece = governed.client_message(tag, data[start + 5:end], self.transaction_status)
                except NeedsDP as need:
                    # Suspend: later messages wait (in order) until the answer is in (DPAnswered).
                    if start > run:
                        pieces.append(data[run:start])
                    self._held = [(t, data[s + 5:e]) for t, s, e in spans[i:]]
                    out = [cmd.AnswerDP(need.plan)]
                    break
                if piece is not None:
                    if start > run:
                        pieces.append(data[run:start])
                    pieces.append(piece)
                    run = end
            else:
                pieces.append(data[run:end])
                run = end
                out = self._leave("client terminated")
                break
            if tag in _SYNC_TAGS:
                self.in_flight += 1
        else:
            if pos > run:
                pieces.append(data[run:pos] if run or pos < size else data)
        if not pieces:
            return out
        return [cmd.SendToBackend(pieces[0] if len(pieces) == 1 else b"".join(pieces)), *out]

    def _dp_answered(self, event: ev.DPAnswered) -> list:
        if self.state is not State.READY or self._held is None:
            return []
        held, self._held = self._held, None
        self.governed.answer_dp(event.plan, event.verdict)
        out = self._relay_governed(held)
        self.governed.drop_answer()  # taken by its statement, or void (judged otherwise after a reload)
        if self._held is None and self.state is State.READY and len(self._client_buf):
            out += self._relay_client()
        return out

    def _leave(self, reason: str) -> list:
        """The client is gone: stop any statement it left running, then close."""
        out: list = [cmd.CancelBackendQuery()] if self.state is State.READY and self.in_flight else []
        self.state = State.CLOSED
        if self.audit is not None:
            self.audit.close()
        return out + [cmd.Close(reason)]

    # -- backend bytes ------------------------------------------------------------

    # -- hot path: READY relay without events or commands ---------------------------

    def client_bytes(self, data: bytes) -> bytes | None:
        """Bytes to forward to the backend unchanged, or None to take ``handle``.

        Applies when the session is READY, nothing is buffered and ``data`` holds
        only whole messages that need no inspection: then only the headers are
        read, counting the messages that the backend answers with ReadyForQuery.
        A governed session has its own loop (``_governed_bytes``).
        """
        if self.state is not _READY or self._client_buf.pending or self._held is not None:
            return None
        if self.governed is not None:
            return self._governed_bytes(data)
        if self.audit is not None:
            return self._audited_bytes(data)
        syncs = client_syncs(data, self._inspected_table, self.settings.max_message_size)
        if syncs < 0:
            return None
        self.in_flight += syncs
        return data

    def _governed_bytes(self, data: bytes) -> bytes | None:
        """``client_bytes`` of a governed session, for the chunks drivers send per statement.

        A chunk that is one Query, or a Parse followed by Binds, Describes, Executes and
        Syncs (the extended protocol's unnamed statement, re-parsed each time): the Query or
        the Parse goes to ``GovernedRelay.client_message`` exactly as on the general path,
        and the rest is forwarded as it came if ``GovernedRelay.binds_current`` says the
        Binds' statements were prepared under the current policy context. Everything else
        (a stale Bind, a second Parse, Close, FunctionCall, Terminate, a DP answer to wait
        for) takes the general path, before any message of the chunk was acted on.
        """
        governed = self.governed
        if data[:1] == b"Q":
            return self._governed_query(data)
        walked = governed_syncs(data, _GOVERNED_TABLE, self.settings.max_message_size)
        if walked is None:
            return None
        syncs, noted = walked
        parse_end = 0
        if noted is not None:
            if noted[0] == 0 and data[0] == _PARSE:
                parse_end = noted[1]
                noted = noted[2:]
            if noted:
                if any(data[start] == _PARSE for start in noted[::2]):
                    return None  # a Parse after other messages: the general path keeps their order
                if parse_end and syncs and _first_sync(data) < noted[-1]:
                    # a Bind in a later sync group than the Parse's: for a DP statement the general path
                    # decides there whether its answer is still fresh (GovernedRelay._client_message)
                    return None
                # Checked before the Parse runs: it can only make its own statement current.
                if governed.audit is not None or not governed.binds_current(data, noted):
                    return None  # a stale statement is refused (and each Bind audited) on the general path
        if parse_end:
            governed.in_flight = self.in_flight
            try:
                piece = governed.client_message(b"P", data[5:parse_end], self.transaction_status)
            except (NeedsDP, ProtocolViolation):
                return None  # nothing was recorded yet: the general path asks for the answer or reports the error
            data = piece + data[parse_end:]
        self.in_flight += syncs
        governed.syncs_sent += syncs  # what client_message does for these messages
        governed.swallow.client_sent_run(syncs > 0)  # no Close here, and a Parse only before the Syncs
        return data

    def _audited_bytes(self, data: bytes) -> bytes | None:
        """``client_bytes`` of an audited unrestricted session: what ``_relay_client`` records, in place.

        Every Query and Parse opens a record in the audit group its position gives (the sync
        messages before it); all are decoded before any is recorded, so a malformed one sends
        the whole chunk to the general path (which reports it) with nothing recorded twice.
        """
        walked = governed_syncs(data, _AUDITED_TABLE, self.settings.max_message_size)
        if walked is None:
            return None
        noted = walked[1]
        if noted is None:
            return data
        steps = []  # decoded first: (tag, statement text or name)
        try:
            for i in range(0, len(noted), 2):
                start, end = noted[i], noted[i + 1]
                steps.append(self._audit_step(data[start:start + 1], data[start + 5:end]))
        except ProtocolViolation:
            return None
        for tag, value in steps:
            self._audit_message(tag, value)
        return data

    @staticmethod
    def _audit_step(tag: bytes, body: bytes) -> tuple[bytes, object]:
        """What the audit needs of one client message of an unrestricted session (raises on a malformed one)."""
        if tag == b"Q":
            return tag, fe.query_sql(body)
        if tag == b"P":
            msg = fe.Parse.decode(body)
            return tag, (msg.name, msg.query)
        if tag == b"B":
            return tag, fe.bind_statement(body)
        if tag == b"C":
            close = fe.Close.decode(body)
            return tag, close.name if close.kind == "S" else None
        return tag, None

    def _audit_message(self, tag: bytes, value) -> None:
        """Audit one client message of an unrestricted session and count its sync group."""
        audit = self.audit
        if tag == b"Q" or tag == b"P":
            purpose, project = self.context_choice.get("pgveil.purpose"), self.context_choice.get("pgveil.project")
            if tag == b"Q":
                audit.begin(self._syncs_sent, value, decision="allowed", purpose=purpose, project=project)
            else:
                audit.parsed(self._syncs_sent, value[0], value[1], decision="allowed", purpose=purpose, project=project)
        elif tag == b"B":
            audit.bound(self._syncs_sent, value)
        elif tag == b"C":
            if value is not None:
                audit.forget(value)
            return
        if tag in _SYNC_TAGS:
            self._syncs_sent += 1
            self.in_flight += 1

    def _governed_query(self, data: bytes) -> bytes | None:
        """A chunk that is exactly one Query message: judged as on the general path, without its objects."""
        if len(data) < 5:
            return None
        length = int.from_bytes(data[1:5], "big")
        if length + 1 != len(data) or length < 4 or length > self.settings.max_message_size:
            return None
        governed = self.governed
        governed.in_flight = self.in_flight
        try:
            out = governed.client_message(b"Q", data[5:], self.transaction_status)
        except (NeedsDP, ProtocolViolation):
            return None  # nothing was recorded yet: the general path asks for the answer or reports the error
        self.in_flight += 1
        return out

    def backend_bytes(self, data: bytes) -> bool:
        """Note backend bytes that the caller forwards as they are; False: use ``handle``."""
        walker = self._walker
        governed = self.governed
        if self.state is not _READY or not walker.idle or (governed is not None and governed.pending):
            return False
        count, status = walker.ready_count(data)
        if count:
            if governed is not None:
                governed.ready_received += count  # as GovernedRelay.backend_data counts them
            self._ready(count, status)
        return True

    def _ready(self, count: int, status: int) -> None:
        self.in_flight = max(0, self.in_flight - count)
        self.transaction_status = chr(status)
        if self.audit is not None:
            self.audit.ready(self._walker.rows_done)

    def _backend_data(self, data: bytes) -> list:
        if self.state is not State.READY:
            return []
        if self.backend_bytes(data):
            return [cmd.SendToClient(data)]
        if self.governed is not None:
            data, count, status = self.governed.backend_data(self._walker, data)
        else:
            pieces, count, status = self._walker.split(data, frozenset())
            data = b"".join(pieces)
        if count:
            self._ready(count, status)
        return [cmd.SendToClient(data)] if data else []

    # -- other events ---------------------------------------------------------------

    def _tls_started(self, _event: ev.ClientTlsStarted) -> list:
        self.tls = True
        self._goto(State.STARTUP)
        return self._client_data(b"")

    def _backend_connected(self, event: ev.BackendConnected) -> list:
        self._goto(State.READY)
        parts = list(event.notices)
        for p in event.parameters:
            if p.name == "session_authorization":
                p = be.ParameterStatus(p.name, self.user or p.value)  # show the client its own identity
            parts.append(p.encode())
        parts.append(be.BackendKeyData(self.cancel_pid, self.cancel_key).encode())
        parts.append(be.ReadyForQuery("I").encode())
        out: list = [cmd.SendToClient(b"".join(parts))]
        if len(self._client_buf):  # pipelined ahead of ReadyForQuery
            out += self._relay_client()
        return out

    def _backend_failed(self, event: ev.BackendFailed) -> list:
        return self._fatal("08006", f"pgveil could not open a backend session: {event.message}")

    def _client_closed(self, _event) -> list:
        return self._leave("client closed the connection")

    def _backend_closed(self, _event) -> list:
        if self.state is State.READY:
            self.state = State.CLOSED
            return [cmd.Close("backend closed the connection")]
        return self._fatal("08006", "the backend closed the connection")

    def _auth_timed_out(self, _event) -> list:
        if self.state in (State.READY, State.CLOSED):
            return []
        return self._fatal("08006", "canceling authentication due to timeout")


_HANDLERS = {
    ev.ClientTlsStarted: Session._tls_started,
    ev.BackendConnected: Session._backend_connected,
    ev.BackendFailed: Session._backend_failed,
    ev.ClientClosed: Session._client_closed,
    ev.BackendClosed: Session._backend_closed,
    ev.AuthTimedOut: Session._auth_timed_out,
    ev.DPAnswered: Session._dp_answered,
}
