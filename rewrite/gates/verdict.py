"""What a gate answers: a refusal, or a setting the proxy handles itself.

SQLSTATEs (docs/gates.md):
- ``42501`` insufficient_privilege: a governed user may not do this (DDL,
  writes, a refused function, relation or setting, EXPLAIN, COPY to files...).
- ``0A000`` feature_not_supported: pgveil does not understand or support this
  syntax at all (an unknown node type, a construct it cannot check).
- ``42601`` syntax_error: the text does not parse.
Messages name the rule and the object (function, relation or setting name),
never a literal value taken from the statement.
"""
from __future__ import annotations

from dataclasses import dataclass

PRIVILEGE = "42501"
UNSUPPORTED = "0A000"
SYNTAX = "42601"


@dataclass(frozen=True, slots=True)
class Refusal:
    """The statement must not run; send ``sqlstate`` and ``message`` to the client."""

    sqlstate: str
    message: str
    rule: str


@dataclass(frozen=True, slots=True)
class ProxySetting:
    """``SET``/``RESET``/``SHOW`` of a pgveil session setting (``pgveil.purpose``, ``pgveil.project``).

    The proxy answers it itself (checking entitlement) and never forwards it.
    ``action`` is ``"set"``, ``"reset"`` or ``"show"``; ``value`` is the text of
    the value for ``set`` (``None`` for ``SET ... TO DEFAULT``), else ``None``.
    """

    action: str
    name: str
    value: str | None = None
    is_local: bool = False


def privilege(rule: str, message: str) -> Refusal:
    return Refusal(PRIVILEGE, message, rule)


def unsupported(rule: str, message: str) -> Refusal:
    return Refusal(UNSUPPORTED, message, rule)
