"""The facts a gate needs about the session, handed in by the caller."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class GateContext:
    """Per-session input to the gates. Immutable; build one per session (or per config).

    - ``governed``: False for ``unrestricted: true`` users, who skip the gates
      (``pgveil.*`` settings are still answered with a :class:`ProxySetting`).
    - ``extra_functions``: admin-vetted functions outside the built-in allowlist, as
      ``(schema, name)`` exactly as stored in the catalog (folded, case-sensitive).
    - ``search_path``: the schemas the proxy pins after the implicit ``pg_catalog``;
      an unqualified call matches an ``extra_functions`` entry of one of them.
    - ``extra_settings``: further setting names (lower case) a governed user may SET.
    - ``internal_schemas``: further schemas to treat as internal (refused).
    - ``writable_tables``: hook for policies that allow writes (``(schema, table)``);
      empty means read-only. Writes are refused whatever it holds until the
      rewrite engine supports them (see docs/gates.md).
    - ``served``: catalog relations the caller replaces by a substitute that keeps
      the contract ``catalog_allowlist`` states for it: SERVABLE_EMPTY ones are
      then allowed (served with no rows), pg_settings is allowed (built-in settings
      only), pg_class is no longer sensitive (row estimates served as NULL). The
      rewrite engine does this (rewrite/engine/listings.py).
    """

    governed: bool = True
    extra_functions: frozenset[tuple[str, str]] = field(default_factory=frozenset)
    search_path: tuple[str, ...] = ("public",)
    extra_settings: frozenset[str] = field(default_factory=frozenset)
    internal_schemas: frozenset[str] = field(default_factory=frozenset)
    writable_tables: frozenset[tuple[str, str]] = field(default_factory=frozenset)
    served: frozenset[tuple[str, str]] = field(default_factory=frozenset)
