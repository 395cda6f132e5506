"""A small clinic database with known rows and the example config's policies, for enforcement tests."""
from __future__ import annotations

from pathlib import Path

import asyncpg
import psycopg
import yaml

from .pgfixture import TEST_DB, PgServer

EXAMPLE = Path(__file__).resolve().parents[2] / "shared" / "docs" / "pgveil.example.yaml"

CLINIC_SQL = """
DROP TABLE IF EXISTS public.patients, public.claims, public.visits CASCADE;
CREATE TABLE public.patients (patient_id int PRIMARY KEY, name text, ssn text, email text, zip text, birth_year int);
CREATE TABLE public.claims (claim_id int PRIMARY KEY, patient_id int, state text, amount numeric(12,2),
                            account_no text, country text, filed_at timestamptz);
CREATE TABLE public.visits (visit_id int PRIMARY KEY, patient_id int, cost numeric(10,2), duration_min int,
                            client_ip text, visited_at timestamptz);
INSERT INTO public.patients VALUES
  (1, 'Ann Smith', '111-22-3333', 'ann@example.com', '63101', 1980),
  (2, 'Bob Jones', '444-55-6666', 'bob@example.com', '63101', 1980),
  (3, 'Cy Young', '777-88-9999', 'cy@example.com', '44101', 1975);
INSERT INTO public.patients SELECT 100 + g, 'P' || g, '000-00-' || lpad(g::text, 4, '0'), 'p' || g || '@x.org',
  '63101', 1980 FROM generate_series(1, 5) g;
INSERT INTO public.claims VALUES
  (1, 1, 'Missouri', 120.00, 'ACC-SECRET-1', 'USA', now() - interval '10 days'),
  (2, 2, 'Ohio', 450.00, 'ACC-SECRET-2', 'USA', now() - interval '20 days'),
  (3, 3, 'Missouri', 25000.00, 'ACC-SECRET-3', 'Canada', now() - interval '5 days'),
  (4, 1, 'Missouri', 80.00, 'ACC-SECRET-4', 'Canada', now() - interval '30 days'),
  (5, 2, 'Missouri', 99.00, 'ACC-SECRET-5', 'USA', now() - interval '800 days');
INSERT INTO public.visits SELECT g, 1 + g % 3, 100 + g, 30, '164.16.13.' || g, now() - g * interval '1 day'
  FROM generate_series(1, 200) g;
"""


async def create_clinic(pg: PgServer) -> None:
    conn = await asyncpg.connect(pg.dsn())
    try:
        await conn.execute(CLINIC_SQL)
        await conn.execute(f"GRANT SELECT ON public.patients, public.claims, public.visits TO {pg.service_user}")
    finally:
        await conn.close()


def clinic_config(path: Path, pg: PgServer, key_file: Path, drop_policies: tuple[str, ...] = (),
                  audit_dir: Path | None = None) -> Path:
    """The example config's policies, with test logins and this test database as backend."""
    config = yaml.safe_load(EXAMPLE.read_text())
    config["policies"] = [p for p in config["policies"] if p["name"] not in drop_policies]
    config["listen"] = {"host": "127.0.0.1", "port": 0}
    config["backend"] = {"dsn": f"postgresql://{pg.service_user}@{pg.host}:{pg.port}/{pg.database}",
                         "password_env": "PGVEIL_TEST_BACKEND_PW"}
    config["keys"] = {"master_key_file": str(key_file)}
    config.pop("audit", None)
    if audit_dir is not None:
        config["audit"] = {"path": str(audit_dir)}
    for name, user in config["users"].items():
        user.pop("password", None)
        user["password_env"] = f"PGVEIL_TEST_PW_{name.upper()}"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# Logins of the example's users (env var per user, as clinic_config writes them).
CLINIC_PASSWORDS = {name: f"{name}-pw" for name in ("alice", "bob", "dana", "carol", "erin", "root")}


def clinic_ready(pg: PgServer, directory: Path, **config) -> Path:
    """The clinic tables loaded and a config for them in ``directory`` (skips without the example config)."""
    import asyncio

    import pytest

    if not EXAMPLE.exists():
        pytest.skip("../shared/docs/pgveil.example.yaml is absent")
    asyncio.run(create_clinic(pg))
    return clinic_config(directory / "pgveil.yaml", pg, directory / "master.key", **config)


def clinic_env(pg: PgServer) -> dict[str, str]:
    import os

    env = dict(os.environ, PGVEIL_TEST_BACKEND_PW=pg.service_password)
    for name, pw in CLINIC_PASSWORDS.items():
        env[f"PGVEIL_TEST_PW_{name.upper()}"] = pw
    return env


def connect_clinic(p, user: str = "alice", **kw):
    """psycopg to the proxy ``p`` as a clinic user (autocommit)."""
    return psycopg.connect(host="127.0.0.1", port=p.port, dbname=TEST_DB, user=user, password=CLINIC_PASSWORDS[user],
                           autocommit=True, **kw)
