"""A tiny PostgreSQL client for protocol tests: SCRAM by hand and raw sockets.

PostgreSQL clients send an empty user name (``n=``) inside SCRAM because the
startup packet carries the real one; scramp's client cannot, so the client side
of SCRAM-SHA-256 is written out here (RFC 5802) to send exactly what libpq sends.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import struct
import time

from proxy.wire import MessageBuffer
from proxy.wire import backend as be
from proxy.wire._fields import cstr, frame
from proxy.wire.startup import PROTOCOL_3_0, StartupMessage

TEST_DB = "pgveil_test"


class ScramClient:
    """The client side of one SCRAM-SHA-256 exchange, as libpq runs it."""

    def __init__(self, password: str, nonce: str | None = None, user_in_scram: str = "") -> None:
        self.password = password
        self.nonce = nonce or base64.b64encode(os.urandom(18)).decode()
        self.bare = f"n={user_in_scram},r={self.nonce}"
        self.expected_server_signature = b""

    def first(self) -> bytes:
        return f"n,,{self.bare}".encode()

    def initial_response(self) -> bytes:
        """The body of SASLInitialResponse."""
        payload = self.first()
        return cstr("SCRAM-SHA-256") + struct.pack("!i", len(payload)) + payload

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        attrs = dict(part.split("=", 1) for part in text.split(","))
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        auth_message = f"{self.bare},{text},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        self.expected_server_signature = hmac.new(server_key, auth_message, hashlib.sha256).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()


def startup_packet(user: str, database: str = TEST_DB, version: int = PROTOCOL_3_0, **params: str) -> bytes:
    return StartupMessage(version, {"user": user, "database": database, **params}).encode()


def password_message(body: bytes) -> bytes:
    return frame(b"p", body)


class RawClient:
    """A blocking socket speaking raw protocol bytes, decoding what comes back."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = MessageBuffer(1 << 30)
        self.closed = False

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                break
            out += chunk
        return out

    def _fill(self, deadline: float) -> bool:
        """Read one chunk into the buffer; False on EOF or reset."""
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self.buf.feed(chunk)
        return True

    def read_until(self, tags: bytes = b"Z", timeout: float = 5.0) -> list:
        """Decoded backend messages up to and including one whose tag is in ``tags``, or until EOF."""
        deadline = time.monotonic() + timeout
        out: list = []
        pending: list = []
        while True:
            msgs, _ = self.buf.take_messages()
            pending += msgs
            while pending:
                tag, body = pending.pop(0)
                out.append(be.decode(tag, body))
                if tag in tags:
                    # give back the rest (rare: several replies in one chunk)
                    rest = b"".join(frame(t, b) for t, b in pending) + self.buf.take_rest()
                    self.buf.feed(rest)
                    return out
            if not self._fill(deadline):
                return out

    def read_all(self, timeout: float = 5.0) -> list:
        """Every decoded message until the peer closes the connection."""
        return self.read_until(b"", timeout)

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """True when the peer closes the connection within ``timeout`` (data read meanwhile is kept)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if not self._fill(deadline):
                    return True
            except (TimeoutError, socket.timeout):
                return False
        return False

    def login(self, user: str, password: str, database: str = TEST_DB, version: int = PROTOCOL_3_0,
              **params: str) -> list:
        """Full startup + SCRAM; the messages after AuthenticationOk up to ReadyForQuery.

        The replies to the startup packet itself are kept in ``startup_replies``.
        """
        self.send(startup_packet(user, database, version, **params))
        msgs = self.startup_replies = self.read_until(b"RE")
        assert isinstance(msgs[-1], be.Authentication) and msgs[-1].code == be.AUTH_SASL, msgs
        scram = ScramClient(password)
        self.send(password_message(scram.initial_response()))
        (cont,) = self.read_until(b"RE")
        assert isinstance(cont, be.Authentication) and cont.code == be.AUTH_SASL_CONTINUE, cont
        self.send(password_message(scram.final(cont.data)))
        (final,) = self.read_until(b"RE")
        assert isinstance(final, be.Authentication) and final.code == be.AUTH_SASL_FINAL, final
        assert final.data == b"v=" + base64.b64encode(scram.expected_server_signature)
        return self.read_until(b"ZE")

    def query(self, sql: str) -> list:
        self.send(frame(b"Q", cstr(sql)))
        return self.read_until(b"Z")


def error_of(messages: list) -> be.ErrorResponse:
    """The single ErrorResponse among ``messages``."""
    errors = [m for m in messages if type(m) is be.ErrorResponse]
    assert len(errors) == 1, messages
    return errors[0]
