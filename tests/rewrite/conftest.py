"""Rewrite tests: a policy config, a schema ``rw`` with known rows, and a way to run as a subject.

Sentinels: every raw value a mask must hide and every row a filter must remove
carries the text SECRET (or a number in SENTINEL_NUMBERS), so the security
tests can assert it never reaches a result, a notice or an error.
"""
from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
import yaml

from rewrite import RewriteContext, Rewritten, clear_cache, rewrite_sql
from rewrite.decide import PolicySet, Subject
from rewrite.engine.keys import KEY_INSERT, KEY_TABLE_DDL, StaticKeys, key_rows
from rewrite.policy import PolicyConfig

SECRET = "SECRET"

CONFIG = """
users:
  alice: {password_env: X, groups: [analysts], attributes: {office_location: [Missouri]}, purposes: [Research]}
  bob: {password_env: X, groups: [analysts, compliance], attributes: {office_location: [Ohio, Florida]}, purposes: [Research]}
  carol: {password_env: X, groups: [analysts]}
  dana: {password_env: X, groups: [admins], purposes: [Research]}
  erin: {password_env: X, groups: [contractors], purposes: [Research]}
  nopurpose: {password_env: X, groups: [analysts], attributes: {office_location: [Missouri]}}
  root: {password_env: X, unrestricted: true}
purposes: {Research: {Marketing: {}}, Fraud: {}}
tags:
  rw.patients: [PHI]
  rw.patients.email: [PII]
tables:
  rw.patients: {key: patient_id}
  rw.claims: {key: claim_id, event_time: filed_at}
  rw.visits: {key: visit_id}
policies:
  - name: read-rw
    access:
      tables: [rw.patients, rw.claims, rw.visits, rw.open, rw.patients_v, rw.parts, rw.parts_a, rw.sink, rw.vault]
      allow: {groups: [analysts, admins, contractors]}
      deny: {groups: [contractors]}
  - name: hash-pii
    mask: {tag: PII, type: hash, for: {everyone_except: {groups: [admins]}}}
  - name: ssn-null
    mask: {column: rw.patients.ssn, type: "null", for: {everyone_except: {groups: [admins]}}}
  - name: name-partial
    mask: {column: rw.patients.name, type: partial, show_first: 1, for: {everyone_except: {groups: [admins]}}}
  - name: note-constant
    mask: {column: rw.patients.note, type: constant, value: REDACTED, for: {everyone_except: {groups: [admins]}}}
  - name: kanon
    mask: {columns: [rw.patients.zip, rw.patients.birth_year], type: k_anonymize, k: 3, for: {everyone_except: {groups: [admins]}}}
  - name: phi-research
    limit_to_purpose: {tag: PHI, purposes: [Research], for: everyone}
  - name: us-accounts
    mask: {column: rw.claims.account_no, type: "null", where: "country = 'USA'", for: {everyone_except: {groups: [compliance]}}}
  - name: claims-in-state
    row_filter:
      table: rw.claims
      match: {column: state, attribute: office_location}
      for: {everyone_except: {groups: [admins]}}
  - name: small-claims
    row_filter: {table: rw.claims, where: "amount < 10000 OR pgveil.user_name() = 'reviewer'", for: {everyone_except: {groups: [admins]}}}
  - name: recent-claims
    row_filter: {table: rw.claims, time_window: 365 days, for: {everyone_except: {groups: [admins]}}}
  - name: ip-regex
    mask: {column: rw.visits.client_ip, type: regex, pattern: '\\d+$', replacement: XXX, for: {everyone_except: {groups: [admins]}}}
  - name: cost-round
    mask: {column: rw.visits.cost, type: round, step: 100, for: {everyone_except: {groups: [admins]}}}
  - name: month
    mask: {column: rw.visits.visited_at, type: round, unit: month, for: {everyone_except: {groups: [admins]}}}
  - name: sample-visits
    row_filter: {table: rw.visits, minimize: {percent: 50}, for: {everyone_except: {groups: [admins]}}}
  - name: vault-filter  # a costly filter (six operators): the planner puts cheaper user predicates before it
    row_filter: {table: rw.vault, where: "(((id + 1) * 2 - 2) / 2) - 0 <= 3", for: everyone}
  - name: open-mask
    mask: {column: rw.open.v, type: constant, value: hidden, for: {everyone_except: {groups: [admins]}}}
  - name: parts-filter
    row_filter: {table: rw.parts, where: "region <> 'hidden'", for: {everyone_except: {groups: [admins]}}}
"""

