"""Commands: what a session orders the server to do (named as imperatives)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class SendToClient:
    data: bytes


@dataclass(slots=True)
class SendToBackend:
    data: bytes


@dataclass(slots=True)
class StartClientTls:
    """Upgrade the client connection to TLS (after answering 'S')."""


@dataclass(slots=True)
class ConnectBackend:
    """Open this session's backend connection with these startup parameters."""

    params: dict[str, str]
    governed: bool = False  # set up pgveil's per-session objects (key table) before relaying


@dataclass(slots=True)
class ForwardCancel:
    """Cancel the running query of the session with this client-facing key."""

    pid: int
    key: bytes


@dataclass(slots=True)
class CancelBackendQuery:
    """Cancel whatever this session's backend is running (the client left mid-query)."""


@dataclass(slots=True)
class Close:
    """Close the client connection (and the backend, if any)."""

    reason: str


@dataclass(slots=True)
class AnswerDP:
    """Compute this differentially private answer (proxy.dp) and report it with DPAnswered."""

    plan: object
