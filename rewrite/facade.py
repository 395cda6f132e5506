"""The rewrite façade: SQL text + context in, one verdict per statement out.

``rewrite_statements(sql, ctx) -> list[Verdict]`` and ``rewrite_sql(sql, ctx)
-> Verdict`` (one verdict for the whole text: the first denial, or all
statements joined). Order per statement: parse (pglast) -> gates
(rewrite.gates.check_statement, if that package exists) -> analysis ->
built-in calls qualified with pg_catalog (engine/functions.py; such a
statement is Rewritten even without governed tables) -> passes -> output:
the analyst's text with the engine's edits, verified by parsing it against
the rewritten tree (analysis/splice.py), else the tree printed by pglast
(policy views spliced in as cached text either way) -> re-parse check. Any internal error denies (fail closed).
Verdicts are cached by (exact text, subject, policy version and validity
epoch, catalog version, search_path, tags).
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Union

from rewrite.analysis import ParseFailure, analyze, parse_statements, print_spliced, reparse_check
from rewrite.analysis import splice as source_splice
from rewrite.catalog import Catalog, Relation
from rewrite.decide import PolicySet, Subject, TableInfo, decide
from rewrite.engine import viewcache
from rewrite.engine.functions import builtin_names, qualify_builtins
from rewrite.engine.governed import Governance
from rewrite.engine.keys import KeyProvider
from rewrite.engine.listings import SERVED, clear as clear_listings, hide_listings
from rewrite.engine.masks import Unsupported
from rewrite.engine.passes import RewritePlan, rewrite
from rewrite.engine.templates import TemplateError
from rewrite import shapes
from rewrite.dp import DPRefused, plan_query
from rewrite.dp.position import check_dp_position, dp_reference
from rewrite.dp.query import read_query
from pglast import ast


@dataclass(frozen=True)
class Allow:
    sql: str


@dataclass(frozen=True)
class Deny:
    sqlstate: str
    message: str
    policy: str | None = None


@dataclass(frozen=True)
class Rewritten:
    sql: str
    plan: RewritePlan


@dataclass(frozen=True)
class ProxyHandled:
    """A statement the proxy answers itself (SET/SHOW pgveil.purpose...); ``setting`` is the gates' ProxySetting."""

    setting: Any


@dataclass(frozen=True)
class DPRequest:
    """A query on a differentially private table: the proxy runs ``plan.exact_sql``, noises and renders it."""

    plan: Any  # a rewrite.dp.DPPlan


Verdict = Union[Allow, Deny, Rewritten, ProxyHandled, DPRequest]
Gate = Callable[[Any, "RewriteContext"], Any]


@dataclass(frozen=True, eq=False)
class RewriteContext:
    """Everything a rewrite depends on. Build one per session (or per policy/catalog change) and reuse it.

    ``search_path``: the pinned path, ``$user`` already expanded. ``tags``: the
    config's ``tags:`` section. ``keys``: table keys (the proxy must have loaded
    them into pg_temp.pgveil_keys, see rewrite.engine.keys). ``gate``: overrides
    the gates hook (tests); None looks for ``rewrite.gates.check_statement``.
    """

    subject: Subject
    policies: PolicySet
    catalog: Catalog
    keys: KeyProvider | None = None
    search_path: tuple[str, ...] = ("public",)
    tags: Mapping[str, Any] = field(default_factory=dict)
    gate: Gate | None = None
    now: float | None = None
    gate_context: Any = None  # a rewrite.gates.GateContext; None builds one from search_path

    def __post_init__(self) -> None:
        tags = repr(sorted((k, tuple(v)) for k, v in dict(self.tags).items()))
        object.__setattr__(self, "_tags_fp", hashlib.sha256(tags.encode()).hexdigest()[:16])
        object.__setattr__(self, "_table_infos", {})  # id(relation) -> (relation, TableInfo): tags and columns only

    def cache_key(self, sql: str) -> tuple:
        now = time.time() if self.now is None else self.now
        return (sql, self.subject.fingerprint, self.policies.version, self.policies.epoch(now), self.catalog.version,
                self.search_path, self._tags_fp)  # type: ignore[attr-defined]

    def table_info(self, rel: Relation) -> TableInfo:
        hit = self._table_infos.get(id(rel))  # type: ignore[attr-defined]
        if hit is not None and hit[0] is rel:
            return hit[1]
        holder = type("T", (), {"tags": dict(self.tags)})
        info = TableInfo.from_config(holder, rel.schema, rel.name, [(c.name, c.type) for c in rel.columns])
        if len(self._table_infos) < 4096:  # type: ignore[attr-defined]
            self._table_infos[id(rel)] = (rel, info)  # type: ignore[attr-defined]
        return info


