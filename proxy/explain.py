"""``pgveil explain``: the policy simulator.

For one user (and purpose / project) and one SQL text, shows what the proxy
would decide without a running proxy: the subject, each table the statement
touches with its decision (which policies applied and why: masks, row filters
as SQL, minimization, k-anonymity, purpose requirements, DP) and the verdict,
i.e. the rewritten SQL (pretty-printed, long hex literals redacted) or the
refusal (SQLSTATE and message).

``explain(config, catalog, user, sql, ...)`` builds a plain JSON-able dict
through the same code the proxy runs (``Governor`` for the subject and the
purpose checks, ``rewrite_statements`` for the verdict); ``format_text`` and
``format_json`` render it and are pure. ``fetch_catalog`` reads the backend
catalog as the proxy does (``runner.backend_target`` / ``load_backend_catalog``;
``dsn: embedded`` starts the embedded server).
"""
from __future__ import annotations

import asyncio
import json
import re
from types import SimpleNamespace
from typing import Any

from rewrite import Allow, Deny, DPRequest, ProxyHandled, Rewritten, rewrite_statements
from rewrite.analysis import ParseFailure, analyze, parse_statements, print_node
from rewrite.catalog import Catalog, Relation
from rewrite.decide import PolicySet, TableDecision, decide
from rewrite.engine.filters import filter_expr, minimize_expr
from rewrite.engine.governed import is_plain

from .config import Config
from .policy_state import SEARCH_PATH, PolicyHolder, PolicyState
from .session.governor import ContextError, Governor, Refuse


class ExplainError(Exception):
    """The request cannot be explained (unknown user, purpose not allowed, syntax error); for the admin."""


# -- the catalog -------------------------------------------------------------------------


def fetch_catalog(config: Config) -> Catalog:
    """The backend's catalog as pgveil's service role sees it (raises OSError, asyncpg errors, ConfigError)."""
    from .runner import backend_target, backend_tls_context, load_backend_catalog

    target, password = backend_target(config)
    # Only what load_backend_catalog reads: no verifiers, no master key (explain and check never need keys).
    settings = SimpleNamespace(target=target, backend_password=password, backend_tls=backend_tls_context(config, target),
                               connect_timeout=config.backend.connect_timeout)
    return asyncio.run(load_backend_catalog(settings))  # type: ignore[arg-type]


# -- building the explanation ------------------------------------------------------------


def _params(params: tuple) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in params}


def _expr_sql(build) -> str:
    try:
        return print_node(build())
    except Exception as exc:  # the proxy would refuse the statement; say why instead of SQL
        return f"<cannot build: {exc}>"


def decision_dict(rel: Relation, d: TableDecision, subject) -> dict[str, Any]:
    """A TableDecision as plain data, row filters and minimization with their SQL."""
    q = rel.name
    out: dict[str, Any] = {
        "table": f"{rel.schema}.{rel.name}",
        "kind": rel.kind,
        "allowed": d.allowed,
        "policy": d.policy,
        "reason": d.reason,
        "unrestricted": d.unrestricted,
        "plain": is_plain(d),
        "denied_columns": [{"column": c, "policy": p} for c, p in d.denied_columns],
        "masks": [{"column": c, "type": m.type, "params": _params(m.params), "policy": m.policy,
                   **({"where": m.where} if m.where else {}), **({"label": m.label} if m.label else {})}
                  for c, m in d.masks],
        "row_filters": [{"kind": f.kind, "policy": f.policy, "params": _params(f.params),
                         "sql": _expr_sql(lambda f=f: filter_expr(f, rel, subject, q))} for f in d.row_filters],
        "minimization": None,
        "k_anonymity": [{"k": g.k, "columns": list(g.columns), "policy": g.policy} for g in d.k_anonymity],
        "purposes": [{"purposes": list(p.purposes), "policy": p.policy, "satisfied": p.satisfied} for p in d.purposes],
        "dp": None,
    }
    if d.minimization is not None:
        m = d.minimization
        out["minimization"] = {"percent": m.percent, "key_column": m.key_column, "policy": m.policy,
                               "sql": _expr_sql(lambda: minimize_expr(m, rel, q))}
    if d.dp is not None:
        p = d.dp
        out["dp"] = {"epsilon": p.epsilon, "latency_tolerance": p.latency_tolerance, "budget_epsilon": p.budget_epsilon,
                     "budget_period": p.budget_period, "bounds": {c: [lo, hi] for c, lo, hi in p.bounds}, "policy": p.policy}
    return out


