"""Decision-engine timing: one table under 50 policies, uncached and cached.

Run: python -m bench.decide. Prints the median of many runs in microseconds.
"Uncached" means the decision cache is bypassed; the per-table plan (which
policies can apply to the table, computed once per policy version) is warm, as
it is in a running proxy after the first query on a table.
"""
from __future__ import annotations

import statistics
import time

from rewrite.decide import PolicySet, Subject, TableInfo, decide
from rewrite.decide.plan import build_plan
from rewrite.policy import PolicyConfig

TABLES = [f"t{i}" for i in range(10)]
COLUMNS = [f"c{i}" for i in range(10)]


def config_with_50_policies() -> PolicyConfig:
    policies: list[dict] = []
    groups = ["analysts", "admins", "compliance", "contractors"]
    for i, t in enumerate(TABLES):
        policies.append({"name": f"read-{t}", "access": {"tables": [f"public.{t}"], "allow": {"groups": ["analysts", "admins"]},
                         "deny": {"groups": ["contractors"]}, "deny_exceptions": {"users": ["carol"]}}})
        policies.append({"name": f"mask-{t}", "mask": {"column": f"public.{t}.c1", "type": "hash",
                         "for": {"everyone_except": {"groups": ["admins"]}}}})
        policies.append({"name": f"ordered-{t}", "priority": "override", "mask": {"column": f"public.{t}.c2", "items": [
            {"when": {"groups": ["compliance"]}, "type": "partial", "show_last": 4},
            {"when": {"groups": ["admins"]}, "type": "none"},
            {"otherwise": {"type": "null"}}]}})
        policies.append({"name": f"filter-{t}", "row_filter": {"table": f"public.{t}", "match": {"column": "state", "attribute": "office_location"},
                         "for": {"everyone_except": {"groups": ["admins"]}}}})
        policies.append({"name": f"where-{t}", "row_filter": {"table": f"public.{t}", "where": "amount < 10000",
                         "for": {"everyone_except": {"groups": ["compliance"]}}}})
    users = {"alice": {"password_env": "X", "groups": groups, "attributes": {"office_location": ["Ohio"]}},
             "carol": {"password_env": "X", "groups": ["contractors"]}}
    return PolicyConfig.model_validate({"users": users, "tags": {"public.t0.c3": ["PII"]}, "policies": policies})


def _median_us(fn, number: int = 2000, repeat: int = 25) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        runs.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(runs)


def main() -> None:
    config = config_with_50_policies()
    ps = PolicySet.from_config(config)
    table = TableInfo.from_config(config, "public", "t0", COLUMNS)
    subject = Subject("alice", frozenset({"analysts"}), {"office_location": frozenset({"Ohio"})})
    decide(ps, subject, table)  # warm-up: builds the table plan
    n = len(config.policies)
    cold = _median_us(lambda: build_plan(ps, table), number=200, repeat=9)
    uncached = _median_us(lambda: decide(ps, subject, table, use_cache=False))
    cached = _median_us(lambda: decide(ps, subject, table))
    print(f"decide: {n} policies, table with {len(COLUMNS)} columns")
    print(f"  table plan (once per table and policy version): {cold:8.2f} us")
    print(f"  decision, uncached (plan warm):                  {uncached:8.2f} us   (target <= 50)")
    print(f"  decision, cached:                                {cached:8.2f} us   (target <= 2)")


if __name__ == "__main__":
    main()
