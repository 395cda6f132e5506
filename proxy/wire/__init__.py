"""A sans-io codec of the PostgreSQL frontend/backend protocol (3.0, and 3.2's framing).

What it does: turns bytes into typed messages and typed messages into bytes.
``framing`` splits a byte stream into messages (with size limits), ``frontend``
and ``backend`` hold one class per message named as in the PostgreSQL protocol
docs, ``startup`` decodes the untyped first packet of a connection. Messages
this codec does not know are kept as ``Unknown`` and re-encoded byte-exact.

What it must not touch: sockets, asyncio, sessions, policy. Nothing here
performs I/O or keeps connection state beyond a byte buffer.
"""
from .framing import MessageBuffer, ProtocolViolation, StreamWalker
from . import backend, frontend, startup

__all__ = ["MessageBuffer", "ProtocolViolation", "StreamWalker", "backend", "frontend", "startup"]
