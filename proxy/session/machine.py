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
from . import commands as cmd
from . import startup_params
from ..audit import AuditRecord
from .auditing import SessionInfo, StatementAudit
from .governed import GovernedRelay, NeedsDP
from .governor import ContextError, Governor
from . import events as ev
from .hot_path import _SYNC_TAGS, HotPath
from .states import TRANSITIONS, State

_HEADER = Struct("!cI")
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


class Session(HotPath):
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
        self.governed: GovernedRelay | None = None
        self.audit: StatementAudit | None = None
        self._syncs_sent = 0  # Query/Sync/FunctionCall messages sent (audit groups of ungoverned sessions)
        self._scram: ScramExchange | None = None
        # Client messages waiting for a DP answer (the first one asked for it); None: not suspended.
        self._held: list | None = None

    def can_hand_off(self) -> bool:
        """From here on the relay thread may take it (``proxy/relay_thread.py``): a byte relay that only counts
        statements, or a governed session with a lane (``lane.py``) between statements.

        READY, nothing audited or encrypted (TLS is the event loop's), nothing governed that waits
        (``GovernedRelay.can_leave``), and no byte of either direction held or half-read: whoever
        relays next starts on message boundaries.
        """
        governed = self.governed
        return (self.state is State.READY and (governed is None or governed.can_leave()) and self.audit is None
                and not self.tls
                and self._held is None and not self._client_buf.pending and self._walker.idle
                and self._walker.at_boundary)

    def ended_elsewhere(self) -> None:
        """Its sockets were closed where the session does not see them (the relay thread): CLOSED now."""
        self.state = State.CLOSED
        if self.audit is not None:
            self.audit.close()

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
