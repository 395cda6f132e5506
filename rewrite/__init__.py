"""pgveil's pure core: policy model, decisions and SQL rewriting.

What it does: takes SQL text, a subject, the policy and the catalog, and returns a
verdict (allow, deny, or rewritten SQL plus a result plan).

What it must not touch: sockets, asyncio, files other than the config text it is
handed, the database. Nothing here imports ``proxy``; everything here is testable
in microseconds without I/O.
"""

_FACADE = ("Allow", "Deny", "DPRequest", "ProxyHandled", "RewriteContext", "Rewritten", "Verdict", "clear_cache", "rewrite_sql", "rewrite_statements")


def __getattr__(name: str):
    # Lazy: importing rewrite.policy or rewrite.decide must not pull in the whole engine.
    if name in _FACADE:
        from . import facade

        return getattr(facade, name)
    raise AttributeError(name)
