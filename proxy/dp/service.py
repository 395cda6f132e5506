"""DPService: one per proxy; answers DP plans with the store and a pool of service-role connections.

The exact aggregate runs on this pool, not on the client's backend session, so
its rows never travel the client path. Pool connections carry the same
temporary key table as governed sessions (hash masks and sampling inside the
policy view need it) and are rebuilt when the policy state changes.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import Any

import asyncpg

from rewrite.dp.release import release
from rewrite.dp.render import answer_sql
from rewrite.engine.keys import KEY_INSERT, KEY_TABLE_DDL

from ..policy_state import PolicyHolder
from ..session_setup import key_table_rows
from ..session.governor import Forward, Refuse
from .store import BudgetExceeded, Charge, StoreError, open_store

log = logging.getLogger("pgveil.dp")

_UNLIMITED_PERIOD = 86400.0  # spending without a budget is still recorded, per day, for `pgveil budget`
_QUERY_TIMEOUT = 300.0


def _period_text(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds:g} s"


class _Invalid(Exception):
    """The exact query failed to prepare (a constant the column cannot take): refused before any charge."""


class DPService:
    def __init__(self, holder: PolicyHolder, connect_kwargs: dict[str, Any]) -> None:
        self.holder = holder
        self._connect_kwargs = connect_kwargs  # asyncpg.connect arguments for the service role
        self._pool: asyncpg.Pool | None = None
        self._pool_generation: int | None = None
        self._pool_lock = asyncio.Lock()
        self._closing: set[asyncio.Task] = set()
        self.store = open_store(holder.current.config.dp, self._store_pool)
        # Rendered answers by (plan, released values): a cache hit then costs no printing (~0.7 ms with pglast).
        self._rendered: dict[tuple[int, str], tuple[Any, str]] = {}

    async def _store_pool(self) -> asyncpg.Pool:
        return await asyncpg.create_pool(min_size=1, max_size=2, **self._connect_kwargs)

    async def _exact_pool(self) -> asyncpg.Pool:
        async with self._pool_lock:
            if self._pool is None or self._pool_generation != self.holder.generation:
                old, state = self._pool, self.holder.current
                rows = key_table_rows(state.catalog, state.keys)

                async def setup(conn: asyncpg.Connection) -> None:
                    await conn.execute(KEY_TABLE_DDL)
                    await conn.execute("TRUNCATE pg_temp.pgveil_keys")
                    if rows:
                        await conn.executemany(KEY_INSERT, rows)

                self._pool = await asyncpg.create_pool(min_size=1, max_size=4, init=setup, **self._connect_kwargs)
                self._pool_generation = self.holder.generation
                if old is not None:  # closed once its connections are back; referenced so it is not collected
                    task = asyncio.get_running_loop().create_task(old.close())
                    self._closing.add(task)
                    task.add_done_callback(self._closing.discard)
            return self._pool

    async def answer(self, plan: Any) -> Forward | Refuse:
        """The literal-only SQL answering ``plan`` (a rewrite.dp.DPPlan), or why not."""
        s = plan.settings
        cap = s.budget_epsilon if s.budget_epsilon is not None else math.inf
        period = s.budget_period if s.budget_period is not None else _UNLIMITED_PERIOD
        charge = Charge(plan.subject, plan.policy, plan.table, s.epsilon, cap, period)

        held: dict = {}  # the connection and statement validate() prepared, for compute() to run

        async def validate() -> None:  # parse and plan only: reads no rows, so it may fail for free
            pool = await self._exact_pool()
            conn = held["conn"] = await pool.acquire()
            held["pool"] = pool
            try:
                held["stmt"] = await conn.prepare(plan.exact_sql)
            except asyncpg.PostgresError as exc:
                raise _Invalid() from exc

        async def compute() -> list:
            rows = await held["stmt"].fetch(timeout=_QUERY_TIMEOUT)
            return release(plan, [tuple(r) for r in rows])

        try:
            released, _cached = await self.store.answer(plan.cache_key, s.latency_tolerance, charge, compute, validate)
        except _Invalid as exc:
            log.info("DP query on %s refused before running: %s", plan.table, exc.__cause__)
            return Refuse("XX000", f"the differentially private answer on {plan.table} could not be computed: a "
                          "constant in the query does not fit its column; nothing was charged")
        except StoreError as exc:
            log.error("DP store failed: %s", exc)
            return Refuse("58000", f"pgveil's DP store is not available ({exc}); nothing was charged")
        except BudgetExceeded as exc:
            return Refuse("42501", f"privacy budget exhausted for table {plan.table} (policy {plan.policy}): this "
                          f"answer costs epsilon {s.epsilon:g}, remaining {exc.remaining:g} of {exc.cap:g} per "
                          f"{_period_text(exc.period)}")
        except asyncpg.PostgresError as exc:
            # The backend's message could quote a value; only its class reaches the client.
            log.warning("DP exact query for %s failed: %s", plan.table, exc)
            return Refuse("XX000", f"the differentially private answer on {plan.table} could not be computed; "
                          "the budget for it is spent")
        except (OSError, asyncio.TimeoutError) as exc:
            log.error("DP exact query for %s failed: %s", plan.table, exc)
            return Refuse("08006", f"pgveil could not reach the backend to answer on {plan.table}")
        except Exception as exc:  # fail closed
            log.exception("DP answer for %s failed", plan.table)
            return Refuse("XX000", f"pgveil could not compute the differentially private answer ({type(exc).__name__})")
        finally:
            if "conn" in held:
                await held["pool"].release(held["conn"])
        return Forward(self._render(plan, released), (plan.table,), (plan.policy,))

    def _render(self, plan: Any, released: list) -> str:
        key = (id(plan), json.dumps(released))
        hit = self._rendered.get(key)
        if hit is not None and hit[0] is plan:
            return hit[1]
        sql = answer_sql(plan, released)
        if len(self._rendered) >= 4096:
            self._rendered.clear()
        self._rendered[key] = (plan, sql)  # the plan is held, so its id is not reused while the entry lives
        return sql

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        await self.store.close()
