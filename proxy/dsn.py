"""Parse the backend DSN (a postgresql:// URL) into a connection target."""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from rewrite.policy import ConfigError


@dataclass(frozen=True)
class BackendTarget:
    host: str  # a host name/address, or a directory holding the unix socket
    port: int
    user: str
    database: str
    sslmode: str = "disable"

    @property
    def is_unix(self) -> bool:
        return self.host.startswith("/")

    @property
    def unix_path(self) -> str:
        return f"{self.host}/.s.PGSQL.{self.port}"


def service_connect_kwargs(target: BackendTarget, password: str | None, ssl, timeout: float,
                           application_name: str | None = None) -> dict:
    """asyncpg.connect / create_pool arguments for pgveil's own connections as the service role."""
    settings = {"search_path": "public"}
    if application_name:
        settings["application_name"] = application_name
    return dict(host=target.host, port=target.port, user=target.user, password=password, database=target.database,
                ssl=ssl or False, timeout=timeout, server_settings=settings)


def parse_dsn(dsn: str) -> BackendTarget:
    """Read host, port, user, database and sslmode; refuse inline passwords."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"backend.dsn: expected a postgresql:// URL or 'embedded', got {dsn!r}")
    if parts.password is not None:
        raise ConfigError("backend.dsn: put the service password in backend.password_env or backend.password_file, not in the DSN")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    host = query.get("host") or unquote(parts.hostname or "") or "127.0.0.1"
    try:
        port = int(query.get("port") or parts.port or 5432)
    except ValueError:
        raise ConfigError(f"backend.dsn: invalid port in {dsn!r}") from None
    user = query.get("user") or unquote(parts.username or "")
    if not user:
        raise ConfigError("backend.dsn: name the service user (postgresql://USER@host:port/db)")
    database = query.get("dbname") or unquote(parts.path.lstrip("/")) or user
    sslmode = query.get("sslmode", "disable")
    return BackendTarget(host, port, user, database, sslmode)
