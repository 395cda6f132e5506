"""psql (the bundled binary) through the proxy behaves as against PostgreSQL."""
from __future__ import annotations

import os
import subprocess

import pytest

from proxy.embedded import embedded_binary

from .pgfixture import PASSWORDS, TEST_DB


def _psql(host_port: tuple[str, int], user: str, password: str, *args: str, stdin: str | None = None):
    env = dict(os.environ, PGPASSWORD=password, PGCONNECT_TIMEOUT="10")
    env.pop("PGSERVICE", None)
    cmd = [str(embedded_binary("psql")), "-X", "-h", host_port[0], "-p", str(host_port[1]), "-U", user, "-d", TEST_DB,
           "-v", "ON_ERROR_STOP=1", *args]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture
def via_proxy(proxy):
    return lambda *a, **k: _psql(("127.0.0.1", proxy.port), "root", PASSWORDS["root"], *a, **k)


@pytest.fixture
def direct(pg):
    return lambda *a, **k: _psql((pg.host, pg.port), pg.service_user, pg.service_password, *a, **k)


@pytest.mark.parametrize("command", [
    "SELECT id, name, price, tags, doc FROM items WHERE id <= 20 ORDER BY id",
    r"\dt",
    r"\d items",
    r"\dn",
    r"\df pg_catalog.lower",
    "SELECT count(*) FROM items; SELECT 'two', 2",
])
def test_psql_output_matches_direct(via_proxy, direct, command):
    through = via_proxy("-c", command)
    assert through.returncode == 0, through.stderr
    assert through.stdout == direct("-c", command).stdout
    assert through.stdout.strip()


def test_psql_script_with_copy_and_transaction(via_proxy, direct):
    script = "\n".join([
        "BEGIN;",
        "SELECT sum(qty) FROM items;",
        r"\copy (SELECT id, name FROM items WHERE id < 5 ORDER BY id) TO STDOUT",
        "COMMIT;",
        r"\echo done",
    ])
    through = via_proxy("-f", "-", stdin=script)
    assert through.returncode == 0, through.stderr
    assert through.stdout == direct("-f", "-", stdin=script).stdout
    assert "1\titem 1" in through.stdout and through.stdout.rstrip().endswith("done")


def test_psql_reports_errors_like_postgres(via_proxy):
    out = via_proxy("-c", "SELECT 1/0")
    assert out.returncode != 0
    assert "ERROR:  division by zero" in out.stderr


def test_psql_wrong_password_message(proxy):
    out = _psql(("127.0.0.1", proxy.port), "root", "not-the-password", "-c", "SELECT 1")
    assert out.returncode != 0
    assert 'FATAL:  password authentication failed for user "root"' in out.stderr
