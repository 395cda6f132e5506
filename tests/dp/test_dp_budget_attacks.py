"""DP attacks on the budget and the cache: differencing, averaging by repetition and rephrasing, and every way
to spend more than the budget (transactions, pipelines, extended protocol, connections, threads, settings, names).

Shared pieces: attack_kit.py. Each test that needs a fresh budget starts its own proxy.
"""
from __future__ import annotations

import asyncio
import threading
from collections import Counter
from decimal import Decimal

import asyncpg
import psycopg
import pytest

from .conftest import DPProxy
from .attack_kit import BY_ID, N, TRUE_SUM_INCOME, T_ID, T_INCOME, Outcome, assert_no_leak, assert_usable, attempt


# --------------------------------------------------------------------------- differencing and averaging


def test_differencing_is_noisy_and_rephrasings_hit_the_cache(pg, pums_db):
    """sum(all) - sum(all but the target) must not give the target's income; rephrasings must not buy fresh noise."""
    p = DPProxy(pg, budget=2.0)
    try:
        with p.connect() as c:
            (total,) = c.execute("SELECT sum(income) FROM pums").fetchone()
            (without,) = c.execute(f"SELECT sum(income) FROM pums WHERE person_id <> {T_ID}").fetchone()
            assert total - without != T_INCOME
            assert total != TRUE_SUM_INCOME
            # the same two questions, rephrased and repeated: the same answers, no charge
            for sql in ["SELECT sum(income) FROM pums", "select SUM(income) from PUMS", "SELECT sum(p.income) FROM pums p",
                        "SELECT sum(income) AS s FROM public.pums ORDER BY 1 LIMIT 5",
                        "SELECT sum(income) + 0 FROM pums"] * 5:
                assert c.execute(sql).fetchone()[0] == total, sql
            for sql in [f"SELECT sum(income) FROM pums WHERE {T_ID} <> person_id",
                        f"SELECT sum(income) FROM pums WHERE NOT person_id = {T_ID}",
                        f"SELECT sum(income) FROM pums WHERE pums.person_id <> {T_ID}",
                        f"SELECT sum(income) FROM pums WHERE person_id NOT IN ({T_ID})",
                        f"SELECT sum(income) FROM pums WHERE person_id NOT IN ({T_ID}, {T_ID})",
                        f"SELECT sum(income) FROM pums WHERE (person_id <> {T_ID} AND person_id <> {T_ID})",
                        f"SELECT sum(income) FROM pums WHERE person_id <> {T_ID} OR person_id <> {T_ID}"] * 5:
                assert c.execute(sql).fetchone()[0] == without, sql
            # budget spent exactly twice: the next new question is refused
            out = attempt(c, f"SELECT sum(income) FROM pums WHERE person_id <> {T_ID} AND age >= 0")
            assert out.error is not None and out.error.sqlstate == "42501", out.text()
            assert "privacy budget exhausted" in str(out.error)
            assert_no_leak(out)
    finally:
        p.stop()


def test_count_differencing_is_noisy_over_many_targets(big):
    """count(all) - count(all but X) over 40 targets: not always exactly 1 (noise is there)."""
    with big.connect() as c:
        (total,) = c.execute("SELECT count(*) FROM pums WHERE age >= 0").fetchone()
        diffs = []
        for pid in range(100, 140):
            (w,) = c.execute(f"SELECT count(*) FROM pums WHERE person_id <> {pid}").fetchone()
            diffs.append(total - w)
        assert Counter(diffs)[1] < len(diffs), "every difference was exact: no noise"
        ages = []
        for pid in range(200, 210):
            (v,) = c.execute(f"SELECT avg(age) FROM pums WHERE person_id = {pid}").fetchone()
            ages.append(v is not None and Decimal(v) == BY_ID[pid][1])
        assert not all(ages), "the exact age of every targeted person was released"


