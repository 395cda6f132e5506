"""The rewrite passes, run in a fixed order on one parsed statement.

1. govern: a decision (or a refusal) for every relation reference;
   refuse writes to and odd positions of governed tables, and unknown node
   types in a statement that reads one; then (columns.py) rewrite
   ``schema.table.column`` names of replaced tables to ``table.column`` and
   refuse reads of denied columns;
2. fence: decide, on the untouched tree, whether the fence can be lifted;
3. qualify: schema-qualify every resolved reference (a temp object or a
   search_path change can then never capture it);
4. substitute: replace each governed read by its policy view, aliased with the
   reference's alias (and its column list) so whole-row references see it;
   COPY t TO becomes COPY (SELECT ... FROM view) TO; a view lists only the
   columns the statement can read by name where that is certain (pruning.py);
5. seal: add OFFSET 0 to row-dependent views unless the fence was lifted.
"""
from __future__ import annotations

from dataclasses import dataclass

from pglast import ast

from rewrite.analysis import Analysis, RelationRef
from rewrite.catalog import Catalog
from rewrite.decide import Subject, TableDecision

from . import build as b
from .columns import check_columns
from .fence import fence_can_lift
from .governed import Governance, Refusal, dp_refusal, is_plain
from .pruning import referenced_names
from .viewcache import ViewText, view_text


@dataclass
class RewritePlan:
    """What was done to a statement: for audit records and tests."""

    tables: tuple[str, ...] = ()  # governed tables read through policy views
    policies: tuple[str, ...] = ()  # policies whose masks / filters were applied
    fenced: bool = False  # some view kept its OFFSET 0 fence
    fence_lifted: bool = False  # some view needed a fence and the proof lifted it


@dataclass
class _Work:
    ref: RelationRef
    decision: TableDecision
    view: ViewText | None = None


def _alias_for(rv: ast.RangeVar) -> ast.Alias:
    if rv.alias is not None:
        return ast.Alias(aliasname=rv.alias.aliasname, colnames=rv.alias.colnames)
    return ast.Alias(aliasname=rv.relname)


def govern(analysis: Analysis, gov: Governance) -> tuple[list[_Work], Refusal | None]:
    work: list[_Work] = []
    for ref in analysis.refs:
        rel = ref.relation
        d, refusal = gov.check(rel, ref.rangevar.inh)
        if refusal is not None:
            return [], refusal
        if d is None or is_plain(d):
            continue
        if d.dp is not None:  # rewrite.dp plans these; anywhere else they are refused
            return [], dp_refusal(rel, d)
        name = f"{rel.schema}.{rel.name}"
        if ref.role == "target":
            return [], Refusal("42501", f"writes to governed table {name} are not allowed", d.policy)
        if ref.role == "copy" and getattr(ref.parent, "is_from", False):
            return [], Refusal("42501", f"COPY into governed table {name} is not allowed", d.policy)
        if ref.role == "other":
            return [], Refusal("0A000", f"governed table {name} appears where pgveil cannot apply its policies", d.policy)
        work.append(_Work(ref, d))
    if work and analysis.unknown_nodes:
        kinds = ", ".join(sorted(analysis.unknown_nodes))
        return [], Refusal("0A000", f"statement reads a governed table and uses SQL pgveil cannot check yet ({kinds})")
    return work, None


Splices = dict[int, tuple[ast.Node, str]]


def _listed(w: _Work, names: frozenset[str] | None) -> frozenset[str] | None:
    """The columns ``w``'s view lists: those ``names`` can read, or None (all) where order or rows matter."""
    rv = w.ref.rangevar
    if (names is None or w.ref.role != "read" or w.ref.sample is not None or w.decision.k_anonymity
            or (rv.alias is not None and rv.alias.colnames)):
        return None
    columns = w.ref.relation.columns
    listed = frozenset(c.name for c in columns if c.name in names)
    return listed or frozenset({columns[0].name})  # a view needs a column; the statement reads none


def rewrite(stmt: ast.RawStmt, analysis: Analysis, catalog: Catalog, gov: Governance,
            subject: Subject) -> tuple[RewritePlan | None, Refusal | None, Splices]:
    """Rewrite ``stmt`` in place: (plan, None, splices), or (None, refusal, {}).

    A plan of None with no refusal: nothing to do. Each governed FROM item
    becomes a RangeSubselect whose subquery is a placeholder node; ``splices``
    maps id(placeholder) to (placeholder, the policy view's printed text) for
    ``analysis.print_spliced``.
    """
    work, refusal = govern(analysis, gov)
    if refusal is not None:
        return None, refusal, {}
    if work:  # three-part column names, denied columns
        refusal = check_columns(stmt, catalog, analysis.refs, {id(w.ref.rangevar): w.decision for w in work})
        if refusal is not None:
            return None, refusal, {}
    names = referenced_names(stmt, analysis.refs) if work else None
    for w in work:
        w.view = view_text(catalog, w.ref.relation, w.decision, subject, w.ref.rangevar.inh, w.ref.sample,
                           _listed(w, names))

    # fence: proved on the untouched tree; every reference must be known to the proof
    known: dict[int, tuple] = {}
    for ref in analysis.refs:
        masked = next((w.view.masked for w in work if w.ref is ref), frozenset())
        known[id(ref.rangevar)] = (ref.relation, masked)
    needs = [w for w in work if w.view.row_dependent]
    lift = bool(needs) and not any(w.view.windowed for w in needs) and not any(r.sample for r in analysis.refs) \
        and fence_can_lift(stmt, catalog, known, analysis.has_sublinks or analysis.has_ctes)

    for ref in analysis.refs:  # qualify
        ref.rangevar.schemaname = ref.relation.schema
        ref.rangevar.catalogname = None

    tables, policies, splices = [], set(), {}
    for w in work:  # substitute, sealed (OFFSET 0) unless the fence was lifted
        ref, view = w.ref, w.view
        placeholder = ast.SelectStmt()
        ref.substitute = view.text(fenced=view.row_dependent and not lift)
        splices[id(placeholder)] = (placeholder, ref.substitute)
        sub = ast.RangeSubselect(lateral=False, subquery=placeholder, alias=_alias_for(ref.rangevar))
        if ref.role == "copy":
            copy = ref.parent
            cols = [b.target(b.col(n.sval)) for n in copy.attlist] if copy.attlist else [b.target(ast.ColumnRef(fields=(ast.A_Star(),)))]
            copy.query, copy.relation, copy.attlist = b.select(cols, [sub]), None, None
        else:
            b.replace_child(ref.parent, ref.attr, ref.index, sub)
        tables.append(f"{ref.relation.schema}.{ref.relation.name}")
        policies.update(view.policies)
    if not analysis.refs:
        return None, None, {}
    plan = RewritePlan(tuple(dict.fromkeys(tables)), tuple(sorted(policies)),
                       fenced=bool(needs) and not lift, fence_lifted=lift)
    return plan, None, splices
