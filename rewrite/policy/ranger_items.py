"""Ranger policy items to pgveil conditions, grants, mask and filter items.

Ranger ORs an item's users, groups and roles; pgveil writes that as `any_of`.
`public` is everyone, `{USER}` is every user. Roles become groups of the same
name (give role members that group). Custom conditions (`country`,
JavaScript `expression`, `accessed-together`, `{OWNER}` ...) have no pgveil
equivalent; how they import is chosen by ``unsupported``:
- ``fail_closed`` (default): deny items keep applying, allow items and
  exceptions never apply, mask and filter items apply;
- ``assume_true`` / ``assume_false``: the condition is taken as always met /
  never met (the conformance test uses both to find cases that depend on one).
"""
from __future__ import annotations

from typing import Any

NEVER = {"any_of": []}
EVERYONE = {"everyone": True}

HIVE_MASKS: dict[str, dict[str, Any]] = {
    "MASK": {"type": "redact"},
    "MASK_SHOW_LAST_4": {"type": "partial", "show_last": 4, "fill": "class"},
    "MASK_SHOW_FIRST_4": {"type": "partial", "show_first": 4, "fill": "class"},
    "MASK_HASH": {"type": "hash"},
    "MASK_NULL": {"type": "null"},
    "NULL": {"type": "null"},
    "MASK_NONE": {"type": "none"},
    "NONE": {"type": "none"},
    "MASK_DATE_SHOW_YEAR": {"type": "round", "unit": "year"},
}


class ItemContext:
    """Settings and findings shared by all items of one import."""

    def __init__(self, unsupported: str, service: str) -> None:
        if unsupported not in ("fail_closed", "assume_true", "assume_false"):
            raise ValueError("unsupported must be fail_closed, assume_true or assume_false")
        self.unsupported = unsupported
        self.service = service
        self.notes: list[str] = []  # unsupported features met, for the warnings list

    def unknown(self, what: str, role: str) -> bool:
        """Whether an item with an unsupported ``what`` applies, for an item of ``role``."""
        self.notes.append(what)
        if self.unsupported == "assume_true":
            return True
        if self.unsupported == "assume_false":
            return False
        return role in ("deny", "mask", "filter")


def principals(item: dict, ctx: ItemContext, role: str, policy_conditions: list[dict]) -> dict:
    """The pgveil condition of one Ranger item (as a plain dict for the model)."""
    users = [u for u in item.get("users") or [] if u]
    groups = [g for g in item.get("groups") or [] if g]
    roles = [r for r in item.get("roles") or [] if r]
    options: list[dict] = []
    unknown_owner = False
    if "{USER}" in users or "public" in groups:
        options.append(EVERYONE)
    if "{OWNER}" in users:
        unknown_owner = True
    plain_users = [u for u in users if u not in ("{USER}", "{OWNER}")]
    if plain_users:
        options.append({"users": plain_users})
    plain_groups = [g for g in groups if g != "public"] + roles
    if plain_groups:
        options.append({"groups": plain_groups})
    if unknown_owner and ctx.unknown("resource owner ({OWNER})", role):
        options.append(EVERYONE)
    cond: dict = {"any_of": options} if options != [EVERYONE] else dict(EVERYONE)
    for c in list(item.get("conditions") or []) + policy_conditions:
        if not ctx.unknown(f"condition {c.get('type')!r}", role):
            return dict(NEVER)
    return cond


def actions(item: dict, service: str) -> list[str]:
    """The item's access types, without the `hive:` prefix tag policies use."""
    out = []
    for a in item.get("accesses") or []:
        if a.get("isAllowed", True) is False:
            continue
        t = a.get("type", "")
        out.append(t.split(":", 1)[1] if ":" in t else t)
    return out


def grants(items: list[dict], ctx: ItemContext, role: str, policy_conditions: list[dict]) -> list[dict]:
    return [
        {"for": principals(it, ctx, role, policy_conditions), "actions": actions(it, ctx.service)}
        for it in items
    ]


def mask_item(item: dict, ctx: ItemContext, policy_conditions: list[dict]) -> dict:
    info = item.get("dataMaskInfo") or {}
    rtype = info.get("dataMaskType") or "MASK_NONE"
    if rtype == "CUSTOM":
        spec: dict[str, Any] = {"type": "custom", "expr": info.get("valueExpr") or "{col}"}
    elif rtype in HIVE_MASKS:
        spec = dict(HIVE_MASKS[rtype])
    else:
        ctx.notes.append(f"mask type {rtype} (imported as null)")
        spec = {"type": "null"}
    spec["label"] = rtype
    out = {"when": principals(item, ctx, "mask", policy_conditions), **spec}
    if info.get("conditionExpr"):
        out["where"] = info["conditionExpr"]
    return out


def filter_item(item: dict, ctx: ItemContext, policy_conditions: list[dict]) -> dict:
    expr = ((item.get("rowFilterInfo") or {}).get("filterExpr") or "").strip()
    out: dict[str, Any] = {"when": principals(item, ctx, "filter", policy_conditions)}
    if expr:
        out["where"] = expr
    return out
