"""When may a policy view go without its OFFSET 0 fence?

Without a fence PostgreSQL flattens the view and may evaluate the analyst's
predicates on rows the row filters remove (threat 2: a predicate that raises
an error on a hidden row reveals it). PostgreSQL's own security-barrier rule
lets a predicate run early only if every function in it is leakproof. This
module proves a narrower rule on the parse tree, before substitution, and says
"no" whenever it cannot prove it:

- the statement is one plain SELECT (no set operations, CTEs, sub-selects,
  sub-queries in FROM, functions in FROM, TABLESAMPLE, locking);
- every predicate in WHERE, HAVING and JOIN ... ON / USING is an AND/OR/NOT
  of ``column <op> constant``, ``column <op> column``, ``column IN (consts)``,
  ``column BETWEEN consts`` or ``column IS [NOT] NULL``, where each column is
  unmasked (its raw value reaches the predicate either way) and the operator,
  for the resolved types, is implemented by a leakproof function per the
  catalog (int4eq, texteq, int8lt...);
- constants are plain literals, typed casts of literals, or $n parameters
  (which take the other side's type, as PostgreSQL infers them).

Target lists, GROUP BY and ORDER BY do not matter: they run on rows that
passed every qualifier of their scan.
"""
from __future__ import annotations

from typing import Any

from pglast import ast
from pglast.enums import A_Expr_Kind, JoinType

from rewrite.catalog import Catalog, Relation

_COMPARISONS = frozenset({"=", "<>", "<", "<=", ">", ">="})
#: binary-coercible types PostgreSQL compares with the operators of another type
_COERCE = {"varchar": "text"}
_CAST_TYPES = {"int2": "int2", "int4": "int4", "int8": "int8", "integer": "int4", "bigint": "int8", "smallint": "int2",
               "text": "text", "bool": "bool", "boolean": "bool", "date": "date", "timestamptz": "timestamptz",
               "timestamp": "timestamp", "uuid": "uuid", "float8": "float8", "numeric": "numeric"}


class _Scope:
    def __init__(self, catalog: Catalog, allow_like: bool = False) -> None:
        self.catalog = catalog
        self.rels: dict[str, tuple[Relation, frozenset[str]]] = {}  # alias -> (relation, masked columns)
        self.allow_like = allow_like  # see _like_proved

    def column_type(self, ref: ast.ColumnRef) -> str | None:
        names = [f.sval for f in ref.fields if isinstance(f, ast.String)]
        if len(names) != len(ref.fields) or not names:
            return None
        if len(names) == 2:
            entry = self.rels.get(names[0])
            cands = [entry] if entry else []
        elif len(names) == 1:
            cands = [e for e in self.rels.values() if e[0].column(names[0]) is not None]
        else:
            return None
        if len(cands) != 1:
            return None  # unknown or ambiguous: not proved
        rel, masked = cands[0]
        c = rel.column(names[-1])
        if c is None or c.name in masked:
            return None
        return _COERCE.get(c.base, c.base)


def _const_type(node: Any) -> str | None:
    if isinstance(node, ast.ParamRef):
        return "unknown"
    if isinstance(node, ast.A_Const):
        if node.isnull:
            return "unknown"
        v = node.val
        return {"Integer": "int4", "String": "unknown", "Float": "numeric", "Boolean": "bool"}.get(type(v).__name__)
    if isinstance(node, ast.TypeCast) and isinstance(node.arg, (ast.A_Const, ast.ParamRef)):
        tn = node.typeName
        if tn.arrayBounds or tn.typmods:
            return None
        if len(tn.names) > 1 and not (len(tn.names) == 2 and tn.names[0].sval == "pg_catalog"):
            return None  # public.int4 could be another type of that name
        return _CAST_TYPES.get(tn.names[-1].sval)
    return None


def _operand(node: Any, scope: _Scope) -> str | None:
    if isinstance(node, ast.ColumnRef):
        return scope.column_type(node)
    return _const_type(node)


def _compare(op: str, left: Any, right: Any, scope: _Scope) -> bool:
    lt, rt = _operand(left, scope), _operand(right, scope)
    if lt is None or rt is None or not (isinstance(left, ast.ColumnRef) or isinstance(right, ast.ColumnRef)):
        return False
    if lt == "unknown":
        lt = rt
    if rt == "unknown":
        rt = lt
    return lt != "unknown" and scope.catalog.operator_leakproof(op, lt, rt)


