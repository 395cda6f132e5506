"""Client authentication: SCRAM-SHA-256 verifiers and the server side of the exchange.

Pure functions and a small sans-io class; the session feeds it the client's SASL
messages. An unknown user runs the same exchange against a fake verifier and
fails with the same message as a wrong password, so the proxy never tells
which user names exist.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass

from scramp import ScramMechanism

MECHANISM = "SCRAM-SHA-256"
DEFAULT_ITERATIONS = 4096
_MECH = ScramMechanism(MECHANISM)
# Per-process secret so fake verifiers for unknown users are stable within a run
# but cannot be computed from outside.
_FAKE_SECRET = os.urandom(32)


@dataclass(frozen=True)
class Verifier:
    """A stored SCRAM-SHA-256 verifier (as in pg_authid.rolpassword)."""

    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes

    def auth_info(self) -> tuple[bytes, bytes, bytes, int]:
        return self.salt, self.stored_key, self.server_key, self.iterations

    def __str__(self) -> str:
        b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
        return f"{MECHANISM}${self.iterations}:{b64(self.salt)}${b64(self.stored_key)}:{b64(self.server_key)}"


class BadVerifier(ValueError):
    pass


def make_verifier(password: str, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None) -> Verifier:
    """Derive a verifier from a plaintext password (what `pgveil passwd` prints)."""
    salt_, stored, server, iters = _MECH.make_auth_info(password, iteration_count=iterations, salt=salt or os.urandom(16))
    return Verifier(iters, salt_, stored, server)


def parse_verifier(text: str) -> Verifier:
    """Parse ``SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>``."""
    try:
        mech, rest = text.split("$", 1)
        iter_salt, keys = rest.split("$", 1)
        iters, salt = iter_salt.split(":", 1)
        stored, server = keys.split(":", 1)
        if mech != MECHANISM:
            raise ValueError
        v = Verifier(int(iters), base64.b64decode(salt, validate=True), base64.b64decode(stored, validate=True),
                     base64.b64decode(server, validate=True))
    except (ValueError, TypeError):
        raise BadVerifier("not a SCRAM-SHA-256 verifier (expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>)") from None
    if v.iterations < 1 or len(v.stored_key) != 32 or len(v.server_key) != 32:
        raise BadVerifier("SCRAM-SHA-256 verifier has wrong key sizes or iteration count")
    return v


def verifier_from_secret(secret: str) -> Verifier:
    """A config secret is a verifier if it looks like one, else a plaintext password."""
    return parse_verifier(secret) if secret.startswith(MECHANISM + "$") else make_verifier(secret)


def fake_verifier(user: str) -> Verifier:
    """A stable, unguessable verifier for a user that does not exist."""
    salt = hmac.new(_FAKE_SECRET, b"salt:" + user.encode(), hashlib.sha256).digest()[:16]
    keys = hmac.new(_FAKE_SECRET, b"keys:" + user.encode(), hashlib.sha512).digest()
    return Verifier(DEFAULT_ITERATIONS, salt, keys[:32], keys[32:])


class AuthFailed(Exception):
    """Authentication failed; the message is safe to show the client."""

    sqlstate = "28P01"  # invalid_password


class MalformedSasl(AuthFailed):
    """The client broke the SASL exchange itself (PostgreSQL reports these as protocol violations)."""

    sqlstate = "08P01"


class ScramExchange:
    """The server side of one SCRAM-SHA-256 exchange (RFC 5802/7677), sans-io.

    scramp (used for verifiers and for the backend side) rejects the empty user
    name that every PostgreSQL client sends inside SCRAM (the startup packet
    carries the name), so the few server-side steps are done here with hmac.
    Channel binding is not offered; a client demanding it ('p=') is refused.
    """

    def __init__(self, user: str, verifier: Verifier | None) -> None:
        self.user = user
        self._real = verifier is not None
        self._verifier = verifier or fake_verifier(user)
        self._client_first_bare = ""
        self._server_first = ""
        self._gs2_header = ""
        self._nonce = ""

    def _fail(self) -> AuthFailed:
        return AuthFailed(f'password authentication failed for user "{self.user}"')

    def client_first(self, mechanism: str, payload: bytes | None) -> bytes:
        """Take SASLInitialResponse, return the server-first message."""
        if mechanism != MECHANISM or payload is None:
            raise MalformedSasl("client selected an invalid SASL authentication mechanism")
        try:
            text = payload.decode("utf-8")
            cbind, authzid, bare = text.split(",", 2)
        except (UnicodeDecodeError, ValueError):
            raise MalformedSasl("malformed SCRAM message") from None
        if cbind not in ("n", "y") or (authzid and not authzid.startswith("a=")):
            raise MalformedSasl("channel binding is not supported by pgveil; connect with channel_binding=disable or prefer")
        attrs = _attributes(bare)
        client_nonce = attrs.get("r", "")
        if "n" not in attrs or not client_nonce or "m" in attrs:
            raise MalformedSasl("malformed SCRAM message")
        self._gs2_header = f"{cbind},{authzid},"
        self._client_first_bare = bare
        self._nonce = client_nonce + base64.b64encode(os.urandom(18)).decode()
        v = self._verifier
        self._server_first = f"r={self._nonce},s={base64.b64encode(v.salt).decode()},i={v.iterations}"
        return self._server_first.encode()

    def client_final(self, payload: bytes) -> bytes:
        """Take SASLResponse, return server-final; raises AuthFailed on a wrong proof."""
        try:
            text = payload.decode("utf-8")
            without_proof, proof_part = text.rsplit(",p=", 1)
            attrs = _attributes(without_proof)
            proof = base64.b64decode(proof_part, validate=True)
        except (UnicodeDecodeError, ValueError):
            raise self._fail() from None
        expected_cbind = base64.b64encode(self._gs2_header.encode()).decode()
        if attrs.get("c") != expected_cbind or attrs.get("r") != self._nonce or len(proof) != 32:
            raise self._fail()
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        v = self._verifier
        client_signature = hmac.new(v.stored_key, auth_message, hashlib.sha256).digest()
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature))
        ok = hmac.compare_digest(hashlib.sha256(client_key).digest(), v.stored_key)
        if not (ok and self._real):
            raise self._fail()
        server_signature = hmac.new(v.server_key, auth_message, hashlib.sha256).digest()
        return b"v=" + base64.b64encode(server_signature)


def _attributes(message: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in message.split(","):
        if len(part) < 2 or part[1] != "=":
            raise MalformedSasl("malformed SCRAM message")
        out.setdefault(part[0], part[2:])
    return out
