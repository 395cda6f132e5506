"""Import Apache Ranger policies (as exported by Ranger Admin) into pgveil's model.

Takes already-loaded JSON (this module does no I/O) and returns pgveil policy
models, so people moving from Ranger or Privacera keep their policies. A Hive
database maps to a Postgres schema; tables and columns map one to one. Tag
(global) policies follow tags. Access, mask (dataMaskPolicyItems) and row
filter (rowFilterPolicyItems) policies are imported with their priorities,
allow/deny items and exceptions, isDenyAllElse, enabled flags and validity
schedules. Ranger semantics are kept where pgveil's own differ: ordered items
fall through (``fallthrough``) and among imported row filters the first policy
with a matching item decides (``combine: first``). Macros ``{USER}`` and
``${{USER.attr}}`` stay inside string literals of filter and mask
expressions; ``rewrite.decide.macros`` substitutes them per subject.

Policies on resources other than database/table/column (url, udf,
hiveservice, ...) cannot apply to Postgres tables and are skipped with a note.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

from pydantic import TypeAdapter, ValidationError

from .policies import Policy
from .ranger_items import ItemContext, filter_item, grants, mask_item

_LEVELS = (("database", "schema"), ("table", "table"), ("column", "column"))
_POLICY = TypeAdapter(Policy)


@dataclass
class RangerImport:
    """The imported policies, Ranger ids by pgveil name, and what was skipped or approximated."""

    policies: list[Any] = field(default_factory=list)
    ranger_ids: dict[str, Any] = field(default_factory=dict)
    skipped: list[tuple[Any, str]] = field(default_factory=list)  # (ranger id, reason)
    warnings: list[str] = field(default_factory=list)
    features: set[str] = field(default_factory=set)  # unsupported features met (condition kinds, mask types)


def _level(spec: dict, ignore_case: bool) -> dict:
    return {"values": list(spec.get("values") or []), "exclude": bool(spec.get("isExcludes")), "ignore_case": ignore_case}


def _resource(res: dict, ignore_case: bool) -> dict:
    out = {}
    for ranger, ours in _LEVELS:
        if ranger in res:
            out[ours] = _level(res[ranger], ignore_case)
    return out


def _target(p: dict, ignore_case: bool) -> tuple[dict | None, str | None]:
    res = p.get("resources") or {}
    if "tag" in res:
        return {"tags": list(res["tag"].get("values") or [])}, None
    all_res = [res] + list(p.get("additionalResources") or [])
    other = sorted({k for r in all_res for k in r} - {lv for lv, _ in _LEVELS})
    if other:
        return None, f"resource {', '.join(other)} is not a database/table/column resource"
    if any("database" not in r for r in all_res):
        return None, "resource without a database level"
    rs = [_resource(r, ignore_case) for r in all_res]
    return {"resource": rs[0] if len(rs) == 1 else rs}, None


def _time(text: str | None, tz: str | None) -> str | None:
    if not text:
        return None
    dt = datetime.strptime(text, "%Y/%m/%d %H:%M:%S")
    if not tz:
        dt = dt.replace(tzinfo=timezone.utc)
    else:
        from zoneinfo import ZoneInfo

        dt = dt.replace(tzinfo=ZoneInfo(tz))
    return dt.isoformat()


def _ignore_case(service_def: dict | None) -> bool:
    for r in (service_def or {}).get("resources") or []:
        if r.get("name") == "table":
            return bool((r.get("matcherOptions") or {}).get("ignoreCase", True)) in (True, "true")
    return True


def convert_policy(p: dict, ctx: ItemContext, ignore_case: bool = True) -> tuple[dict | None, str | None]:
    """A pgveil policy (as a dict) for one Ranger policy, or (None, why not)."""
    target, why = _target(p, ignore_case)
    if target is None:
        return None, why
    conds = list(p.get("conditions") or [])
    ptype = int(p.get("policyType") or 0)
    if ptype == 1:
        items = [mask_item(it, ctx, conds) for it in p.get("dataMaskPolicyItems") or []]
        if not items:
            return None, "mask policy without items"
        body: dict = {"mask": {**target, "items": items, "fallthrough": True}}
    elif ptype == 2:
        items = [filter_item(it, ctx, conds) for it in p.get("rowFilterPolicyItems") or []]
        if not items:
            return None, "row filter policy without items"
        body = {"row_filter": {**target, "items": items, "fallthrough": True, "combine": "first"}}
    elif ptype == 0:
        access: dict = {**target, "actions": ["all"]}
        for ranger, ours, role in (
            ("policyItems", "allow", "allow"), ("allowExceptions", "allow_exceptions", "exception"),
            ("denyPolicyItems", "deny", "deny"), ("denyExceptions", "deny_exceptions", "exception"),
        ):
            if p.get(ranger):
                access[ours] = grants(p[ranger], ctx, role, conds)
        if p.get("isDenyAllElse"):
            access["deny_all_else"] = True
        if not any(k in access for k in ("allow", "deny", "deny_all_else")):
            return None, "access policy without items"
        body = {"access": access}
    else:
        return None, f"policy type {ptype}"
    out: dict = {
        "name": str(p.get("name") or f"ranger-{p.get('id')}"),
        "description": p.get("description") or None,
        "priority": "override" if int(p.get("policyPriority") or 0) > 0 else "normal",
        "enabled": bool(p.get("isEnabled", True)),
        **body,
    }
    schedules = p.get("validitySchedules") or []
    if schedules:
        out["validity"] = [
            {"start": _time(s.get("startTime"), s.get("timeZone")), "end": _time(s.get("endTime"), s.get("timeZone"))}
            for s in schedules
        ]
    return out, None


def import_ranger(policies: Iterable[dict], tag_policies: Iterable[dict] = (), *, service_def: dict | None = None,
                  unsupported: str = "fail_closed") -> RangerImport:
    """Import a service's resource policies and its tag service's policies.

    Tag policies are placed first, as Ranger evaluates them first; pgveil's
    order rules (tag before resource at one priority) make this a no-op for
    evaluation but keep file order readable.
    """
    service = (service_def or {}).get("name", "hive")
    ctx = ItemContext(unsupported, service)
    ignore_case = _ignore_case(service_def)
    out = RangerImport()
    for p in list(tag_policies) + list(policies):
        pid = p.get("id")
        start = len(ctx.notes)
        data, why = convert_policy(p, ctx, ignore_case)
        if data is None:
            out.skipped.append((pid, why))
            continue
        name = data["name"]
        if name in out.ranger_ids:
            name = data["name"] = f"{name} (ranger id {pid})"
        try:
            model = _POLICY.validate_python(data)
        except ValidationError as exc:
            out.skipped.append((pid, "does not fit pgveil's model: " + "; ".join(e["msg"] for e in exc.errors())))
            continue
        out.policies.append(model)
        out.ranger_ids[name] = pid
        for note in ctx.notes[start:]:
            out.features.add(note)
            out.warnings.append(f"policy {name} (ranger id {pid}): {note}")
    return out


def import_ranger_export(doc: dict, **kw: Any) -> RangerImport:
    """Import a Ranger Admin export (`policies`, optional `tagPolicyInfo.tagPolicies` or `tagPolicies`)."""
    tag_info = doc.get("tagPolicyInfo") or {}
    tags = tag_info.get("tagPolicies") or doc.get("tagPolicies") or []
    kw.setdefault("service_def", doc.get("serviceDef"))
    return import_ranger(doc.get("policies") or [], tags, **kw)