def _proved(e: Any, scope: _Scope) -> bool:
    if e is None:
        return True
    if isinstance(e, ast.BoolExpr):
        return all(_proved(a, scope) for a in e.args)
    if isinstance(e, ast.ColumnRef):  # a boolean column as the whole predicate
        return scope.column_type(e) == "bool"
    if isinstance(e, ast.NullTest):
        return isinstance(e.arg, ast.ColumnRef) and scope.column_type(e.arg) is not None
    if not isinstance(e, ast.A_Expr) or len(e.name) != 1:
        return False
    op = e.name[0].sval
    if e.kind == A_Expr_Kind.AEXPR_OP and op in _COMPARISONS:
        return _compare(op, e.lexpr, e.rexpr, scope)
    if e.kind == A_Expr_Kind.AEXPR_IN and op in ("=", "<>") and isinstance(e.rexpr, tuple):
        return all(_compare(op, e.lexpr, x, scope) for x in e.rexpr)
    if e.kind in (A_Expr_Kind.AEXPR_LIKE, A_Expr_Kind.AEXPR_ILIKE) and scope.allow_like:
        return _like_proved(e, scope)
    if e.kind == A_Expr_Kind.AEXPR_BETWEEN and isinstance(e.rexpr, tuple) and len(e.rexpr) == 2:
        return _compare(">=", e.lexpr, e.rexpr[0], scope) and _compare("<=", e.lexpr, e.rexpr[1], scope)
    return False


_LIKE_OPS = frozenset({"~~", "!~~", "~~*", "!~~*"})


def _like_proved(e: Any, scope: _Scope) -> bool:
    """``text_column [NOT] [I]LIKE 'constant'``: its only possible error depends on the pattern alone.

    textlike is not marked leakproof because a pattern ending in the escape
    character raises; with a literal pattern that does not, and no ESCAPE
    clause (which would make the pattern a function call), no row can make it fail.
    """
    if e.name[0].sval not in _LIKE_OPS or not isinstance(e.lexpr, ast.ColumnRef):
        return False
    if scope.column_type(e.lexpr) not in ("text", "bpchar", "name"):
        return False
    pattern = e.rexpr
    if not (isinstance(pattern, ast.A_Const) and isinstance(pattern.val, ast.String)):
        return False
    text = pattern.val.sval
    trailing = len(text) - len(text.rstrip("\\"))
    return trailing % 2 == 0


def predicate_proved(expr: Any, catalog: Catalog, rel: Relation, alias: str, allow_like: bool = False) -> bool:
    """True when ``expr`` over one relation (seen as ``alias``) is proved unable to raise on any row."""
    scope = _Scope(catalog, allow_like)
    scope.rels[alias] = (rel, frozenset())
    return _proved(expr, scope)


def _from_items(items: Any, scope: _Scope, views: dict[int, tuple[Relation, frozenset[str]]], quals: list) -> bool:
    for item in items or ():
        if isinstance(item, ast.RangeVar):
            entry = views.get(id(item))
            if entry is None or item.alias is not None and item.alias.colnames:
                return False
            scope.rels[item.alias.aliasname if item.alias else item.relname] = entry
        elif isinstance(item, ast.JoinExpr):
            if item.isNatural or item.jointype not in (JoinType.JOIN_INNER, JoinType.JOIN_LEFT, JoinType.JOIN_RIGHT):
                return False
            if item.alias is not None or not _from_items((item.larg, item.rarg), scope, views, quals):
                return False
            if item.usingClause:
                return False  # USING columns resolve to both sides at once: not proved here
            quals.append(item.quals)
        else:
            return False
    return True


def fence_can_lift(stmt: Any, catalog: Catalog, views: dict[int, tuple[Relation, frozenset[str]]], has_sublinks: bool) -> bool:
    """True when every predicate of ``stmt`` is proved leakproof on unmasked columns.

    ``views`` maps id(RangeVar) of every relation reference in the statement to
    (relation, masked columns); a reference missing from it fails the proof.
    """
    while isinstance(stmt, (ast.RawStmt, ast.ExplainStmt, ast.DeclareCursorStmt)):
        stmt = stmt.stmt if isinstance(stmt, ast.RawStmt) else stmt.query
    if not isinstance(stmt, ast.SelectStmt) or has_sublinks:
        return False
    if stmt.op != 0 or stmt.withClause or stmt.lockingClause or stmt.intoClause or stmt.valuesLists:
        return False
    scope, quals = _Scope(catalog), [stmt.whereClause, stmt.havingClause]
    if not _from_items(stmt.fromClause, scope, views, quals):
        return False
    return all(_proved(q, scope) for q in quals)