def test_averaging_by_rephrasing_stops_at_the_budget(pg, pums_db):
    """Equivalent questions pgveil does not canonicalize each cost budget; averaging them is capped."""
    p = DPProxy(pg, budget=4.0)
    rephrasings = [f"SELECT sum(income) FROM pums WHERE person_id = {T_ID}",
                   f"SELECT sum(income) FROM pums WHERE person_id >= {T_ID} AND person_id <= {T_ID}",
                   f"SELECT sum(income) FROM pums WHERE person_id > {T_ID - 1} AND person_id < {T_ID + 1}",
                   f"SELECT sum(income) FROM pums WHERE person_id = {T_ID} AND age >= 0",
                   f"SELECT sum(income) FROM pums WHERE person_id = {T_ID} AND age <= 1000",
                   f"SELECT sum(income) FROM pums WHERE person_id = {T_ID} AND income >= 0",
                   f"SELECT sum(income) FROM pums WHERE person_id = {T_ID} AND name LIKE '%'",
                   f"SELECT sum(income) FROM pums WHERE person_id = {T_ID} AND name IS NOT NULL",
                   f"SELECT sum(income) FROM pums WHERE name = '{N}'",
                   f"SELECT sum(income) FROM pums WHERE name = '{N}' AND person_id = {T_ID}"]
    try:
        answers, refused = [], 0
        with p.connect() as c:
            for sql in rephrasings:
                out = attempt(c, sql)
                assert_no_leak(out, sql)
                if out.ok:
                    answers.append(out.rows[0][0])
                else:
                    assert out.error.sqlstate == "42501" and "privacy budget exhausted" in str(out.error), out.text()
                    refused += 1
        assert len(answers) <= 4 and refused >= len(rephrasings) - 4
        assert T_INCOME not in answers
    finally:
        p.stop()


def test_zero_latency_prepared_statements_are_recharged_not_free(pg, pums_db):
    """At 0 s every Bind of a named DP statement is re-answered (docs/dp.md): each is charged; past the cap it fails."""
    p = DPProxy(pg, budget=4.0, latency="0s")
    sql = f"SELECT sum(income) FROM pums WHERE person_id = {T_ID}"
    try:
        with p.connect(prepare_threshold=0) as prepared:
            values, errors = [], []
            for _ in range(7):
                out = attempt(prepared, sql)
                assert_no_leak(out, sql)
                if out.ok:
                    values.append(out.rows[0][0])
                else:
                    errors.append(out.error)
            assert len(values) == 4, (values, [str(e) for e in errors])
            assert all(e.sqlstate == "42501" and "privacy budget exhausted" in str(e) for e in errors)
            assert T_INCOME not in values and len(set(values)) > 1
            assert_usable(prepared)
        with p.connect() as c:
            out = attempt(c, sql)
            assert out.error is not None and out.error.sqlstate == "42501"
    finally:
        p.stop()


def test_prepared_repeats_within_the_tolerance_are_free(pg, pums_db):
    p = DPProxy(pg, budget=1.0)
    sql = f"SELECT sum(income) FROM pums WHERE person_id = {T_ID}"
    try:
        with p.connect(prepare_threshold=0) as prepared, p.connect() as plain:
            values = [prepared.execute(sql).fetchone()[0] for _ in range(10)]
            values += [plain.execute(sql).fetchone()[0] for _ in range(10)]
            assert len(set(values)) == 1 and values[0] != T_INCOME
    finally:
        p.stop()


# --------------------------------------------------------------------------- budget bypass


def _distinct_queries(n: int, base: int = 0) -> list[str]:
    return [f"SELECT count(*) FROM pums WHERE age >= {20 + base + i}" for i in range(n)]


def test_transaction_rollback_does_not_refund(pg, pums_db):
    p = DPProxy(pg, budget=3.0)
    try:
        with p.connect() as c:
            c.autocommit = False
            for sql in _distinct_queries(3):
                c.execute(sql).fetchone()
            c.rollback()
            c.execute("SAVEPOINT s")
            out = attempt(c, _distinct_queries(1, base=10)[0])
            assert out.error is not None and out.error.sqlstate == "42501", out.text()
            c.rollback()
        with p.connect() as c2:
            out = attempt(c2, _distinct_queries(1, base=20)[0])
            assert out.error is not None and out.error.sqlstate == "42501", out.text()
    finally:
        p.stop()


