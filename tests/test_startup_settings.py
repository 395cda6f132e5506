"""Startup settings through real clients: pinned on the backend, dangerous ones refused."""
from __future__ import annotations

import psycopg
import pytest

from .pgfixture import client_dsn


def test_backend_session_is_pinned(proxy_dsn):
    with psycopg.connect(proxy_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT current_setting('search_path'), current_setting('standard_conforming_strings'),"
                           " current_setting('client_encoding'), current_setting('backslash_quote')").fetchone()
    assert row == ("public", "on", "UTF8", "safe_encoding")


@pytest.mark.parametrize("options", ["-c search_path=pg_temp,public", "-c role=postgres", "-c standard_conforming_strings=off"])
def test_dangerous_startup_options_refused(proxy, options):
    with pytest.raises(psycopg.OperationalError) as err:
        psycopg.connect(client_dsn(proxy.port), options=options)
    name = options.split()[1].split("=")[0]
    assert f"setting '{name}' cannot be chosen at startup through pgveil" in str(err.value)


def test_harmless_startup_options_reach_the_backend(proxy):
    with psycopg.connect(client_dsn(proxy.port), options="-c statement_timeout=1234 -c DateStyle=German",
                         application_name="bi-tool", autocommit=True) as conn:
        row = conn.execute("SELECT current_setting('statement_timeout'), current_setting('DateStyle'),"
                           " current_setting('application_name')").fetchone()
    assert row == ("1234ms", "German, DMY", "bi-tool")


def test_multibyte_client_encoding_refused(proxy):
    with pytest.raises(psycopg.OperationalError, match="pgveil speaks UTF8 only"):
        psycopg.connect(client_dsn(proxy.port), client_encoding="SJIS")