SCHEMA_SQL = """
DROP SCHEMA IF EXISTS rw CASCADE;
CREATE SCHEMA rw;
CREATE TABLE rw.patients (patient_id int PRIMARY KEY, ssn text, name text, email text, zip text, birth_year int, note text);
INSERT INTO rw.patients
SELECT g, 'SECRET-SSN-' || g, 'Name' || g || 'SECRET', 'p' || g || '@SECRET.example', CASE WHEN g <= 6 THEN '10001' ELSE 'SECRETZIP' || g END,
       CASE WHEN g <= 6 THEN 1980 ELSE 1900 + g END, 'SECRET note ' || g
FROM generate_series(1, 10) g;
CREATE TABLE rw.claims (claim_id int PRIMARY KEY, account_no text, country text, state text, amount numeric, filed_at timestamptz, x int);
INSERT INTO rw.claims VALUES
  (1, 'ACC-1', 'DE', 'Missouri', 100, now() - interval '1 day', 1),
  (2, 'SECRET-ACC-2', 'USA', 'Missouri', 200, now() - interval '2 days', 2),
  (3, 'SECRET-ROW-3', 'DE', 'Ohio', 300, now() - interval '1 day', 3),
  (4, 'SECRET-ROW-4', 'DE', 'Missouri', 50000, now() - interval '1 day', 4),
  (5, 'SECRET-ROW-5', 'DE', 'Missouri', 100, now() - interval '800 days', 5),
  (6, 'ACC-6', NULL, 'Missouri', 100, now() - interval '3 days', 6);
INSERT INTO rw.claims SELECT g, 'SECRET-BULK-' || g, 'DE', 'Texas', 1, now(), g FROM generate_series(100, 5000) g;
CREATE INDEX ON rw.claims (x);
CREATE TABLE rw.visits (visit_id int PRIMARY KEY, client_ip text, cost numeric, visited_at timestamptz);
INSERT INTO rw.visits SELECT g, '10.0.0.' || g, g * 37, timestamptz '2025-03-17 10:11:12+00' + g * interval '1 day'
FROM generate_series(1, 200) g;
CREATE TABLE rw.open (id int PRIMARY KEY, v text);
INSERT INTO rw.open SELECT g, 'v' || g FROM generate_series(1, 1000) g;
CREATE TABLE rw.sink (id int, v text);
CREATE TABLE rw.vault (id int PRIMARY KEY, secret text);
INSERT INTO rw.vault SELECT g, CASE WHEN g > 3 THEN 'SECRET-' || g ELSE 'ok' || g END FROM generate_series(1, 10) g;
CREATE VIEW rw.patients_v AS SELECT * FROM rw.patients;
CREATE TABLE rw.parts (id int, region text) PARTITION BY LIST (region);
CREATE TABLE rw.parts_a PARTITION OF rw.parts FOR VALUES IN ('a');
CREATE TABLE rw.parts_h PARTITION OF rw.parts FOR VALUES IN ('hidden');
INSERT INTO rw.parts VALUES (1, 'a'), (2, 'hidden');
UPDATE rw.parts SET region = region WHERE false;
ANALYZE rw.claims, rw.open;
"""

KEYS = StaticKeys(b"test master key")


def load_config() -> PolicyConfig:
    return PolicyConfig.model_validate(yaml.safe_load(CONFIG))


def subject(config: PolicyConfig, name: str) -> Subject:
    u = config.users[name]
    return Subject(name, frozenset(u.groups), {k: frozenset(v) for k, v in u.attributes.items()},
                   frozenset(u.purposes), u.unrestricted)


class DB:
    """One superuser connection on its own loop; the key table is set up as the proxy would."""

    def __init__(self, dsn: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.conn: asyncpg.Connection = self.run(asyncpg.connect(dsn))
        self.notices: list[str] = []
        self.conn.add_log_listener(lambda c, msg: self.notices.append(str(msg)))

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return self.run(self.conn.fetch(sql, *args))

    def close(self) -> None:
        self.run(self.conn.close())
        self.loop.close()


@pytest.fixture(scope="module")
def db(pg):
    from proxy.catalog import load_catalog

    d = DB(pg.dsn())
    d.run(d.conn.execute(SCHEMA_SQL))
    d.catalog = d.run(load_catalog(d.conn))
    d.run(d.conn.execute(KEY_TABLE_DDL))
    rows = key_rows(KEYS, [r.oid for r in d.catalog.relations.values() if r.schema == "rw"])
    d.run(d.conn.executemany(KEY_INSERT, rows))
    yield d
    d.close()


@pytest.fixture(scope="module")
def config():
    return load_config()


@pytest.fixture(scope="module")
def policies(config):
    return PolicySet.from_config(config)


@pytest.fixture
def ctx_for(db, config, policies):
    clear_cache()

    def make(name: str) -> RewriteContext:
        return RewriteContext(subject(config, name), policies, db.catalog, KEYS, ("public",), config.tags,
                              gate=lambda raw, ctx: None)

    return make


@pytest.fixture
def run_as(db, ctx_for):
    """Rewrite ``sql`` for a user and run it; returns rows (as dicts) or raises the verdict's denial."""

    def run(name: str, sql: str, *args: Any) -> list[dict]:
        v = rewrite_sql(sql, ctx_for(name))
        if not isinstance(v, Rewritten) and not hasattr(v, "sql"):
            raise PermissionError(v)
        return [dict(r) for r in db.fetch(v.sql, *args)]

    return run
