"""The DP mechanism, statistically: unbiased, calibrated intervals, equal support on neighbours, thresholds.

Pure (no database): ``release`` is fed exact rows as the backend would return them.
"""
from __future__ import annotations

import math
from collections import Counter

import pytest

from rewrite import DPRequest, rewrite_sql
from rewrite.dp.mechanism import add_noise, release_threshold
from rewrite.dp.release import release

from .dpfixture import context

N = 4000


def plan_for(sql: str, user: str = "ana"):
    v = rewrite_sql(sql, context(user))
    assert isinstance(v, DPRequest), v
    return v.plan


def test_count_noise_is_unbiased_and_calibrated():
    noisy = add_noise([1000] * N, sensitivity=1, epsilon=1.0)
    errors = [x - 1000 for x in noisy]
    var = 2 * math.exp(-1) / (1 - math.exp(-1)) ** 2  # discrete Laplace, scale 1
    assert abs(sum(errors) / N) < 4 * math.sqrt(var / N)
    assert abs(sum(e * e for e in errors) / N - var) < 0.25 * var
    # 95% interval from the scale: P(|X| >= k) = 2 e^{-k/b} / (1 + e^{-1/b}) for discrete Laplace
    b = 1.0
    k = next(k for k in range(100) if 2 * math.exp(-k / b) / (1 + math.exp(-1 / b)) <= 0.05)
    covered = sum(abs(e) < k for e in errors) / N
    assert 0.94 <= covered <= 0.99


def test_neighbouring_datasets_have_the_same_support_and_bounded_ratio():
    a = Counter(add_noise([100] * 20000, 1, 1.0))
    b = Counter(add_noise([101] * 20000, 1, 1.0))
    common = [v for v in range(97, 105) if a[v] > 300 and b[v] > 300]
    assert len(common) >= 5
    for v in common:  # the probability of any output differs by at most e^epsilon (with sampling slack)
        ratio = a[v] / b[v]
        assert 1 / (math.e * 1.3) <= ratio <= math.e * 1.3, (v, ratio)
    assert set(a) & set(b)  # no output value is exclusive to one dataset in the bulk of the mass
    assert min(a) < 95 and max(b) > 106  # full integer support: both tails reach past the neighbour


def test_sum_noise_scales_with_the_bound_and_clamps_sensitivity():
    plan = plan_for("SELECT sum(income) FROM dp.people")
    (m,) = plan.measures
    assert (m.kind, m.sensitivity, m.epsilon) == ("sum", 500000, 1.0)  # one row per person, bound 500000
    draws = [release(plan, [(10_000_000,)])[0][1][0] for _ in range(400)]
    mean_abs = sum(abs(d - 10_000_000) for d in draws) / len(draws)
    assert 300_000 < mean_abs < 700_000  # E|Lap(500000)| = 500000


def test_avg_splits_epsilon_and_stays_within_bounds():
    plan = plan_for("SELECT avg(age) FROM dp.people")
    kinds = {(m.kind, m.column): round(m.epsilon, 9) for m in plan.measures}
    assert kinds == {("sum", "age"): 0.1, ("count", "age"): 0.2, ("centered_sum", "age"): 0.7}
    assert math.isclose(sum(m.epsilon for m in plan.measures), plan.settings.epsilon)
    assert "centered" not in plan.exact_sql and plan.exact_sql.count("pgveil_m") == 2  # derived, not queried
    from rewrite.dp.render import answer_sql

    n, total = 1000, 50_000  # true mean 50: the centered answer is close, and inside [0, 100]
    means = []
    for _ in range(300):
        released = release(plan, [(total, n)])
        text = answer_sql(plan, released)
        means.append(float(text.split("'")[1]))
    assert all(0 <= m <= 100 for m in means)
    assert abs(sum(means) / len(means) - 50) < 0.05
    assert sorted(abs(m - 50) for m in means)[150] < 0.15  # median error ~0.05 (0.1%): centering halves the sum's bound


def test_threshold_suppresses_rare_groups_and_keeps_large_ones():
    plan = plan_for("SELECT name, count(*) FROM dp.people GROUP BY name")
    assert plan.threshold == release_threshold(1, 1.0, 1e-6) and plan.threshold >= 14
    shown = 0
    for _ in range(300):
        out = release(plan, [("rare", 1), ("big", 500)])
        keys = [k[0] for k, _ in out]
        assert "big" in keys
        shown += "rare" in keys
    assert shown == 0


