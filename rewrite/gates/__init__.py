"""Statement gates: what a governed session may run at all, checked on parse trees.

What it does: before any rewriting, every statement of a governed user goes
through :func:`check_statement`. It answers ``None`` (go on), a
:class:`Refusal` (SQLSTATE, a message naming the rule, the rule's id), or a
:class:`ProxySetting` for ``SET/RESET/SHOW pgveil.purpose|pgveil.project``,
which the proxy handles itself and never forwards. Three gates, all on
pglast trees, never on SQL strings:

- statement kinds (``statements``, ``settings``): SELECT/VALUES/SHOW,
  transaction control, cursors, PREPARE/EXECUTE, harmless SETs,
  ``COPY ... TO STDOUT``; DDL, DO/CALL, writes, EXPLAIN, role and
  parser-relevant settings are refused;
- functions (``functions`` over the data in ``function_allowlist`` and
  ``function_denylist``): deny by default, vetted pg_catalog functions only;
- relations (``relations`` over ``catalog_allowlist``): what BI tools need from
  pg_catalog and information_schema; statistics, activity, settings, internal
  schemas and pgveil's own ``pgveil_*`` objects are refused.

The walker (``walker``) visits every node; a node type it does not know is
refused (fail closed). See docs/gates.md for the decisions.

What it must not touch: I/O of any kind (sockets, files, the database), the
policy model, and the ``proxy`` package, which it never imports. It does not
rewrite: it only says yes or no.
"""
from .context import GateContext
from .statements import check_all, check_sql, check_statement
from .verdict import ProxySetting, Refusal
from .names import INTERNAL_SCHEMAS
from .functions import LITERAL_SENSITIVE_FUNCTIONS

__all__ = [
    "GateContext",
    "INTERNAL_SCHEMAS",
    "LITERAL_SENSITIVE_FUNCTIONS",
    "ProxySetting",
    "Refusal",
    "check_all",
    "check_sql",
    "check_statement",
]
