"""Shared fixtures: a real PostgreSQL for the session, a proxy in front of it."""
from __future__ import annotations

import asyncio
import shutil

import asyncpg
import pytest

from .pgfixture import TEST_DB, scratch_dir, ProxyThread, client_dsn, proxy_settings, start_postgres

FIXTURE_SQL = """
DROP TABLE IF EXISTS items, events CASCADE;
CREATE TABLE items (
    id int PRIMARY KEY,
    name text,
    price numeric(10,2),
    qty bigint,
    ratio double precision,
    created timestamptz,
    day date,
    active boolean,
    tags text[],
    doc jsonb,
    blob bytea,
    uid uuid,
    span interval
);
INSERT INTO items
SELECT g, 'item ' || g || CASE WHEN g % 7 = 0 THEN ' ünï€ode' ELSE '' END,
       (g * 1.25)::numeric(10,2), g * 1000000000::bigint, g / 3.0,
       timestamptz '2026-01-01 00:00:00+00' + g * interval '1 hour', date '2026-01-01' + g,
       g % 2 = 0, ARRAY['t' || g, 'x'], jsonb_build_object('n', g, 'odd', g % 2 = 1),
       decode(lpad(to_hex(g), 8, '0'), 'hex'), md5(g::text)::uuid, g * interval '1 minute'
FROM generate_series(1, 500) g;
UPDATE items SET name = NULL, price = NULL, doc = NULL WHERE id % 50 = 0;
CREATE TABLE events (id bigserial PRIMARY KEY, kind text NOT NULL, at timestamptz DEFAULT now());
"""


@pytest.fixture(scope="session")
def pg():
    base = scratch_dir()
    server = start_postgres(base / "embedded")

    async def setup():
        conn = await asyncpg.connect(server.dsn())
        try:
            await conn.execute(FIXTURE_SQL)
            # The service role reads the fixtures and may write the events table.
            await conn.execute(f"GRANT USAGE ON SCHEMA public TO {server.service_user}")
            await conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {server.service_user}")
            await conn.execute(f"GRANT INSERT, DELETE ON events TO {server.service_user}")
            await conn.execute(f"GRANT USAGE ON SEQUENCE events_id_seq TO {server.service_user}")
            await conn.execute(f'GRANT TEMP ON DATABASE "{TEST_DB}" TO {server.service_user}')
        finally:
            await conn.close()

    asyncio.run(setup())
    yield server
    if server.stop:
        server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def proxy(pg):
    """A pass-through proxy in front of the test database."""
    p = ProxyThread(proxy_settings(pg))
    yield p
    p.stop()


@pytest.fixture
def proxy_dsn(proxy):
    return client_dsn(proxy.port)


@pytest.fixture
def direct_dsn(pg):
    """The same database reached directly, as the same service role the proxy uses."""
    return pg.dsn(superuser=False)


@pytest.fixture(scope="module")
def governed_proxy(pg, tmp_path_factory):
    """An in-process governed proxy over the clinic tables (the example config's policies); ``reload()`` re-reads its file."""
    from proxy.config import load_config
    from proxy.runner import build_settings, refresh_catalog, reload_config

    from .clinic_fixture import clinic_env, clinic_ready
    from .pgfixture import ProxyThread

    path = clinic_ready(pg, tmp_path_factory.mktemp("lane"), drop_policies=("dp-visits",))
    with pytest.MonkeyPatch.context() as env:
        for name, value in clinic_env(pg).items():
            env.setenv(name, value)
        settings_ = build_settings(load_config(path))
        p = ProxyThread(settings_)
        asyncio.run_coroutine_threadsafe(refresh_catalog(settings_), p.loop).result(30)
        p.reload = lambda: p.call(reload_config, path, settings_)
        p.path = path
        yield p
        p.stop()
