"""Column references to replaced tables: three-part names (rewritten) and denied columns (refused).

Run on the real database: a rewritten statement must execute and return what
the analyst's statement means; a refusal must be 42501 naming column and policy.
"""
from __future__ import annotations

import pytest
import yaml

from rewrite import Deny, RewriteContext, Rewritten, clear_cache, rewrite_sql
from rewrite.decide import PolicySet
from rewrite.policy import PolicyConfig

from .conftest import CONFIG, KEYS, subject

# frank may read rw.vault only through its id column (so `secret` is denied), and rw.patients
# through patient_id and name; admins' grant covers the whole table.
_EXTRA_POLICY = {"name": "vault-ids", "access": {
    "columns": ["rw.vault.id", "rw.patients.patient_id", "rw.patients.name"], "allow": {"groups": ["auditors"]}}}


@pytest.fixture(scope="module")
def frank_config():
    y = yaml.safe_load(CONFIG)
    y["users"]["frank"] = {"password_env": "X", "groups": ["auditors"], "purposes": ["Research"]}
    y["policies"].insert(1, _EXTRA_POLICY)
    return PolicyConfig.model_validate(y)


@pytest.fixture
def ctx(db, frank_config):
    clear_cache()
    policies = PolicySet.from_config(frank_config)

    def make(name: str) -> RewriteContext:
        return RewriteContext(subject(frank_config, name), policies, db.catalog, KEYS, ("public",), frank_config.tags,
                              gate=lambda raw, c: None)

    return make


# ---- three-part column names --------------------------------------------------------------------------

@pytest.mark.parametrize("sql,expect", [
    ("SELECT rw.claims.claim_id FROM rw.claims ORDER BY 1", [1, 2, 6]),
    ("SELECT rw.claims.claim_id FROM rw.claims WHERE rw.claims.amount < 150 ORDER BY rw.claims.claim_id", [1, 6]),
    ("SELECT pgveil_test.rw.claims.claim_id FROM rw.claims ORDER BY 1", [1, 2, 6]),
    ("SELECT (SELECT max(rw.claims.claim_id)) FROM rw.claims", [6]),  # an outer aggregate: one row
    ("SELECT x.claim_id FROM (SELECT rw.claims.claim_id FROM rw.claims) x ORDER BY 1", [1, 2, 6]),
])
def test_three_part_names_run(db, ctx, sql, expect):
    v = rewrite_sql(sql, ctx("alice"))
    assert isinstance(v, Rewritten), v
    assert "rw.claims.claim_id" not in v.sql
    assert [r[0] for r in db.fetch(v.sql)] == expect


def test_three_part_star_and_masked_value(db, ctx):
    v = rewrite_sql("SELECT rw.claims.* FROM rw.claims WHERE rw.claims.claim_id = 2", ctx("alice"))
    rows = db.fetch(v.sql)
    assert len(rows) == 1 and rows[0]["account_no"] is None  # masked (country USA), not the raw value


def test_three_part_name_on_unreplaced_table_is_left_alone(db, ctx):
    v = rewrite_sql("SELECT rw.sink.id FROM rw.sink", ctx("alice"))
    assert "rw.sink.id" in v.sql


@pytest.mark.parametrize("sql", [
    "SELECT rw.claims.claim_id FROM rw.claims, (SELECT 1 AS y) AS claims",  # another item named claims
    "WITH claims AS (SELECT 1 AS claim_id) SELECT (SELECT rw.claims.claim_id FROM claims) FROM rw.claims",
])
def test_three_part_name_that_could_be_captured_is_refused(ctx, sql):
    v = rewrite_sql(sql, ctx("alice"))
    assert isinstance(v, Deny) and v.sqlstate == "0A000", v


# ---- denied columns -------------------------------------------------------------------------------------

