"""Cross-reference checks: names a policy uses must exist.

Errors: unknown users, purposes and tags, duplicate policy names, row filters
whose table lacks the metadata they need. Warnings: groups and attribute keys
no user has. Groups exist only as memberships of users; with users coming and
going, a policy that names a group nobody is in yet is legitimate (Ranger
allows it too), but it is often a typo, so it is reported, not refused.

Problems are ``(level, loc, message)`` with ``loc`` a key path into the YAML,
which ``yamlsource.format_problem`` turns into ``file:line: policies[3] (name): ...``.
"""
from __future__ import annotations

from typing import Any, Iterator

from .conditions import Condition, EveryoneExcept
from .targets import split_table

Problem = tuple[str, tuple, str]


def purpose_names(tree: dict | None, prefix: str = "") -> set[str]:
    """Dotted names of every purpose in the hierarchy."""
    out: set[str] = set()
    for name, sub in (tree or {}).items():
        full = f"{prefix}{name}"
        out.add(full)
        out |= purpose_names(sub, full + ".")
    return out


def _conditions(value: Any, loc: tuple) -> Iterator[tuple[Condition, tuple]]:
    """Every Condition inside a Who / list of Grants / items structure."""
    if isinstance(value, Condition):
        yield value, loc
        for i, sub in enumerate(value.any_of or ()):
            yield from _conditions(sub, loc + ("any_of", i))
    elif isinstance(value, EveryoneExcept):
        yield from _conditions(value.everyone_except, loc + ("everyone_except",))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _conditions(v, loc + (i,))
    elif hasattr(value, "for_"):
        yield from _conditions(value.for_, loc + ("for",))


def _policy_conditions(body: Any, loc: tuple) -> Iterator[tuple[Condition, tuple]]:
    for field in ("allow", "allow_exceptions", "deny", "deny_exceptions"):
        if getattr(body, field, None) is not None:
            yield from _conditions(getattr(body, field), loc + (field,))
    if getattr(body, "for_", None) is not None:
        yield from _conditions(body.for_, loc + ("for",))
    for i, item in enumerate(getattr(body, "items", None) or ()):
        if item.when is not None:
            yield from _conditions(item.when, loc + ("items", i, "when"))


def reference_problems(config: Any) -> list[Problem]:
    """All cross-reference errors and warnings of a validated PolicyConfig."""
    from .policies import policy_kind  # local: policies imports this module's siblings

    out: list[Problem] = []
    users = set(config.users)
    groups = {g for u in config.users.values() for g in u.groups}
    attr_keys = {k for u in config.users.values() for k in u.attributes}
    purposes = purpose_names(config.purposes)
    tags = {t for ts in config.tags.values() for t in ts}

    def check_purposes(names: list[str], loc: tuple) -> None:
        for p in names:
            if p not in purposes:
                out.append(("error", loc, f"unknown purpose {p!r} (declare it under purposes:)"))

    for name, user in config.users.items():
        check_purposes(user.purposes, ("users", name, "purposes"))
    for name, project in config.projects.items():
        for m in project.members:
            if m not in users:
                out.append(("error", ("projects", name, "members"), f"unknown user {m!r}"))
        check_purposes(project.purposes, ("projects", name, "purposes"))
    for key in config.tags:
        if not 2 <= len(key.split(".")) <= 3:
            out.append(("error", ("tags", key), f"tag key {key!r}: write schema.table or schema.table.column"))

    seen: dict[str, int] = {}
    for i, policy in enumerate(config.policies):
        if policy.name in seen:
            out.append(("error", ("policies", i, "name"), f"duplicate policy name (also policies[{seen[policy.name]}])"))
        seen.setdefault(policy.name, i)
        kind = policy_kind(policy)
        body = getattr(policy, kind)
        loc = ("policies", i, kind)
        for tag in body.tag_names():
            if tag not in tags:
                out.append(("error", loc + ("tag",), f"unknown tag {tag!r}: no table or column carries it (see tags:)"))
        for cond, cloc in _policy_conditions(body, loc):
            for u in cond.users or ():
                if u not in users:
                    out.append(("error", cloc + ("users",), f"unknown user {u!r}"))
            for g in cond.groups or ():
                if g not in groups:
                    out.append(("warning", cloc + ("groups",), f"no user is in group {g!r}"))
            for k in cond.attributes or {}:
                if k not in attr_keys:
                    out.append(("warning", cloc + ("attributes",), f"no user has attribute {k!r}"))
            check_purposes(cond.purposes or [], cloc + ("purposes",))
        if kind == "limit_to_purpose":
            check_purposes(body.purposes, loc + ("purposes",))
        if kind == "row_filter":
            out.extend(_filter_metadata(config, body, loc))
    return out


def _filter_metadata(config: Any, body: Any, loc: tuple) -> Iterator[Problem]:
    meta = {split_table(k): v for k, v in config.tables.items()}
    fields = [body] + [it.otherwise or it for it in body.items or ()]
    for table in body.table_names():
        m = meta.get(split_table(table))
        for f in fields:
            if f.minimize is not None and (m is None or m.key is None):
                yield ("error", loc + ("minimize",), f"minimize needs a key column: set tables.{table}.key")
            if f.time_window is not None and (m is None or m.event_time is None):
                yield ("error", loc + ("time_window",), f"time_window needs an event-time column: set tables.{table}.event_time")


def policy_label(config_or_data: Any, loc: tuple) -> str:
    """`policies[3] (name).rest` for a policy location, the dotted path otherwise."""
    if len(loc) >= 2 and loc[0] == "policies" and isinstance(loc[1], int):
        policies = getattr(config_or_data, "policies", None)
        if policies is None and isinstance(config_or_data, dict):
            policies = config_or_data.get("policies")
        name = None
        try:
            p = policies[loc[1]]
            name = p.get("name") if isinstance(p, dict) else p.name
        except (IndexError, TypeError, AttributeError, KeyError):
            pass
        head = f"policies[{loc[1]}]" + (f" ({name})" if name else "")
        return ".".join([head] + [str(x) for x in loc[2:]])
    return ".".join(str(x) for x in loc) or "(top level)"