def test_aborted_transaction_does_not_spend_budget_on_answers_never_delivered(pg, pums_db):
    """In a failed transaction the answer cannot reach the client; spending the budget for it wastes it."""
    p = DPProxy(pg, budget=2.0, latency="0s")
    try:
        with p.connect() as c:
            c.autocommit = False
            with pytest.raises(psycopg.Error):
                c.execute("SELECT 1/0")
            states = []
            for sql in _distinct_queries(3):
                out = attempt(c, sql)
                assert out.error is not None  # the transaction is aborted: nothing is answered
                assert_no_leak(out, sql)
                states.append(out.error.sqlstate)
            c.rollback()
            c.autocommit = True
            answered = sum(attempt(c, sql).ok for sql in _distinct_queries(2, base=30))
            # FINDING (fixed in f1bdb75 while this suite was written): (budget, not privacy) every DP statement sent
            # inside an aborted transaction was computed and charged although the backend rejected its answer
            # (states were ['25P02', '25P02', '42501']); at latency 0s the loss was permanent.
            assert answered == 2, f"budget spent on answers an aborted transaction never delivered: {states}"
    finally:
        p.stop()


@pytest.mark.xfail(strict=True, reason="known limitation (docs/dp.md, Budget): a DP statement behind an error in the "
                   "same pipelined sync group is charged although the backend skips it")
def test_pipeline_after_an_error_does_not_spend_budget_on_skipped_statements(pg, pums_db):
    """After an error the backend skips the rest of the sync group; pgveil should not pay for answers it skips."""
    p = DPProxy(pg, budget=2.0, latency="0s")
    try:
        with p.connect() as c:
            with pytest.raises(psycopg.Error):
                with c.pipeline():
                    c.execute("SELECT 1/0")
                    for sql in _distinct_queries(2):
                        c.execute(sql)
            assert_usable(c)
            answered = sum(attempt(c, sql).ok for sql in _distinct_queries(2, base=30))
            # FINDING: (budget, not privacy) the f1bdb75 fix looks at the transaction status of the last
            # ReadyForQuery, but within one pipelined sync group the backend skips every message after an error
            # while pgveil has already computed and charged the DP answers of the Parse messages behind it (they
            # arrive before the error does). Same class as above; proxy/session/governed.py _judge. Fix idea: charge
            # when the answer is actually delivered is not possible (the exact query must run first), so compute
            # DP answers lazily: hold the DP statement until the backend has answered the earlier messages of its
            # group (no ErrorResponse seen), i.e. suspend on the group's earlier replies before AskDP.
            assert answered == 2, "budget spent on DP statements the backend skipped after an error in the pipeline"
    finally:
        p.stop()


def test_pipeline_cannot_overspend(pg, pums_db):
    p = DPProxy(pg, budget=3.0)
    try:
        with p.connect() as c:
            results = []
            try:
                with c.pipeline():
                    cursors = [c.execute(sql) for sql in _distinct_queries(6)]
                    for cur in cursors:
                        try:
                            results.append(("ok", cur.fetchall()))
                        except psycopg.Error as exc:
                            results.append(("err", exc))
            except psycopg.Error as exc:
                results.append(("err", exc))
            ok = [r for r in results if r[0] == "ok"]
            assert len(ok) <= 3, results
            for kind, value in results:
                if kind == "err":
                    assert_no_leak(str(value))
            assert_usable(c)
            out = attempt(c, _distinct_queries(1, base=40)[0])
            assert out.error is not None and out.error.sqlstate == "42501"
    finally:
        p.stop()


def test_extended_protocol_cannot_overspend(pg, pums_db):
    p = DPProxy(pg, budget=3.0)
    try:
        with p.connect(prepare_threshold=0) as c:
            ok = 0
            for sql in _distinct_queries(5):
                ok += attempt(c, sql).ok
            assert ok == 3

        async def go():
            a = await asyncpg.connect(p.dsn())
            try:
                for sql in _distinct_queries(3, base=10):
                    with pytest.raises(asyncpg.InsufficientPrivilegeError):
                        await a.fetch(sql)
            finally:
                await a.close()

        asyncio.run(go())
    finally:
        p.stop()


