"""Sensitive catalog columns: row estimates and definitions inside allowed catalog relations.

pg_class is needed by every BI tool, but its ``reltuples``/``relpages`` count
rows a row filter hides (threats.md, 7), and pg_proc/pg_views/
information_schema.views/routines hold definitions that may show pgveil's own
policy views and functions. A statement that reads such a relation may not:
name a sensitive column anywhere (``reltuples``, ``c.reltuples``,
``(c).reltuples``, ``JOIN ... USING (reltuples)``); use ``*`` or ``x.*``; use a
whole-row reference (``c``, ``to_jsonb(c)``, functional notation ``c.to_jsonb``);
rename columns with an alias list (``pg_class AS c(a, b, ...)``); or use a
NATURAL join. The check is statement-wide, which over-refuses a little and
never under-refuses.
"""
from __future__ import annotations

from pglast import ast

from .catalog_allowlist import SENSITIVE_COLUMNS, SERVABLE_NULLED
from .function_allowlist import PG_CATALOG_FUNCTIONS
from .relations import resolve
from .verdict import Refusal, privilege

#: Columns of the sensitive relations that share a name with an allowed function.
#: A real column wins over functional notation, so ``c.oid`` is the column.
_COLUMNS_NAMED_LIKE_FUNCTIONS = frozenset({"oid"})
_FUNCTIONAL_NOTATION = PG_CATALOG_FUNCTIONS - _COLUMNS_NAMED_LIKE_FUNCTIONS


class SensitiveColumns:
    """Collects, during one walk, what the verdict needs; ``verdict`` decides at the end."""

    def __init__(self, served: frozenset[tuple[str, str]] = frozenset()) -> None:
        #: relations whose sensitive columns the caller serves as NULL (GateContext.served)
        self.nulled = SERVABLE_NULLED & served
        self.columns: set[str] = set()  # union of sensitive columns of the relations read
        self.relations: list[str] = []  # their names, for the message
        self.aliases: set[str] = set()  # names by which their rows can be referenced
        self.renamed = False
        self.refs: list[tuple[str, ...]] = []  # every ColumnRef, as strings ("*" for A_Star)
        self.selected_names: set[str] = set()  # field names in indirections and USING lists
        self.join_aliases: set[str] = set()
        self.natural = False
        self.star = False  # a bare * (or COPY without a column list) over a sensitive relation

    def is_sensitive(self, rv: ast.RangeVar) -> bool:
        schema, name = resolve(rv)
        return (schema or "", name) in SENSITIVE_COLUMNS and (schema or "", name) not in self.nulled

    def select(self, stmt: ast.SelectStmt) -> None:
        """A bare ``*`` expands the columns of the relations directly in this SELECT's FROM."""
        stars = any(
            isinstance(t, ast.ResTarget) and isinstance(t.val, ast.ColumnRef)
            and any(isinstance(f, ast.A_Star) for f in t.val.fields) and len(t.val.fields) == 1
            for t in stmt.targetList or ()
        )
        if stars and any(self.is_sensitive(rv) for rv in _direct_relations(stmt.fromClause)):
            self.star = True

    def relation(self, rv: ast.RangeVar) -> None:
        schema, name = resolve(rv)
        cols = SENSITIVE_COLUMNS.get((schema or "", name))
        if not cols or (schema or "", name) in self.nulled:
            return
        self.columns |= cols
        self.relations.append(name)
        self.aliases.add(rv.alias.aliasname if rv.alias else name)
        self.aliases.add(name)
        if rv.alias is not None and rv.alias.colnames:
            self.renamed = True

    def column(self, ref: ast.ColumnRef) -> None:
        self.refs.append(tuple("*" if isinstance(f, ast.A_Star) else getattr(f, "sval", "?") for f in ref.fields))

    def indirection(self, node: ast.A_Indirection) -> None:
        for item in node.indirection or ():
            if isinstance(item, ast.String):
                self.selected_names.add(item.sval)
            elif isinstance(item, ast.A_Star):
                self.selected_names.add("*")

    def join(self, node: ast.JoinExpr) -> None:
        self.natural = self.natural or bool(node.isNatural)
        for item in node.usingClause or ():
            if isinstance(item, ast.String):
                self.selected_names.add(item.sval)
        if node.alias is not None:
            self.join_aliases.add(node.alias.aliasname)
            if node.alias.colnames:
                self.renamed = True
        if node.join_using_alias is not None:
            self.join_aliases.add(node.join_using_alias.aliasname)

    def verdict(self) -> Refusal | None:
        if not self.columns:
            return None
        what = ", ".join(sorted(set(self.relations)))
        if self.renamed or self.natural:
            return self._refuse(what, "column alias lists and NATURAL joins")
        if self.selected_names & (self.columns | {"*"}):
            return self._refuse(what, "row estimates and definitions")
        if self.star:
            return self._refuse(what, "SELECT * (list the columns you need)")
        rows = self.aliases | self.join_aliases
        for ref in self.refs:
            if len(ref) >= 2 and ref[-1] == "*" and ref[-2] in rows:
                return self._refuse(what, "SELECT * (list the columns you need)")
            if ref[-1] in self.columns:
                return self._refuse(what, "row estimates and definitions")
            if ref[-1] in rows:
                return self._refuse(what, "whole-row references")
            if len(ref) >= 2 and ref[-2] in rows and ref[-1] in _FUNCTIONAL_NOTATION:
                return self._refuse(what, "whole-row references")
        return None

    @staticmethod
    def _refuse(what: str, detail: str) -> Refusal:
        return privilege(
            "relations: catalog columns",
            f"reading {what} through pgveil does not allow {detail} (catalog: row estimates and "
            "definitions are hidden from governed users)",
        )


def _direct_relations(items):
    """RangeVars in a FROM list, through joins but not into sub-queries or functions."""
    for item in items or ():
        if isinstance(item, ast.RangeVar):
            yield item
        elif isinstance(item, ast.JoinExpr):
            yield from _direct_relations((item.larg, item.rarg))
        elif isinstance(item, ast.RangeTableSample):
            yield from _direct_relations((item.relation,))