def test_public_keys_release_every_declared_group_even_empty():
    plan = plan_for("SELECT sex, count(*) FROM dp.people GROUP BY sex")
    assert plan.threshold is None and plan.public_groups == (("F",), ("M",))
    out = release(plan, [("F", 500), ("X-undeclared", 50)])
    assert [k for k, _ in out] == [["F"], ["M"]]  # M measured as a noisy 0, X dropped


@pytest.mark.parametrize("a, b", [
    ("SELECT count(*) FROM dp.people WHERE age >= 40", "select COUNT(1) from dp.people p where 40 <= p.age"),
    ("SELECT count(*) FROM dp.people WHERE age BETWEEN 3 AND 9", "SELECT count(*) FROM dp.people WHERE age <= 9 AND age >= 3"),
    ("SELECT count(*) FROM dp.people WHERE educ IN (3, 1, 2)", "SELECT count(*) FROM dp.people WHERE educ IN (1, 2, 3, 3)"),
    ("SELECT count(*) FROM dp.people WHERE NOT age < 40", "SELECT count(*) AS n FROM dp.people WHERE age >= 40"),
    ("SELECT sex, avg(income) FROM dp.people GROUP BY sex", "SELECT avg(income) AS a, sex FROM dp.people GROUP BY 2 ORDER BY 1"),
])
def test_equivalent_queries_share_one_cache_entry(a, b):
    assert plan_for(a).cache_key == plan_for(b).cache_key


def test_different_queries_and_different_views_do_not_share():
    base = plan_for("SELECT count(*) FROM dp.people WHERE age >= 40")
    assert base.cache_key != plan_for("SELECT count(*) FROM dp.people WHERE age >= 41").cache_key
    assert base.cache_key != plan_for("SELECT count(*) FROM dp.people WHERE age > 40").cache_key
    # ben sees only the north through a row filter: his answers are about other rows
    assert base.cache_key != plan_for("SELECT count(*) FROM dp.people WHERE age >= 40", "ben").cache_key
    assert "'north'" in plan_for("SELECT count(*) FROM dp.people", "ben").exact_sql


def test_admins_are_not_under_dp():
    v = rewrite_sql("SELECT name FROM dp.people", context("admin"))
    assert not isinstance(v, DPRequest)


def test_check_reports_dp_config_mistakes():
    import yaml

    from proxy.check import catalog_findings
    from rewrite.policy import PolicyConfig

    from .dpfixture import CATALOG, CONFIG

    raw = yaml.safe_load(CONFIG)
    dp = raw["policies"][1]["differential_privacy"]
    dp["bounds"]["nope"] = [0, 1]
    dp["bounds"]["name"] = [0, 1]
    dp["public_keys"]["missing"] = ["x"]
    dp.pop("budget")
    dp["latency_tolerance"] = "0s"
    found = [(f.level, f.message) for f in catalog_findings(PolicyConfig.model_validate(raw), CATALOG)]
    text = "\n".join(m for _, m in found)
    assert "bounds name column nope" in text
    assert "dp.people.name is text" in text
    assert "public_keys name column missing" in text
    assert any(level == "warning" and "averages the noise away" in m for level, m in found)


def test_explain_shows_the_dp_plan():
    import yaml

    from proxy.config import Config
    from proxy.explain import explain, format_text

    from .dpfixture import CATALOG, CONFIG

    raw = yaml.safe_load(CONFIG)
    raw["backend"] = {"dsn": "postgresql://svc@127.0.0.1:1/x"}
    result = explain(Config.model_validate(raw), CATALOG, "ana", "SELECT sex, avg(income) FROM dp.people GROUP BY sex")
    (stmt,) = result["statements"]
    assert stmt["verdict"] == "differentially private answer" and stmt["policies"] == ["dp-people"]
    assert {(m["kind"], m["column"]) for m in stmt["measures"]} == {("sum", "income"), ("count", "income"),
                                                                   ("centered_sum", "income")}
    text = format_text(result)
    assert "epsilon 1 per answer" in text and "centered_sum(income): epsilon 0.7" in text
    assert "groups: public keys" in text and "LEAST" in text
