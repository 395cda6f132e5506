"""The audit trail: one JSON-lines record per statement, rotated to Parquet.

What it does:

* ``record``: :class:`AuditRecord`, the frozen shape of one statement's record, and
  :func:`hash_sql`, the only thing about the SQL text that is ever recorded.
* ``writer``: :class:`AuditWriter`, which takes records on the proxy's event-loop
  thread in O(1) and leaves serializing, file I/O, rotation and Parquet conversion
  to one background thread.
* ``arrow``: the Arrow schema shared by the writer (conversion) and the reader.
* ``summary``: reads a directory of ``.jsonl`` and ``.parquet`` files back for
  ``pgveil audit --since 1h``.

What it must not touch: sockets, asyncio, the policy model or the rewrite engine.
The proxy builds records from what it already decided; this package only stores
and reads them. It must never receive SQL text, parameter values or row values:
an audit directory must not become a second copy of the protected data.
"""
from .record import DECISIONS, AuditRecord, hash_sql, utc_now_iso
from .writer import AuditWriter

__all__ = ["DECISIONS", "AuditRecord", "AuditWriter", "hash_sql", "utc_now_iso"]
