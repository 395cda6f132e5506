"""Session settings: which SET/RESET/SHOW a governed user may run.

Deny by default. Only presentation and timeout settings may change;
everything the parser or security depends on (search_path, client_encoding,
standard_conforming_strings, role, session_authorization, row_security...) is
locked by the proxy and refused in every form: SET, SET LOCAL, RESET, RESET ALL,
``SET ... FROM CURRENT`` and set_config(). ``pgveil.purpose`` and
``pgveil.project`` are answered by the proxy itself (:class:`ProxySetting`).
"""
from __future__ import annotations

from pglast import ast
from pglast.enums.parsenodes import VariableSetKind

from .context import GateContext
from .names import setting_key, shown
from .verdict import ProxySetting, Refusal, privilege, unsupported

#: Settings a governed user may SET and RESET (lower case, as PostgreSQL compares them).
CHANGEABLE_SETTINGS = frozenset({
    "application_name", "datestyle", "intervalstyle", "timezone", "extra_float_digits",
    "statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout",
    "idle_session_timeout", "transaction_timeout", "bytea_output", "client_min_messages",
    "xmloption", "transaction_isolation", "transaction_read_only", "transaction_deferrable",
    "jit",  # planner-only; asyncpg turns it off around its type introspection
})

#: pgveil's own session settings, answered by the proxy.
PROXY_SETTINGS = frozenset({"pgveil.purpose", "pgveil.project"})

#: SET TRANSACTION / SET SESSION CHARACTERISTICS AS TRANSACTION options.
TRANSACTION_OPTIONS = frozenset({"transaction_isolation", "transaction_read_only", "transaction_deferrable"})

_MULTI_NAMES = frozenset({"TRANSACTION", "SESSION CHARACTERISTICS"})


def may_read_setting(name: str) -> bool:
    """SHOW / current_setting(): any built-in setting, but no custom (dotted) one.

    Custom settings are where extensions, applications and possibly pgveil keep
    values of their own; pgveil.* are the proxy's. Superuser-only settings are
    refused by the backend itself for the least-privileged service role.
    """
    key = setting_key(name)
    return key != "all" and "." not in key


def proxy_setting(stmt: ast.Node) -> ProxySetting | None:
    """A :class:`ProxySetting` if ``stmt`` sets, resets or shows a pgveil session setting."""
    if isinstance(stmt, ast.VariableShowStmt):
        key = setting_key(stmt.name or "")
        return ProxySetting("show", key) if key in PROXY_SETTINGS else None
    if not isinstance(stmt, ast.VariableSetStmt) or stmt.name is None:
        return None
    key = setting_key(stmt.name)
    if key not in PROXY_SETTINGS:
        return None
    if stmt.kind == VariableSetKind.VAR_RESET:
        return ProxySetting("reset", key, None, bool(stmt.is_local))
    if stmt.kind == VariableSetKind.VAR_SET_DEFAULT:
        return ProxySetting("set", key, None, bool(stmt.is_local))
    if stmt.kind == VariableSetKind.VAR_SET_VALUE:
        value = _single_text(stmt.args)
        if value is not None:
            return ProxySetting("set", key, value, bool(stmt.is_local))
    return None  # other forms fall through to check_set and are refused


def _single_text(args) -> str | None:
    if not args or len(args) != 1 or not isinstance(args[0], ast.A_Const):
        return None
    val = args[0].val
    if isinstance(val, ast.String):
        return val.sval
    if isinstance(val, ast.Integer):
        return str(val.ival)
    return None


def check_set(stmt: ast.VariableSetStmt, ctx: GateContext) -> Refusal | None:
    kind = stmt.kind
    if kind == VariableSetKind.VAR_RESET_ALL:
        return privilege("settings", "RESET ALL is not allowed through pgveil (settings)")
    if kind == VariableSetKind.VAR_SET_MULTI:
        return _check_transaction_options(stmt)
    name = setting_key(stmt.name or "")
    if name in PROXY_SETTINGS:
        return privilege("settings", f"this form of SET for {name} is not supported by pgveil (settings)")
    if kind == VariableSetKind.VAR_SET_CURRENT:
        return privilege("settings", f"SET {shown(name)} FROM CURRENT is not allowed through pgveil (settings)")
    if name not in CHANGEABLE_SETTINGS and name not in ctx.extra_settings:
        return privilege("settings", f"setting {shown(name)} cannot be changed through pgveil (settings)")
    if kind == VariableSetKind.VAR_SET_VALUE and not all(_is_constant(a) for a in stmt.args or ()):
        return unsupported("settings", f"SET {shown(name)} accepts constants only (settings)")
    if kind not in (VariableSetKind.VAR_SET_VALUE, VariableSetKind.VAR_SET_DEFAULT, VariableSetKind.VAR_RESET):
        return unsupported("settings", "this form of SET is not supported by pgveil (settings)")
    return None


def _check_transaction_options(stmt: ast.VariableSetStmt) -> Refusal | None:
    if stmt.name not in _MULTI_NAMES:
        return privilege("settings", "this form of SET is not allowed through pgveil (settings)")
    return check_transaction_options(stmt.args)


def check_transaction_options(options) -> Refusal | None:
    """BEGIN / START TRANSACTION / SET TRANSACTION options: isolation, read only, deferrable."""
    for opt in options or ():
        if not isinstance(opt, ast.DefElem) or opt.defname not in TRANSACTION_OPTIONS:
            name = opt.defname if isinstance(opt, ast.DefElem) else type(opt).__name__
            return privilege("transactions", f"transaction option {shown(name)} is not allowed through pgveil (transactions)")
        if not _is_constant(opt.arg):
            return unsupported("transactions", "transaction options accept constants only (transactions)")
    return None


def _is_constant(node) -> bool:
    if isinstance(node, ast.A_Const):
        return True
    if isinstance(node, ast.TypeCast):
        return _is_constant(node.arg)
    return False


def check_show(stmt: ast.VariableShowStmt) -> Refusal | None:
    name = stmt.name or ""
    if not may_read_setting(name):
        what = "SHOW ALL" if setting_key(name) == "all" else f"SHOW {shown(name)}"
        return privilege("settings", f"{what} is not allowed through pgveil (settings)")
    return None