def test_several_connections_share_one_budget(pg, pums_db):
    p = DPProxy(pg, budget=3.0)
    try:
        ok = 0
        for sql in _distinct_queries(6):
            with p.connect() as c:
                ok += attempt(c, sql).ok
        assert ok == 3
    finally:
        p.stop()


def _threaded(p: DPProxy, sqls: list[str]) -> list[Outcome]:
    outs: list[Outcome | None] = [None] * len(sqls)
    barrier = threading.Barrier(len(sqls))

    def run(i: int) -> None:
        with p.connect() as c:
            barrier.wait()
            outs[i] = attempt(c, sqls[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(sqls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(o is not None for o in outs)
    return outs  # type: ignore[return-value]


def test_concurrent_sessions_cannot_overspend(pg, pums_db):
    p = DPProxy(pg, budget=4.0)
    try:
        outs = _threaded(p, _distinct_queries(12))
        ok = [o for o in outs if o.ok]
        assert len(ok) == 4, [o.text()[:80] for o in outs]
        for o in outs:
            assert_no_leak(o)
            if not o.ok:
                assert o.error.sqlstate == "42501"
    finally:
        p.stop()


def test_concurrent_same_question_is_answered_once(pg, pums_db):
    """12 sessions ask the same question at once with a budget of 1: one charge, one answer for all."""
    p = DPProxy(pg, budget=1.0)
    try:
        outs = _threaded(p, [f"SELECT sum(income) FROM pums WHERE person_id = {T_ID}"] * 12)
        assert all(o.ok for o in outs), [o.text()[:120] for o in outs if not o.ok]
        assert len({o.rows[0][0] for o in outs}) == 1
        assert outs[0].rows[0][0] != T_INCOME
    finally:
        p.stop()


def test_concurrent_fresh_noise_is_capped(pg, pums_db):
    p = DPProxy(pg, budget=3.0, latency="0s")
    try:
        outs = _threaded(p, [f"SELECT sum(income) FROM pums WHERE person_id = {T_ID}"] * 10)
        ok = [o for o in outs if o.ok]
        assert len(ok) == 3, [o.text()[:80] for o in outs]
        assert T_INCOME not in [o.rows[0][0] for o in ok]
    finally:
        p.stop()


def test_settings_do_not_change_epsilon_or_budget(pg, pums_db):
    p = DPProxy(pg, budget=2.0)
    try:
        with p.connect() as c:
            for sql in ("SET pgveil.epsilon = 100", "SET pgveil.budget = 1000", "RESET ALL", "SET pgveil.purpose = ''",
                        "SET application_name = 'x'", "SELECT set_config('pgveil.epsilon', '100', false)"):
                out = attempt(c, sql)
                assert_no_leak(out)
                assert_usable(c)
            for sql in _distinct_queries(2):
                assert attempt(c, sql).ok
            out = attempt(c, _distinct_queries(1, base=30)[0])
            assert out.error is not None and "costs epsilon 1," in str(out.error) and "of 2 per" in str(out.error)
    finally:
        p.stop()


def test_other_user_name_spellings_do_not_get_a_fresh_budget(pg, pums_db):
    p = DPProxy(pg, budget=1.0)
    try:
        with p.connect() as c:
            assert attempt(c, _distinct_queries(1)[0]).ok
        for user in ("ANA", "Ana", "ana ", '"ana"', "ana\u200b"):
            try:
                c = psycopg.connect(host="127.0.0.1", port=p.port, dbname="pgveil_test", user=user, password="ana-pw",
                                    autocommit=True)
            except psycopg.OperationalError:
                continue
            with c:
                out = attempt(c, _distinct_queries(1, base=5)[0])
                assert not out.ok, f"user {user!r} got a budget of its own"
    finally:
        p.stop()
