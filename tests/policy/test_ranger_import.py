"""The Ranger importer on hand-written policies: mapping of resources, items, masks and conditions."""
from __future__ import annotations

from rewrite.decide import PolicySet, Subject, evaluate_access, evaluate_mask
from rewrite.policy.ranger import import_ranger

POLICIES = [
    {"id": 1, "name": "read", "resources": {"database": {"values": ["sales"]}, "table": {"values": ["*"]}, "column": {"values": ["*"]}},
     "policyItems": [{"accesses": [{"type": "select"}], "groups": ["analysts"], "roles": ["auditor"]}],
     "denyPolicyItems": [{"accesses": [{"type": "select"}], "groups": ["public"], "conditions": [{"type": "country", "values": ["US"]}]}]},
    {"id": 2, "name": "mask", "policyType": 1, "resources": {"database": {"values": ["sales"]}, "table": {"values": ["cust"]}, "column": {"values": ["ssn"]}},
     "dataMaskPolicyItems": [
         {"accesses": [{"type": "select"}], "users": ["boss"], "dataMaskInfo": {"dataMaskType": "MASK_NONE"}},
         {"accesses": [{"type": "select"}], "groups": ["public"], "dataMaskInfo": {"dataMaskType": "MASK_SHOW_LAST_4"}}]},
    {"id": 3, "name": "url", "resources": {"url": {"values": ["s3a://x"]}}, "policyItems": [{"accesses": [{"type": "read"}], "users": ["a"]}]},
]


def test_import_maps_items_masks_and_skips_non_table_resources():
    imp = import_ranger(POLICIES)
    assert [p.name for p in imp.policies] == ["read", "mask"]
    assert imp.skipped == [(3, "resource url is not a database/table/column resource")]
    assert imp.ranger_ids == {"read": 1, "mask": 2}
    ps = PolicySet(imp.policies)
    col = ("sales", "cust", "ssn")
    # fail closed: the deny with a `country` condition pgveil cannot evaluate keeps applying
    assert not evaluate_access(ps, Subject("x", frozenset({"analysts"})), col).allowed
    assert any("country" in w for w in imp.warnings)
    boss = evaluate_mask(ps, Subject("boss"), col)
    other = evaluate_mask(ps, Subject("y"), col)
    assert (boss.type, boss.label) == ("none", "MASK_NONE")
    assert (other.type, other.param("show_last"), other.param("fill"), other.label) == ("partial", 4, "class", "MASK_SHOW_LAST_4")


def test_assume_false_drops_conditional_items_and_roles_are_groups():
    ps = PolicySet(import_ranger(POLICIES, unsupported="assume_false").policies)
    col = ("SALES", "cust", "ssn")  # Hive names are case-insensitive
    assert evaluate_access(ps, Subject("x", frozenset({"auditor"})), col).allowed
    assert not evaluate_access(ps, Subject("x", frozenset({"other"})), col).allowed
    schema_level = evaluate_access(ps, Subject("x", frozenset({"analysts"})), ("sales",))
    assert schema_level.allowed and schema_level.match_type == "SELF_AND_ALL_DESCENDANTS"  # table=*, column=* cover the schema
    assert not evaluate_access(ps, Subject("x", frozenset({"analysts"})), ("sales", "cust", "ssn", "extra")).allowed
