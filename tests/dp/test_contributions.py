"""Per-person contribution bounds, executed on the real PostgreSQL: one person's many rows count at most L times."""
from __future__ import annotations

import asyncio

import asyncpg
import yaml

from rewrite import DPRequest, RewriteContext, rewrite_sql
from rewrite.decide import PolicySet, Subject
from rewrite.engine.keys import StaticKeys
from rewrite.policy import PolicyConfig

CONFIG = """
users: {ana: {password_env: X, groups: [analysts]}}
tables: {public.dp_multi: {key: person}}
policies:
  - name: read
    access: {tables: [public.dp_multi], allow: {groups: [analysts]}}
  - name: dp-multi
    differential_privacy:
      table: public.dp_multi
      epsilon: 1.0
      bounds: {v: [0, 10]}
      max_rows_per_person: 2
      for: everyone
"""


def test_a_person_contributes_at_most_max_rows(pg):
    from proxy.catalog import load_catalog

    async def go():
        conn = await asyncpg.connect(pg.dsn())
        try:
            await conn.execute("DROP TABLE IF EXISTS dp_multi; CREATE TABLE dp_multi (person int, v int)")
            # person 1: 50 rows of v=10 (a heavy contributor); persons 2..21: one row of v=1
            await conn.execute("INSERT INTO dp_multi SELECT 1, 10 FROM generate_series(1, 50)")
            await conn.execute("INSERT INTO dp_multi SELECT g, 1 FROM generate_series(2, 21) g")
            catalog = await load_catalog(conn)
            cfg = PolicyConfig.model_validate(yaml.safe_load(CONFIG))
            ctx = RewriteContext(Subject("ana", frozenset({"analysts"})), PolicySet.from_config(cfg), catalog,
                                 StaticKeys(b"k"), ("public",), cfg.tags, gate=lambda raw, c: None)
            v = rewrite_sql("SELECT count(*), sum(v) FROM dp_multi", ctx)
            assert isinstance(v, DPRequest)
            plan = v.plan
            assert {m.sensitivity for m in plan.measures if m.kind == "count"} == {2}
            assert {m.sensitivity for m in plan.measures if m.kind == "sum"} == {20}  # L * max bound
            return tuple(await conn.fetchrow(plan.exact_sql))
        finally:
            await conn.execute("DROP TABLE IF EXISTS dp_multi")
            await conn.close()

    count, total = asyncio.run(go())
    assert count == 2 + 20  # person 1 kept twice, the 20 others once
    assert total == 2 * 10 + 20 * 1
