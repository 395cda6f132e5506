"""DP through the wire: a PUMS-like table ``pums`` under a differential_privacy policy, served by ``pgveil serve``.

The table is deterministic (seeded), so tests know every exact answer; the
proxy runs as a real subprocess with its own SQLite store; clients are psycopg
and asyncpg over real sockets.
"""
from __future__ import annotations

import asyncio
import random

import asyncpg
import psycopg
import pytest
import yaml

from ..pgfixture import TEST_DB, scratch_dir
from ..proxyproc import ProxyProcess

PASSWORDS = {"ana": "ana-pw", "ben": "ben-pw", "root": "root-pw"}
N_ROWS = 1000


def pums_rows(n: int = N_ROWS, seed: int = 7) -> list[tuple]:
    """person_id, age, sex, educ, income, married, region, name: a PUMS-like sample."""
    rng = random.Random(seed)
    rows = []
    for i in range(1, n + 1):
        age = rng.randint(18, 93)
        educ = min(16, max(1, int(rng.gauss(10, 3))))
        income = 0 if rng.random() < 0.12 else min(500_000, int(rng.lognormvariate(10.3, 0.8)))
        rows.append((i, age, rng.choice("FM"), educ, income, rng.random() < 0.5, rng.choice(["north", "south"]),
                     f"SECRETNAME{i:04d}"))
    return rows


PUMS_SQL = """
DROP TABLE IF EXISTS public.pums;
CREATE TABLE public.pums (person_id int PRIMARY KEY, age int NOT NULL, sex text NOT NULL, educ int NOT NULL,
                          income int NOT NULL, married boolean NOT NULL, region text NOT NULL, name text NOT NULL);
"""


def dp_config(pg, path, store: dict | None = None, budget: float = 6.0, latency: str = "1h") -> dict:
    config = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "backend": {"dsn": f"postgresql://{pg.service_user}@{pg.host}:{pg.port}/{pg.database}",
                    "password_env": "PGVEIL_TEST_BACKEND_PW"},
        "keys": {"master_key_file": str(path / "master.key")},
        "dp": store or {"store": "embedded", "path": str(path / "dp.sqlite")},
        "users": {
            "ana": {"password_env": "PGVEIL_TEST_PW_ANA", "groups": ["analysts"]},
            "ben": {"password_env": "PGVEIL_TEST_PW_BEN", "groups": ["analysts"]},
            "root": {"password_env": "PGVEIL_TEST_PW_ROOT", "unrestricted": True},
        },
        "tables": {"public.pums": {"key": "person_id"}},
        "policies": [
            {"name": "read-pums", "access": {"tables": ["public.pums"], "allow": {"groups": ["analysts"]}}},
            {"name": "dp-pums", "differential_privacy": {
                "table": "public.pums", "epsilon": 1.0, "latency_tolerance": latency,
                "budget": {"epsilon": budget, "per": "1 day"},
                "bounds": {"age": [0, 100], "income": [0, 500000]},
                "public_keys": {"sex": ["F", "M"]},
                "for": "everyone"}},
        ],
    }
    (path / "pgveil.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return config


def dp_env(pg) -> dict[str, str]:
    import os

    env = dict(os.environ, PGVEIL_TEST_BACKEND_PW=pg.service_password)
    for name, pw in PASSWORDS.items():
        env[f"PGVEIL_TEST_PW_{name.upper()}"] = pw
    return env


async def _load(pg) -> None:
    db = await asyncpg.connect(pg.dsn())
    try:
        await db.execute(PUMS_SQL)
        await db.copy_records_to_table("pums", records=pums_rows())
        await db.execute(f"GRANT SELECT ON public.pums TO {pg.service_user}")
    finally:
        await db.close()


@pytest.fixture(scope="session")
def pums_db(pg):
    asyncio.run(_load(pg))
    return pums_rows()


class DPProxy:
    def __init__(self, pg, **kw) -> None:
        self.dir = scratch_dir()
        self.config = dp_config(pg, self.dir, **kw)
        self.proc = ProxyProcess(self.dir / "pgveil.yaml", dp_env(pg))
        self.port = self.proc.port

    def connect(self, user: str = "ana", **kw) -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=self.port, dbname=TEST_DB, user=user, password=PASSWORDS[user],
                               autocommit=True, **kw)

    def dsn(self, user: str = "ana") -> str:
        return f"postgresql://{user}:{PASSWORDS[user]}@127.0.0.1:{self.port}/{TEST_DB}"

    def stop(self) -> None:
        self.proc.stop()


@pytest.fixture(scope="module")
def dp_proxy(pg, pums_db):
    p = DPProxy(pg)
    yield p
    p.stop()


# The attack suites' shared fixtures, here so every module sees them without importing them
# (at the end: attack_kit builds on DPProxy above).
from .attack_kit import big, conn  # noqa: E402,F401
