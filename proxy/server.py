"""All of pgveil's socket I/O: accept clients, open backends, relay, shut down.

Every protocol decision is made by ``session.Session``; this module carries out
its commands with asyncio Protocols (on uvloop when available), applies
backpressure in both directions (a slow reader pauses the other side's reads),
enforces connection and time limits, and forwards cancel requests. A session that
becomes a plain byte relay is handed to the C relay thread (``relay_thread``) when
it is built, and a governed one between statements, with a lane (``session/lane.py``)
that sends it back here at the first message Python must judge; this module still
owns its cancel key, shutdown and close.
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import ssl
import weakref
from dataclasses import dataclass

from .auth import Verifier
from .backend_auth import BackendAuthError, BackendHandshake
from .dsn import BackendTarget, service_connect_kwargs
from .policy_state import PolicyHolder, PolicyState
from .handoff import RETURNING, HandOff
from .relay_thread import PairClosed, PairReturned, open_relay_thread
from .session_setup import key_setup
from .session import commands as cmd
from .session import events as ev
from .session import Session, SessionSettings
from .session.states import State
from .wire import ProtocolViolation, backend as be
from .wire.startup import CancelRequest, SSLRequest

log = logging.getLogger("pgveil.server")

# Bytes a transport may buffer before the other side's reads pause.
WRITE_HIGH_WATER = 512 * 1024
WRITE_LOW_WATER = 128 * 1024


@dataclass(frozen=True)
class ServerSettings:
    host: str
    port: int
    target: BackendTarget
    backend_password: str | None
    users: dict[str, Verifier]
    tls: ssl.SSLContext | None = None
    backend_tls: ssl.SSLContext | None = None
    max_connections: int = 200
    max_message_size: int = 64 * 1024 * 1024
    auth_timeout: float = 30.0
    connect_timeout: float = 10.0
    holder: PolicyHolder | None = None  # None: a bare relay, nothing governed (wire tests, benchmarks)
    audit: object | None = None  # callable taking an AuditRecord (AuditWriter.write); None: no audit


class BackendProtocol(asyncio.Protocol):
    """The link to one backend session: handshake first, then a relay."""

    def __init__(self, handshake: BackendHandshake) -> None:
        self.handshake = handshake
        self.transport: asyncio.Transport | None = None
        self.client: ClientConnection | None = None
        # Set once relaying: the session's hot-path check and the client's write (bound once,
        # as every attribute lookup on the per-chunk path shows in the benchmark).
        self._relay = None
        self._client_write = None
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self._ssl_answer: asyncio.Future | None = None
        self._after_write = None  # set while a returned governed session waits to be handed off again

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)

    def expect_ssl_answer(self) -> asyncio.Future:
        self._ssl_answer = asyncio.get_running_loop().create_future()
        return self._ssl_answer

    def relay_to(self, client: "ClientConnection") -> None:
        self.client = client
        self._relay = client.session.backend_bytes
        self._client_write = client.transport.write

    def data_received(self, data: bytes) -> None:
        relay = self._relay
        if relay is not None:
            try:
                if relay(data):
                    self._client_write(data)
                    if self._after_write is not None:
                        self._after_write()
                    return
            except ProtocolViolation:
                pass  # the general path reports it
            self.client.on_backend_data(data)
            return
        if self.client is not None:
            self.client.on_backend_data(data)
            return
        if self._ssl_answer is not None and not self._ssl_answer.done():
            self._ssl_answer.set_result(data[:1])
            return
        try:
            reply = self.handshake.feed(data)
        except BackendAuthError as exc:
            if not self.ready.done():
                self.ready.set_exception(exc)
            return
        if reply:
            self.transport.write(reply)
        if self.handshake.done and not self.ready.done():
            self.ready.set_result(self.handshake)

    def connection_lost(self, exc) -> None:
        if self.client is not None:
            self.client.on_backend_closed()
        for fut in (self.ready, self._ssl_answer):
            if fut is not None and not fut.done():
                fut.set_exception(BackendAuthError("the backend closed the connection during startup"))

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client is not None and not self.client.closed:
            self.client.transport.resume_reading()


class ClientConnection(HandOff, asyncio.Protocol):
    """One client connection: feeds its Session and carries out the commands."""

    def __init__(self, proxy: "Proxy") -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.backend: BackendProtocol | None = None
        self.session: Session | None = None
        self.closed = False
        self.peer = None
        self._auth_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._backend_write = None
        self.pair = None  # set once the relay thread relays this session (its transports are closed then)
        self._final: bytes | None = None  # a FATAL error to end the session with once it is back from the thread
        # While a governed session comes back from the thread: what it read and what arrives meanwhile.
        self._held_client = bytearray()
        self._held_backend = bytearray()
        self._lane_after = 0  # a governed session is handed off again once this many statements were sent
        self._lane_wait = 0

    # -- asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport) -> None:
        if self.session is not None:  # taken back from the relay thread (_take_back)
            self.transport = transport
            transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
            return
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        proxy = self.proxy
        refusal = None
        if proxy.closing:
            refusal = ("57P03", "the database system is shutting down")
        elif len(proxy.connections) >= proxy.settings.max_connections:
            refusal = ("53300", "sorry, too many clients already")
        if refusal is None:
            pid, key = proxy.new_cancel_key(self)
            proxy.connections.add(self)
        else:
            pid, key = 0, b""
        peer = f"{self.peer[0]}:{self.peer[1]}" if isinstance(self.peer, tuple) else None
        self.session = Session(proxy.session_settings, pid, key, refusal, peer)
        self._auth_timer = asyncio.get_running_loop().call_later(proxy.settings.auth_timeout, self._auth_timeout)

    def data_received(self, data: bytes) -> None:
        session = self.session
        if session is None:
            return
        if self.pair is RETURNING:
            self._held_client += data  # after what the relay thread had read (_take_back)
            return
        relay = session.client_bytes(data)  # hot path: whole messages, nothing to inspect
        if relay is not None:
            self._backend_write(relay)
        else:
            self._apply(session.handle(ev.ClientDataReceived(data)))

    def connection_lost(self, exc) -> None:
        if self.pair is not None:
            return  # the transport closed at the hand-off (the socket lives on in the relay thread); or see _take_back
        if self.session is not None:
            self._apply(self.session.handle(ev.ClientClosed()))
        self._close()

    def pause_writing(self) -> None:
        if self.backend is not None and self.backend.transport is not None:
            self.backend.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.backend is not None and self.backend.transport is not None and not self.backend.transport.is_closing():
            self.backend.transport.resume_reading()

    # -- from the backend ---------------------------------------------------------

    def on_backend_data(self, data: bytes) -> None:
        if self.closed:
            return
        if self.pair is RETURNING:
            self._held_backend += data
            return
        session = self.session
        try:
            if session.backend_bytes(data):  # hot path: relay as received
                self.transport.write(data)
            else:
                self._apply(session.handle(ev.BackendDataReceived(data)))
            after = self.backend._after_write  # a session back from the relay thread: hand it off again once idle
            if after is not None:
                after()
        except ProtocolViolation as exc:
            log.error("backend sent an invalid message stream: %s", exc)
            self.transport.write(be.error("08P01", "pgveil lost track of the backend's messages", severity="FATAL"))
            self._close()

    def on_backend_closed(self) -> None:
        if self.pair is RETURNING:
            return  # the old transport, or the new one before the session has it: _take_back looks
        if not self.closed:
            self._apply(self.session.handle(ev.BackendClosed()))

    # -- commands -----------------------------------------------------------------

    def _apply(self, commands: list) -> None:
        for c in commands:
            kind = type(c)
            if kind is cmd.SendToBackend:
                self.backend.transport.write(c.data)
            elif kind is cmd.SendToClient:
                if not self.closed:
                    self.transport.write(c.data)
            elif kind is cmd.Close:
                self._close()
            elif kind is cmd.ConnectBackend:
                self._spawn(self._connect_backend(c.params, c.governed))
            elif kind is cmd.StartClientTls:
                self._spawn(self._start_tls())
            elif kind is cmd.CancelBackendQuery:
                self.proxy.cancel_backend(self.session)
            elif kind is cmd.ForwardCancel:
                self.proxy.forward_cancel(c.pid, c.key)
            elif kind is cmd.AnswerDP:
                self._spawn(self._answer_dp(c.plan))
            else:
                raise TypeError(f"unknown command {c!r}")

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_dp(self, plan) -> None:
        verdict = await self.proxy.answer_dp(plan)
        if not self.closed:
            self._apply(self.session.handle(ev.DPAnswered(plan, verdict)))

    async def _start_tls(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self.transport = await loop.start_tls(self.transport, self, self.proxy.settings.tls, server_side=True)
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            log.info("TLS handshake with %s failed: %s", self.peer, exc)
            self._close()
            return
        self._apply(self.session.handle(ev.ClientTlsStarted()))

    async def _connect_backend(self, params: dict[str, str], governed: bool) -> None:
        try:
            backend = await self.proxy.open_backend(params, governed)
        except (BackendAuthError, OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            log.warning("backend connection for %s failed: %s", self.session.user, exc)
            self._apply(self.session.handle(ev.BackendFailed(str(exc) or type(exc).__name__)))
            return
        if self.closed:
            backend.transport.close()
            return
        self.backend = backend
        hs = backend.handshake
        self._apply(self.session.handle(ev.BackendConnected(hs.parameters, hs.key_data, hs.notices)))
        self._backend_write = backend.transport.write
        backend.relay_to(self)
        if self._auth_timer:
            self._auth_timer.cancel()
        if hs.leftover:
            self.on_backend_data(hs.leftover)
        self._hand_off()

    @property
    def in_flight(self) -> int:
        """Statements sent to the backend and not yet answered."""
        if self.pair is not None and self.pair is not RETURNING:
            return self.pair.in_flight
        return self.session.in_flight if self.session is not None else 0

    def _auth_timeout(self) -> None:
        if self.session is not None and not self.closed:
            self._apply(self.session.handle(ev.AuthTimedOut()))

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._auth_timer:
            self._auth_timer.cancel()
        self.proxy.forget(self)
        if self.backend is not None and self.backend.transport is not None:
            bt = self.backend.transport
            if not bt.is_closing():
                bt.write(b"X\x00\x00\x00\x04")  # Terminate, so the backend ends the session cleanly
                bt.close()
        for task in self._tasks:
            task.cancel()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def terminate(self, sqlstate: str, message: str) -> None:
        """End the session now with a FATAL error (shutdown, a revoked entitlement)."""
        if self.closed:
            return
        error = be.error(sqlstate, message, severity="FATAL")
        if self.pair is not None:
            if self._final is None:
                self._final = error  # for a governed pair on its way back (its close then does nothing)
            if self.pair is not RETURNING:
                self.pair.close(error)  # sent after what is pending (a second close does nothing); relay_closed follows
            return
        self.terminate_now(error)

    def terminate_now(self, error: bytes) -> None:
        self.transport.write(error)
        self._close()

    def shutdown_now(self) -> None:
        self.terminate("57P01", "terminating connection due to administrator command")


class Proxy:
    """The listening proxy: accepts connections and tracks sessions."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.session_settings = SessionSettings(
            database=settings.target.database,
            verifier_for=(settings.users.get if settings.holder is None
                          else lambda user: settings.holder.current.verifiers.get(user)),
            tls_available=settings.tls is not None,
            max_message_size=settings.max_message_size,
            holder=settings.holder,
            audit=settings.audit,
        )
        self.connections: set[ClientConnection] = set()
        self.by_cancel_key: dict[tuple[int, bytes], ClientConnection] = {}
        self.closing = False
        self._server: asyncio.AbstractServer | None = None
        self._dp = None  # proxy.dp.DPService, opened on the first DP statement
        self.relay_thread = None  # proxy.relay_thread.RelayThread once started, where it is built
        if settings.holder is not None:
            settings.holder.on_swap(weakref.WeakMethod(self._policy_swapped))

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: ClientConnection(self), self.settings.host, self.settings.port,
                                                backlog=1024, reuse_address=True)
        self.relay_thread = open_relay_thread()
        if self.relay_thread is not None:
            loop.add_reader(self.relay_thread.notify_fd, self._relay_events)
        log.info("relay thread %s", "on: unaudited sessions without TLS leave the event loop between statements "
                 "(governed ones for the statements already judged)" if self.relay_thread is not None
                 else "off: every session is relayed on the event loop")

    def _relay_events(self) -> None:
        for conn, what in self.relay_thread.events():
            if type(what) is PairClosed:
                conn.relay_closed(what.cancel)
            elif type(what) is PairReturned:
                conn.relay_returned()
            elif what.from_client:
                conn.pair.close(be.error("08P01", what.message, severity="FATAL"))
            else:
                log.error("backend sent an invalid message stream: %s", what.message)
                conn.pair.close(be.error("08P01", "pgveil lost track of the backend's messages", severity="FATAL"))

    def _policy_swapped(self, state: PolicyState) -> None:
        """A session let through unrestricted whose user no longer is ends now (it was never governed).

        Every governed session's lane is voided first: its next statement is judged under ``state``.
        """
        if self.relay_thread is not None:
            self.relay_thread.invalidate_lanes()
        for conn in list(self.connections):
            session = conn.session
            if session is None or session.governed is not None or session.state not in (State.CONNECTING, State.READY):
                continue
            user = state.config.users.get(session.user)
            if user is None or not user.unrestricted:
                conn.terminate("57P01", f'terminating connection: user "{session.user}" is no longer unrestricted '
                               "under the reloaded policy; reconnect to continue under it")

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    def new_cancel_key(self, conn: ClientConnection) -> tuple[int, bytes]:
        while True:
            pid, key = secrets.randbelow(2**31 - 1) + 1, os.urandom(4)
            if (pid, key) not in self.by_cancel_key:
                self.by_cancel_key[(pid, key)] = conn
                return pid, key

    def forget(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)
        if conn.session is not None:
            self.by_cancel_key.pop((conn.session.cancel_pid, conn.session.cancel_key), None)

    async def open_backend(self, params: dict[str, str], governed: bool = False) -> BackendProtocol:
        s = self.settings
        target = s.target
        setup, setup_ready = b"", 0
        if governed and s.holder is not None:
            state = s.holder.current
            setup, setup_ready = key_setup(state.catalog, state.keys)
        handshake = BackendHandshake(target.user, s.backend_password, {"database": target.database, **params},
                                     setup, setup_ready)
        loop = asyncio.get_running_loop()
        factory = lambda: BackendProtocol(handshake)  # noqa: E731

        async def connect() -> BackendProtocol:
            if target.is_unix:
                transport, proto = await loop.create_unix_connection(factory, target.unix_path)
            else:
                transport, proto = await loop.create_connection(factory, target.host, target.port)
            try:
                if s.backend_tls is not None and not target.is_unix:
                    answer = proto.expect_ssl_answer()
                    transport.write(SSLRequest().encode())
                    if await answer == b"S":
                        transport = await loop.start_tls(transport, proto, s.backend_tls, server_hostname=target.host)
                        proto.transport = transport
                    elif target.sslmode not in ("allow", "prefer"):
                        raise BackendAuthError("the backend does not accept TLS but backend.tls requires it")
                transport.write(handshake.startup_packet())
                await proto.ready
            except BaseException:
                transport.close()
                raise
            return proto

        return await asyncio.wait_for(connect(), s.connect_timeout)

    async def answer_dp(self, plan):
        """A governor Forward (literal-only SQL) or Refuse for a differentially private query."""
        from .dp import DPService
        from .session.governor import Refuse

        try:
            if self._dp is None:
                s = self.settings
                connect = service_connect_kwargs(s.target, s.backend_password, s.backend_tls, s.connect_timeout,
                                                 application_name="pgveil-dp")
                self._dp = DPService(s.holder, connect)
            return await self._dp.answer(plan)
        except Exception as exc:  # fail closed: the statement is refused, the session goes on
            log.exception("differentially private answer failed")
            return Refuse("XX000", f"pgveil could not answer the differentially private query ({type(exc).__name__})")

    def cancel_backend(self, session: Session) -> None:
        conn = self.by_cancel_key.get((session.cancel_pid, session.cancel_key))
        if conn is None or conn.backend is None:
            return
        key = conn.backend.handshake.key_data
        if key is not None:
            asyncio.get_running_loop().create_task(self._send_cancel(CancelRequest(key.pid, key.key)))

    def forward_cancel(self, pid: int, key: bytes) -> None:
        conn = self.by_cancel_key.get((pid, key))
        if conn is not None and conn.session is not None:
            self.cancel_backend(conn.session)

    async def _send_cancel(self, request: CancelRequest) -> None:
        target = self.settings.target
        try:
            if target.is_unix:
                reader, writer = await asyncio.open_unix_connection(target.unix_path)
            else:
                reader, writer = await asyncio.open_connection(target.host, target.port)
            writer.write(request.encode())
            await writer.drain()
            await asyncio.wait_for(reader.read(), 5)  # the server closes when done
            writer.close()
        except (OSError, asyncio.TimeoutError) as exc:
            log.warning("could not forward cancel request: %s", exc)

    async def shutdown(self, grace: float) -> None:
        """Stop accepting, let in-flight statements finish (up to ``grace`` s), close."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while loop.time() < deadline and any(c.in_flight for c in self.connections):
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.shutdown_now()
        if self._server is not None:
            await self._server.wait_closed()
        if self.relay_thread is not None:
            loop.remove_reader(self.relay_thread.notify_fd)
            self.relay_thread.stop()  # sends what shutdown_now queued, closes the rest
            self._relay_events()  # the last closes: their cancels
        if self._dp is not None:
            await self._dp.close()
