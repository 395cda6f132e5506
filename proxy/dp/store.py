"""The answer cache and the budget ledger, in SQLite (one process) or PostgreSQL (shared).

Both stores do the same thing in ``answer``, under a lock per cache key (an
asyncio lock, and for PostgreSQL a transaction-level advisory lock, so two
pgveil processes never compute one answer twice):

1. a cached answer younger than the latency tolerance is returned; it costs nothing;
2. otherwise the subject's spending in the last budget period is summed and the
   charge is recorded *before* the exact query runs; past the cap the answer is
   refused (BudgetExceeded carries what is left);
3. the answer is computed, and cached when the tolerance is above 0.

``validate`` (optional) runs between 1 and 2: the service prepares the exact query there, so a constant
that cannot be read for its column (``age = 'abc'``) fails before anything is charged.

The budget is a rolling window: what was spent in the last ``period`` seconds.
A charge is kept even when the computation fails afterwards (the query has run).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import asyncpg
import platformdirs

Compute = Callable[[], Awaitable[Any]]


class StoreError(Exception):
    """The cache / ledger could not be read or written (before anything was charged or run)."""


class BudgetExceeded(Exception):
    def __init__(self, remaining: float, cap: float, period: float) -> None:
        super().__init__(f"remaining {remaining:g} of {cap:g}")
        self.remaining, self.cap, self.period = remaining, cap, period


@dataclass(frozen=True)
class Charge:
    subject: str
    policy: str
    table: str
    epsilon: float
    cap: float
    period: float


@dataclass(frozen=True)
class Spending:
    policy: str
    table: str
    spent: float
    cap: float | None
    period: float | None
    answers: int


_EPS = 1e-9


def _check_budget(spent: float, charge: Charge) -> None:
    if spent + charge.epsilon > charge.cap + _EPS:
        raise BudgetExceeded(max(0.0, charge.cap - spent), charge.cap, charge.period)


class _KeyLocks:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def get(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            if len(self._locks) > 10_000:
                self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            lock = self._locks[key] = asyncio.Lock()
        return lock


class _Memo:
    """Answers this process has read or written, until they expire: a hit needs no store round trip.

    Safe for a shared store too: an answer never changes before it expires, and hits cost no budget.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Any, float]] = {}

    def get(self, key: str, now: float) -> Any:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] <= now:
            del self._entries[key]
            return None
        return entry[0]

    def put(self, key: str, released: Any, expires: float) -> None:
        if len(self._entries) >= 10_000:
            self._entries.clear()
        self._entries[key] = (released, expires)


class SQLiteStore:
    """One file; charges are atomic across processes (BEGIN IMMEDIATE), the cache lock is per process."""

    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, payload TEXT NOT NULL, created REAL NOT NULL, "
        "expires REAL NOT NULL)",
        "CREATE TABLE IF NOT EXISTS ledger (subject TEXT NOT NULL, policy TEXT NOT NULL, tbl TEXT NOT NULL, "
        "epsilon REAL NOT NULL, at REAL NOT NULL, cap REAL NOT NULL, period REAL NOT NULL)",
        "CREATE INDEX IF NOT EXISTS ledger_window ON ledger (subject, policy, tbl, at)",
    )

    def __init__(self, path: Path | None) -> None:
        self.path = Path(path) if path else Path(platformdirs.user_data_dir("pgveil")) / "dp.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        for ddl in self.SCHEMA:
            self._db.execute(ddl)
        self._locks = _KeyLocks()
        self._memo = _Memo()

    def _cached(self, key: str, now: float) -> Any:
        row = self._db.execute("SELECT payload, expires FROM answers WHERE key = ? AND expires > ?", (key, now)).fetchone()
        if row is None:
            return None
        released = json.loads(row[0])
        self._memo.put(key, released, row[1])
        return released

    def _charge(self, c: Charge, now: float) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            (spent,) = db.execute("SELECT coalesce(sum(epsilon), 0) FROM ledger WHERE subject = ? AND policy = ? "
                                  "AND tbl = ? AND at > ?", (c.subject, c.policy, c.table, now - c.period)).fetchone()
            _check_budget(spent, c)
            db.execute("INSERT INTO ledger VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (c.subject, c.policy, c.table, c.epsilon, now, c.cap, c.period))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def answer(self, key: str, ttl: float, charge: Charge | None, compute: Compute,
                     validate: Compute | None = None) -> tuple[Any, bool]:
        now = time.time()
        hit = self._memo.get(key, now) if ttl > 0 else None
        if hit is not None:
            return hit, True
        async with self._locks.get(key):
            now = time.time()
            hit = self._cached(key, now) if ttl > 0 else None
            if hit is not None:
                return hit, True
            if validate is not None:
                await validate()  # raises before anything is charged
            if charge is not None:
                self._charge(charge, now)
            released = await compute()
            if ttl > 0:
                self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)",
                                 (key, json.dumps(released), now, now + ttl))
                self._memo.put(key, released, now + ttl)
            return released, False

    async def spending(self, subject: str, now: float | None = None) -> list[Spending]:
        now = time.time() if now is None else now
        rows = self._db.execute(
            "SELECT policy, tbl, sum(CASE WHEN at > ? - period THEN epsilon ELSE 0 END), max(cap), max(period), "
            "sum(CASE WHEN at > ? - period THEN 1 ELSE 0 END) FROM ledger WHERE subject = ? GROUP BY policy, tbl "
            "ORDER BY policy, tbl", (now, now, subject)).fetchall()
        return [Spending(*r) for r in rows]

    async def close(self) -> None:
        self._db.close()


