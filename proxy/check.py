"""``pgveil check``: validate a config file, then validate it against the backend's catalog.

The file check is ``load_config`` (pydantic, references; ``file:line`` errors).
The catalog check (``catalog_findings``) compares the config with what the
database holds, as pgveil's service role sees it:

errors
  tables named in ``tables:``, ``tags:``, ``projects.*.tables`` or a policy's
  target that do not exist; columns that do not exist (policy columns, a
  filter's match column, DP bounds, ``tables.*.key``/``event_time``, bare
  column names in ``where`` templates); masks whose type cannot apply to the
  column's type (``rewrite.policy.catalog.check_catalog``).
warnings
  wildcard or resource targets matching nothing; tags no existing table or
  column carries (a policy following one protects nothing); columns of
  governed tables that carry no tag and get no mask (threat 14: a new column
  with no classification is readable as it is).

The proxy runs the same check when the catalog or the policy changes
(``log_catalog_findings``, from ``runner.refresh_catalog``): it logs and keeps
serving, since unknown tables are refused anyway.
"""
from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from pglast import ast

from rewrite.catalog import Catalog, Relation
from rewrite.dp.plan import NUMBER_TYPES
from rewrite.policy.durations import parse_duration
from rewrite.decide import PolicySet, TableInfo
from rewrite.decide.resource import SELF, LevelMatcher, ResourceMatcher
from rewrite.policy import ConfigError, load_yaml_with_lines, validate_references
from rewrite.policy.catalog import check_catalog
from rewrite.policy.policies import policy_kind
from rewrite.policy.references import policy_label
from rewrite.policy.targets import split_column, split_table

log = logging.getLogger("pgveil.check")


@dataclass(frozen=True)
class Finding:
    """One problem: ``level`` error or warning, ``loc`` a key path into the YAML (for its line)."""

    level: str
    loc: tuple
    message: str


def _err(loc: tuple, msg: str) -> Finding:
    return Finding("error", loc, msg)


def _warn(loc: tuple, msg: str) -> Finding:
    return Finding("warning", loc, msg)


def _wild(name: str) -> bool:
    return "*" in name or "?" in name


def _user_relations(catalog: Catalog) -> list[Relation]:
    return [r for r in catalog.relations.values() if not r.is_system]


def _tables_matching(catalog: Catalog, name: str) -> list[Relation]:
    """Relations a policy's `schema.table` (wildcards, case-insensitive, as rewrite.decide matches) names."""
    s, t = split_table(name)
    m = ResourceMatcher([LevelMatcher([s]), LevelMatcher([t])])
    return [r for r in _user_relations(catalog) if m.match_type((r.schema, r.name)) == SELF]


def _column_names(rel: Relation) -> str:
    return ", ".join(c.name for c in rel.columns) or "(none)"


def _target_findings(catalog: Catalog, body: Any, loc: tuple) -> Iterator[Finding]:
    kind = body.target_kind()
    if kind == "tables":
        names = body.table_names()
        for j, name in enumerate(names):
            where = loc + (("table",) if body.table is not None else ("tables", j))
            if not _tables_matching(catalog, name):
                if _wild(name):
                    yield _warn(where, f"table pattern {name} matches no table in database {catalog.database}")
                else:
                    yield _err(where, f"table {name} does not exist in database {catalog.database}")
    elif kind == "columns":
        for j, name in enumerate(body.column_names()):
            where = loc + (("column",) if body.column is not None else ("columns", j))
            s, t, c = split_column(name)
            rels = _tables_matching(catalog, f"{s}.{t}")
            cm = LevelMatcher([c])
            if not rels and _wild(f"{s}.{t}"):
                yield _warn(where, f"column pattern {name} matches no table")
            elif not rels:
                yield _err(where, f"column {name}: table {s}.{t} does not exist in database {catalog.database}")
            elif not any(cm.matches(col.name) for r in rels for col in r.columns):
                if _wild(c):
                    yield _warn(where, f"column pattern {name} matches no column")
                else:
                    yield _err(where, f"column {name} does not exist (table {rels[0].schema}.{rels[0].name} has: "
                               f"{_column_names(rels[0])})")
    elif kind == "resource":
        resources = body.resource if isinstance(body.resource, list) else [body.resource]
        for j, r in enumerate(resources):
            levels = [lv for lv in (r.schema_, r.table, r.column) if lv is not None]
            m = ResourceMatcher([LevelMatcher(lv.values, lv.exclude, lv.ignore_case) for lv in levels])
            if len(levels) == 1:
                found = any(m.match_type((s,)) == SELF for s in catalog.schemas)
            elif len(levels) == 2:
                found = any(m.match_type((t.schema, t.name)) == SELF for t in _user_relations(catalog))
            else:
                found = any(m.match_type((t.schema, t.name, c.name)) == SELF for t in _user_relations(catalog) for c in t.columns)
            if not found:
                where = loc + (("resource", j) if isinstance(body.resource, list) else ("resource",))
                yield _warn(where, f"resource matches nothing in database {catalog.database}")


