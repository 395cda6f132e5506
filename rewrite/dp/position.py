"""Where a DP table may appear: as the only relation of a top-level SELECT.

Joins are refused, also with non-private lookup tables: a join can repeat one
person's row once per matching lookup row, so the contribution bound the noise
is calibrated for would no longer hold; and the lookup's own policies would have
to be composed with the DP answer. Analysts group by the DP table's own columns
instead (docs/dp.md). Sub-queries, CTEs, set operations, views over the table,
EXPLAIN, DECLARE and COPY are refused for the same reason: one statement, one
table, one aggregate answer.
"""
from __future__ import annotations

from typing import Any

from .query import ALLOWED, DPRefused


def dp_reference(analysis: Any, gov: Any) -> Any:
    """The first reference to a table the subject may read only through DP, or None."""
    for ref in analysis.refs:
        rel = ref.relation
        if rel is None or rel.is_system:
            continue
        d = gov.decision(rel)
        if d.allowed and d.dp is not None:
            return ref
    return None


def check_dp_position(analysis: Any, ref: Any, raw: Any) -> None:
    """Raise DPRefused unless ``ref`` is the one relation of the statement, in its top-level FROM."""
    if len(analysis.refs) != 1:
        raise DPRefused(f"a differentially private table cannot be joined or combined with other relations; {ALLOWED}")
    if ref.role != "read" or ref.parent is not raw.stmt or ref.attr != "fromClause" or ref.sample is not None:
        raise DPRefused(f"a differentially private table can only be read as the FROM of a top-level SELECT; {ALLOWED}")
    if analysis.has_sublinks or analysis.has_ctes or analysis.unknown_nodes:
        raise DPRefused(f"sub-queries and WITH are not allowed in a query on a differentially private table; {ALLOWED}")
