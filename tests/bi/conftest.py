"""A governed ``pgveil serve`` on the clinic database (plus conftest's ``items``), for BI-tool tests.

The example config's policies, all of them (``dp-visits`` included: visits is
then refused to analysts, so it must not be listed for them either). Users:
alice (analyst, purpose Research.Marketing available), erin (contractor, denied
the clinic tables), root (unrestricted).
"""
from __future__ import annotations

import os
import subprocess

import psycopg
import pytest

from proxy.embedded import embedded_binary

from ..clinic_fixture import CLINIC_PASSWORDS, clinic_env, clinic_ready
from ..pgfixture import TEST_DB
from ..proxyproc import ProxyProcess

CLINIC_TABLES = ("patients", "claims", "visits")


@pytest.fixture(scope="package")
def bi_proxy(pg, tmp_path_factory):
    path = clinic_ready(pg, tmp_path_factory.mktemp("bi"))
    proc = ProxyProcess(path, clinic_env(pg))
    yield proc
    proc.stop()


@pytest.fixture(scope="package")
def dsn(bi_proxy):
    def make(user: str, purpose: str | None = None, driver: str = "") -> str:
        from urllib.parse import quote

        url = f"postgresql{driver}://{user}:{quote(CLINIC_PASSWORDS[user])}@127.0.0.1:{bi_proxy.port}/{TEST_DB}"
        if purpose:
            url += "?options=" + quote(f"-c pgveil.purpose={purpose}")
        return url
    return make


@pytest.fixture(scope="package")
def connect(bi_proxy):
    def make(user: str, purpose: str | None = None, **kw):
        options = f"-c pgveil.purpose={purpose}" if purpose else None
        return psycopg.connect(host="127.0.0.1", port=bi_proxy.port, dbname=TEST_DB, user=user,
                               password=CLINIC_PASSWORDS[user], options=options, autocommit=True, **kw)
    return make


@pytest.fixture(scope="package")
def psql(bi_proxy):
    def run(user: str, *commands: str, purpose: str | None = None) -> subprocess.CompletedProcess:
        env = dict(os.environ, PGPASSWORD=CLINIC_PASSWORDS[user], PGCONNECT_TIMEOUT="10")
        env.pop("PGSERVICE", None)
        if purpose:
            env["PGOPTIONS"] = f"-c pgveil.purpose={purpose}"
        args = [a for c in commands for a in ("-c", c)]
        cmd = [str(embedded_binary("psql")), "-X", "-h", "127.0.0.1", "-p", str(bi_proxy.port), "-U", user,
               "-d", TEST_DB, "-v", "ON_ERROR_STOP=1", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    return run