#: A bytea / hex literal longer than 16 hex digits: '\x...', E'\\x...', X'...', or a bare hex string.
_HEX_LITERAL = re.compile(r"""(?P<prefix>\b[EeXx])?'(?P<body>(?:\\\\?x)?[0-9A-Fa-f]{17,})'""")


def redact(sql: str) -> tuple[str, int]:
    """``sql`` with every bytea/hex literal of more than 16 hex digits replaced; and how many were.

    Keys are never in pgveil's SQL (they live in pg_temp.pgveil_keys); this is a second line of defense.
    """
    count = 0

    def sub(m: re.Match) -> str:
        nonlocal count
        count += 1
        return "'<redacted>'"

    return _HEX_LITERAL.sub(sub, sql), count


def pretty(sql: str) -> str:
    """pglast's prettifier when it can print the statement, else the text as it is."""
    try:
        from pglast import prettify

        return prettify(sql)
    except Exception:
        return sql


def _verdict_dict(v: Any) -> dict[str, Any]:
    if isinstance(v, Deny):
        return {"verdict": "refused", "sqlstate": v.sqlstate, "message": v.message, "policy": v.policy}
    if isinstance(v, ProxyHandled):
        s = v.setting
        return {"verdict": "answered by pgveil", "setting": getattr(s, "name", None), "action": getattr(s, "action", None)}
    if isinstance(v, Allow):
        sql, n = redact(v.sql)
        return {"verdict": "forwarded unchanged", "sql": sql, "redacted_literals": n}
    if isinstance(v, DPRequest):
        p = v.plan
        sql, n = redact(pretty(p.exact_sql))
        measures = [{"kind": m.kind, "column": m.column, "sensitivity": m.sensitivity, "epsilon": round(m.epsilon, 6),
                     "fixed_point": m.fixed_point} for m in p.measures]
        groups = ("public keys" if p.public_groups is not None else
                  f"shown when the noisy count reaches {p.threshold}" if p.threshold is not None else None)
        return {"verdict": "differentially private answer", "sql": sql, "redacted_literals": n,
                "policies": [p.policy], "epsilon": p.settings.epsilon, "measures": measures, "groups": groups}
    assert isinstance(v, Rewritten)
    sql, n = redact(pretty(v.sql))
    return {"verdict": "rewritten", "sql": sql, "redacted_literals": n,
            "through_policy_views": list(v.plan.tables), "policies": list(v.plan.policies)}


def explain(config: Config, catalog: Catalog, user: str, sql: str, *, purpose: str | None = None,
            project: str | None = None) -> dict[str, Any]:
    """What the proxy would do with ``sql`` from ``user``; raises ExplainError for a request it would not run."""
    if user not in config.users:
        raise ExplainError(f'unknown user "{user}" (not in the users: section)')
    state = PolicyState(config, PolicySet.from_config(config), {}, None, catalog)  # type: ignore[arg-type]
    gov = Governor(PolicyHolder(state), user)
    try:
        if purpose:
            gov.choose("pgveil.purpose", purpose)
        if project:
            gov.choose("pgveil.project", project)
    except ContextError as exc:
        raise ExplainError(f"{exc} ({exc.sqlstate})") from None
    subject = gov.subject(state)
    ctx = gov.context(state)  # the very context the proxy's sessions judge with
    try:
        stmts = parse_statements(sql)
    except ParseFailure as exc:
        raise ExplainError(f"syntax error: {exc}") from None
    if not stmts:
        raise ExplainError("no statement to explain")
    verdicts = rewrite_statements(sql, ctx, use_cache=False)
    statements = []
    for i, (raw, text) in enumerate(stmts):
        tables, seen = [], set()
        for ref in analyze(raw, catalog, SEARCH_PATH).refs:
            rel = ref.relation
            if rel is None or rel.key in seen:
                continue
            seen.add(rel.key)
            if rel.is_system:
                tables.append({"table": f"{rel.schema}.{rel.name}", "kind": rel.kind, "system": True})
                continue
            tables.append(decision_dict(rel, decide(ctx.policies, subject, ctx.table_info(rel), now=ctx.now), subject))
        verdict = verdicts[i] if i < len(verdicts) else verdicts[-1]
        statements.append({"statement": text, "tables": tables, **_verdict_dict(verdict)})
    # What the proxy does with the whole text (a simple Query): one refused statement refuses all of it.
    whole = gov.judge(sql, transaction_status="I")
    outcome = {"action": "refuse", "sqlstate": whole.sqlstate, "message": whole.message} \
        if isinstance(whole, Refuse) else {"action": "forward"}
    return {
        "subject": {"user": subject.user, "groups": sorted(subject.groups),
                    "attributes": {k: sorted(v) for k, v in sorted(subject.attributes.items())},
                    "purposes": sorted(subject.purposes), "purpose_closure": sorted(subject.purpose_closure),
                    "project": project, "unrestricted": subject.unrestricted},
        "catalog_version": catalog.version,
        "policy_version": state.policies.version,
        "statements": statements,
        "refused": outcome["action"] == "refuse",
        "whole_text": outcome,
    }