_MAX_CACHE = 50_000
_cache: dict[tuple, list[Verdict]] = {}
_GATES_MISSING = object()
_gates: Any = None


def _default_gate() -> Any:
    """rewrite.gates.check_statement; None when there is no gates package; raises when it is broken."""
    global _gates
    if _gates is None:
        if importlib.util.find_spec("rewrite.gates") is None:
            _gates = _GATES_MISSING
        else:
            gates = importlib.import_module("rewrite.gates")  # errors propagate: fail closed

            def run_gates(raw: Any, ctx: "RewriteContext") -> Any:
                gctx = ctx.gate_context or gates.GateContext(search_path=ctx.search_path)
                if gctx.served != SERVED:  # catalogs hide_listings substitutes (empty, filtered, NULL estimates)
                    gctx = dataclasses.replace(gctx, served=SERVED)
                return gates.check_statement(raw, gctx)

            _gates = run_gates
    return None if _gates is _GATES_MISSING else _gates


_builtin_names: frozenset[str] | None = None


def _builtins() -> frozenset[str]:
    global _builtin_names
    if _builtin_names is None:
        _builtin_names = builtin_names()
    return _builtin_names


def _extra_function_names(ctx: "RewriteContext") -> frozenset[str]:
    """Unqualified names the admin allowed as user functions along the path: left for the path to resolve."""
    extra = getattr(ctx.gate_context, "extra_functions", None) or ()
    return frozenset(name for schema, name in extra if schema in ctx.search_path)


def _refusal_to_deny(r: Any) -> Deny:
    return Deny(getattr(r, "sqlstate", "42501") or "42501", getattr(r, "message", None) or "statement refused",
                getattr(r, "policy", None))


def _spliced(sql: str, raw: Any, analysis: Any, splices: dict) -> str | None:
    """The rewritten statement as the analyst's text with the engine's edits, verified (analysis/splice.py), or None."""
    edits, substituted = [], 0
    for ref in analysis.refs:
        if ref.substitute is not None:
            if ref.role == "copy" or ref.sample is not None:
                return None
            substituted += 1
        edit = source_splice.relation_edit(sql, ref.rangevar, ref.substitute)
        if edit is None:
            return None
        edits.append(edit)
    if substituted != len(splices):
        return None
    for call in analysis.unqualified_calls:
        if len(call.funcname) == 2:  # qualified by qualify_builtins
            edit = source_splice.call_edit(sql, call)
            if edit is None:
                return None
            edits.append(edit)
    texts = source_splice.splice(sql, raw, edits)
    if texts is None or not source_splice.verified(texts[0], raw.stmt):
        return None
    return texts[1]


def _one(raw: Any, text: str, ctx: RewriteContext, gate: Gate | None, sql_text: str | None = None) -> Verdict:
    if gate is not None:
        refusal = gate(raw, ctx)
        if refusal is not None and hasattr(refusal, "action") and not hasattr(refusal, "sqlstate"):
            return ProxyHandled(refusal)
        if refusal is not None:
            return _refusal_to_deny(refusal)
    analysis = analyze(raw, ctx.catalog, ctx.search_path)
    if analysis.errors:
        state, message = analysis.errors[0]
        return Deny(state, message)
    gov = Governance(ctx.catalog, lambda rel: decide(ctx.policies, ctx.subject, ctx.table_info(rel), now=ctx.now))
    qualified = qualify_builtins(analysis.unqualified_calls, _builtins(), _extra_function_names(ctx))
    dp_ref = dp_reference(analysis, gov)
    if dp_ref is not None:  # the answer's own calls (round(avg(x))...) are qualified above too
        return _dp_verdict(raw, analysis, dp_ref, ctx, gov)
    plan, refusal, splices = rewrite(raw, analysis, ctx.catalog, gov, ctx.subject)
    if refusal is None:  # catalog listings without what this subject is refused (engine/listings.py)
        refusal = hide_listings(raw, analysis, ctx.catalog, gov, ctx.cache_key("")[1:], splices)
    if refusal is not None:
        return Deny(refusal.sqlstate, refusal.message, refusal.policy)
    if plan is None and not qualified:
        return Allow(text)
    sql = _spliced(sql_text, raw, analysis, splices) if sql_text is not None else None
    if sql is None:
        sql = print_spliced(raw.stmt, splices)
    reparse_check(sql)
    return Rewritten(sql, plan or RewritePlan())


