"""Test infrastructure: one real PostgreSQL per test session, and proxies in threads.

PostgreSQL is the bundled embedded server (in a temp dir, fsync off), or the
server named by ``PGVEIL_TEST_DSN`` (a superuser URL with its password). The
proxy under test runs in a background thread on its own uvloop event loop and
is reached over real sockets.
"""
from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
import os
import threading
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import asyncpg

from proxy.auth import make_verifier
from proxy.dsn import BackendTarget
from proxy.server import Proxy, ServerSettings

TEST_DB = "pgveil_test"


def scratch_dir() -> Path:
    """A fresh dir directly under the system temp dir, not pytest's tmp_path.

    Under root the server runs as another user that needs o+x on every ancestor,
    and pytest strips group/other bits from /tmp/pytest-of-<user> whenever any
    pytest session starts, which would break a server started under it.
    """
    return Path(tempfile.mkdtemp(prefix="pgveil-test-"))


@dataclass
class PgServer:
    """A PostgreSQL server the tests may use, with superuser and service credentials."""

    host: str
    port: int
    superuser: str
    superuser_password: str
    service_user: str
    service_password: str
    database: str = TEST_DB
    stop: object = field(default=None, repr=False)
    data_dir: object = None  # the embedded server's data dir; None for an external server

    def dsn(self, *, superuser: bool = True, database: str | None = None) -> str:
        user, pw = (self.superuser, self.superuser_password) if superuser else (self.service_user, self.service_password)
        return f"postgresql://{quote(user, safe='')}:{quote(pw, safe='')}@{self.host}:{self.port}/{database or self.database}"

    def target(self) -> BackendTarget:
        return BackendTarget(self.host, self.port, self.service_user, self.database)


def start_postgres(tmpdir) -> PgServer:
    external = os.environ.get("PGVEIL_TEST_DSN")
    if external:
        parts = urlsplit(external)
        server = PgServer(parts.hostname or "127.0.0.1", parts.port or 5432, parts.username or "postgres",
                          parts.password or "", parts.username or "postgres", parts.password or "")
        asyncio.run(_create_database(external, TEST_DB))
        return server
    from proxy.embedded import ensure_embedded, grant_read, stop_embedded

    info = ensure_embedded(tmpdir, databases=[TEST_DB], fast_unsafe=True)
    server = PgServer(info.host, info.port, info.superuser, info.superuser_password, info.service_user,
                      info.service_password, stop=lambda: stop_embedded(tmpdir), data_dir=info.data_dir)
    server.grant_read = lambda: grant_read(info, TEST_DB)
    return server


async def _create_database(dsn: str, name: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


# Users of the test proxies and their plaintext passwords.
PASSWORDS = {"root": "root-secret", "alice": "alice-secret", "bob": "bob secret with spaces"}
_VERIFIERS = {name: make_verifier(pw) for name, pw in PASSWORDS.items()}


class ProxyThread:
    """A Proxy running on its own event loop in a daemon thread."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.proxy: Proxy | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pgveil-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("proxy did not start")
        if self._error:
            raise self._error

    def _run(self) -> None:
        import uvloop

        self.loop = uvloop.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self.proxy = Proxy(self.settings)
            self.loop.run_until_complete(self.proxy.start())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.close()

    @property
    def port(self) -> int:
        return self.proxy.port

    def call(self, fn, *args):
        """Run fn(*args) on the proxy's loop and return its result."""
        done = threading.Event()
        box: list = []
        self.loop.call_soon_threadsafe(lambda: (box.append(fn(*args)), done.set()))
        done.wait(10)
        return box[0] if box else None

    def stop(self, grace: float = 0.0) -> None:
        if self.loop is None or not self.loop.is_running():
            return
        fut = asyncio.run_coroutine_threadsafe(self.proxy.shutdown(grace), self.loop)
        try:
            fut.result(grace + 10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)


def proxy_settings(pg: PgServer, **overrides) -> ServerSettings:
    values = dict(host="127.0.0.1", port=0, target=pg.target(), backend_password=pg.service_password,
                  users=dict(_VERIFIERS), auth_timeout=10.0)
    values.update(overrides)
    return ServerSettings(**values)


def client_dsn(port: int, user: str = "root", *, database: str = TEST_DB, password: str | None = None) -> str:
    pw = PASSWORDS.get(user, "x") if password is None else password
    return f"postgresql://{quote(user, safe='')}:{quote(pw, safe='')}@127.0.0.1:{port}/{database}"
