"""Properties of the decision engine that must hold for every policy set."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rewrite.decide import PolicySet, Subject, TableInfo, decide
from rewrite.policy import PolicyConfig

USERS = ["u0", "u1", "u2", "u3"]
GROUPS = ["g0", "g1", "g2"]
T = TableInfo("public", "t", ())

conditions = st.one_of(
    st.just("everyone"),
    st.builds(lambda u: {"users": u}, st.lists(st.sampled_from(USERS), min_size=1, max_size=2, unique=True)),
    st.builds(lambda g: {"groups": g}, st.lists(st.sampled_from(GROUPS), min_size=1, max_size=2, unique=True)),
    st.builds(lambda g: {"everyone_except": {"groups": g}}, st.lists(st.sampled_from(GROUPS), min_size=1, max_size=2, unique=True)),
)
subjects = st.builds(
    lambda u, g: Subject(u, frozenset(g)), st.sampled_from(USERS), st.lists(st.sampled_from(GROUPS), max_size=3, unique=True)
)


@st.composite
def access_policies(draw, table: str = "t", deny_all_else: bool = True):
    body: dict = {"tables": [table]}
    for key in ("allow", "allow_exceptions", "deny", "deny_exceptions"):
        if draw(st.booleans()):
            body[key] = draw(conditions)
    if "allow" not in body and "deny" not in body:
        body["allow"] = draw(conditions)
    if deny_all_else and draw(st.integers(0, 4)) == 0:
        body["deny_all_else"] = True
    return {"priority": draw(st.sampled_from(["normal", "override"])), "access": body}


def build(policies: list[dict], extra_users: dict | None = None) -> PolicySet:
    named = [{"name": f"p{i}", **p} for i, p in enumerate(policies)]
    users = {u: {"password_env": "X", "groups": GROUPS} for u in USERS}
    return PolicySet.from_config(PolicyConfig.model_validate({"users": users, "policies": named}))


@settings(max_examples=150, deadline=None)
@given(st.lists(access_policies(), max_size=5), subjects, conditions, st.sampled_from(["normal", "override"]))
def test_adding_an_allow_never_removes_access(policies, s, who, priority):
    before = decide(build(policies), s, T).allowed
    after = decide(build(policies + [{"priority": priority, "access": {"tables": ["t"], "allow": who}}]), s, T).allowed
    assert after or not before


@settings(max_examples=150, deadline=None)
@given(st.lists(access_policies(), max_size=5), subjects, conditions, st.sampled_from(["normal", "override"]))
def test_adding_a_deny_never_adds_access(policies, s, who, priority):
    before = decide(build(policies), s, T).allowed
    after = decide(build(policies + [{"priority": priority, "access": {"tables": ["t"], "deny": who}}]), s, T).allowed
    assert before or not after


@settings(max_examples=150, deadline=None)
@given(st.lists(access_policies(deny_all_else=False), min_size=1, max_size=5), subjects)
def test_a_subject_in_deny_exceptions_is_never_denied_by_that_policy(policies, s):
    for p in policies:
        p["access"]["deny"] = p["access"].get("deny", "everyone")
        p["access"]["deny_exceptions"] = {"users": [s.user]}
    d = decide(build(policies), s, T)
    assert d.allowed or d.policy is None


@settings(max_examples=100, deadline=None)
@given(st.lists(access_policies(), max_size=4), st.lists(access_policies(table="other"), max_size=4), subjects, st.randoms())
def test_reordering_unrelated_policies_changes_nothing(related, unrelated, s, rnd):
    base = decide(build(related + unrelated), s, T)
    mixed = [("r", p) for p in related] + [("u", p) for p in unrelated]
    rnd.shuffle(mixed)
    # keep the related policies in their relative order (their names encode order-dependent choices)
    it = iter(related)
    reordered = [next(it) if tag == "r" else p for tag, p in mixed]
    names = {id(p): f"p{i}" for i, p in enumerate(related + unrelated)}
    ps = PolicySet.from_config(PolicyConfig.model_validate({
        "users": {u: {"password_env": "X", "groups": GROUPS} for u in USERS},
        "policies": [{"name": names[id(p)], **p} for p in reordered],
    }))
    assert decide(ps, s, T) == base


@settings(max_examples=100, deadline=None)
@given(subjects, st.lists(st.sampled_from(["Ohio", "Iowa"]), max_size=2, unique=True))
def test_match_filter_without_attribute_sees_no_rows(s, values):
    ps = build([
        {"access": {"tables": ["t"], "allow": "everyone"}},
        {"row_filter": {"table": "t", "match": {"column": "state", "attribute": "office_location"}, "for": "everyone"}},
    ])
    subject = Subject(s.user, s.groups, {"office_location": frozenset(values)} if values else {})
    d = decide(ps, subject, T)
    assert len(d.row_filters) == 1, "the filter must never disappear"
    f = d.row_filters[0]
    if values:
        assert f.kind == "match" and set(f.param("values")) == set(values)
    else:
        assert f.kind == "false"
