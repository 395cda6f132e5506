"""Built-in function calls printed as ``pg_catalog.f(...)``.

Why: the gates let an unqualified call through when its name is on the
pg_catalog allowlist, assuming PostgreSQL resolves it to pg_catalog. The pinned
``search_path`` (pg_catalog implicitly first) makes that true only for an exact
signature tie: a function in a user schema whose parameter types match the
arguments better (``public.lower(varchar)`` for a varchar argument, an
``unknown`` literal, a domain) is chosen over the built-in, and it runs as
pgveil's service role, which can read governed tables raw. Qualifying the
call in the tree makes PostgreSQL consider pg_catalog's overloads only, which
is exactly what the gates checked (tests/rewrite/test_functions.py shows the
capture on the real server and that the rewritten statement avoids it).

Names an admin listed in ``extra_functions`` are left unqualified: the admin
chose to let that name resolve along the path.
"""
from __future__ import annotations

from typing import Iterable

from pglast import ast


def builtin_names() -> frozenset[str]:
    """The gates' pg_catalog allowlist (empty when there is no gates package)."""
    try:
        from rewrite.gates.function_allowlist import PG_CATALOG_FUNCTIONS
    except ImportError:
        return frozenset()
    return frozenset(PG_CATALOG_FUNCTIONS)


def qualify_builtins(calls: Iterable[ast.FuncCall], builtins: frozenset[str], keep: frozenset[str] = frozenset()) -> int:
    """Prefix each unqualified call to a built-in name with pg_catalog, in place; how many were changed."""
    n = 0
    for call in calls:
        if len(call.funcname) != 1 or not isinstance(call.funcname[0], ast.String):
            continue
        name = call.funcname[0].sval
        if name in builtins and name not in keep:
            call.funcname = (ast.String(sval="pg_catalog"), call.funcname[0])
            n += 1
    return n