# -- rendering (pure) --------------------------------------------------------------------


def format_json(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2, sort_keys=False, default=str)


def _value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def _kv(params: dict[str, Any], skip: tuple[str, ...] = ()) -> str:
    return ", ".join(f"{k}={_value(v)}" for k, v in params.items() if k not in skip)


def _indent(text: str, pad: str) -> str:
    return "\n".join(pad + line if line else line for line in text.splitlines())


def format_subject(s: dict[str, Any]) -> list[str]:
    out = [f"subject: {s['user']}" + ("  (unrestricted: no gates, no data policies)" if s["unrestricted"] else "")]
    out.append(f"  groups:     {', '.join(s['groups']) or '(none)'}")
    attrs = "; ".join(f"{k}={', '.join(v)}" for k, v in s["attributes"].items())
    out.append(f"  attributes: {attrs or '(none)'}")
    purposes = ", ".join(s["purposes"]) or "(none)"
    if s.get("project"):
        purposes += f"  (from project {s['project']})"
    out.append(f"  purposes:   {purposes}")
    return out


def format_table(t: dict[str, Any]) -> list[str]:
    """One table's decision as indented lines."""
    name = t["table"] + ("" if t["kind"] == "table" else f" ({t['kind']})")
    if t.get("system"):
        return [f"{name}: system catalog (judged by the statement gates, not by data policies)"]
    if t["unrestricted"]:
        return [f"{name}: allowed, unrestricted user"]
    if not t["allowed"]:
        out = [f"{name}: DENIED ({t['reason']})"]
    elif t["plain"]:
        out = [f"{name}: allowed as it is ({t['reason']}; no mask, filter or limit applies)"]
    else:
        out = [f"{name}: allowed ({t['reason']})"]
    for p in t["purposes"]:
        state = "satisfied" if p["satisfied"] else "NOT satisfied"
        out.append(f"  purpose:  requires {' or '.join(p['purposes'])} (policy {p['policy']}): {state}")
    if not t["allowed"]:
        return out
    for c in t["denied_columns"]:
        why = f"policy {c['policy']}" if c["policy"] else "no policy grants it"
        out.append(f"  column {c['column']}: denied ({why}); reads as NULL")
    if t["masks"]:
        out.append("  masks:")
        width = max(len(m["column"]) for m in t["masks"])
        for m in t["masks"]:
            kind = m["type"] + (f" ({m['label']})" if m.get("label") else "")
            params = _kv(m["params"])
            line = f"    {m['column']:<{width}}  {kind}" + (f" {params}" if params else "")
            if m.get("where"):
                line += f" where {m['where']}"
            out.append(line + f"  [policy {m['policy']}]" + ("  (left as it is)" if m["type"] == "none" else ""))
    if t["row_filters"]:
        out.append("  row filters (all must hold):")
        for f in t["row_filters"]:
            out.append(f"    {f['kind']} [policy {f['policy']}]: {f['sql']}")
    if t["minimization"]:
        m = t["minimization"]
        out.append(f"  minimization: a stable {m['percent']:g}% sample chosen by a keyed hash of {m['key_column']} "
                   f"[policy {m['policy']}]")
    for g in t["k_anonymity"]:
        out.append(f"  k-anonymity: k={g['k']} over ({', '.join(g['columns'])}); rarer combinations read as NULL "
                   f"[policy {g['policy']}]")
    if t["dp"]:
        p = t["dp"]
        text = f"epsilon {p['epsilon']:g} per answer, answers reused for {p['latency_tolerance']:g}s"
        if p["budget_epsilon"] is not None:
            text += f", budget epsilon {p['budget_epsilon']:g} per {p['budget_period']:g}s"
        bounds = ", ".join(f"{c} [{lo:g}, {hi:g}]" for c, (lo, hi) in p["bounds"].items())
        out.append(f"  differential privacy: {text}" + (f"; bounds {bounds}" if bounds else "") + f" [policy {p['policy']}]")
    return out


