"""Rewrite-engine timing: a simple SELECT, a 295-character BI query over 2 governed tables, a 3-join one over 4.

Run: python -m bench.rewrite. Prints the median of many runs in microseconds,
cold (verdict cache bypassed: parse, analyse, decide (its own cache warm), policy
views (their printed-text cache warm, as after a session's first statement), print,
re-parse), cached (a dict hit on the exact text) and "same shape, new literal" (the
text differs from every earlier one only in a constant: a template of its shape,
rewrite/shapes.py); without and with the gates.
"""
from __future__ import annotations

import itertools
import statistics
import time

from rewrite import RewriteContext, Rewritten, rewrite_sql
from rewrite.decide import PolicySet
from rewrite.engine.keys import StaticKeys
from tests.rewrite.conftest import load_config, subject
from tests.rewrite.fixture_catalog import CATALOG

SIMPLE = "SELECT claim_id, amount FROM rw.claims WHERE claim_id = 42"
BI = ("SELECT c.state, date_trunc('month', c.filed_at) AS month, count(*) AS n, sum(c.amount) AS total, "
      "avg(p.birth_year) AS avg_birth FROM rw.claims c JOIN rw.patients p ON p.patient_id = c.claim_id "
      "WHERE c.filed_at >= now() - interval '90 days' AND c.amount > 10 GROUP BY 1, 2 ORDER BY 1, 2 LIMIT 100")
BI3 = ("SELECT c.state, count(*) AS n, sum(c.amount) AS total, avg(p.birth_year) AS age, max(v.cost) AS cost "
       "FROM rw.claims c JOIN rw.patients p ON p.patient_id = c.claim_id JOIN rw.visits v ON v.visit_id = c.claim_id "
       "JOIN rw.open o ON o.id = c.claim_id WHERE c.amount > 10 GROUP BY 1 ORDER BY 1 LIMIT 100")


def _median_us(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e6)
    return statistics.median(times)


def main() -> None:
    config = load_config()
    policies = PolicySet.from_config(config)
    alice = subject(config, "alice")
    no_gates = RewriteContext(alice, policies, CATALOG, StaticKeys(b"k"), ("public",), config.tags, gate=lambda r, c: None)
    with_gates = RewriteContext(alice, policies, CATALOG, StaticKeys(b"k"), ("public",), config.tags)
    print(f"BI query: {len(BI)} characters, 3-join BI query: {len(BI3)} characters")
    numbers = itertools.count(1000)  # never an exact-text cache hit
    for label, ctx in (("", no_gates), (" + gates", with_gates)):
        for name, sql in (("simple SELECT", SIMPLE), ("BI query, 2 tables", BI), ("BI query, 3 joins", BI3)):
            assert isinstance(rewrite_sql(sql, ctx), Rewritten)
            cold = _median_us(lambda: rewrite_sql(sql, ctx, use_cache=False), 300)
            cached = _median_us(lambda: rewrite_sql(sql, ctx), 20000)
            # a new constant every time (the last number of the text), as pgbench -S sends in simple mode
            shaped = sql.rsplit(" ", 1)[0] + " {}"
            assert isinstance(rewrite_sql(shaped.format(next(numbers)), ctx), Rewritten)
            shape = _median_us(lambda: rewrite_sql(shaped.format(next(numbers)), ctx), 5000)
            print(f"{name + label:28s} cold {cold:8.0f} µs   cached {cached:6.1f} µs   same shape, new literal "
                  f"{shape:6.1f} µs")


if __name__ == "__main__":
    main()
