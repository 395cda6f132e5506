"""The client side of the startup handshake with the backend, sans-io.

Feeds on backend bytes and says what to send back, until ReadyForQuery. It
answers trust, cleartext, MD5 and SCRAM-SHA-256 (scramp) requests with the
service credentials, and collects ParameterStatus and BackendKeyData so the
session can relay them to its client.
"""
from __future__ import annotations

import hashlib

from scramp import ScramClient, ScramException

from .wire import MessageBuffer, backend as be
from .wire._fields import cstr, frame, maybe_bytes
from .wire.startup import PROTOCOL_3_0, StartupMessage


class BackendAuthError(Exception):
    """The backend refused the service login or broke the handshake."""

    def __init__(self, message: str, error: be.ErrorResponse | None = None) -> None:
        super().__init__(message)
        self.error = error


class BackendHandshake:
    def __init__(self, user: str, password: str | None, params: dict[str, str],
                 setup: bytes = b"", setup_ready: int = 0) -> None:
        self.user = user
        # Statements pgveil runs itself once the session is up (its key table), and
        # how many ReadyForQuery they produce; their results never reach the client.
        self._setup = setup
        self._setup_ready = setup_ready
        self._password = password
        self._params = {"user": user, **params}
        self._buffer = MessageBuffer(1024 * 1024)
        self._scram: ScramClient | None = None
        self.parameters: list[be.ParameterStatus] = []
        self.key_data: be.BackendKeyData | None = None
        self.notices: list[bytes] = []
        self.leftover = b""  # backend bytes after ReadyForQuery, for the relay
        self.done = False

    def startup_packet(self) -> bytes:
        return StartupMessage(PROTOCOL_3_0, self._params).encode()

    def feed(self, data: bytes) -> bytes:
        """Take backend bytes; return bytes to send (possibly empty)."""
        self._buffer.feed(data)
        messages, _raw = self._buffer.take_messages()
        out = []
        for tag, body in messages:
            if self.done:
                self.leftover += frame(tag, body)
                continue
            out.append(self._on_message(be.decode(tag, body)))
        if self.done and len(self._buffer):
            self.leftover += self._buffer.take_rest()
        return b"".join(out)

    def _need_password(self) -> str:
        if self._password is None:
            raise BackendAuthError(f"the backend asks a password for {self.user!r} but none is configured "
                                   "(backend.password_env or backend.password_file)")
        return self._password

    def _on_message(self, msg) -> bytes:
        if isinstance(msg, be.Authentication):
            return self._on_auth(msg)
        if isinstance(msg, be.ParameterStatus):
            self.parameters.append(msg)
        elif isinstance(msg, be.BackendKeyData):
            self.key_data = msg
        elif isinstance(msg, be.ReadyForQuery):
            if self._setup:
                setup, self._setup = self._setup, b""
                return setup
            if self._setup_ready > 1:
                self._setup_ready -= 1
                return b""
            self.done = True
        elif isinstance(msg, be.ErrorResponse) and not isinstance(msg, be.NoticeResponse):
            raise BackendAuthError(msg.get(be.MESSAGE) or "backend refused the connection", msg)
        elif self._setup_ready and isinstance(msg, (be.CommandComplete, be.ParseComplete, be.BindComplete, be.NoData,
                                                    be.RowDescription, be.DataRow)):
            pass  # replies to pgveil's own setup statements
        elif isinstance(msg, be.NoticeResponse):
            self.notices.append(msg.encode())
        elif isinstance(msg, be.NegotiateProtocolVersion):
            pass  # we asked for 3.0 with no options; nothing to adjust
        else:
            raise BackendAuthError(f"unexpected message {type(msg).__name__} during backend startup")
        return b""

    def _on_auth(self, msg: be.Authentication) -> bytes:
        code = msg.code
        if code == be.AUTH_OK:
            return b""
        if code == be.AUTH_CLEARTEXT:
            return frame(b"p", cstr(self._need_password()))
        if code == be.AUTH_MD5:
            inner = hashlib.md5((self._need_password() + self.user).encode()).hexdigest()
            return frame(b"p", cstr("md5" + hashlib.md5(inner.encode() + msg.data[:4]).hexdigest()))
        try:
            if code == be.AUTH_SASL:
                if "SCRAM-SHA-256" not in msg.sasl_mechanisms():
                    raise BackendAuthError(f"backend offers no supported SASL mechanism: {msg.sasl_mechanisms()}")
                self._scram = ScramClient(["SCRAM-SHA-256"], self.user, self._need_password())
                first = self._scram.get_client_first().encode()
                return frame(b"p", cstr("SCRAM-SHA-256") + maybe_bytes(first))
            if code == be.AUTH_SASL_CONTINUE and self._scram:
                self._scram.set_server_first(msg.data.decode())
                return frame(b"p", self._scram.get_client_final().encode())
            if code == be.AUTH_SASL_FINAL and self._scram:
                self._scram.set_server_final(msg.data.decode())
                return b""
        except ScramException as exc:
            raise BackendAuthError(f"SCRAM authentication with the backend failed: {exc}") from None
        raise BackendAuthError(f"backend asked for an unsupported authentication method (code {code})")
