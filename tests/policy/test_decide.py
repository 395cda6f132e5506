"""Decisions on the example config and on small configs that isolate one rule each."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from proxy.config import load_config
from rewrite.decide import PolicySet, Subject, TableInfo, decide
from rewrite.policy import PolicyConfig

PATIENTS = ["patient_id", "ssn", "email", "zip", "birth_year"]
CLAIMS = ["claim_id", "account_no", "state", "amount", "filed_at"]


@pytest.fixture
def example(example_path):
    config = load_config(example_path)
    return config, PolicySet.from_config(config)


def subject_of(config, name: str, purposes=None) -> Subject:
    u = config.users[name]
    return Subject(name, frozenset(u.groups), {k: frozenset(v) for k, v in u.attributes.items()},
                   frozenset(u.purposes if purposes is None else purposes), u.unrestricted)


def test_example_decisions(example):
    config, ps = example
    patients = TableInfo.from_config(config, "public", "patients", PATIENTS)
    claims = TableInfo.from_config(config, "public", "claims", CLAIMS)
    alice = decide(ps, subject_of(config, "alice"), patients)
    assert alice.allowed and alice.policy == "analysts-read-clinic"
    masks = {c: (m.type, m.policy) for c, m in alice.masks}
    assert masks["ssn"] == ("null", "ssn-by-role")  # override ordered item: otherwise
    assert masks["email"] == ("hash", "hash-pii")  # the tag policy comes before the local email-constant
    assert [(g.k, g.columns) for g in alice.k_anonymity] == [(5, ("zip", "birth_year"))]
    dana = decide(ps, subject_of(config, "dana"), patients)
    assert dana.mask_for("ssn").type == "none" and dana.mask_for("email") is None
    erin = decide(ps, subject_of(config, "erin"), claims)
    assert not erin.allowed and erin.policy == "analysts-read-clinic" and "denied by" in erin.reason
    carol = decide(ps, subject_of(config, "carol"), claims)  # a contractor in the deny's exceptions
    assert carol.allowed
    kinds = [(f.kind, f.policy) for f in carol.row_filters]
    assert ("false", "claims-in-my-state") in kinds  # carol has no office_location: no rows, never all
    bob = decide(ps, subject_of(config, "bob"), claims)
    match = next(f for f in bob.row_filters if f.policy == "claims-in-my-state")
    assert match.kind == "match" and match.param("values") == ("Florida", "Ohio")
    assert [f.policy for f in bob.row_filters] == ["claims-in-my-state", "recent-claims"]  # compliance skips big-claims


def test_purpose_hierarchy(example):
    config, ps = example
    patients = TableInfo.from_config(config, "public", "patients", PATIENTS)
    assert decide(ps, subject_of(config, "alice", ["Research.Marketing"]), patients).allowed
    assert decide(ps, subject_of(config, "alice", ["Research"]), patients).allowed
    d = decide(ps, subject_of(config, "alice", []), patients)
    assert not d.allowed and d.policy == "phi-for-research-only" and "Research" in d.reason
    assert not decide(ps, subject_of(config, "alice", ["Fraud"]), patients).allowed


def test_unknown_table_is_denied_and_unrestricted_bypasses(example):
    config, ps = example
    other = TableInfo("public", "secrets", ())
    d = decide(ps, subject_of(config, "alice"), other)
    assert not d.allowed and d.policy is None and d.reason == "no policy grants access"
    root = decide(ps, subject_of(config, "root"), other)
    assert root.allowed and root.unrestricted


def test_cache_by_subject_and_version(example):
    config, ps = example
    t = TableInfo.from_config(config, "public", "claims", CLAIMS)
    a1 = decide(ps, subject_of(config, "alice"), t)
    assert decide(ps, subject_of(config, "alice"), t) is a1
    assert decide(ps, subject_of(config, "bob"), t) is not a1
    assert decide(PolicySet.from_config(config), subject_of(config, "alice"), t) == a1


def cfg(policies: list[dict], **extra) -> PolicySet:
    users = {"u": {"password_env": "X", "groups": ["g", "h"]}, "v": {"password_env": "X", "groups": ["h"]}}
    return PolicySet.from_config(PolicyConfig.model_validate({"users": users, "policies": policies, **extra}))


T = TableInfo("public", "t", ())
U = Subject("u", frozenset({"g", "h"}))
V = Subject("v", frozenset({"h"}))


def test_override_allow_beats_normal_deny_and_override_deny_beats_allow():
    allow_override = {"name": "a", "priority": "override", "access": {"tables": ["t"], "allow": {"groups": ["g"]}}}
    deny_normal = {"name": "d", "access": {"tables": ["t"], "deny": {"groups": ["h"]}}}
    ps = cfg([deny_normal, allow_override])
    assert decide(ps, U, T).allowed and not decide(ps, V, T).allowed
    ps = cfg([{"name": "a", "access": {"tables": ["t"], "allow": "everyone"}},
              {"name": "d", "priority": "override", "access": {"tables": ["t"], "deny": {"users": ["u"]}}}])
    assert not decide(ps, U, T).allowed and decide(ps, V, T).allowed


def test_column_deny_and_masks_first_match():
    t = TableInfo("public", "t", ())
    from rewrite.decide import ColumnInfo
    t = TableInfo("public", "t", (ColumnInfo("a"), ColumnInfo("b", ("PII",))))
    ps = cfg([
        {"name": "read", "access": {"tables": ["t"], "allow": "everyone"}},
        {"name": "no-a", "access": {"columns": ["t.a"], "deny": {"users": ["v"]}}},
        {"name": "local", "mask": {"column": "t.b", "type": "null", "for": "everyone"}},
        {"name": "tag", "mask": {"tag": "PII", "type": "hash", "for": {"groups": ["g"]}}},
    ], tags={"public.t.b": ["PII"]})
    dv = decide(ps, V, t)
    assert dv.denied_columns == (("a", "no-a"),) and dv.mask_for("b").policy == "local"
    du = decide(ps, U, t)
    assert du.denied_columns == () and du.mask_for("b").policy == "tag"


def test_validity_window():
    ps = cfg([{"name": "a", "access": {"tables": ["t"], "allow": "everyone"},
               "validity": [{"start": "2030-01-01T00:00:00Z", "end": "2031-01-01T00:00:00Z"}]}])
    inside = datetime(2030, 6, 1, tzinfo=timezone.utc).timestamp()
    assert decide(ps, U, T, now=inside).allowed
    assert not decide(ps, U, T, now=inside + 365 * 86400).allowed
    assert not decide(ps, U, T, now=inside - 365 * 86400).allowed


def test_disabled_policy_is_ignored():
    ps = cfg([{"name": "a", "enabled": False, "access": {"tables": ["t"], "allow": "everyone"}}])
    assert not decide(ps, U, T).allowed
