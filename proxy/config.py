"""The pgveil config file: server settings plus the policy model.

``load_config`` reads YAML, validates it with pydantic and raises
``ConfigError`` with ``file:line: key.path: message`` lines on any problem, so
the proxy refuses to start on a bad file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from rewrite.policy import ConfigError, PolicyConfig, format_validation_error, load_yaml_with_lines
from rewrite.policy.model import Strict


class TlsFiles(Strict):
    """A certificate and its private key (PEM files)."""

    cert: Path = Field(description="PEM certificate chain file.")
    key: Path = Field(description="PEM private key file.")


class Listen(Strict):
    """Where clients connect, and the limits that protect the proxy."""

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(6432, ge=0, le=65535, description="TCP port (0 picks a free one).")
    tls: TlsFiles | None = Field(None, description="Serve TLS when set; SSLRequest is answered 'N' otherwise.")
    max_connections: int = Field(200, ge=1, description="Client connections accepted at once; more are refused with 53300.")
    max_message_size: int = Field(64 * 1024 * 1024, ge=1024, description="Largest client message accepted, in bytes.")
    auth_timeout: float = Field(30.0, gt=0, description="Seconds a client has to finish startup and authentication.")
    shutdown_grace: float = Field(10.0, ge=0, description="Seconds in-flight statements get to finish on SIGTERM.")


class BackendTls(Strict):
    """TLS towards the backend."""

    mode: str = Field("require", pattern="^(disable|prefer|require|verify-ca|verify-full)$", description="libpq-style sslmode.")
    ca: Path | None = Field(None, description="CA bundle for verify-ca / verify-full.")


class Backend(Strict):
    """The real PostgreSQL server and the service credentials pgveil uses on it."""

    dsn: str = Field(description='A postgresql:// URL, or "embedded" for the bundled server.')
    password_env: str | None = Field(None, description="Env var holding the service password.")
    password_file: Path | None = Field(None, description="File holding the service password (first line).")
    data_dir: Path | None = Field(None, description="Data directory of the embedded server (default: the user's data dir).")
    database: str = Field("postgres", description='With dsn "embedded": the database clients connect to (created if missing).')
    tls: BackendTls | None = Field(None, description="TLS to the backend.")
    connect_timeout: float = Field(10.0, gt=0, description="Seconds to wait for the backend.")

    @model_validator(mode="after")
    def _one_password_source(self) -> "Backend":
        if self.password_env and self.password_file:
            raise ValueError("give either password_env or password_file, not both")
        return self

    def password(self) -> str | None:
        """The service password, read from the env var or file named in the config."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(f"backend.password_env: environment variable {self.password_env} is not set")
            return value
        if self.password_file:
            try:
                return self.password_file.read_text().splitlines()[0].strip()
            except (OSError, IndexError) as exc:
                raise ConfigError(f"backend.password_file: cannot read {self.password_file}: {exc}") from None
        return None


class Audit(Strict):
    """Where audit records go."""

    path: Path = Field(description="Directory for JSON-lines audit files.")


class Keys(Strict):
    """The master secret from which pgveil derives per-table keys (hash masks, sampling)."""

    master_key_env: str | None = Field(None, description="Env var holding the master key (hex or any text).")
    master_key_file: Path | None = Field(
        None, description="File holding the master key; created with a random key (mode 0600) if missing. "
        "Default: master.key in the user's pgveil data dir.")


class DPState(Strict):
    """Where the DP answer cache and budget ledger live (shared by every pgveil process pointed at it)."""

    store: Literal["embedded", "postgres"] = Field(
        "embedded", description="embedded: an SQLite file for a single pgveil process; postgres: a schema in a "
        "PostgreSQL database that several pgveil processes share.")
    path: Path | None = Field(None, description="embedded: the SQLite file (default: dp.sqlite in the user's pgveil data dir).")
    dsn: str | None = Field(None, description='postgres: "backend" (the backend database, as the service role) or a '
                            "postgresql:// URL.")
    password_env: str | None = Field(None, description="postgres with a URL: env var holding its password.")
    schema_name: str = Field("pgveil_dp", alias="schema", pattern=r"^[a-z_][a-z0-9_]{0,62}$",
                             description="postgres: the schema for pgveil's tables (created if missing).")

    @model_validator(mode="after")
    def _store_fields(self) -> "DPState":
        if self.store == "postgres" and not self.dsn:
            raise ValueError('dp.store postgres needs dsn ("backend" or a postgresql:// URL)')
        if self.store == "embedded" and self.dsn:
            raise ValueError("dp.dsn is only used with store: postgres")
        return self


class Config(PolicyConfig):
    """A whole pgveil config file."""

    listen: Listen = Field(default_factory=Listen, description="Client-facing listener.")
    backend: Backend = Field(description="The PostgreSQL server behind pgveil.")
    audit: Audit | None = Field(None, description="Audit log; none is written without it.")
    keys: Keys = Field(default_factory=Keys, description="Where the master key for keyed masks comes from.")
    catalog_refresh: float = Field(60.0, gt=0, description="Seconds between re-reads of the backend catalog.")
    dp: DPState = Field(default_factory=DPState, description="State of differentially private answers: cache and budgets.")


def parse_config(text: str, name: str = "<config>", base_dir: Path | None = None) -> Config:
    """Validate config text; relative paths are resolved against ``base_dir``."""
    source = load_yaml_with_lines(text, name)
    if not isinstance(source.data, dict):
        raise ConfigError(f"{name}: the config must be a mapping of sections (listen, backend, users, ...)")
    try:
        config = Config.model_validate(source.data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None
    return _resolve_paths(config, base_dir) if base_dir else config


def _resolve_paths(config: Config, base: Path) -> Config:
    def fix(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else base / p

    backend = config.backend.model_copy(update={"password_file": fix(config.backend.password_file), "data_dir": fix(config.backend.data_dir)})
    listen = config.listen
    if listen.tls:
        listen = listen.model_copy(update={"tls": TlsFiles(cert=fix(listen.tls.cert), key=fix(listen.tls.key))})
    audit = config.audit.model_copy(update={"path": fix(config.audit.path)}) if config.audit else None
    keys = config.keys.model_copy(update={"master_key_file": fix(config.keys.master_key_file)})
    return config.model_copy(update={"backend": backend, "listen": listen, "audit": audit, "keys": keys})


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; raises ConfigError with file:line messages."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from None
    return parse_config(text, str(path), path.resolve().parent)
