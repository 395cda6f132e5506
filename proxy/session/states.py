"""Session states and the transitions allowed between them, as data."""
from __future__ import annotations

from enum import Enum


class State(Enum):
    STARTUP = "startup"  # waiting for StartupMessage / SSLRequest / GSSENCRequest / CancelRequest
    TLS_HANDSHAKE = "tls_handshake"  # answered 'S', waiting for the TLS layer
    SASL_INITIAL = "sasl_initial"  # sent AuthenticationSASL, waiting for SASLInitialResponse
    SASL_CONTINUE = "sasl_continue"  # sent AuthenticationSASLContinue, waiting for SASLResponse
    CONNECTING = "connecting"  # client authenticated, backend session being opened
    READY = "ready"  # relaying
    CLOSED = "closed"


TRANSITIONS: dict[State, frozenset[State]] = {
    State.STARTUP: frozenset({State.TLS_HANDSHAKE, State.SASL_INITIAL, State.CLOSED}),
    State.TLS_HANDSHAKE: frozenset({State.STARTUP, State.CLOSED}),
    State.SASL_INITIAL: frozenset({State.SASL_CONTINUE, State.CLOSED}),
    State.SASL_CONTINUE: frozenset({State.CONNECTING, State.CLOSED}),
    State.CONNECTING: frozenset({State.READY, State.CLOSED}),
    State.READY: frozenset({State.CLOSED}),
    State.CLOSED: frozenset(),
}

# States in which the client has not yet proved who it is.
UNAUTHENTICATED = frozenset({State.STARTUP, State.TLS_HANDSHAKE, State.SASL_INITIAL, State.SASL_CONTINUE})
