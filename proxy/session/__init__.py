"""One client session as a sans-io state machine: events in, commands out.

What it does: drives the startup, TLS negotiation, SCRAM authentication and the
relay of one client connection. ``events`` are facts that happened (past tense),
``commands`` are orders for ``proxy.server`` to carry out; ``states`` holds the
states and the allowed transitions as data; ``machine.Session`` applies them.

What it must not touch: sockets, asyncio, clocks (timeouts arrive as events),
the backend's address. It can be driven entirely from a test with bytes.
"""
from .commands import CancelBackendQuery, Close, ConnectBackend, ForwardCancel, SendToBackend, SendToClient, StartClientTls
from .events import (AuthTimedOut, BackendClosed, BackendConnected, BackendDataReceived, BackendFailed,
                     ClientClosed, ClientDataReceived, ClientTlsStarted)
from .machine import Session, SessionSettings
from .states import State

__all__ = [
    "Session", "SessionSettings", "State",
    "CancelBackendQuery", "Close", "ConnectBackend", "ForwardCancel", "SendToBackend", "SendToClient", "StartClientTls",
    "AuthTimedOut", "BackendClosed", "BackendConnected", "BackendDataReceived", "BackendFailed",
    "ClientClosed", "ClientDataReceived", "ClientTlsStarted",
]
