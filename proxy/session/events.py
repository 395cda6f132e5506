"""Events: what happened to a session (named in the past tense)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ClientDataReceived:
    data: bytes


@dataclass(slots=True)
class ClientTlsStarted:
    """The client connection now runs over TLS."""


@dataclass(slots=True)
class BackendConnected:
    """The backend session finished its startup; relay its parameters."""

    parameters: list = field(default_factory=list)  # wire.backend.ParameterStatus
    key_data: object | None = None  # wire.backend.BackendKeyData
    notices: list[bytes] = field(default_factory=list)


@dataclass(slots=True)
class BackendFailed:
    message: str


@dataclass(slots=True)
class BackendDataReceived:
    data: bytes


@dataclass(slots=True)
class ClientClosed:
    pass


@dataclass(slots=True)
class BackendClosed:
    pass


@dataclass(slots=True)
class AuthTimedOut:
    pass


@dataclass(slots=True)
class DPAnswered:
    """The answer for the statement the session suspended on: a governor Forward or Refuse."""

    plan: object  # the rewrite.dp.DPPlan it answers
    verdict: object