def _bare_columns(node: Any) -> Iterator[str]:
    """Unqualified column names of an expression, outside sub-selects."""
    if isinstance(node, tuple):
        for x in node:
            yield from _bare_columns(x)
        return
    if not isinstance(node, ast.Node) or isinstance(node, ast.SubLink):
        return
    if isinstance(node, ast.ColumnRef) and len(node.fields) == 1 and isinstance(node.fields[0], ast.String):
        yield node.fields[0].sval
        return
    for name in node:
        yield from _bare_columns(getattr(node, name))


def _template_columns(expr: str) -> list[str]:
    from rewrite.engine.templates import parse_template

    try:
        return list(dict.fromkeys(_bare_columns(parse_template(expr, placeholder=True))))
    except Exception:
        return []  # the file check validated the template; a Ranger macro may not parse before resolution


def _policy_findings(config: Any, catalog: Catalog) -> Iterator[Finding]:
    for i, policy in enumerate(config.policies):
        kind = policy_kind(policy)
        body = getattr(policy, kind)
        loc = ("policies", i, kind)
        yield from _target_findings(catalog, body, loc)
        rels = [r for name in body.table_names() for r in _tables_matching(catalog, name)] \
            if body.target_kind() == "tables" else []
        if kind == "row_filter":
            fields = [(body, loc)] + [(it.otherwise or it, loc + ("items", j)) for j, it in enumerate(body.items or ())]
            for f, floc in fields:
                for rel in rels:
                    cols = {c.name for c in rel.columns}
                    if f.match is not None and f.match.column not in cols:
                        yield _err(floc + ("match", "column"), f"column {f.match.column} does not exist in "
                                   f"{rel.schema}.{rel.name} (it has: {_column_names(rel)})")
                    if f.where is not None:
                        for c in _template_columns(f.where):
                            if c not in cols:
                                yield _err(floc + ("where",), f"where names column {c}, which {rel.schema}.{rel.name} "
                                           "does not have")
        if kind == "mask":
            items = [(body, loc)] + [(it, loc + ("items", j)) for j, it in enumerate(body.items or ())]
            tables = {(s, t) for s, t, _ in map(split_column, body.column_names())} if body.target_kind() == "columns" else set()
            for it, iloc in items:
                if getattr(it, "where", None) is None:
                    continue
                for s, t in sorted(tables):
                    rel = catalog.get(s, t)
                    if rel is None:
                        continue
                    for c in _template_columns(it.where):
                        if rel.column(c) is None:
                            yield _err(iloc + ("where",), f"where names column {c}, which {s}.{t} does not have")
        if kind == "differential_privacy":
            for rel in rels:
                for col in body.bounds:
                    c = rel.column(col)
                    if c is None:
                        yield _err(loc + ("bounds", col), f"bounds name column {col}, which {rel.schema}.{rel.name} "
                                   "does not have")
                    elif c.base not in NUMBER_TYPES:
                        yield _err(loc + ("bounds", col), f"bounds are for numbers; {rel.schema}.{rel.name}.{col} "
                                   f"is {c.type}, so SUM/AVG of it are refused anyway")
                for col in body.public_keys:
                    if rel.column(col) is None:
                        yield _err(loc + ("public_keys", col), f"public_keys name column {col}, which "
                                   f"{rel.schema}.{rel.name} does not have")
            if body.budget is None and parse_duration(body.latency_tolerance) == 0:
                yield _warn(loc, "no budget and latency_tolerance 0s: asking the same question again and again "
                            "averages the noise away; give a budget or a tolerance")


