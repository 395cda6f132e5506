"""A DP test setup: a PUMS-like table under a differential_privacy policy, as config and catalog."""
from __future__ import annotations

import yaml

from rewrite import RewriteContext
from rewrite.catalog import Catalog, Column, Relation
from rewrite.decide import PolicySet, Subject
from rewrite.engine.keys import StaticKeys
from rewrite.policy import PolicyConfig

CONFIG = """
users:
  ana: {password_env: X, groups: [analysts]}
  ben: {password_env: X, groups: [analysts], attributes: {region: [north]}}
  admin: {password_env: X, groups: [admins]}
tables:
  dp.people: {key: person_id}
policies:
  - name: read-dp
    access: {tables: [dp.people, dp.regions], allow: {groups: [analysts, admins]}}
  - name: dp-people
    differential_privacy:
      table: dp.people
      epsilon: 1.0
      latency_tolerance: 1h
      budget: {epsilon: 5.0, per: 1 day}
      bounds: {age: [0, 100], income: [0, 500000], score: [0, 10.5]}
      public_keys: {sex: [F, M], educ: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]}
      for: {everyone_except: {groups: [admins]}}
  - name: north-only
    row_filter: {table: dp.people, where: "region = 'north'", for: {users: [ben]}}
"""

COLUMNS = (("person_id", "integer", "int4"), ("age", "integer", "int4"), ("sex", "text", "text"),
           ("educ", "integer", "int4"), ("income", "integer", "int4"), ("married", "boolean", "bool"),
           ("region", "text", "text"), ("name", "text", "text"), ("score", "double precision", "float8"))

CATALOG = Catalog.build("pgveil_test", [
    Relation(9101, "dp", "people", "table", tuple(Column(n, t, b) for n, t, b in COLUMNS)),
    Relation(9102, "dp", "regions", "table", (Column("region", "text", "text"), Column("label", "text", "text"))),
], operators={(op, t, t): True for op in ("=", "<", "<=", ">", ">=", "<>") for t in ("int4", "int8", "text", "bool")})


def config() -> PolicyConfig:
    return PolicyConfig.model_validate(yaml.safe_load(CONFIG))


def context(name: str, catalog: Catalog = CATALOG, cfg: PolicyConfig | None = None) -> RewriteContext:
    cfg = cfg or config()
    u = cfg.users[name]
    subject = Subject(name, frozenset(u.groups), {k: frozenset(v) for k, v in u.attributes.items()},
                      frozenset(u.purposes), u.unrestricted)
    return RewriteContext(subject, PolicySet.from_config(cfg), catalog, StaticKeys(b"k"), ("public",), cfg.tags,
                          gate=lambda raw, ctx: None)
