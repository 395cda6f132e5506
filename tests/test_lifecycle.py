"""Cancel, vanishing clients, graceful shutdown and startup refusal, end to end."""
from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time

import asyncpg
import psycopg
import pytest

from .pgfixture import client_dsn
from .polling import wait_until
from .proxyproc import ProxyProcess, env_for, write_config


def _running(direct_dsn: str, marker: str) -> int:
    with psycopg.connect(direct_dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s AND pid <> pg_backend_pid()",
            (f"%{marker}%",)).fetchone()[0]


def test_cancel_request_cancels_the_right_query(proxy_dsn, pg):
    with psycopg.connect(proxy_dsn, autocommit=True) as victim, psycopg.connect(proxy_dsn, autocommit=True) as bystander:
        errors = []

        def long_query():
            try:
                victim.execute("SELECT pg_sleep(20) /* cancel-me */")
            except psycopg.errors.QueryCanceled as exc:
                errors.append(exc)

        t = threading.Thread(target=long_query)
        started = time.monotonic()
        t.start()
        time.sleep(0.5)
        bystander_thread = threading.Thread(target=lambda: bystander.execute("SELECT pg_sleep(1.5)"))
        bystander_thread.start()
        victim.cancel_safe(timeout=5)  # cancel() holds the GIL in libpq, starving the in-process proxy
        t.join(10)
        bystander_thread.join(10)
        assert len(errors) == 1, "the query was not cancelled"
        assert "canceling statement due to user request" in str(errors[0])
        assert time.monotonic() - started < 10
        assert victim.execute("SELECT 7").fetchone() == (7,)  # still usable after the cancel
        assert bystander.execute("SELECT 8").fetchone() == (8,)  # the other session was not hit


def test_vanished_client_gets_backend_query_cancelled(proxy_dsn, pg):
    direct = pg.dsn()
    marker = "vanish-marker-31337"

    async def vanish():
        conn = await asyncpg.connect(proxy_dsn)
        task = asyncio.ensure_future(conn.fetch(f"SELECT pg_sleep(30) /* {marker} */"))
        await asyncio.sleep(0.5)
        conn.terminate()  # drop the socket mid-query, no Terminate message
        task.cancel()

    asyncio.run(vanish())
    assert wait_until(lambda: _running(direct, marker) == 0, 5, 0.1), "backend query still running after the client vanished"


def test_backend_sessions_closed_with_their_clients(proxy_dsn, pg):
    direct = pg.dsn()
    app = "pgveil-close-check"

    def count():
        with psycopg.connect(direct, autocommit=True) as c:
            return c.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,)).fetchone()[0]

    conns = [psycopg.connect(proxy_dsn, autocommit=True, application_name=app) for _ in range(3)]
    assert count() == 3
    for c in conns:
        c.close()
    assert wait_until(lambda: count() == 0, 5, 0.1)


@pytest.fixture
def proxy_process(tmp_path, pg):
    procs = []

    def start(**listen):
        p = ProxyProcess(write_config(tmp_path / "pgveil.yaml", pg, **listen), env_for(pg))
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()


def test_sigterm_lets_in_flight_statement_finish(proxy_process):
    p = proxy_process(shutdown_grace=10)
    dsn = client_dsn(p.port)
    result = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        t = threading.Thread(target=lambda: result.append(conn.execute("SELECT pg_sleep(1.5), 'finished'").fetchone()[1]))
        t.start()
        time.sleep(0.5)
        p.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(psycopg.OperationalError):  # no new connections while draining
            psycopg.connect(dsn, connect_timeout=3)
        t.join(10)
    assert result == ["finished"]
    assert p.proc.wait(10) == 0


def test_sigterm_bounded_by_grace(proxy_process):
    p = proxy_process(shutdown_grace=1)
    conn = psycopg.connect(client_dsn(p.port), autocommit=True)
    errors = []

    def run():
        try:
            conn.execute("SELECT pg_sleep(30)")
        except psycopg.OperationalError as exc:
            errors.append(str(exc))

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.5)
    started = time.monotonic()
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(15) == 0
    assert time.monotonic() - started < 6
    t.join(10)
    assert errors and "terminating connection due to administrator command" in errors[0]


def test_invalid_config_refuses_to_start(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen:\n  host: 127.0.0.1\n  prot: 5432\nbackend:\n  dsn: embedded\n")
    out = subprocess.run([sys.executable, "-m", "proxy", "serve", "--config", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"{bad}:3: listen.prot: Extra inputs are not permitted" in out.stderr


def test_inline_backend_password_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("backend:\n  dsn: postgresql://svc:hunter2@127.0.0.1:5432/db\n")
    out = subprocess.run([sys.executable, "-m", "proxy", "serve", "--config", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "not in the DSN" in out.stderr
    assert "hunter2" not in out.stderr