def _section_findings(config: Any, catalog: Catalog) -> Iterator[Finding]:
    db = catalog.database
    for key, meta in config.tables.items():
        s, t = split_table(key)
        rel = catalog.get(s, t)
        if rel is None:
            yield _err(("tables", key), f"table {s}.{t} does not exist in database {db}")
            continue
        for field in ("key", "event_time"):
            col = getattr(meta, field)
            if col is not None and rel.column(col) is None:
                yield _err(("tables", key, field), f"column {col} does not exist in {s}.{t} (it has: {_column_names(rel)})")
    for key in config.tags:
        parts = key.split(".")
        if len(parts) == 2:
            s, t = parts
            public_col = catalog.get("public", s)
            if catalog.get(s, t) is None and (public_col is None or public_col.column(t) is None):
                yield _err(("tags", key), f"table {key} does not exist in database {db}")
        elif len(parts) == 3:
            s, t, c = parts
            rel = catalog.get(s, t)
            if rel is None:
                yield _err(("tags", key), f"table {s}.{t} does not exist in database {db}")
            elif rel.column(c) is None:
                yield _err(("tags", key), f"column {c} does not exist in {s}.{t} (it has: {_column_names(rel)})")
    for name, project in config.projects.items():
        for j, table in enumerate(project.tables):
            if not _tables_matching(catalog, table):
                yield _err(("projects", name, "tables", j), f"table {table} does not exist in database {db}")


def _carried(config: Any, catalog: Catalog, key: str) -> bool:
    parts = key.split(".")
    if len(parts) == 2:
        rel, pub = catalog.get(*parts), catalog.get("public", parts[0])
        return rel is not None or (pub is not None and pub.column(parts[1]) is not None)
    if len(parts) == 3:
        rel = catalog.get(parts[0], parts[1])
        return rel is not None and rel.column(parts[2]) is not None
    return False


def _tag_findings(config: Any, catalog: Catalog) -> Iterator[Finding]:
    carriers: dict[str, list[str]] = {}
    for key, tags in config.tags.items():
        for tag in tags:
            carriers.setdefault(tag, []).append(key)
    for tag, keys in carriers.items():
        if any(_carried(config, catalog, k) for k in keys):
            continue
        followers = [p.name for p in config.policies if tag in getattr(p, policy_kind(p)).tag_names()]
        why = f"; policies following it protect nothing: {', '.join(followers)}" if followers else ""
        yield _warn(("tags", keys[0]), f"tag {tag}: no existing table or column carries it{why}")


def _governed(plan: Any) -> bool:
    return bool(plan.access or plan.column_access or plan.masks or plan.filters or plan.purposes
                or plan.column_purposes or plan.dp)


def _classification_findings(config: Any, catalog: Catalog, policies: PolicySet | None) -> Iterator[Finding]:
    policies = policies or PolicySet.from_config(config)
    for rel in sorted(_user_relations(catalog), key=lambda r: r.key):
        info = TableInfo.from_config(config, rel.schema, rel.name, [(c.name, c.type) for c in rel.columns])
        plan = policies.plan(info)
        if not _governed(plan):
            continue
        masked = {c for c, _ in plan.masks}
        bare = [c.name for c in info.columns if not c.tags and c.name not in masked]
        if bare:
            name = f"{rel.schema}.{rel.name}"
            loc = next((k for k in (("tables", name), ("tags", name), ("tables", rel.name))
                        if k[1] in (config.tables if k[0] == "tables" else config.tags)), ())
            yield _warn(loc, f"governed table {name}: columns with no classification (no tag, no mask): "
                        f"{', '.join(bare)}; they are readable as they are (tag them, or give them a mask; "
                        "type none marks a column as reviewed)")