@pytest.mark.parametrize("sql", [
    "SELECT secret FROM rw.vault",
    "SELECT v.secret FROM rw.vault v",
    "SELECT id FROM rw.vault WHERE secret = 'x'",
    "SELECT id FROM rw.vault ORDER BY secret",
    "SELECT * FROM rw.vault",
    "SELECT v.* FROM rw.vault v",
    "SELECT rw.vault.secret FROM rw.vault",
    "SELECT rw.vault.* FROM rw.vault",
    "SELECT vault FROM rw.vault",
    "SELECT to_jsonb(v) FROM rw.vault v",
    "SELECT row_to_json(v)::text FROM rw.vault v",
    "SELECT (v).secret FROM rw.vault v",
    "SELECT (v).* FROM rw.vault v",
    "SELECT v.length FROM rw.vault v",  # functional notation: length(v)
    "SELECT b FROM rw.vault AS v(a, b)",  # renamed by the alias column list
    "SELECT count(*) FROM rw.vault a NATURAL JOIN rw.vault b",
    "SELECT a.id FROM rw.vault a JOIN rw.vault b USING (secret)",
    "SELECT id FROM rw.vault WHERE EXISTS (SELECT 1 WHERE secret IS NOT NULL)",
    "SELECT j.secret FROM (rw.vault a JOIN rw.vault b USING (id)) AS j",
    "SELECT s FROM (rw.vault a JOIN rw.vault b USING (id)) AS j(i, s)",
    "COPY rw.vault TO STDOUT",
    "COPY rw.vault (id, secret) TO STDOUT",
    "SELECT name, ssn FROM rw.patients",
])
def test_reading_a_denied_column_is_refused(ctx, sql):
    v = rewrite_sql(sql, ctx("frank"))
    assert isinstance(v, Deny) and v.sqlstate == "42501", (sql, v)
    assert "column" in v.message
    column = "ssn" if "patients" in sql else "secret"
    assert column in v.message and "SECRET" not in v.message


def test_denial_names_the_policy(ctx):
    v = rewrite_sql("SELECT email FROM rw.patients", ctx("frank"))
    assert isinstance(v, Deny) and "email" in v.message and "rw.patients" in v.message
    assert "no policy grants it" in v.message or v.policy


@pytest.mark.parametrize("sql,expect", [
    ("SELECT id FROM rw.vault ORDER BY id LIMIT 2", [(1,), (2,)]),
    ("SELECT count(*) FROM rw.vault", [(3,)]),
    ("SELECT v.id FROM rw.vault v WHERE v.id > 2", [(3,)]),
    ("SELECT (v).id FROM rw.vault v ORDER BY 1 LIMIT 1", [(1,)]),
    ("SELECT id AS secret FROM rw.vault ORDER BY secret LIMIT 1", [(1,)]),  # ORDER BY the output column
    ("SELECT s.secret, v.id FROM (SELECT 'x' AS secret) s, rw.vault v ORDER BY 2 LIMIT 1", [("x", 1)]),
    ("SELECT b.id FROM rw.vault a JOIN rw.vault b ON a.id = b.id ORDER BY 1 LIMIT 1", [(1,)]),
    ("SELECT j.id FROM (rw.vault a JOIN rw.vault b USING (id)) AS j ORDER BY 1 LIMIT 1", [(1,)]),
    ("SELECT * FROM (SELECT id FROM rw.vault) s ORDER BY 1 LIMIT 1", [(1,)]),
    ("SELECT patient_id, name FROM rw.patients ORDER BY 1 LIMIT 1", [(1, "N**********")]),
])
def test_statements_not_touching_denied_columns_run(db, ctx, sql, expect):
    v = rewrite_sql(sql, ctx("frank"))
    assert isinstance(v, Rewritten), v
    assert [tuple(r) for r in db.fetch(v.sql)] == expect


def test_admins_are_not_affected(db, ctx):
    v = rewrite_sql("SELECT * FROM rw.vault ORDER BY id LIMIT 1", ctx("alice"))
    assert isinstance(v, Rewritten) and len(db.fetch(v.sql)) == 1
