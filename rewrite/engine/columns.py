"""Column references to governed tables: three-part names and denied columns.

Runs on the analyst's tree after the decisions and before substitution, with
the FROM items of every query level in scope (innermost last):

- ``schema.table.column`` (and ``db.schema.table.column``, ``schema.table.*``)
  resolves in PostgreSQL only to an *unaliased* relation entry. Once the table
  is replaced by its policy view (a sub-select aliased ``table``) such a name no
  longer resolves, so it is rewritten in the tree to ``table.column``. That is
  only the same reference when every FROM item named ``table`` in scope is an
  unaliased reference to that very relation; otherwise the statement is refused
  (``0A000``), never guessed.
- ``denied_columns`` (Ranger: the table is granted only through some of its
  columns) refuse a statement that reads such a column: by name (qualified or
  not, under an alias column list's new name too), through ``*`` or ``t.*``, a
  whole-row reference (``t``, ``to_jsonb(t)``, ``t.f`` meaning ``f(t)``), a
  NATURAL join or ``USING (column)``, or ``COPY t TO`` without a column list.
  The policy view still shows such a column as NULL (defence in depth).

Resolution is conservative. An unqualified name is looked up level by level,
innermost first, and the search stops only at a level where a FROM item is
*known* to have that column (a catalog relation); items whose columns are not
known (sub-selects, CTEs, functions) do not stop it. So a name can be refused
that PostgreSQL would bind to a sub-select's column, but never the reverse.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pglast import ast

from rewrite.analysis.nodes import child_slots

from rewrite.analysis import RelationRef
from rewrite.catalog import Catalog
from rewrite.decide import TableDecision

from .governed import Refusal


@dataclass
class _Item:
    """One FROM item as a column reference sees it."""

    refname: str | None
    ref: RelationRef | None = None  # a catalog relation
    aliased: bool = False
    columns: frozenset[str] | None = None  # visible names when known
    denied: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # visible name -> (column, policy)
    table: str = ""  # schema.table, for messages


def _visible_names(ref: RelationRef) -> list[str]:
    names = [c.name for c in ref.relation.columns]
    alias = ref.rangevar.alias
    for i, n in enumerate(alias.colnames or () if alias else ()):
        if i < len(names) and isinstance(n, ast.String):
            names[i] = n.sval
    return names


class _Checker:
    def __init__(self, catalog: Catalog, refs: dict[int, RelationRef], decisions: dict[int, TableDecision]) -> None:
        self.catalog = catalog
        self.refs = refs
        self.decisions = decisions
        self.levels: list[list[_Item]] = []

    # ---- FROM items -------------------------------------------------------------------------------
    def _relation_item(self, rv: ast.RangeVar) -> _Item:
        ref = self.refs.get(id(rv))
        refname = rv.alias.aliasname if rv.alias else rv.relname
        if ref is None or ref.relation is None:
            return _Item(refname)  # a CTE reference
        names = _visible_names(ref)
        item = _Item(refname, ref, rv.alias is not None, frozenset(names), table=f"{ref.relation.schema}.{ref.relation.name}")
        d = self.decisions.get(id(rv))
        if d is not None and d.denied_columns:
            by_column = dict(d.denied_columns)
            for col, visible in zip(ref.relation.columns, names):
                if col.name in by_column:
                    item.denied[visible] = (col.name, by_column[col.name])
        return item

    def _items(self, node: Any, out: list[_Item]) -> list[_Item]:
        """Items a FROM entry brings into scope; returns the denied-carrying items beneath it."""
        if isinstance(node, ast.RangeTableSample):
            node = node.relation
        if isinstance(node, ast.RangeVar):
            item = self._relation_item(node)
            out.append(item)
            return [item] if item.denied else []
        if isinstance(node, ast.JoinExpr):
            start = len(out)
            below = self._items(node.larg, out) + self._items(node.rarg, out)
            if below:
                self._join_reads(node, below)
            if node.alias is not None and node.alias.colnames and below:
                # the alias column list may rename a denied column; not worth proving which one
                self._refuse(below[0], next(iter(below[0].denied)), "a join alias column list")
            if node.alias is not None:
                inner = out[start:]
                columns = None
                if not node.alias.colnames and all(it.columns is not None for it in inner):
                    columns = frozenset(c for it in inner for c in it.columns)  # type: ignore[union-attr]
                denied = {k: v for it in below for k, v in it.denied.items()}
                out.append(_Item(node.alias.aliasname, aliased=True, columns=columns, denied=denied,
                                 table=below[0].table if below else ""))
            return below
        alias = getattr(node, "alias", None)
        name = alias.aliasname if alias is not None else None
        if name is None and isinstance(node, ast.RangeFunction) and node.functions:
            call = node.functions[0][0] if isinstance(node.functions[0], tuple) else None
            if isinstance(call, ast.FuncCall):
                name = call.funcname[-1].sval
        out.append(_Item(name))
        return []

    def _join_reads(self, j: ast.JoinExpr, below: list[_Item]) -> None:
        if j.isNatural:
            it = below[0]
            col = next(iter(it.denied))
            self._refuse(it, col, "a NATURAL join")
        for n in j.usingClause or ():
            for it in below:
                if isinstance(n, ast.String) and n.sval in it.denied:
                    self._refuse(it, n.sval, "USING")

    # ---- refusals ---------------------------------------------------------------------------------
    def _refuse(self, item: _Item, visible: str, how: str | None = None) -> None:
        column, policy = item.denied[visible]
        why = f"policy {policy}" if policy else "no policy grants it"
        via = f" (read through {how}; name the columns you may read)" if how else ""
        raise _Refused(Refusal("42501", f"permission denied for column {column} of table {item.table}: {why}{via}", policy))

    # ---- walking ----------------------------------------------------------------------------------
    def visit(self, node: Any) -> None:
        if isinstance(node, tuple):
            for x in node:
                self.visit(x)
            return
        if not isinstance(node, ast.Node):
            return
        if isinstance(node, ast.SelectStmt):
            self._select(node)
            return
        if isinstance(node, ast.ColumnRef):
            self._column_ref(node)
            return
        if isinstance(node, ast.A_Indirection) and isinstance(node.arg, ast.ColumnRef) and node.indirection:
            if self._indirection(node.arg, node.indirection[0]):
                for x in node.indirection:
                    self.visit(x)
                return
        for name in child_slots(type(node)):
            self.visit(getattr(node, name))

    def _select(self, s: ast.SelectStmt) -> None:
        items: list[_Item] = []
        for f in s.fromClause or ():
            self._items(f, items)
        self.levels.append(items)
        try:
            outputs = {t.name for t in s.targetList or () if isinstance(t, ast.ResTarget) and t.name}
            for name in s:
                value = getattr(s, name)
                if name == "sortClause" and value:
                    for sb in value:  # ORDER BY name prefers an output column of that name (PostgreSQL's rule)
                        n = sb.node
                        if isinstance(n, ast.ColumnRef) and len(n.fields) == 1 and isinstance(n.fields[0], ast.String) \
                                and n.fields[0].sval in outputs:
                            continue
                        self.visit(sb)
                    continue
                self.visit(value)
        finally:
            self.levels.pop()

    def _in_scope(self, refname: str) -> list[_Item]:
        return [it for level in self.levels for it in level if it.refname == refname]

    def _nearest(self, refname: str) -> list[_Item]:
        for level in reversed(self.levels):
            found = [it for it in level if it.refname == refname]
            if found:
                return found
        return []

    def _column_ref(self, ref: ast.ColumnRef) -> None:
        fields = ref.fields
        if len(fields) >= 3:
            fields = self._three_part(ref)
        star = isinstance(fields[-1], ast.A_Star)
        names = [f.sval for f in fields if isinstance(f, ast.String)]
        if len(fields) == 1 and star:
            for it in self.levels[-1] if self.levels else ():
                if it.denied:
                    self._refuse(it, next(iter(it.denied)), "*")
        elif len(fields) == 1 and names:
            self._unqualified(names[0], wholerow=True)
        elif len(fields) == 2 and names:
            self._qualified(names[0], None if star else fields[1].sval)

    def _unqualified(self, name: str, wholerow: bool) -> None:
        for level in reversed(self.levels):
            known = False
            for it in level:
                if name in it.denied:
                    self._refuse(it, name)
                if wholerow and it.refname == name and it.denied:
                    self._refuse(it, next(iter(it.denied)), "a whole-row reference")
                known = known or (it.columns is not None and name in it.columns)
            if known:
                return

    def _qualified(self, refname: str, column: str | None) -> None:
        for it in self._nearest(refname):
            if not it.denied:
                continue
            if column is None:
                self._refuse(it, next(iter(it.denied)), f"{refname}.*")
            if column in it.denied:
                self._refuse(it, column)
            if it.columns is None or column not in it.columns:
                self._refuse(it, next(iter(it.denied)), f"{refname}.{column} (a whole-row function call)")

    def _indirection(self, arg: ast.ColumnRef, first: Any) -> bool:
        """``(t).c`` / ``(t).*``: a field of a whole-row reference. True when handled here."""
        if len(arg.fields) != 1 or not isinstance(arg.fields[0], ast.String):
            return False
        name = arg.fields[0].sval
        self._unqualified(name, wholerow=False)
        if isinstance(first, ast.A_Star):
            self._qualified(name, None)
        elif isinstance(first, ast.String):
            self._qualified(name, first.sval)
        else:
            return False
        return True

    def _three_part(self, ref: ast.ColumnRef) -> tuple:
        """``[db.]schema.table.col``: rewritten to ``table.col`` when that is provably the same reference."""
        fields = ref.fields
        names = [f.sval if isinstance(f, ast.String) else None for f in fields[:-1]]
        if None in names or len(fields) > 4:
            return fields
        if len(fields) == 4:
            if names[0] != self.catalog.database:
                return fields  # PostgreSQL refuses cross-database references itself
            names = names[1:]
        schema, table = names
        items = self._in_scope(table)
        ours = [it for it in items if it.ref is not None and id(it.ref.rangevar) in self.decisions
                and not it.aliased and it.ref.relation.key == (schema, table)]
        if not ours:
            return fields  # not a replaced table: PostgreSQL resolves (or rejects) it as written
        if any(it.aliased or it.ref is None or it.ref.relation.key != (schema, table) for it in items):
            raise _Refused(Refusal("0A000", f"the reference {schema}.{table}.<column> cannot be rewritten safely: "
                                   f"another FROM item named {table} is in scope; use an alias"))
        ref.fields = tuple(fields[-2:])
        return ref.fields


class _Refused(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


def check_columns(stmt: ast.Node, catalog: Catalog, refs: list[RelationRef],
                  decisions: dict[int, TableDecision]) -> Refusal | None:
    """Rewrite three-part column names in place and refuse reads of denied columns.

    ``decisions``: id(RangeVar) -> decision of every reference that will be replaced.
    """
    checker = _Checker(catalog, {id(r.rangevar): r for r in refs}, decisions)
    try:
        for r in refs:
            d = decisions.get(id(r.rangevar))
            if r.role == "copy" and d is not None and d.denied_columns:
                item = checker._relation_item(r.rangevar)
                attl = [n.sval for n in r.parent.attlist or () if isinstance(n, ast.String)]
                for name in attl or [next(iter(item.denied))]:
                    if name in item.denied:
                        checker._refuse(item, name, None if attl else "COPY without a column list")
        checker.visit(stmt)
    except _Refused as exc:
        return exc.refusal
    return None
