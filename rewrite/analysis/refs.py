"""Find every relation reference in a statement and resolve it.

The walk visits every attribute of every node (so no place a relation can sit
is skipped: FROM, JOINs, sub-selects, scalar subqueries, LATERAL, CTEs, set
operations, INSERT ... SELECT, DECLARE, EXPLAIN, COPY (query), TABLESAMPLE,
JSON_TABLE...). It carries the CTE names in scope, because an unqualified name
that matches a visible CTE is that CTE and not a table, and the reverse.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from pglast import ast

from rewrite.catalog import Catalog, Relation

from .nodes import KNOWN_NODES, child_slots

#: (parent node type, attribute) where a RangeVar is read and a subquery may stand instead.
READ_SLOTS = frozenset({
    ("SelectStmt", "fromClause"), ("JoinExpr", "larg"), ("JoinExpr", "rarg"), ("UpdateStmt", "fromClause"),
    ("DeleteStmt", "usingClause"), ("MergeStmt", "sourceRelation"), ("RangeTableSample", "relation"),
})
#: (parent node type, attribute) where a RangeVar is the target of a write or a definition.
TARGET_SLOTS = frozenset({
    ("InsertStmt", "relation"), ("UpdateStmt", "relation"), ("DeleteStmt", "relation"), ("MergeStmt", "relation"),
    ("IntoClause", "rel"), ("CreateStmt", "relation"), ("ViewStmt", "view"),
})
_WITH_OWNERS = (ast.SelectStmt, ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)
_RESERVED_NAMES = frozenset({"pgveil_keys"})


@dataclass
class RelationRef:
    """One reference to a catalog relation.

    ``role``: read (a subquery may replace it), copy (COPY t TO), target (write
    or definition target), other (anywhere else: fails closed if governed).
    ``parent``/``attr``/``index``: where the FROM item sits (for a TABLESAMPLE
    that is the RangeTableSample node, ``sample``).
    """

    rangevar: ast.RangeVar
    relation: Relation | None
    role: str
    parent: Any
    attr: str
    index: int | None
    sample: ast.RangeTableSample | None = None
    substitute: str | None = None  # the text spliced in where the engine replaced this FROM item (engine/passes.py)


@dataclass
class Analysis:
    refs: list[RelationRef] = field(default_factory=list)
    unknown_nodes: set[str] = field(default_factory=set)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (sqlstate, message)
    has_sublinks: bool = False
    has_ctes: bool = False
    unqualified_calls: list[ast.FuncCall] = field(default_factory=list)  # f(...) without a schema


class _Walker:
    def __init__(self, catalog: Catalog, search_path: tuple[str, ...]) -> None:
        self.catalog = catalog
        self.search_path = search_path
        self.out = Analysis()

    def visit(self, node: Any, scope: frozenset[str], parent: Any, attr: str, index: int | None) -> None:
        if isinstance(node, tuple):
            for i, x in enumerate(node):
                self.visit(x, scope, parent, attr, i)
            return
        if not isinstance(node, ast.Node):
            return
        kind = type(node).__name__
        if kind not in KNOWN_NODES:
            self.out.unknown_nodes.add(kind)
        if isinstance(node, ast.RangeVar):
            self._rangevar(node, scope, parent, attr, index)
            return
        if isinstance(node, ast.LockingClause):
            return  # names aliases, not relations; LockingClause is unknown, so governed reads fail closed
        if isinstance(node, ast.SubLink):
            self.out.has_sublinks = True
        elif isinstance(node, ast.FuncCall) and len(node.funcname) == 1:
            self.out.unqualified_calls.append(node)
        if isinstance(node, _WITH_OWNERS) and node.withClause is not None:
            scope = self._with(node.withClause, scope)
        for name in child_slots(type(node)):
            if name == "withClause" and isinstance(node, _WITH_OWNERS):
                continue
            self.visit(getattr(node, name), scope, node, name, None)

    def _with(self, w: ast.WithClause, scope: frozenset[str]) -> frozenset[str]:
        self.out.has_ctes = True
        names = [c.ctename for c in w.ctes or ()]
        for i, cte in enumerate(w.ctes or ()):
            # WITH RECURSIVE: every CTE of the list is visible in each; otherwise only the earlier ones.
            visible = scope | frozenset(names if w.recursive else names[:i])
            for name in child_slots(type(cte)):
                self.visit(getattr(cte, name), visible, cte, name, None)
        return scope | frozenset(names)

    def _rangevar(self, rv: ast.RangeVar, scope: frozenset[str], parent: Any, attr: str, index: int | None) -> None:
        slot = (type(parent).__name__, attr)
        if slot in TARGET_SLOTS:
            role = "target"
        elif slot == ("CopyStmt", "relation"):
            role = "copy"
        elif slot in READ_SLOTS:
            role = "read"
        else:
            role = "other"
        if role != "target" and rv.schemaname is None and rv.catalogname is None and rv.relname in scope:
            return  # a CTE reference: the CTE's own query was walked where it is defined
        rel = self._resolve(rv, required=role != "target")
        if rel is None and role == "target":
            return
        if rel is None:
            return
        sample = None
        if isinstance(parent, ast.RangeTableSample):
            sample, parent, attr, index = parent, *self._sample_slot  # type: ignore[misc]
        self.out.refs.append(RelationRef(rv, rel, role, parent, attr, index, sample))

    def _resolve(self, rv: ast.RangeVar, required: bool) -> Relation | None:
        name = rv.relname
        schema = rv.schemaname
        if rv.catalogname is not None and rv.catalogname != self.catalog.database:
            self.out.errors.append(("0A000", f"cross-database references are not implemented: {rv.catalogname}.{schema}.{name}"))
            return None
        if name in _RESERVED_NAMES or (schema or "").startswith(("pg_temp", "pg_toast_temp")) or schema == "pgveil":
            self.out.errors.append(("42501", f"relation {name} is reserved by pgveil"))
            return None
        rel = self.catalog.get(schema, name) if schema is not None else self.catalog.resolve(name, self.search_path)
        if rel is None and required:
            shown = f"{schema}.{name}" if schema else name
            self.out.errors.append(("42P01", f'relation "{shown}" does not exist (or is not known to pgveil)'))
        return rel


class _SampleAwareWalker(_Walker):
    """Remembers where a RangeTableSample sits so its RangeVar's ref points at the sample's slot."""

    def visit(self, node: Any, scope: frozenset[str], parent: Any, attr: str, index: int | None) -> None:
        if isinstance(node, ast.RangeTableSample):
            self._sample_slot = (parent, attr, index)
        super().visit(node, scope, parent, attr, index)


def analyze(stmt: ast.Node, catalog: Catalog, search_path: Iterable[str]) -> Analysis:
    """Every relation reference in ``stmt`` (a RawStmt or statement), resolved against ``catalog``."""
    w = _SampleAwareWalker(catalog, tuple(search_path))
    w.visit(stmt, frozenset(), None, "", None)
    return w.out