def format_verdict(s: dict[str, Any]) -> list[str]:
    v = s["verdict"]
    if v == "refused":
        return [f"verdict: REFUSED {s['sqlstate']}: {s['message']}"]
    if v == "answered by pgveil":
        return [f"verdict: answered by pgveil itself ({s['action']} {s['setting']})"]
    out = [f"verdict: {v}" + (f" (policies: {', '.join(s['policies'])})" if s.get("policies") else "")]
    if v == "rewritten":
        out.append(_indent(s["sql"], "    "))
    if v == "differentially private answer":
        out.append(f"  epsilon {s['epsilon']:g} per answer, split over:")
        for m in s["measures"]:
            unit = f" (units of 1/{m['fixed_point']})" if m["fixed_point"] > 1 else ""
            out.append(f"    {m['kind']}({m['column'] or '*'}): epsilon {m['epsilon']:g}, sensitivity {m['sensitivity']}{unit}")
        if s["groups"]:
            out.append(f"  groups: {s['groups']}")
        out.append("  exact aggregate run by pgveil (never returned; noised with OpenDP's discrete Laplace):")
        out.append(_indent(s["sql"], "    "))
    if s["redacted_literals"]:
        out.append(f"  ({s['redacted_literals']} hex/bytea literal(s) longer than 16 digits redacted; "
                   "keys live in pg_temp.pgveil_keys, never in SQL text)")
    return out


def format_text(result: dict[str, Any]) -> str:
    """The explanation as stable, readable plain text."""
    lines = format_subject(result["subject"])
    many = len(result["statements"]) > 1
    for i, s in enumerate(result["statements"], 1):
        lines.append("")
        lines.append(f"statement {i}: {s['statement']}" if many else f"statement: {s['statement']}")
        for t in s["tables"]:
            lines.extend("  " + line for line in format_table(t))
        if not s["tables"]:
            lines.append("  (no table of the database referenced)")
        lines.extend(format_verdict(s))
    whole = result.get("whole_text")
    differs = whole and whole["action"] == "refuse" and all(s["verdict"] != "refused" for s in result["statements"])
    if whole and (many or differs):
        lines.append("")
        lines.append("whole text: " + ("forwarded" if whole["action"] == "forward" else
                                       f"REFUSED {whole['sqlstate']}: {whole['message']} (one refusal refuses the whole query)"))
    return "\n".join(lines) + "\n"


# -- the command -------------------------------------------------------------------------


def run_explain(config_path: str, user: str, sql: str, *, purpose: str | None = None, project: str | None = None,
                as_json: bool = False) -> int:
    """``pgveil explain``: 0 explained (allowed or refused), 2 bad config or request, 3 backend unreadable."""
    import sys

    import asyncpg

    from rewrite.policy import ConfigError

    from .config import load_config

    if sql == "-":
        sql = sys.stdin.read()
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"pgveil: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    if user not in config.users:  # before connecting: a typo should not wait for the backend
        print(f'pgveil: unknown user "{user}" (not in the users: section of {config_path})', file=sys.stderr)
        return 2
    try:
        catalog = fetch_catalog(config)
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError, ConfigError) as exc:
        print(f"pgveil: cannot read the backend catalog (explain needs it): {exc}", file=sys.stderr)
        return 3
    try:
        result = explain(config, catalog, user, sql, purpose=purpose, project=project)
    except ExplainError as exc:
        print(f"pgveil: {exc}", file=sys.stderr)
        return 2
    print(format_json(result) if as_json else format_text(result), end="" if not as_json else "\n")
    return 0
