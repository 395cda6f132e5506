"""pgveil's server: the PostgreSQL wire protocol, sessions, auth, backend links, CLI.

What it does: speaks the PostgreSQL protocol to clients, authenticates them,
opens one backend session per client session and relays (and, through
``rewrite``, governs) every statement.

Map:
- ``wire/``: sans-io codec, bytes <-> typed messages.
- ``session/``: sans-io state machine per client; events in, commands out.
- ``server.py``: the only module doing socket I/O (asyncio + uvloop).
- ``config.py``, ``auth.py`` (SCRAM, pure), ``backend_auth.py`` (client side
  of the backend handshake, pure), ``embedded.py`` (bundled Postgres), ``cli.py``.

What it must not touch: policy semantics or SQL rewriting (that is ``rewrite``'s
job; the proxy only calls it).
"""

__version__ = "0.1.0"