def _lock_id(*parts: str) -> int:
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresStore:
    """A schema of two tables; advisory locks make the cache and the ledger safe across processes."""

    def __init__(self, connect: Callable[[], Awaitable[Any]], schema: str) -> None:
        self._connect = connect  # returns an asyncpg pool
        self._schema = schema  # validated by the config: [a-z_][a-z0-9_]*
        self._pool = None
        self._pool_lock = asyncio.Lock()  # two first callers must not each create a pool
        self._locks = _KeyLocks()
        self._memo = _Memo()

    def _sql(self, text: str) -> str:
        return text.replace("{s}", f'"{self._schema}"')

    async def _ready(self):
        async with self._pool_lock:
            return self._pool or await self._create()

    async def _create(self):
        if self._pool is None:
            pool = await self._connect()
            async with pool.acquire() as c:
                if not await c.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", self._schema):
                    await c.execute(self._sql("CREATE SCHEMA {s}"))  # needs CREATE on the database (docs/dp.md)
                await c.execute(self._sql(
                    "CREATE TABLE IF NOT EXISTS {s}.answers (key text PRIMARY KEY, payload jsonb NOT NULL, "
                    "created float8 NOT NULL, expires float8 NOT NULL);"
                    "CREATE TABLE IF NOT EXISTS {s}.ledger (subject text NOT NULL, policy text NOT NULL, "
                    "tbl text NOT NULL, epsilon float8 NOT NULL, at float8 NOT NULL, cap float8 NOT NULL, "
                    "period float8 NOT NULL);"
                    "CREATE INDEX IF NOT EXISTS ledger_window ON {s}.ledger (subject, policy, tbl, at);"))
            self._pool = pool
        return self._pool

    async def answer(self, key: str, ttl: float, charge: Charge | None, compute: Compute,
                     validate: Compute | None = None) -> tuple[Any, bool]:
        hit = self._memo.get(key, time.time()) if ttl > 0 else None
        if hit is not None:
            return hit, True
        try:
            pool = await self._ready()
        except (OSError, asyncpg.PostgresError) as exc:
            raise StoreError(str(exc)) from None
        async with self._locks.get(key), pool.acquire() as c:
            tr = c.transaction()
            await tr.start()
            try:
                await c.execute("SELECT pg_advisory_xact_lock($1)", _lock_id("answer", key))
                now = time.time()
                if ttl > 0:
                    row = await c.fetchrow(self._sql("SELECT payload, expires FROM {s}.answers WHERE key = $1 "
                                                     "AND expires > $2"), key, now)
                    if row is not None:
                        await tr.commit()
                        released = json.loads(row["payload"])
                        self._memo.put(key, released, row["expires"])
                        return released, True
                if validate is not None:
                    await validate()  # raises before anything is charged
                if charge is not None:
                    await self._charge(c, charge, now)
            except asyncpg.PostgresError as exc:  # the store's own statements: rolled back, nothing charged
                await tr.rollback()
                raise StoreError(str(exc)) from None
            except BaseException:
                await tr.rollback()
                raise
            try:
                released = await compute()
            except BaseException:
                await tr.commit()  # the charge stands: the exact query ran (or may have)
                raise
            try:
                if ttl > 0:
                    await c.execute(self._sql(
                        "INSERT INTO {s}.answers VALUES ($1, $2::jsonb, $3, $4) ON CONFLICT (key) DO UPDATE SET "
                        "payload = excluded.payload, created = excluded.created, expires = excluded.expires"),
                        key, json.dumps(released), now, now + ttl)
                await tr.commit()
                if ttl > 0:
                    self._memo.put(key, released, now + ttl)
            except BaseException:
                await tr.rollback()
                raise
            return released, False

    async def _charge(self, c, charge: Charge, now: float) -> None:
        await c.execute("SELECT pg_advisory_xact_lock($1)", _lock_id("ledger", charge.subject, charge.policy, charge.table))
        spent = await c.fetchval(self._sql(
            "SELECT coalesce(sum(epsilon), 0) FROM {s}.ledger WHERE subject = $1 AND policy = $2 AND tbl = $3 AND at > $4"),
            charge.subject, charge.policy, charge.table, now - charge.period)
        _check_budget(spent, charge)
        await c.execute(self._sql("INSERT INTO {s}.ledger VALUES ($1, $2, $3, $4, $5, $6, $7)"), charge.subject,
                        charge.policy, charge.table, charge.epsilon, now, charge.cap, charge.period)

    async def spending(self, subject: str, now: float | None = None) -> list[Spending]:
        pool = await self._ready()
        now = time.time() if now is None else now
        rows = await pool.fetch(self._sql(
            "SELECT policy, tbl, sum(CASE WHEN at > $1 - period THEN epsilon ELSE 0 END), max(cap), max(period), "
            "sum(CASE WHEN at > $1 - period THEN 1 ELSE 0 END)::int FROM {s}.ledger WHERE subject = $2 "
            "GROUP BY policy, tbl ORDER BY policy, tbl"), now, subject)
        return [Spending(*r) for r in rows]

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


def open_store(dp_config: Any, backend_pool: Callable[[], Awaitable[Any]]) -> SQLiteStore | PostgresStore:
    """The store the config's ``dp:`` section names; ``backend_pool`` opens a pool on the backend."""
    if dp_config.store == "embedded":
        return SQLiteStore(dp_config.path)
    if dp_config.dsn == "backend":
        return PostgresStore(backend_pool, dp_config.schema_name)
    import os

    password = os.environ.get(dp_config.password_env) if dp_config.password_env else None
    return PostgresStore(lambda: asyncpg.create_pool(dp_config.dsn, password=password, min_size=1, max_size=4),
                         dp_config.schema_name)
