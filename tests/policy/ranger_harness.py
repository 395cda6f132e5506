"""Runs Apache Ranger's policy-engine test cases through pgveil's importer and decision engine.

Each case is evaluated twice, with Ranger's custom conditions (which pgveil
does not evaluate) assumed met and assumed not met. When the two agree, the
case does not depend on them and is compared with Ranger's expected result;
when they differ, it is counted as unsupported with the condition kinds named.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewrite.decide import PolicySet, Subject, evaluate_access, evaluate_mask, evaluate_row_filter
from rewrite.decide.macros import normalize, resolve
from rewrite.decide.resource import ANCESTOR, DESCENDANT, NONE, SELF, LevelMatcher, ResourceMatcher
from rewrite.policy.ranger import import_ranger_export

LEVELS = ("database", "table", "column")


@dataclass
class Outcome:
    passed: int = 0
    failed: list[str] = field(default_factory=list)
    unsupported: Counter = field(default_factory=Counter)
    access_policy_agree: int = 0
    access_cases: int = 0


class TagStore:
    """A Ranger service-tags file: resources with tags; gives a request's tags with match types."""

    def __init__(self, doc: dict) -> None:
        tags = {str(k): v["type"] for k, v in doc.get("tags", {}).items()}
        self.entries = []
        for r in doc.get("serviceResources", []):
            levels = [LevelMatcher(r["resourceElements"][lv]["values"]) for lv in LEVELS if lv in r["resourceElements"]]
            names = [tags[str(t)] for t in doc.get("resourceToTagIds", {}).get(str(r["id"]), [])]
            self.entries.append((ResourceMatcher(levels), names))

    def tags_for(self, resource: tuple) -> list[tuple[str, str]]:
        out = []
        for matcher, names in self.entries:
            mt = matcher.match_type(resource)
            if mt == NONE:
                continue
            kind = {DESCENDANT: DESCENDANT, ANCESTOR: ANCESTOR}.get(mt, SELF)  # a tag on an ancestor is inherited
            out += [(n, kind) for n in names]
        return out


def _context_tags(ctx: dict) -> list[tuple[str, str]]:
    raw = ctx.get("TAGS")
    if not raw:
        return []
    out = []
    for t in json.loads(raw):
        mt = t.get("matchType", SELF)
        out.append((t["type"], mt if mt in (DESCENDANT, ANCESTOR) else SELF))
    return out


def _subject(req: dict, test: dict, doc: dict) -> Subject:
    user = req.get("user") or ""
    groups = set(req.get("userGroups") or [])
    roles = set(req.get("userRoles") or []) | set(doc.get("userRoles", {}).get(user, []))
    for g in groups:
        roles |= set(doc.get("groupRoles", {}).get(g, []))
    attrs = {k: frozenset([v]) for k, v in (test.get("userAttributes", {}).get(user) or {}).items()}
    return Subject(user, frozenset(groups | roles), attrs)


def _request_problem(req: dict) -> str | None:
    elements = req["resource"]["elements"]
    other = sorted(set(elements) - set(LEVELS))
    if other:
        return f"resource {'/'.join(other)} (not database/table/column)"
    return None


def _evaluate(ps: PolicySet, ids: dict, test: dict, doc: dict, store: TagStore | None) -> dict:
    req = test["request"]
    el = req["resource"]["elements"]
    depth = max((LEVELS.index(k) for k in el), default=-1) + 1
    resource = tuple(el.get(lv) for lv in LEVELS[:depth])
    s = _subject(req, test, doc)
    ctx = req.get("context") or {}
    tags = store.tags_for(resource) if store else _context_tags(ctx)
    out: dict[str, Any] = {}
    if "result" in test:
        types = ctx.get("ACCESSTYPES")
        action = req.get("accessType") or None
        action = None if action in (None, "_any") else action
        if types:
            results = [evaluate_access(ps, s, resource, tags, a) for a in types]
            ok = any(r.allowed for r in results) if ctx.get("ISANYACCESS") else all(r.allowed for r in results)
            out["allowed"], out["policy"] = ok, None
        else:
            r = evaluate_access(ps, s, resource, tags, action)
            out["allowed"], out["policy"] = r.allowed, ids.get(r.policy, -1) if r.policy else -1
    if "dataMaskResult" in test:
        self_tags = [(t, mt) for t, mt in tags if mt != DESCENDANT]
        m = evaluate_mask(ps, s, resource, self_tags)
        value = None
        if m is not None and m.type == "custom":
            value = resolve(m.param("expr"), s)
        out["mask"] = (m.label if m else None, m.where if m else None, value, ids.get(m.policy, -1) if m else -1)
    if "rowFilterResult" in test:
        self_tags = [(t, mt) for t, mt in tags if mt != DESCENDANT]
        fs = evaluate_row_filter(ps, s, resource, self_tags)
        if fs:
            name, spec = fs[0]
            expr = dict(spec.params).get("expr")
            out["filter"] = (resolve(expr, s) if expr else None, ids.get(name, -1))
        else:
            out["filter"] = (None, -1)
    return out


