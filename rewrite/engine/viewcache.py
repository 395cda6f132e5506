"""Policy views built and printed once, then reused as text by every statement that reads the table.

Why: building a view (masks, filters, admin templates) and printing it with
pglast cost several milliseconds per governed table, far more than parsing the
analyst's statement. A view depends only on the relation (catalog version),
its TableDecision, the subject (templates bind its user, groups, attributes and
purposes) and ONLY/inheritance, so its printed text is a pure function of
those and can be cached.

Correctness of reuse does not rest on the key alone: every hit is checked
against the relation and decision it was built from (equality), so a decision
that changed for any reason (policy edit, validity window, tags) rebuilds the
view. TABLESAMPLE views carry the analyst's arguments and are never cached.
Each text is printed by pglast from a tree and re-parsed once when it is made;
it reaches a statement only through ``analysis.print_spliced``, which writes
it where the printer meets the placeholder node (a tree position, never a
search-and-replace on statement text).
"""
from __future__ import annotations

from dataclasses import dataclass

from pglast import ast

from rewrite.analysis import print_node, reparse_check
from rewrite.catalog import Catalog, Relation
from rewrite.decide import Subject, TableDecision

from . import build as b
from .view import build_view

_MAX_ENTRIES = 4096


@dataclass
class ViewText:
    """A policy view as SQL text, open (no fence) and sealed (OFFSET 0), with what the passes need to know.

    The sealed text is printed on first use (from the view's own tree, kept
    until then), so a view that is never fenced is printed once.
    """

    open: str
    row_dependent: bool
    windowed: bool
    masked: frozenset[str]
    policies: tuple[str, ...]
    relation: Relation
    decision: TableDecision
    _query: ast.SelectStmt | None = None
    _sealed: str | None = None

    def text(self, fenced: bool) -> str:
        if not fenced or not self.row_dependent:
            return self.open
        if self._sealed is None:
            sealed = print_node(b.offset0(self._query))
            reparse_check(sealed)
            self._sealed, self._query = sealed, None
        return self._sealed


_cache: dict[tuple, ViewText] = {}


def _make(rel: Relation, d: TableDecision, subject: Subject, inh: bool, sample: ast.RangeTableSample | None,
          only: frozenset[str] | None = None) -> ViewText:
    view = build_view(rel, d, subject, inh, sample, only)
    open_text = print_node(view.query)
    reparse_check(open_text)
    return ViewText(open_text, view.row_dependent, view.windowed, view.masked, view.policies, rel, d,
                    view.query if view.row_dependent else None)


def view_text(catalog: Catalog, rel: Relation, d: TableDecision, subject: Subject, inh: bool,
              sample: ast.RangeTableSample | None = None, only: frozenset[str] | None = None) -> ViewText:
    """The printed policy view of ``rel`` for ``subject`` under decision ``d`` (cached unless sampled).

    ``only``: the columns to list (pruning.py), None for all.
    """
    if sample is not None:
        return _make(rel, d, subject, inh, sample)
    key = (catalog.version, rel.key, subject.fingerprint, inh, only)
    hit = _cache.get(key)
    if hit is not None and hit.relation == rel and hit.decision == d:
        return hit
    made = _make(rel, d, subject, inh, None, only)
    if len(_cache) >= _MAX_ENTRIES:
        _cache.clear()
    _cache[key] = made
    return made


def clear() -> None:
    _cache.clear()
