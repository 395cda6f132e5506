"""Shared pieces of the DP attack suites: the targeted rows, outcomes, leak checks, proxies and answer checkers."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable

import psycopg
import pytest
import yaml

from ..pgfixture import scratch_dir
from ..proxyproc import ProxyProcess
from .conftest import DPProxy, dp_config, dp_env, pums_rows

ROWS = pums_rows()
BY_ID = {r[0]: r for r in ROWS}
_INCOMES = Counter(r[4] for r in ROWS)
# The targeted person: a unique, non-zero income (so an exact income in a result can only be theirs).
TARGET = next(r for r in ROWS if r[4] > 0 and _INCOMES[r[4]] == 1)
T_ID, T_AGE, T_SEX, T_EDUC, T_INCOME, T_MARRIED, T_REGION, T_NAME = TARGET
X, A, N = T_INCOME, T_AGE, T_NAME  # short names for the payloads
TRUE_SUM_INCOME = sum(r[4] for r in ROWS)
HUGE_BUDGET = 1_000_000.0

SECRET = re.compile(r"SECRETNAME\d{4}")
# Phrases of backend errors raised by the exact aggregate (they could quote a row's value).
BACKEND_PHRASES = ("invalid input syntax", "out of range", "division by zero", "pgveil_rows", "pgveil_rn",
                   "row_number", "GREATEST(", "LEAST(", "does not exist")
CLEAR_STATES = {"0A000", "42501", "42601", "42P10", "42P01", "42704", "22023", "25001", "26000", "XX000", "42883",
                "42803", "0LP01", "55000", "25006", "34000", "26000", "54001"}


# --------------------------------------------------------------------------- helpers


@dataclass
class Outcome:
    sql: str
    rows: list | None = None
    error: psycopg.Error | None = None
    notices: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    def text(self) -> str:
        """Everything the client saw: rows, column names, notices, the error with all its fields."""
        parts = [repr(self.rows), repr(self.names), *self.notices]
        if self.error is not None:
            parts.append(str(self.error))
            diag = self.error.diag
            for f in ("message_primary", "message_detail", "message_hint", "context", "internal_query",
                      "statement_position", "schema_name", "table_name", "column_name", "constraint_name"):
                v = getattr(diag, f, None)
                if v:
                    parts.append(str(v))
        return "\n".join(parts)


def attempt(conn: psycopg.Connection, sql: str, params: Any = None) -> Outcome:
    out = Outcome(sql)
    handler = lambda d: out.notices.append(f"{d.severity}: {d.message_primary} {d.message_detail or ''}")  # noqa: E731
    conn.add_notice_handler(handler)
    try:
        cur = conn.execute(sql, params)
        out.rows = cur.fetchall() if cur.description else []
        out.names = [d.name for d in cur.description or ()]
    except psycopg.Error as exc:
        out.error = exc
    finally:
        conn.remove_notice_handler(handler)
    return out


def assert_no_leak(out: Outcome | str, payload: str = "") -> None:
    text = out.text() if isinstance(out, Outcome) else out
    leaked = set(SECRET.findall(text)) - set(SECRET.findall(payload))
    assert not leaked, f"protected names reached the client: {sorted(leaked)[:5]} for {payload!r}"
    if "SECRETNAME" not in payload:
        assert "SECRETNAME" not in text, f"a protected name reached the client for {payload!r}"


def cells(rows) -> list:
    return [v for r in rows or () for v in r]


def assert_not_exact(out: Outcome, *exact) -> None:
    """No cell of the result equals an exact per-person value of the target."""
    for v in cells(out.rows):
        if isinstance(v, (int, float, Decimal)) and not isinstance(v, bool):
            for e in exact:
                assert Decimal(str(v)) != Decimal(str(e)), f"exact value {e} of the target in {out.sql!r}: {out.rows}"


def assert_clear_refusal(out: Outcome) -> None:
    assert out.error is not None, f"expected a refusal, got {out.rows!r} for {out.sql!r}"
    state = out.error.sqlstate
    msg = out.error.diag.message_primary or str(out.error)
    assert state in CLEAR_STATES, f"unexpected SQLSTATE {state}: {msg} for {out.sql!r}"
    assert len(msg) > 15, msg
    if state == "XX000":  # pgveil's own generic failure, never the backend's
        assert "pgveil" in msg or "differentially private" in msg, msg
    for phrase in BACKEND_PHRASES[3:]:
        assert phrase not in msg, f"internal SQL in the message: {msg}"


def assert_usable(conn: psycopg.Connection) -> None:
    assert conn.execute("SELECT 1").fetchone() == (1,)


def true_count(pred: Callable[[tuple], bool]) -> int:
    return sum(1 for r in ROWS if pred(r))


class AttackProxy(DPProxy):
    """A DPProxy whose config an attack scenario changes before the process starts."""

    def __init__(self, pg, mutate: Callable[[dict], None] | None = None, **kw) -> None:
        self.dir = scratch_dir()
        self.config = dp_config(pg, self.dir, **kw)
        if mutate is not None:
            mutate(self.config)
            (self.dir / "pgveil.yaml").write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.proc = ProxyProcess(self.dir / "pgveil.yaml", dp_env(pg))
        self.port = self.proc.port

    @property
    def log(self) -> list[str]:
        """The proxy's output (ProxyProcess drains it, so a full pipe never blocks the proxy)."""
        return self.proc.output


@pytest.fixture(scope="module")
def big(pg, pums_db):
    """A proxy with an effectively unlimited budget, for the payload list (budget tests start their own)."""
    import psycopg as pg_

    with pg_.connect(pg.dsn(), autocommit=True) as su:
        su.execute("ANALYZE public.pums")  # statistics exist: pg_stats / reltuples would now hold real values
    p = AttackProxy(pg, budget=HUGE_BUDGET)
    yield p
    p.stop()


@pytest.fixture
def conn(big):
    with big.connect() as c:
        yield c


# --------------------------------------------------------------------------- checkers for accepted answers


def one_count(lo: int, hi: int):
    def check(out: Outcome) -> None:
        assert len(out.rows) == 1 and len(out.rows[0]) >= 1, out.rows
        v = out.rows[0][0]
        assert isinstance(v, int) and lo <= v <= hi, (out.sql, v)
    return check


def no_rows(out: Outcome) -> None:
    assert out.rows == [], f"rare groups were released by {out.sql!r}: {out.rows[:5]}"


def scalar_rows(out: Outcome) -> None:
    assert len(out.rows) <= 1, out.rows


def public_sex_groups(out: Outcome) -> None:
    assert {r[0] for r in out.rows} <= {"F", "M"}, out.rows
    assert len(out.rows) <= 2


def frequent(*columns: int):
    """Every released group is a combination of the given table columns that at least 5 people share."""
    def check(out: Outcome) -> None:
        for r in out.rows:
            key = tuple(r[: len(columns)])
            n = true_count(lambda row: tuple(row[c] for c in columns) == key)
            assert n >= 5, f"group {key} (true count {n}) released by {out.sql!r}"
    return check


def bounded_sum(out: Outcome) -> None:
    (v,) = out.rows[0][:1]
    assert v is not None and -10_000_000 <= v <= 1000 * 500_000 + 10_000_000, v
    assert v != TRUE_SUM_INCOME, "the exact sum of incomes was released"


def not_target(out: Outcome) -> None:
    assert_not_exact(out, T_INCOME)


def avg_in_bounds(out: Outcome) -> None:
    assert len(out.rows) == 1
    assert all(v is None or 0 <= v <= 500000 for v in cells(out.rows)), out.rows


def nothing(out: Outcome) -> None:
    pass