_CHECK_CATALOG = re.compile(r"^policies\[(\d+)\] \([^)]*\): (.*)$")


def _type_findings(config: Any, catalog: Catalog) -> Iterator[Finding]:
    columns = {f"{r.schema}.{r.name}": {c.name: c.type for c in r.columns} for r in _user_relations(catalog)}
    for msg in check_catalog(config, columns):
        m = _CHECK_CATALOG.match(msg)
        if m is None:
            yield _err((), msg)
        elif not m.group(2).endswith("does not exist"):  # existence is reported above, with its line
            yield _err(("policies", int(m.group(1)), "mask"), m.group(2))


def catalog_findings(config: Any, catalog: Catalog, policies: PolicySet | None = None) -> list[Finding]:
    """Every problem of ``config`` against ``catalog``, errors first, each once (``policies``: its compiled PolicySet)."""
    found = [*_section_findings(config, catalog), *_policy_findings(config, catalog), *_type_findings(config, catalog),
             *_tag_findings(config, catalog), *_classification_findings(config, catalog, policies)]
    found = list(dict.fromkeys(found))
    return [f for f in found if f.level == "error"] + [f for f in found if f.level != "error"]


def format_finding(f: Finding, config: Any, source: Any = None) -> str:
    """``file:line: policies[3] (name).path: message`` with a source, ``policies[3] (name).path: message`` without."""
    label = policy_label(config, f.loc) if f.loc else ""
    head = label
    if source is not None:
        line = source.line_of(f.loc) if f.loc else None
        where = f"{source.name}:{line}" if line else source.name
        head = f"{where}: {label}" if label else where
    return f"{head}: {f.message}" if head else f.message


# -- in the proxy ------------------------------------------------------------------------

_last_checked: dict[int, tuple] = {}


def log_catalog_findings(holder: Any) -> None:
    """Log the catalog check of the holder's current state once per (policy, catalog) version: errors at ERROR."""
    state = holder.current
    if state.catalog is None:
        return
    key = (state.policies.version, state.catalog.version)
    if _last_checked.get(id(holder)) == key:
        return
    _last_checked[id(holder)] = key
    try:
        findings = catalog_findings(state.config, state.catalog, state.policies)
    except Exception:  # a bug here must not stop the proxy; it fails closed on unknown tables anyway
        log.exception("the config/catalog check failed")
        return
    for f in findings:
        (log.error if f.level == "error" else log.warning)("config vs database: %s", format_finding(f, state.config))


# -- the command -------------------------------------------------------------------------


def run_check(path: str, *, offline: bool = False) -> int:
    """``pgveil check``: 0 valid (warnings allowed), 2 errors, 3 the backend could not be read."""
    import asyncio

    import asyncpg

    from .config import load_config
    from .explain import fetch_catalog

    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"pgveil: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    source = load_yaml_with_lines(Path(path).read_text(), str(path))
    _, warnings = validate_references(config, source)
    for w in warnings:
        print(f"warning: {w}")
    summary = f"{path}: file OK ({len(config.users)} users, {len(config.policies)} policies)"
    if offline:
        print(summary + "; database not checked (--offline)")
        return 0
    try:
        catalog = fetch_catalog(config)
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError, ConfigError) as exc:
        print(summary)
        print(f"pgveil: cannot read the backend catalog to check the config against it: {exc}\n"
              "(--offline checks the file only)", file=sys.stderr)
        return 3
    findings = catalog_findings(config, catalog)
    errors = [f for f in findings if f.level == "error"]
    for f in findings:
        print(f"{f.level}: {format_finding(f, config, source)}")
    n_warn = len(findings) - len(errors) + len(warnings)
    tally = f"{len(errors)} error(s), {n_warn} warning(s)"
    if errors:
        print(f"pgveil: {path} does not match database {catalog.database}: {tally}", file=sys.stderr)
        return 2
    print(f"{summary}; matches database {catalog.database} ({len(_user_relations(catalog))} relations): {tally}")
    return 0
