"""The function gate: a call is allowed only if the allowlist names it.

Name resolution follows PostgreSQL: pg_catalog is searched first, so an
unqualified name on the built-in allowlist is the pg_catalog function; an
unqualified name not on it could only be a user function (public, or whatever
the pinned search_path holds) and needs the admin's ``extra_functions``.
Qualified names outside pg_catalog need ``extra_functions`` too; internal
schemas (pg_temp...) never pass. Operators are checked here as well: only
pg_catalog's operator symbols, unqualified or qualified with pg_catalog.
"""
from __future__ import annotations

from pglast import ast

from .context import GateContext
from .function_allowlist import INFORMATION_SCHEMA_FUNCTIONS, PG_CATALOG_FUNCTIONS
from .function_denylist import denied_category
from .names import CATALOG, INFORMATION_SCHEMA, is_internal_schema, setting_key, shown, split_qualified, strings
from .settings import CHANGEABLE_SETTINGS, may_read_setting
from .verdict import Refusal, privilege, unsupported

#: Operator symbols defined in PostgreSQL 18's pg_catalog (tests check this against the server).
PG_CATALOG_OPERATORS = frozenset("""
    !! !~ !~* !~~ !~~* # ## #- #> #>> % & && &< &<| &> * *< *<= *<> *= *> *>= + - -> ->> -|- / <
    <-> << <<= <<| <= <> <@ <^ = > >= >> >>= >^ ? ?# ?& ?- ?-| ?| ?|| @ @-@ @> @? @@ @@@ ^ ^@ |
    |&> |/ |>> || ||/ ~ ~* ~<=~ ~<~ ~= ~>=~ ~>~ ~~ ~~*
""".split())

#: Keyword "operators" of A_Expr kinds whose name is not a symbol.
_EXPR_KEYWORDS = frozenset({"BETWEEN", "NOT BETWEEN", "BETWEEN SYMMETRIC", "NOT BETWEEN SYMMETRIC"})


def _refuse(display: str, category: str) -> Refusal:
    return privilege(f"functions: {category}", f"function {display}() is not allowed through pgveil ({category})")


def check_function(call: ast.FuncCall, ctx: GateContext) -> Refusal | None:
    parts = strings(call.funcname)
    split = split_qualified(parts) if parts else None
    if split is None:
        return unsupported("functions", "this function name form is not supported by pgveil (functions)")
    schema, name = split
    display = shown(name if schema is None else f"{schema}.{name}")
    if name == "set_config" and schema in (None, CATALOG):
        return _set_config(call, display)
    if schema is None:
        if name in PG_CATALOG_FUNCTIONS:
            return _check_arguments(name, call, display)
        if any((s, name) in ctx.extra_functions for s in ctx.search_path):
            return None
        return _refuse(display, denied_category(name) or "not on the function allowlist")
    if schema == CATALOG:
        if name in PG_CATALOG_FUNCTIONS:
            return _check_arguments(name, call, display)
        return _refuse(display, denied_category(name) or "not on the function allowlist")
    if is_internal_schema(schema, ctx.internal_schemas):
        return _refuse(display, "internal schema")
    if schema == INFORMATION_SCHEMA and name in INFORMATION_SCHEMA_FUNCTIONS:
        return None
    if (schema, name) in ctx.extra_functions:
        return None
    return _refuse(display, "functions outside pg_catalog need the admin's allowlist")


def _check_arguments(name: str, call: ast.FuncCall, display: str) -> Refusal | None:
    rule = ARGUMENT_RULES.get(name)
    return rule(call, display) if rule else None


_NAME_TYPES = frozenset({"text", "varchar", "name"})


def _uncast_name(node: ast.Node | None) -> ast.Node | None:
    """``'x'::varchar`` -> ``'x'``: client-side binding (psycopg's ClientCursor under SQLAlchemy) casts the name.

    Only a plain cast to text, varchar or name (no type modifier, no array) of a constant: the value is unchanged.
    """
    if isinstance(node, ast.TypeCast) and isinstance(node.arg, ast.A_Const):
        tn = node.typeName
        names = strings(tn.names) or ()
        if (names and names[-1] in _NAME_TYPES and names[:-1] in ((), (CATALOG,)) and not tn.typmods
                and not tn.arrayBounds and not tn.setof and not tn.pct_type):
            return node.arg
    return node


def _current_setting(call: ast.FuncCall, display: str) -> Refusal | None:
    args = call.args or ()
    first = _uncast_name(args[0]) if args else None
    if not (isinstance(first, ast.A_Const) and isinstance(first.val, ast.String)) or call.func_variadic:
        return _refuse(display, "settings: the setting name must be a constant")
    if not may_read_setting(first.val.sval):
        return _refuse(display, "settings: custom settings cannot be read")
    return None


def _set_config(call: ast.FuncCall, display: str) -> Refusal | None:
    """set_config(name, value, is_local) is SET in function form: the same settings rules apply.

    The name must be a constant naming a setting a governed user may SET anyway
    (asyncpg runs ``set_config('jit', 'off', false)`` around its introspection);
    the value may be anything, since those settings are harmless whatever they hold.
    """
    args = call.args or ()
    first = _uncast_name(args[0]) if args else None
    if (len(args) != 3 or call.func_variadic or not isinstance(first, ast.A_Const)
            or not isinstance(first.val, ast.String)):
        return _refuse(display, "settings: the setting name must be a constant")
    if setting_key(first.val.sval) not in CHANGEABLE_SETTINGS:
        return _refuse(display, "settings")
    return None


def _ts_rewrite(call: ast.FuncCall, display: str) -> Refusal | None:
    # ts_rewrite(query, target, substitute) is pure; ts_rewrite(query, 'SELECT ...') runs SQL.
    if len(call.args or ()) != 3 or call.func_variadic:
        return _refuse(display, "runs SQL given as text")
    return None


#: Functions whose overloads differ in danger: name -> extra check of the call.
ARGUMENT_RULES = {
    "current_setting": _current_setting,
    "ts_rewrite": _ts_rewrite,
}

#: Functions whose arguments the gates look into (a constant there can change the verdict): a cache
#: that reuses a verdict across statements differing only in constants must not do so for these.
LITERAL_SENSITIVE_FUNCTIONS = frozenset(ARGUMENT_RULES) | {"set_config"}


def check_operator(expr: ast.A_Expr, ctx: GateContext) -> Refusal | None:
    parts = strings(expr.name)
    if parts is None:
        return unsupported("operators", "this operator form is not supported by pgveil (operators)")
    if len(parts) == 1 and (parts[0] in PG_CATALOG_OPERATORS or parts[0] in _EXPR_KEYWORDS):
        return None
    if len(parts) == 2 and parts[0] == CATALOG and parts[1] in PG_CATALOG_OPERATORS:
        return None
    return privilege("operators", f"operator {shown('.'.join(parts))} is not allowed through pgveil (operators outside pg_catalog)")