def _dp_verdict(raw: Any, analysis: Any, ref: Any, ctx: RewriteContext, gov: Governance) -> Verdict:
    """Plan the DP answer; the exact query goes through the engine with the DP rule lifted (masks, filters stay)."""
    rel = ref.relation
    d = gov.decision(rel)
    try:
        check_dp_position(analysis, ref, raw)
        q = read_query(raw.stmt, rel, ctx.catalog)
        meta = ctx.policies.table_meta.get((rel.schema, rel.name))
        plan = plan_query(q, d.dp, ctx.subject.user, getattr(meta, "key", None))
    except DPRefused as exc:
        return Deny(exc.sqlstate, f"{exc} (policy {d.dp.policy})", d.dp.policy)
    inner = ast.RawStmt(stmt=plan.exact_tree)
    exact_analysis = analyze(inner, ctx.catalog, ctx.search_path)
    lifted = Governance(ctx.catalog, lambda r: dataclasses.replace(gov.decision(r), dp=None))
    _plan, refusal, splices = rewrite(inner, exact_analysis, ctx.catalog, lifted, ctx.subject)
    if refusal is not None:
        return Deny(refusal.sqlstate, refusal.message, refusal.policy)
    sql = print_spliced(inner.stmt, splices)
    reparse_check(sql)
    return DPRequest(plan.finish(sql))


def _uncached(sql: str, ctx: RewriteContext) -> list[Verdict]:
    try:
        stmts = parse_statements(sql)
    except ParseFailure as exc:
        return [Deny("42601", f"syntax error: {exc}")]
    except RecursionError:
        return [Deny("54001", "statement too complex: expressions are nested too deeply")]
    except Exception as exc:  # fail closed
        return [Deny("XX000", f"pgveil could not parse this statement ({type(exc).__name__}); refusing")]
    if ctx.subject.unrestricted:
        return [Allow(text) for _, text in stmts]  # no gates, no data policies; still audited by the proxy
    try:
        gate = ctx.gate if ctx.gate is not None else _default_gate()
    except Exception as exc:  # a broken gates package must not mean "no gates"
        return [Deny("XX000", f"pgveil statement gates failed to load ({type(exc).__name__}); refusing")]
    out: list[Verdict] = []
    for raw, text in stmts:
        try:
            out.append(_one(raw, text, ctx, gate, sql))
        except (Unsupported, TemplateError) as exc:
            out.append(Deny("0A000", str(exc)))
        except ParseFailure as exc:
            out.append(Deny("XX000", f"pgveil produced SQL it cannot verify; refusing ({exc})"))
        except RecursionError:
            out.append(Deny("54001", "statement too complex: expressions are nested too deeply"))
        except Exception as exc:  # fail closed: never pass a statement we failed to rewrite
            out.append(Deny("XX000", f"pgveil could not rewrite this statement ({type(exc).__name__}); refusing"))
    return out


def rewrite_statements(sql: str, ctx: RewriteContext, use_cache: bool = True) -> list[Verdict]:
    """One verdict per statement of ``sql`` (a parse error gives one Deny for the whole text)."""
    if not use_cache:
        return _uncached(sql, ctx)
    cid = shapes.context_id(ctx)
    key = ctx.cache_key(sql) if cid is None else (sql, shapes.epoch(ctx), cid)
    hit = _cache.get(key)
    if hit is None:
        hit = shapes.rewrite_statements(sql, ctx, _uncached)  # same text up to literals: a template (shapes.py)
        if type(hit) is shapes.Filled:
            return list(hit)  # a new literal in a known shape: filling it again costs less than keeping it
        if len(_cache) >= _MAX_CACHE:
            _cache.clear()
        _cache[key] = hit
    return list(hit)


def rewrite_sql(sql: str, ctx: RewriteContext, use_cache: bool = True) -> Verdict:
    """One verdict for the whole text: the first Deny, else Allow / Rewritten of all statements joined by ';'."""
    verdicts = rewrite_statements(sql, ctx, use_cache)
    for v in verdicts:
        if isinstance(v, Deny):
            return v
    if len(verdicts) > 1 and any(isinstance(v, DPRequest) for v in verdicts):
        return Deny("0A000", "send a query on a differentially private table as a statement of its own")
    if len(verdicts) == 1:
        return verdicts[0]
    if all(isinstance(v, Allow) for v in verdicts):
        return Allow(sql)
    parts = [v.sql for v in verdicts]  # type: ignore[union-attr]
    plans = [v.plan for v in verdicts if isinstance(v, Rewritten)]
    merged = RewritePlan(tuple(dict.fromkeys(t for p in plans for t in p.tables)),
                         tuple(sorted({x for p in plans for x in p.policies})),
                         any(p.fenced for p in plans), any(p.fence_lifted for p in plans))
    return Rewritten(";\n".join(parts), merged)


def clear_cache() -> None:
    """Forget cached verdicts and printed policy views."""
    _cache.clear()
    shapes.clear()
    viewcache.clear()
    clear_listings()