def _expected(test: dict) -> dict:
    out: dict[str, Any] = {}
    if "result" in test:
        out["allowed"], out["policy"] = test["result"]["isAllowed"], test["result"].get("policyId", -1)
    if "dataMaskResult" in test:
        r = test["dataMaskResult"]
        info = r.get("additionalInfo") or {}
        value = info.get("maskedValue")
        if info.get("maskType") == "CUSTOM" and value:
            value = normalize(value)
        else:
            value = None
        out["mask"] = (info.get("maskType"), info.get("maskCondition"), value, r.get("policyId", -1))
    if "rowFilterResult" in test:
        r = test["rowFilterResult"]
        expr = (r.get("additionalInfo") or {}).get("filterExpr")
        out["filter"] = (normalize(expr) if expr else None, r.get("policyId", -1))
    return out


def _same(got: dict, want: dict, outcome: Outcome) -> bool:
    ok = True
    if "allowed" in want:
        ok &= got["allowed"] == want["allowed"]
        if got["policy"] is not None:  # Ranger's runner does not check policyId of access results; we count agreement
            outcome.access_cases += 1
            outcome.access_policy_agree += got["policy"] == want["policy"]
    for key in ("mask", "filter"):
        if key in want:
            ok &= got[key] == want[key]
    return ok


def run_file(path: Path, outcome: Outcome) -> None:
    doc = json.loads(path.read_text())
    store = None
    defs = [doc.get("serviceDef") or {}, (doc.get("tagPolicyInfo") or {}).get("serviceDef") or {}]
    for enricher in [e for d in defs for e in d.get("contextEnrichers") or []]:
        tag_file = (enricher.get("enricherOptions") or {}).get("serviceTagsFileName")
        if tag_file:  # "/policyengine/<file>": resolve to this folder
            store = TagStore(json.loads((path.parent / Path(tag_file).name).read_text()))
    imports = {mode: import_ranger_export(doc, unsupported=mode) for mode in ("assume_true", "assume_false")}
    sets = {mode: PolicySet(imp.policies) for mode, imp in imports.items()}
    skipped_other = any("not a database/table/column" in why for _, why in imports["assume_true"].skipped)
    notes = sorted(f for f in imports["assume_true"].features if not f.startswith("mask type"))
    for test in doc["tests"]:
        name = f"{path.name}: {test['name']}"
        problem = _request_problem(test["request"])
        if problem:
            outcome.unsupported[problem] += 1
            continue
        if not test["request"]["resource"]["elements"] and skipped_other:
            # a service-level request (SHOW DATABASES) is matched by every policy, the skipped url/udf ones too
            outcome.unsupported["service-level request that skipped non-table policies may decide"] += 1
            continue
        got_t = _evaluate(sets["assume_true"], imports["assume_true"].ranger_ids, test, doc, store)
        got_f = _evaluate(sets["assume_false"], imports["assume_false"].ranger_ids, test, doc, store)
        if got_t != got_f:
            outcome.unsupported["depends on " + ", ".join(notes)] += 1
            continue
        want = _expected(test)
        if _same(got_t, want, outcome):
            outcome.passed += 1
        else:
            outcome.failed.append(f"{name}: got {got_t}, expected {want}")


def run_all(folder: Path) -> Outcome:
    outcome = Outcome()
    for path in sorted(folder.glob("test_policyengine_*.json")):
        run_file(path, outcome)
    return outcome
