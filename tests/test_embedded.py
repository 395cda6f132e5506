"""The bundled PostgreSQL: init, SCRAM over TCP, least privilege, reuse, restart, stop.

Self-contained: starts its own throwaway servers (fsync off) under pytest's tmp dirs.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import asyncpg
import pytest

from proxy import embedded
from tests.pgfixture import scratch_dir
from proxy.embedded import (
    EmbeddedError,
    EmbeddedInfo,
    default_data_dir,
    embedded_binary,
    ensure_embedded,
    grant_read,
    run_sql,
    stop_embedded,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def server():
    data_dir = scratch_dir() / "pg"
    info = ensure_embedded(data_dir, databases=["app"], fast_unsafe=True)
    try:
        yield info
    finally:
        stop_embedded(data_dir)
        shutil.rmtree(data_dir.parent, ignore_errors=True)


def _postmaster_pid(info: EmbeddedInfo) -> int:
    return int((info.data_dir / "pgdata" / "postmaster.pid").read_text().splitlines()[0])


def _accepts(info: EmbeddedInfo) -> bool:
    rc = subprocess.run(
        [str(embedded_binary("pg_isready")), "-q", "-h", info.host, "-p", str(info.port), "-t", "2"]
    ).returncode
    return rc == 0


def _fetch(dsn: str, sql: str):
    async def go():
        # Short timeouts: a wrong port must fail fast, not after asyncpg's default 60 s.
        conn = await asyncpg.connect(dsn, timeout=20, command_timeout=30)
        try:
            return await conn.fetch(sql)
        finally:
            await conn.close()

    return asyncio.run(go())


def test_service_user_connects_over_tcp_with_scram(server):
    assert server.host == "127.0.0.1"
    row = _fetch(server.dsn("app"), "SELECT current_user, system_user, inet_server_addr()::text AS addr")[0]
    assert row["current_user"] == "pgveil_service"
    # system_user records the authentication method that was actually used.
    assert row["system_user"] == "scram-sha-256:pgveil_service"
    assert row["addr"] == "127.0.0.1/32"

    wrong = server.dsn("app").replace(server.service_password, "not-the-password")
    with pytest.raises(asyncpg.InvalidPasswordError):
        _fetch(wrong, "SELECT 1")


def test_superuser_dsn_and_stored_verifiers(server):
    rows = _fetch(
        server.dsn("postgres", superuser=True),
        "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolcanlogin,"
        " rolpassword FROM pg_authid WHERE rolname IN ('postgres', 'pgveil_service') ORDER BY rolname",
    )
    by_name = {r["rolname"]: r for r in rows}
    svc = by_name["pgveil_service"]
    assert svc["rolcanlogin"]
    assert not any(svc[k] for k in ("rolsuper", "rolcreatedb", "rolcreaterole", "rolreplication", "rolbypassrls"))
    for r in rows:
        assert r["rolpassword"].startswith("SCRAM-SHA-256$4096:")
    assert by_name["postgres"]["rolsuper"]


def test_password_files_are_private(server):
    for name in ("service.password", "superuser.password"):
        path = server.data_dir / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (server.data_dir / "service.password").read_text().strip() == server.service_password
    assert server.service_password not in repr(server)


def test_grant_read_gives_exactly_read(server):
    run_sql(
        server,
        "CREATE SCHEMA IF NOT EXISTS gov; CREATE TABLE gov.t (id int); INSERT INTO gov.t VALUES (1), (2);",
        dbname="app",
    )
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        _fetch(server.dsn("app"), "SELECT count(*) FROM gov.t")

    grant_read(server, "app", schema="gov")
    assert _fetch(server.dsn("app"), "SELECT count(*) AS n FROM gov.t")[0]["n"] == 2

    # Future tables are readable too (default privileges), still read-only.
    run_sql(server, "CREATE TABLE gov.later (x text); INSERT INTO gov.later VALUES ('a');", dbname="app")
    assert _fetch(server.dsn("app"), "SELECT x FROM gov.later")[0]["x"] == "a"

    async def writes():
        conn = await asyncpg.connect(server.dsn("app"))
        try:
            await conn.execute("CREATE TEMP TABLE scratch (i int)")  # TEMP is granted
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("INSERT INTO gov.t VALUES (3)")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("CREATE TABLE gov.mine (i int)")
        finally:
            await conn.close()

    asyncio.run(writes())


def test_second_ensure_reuses_running_server(server):
    pid = _postmaster_pid(server)
    started = time.monotonic()
    again = ensure_embedded(server.data_dir, databases=["app", "other"], fast_unsafe=True)
    assert time.monotonic() - started < 5
    assert again.port == server.port
    assert again.service_password == server.service_password
    assert _postmaster_pid(again) == pid
    # The new database was created on the running server and the old one kept.
    names = {r["datname"] for r in _fetch(server.dsn("postgres", superuser=True), "SELECT datname FROM pg_database")}
    assert {"app", "other"} <= names


def test_stop_restart_keeps_port_and_data(server):
    stop_embedded(server.data_dir)
    assert not _accepts(server)
    assert not (server.data_dir / "pgdata" / "postmaster.pid").exists()
    stop_embedded(server.data_dir)  # stopping a stopped server is a no-op

    started = time.monotonic()
    info = ensure_embedded(server.data_dir, fast_unsafe=True)
    warm = time.monotonic() - started
    assert warm < 5, f"warm start took {warm:.1f}s"
    assert info.port == server.port
    assert _fetch(server.dsn("app"), "SELECT count(*) AS n FROM gov.t")[0]["n"] == 2


def test_busy_port_moves_to_a_free_one(server):
    stop_embedded(server.data_dir)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        squatter.bind(("127.0.0.1", server.port))
        squatter.listen()
        info = ensure_embedded(server.data_dir, fast_unsafe=True)
    finally:
        squatter.close()
    assert info.port != server.port
    assert int((server.data_dir / "port").read_text()) == info.port
    assert _fetch(info.dsn("app"), "SELECT 1 AS one")[0]["one"] == 1
    # Later ensures reuse the new port.
    assert ensure_embedded(server.data_dir).port == info.port


def test_start_failure_reports_server_log(server):
    stop_embedded(server.data_dir)
    auto_conf = server.data_dir / "pgdata" / "postgresql.auto.conf"
    original = auto_conf.read_text()
    auto_conf.write_text(original + "\nshared_buffers = 'lots'\n")
    try:
        with pytest.raises(EmbeddedError) as err:
            ensure_embedded(server.data_dir, fast_unsafe=True)
        message = str(err.value)
        assert "failed to start" in message
        assert "shared_buffers" in message  # from the server log tail
    finally:
        auto_conf.write_text(original)
    ensure_embedded(server.data_dir, fast_unsafe=True)


def test_stale_postmaster_pid_is_ignored(server):
    """A pid file left by a crash, naming a dead pid or a pid reused by another program."""
    stop_embedded(server.data_dir)
    pidfile = server.data_dir / "pgdata" / "postmaster.pid"
    gone = subprocess.Popen(["true"])
    gone.wait()
    for pid in (gone.pid, os.getpid()):
        pidfile.write_text(f"{pid}\n{pidfile.parent}\n1700000000\n{server.port}\n\n127.0.0.1\n")
        stop_embedded(server.data_dir)  # must not signal that pid
        info = ensure_embedded(server.data_dir, fast_unsafe=True)
        assert _fetch(info.dsn("app"), "SELECT 1 AS one")[0]["one"] == 1
        assert _postmaster_pid(info) not in (gone.pid, os.getpid())
        stop_embedded(server.data_dir)
    ensure_embedded(server.data_dir, fast_unsafe=True)


def test_concurrent_first_init_from_two_processes():
    data_dir = scratch_dir() / "pg"
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from proxy.embedded import ensure_embedded
        info = ensure_embedded(Path({str(data_dir)!r}), databases=["shared"], fast_unsafe=True)
        print(info.port, info.service_password)
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        outs = [p.communicate(timeout=120) for p in procs]
        for p, (out, errtext) in zip(procs, outs):
            assert p.returncode == 0, errtext
        assert outs[0][0] == outs[1][0]  # same port and same password: one cluster
        port = int(outs[0][0].split()[0])
        info = ensure_embedded(data_dir, fast_unsafe=True)
        assert info.port == port
        assert _fetch(info.dsn("shared"), "SELECT current_database() AS d")[0]["d"] == "shared"
    finally:
        stop_embedded(data_dir)
        shutil.rmtree(data_dir.parent, ignore_errors=True)


def test_long_data_dir_falls_back_to_short_socket_dir(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    sock = embedded._socket_dir_for(deep)
    assert sock != deep / "socket"
    assert len(os.fsencode(sock / ".s.PGSQL.65535.lock")) <= 107
    assert sock == embedded._socket_dir_for(deep)  # stable across calls
    assert embedded._socket_dir_for(tmp_path / "pg") == tmp_path / "pg" / "socket"


def test_fast_unsafe_refused_for_default_data_dir():
    with pytest.raises(ValueError):
        ensure_embedded(fast_unsafe=True)
    with pytest.raises(ValueError):
        ensure_embedded(default_data_dir(), fast_unsafe=True)


def test_embedded_binary():
    for name in ("psql", "pgbench", "pg_ctl", "initdb", "postgres"):
        path = embedded_binary(name)
        assert path.is_file() and os.access(path, os.X_OK)
    out = subprocess.run([str(embedded_binary("psql")), "--version"], capture_output=True, text=True, check=True)
    assert "PostgreSQL" in out.stdout
    with pytest.raises(FileNotFoundError):
        embedded_binary("no_such_program")
    with pytest.raises(ValueError):
        embedded_binary("../bin/psql")
