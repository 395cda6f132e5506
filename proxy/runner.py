"""Turn a validated Config into a running Proxy, and run it until a signal.

Resolves the backend (an external DSN or the embedded server), reads secrets
from env vars or files, prepares TLS contexts and user verifiers, then serves
until SIGTERM/SIGINT, shutting down gracefully.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import ssl

import asyncpg

from rewrite.catalog import Catalog
from rewrite.policy import ConfigError

from .auth import BadVerifier, Verifier, parse_verifier, verifier_from_secret
from .catalog import load_catalog
from .config import Config, load_config
from .policy_state import PolicyHolder, PolicyState
from .dsn import BackendTarget, parse_dsn, service_connect_kwargs
from .server import Proxy, ServerSettings

log = logging.getLogger("pgveil")


def user_verifiers(config: Config) -> dict[str, Verifier]:
    """Each user's SCRAM verifier; a user whose secret is missing cannot log in (logged)."""
    out: dict[str, Verifier] = {}
    for name, user in config.users.items():
        secret = user.password
        if secret is None and user.password_env:
            secret = os.environ.get(user.password_env)
            if secret is None:
                log.warning("user %s: environment variable %s is not set; the user cannot log in", name, user.password_env)
                continue
        try:
            out[name] = parse_verifier(secret) if secret.startswith("SCRAM-SHA-256$") else verifier_from_secret(secret)
        except BadVerifier as exc:
            log.warning("user %s: %s; the user cannot log in", name, exc)
    return out


def backend_target(config: Config) -> tuple[BackendTarget, str | None]:
    """Where the backend is and the service password, starting the embedded server if asked."""
    b = config.backend
    if b.dsn == "embedded":
        from .embedded import ensure_embedded

        info = ensure_embedded(b.data_dir, databases=[b.database])
        return BackendTarget(info.host, info.port, info.service_user, b.database), info.service_password
    target = parse_dsn(b.dsn)
    return target, b.password()


def client_tls_context(config: Config) -> ssl.SSLContext | None:
    tls = config.listen.tls
    if tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"listen.tls: cannot load certificate/key: {exc}") from None
    return ctx


def backend_tls_context(config: Config, target: BackendTarget) -> ssl.SSLContext | None:
    tls = config.backend.tls
    mode = tls.mode if tls else target.sslmode
    if mode == "disable":
        return None
    ctx = ssl.create_default_context(cafile=str(tls.ca) if tls and tls.ca else None)
    if mode in ("prefer", "require", "allow"):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif mode == "verify-ca":
        ctx.check_hostname = False
    return ctx


def build_settings(config: Config) -> ServerSettings:
    target, password = backend_target(config)
    listen = config.listen
    verifiers = user_verifiers(config)
    return ServerSettings(
        host=listen.host,
        port=listen.port,
        target=target,
        backend_password=password,
        users=verifiers,
        holder=PolicyHolder(PolicyState.build(config, verifiers)),
        tls=client_tls_context(config),
        backend_tls=backend_tls_context(config, target),
        max_connections=listen.max_connections,
        max_message_size=listen.max_message_size,
        auth_timeout=listen.auth_timeout,
        connect_timeout=config.backend.connect_timeout,
    )


def install_event_loop_policy() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def load_backend_catalog(settings: ServerSettings) -> Catalog:
    """Introspect the backend as the service role (what pgveil itself can see)."""
    conn = await asyncpg.connect(**service_connect_kwargs(settings.target, settings.backend_password,
                                                          settings.backend_tls, settings.connect_timeout))
    try:
        return await load_catalog(conn)
    finally:
        await conn.close()


async def refresh_catalog(settings: ServerSettings) -> bool:
    """Load the catalog into the current PolicyState; False (logged) when the backend can't be read."""
    holder = settings.holder
    try:
        catalog = await load_backend_catalog(settings)
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
        log.error("cannot read the backend catalog (governed statements are refused until it loads): %s", exc)
        return False
    if holder.current.catalog is None or holder.current.catalog.version != catalog.version:
        holder.swap(holder.current.with_catalog(catalog))
        log.info("catalog loaded: %d relations (version %s)", len(catalog.relations), catalog.version)
    from .check import log_catalog_findings

    log_catalog_findings(holder)  # config vs database, logged once per (policy, catalog) version; never refuses
    return True


def reload_config(path, settings: ServerSettings) -> bool:
    """Validate the config file again and swap it in whole; on any error keep the old one."""
    holder = settings.holder
    try:
        config = load_config(path)
        verifiers = user_verifiers(config)
        state = PolicyState.build(config, verifiers, holder.current.catalog)
    except ConfigError as exc:
        log.error("config reload rejected, the previous policy stays in force:\n%s", exc)
        return False
    holder.swap(state)
    log.info("config reloaded from %s (policy version %s)", path, state.policies.version)
    return True


async def _watch(path, settings: ServerSettings, interval: float, stop: asyncio.Event) -> None:
    """Reload on a change of the config file; refresh the catalog periodically."""
    last = _mtime(path)
    next_catalog = asyncio.get_running_loop().time() + settings.holder.current.config.catalog_refresh
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except asyncio.TimeoutError:
            pass
        if path is not None and _mtime(path) != last:
            last = _mtime(path)
            reload_config(path, settings)
        now = asyncio.get_running_loop().time()
        if now >= next_catalog or settings.holder.current.catalog is None:
            await refresh_catalog(settings)
            next_catalog = now + settings.holder.current.config.catalog_refresh


def _mtime(path) -> float | None:
    try:
        return os.stat(path).st_mtime_ns if path is not None else None
    except OSError:
        return None


async def serve(config: Config, settings: ServerSettings | None = None, on_ready=None, config_path=None) -> None:
    """Run the proxy until SIGTERM or SIGINT, then shut down gracefully."""
    settings = settings or build_settings(config)
    writer = None
    if config.audit is not None and settings.audit is None:
        from .audit import AuditWriter

        writer = AuditWriter(config.audit.path)
        settings = dataclasses.replace(settings, audit=writer.write)
    await refresh_catalog(settings)
    proxy = Proxy(settings)
    await proxy.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if config_path is not None:
        loop.add_signal_handler(signal.SIGHUP, lambda: reload_config(config_path, settings))
    watcher = loop.create_task(_watch(config_path, settings, 1.0, stop))
    log.info("pgveil listening on %s:%d, backend %s:%d/%s", settings.host, proxy.port, settings.target.host,
             settings.target.port, settings.target.database)
    if on_ready is not None:
        on_ready(proxy)
    await stop.wait()
    watcher.cancel()
    log.info("shutting down: waiting up to %.0fs for in-flight statements", config.listen.shutdown_grace)
    await proxy.shutdown(config.listen.shutdown_grace)
    if writer is not None:
        await loop.run_in_executor(None, writer.close)  # flush every record before exiting
