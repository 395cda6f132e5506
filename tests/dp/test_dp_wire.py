"""Differentially private answers through the proxy: shapes, types, caching, budget, refusals."""
from __future__ import annotations

import asyncio

import asyncpg
import psycopg
import pytest

from .conftest import DPProxy


def exact(rows, pred=lambda r: True):
    return [r for r in rows if pred(r)]


def test_count_is_noisy_close_and_typed(dp_proxy, pums_db):
    with dp_proxy.connect() as conn:
        cur = conn.execute("SELECT count(*) FROM pums")
        (value,) = cur.fetchone()
        assert cur.description[0].name == "count"
        assert cur.description[0].type_code == 20  # bigint, as PostgreSQL's count
        assert isinstance(value, int) and abs(value - len(pums_db)) <= 30


def test_smoke_group_avg(dp_proxy, pums_db):
    with dp_proxy.connect() as conn:
        rows = conn.execute("SELECT sex, avg(income) AS a, count(*) FROM pums WHERE age >= 40 GROUP BY sex ORDER BY sex").fetchall()
    assert [r[0] for r in rows] == ["F", "M"]
    print(rows)
